"""Accept the official LTX trainer's YAML (Lightricks/LTX-2, packages/ltx-trainer/configs/) by translating it.

Users switch in one step: the same file works, and a note says which of its keys became which of ours and which
were dropped. Both the 1.2 layout (`training_strategy.name: text_to_video`) and the later `flexible` layout with
per-modality blocks are read.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console

from ltx_lora.errors import UserError

_console = Console(stderr=True, markup=False)  # the note names the user's file: never markup

# Sections only the official trainer has; ours are model/data/lora/train/memory/checkpoints/validation/logging.
_OFFICIAL_MARKERS = ("optimization", "acceleration", "training_strategy", "flow_matching", "hub")


def looks_official(data: Any) -> bool:
    return isinstance(data, dict) and any(k in data for k in _OFFICIAL_MARKERS)


def _mode(strategy: dict) -> tuple[str, float | None]:
    """Our training mode and first-frame probability from either official strategy layout."""
    if strategy.get("name") == "flexible":
        video = strategy.get("video") or {}
        audio = strategy.get("audio") or {}
        p = None
        for cond in video.get("conditions") or []:
            if isinstance(cond, dict) and cond.get("type") == "first_frame":
                p = float(cond.get("probability", 1.0))
        if p is not None and p >= 0.5:
            return "i2v", p
        return ("av" if audio.get("is_generated") else "t2v"), p
    p = strategy.get("first_frame_conditioning_p")
    return ("av" if strategy.get("with_audio") else "t2v"), (None if p is None else float(p))


def _section(data: dict, key: str, source: str) -> dict:
    """An official section as a mapping ({} when absent); anything else is one sentence naming it."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{source}: '{key}' of the official trainer config must be a mapping of its keys, not "
                        f"{type(value).__name__} {str(value)[:40]!r}; compare with the official configs in "
                        "packages/ltx-trainer/configs.")
    return value


def translate_official(data: dict, source: str = "config") -> dict:
    """Map an official trainer config onto our schema; print one note listing what changed. A value of the wrong
    type (a list where a number belongs) is one UserError naming the file, never a crash."""
    try:
        return _translate(data, source)
    except (TypeError, ValueError, AttributeError, KeyError) as e:
        raise UserError(f"{source}: a value of the official trainer config has the wrong type ({e}); compare with "
                        "the official configs in packages/ltx-trainer/configs, or start from `ltx-lora init`.") from None


def _translate(data: dict, source: str) -> dict:
    ours: dict[str, Any] = {"model": {}, "data": {}, "lora": {}, "train": {}, "memory": {}, "checkpoints": {},
                            "validation": {}, "logging": {}}
    dropped: list[str] = []
    model = _section(data, "model", source)
    if model.get("model_path"):
        ours["model"]["checkpoint"] = model["model_path"]
    if model.get("text_encoder_path"):
        ours["model"]["text_encoder"] = model["text_encoder_path"]
    if model.get("training_mode", "lora") != "lora":
        dropped.append("model.training_mode (only LoRA training is supported)")

    lora = _section(data, "lora", source)
    for key in ("rank", "alpha", "dropout", "target_modules"):
        if key in lora:
            ours["lora"][key] = lora[key]

    mode, p = _mode(_section(data, "training_strategy", source))
    ours["train"]["mode"] = mode
    if p is not None:
        ours["train"]["first_frame_conditioning_p"] = p

    opt = _section(data, "optimization", source)
    mapping = {"learning_rate": "learning_rate", "steps": "steps", "batch_size": "batch_size",
               "gradient_accumulation_steps": "gradient_accumulation", "max_grad_norm": "max_grad_norm",
               "enable_gradient_checkpointing": "gradient_checkpointing"}
    for theirs, mine in mapping.items():
        if theirs in opt:
            ours["train"][mine] = opt[theirs]
    if "optimizer_type" in opt:
        ours["train"]["optimizer"] = opt["optimizer_type"]
    sched = opt.get("scheduler_type")
    if sched in ("constant", "linear", "cosine"):
        ours["train"]["scheduler"] = sched
    elif sched:
        ours["train"]["scheduler"] = "cosine"
        dropped.append(f"optimization.scheduler_type={sched} (became cosine)")

    acc = _section(data, "acceleration", source)
    if acc.get("mixed_precision_mode") in ("bf16", "no"):
        ours["train"]["mixed_precision"] = "bf16" if acc["mixed_precision_mode"] == "bf16" else "fp32"
    quant = acc.get("quantization")
    if quant:
        ours["memory"]["quantization"] = "fp8" if str(quant).startswith("fp8") else "int8"
        if not str(quant).startswith(("int8", "fp8")):
            dropped.append(f"acceleration.quantization={quant} (became int8)")
    if "load_text_encoder_in_8bit" in acc:
        ours["memory"]["text_encoder_8bit"] = bool(acc["load_text_encoder_in_8bit"])

    d = _section(data, "data", source)
    if d.get("preprocessed_data_root"):
        dropped.append("data.preprocessed_data_root (its .pt cache is pickle; run `ltx-lora preprocess` once)")

    val = _section(data, "validation", source)
    prompts = list(val.get("prompts") or []) + [s["prompt"] for s in val.get("samples") or [] if "prompt" in s]
    if prompts:
        ours["validation"]["prompts"] = prompts
    if val.get("negative_prompt"):
        ours["validation"]["negative_prompt"] = " ".join(str(val["negative_prompt"]).split())
    dims = val.get("video_dims")
    if dims and len(dims) == 3:
        ours["validation"]["resolution"] = "x".join(str(int(x)) for x in dims)
    for theirs, mine in {"seed": "seed", "inference_steps": "steps", "interval": "every",
                         "stg_blocks": "stg_blocks", "audio_cfg_scale": "audio_cfg", "frame_rate": "fps",
                         "guidance_rescale": "guidance_rescale", "generate_audio": "audio",
                         "video_modality_guidance_scale": "modality_scale"}.items():
        if theirs in val:
            ours["validation"][mine] = val[theirs]
    for theirs in ("video_cfg_scale", "guidance_scale"):
        if theirs in val:
            ours["validation"]["cfg"] = val[theirs]
    for theirs in ("video_stg_scale", "stg_scale"):
        if theirs in val:
            ours["validation"]["stg_scale"] = val[theirs]

    ck = _section(data, "checkpoints", source)
    if ck.get("interval"):
        ours["checkpoints"]["every"] = ck["interval"]
    if isinstance(ck.get("keep_last_n"), int) and ck["keep_last_n"] > 0:
        ours["checkpoints"]["keep_last"] = ck["keep_last_n"]

    fm = _section(data, "flow_matching", source)
    if fm.get("timestep_sampling_mode") in ("shifted_logit_normal", "uniform"):
        ours["train"]["timestep_sampling"] = fm["timestep_sampling_mode"]
    wandb = _section(data, "wandb", source)
    if wandb.get("enabled"):
        ours["logging"]["wandb"] = True
        ours["logging"]["wandb_project"] = wandb.get("project", "ltx-lora")
    if _section(data, "hub", source).get("push_to_hub"):
        dropped.append("hub.push_to_hub (no network at run time)")
    if "seed" in data:
        ours["train"]["seed"] = data["seed"]
    if data.get("output_dir"):
        ours["output_dir"] = data["output_dir"]

    note = f"note: {source} is an official LTX trainer config; translated to ltx-lora's schema"
    if dropped:
        note += "; not carried over: " + "; ".join(dropped)
    _console.print(note + ". `ltx-lora init` writes a native config.", highlight=False)
    return {k: v for k, v in ours.items() if v}
