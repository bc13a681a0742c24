"""Accept the official LTX trainer's YAML (Lightricks/LTX-2, packages/ltx-trainer/configs/) by translating it.

Users switch in one step: the same file works, and one note says what did not carry over. Nothing changes
silently: every key of the official file is accounted for (`Translation`): it maps onto one of ours, or the note
names it with the reason (`changed`: carried with a difference; `dropped`: not carried; `unneeded`: ltx-lora has
no use for it, e.g. the folders of the official .pt cache). `tests/test_official_configs.py` rebuilds the 16 configs
ltx-trainer 1.2.0 ships and checks that each resolves to the same task, conditions, guidance and checkpoint
settings, and that no key is left unaccounted.

Both layouts are read: the 1.2 `training_strategy.name: text_to_video` (audio shares the video's sigma there) and
the `flexible` strategy, whose video/audio blocks map one to one onto our `task:` (ltx_lora.task).
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from ltx_lora.errors import UserError
from ltx_lora.task import TASK_PRESETS, TaskConfig

_console = Console(stderr=True, markup=False)  # the note names the user's file: never markup

# Sections only the official trainer has; ours are model/data/lora/train/memory/checkpoints/validation/logging.
_OFFICIAL_MARKERS = ("optimization", "acceleration", "training_strategy", "flow_matching", "hub")

_SCHEDULERS = ("constant", "linear", "cosine")


UNKNOWN = "no such setting in ltx-lora"


def looks_official(data: Any) -> bool:
    return isinstance(data, dict) and any(k in data for k in _OFFICIAL_MARKERS)


@dataclass
class Translation:
    """Our config (as a mapping) and where every official key went (keys as dotted paths, `[]` for list items)."""

    config: dict[str, Any] = field(default_factory=dict)
    mapped: dict[str, str] = field(default_factory=dict)  # official key -> our key (or what it means here)
    changed: dict[str, str] = field(default_factory=dict)  # carried over with a difference: why
    dropped: dict[str, str] = field(default_factory=dict)  # not carried over: why
    unneeded: dict[str, str] = field(default_factory=dict)  # no use in ltx-lora: why

    def set(self, official: str, ours: str, value: Any) -> None:
        """Map `official` onto our dotted key `ours` with `value`."""
        node = self.config
        *parents, leaf = ours.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
        self.mapped[official] = ours

    def accounted(self) -> set[str]:
        return set(self.mapped) | set(self.changed) | set(self.dropped) | set(self.unneeded)

    def note(self, source: str) -> str:
        parts = [f"note: {source} is an official LTX trainer config; translated to ltx-lora's schema"]
        if self.changed:
            parts.append("changed: " + "; ".join(f"{k} ({v})" for k, v in self.changed.items()))
        if self.dropped:
            parts.append("not carried over: " + "; ".join(f"{k} ({v})" for k, v in self.dropped.items()))
        if self.unneeded:
            parts.append("not needed by ltx-lora: " + ", ".join(self.unneeded))
        return "; ".join(parts) + ". `ltx-lora init --task NAME` writes a native config."


def official_keys(data: Any, prefix: str = "") -> set[str]:
    """Every leaf key path of an official config, as `Translation` names them."""
    if isinstance(data, dict):
        out: set[str] = set()
        for k, v in data.items():
            out |= official_keys(v, f"{prefix}.{k}" if prefix else str(k))
        return out or ({prefix} if prefix else set())
    if isinstance(data, list) and data and all(isinstance(x, dict) for x in data):
        return set().union(*(official_keys(x, f"{prefix}[]") for x in data))
    return {prefix}


class _NotAMapping(ValueError):
    """An official section that is not a mapping of its keys (`translate_official` names the file)."""


def _section(data: dict, name: str) -> dict:
    """An official section as a mapping ({} when absent); anything else is an error that names it."""
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _NotAMapping(f"'{name}' must be a mapping of its keys, not {type(value).__name__} {str(value)[:40]!r}")
    return value


def _model(data: dict, t: Translation) -> None:
    model = _section(data, "model")
    if model.get("model_path"):
        t.set("model.model_path", "model.checkpoint", model["model_path"])
    if model.get("text_encoder_path"):
        t.set("model.text_encoder_path", "model.text_encoder", model["text_encoder_path"])
    if "training_mode" in model:
        if model["training_mode"] == "lora":
            t.mapped["model.training_mode"] = "(ltx-lora trains LoRAs)"
        else:
            t.dropped["model.training_mode"] = f"{model['training_mode']}: only LoRA training is supported"
    if "load_checkpoint" in model:
        value = model["load_checkpoint"]
        if value and str(value).endswith(".safetensors"):  # a LoRA file: its weights start the LoRA
            t.set("model.load_checkpoint", "lora.init_from", value)
            t.changed["model.load_checkpoint"] = ("lora.init_from: the LoRA starts from its weights, the optimizer "
                                                  "afresh; `ltx-lora train CONFIG --resume` continues a run exactly")
        elif value:  # a folder: the official trainer takes its latest checkpoint and the state beside it
            t.dropped["model.load_checkpoint"] = ("a folder of checkpoints: continue a run with `ltx-lora train CONFIG "
                                                  "--resume`, or set lora.init_from to one LoRA file")
        else:
            t.mapped["model.load_checkpoint"] = "(null: start from the base)"


def _condition(cond: Any, where: str, t: Translation) -> dict | None:
    """One flexible condition as ours. Their directory keys name folders of their .pt cache; ours come from the
    dataset file's columns."""
    if not isinstance(cond, dict) or "type" not in cond:
        t.dropped[where] = "not a condition mapping"
        return None
    ours: dict[str, Any] = {"type": cond["type"]}
    t.mapped[f"{where}.type"] = "task.*.conditions[].type"
    for theirs, mine in (("probability", "probability"), ("temporal_boundary", "frames"), ("spatial_region", "box")):
        if theirs in cond:  # a probability is a number (float() names a wrong one); frames and box pydantic checks
            ours[mine] = float(cond[theirs]) if theirs == "probability" else cond[theirs]
            t.mapped[f"{where}.{theirs}"] = f"task.*.conditions[].{mine}"
    if "mask_dir" in cond:
        t.unneeded[f"{where}.mask_dir"] = "masks come from the dataset's video_mask / audio_mask columns"
    if "latents_dir" in cond:
        t.unneeded[f"{where}.latents_dir"] = ("references come from the dataset's reference_video / reference_audio "
                                              "columns")
    return ours


def _task(data: dict, t: Translation) -> None:
    strategy = _section(data, "training_strategy")
    name = strategy.get("name")
    if "name" in strategy:
        t.mapped["training_strategy.name"] = "task"
    if name == "flexible":
        task: dict[str, Any] = {}
        for modality in ("video", "audio"):
            block = strategy.get(modality)
            where = f"training_strategy.{modality}"
            if not isinstance(block, dict):
                task[modality] = {"role": "off"}
                continue
            task[modality] = {"role": "generated" if block.get("is_generated", True) else "condition"}
            if "is_generated" in block:
                t.mapped[f"{where}.is_generated"] = f"task.{modality}.role"
            if "latents_dir" in block:
                t.unneeded[f"{where}.latents_dir"] = "the cache holds every modality"
            conds = [_condition(c, f"{where}.conditions[]", t) for c in block.get("conditions") or []]
            task[modality]["conditions"] = [c for c in conds if c is not None]
        t.config["task"] = task
        return
    # The 1.2 text_to_video strategy: audio shares the video's sigma; first frame drawn with its probability.
    video: dict[str, Any] = {"role": "generated"}
    p = strategy.get("first_frame_conditioning_p")
    if p is not None:
        t.mapped["training_strategy.first_frame_conditioning_p"] = "task.video.conditions[first_frame].probability"
        if p:
            video["conditions"] = [{"type": "first_frame", "probability": float(p)}]
    if "with_audio" in strategy:
        t.mapped["training_strategy.with_audio"] = "task.audio.role"
    t.config["task"] = {"video": video, "audio": {"role": "generated" if strategy.get("with_audio") else "off"},
                        "sigma": "shared"}
    for key in strategy:
        if key not in ("name", "first_frame_conditioning_p", "with_audio"):
            t.dropped[f"training_strategy.{key}"] = "not a setting of the text_to_video strategy ltx-lora knows"


def _optimization(data: dict, t: Translation) -> None:
    opt = _section(data, "optimization")
    for theirs, mine in {"learning_rate": "learning_rate", "steps": "steps", "batch_size": "batch_size",
                         "gradient_accumulation_steps": "gradient_accumulation", "max_grad_norm": "max_grad_norm",
                         "enable_gradient_checkpointing": "gradient_checkpointing",
                         "optimizer_type": "optimizer"}.items():
        if theirs in opt:
            value = opt[theirs]
            if theirs == "learning_rate" and isinstance(value, str):
                try:  # YAML reads 2e-4 (no dot) as a string
                    value = float(value)
                except ValueError:
                    pass
            t.set(f"optimization.{theirs}", f"train.{mine}", value)
    _scheduler(opt, t)


def _number(value: Any) -> float | None:
    """A finite number of an official config (YAML reads 2e-4 as a string); None for anything else."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _scheduler(opt: dict, t: Translation) -> None:
    """Their torch schedulers as ours (a pure function of the step: linear or cosine from the peak to a floor, or
    constant). LinearLR runs from start_factor to end_factor, 0.1 by default: the shipped configs end at a tenth
    of the peak, our min_lr_ratio 0.1; CosineAnnealingLR ends at eta_min (an absolute rate); PolynomialLR of power
    1 is linear to zero. Others (restarts, steps, other powers, another start) become the nearest of ours."""
    sched = opt.get("scheduler_type")
    params = opt.get("scheduler_params")
    params = params if isinstance(params, dict) else {}
    lr = _number(opt.get("learning_rate", 1e-4))
    floor = None
    if sched == "linear" and _number(params.get("start_factor", 1.0)) == 1.0:
        floor = _number(params.get("end_factor", 0.1))
    elif sched == "cosine" and lr:
        eta_min = _number(params.get("eta_min", 0.0))
        floor = None if eta_min is None else eta_min / lr
    elif sched == "polynomial" and _number(params.get("power", 1.0)) == 1.0:
        sched, floor = "linear", 0.0
    if sched == "constant":
        t.set("optimization.scheduler_type", "train.scheduler", sched)
    elif sched in _SCHEDULERS and floor is not None and 0 <= floor <= 1:
        t.set("optimization.scheduler_type", "train.scheduler", sched)
        t.set("optimization.scheduler_params", "train.min_lr_ratio", floor)
    elif sched:
        ours = sched if sched in _SCHEDULERS else "cosine"
        t.set("optimization.scheduler_type", "train.scheduler", ours)
        t.changed["optimization.scheduler_type"] = (f"{sched} became {ours}" + (" from the peak to zero" if ours !=
                                                                                  "constant" else ""))
    if "scheduler_params" in opt and "optimization.scheduler_params" not in t.mapped:
        if opt["scheduler_params"]:
            t.dropped["optimization.scheduler_params"] = "use train.warmup_steps / train.min_lr_ratio"
        else:
            t.mapped["optimization.scheduler_params"] = "(empty: the schedule's defaults)"


def _acceleration(data: dict, t: Translation) -> None:
    acc = _section(data, "acceleration")
    if "mixed_precision_mode" in acc:
        mode = acc["mixed_precision_mode"]
        t.set("acceleration.mixed_precision_mode", "train.mixed_precision", "fp32" if mode == "no" else "bf16")
        if mode not in ("bf16", "no"):
            t.changed["acceleration.mixed_precision_mode"] = f"{mode} became bf16"
    if "quantization" in acc:
        quant = acc["quantization"]
        if not quant:
            t.set("acceleration.quantization", "memory.quantization", "auto")
            t.changed["acceleration.quantization"] = ("null became auto: bf16 whenever the memory plan fits it, "
                                                     "which it prints before training")
        else:
            ours = "fp8" if str(quant).startswith("fp8") else "int8"
            t.set("acceleration.quantization", "memory.quantization", ours)
            if not str(quant).startswith(("int8", "fp8")):
                t.changed["acceleration.quantization"] = f"{quant} became int8"
    if "load_text_encoder_in_8bit" in acc:
        t.set("acceleration.load_text_encoder_in_8bit", "memory.text_encoder_8bit",
              bool(acc["load_text_encoder_in_8bit"]))
    if "offload_optimizer_during_validation" in acc:
        t.unneeded["acceleration.offload_optimizer_during_validation"] = "the memory plan places everything"


def _data(data: dict, t: Translation) -> None:
    d = _section(data, "data")
    if "preprocessed_data_root" in d:
        t.dropped["data.preprocessed_data_root"] = "its .pt cache is pickle; run `ltx-lora preprocess` once"
    if "num_dataloader_workers" in d:
        t.unneeded["data.num_dataloader_workers"] = "the cache is read in the training process"


_VALIDATION_KEYS = {
    "seed": "seed", "inference_steps": "steps", "interval": "every", "stg_blocks": "stg_blocks",
    "audio_cfg_scale": "audio_cfg", "frame_rate": "fps", "guidance_rescale": "guidance_rescale",
    "generate_audio": "audio", "video_cfg_scale": "cfg", "guidance_scale": "cfg", "video_stg_scale": "stg_scale",
    "stg_scale": "stg_scale", "audio_stg_scale": "audio_stg_scale",
    "video_modality_guidance_scale": "modality_scale", "audio_modality_guidance_scale": "audio_modality_scale",
}


# An official validation condition's media key -> our prompt input (`video` / `audio` are a reference's for a
# `reference` condition, the given media for every other type).
_MEDIA_INPUT = {"image_or_video": "image", "mask": "mask"}
_SAMPLE = "validation.samples[]"
_COND = "validation.samples[].conditions[]"


def _samples(samples: list, t: Translation) -> list:
    """Official `validation.samples` as our validation prompts: a sample without conditions is its prompt text; one
    with conditions is a mapping {prompt, image, video, audio, mask, reference_video, reference_audio} of the
    inputs they name. How a condition uses its input (a prefix's length, a crop box, a reference's scale) is our
    task's, as trained; where a sample's own value differs, the note says so."""
    try:
        task = t.config.get("task")
        resolved = TaskConfig.model_validate(task) if isinstance(task, dict) else TASK_PRESETS[task][2]
    except (ValueError, KeyError, TypeError):
        resolved = None
    out: list = []
    for sample in samples:
        if not isinstance(sample, dict) or "prompt" not in sample:
            t.dropped[_SAMPLE] = "a sample without a prompt"
            continue
        t.mapped[f"{_SAMPLE}.prompt"] = "validation.prompts[].prompt"
        for key in sample:
            if key in ("seed", "video_dims"):
                t.dropped[f"{_SAMPLE}.{key}"] = "one for every prompt: validation.seed / validation.resolution"
            elif key not in ("prompt", "conditions"):
                t.dropped[f"{_SAMPLE}.{key}"] = "no such per-prompt setting in ltx-lora"
        inputs: dict[str, Any] = {}
        for cond in sample.get("conditions") or []:
            _sample_condition(cond, inputs, resolved, t)
        out.append({"prompt": sample["prompt"], **inputs} if inputs else sample["prompt"])
    return out


def _sample_condition(cond: Any, inputs: dict, task: TaskConfig | None, t: Translation) -> None:
    if not isinstance(cond, dict) or "type" not in cond:
        t.dropped[_COND] = "not a condition mapping"
        return
    kind = cond["type"]
    t.mapped[f"{_COND}.type"] = "(which input of validation.prompts[] it gives)"
    for key, value in cond.items():
        path = f"{_COND}.{key}"
        if key == "type" or value is None:
            continue
        if key in ("video", "audio"):
            mine = f"reference_{key}" if kind == "reference" else key
            inputs[mine] = value
            t.mapped[path] = f"validation.prompts[].{mine}"
        elif key in _MEDIA_INPUT:
            if kind == "mask" and str(value).endswith(".pt"):
                t.dropped[path] = ("a .pt mask is pickle, which ltx-lora never reads: give an image or video mask, "
                                   "or for audio a sound whose loud parts mark what is kept")
                continue
            inputs[_MEDIA_INPUT[key]] = value
            t.mapped[path] = f"validation.prompts[].{_MEDIA_INPUT[key]}"
        elif key == "include_in_output":
            t.changed[path] = "the report shows each reference beside its samples, not inside the video"
        else:
            differs = _differs(kind, key, value, cond, task)
            if differs:
                t.changed[path] = f"{value}: {differs}"
            else:
                t.mapped[path] = f"(the task's {kind} setting, the same)"


def _differs(kind: str, key: str, value: Any, cond: dict, task: TaskConfig | None) -> str | None:
    """Why a sample's condition setting is not carried as written (None when our task's setting is the same)."""
    modality = "audio" if cond.get("audio") is not None else "video"
    mine = None if task is None else task.audio if modality == "audio" else task.video
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
        return f"samples keep the task's {kind}, {have}"
    if kind == "spatial_crop" and key == "spatial_region":
        if ours is not None and list(ours.box) == list(value):
            return None
        return f"samples keep the task's box {list(ours.box) if ours else 'none'}"
    if kind == "reference" and key in ("downscale_factor", "temporal_scale_factor"):
        have = (ours.downscale if key == "downscale_factor" else ours.temporal_scale) if ours else 1
        return None if int(value) == have else f"samples use the task's reference {key.split('_')[0]} {have}"
    return "not an ltx-lora setting"


def _validation(data: dict, t: Translation) -> None:
    val = _section(data, "validation")
    prompts = list(val.get("prompts") or [])
    if prompts:
        t.mapped["validation.prompts"] = "validation.prompts"
    prompts += _samples(val.get("samples") or [], t)
    if prompts:
        t.config.setdefault("validation", {})["prompts"] = prompts
    if val.get("negative_prompt"):
        t.set("validation.negative_prompt", "validation.negative_prompt", " ".join(str(val["negative_prompt"]).split()))
    dims = val.get("video_dims")
    if isinstance(dims, (list, tuple)) and len(dims) == 3:
        t.set("validation.video_dims", "validation.resolution", "x".join(str(int(x)) for x in dims))
    for theirs, mine in _VALIDATION_KEYS.items():
        if theirs in val:
            t.set(f"validation.{theirs}", f"validation.{mine}", val[theirs])
    if "generate_video" in val:
        t.mapped["validation.generate_video"] = "(samples have video exactly when the task has video)"
    if "skip_initial_validation" in val:
        if val["skip_initial_validation"]:
            t.dropped["validation.skip_initial_validation"] = "ltx-lora always samples step 0: the report's baseline"
        else:
            t.mapped["validation.skip_initial_validation"] = "(ltx-lora samples step 0)"


def _checkpoints(data: dict, t: Translation) -> None:
    ck = _section(data, "checkpoints")
    if ck.get("interval"):
        t.set("checkpoints.interval", "checkpoints.every", ck["interval"])
    if "keep_last_n" in ck:
        n = ck["keep_last_n"]
        t.set("checkpoints.keep_last_n", "checkpoints.keep_last", n if isinstance(n, int) and n > 0 else None)
    if "precision" in ck:
        precision = {"bfloat16": "bf16", "bf16": "bf16", "float32": "fp32", "fp32": "fp32"}.get(str(ck["precision"]))
        if precision:
            t.set("checkpoints.precision", "checkpoints.precision", precision)
        else:
            t.changed["checkpoints.precision"] = f"{ck['precision']}: LoRA files are written in bf16"


def _rest(data: dict, t: Translation) -> None:
    lora = _section(data, "lora")
    for key in ("rank", "alpha", "dropout", "target_modules"):
        if key in lora:
            t.set(f"lora.{key}", f"lora.{key}", lora[key])
    fm = _section(data, "flow_matching")
    if "timestep_sampling_mode" in fm:
        mode = fm["timestep_sampling_mode"]
        if mode in ("shifted_logit_normal", "uniform"):
            t.set("flow_matching.timestep_sampling_mode", "train.timestep_sampling", mode)
        else:
            t.dropped["flow_matching.timestep_sampling_mode"] = f"{mode} is not offered (shifted_logit_normal, uniform)"
    if "timestep_sampling_params" in fm:
        params = fm["timestep_sampling_params"]
        if isinstance(params, dict) and params:  # the same names; a name the sampler does not take is refused
            t.set("flow_matching.timestep_sampling_params", "train.timestep_sampling_params", dict(params))
        elif params:
            t.dropped["flow_matching.timestep_sampling_params"] = "not a mapping of the sampler's parameters"
        else:
            t.mapped["flow_matching.timestep_sampling_params"] = "(empty: the official defaults, as ours)"
    wandb = _section(data, "wandb")
    if "enabled" in wandb:
        t.set("wandb.enabled", "logging.wandb", bool(wandb["enabled"]))
    if "project" in wandb:
        t.set("wandb.project", "logging.wandb_project", wandb["project"])
    for key in ("entity", "tags", "log_validation_videos"):
        if key in wandb:
            if wandb.get("enabled") and wandb[key] and key != "log_validation_videos":
                t.dropped[f"wandb.{key}"] = "set it in your W&B environment (WANDB_ENTITY, ...)"
            else:
                t.unneeded[f"wandb.{key}"] = "W&B is off, or samples are always logged"
    hub = _section(data, "hub")
    for key in hub:
        if key == "push_to_hub" and hub[key]:
            t.dropped["hub.push_to_hub"] = "no network at run time"
        else:
            t.unneeded[f"hub.{key}"] = "no network at run time"
    if "seed" in data:
        t.set("seed", "train.seed", data["seed"])
    if data.get("output_dir"):
        t.set("output_dir", "output_dir", data["output_dir"])


def translate(data: dict) -> Translation:
    """An official trainer config as ours, with every key accounted for (pure: prints nothing)."""
    t = Translation()
    for part in (_model, _task, _optimization, _acceleration, _data, _validation, _checkpoints, _rest):
        part(data, t)
    # One sweep names every key no section handled (each section maps only what it knows).
    for key in sorted(official_keys(data) - t.accounted()):
        t.dropped[key] = UNKNOWN
    return t


def translate_official(data: dict, source: str = "config") -> dict:
    """Map an official trainer config onto our schema; print one note saying what did not carry over. A value of
    the wrong type (a list where a number belongs, a section that is no mapping) is one UserError naming the file,
    never a crash."""
    try:
        t = translate(data)
    except _NotAMapping as e:
        raise UserError(f"{source}: {e} of the official trainer config; compare with the official configs in "
                        "packages/ltx-trainer/configs.") from None
    except (TypeError, ValueError, AttributeError, KeyError) as e:
        raise UserError(f"{source}: a value of the official trainer config has the wrong type ({e}); compare with "
                        "the official configs in packages/ltx-trainer/configs, or start from `ltx-lora init`.") from None
    _console.print(t.note(source), highlight=False)
    return t.config
