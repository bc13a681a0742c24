"""Accept the official LTX trainer's YAML (Lightricks/LTX-2, packages/ltx-trainer/configs/) by translating it.

Users switch in one step: the same file works, and a note says which of its keys became which of ours and which
were dropped. Both the 1.2 layout (`training_strategy.name: text_to_video`) and the later `flexible` layout with
per-modality blocks are read.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console

from ltx_lora.task import TASK_PRESETS, TaskConfig

_console = Console(stderr=True)

# Sections only the official trainer has; ours are model/data/lora/train/memory/checkpoints/validation/logging.
_OFFICIAL_MARKERS = ("optimization", "acceleration", "training_strategy", "flow_matching", "hub")


def looks_official(data: Any) -> bool:
    return isinstance(data, dict) and any(k in data for k in _OFFICIAL_MARKERS)


def _condition(cond: Any, where: str, dropped: list[str]) -> dict | None:
    """One official flexible condition as ours (their directory keys name preprocessed folders; ours come from
    the dataset file's columns, so they are dropped with a note)."""
    if not isinstance(cond, dict) or "type" not in cond:
        dropped.append(f"{where} (not a condition mapping)")
        return None
    kind = cond["type"]
    ours: dict[str, Any] = {"type": kind}
    if "probability" in cond:
        ours["probability"] = cond["probability"]
    if kind in ("prefix", "suffix") and "temporal_boundary" in cond:
        ours["frames"] = cond["temporal_boundary"]
    elif kind == "spatial_crop" and "spatial_region" in cond:
        ours["box"] = cond["spatial_region"]
    elif kind == "mask" and cond.get("mask_dir"):
        dropped.append(f"{where}.mask_dir (masks come from the dataset's video_mask / audio_mask columns)")
    elif kind == "reference" and cond.get("latents_dir"):
        dropped.append(f"{where}.latents_dir (references come from the dataset's reference_video / "
                       "reference_audio columns)")
    return ours


# An official validation condition's media key -> our prompt input (the condition's type decides for `video` /
# `audio`, which are a reference for `reference` and the given media for every other type).
_MEDIA_INPUT = {"image_or_video": "image", "mask": "mask"}


def _samples(samples: list, task: dict | str, dropped: list[str]) -> list:
    """Official `validation.samples` as our validation prompts: a sample without conditions is its prompt text; one
    with conditions is a mapping of the inputs they name. The extent of a prefix / suffix, a crop box and a
    reference's scale come from our task (samples are conditioned as the LoRA was trained), so where a sample's
    own value differs it is named in the note."""
    try:
        resolved = TaskConfig.model_validate(task) if isinstance(task, dict) else TASK_PRESETS[task][2]
    except (ValueError, KeyError):
        resolved = None
    out: list = []
    for i, sample in enumerate(samples):
        where = f"validation.samples[{i}]"
        if not isinstance(sample, dict) or "prompt" not in sample:
            dropped.append(f"{where} (no prompt)")
            continue
        for key in sample:
            if key in ("seed", "video_dims"):
                dropped.append(f"{where}.{key} (one for every validation prompt: validation.seed / "
                               "validation.resolution)")
            elif key not in ("prompt", "conditions"):
                dropped.append(f"{where}.{key}")
        inputs: dict[str, Any] = {}
        for j, cond in enumerate(sample.get("conditions") or []):
            _sample_condition(cond, f"{where}.conditions[{j}]", inputs, resolved, dropped)
        out.append({"prompt": sample["prompt"], **inputs} if inputs else sample["prompt"])
    return out


def _sample_condition(cond: Any, where: str, inputs: dict, task: TaskConfig | None, dropped: list[str]) -> None:
    """One condition of an official validation sample into the prompt's inputs (what differs from the task: noted)."""
    if not isinstance(cond, dict) or "type" not in cond:
        dropped.append(f"{where} (not a condition mapping)")
        return
    kind = cond["type"]
    for key, value in cond.items():
        if key == "type" or value is None:
            continue
        if key in ("video", "audio"):
            inputs[f"reference_{key}" if kind == "reference" else key] = value
        elif key in _MEDIA_INPUT:
            if kind == "mask" and str(value).endswith(".pt"):
                dropped.append(f"{where}.mask (a .pt file is pickle, which ltx-lora never reads: give an image or "
                               "video mask, or for audio a sound whose loud parts mark what is kept)")
                continue
            inputs[_MEDIA_INPUT[key]] = value
        elif key == "include_in_output":
            dropped.append(f"{where}.include_in_output (the report shows each reference beside its samples)")
        else:
            note = _differs(kind, key, value, cond, task)
            if note:
                dropped.append(f"{where}.{key}={value} ({note})")


def _differs(kind: str, key: str, value: Any, cond: dict, task: TaskConfig | None) -> str | None:
    """Why an official sample's condition setting is not carried (None when our task's setting is the same)."""
    modality = "audio" if cond.get("audio") is not None else "video"
    mine = task.video if task is not None and modality == "video" else task.audio if task is not None else None
    found = mine.find(kind) if mine is not None else []
    ours = found[0] if found else None
    if kind in ("prefix", "suffix") and key in ("num_frames", "duration"):
        if key == "num_frames":  # pixel frames: a prefix 1 + 8(n - 1), a suffix 8n
            latent = (int(value) - 1) // 8 + 1 if kind == "prefix" else int(value) // 8
        else:  # seconds of sound: 25 audio latent steps a second
            latent = round(float(value) * 25)
        if ours is not None and ours.frames == latent:
            return None
        have = f"{ours.frames} {'latent frames' if modality == 'video' else 'audio steps'}" if ours else "none"
        return f"samples keep the task's {kind}: {have}"
    if kind == "spatial_crop" and key == "spatial_region":
        if ours is not None and list(ours.box) == list(value):
            return None
        return f"samples keep the task's box {list(ours.box) if ours else 'none'}"
    if kind == "reference" and key in ("downscale_factor", "temporal_scale_factor"):
        have = (ours.downscale if key == "downscale_factor" else ours.temporal_scale) if ours else 1
        return None if int(value) == have else f"samples use the task's reference {key.split('_')[0]} {have}"
    return "not an ltx-lora setting"


def _task(strategy: dict, dropped: list[str]) -> dict | str:
    """Our `task:` from either official strategy layout: flexible's video/audio blocks map one to one; the older
    text_to_video strategy is t2av or t2v (audio shares the video's sigma there) plus its first-frame draw."""
    if strategy.get("name") == "flexible":
        task: dict[str, Any] = {}
        for name in ("video", "audio"):
            block = strategy.get(name)
            if not isinstance(block, dict):
                task[name] = {"role": "off"}
                continue
            role = "generated" if block.get("is_generated", True) else "condition"
            conds = [_condition(c, f"training_strategy.{name}.conditions[{i}]", dropped)
                     for i, c in enumerate(block.get("conditions") or [])]
            task[name] = {"role": role, "conditions": [c for c in conds if c is not None]}
        return task
    p = strategy.get("first_frame_conditioning_p")
    video: dict[str, Any] = {"role": "generated"}
    if p:
        video["conditions"] = [{"type": "first_frame", "probability": float(p)}]
    return {"video": video, "audio": {"role": "generated" if strategy.get("with_audio") else "off"},
            "sigma": "shared"}


def translate_official(data: dict, source: str = "config") -> dict:
    """Map an official trainer config onto our schema; print one note listing what changed."""
    ours: dict[str, Any] = {"task": {}, "model": {}, "data": {}, "lora": {}, "train": {}, "memory": {}, "checkpoints": {},
                            "validation": {}, "logging": {}}
    dropped: list[str] = []
    model = data.get("model") or {}
    if model.get("model_path"):
        ours["model"]["checkpoint"] = model["model_path"]
    if model.get("text_encoder_path"):
        ours["model"]["text_encoder"] = model["text_encoder_path"]
    if model.get("training_mode", "lora") != "lora":
        dropped.append("model.training_mode (only LoRA training is supported)")

    lora = data.get("lora") or {}
    for key in ("rank", "alpha", "dropout", "target_modules"):
        if key in lora:
            ours["lora"][key] = lora[key]

    ours["task"] = _task(data.get("training_strategy") or {}, dropped)

    opt = data.get("optimization") or {}
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

    acc = data.get("acceleration") or {}
    if acc.get("mixed_precision_mode") in ("bf16", "no"):
        ours["train"]["mixed_precision"] = "bf16" if acc["mixed_precision_mode"] == "bf16" else "fp32"
    quant = acc.get("quantization")
    if quant:
        ours["memory"]["quantization"] = "fp8" if str(quant).startswith("fp8") else "int8"
        if not str(quant).startswith(("int8", "fp8")):
            dropped.append(f"acceleration.quantization={quant} (became int8)")
    if "load_text_encoder_in_8bit" in acc:
        ours["memory"]["text_encoder_8bit"] = bool(acc["load_text_encoder_in_8bit"])

    d = data.get("data") or {}
    if d.get("preprocessed_data_root"):
        dropped.append("data.preprocessed_data_root (its .pt cache is pickle; run `ltx-lora preprocess` once)")

    val = data.get("validation") or {}
    prompts = list(val.get("prompts") or []) + _samples(val.get("samples") or [], ours["task"], dropped)
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

    ck = data.get("checkpoints") or {}
    if ck.get("interval"):
        ours["checkpoints"]["every"] = ck["interval"]
    if isinstance(ck.get("keep_last_n"), int) and ck["keep_last_n"] > 0:
        ours["checkpoints"]["keep_last"] = ck["keep_last_n"]

    fm = data.get("flow_matching") or {}
    if fm.get("timestep_sampling_mode") in ("shifted_logit_normal", "uniform"):
        ours["train"]["timestep_sampling"] = fm["timestep_sampling_mode"]
    if (data.get("wandb") or {}).get("enabled"):
        ours["logging"]["wandb"] = True
        ours["logging"]["wandb_project"] = data["wandb"].get("project", "ltx-lora")
    if (data.get("hub") or {}).get("push_to_hub"):
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
