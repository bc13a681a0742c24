"""`ltx-lora init`: write a commented config for a memory profile and a task.

The comments come from the schema's field descriptions, so the file a user edits and the schema cannot drift.
A task's settings are those of the official ltx-trainer config it matches (`TASK_RECIPES`): LoRA targets,
learning rate, steps, the guidance of a given modality, and how many checkpoints are kept.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel

from ltx_lora.config import Config, ValidationConfig, ValidationSample, parse_config
from ltx_lora.errors import UserError
from ltx_lora.files.atomic import atomic_write
from ltx_lora.paths import refuse_url
from ltx_lora.task import DEFAULT_TASK, TASK_PRESETS, ModalityTask, TaskConfig

# What each hardware tier of the guide changes from the defaults: the tier's memory plan, nothing else. The plan
# (ltx_lora.runtime.memory) picks the base format and the block swap for that budget, as README's tier table says;
# a profile writes no setting that needs a package ltx-lora does not install (8-bit AdamW, 8-bit Gemma).
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "auto": {"memory": {"plan": "auto"}},
    "80gb": {"memory": {"plan": "80gb"}},
    "48gb": {"memory": {"plan": "48gb"}},
    "32gb": {"memory": {"plan": "32gb"}},
    "24gb": {"memory": {"plan": "24gb"}},
}

PROFILE_NOTES = {
    "auto": "Memory plan chosen at start from the GPU's free memory (shown by `ltx-lora doctor`).",
    "80gb": "H100 80 GB: the plan for 80 GB (bf16 base, no block swap).",
    "48gb": "48 GB (RTX 6000 Ada/Pro, A6000): the plan for 48 GB (bf16 base, text connectors in host memory).",
    "32gb": "32 GB (RTX 5090): the plan for 32 GB (INT8, or FP8 from the FP8 checkpoint; no block swap).",
    "24gb": "24 GB (RTX 4090, experimental): the plan for 24 GB (1-byte base, blocks streamed from host memory). "
            "Preprocessing loads Gemma 3 12B, about 24 GB in bf16: on this card set memory.text_encoder_8bit: true "
            "(pip install 'ltx-lora[lowvram]'), or preprocess on a larger GPU.",
}

def _merge(base: dict, patch: dict) -> dict:
    out = dict(base)
    for k, v in patch.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def _merge_all(*patches: dict) -> dict:
    out: dict = {}
    for p in patches:
        out = _merge(out, p)
    return out


_SHORT = ["to_k", "to_q", "to_v", "to_out.0"]
_ATTN12 = [f"attn{i}.{p}" for i in (1, 2) for p in _SHORT]
_AUDIO = [f"audio_attn{i}.{p}" for i in (1, 2) for p in _SHORT] + ["audio_ff.net.0.proj", "audio_ff.net.2"]
_AUDIO_TASK = {"lora": {"target_modules": _AUDIO}, "train": {"learning_rate": 2e-4, "steps": 3000},
               "validation": {"audio_modality_scale": 1.0}}
_NO_AUDIO = {"validation": {"audio": False, "modality_scale": 1.0, "audio_modality_scale": 3.0}}
_IC = {"train": {"learning_rate": 2e-4, "steps": 3000}}
_KEEP_ALL = {"checkpoints": {"keep_last": None}}

# Every shipped config's schedule: torch's LinearLR with its default end_factor, from the peak down to a tenth of it.
_OFFICIAL_SCHEDULE = {"train": {"scheduler": "linear", "min_lr_ratio": 0.1}}

# What each task changes from the defaults: the settings of the official config it matches (ltx-trainer 1.2.0,
# packages/ltx-trainer/configs/), so `init --task` starts where Lightricks' recipe starts.
_TASK_CHANGES: dict[str, dict[str, dict[str, Any]]] = {
    "t2av": _KEEP_ALL,
    "t2v": {**_KEEP_ALL, "validation": {"audio": False}},
    "i2v": _KEEP_ALL,
    "t2a": _AUDIO_TASK,
    "a2v": _merge_all(_KEEP_ALL, {"validation": {"audio_cfg": 1.0, "audio_stg_scale": 0.0,
                                                 "audio_modality_scale": 1.0, "audio": False}}),
    "v2a": _merge_all(_KEEP_ALL, {"lora": {"target_modules": _AUDIO + [f"video_to_audio_attn.{p}" for p in _SHORT]},
                                  "validation": {"cfg": 1.0, "stg_scale": 0.0, "modality_scale": 1.0,
                                                 "audio_stg_scale": 1.0, "audio_modality_scale": 3.0}}),
    "video_extend": _KEEP_ALL,
    "video_suffix": _KEEP_ALL,
    "video_inpainting": _merge_all(_KEEP_ALL, _NO_AUDIO, {"lora": {"target_modules": _ATTN12}}),
    "video_outpainting": _merge_all(_KEEP_ALL, _NO_AUDIO, {"lora": {"target_modules": _ATTN12}}),
    "audio_extend": _AUDIO_TASK,
    "audio_suffix": _AUDIO_TASK,
    "audio_inpainting": _AUDIO_TASK,
    "v2v_ic": _merge_all(_IC, _NO_AUDIO, {"lora": {"target_modules": _ATTN12 + ["ff.net.0.proj", "ff.net.2"]}}),
    "a2a_ic": _merge_all(_AUDIO_TASK),
    "av2av_ic": _IC,
}
TASK_RECIPES = {task: _merge_all(_OFFICIAL_SCHEDULE, changes) for task, changes in _TASK_CHANGES.items()}

# The dataset columns a task needs beyond video and caption (docs/tasks.md says how to make them).
TASK_DATA = {
    "video_inpainting": "each row's video_mask (white = kept)", "audio_inpainting": "each row's audio_mask",
    "v2v_ic": "each row's reference_video", "a2a_ic": "each row's reference_audio",
    "av2av_ic": "each row's reference_video and reference_audio",
    "t2a": "clips with sound, or audio files", "audio_extend": "clips with sound, or audio files",
    "audio_suffix": "clips with sound, or audio files", "a2v": "clips with sound", "v2a": "clips with sound",
}

_EXAMPLE_PROMPTS = [
    "A red fox trots through fresh snow in a quiet birch forest at dawn, its breath visible in the cold air. "
    "The audio is the soft crunch of paws on snow and distant bird calls.",
    "A close-up of hands kneading bread dough on a floured wooden table in a sunlit kitchen. "
    "The audio is the muffled thump of dough and a kettle starting to whistle.",
]




# A placeholder file for each input a validation prompt can give (the example mapping `init` writes in a comment).
_INPUT_EXAMPLES = {"image": "refs/first_frame.png", "video": "refs/clip.mp4", "audio": "refs/sound.wav",
                   "mask": "refs/mask.png", "reference_video": "refs/control.mp4", "reference_audio": "refs/ref.wav"}


def prompt_inputs(task: TaskConfig) -> tuple[list[str], list[str]]:
    """(inputs every validation prompt must give, inputs a prompt may give) for `task`, by the rule
    `ltx_lora.sample.conditions.check_inputs` applies: a given modality and an always-joined reference are needed;
    the inputs of the other conditions are optional (without them a sample is conditioned on the text alone)."""
    needed: list[str] = []
    optional: list[str] = []
    for name in ("video", "audio"):
        m: ModalityTask = getattr(task, name)
        if m.role == "condition":
            needed.append(name)
        if not m.generated:
            continue
        if name == "video" and m.find("first_frame"):
            optional.append("image")
        if any(m.find(k) for k in ("prefix", "suffix", "spatial_crop", "mask")):
            optional.append(name)
        if m.find("mask"):
            optional.append("mask")
        ref = m.find("reference")
        if ref:
            (needed if ref[0].probability >= 1 else optional).append(f"reference_{name}")
    return needed, [k for k in dict.fromkeys(optional) if k not in needed]


def _prompts_note(task: TaskConfig, name: str) -> list[str]:
    """Comment lines above validation.prompts: the prompts are examples, and which inputs this task's prompts need or
    may give."""
    # The examples are about a fox and bread: kept as they are, they show nothing of what the LoRA learns.
    lines = ["# The prompts below are examples: replace them with 2-3 prompts like your captions, with `[trigger]` "
             "where data.trigger_word goes, so the samples show what the LoRA learns."]
    needed, optional = prompt_inputs(task)
    if not needed and not optional:
        return lines
    sound_mask = not (task.video.generated and task.video.find("mask"))  # then the mask is the audio's: a sound
    files = dict(_INPUT_EXAMPLES, **({"mask": "refs/mask.wav"} if sound_mask else {}))
    example = ", ".join(f"{k}: {json.dumps(files[k])}" for k in (needed or optional))
    if needed:
        first = (f"Task {name}: every prompt must give {' and '.join(f'`{k}`' for k in needed)}, so write each as a "
                 f"mapping, e.g. - {{prompt: \"...\", {example}}}; `ltx-lora doctor --config` and `train` refuse the "
                 "plain prompts below until then.")
    else:
        first = (f"Task {name}: a prompt may give {' and '.join(f'`{k}`' for k in optional)} as a mapping, e.g. "
                 f"- {{prompt: \"...\", {example}}}; a plain prompt samples from the text alone.")
    if needed and optional:
        first += f" It may also give {' and '.join(f'`{k}`' for k in optional)}."
    return lines + [f"# {first}"]


def _scalar(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(v, ensure_ascii=False)  # JSON strings are valid YAML scalars


def _emit_task(task: TaskConfig, name: str) -> list[str]:
    """The task written out (roles and conditions visible and editable), with what it is and needs."""
    line, official, _ = TASK_PRESETS[name]
    lines = [f"# What the LoRA learns. Task {name}: {line}"
             + (f" (the official {official})." if official else "."),
             f"# `task: {name}` alone means the same; docs/tasks.md lists every task and condition."]
    if name in TASK_DATA:
        lines.append(f"# Needs in the dataset: {TASK_DATA[name]}.")
    lines.append("task:")
    for modality in ("video", "audio"):
        m: ModalityTask = getattr(task, modality)
        lines += [f"  # {TaskConfig.model_fields[modality].description} "
                  f"{ModalityTask.model_fields['role'].description}",
                  f"  {modality}:", f"    role: {json.dumps(m.role)}"]
        if m.conditions:
            lines.append("    conditions:")
            lines += [f"      - {json.dumps(c.model_dump(mode='json'))}" for c in m.conditions]
        else:
            lines.append("    conditions: []")
    lines += [f"  # {TaskConfig.model_fields['sigma'].description}", f"  sigma: {json.dumps(task.sigma)}", ""]
    return lines


def _emit(model: type[BaseModel], values: dict, indent: int, task: str = DEFAULT_TASK) -> list[str]:
    lines: list[str] = []
    pad = " " * indent
    for name, field in model.model_fields.items():
        value = values.get(name)
        if model is Config and name == "task":
            lines += _emit_task(TASK_PRESETS[task][2], task)
            continue
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            if field.description:
                lines.append(f"{pad}# {field.description}")
            lines.append(f"{pad}{name}:")
            lines += _emit(ann, value or {}, indent + 2, task)
            if indent == 0:  # a blank line between top-level sections
                lines.append("")
            continue
        if field.description:
            lines.append(f"{pad}# {field.description}")
        if model is ValidationConfig and name == "prompts":
            lines += [f"{pad}{line}" for line in _prompts_note(TASK_PRESETS[task][2], task)]
        if isinstance(value, list):
            if not value:
                lines.append(f"{pad}{name}: []")
            else:
                lines.append(f"{pad}{name}:")
                lines += [f"{pad}  - {_scalar(item)}" for item in value]
        else:
            lines.append(f"{pad}{name}: {_scalar(value)}")
    return lines


def render_config(profile: str = "auto", checkpoint: str = "", text_encoder: str = "",
                  dataset: str = "dataset.jsonl", task: str = DEFAULT_TASK) -> str:
    if profile not in PROFILES:
        raise UserError(f"unknown profile '{profile}'; choose one of {', '.join(PROFILES)}.")
    if task not in TASK_PRESETS:
        raise UserError(f"unknown task '{task}'; choose one of {', '.join(TASK_PRESETS)} (`ltx-lora init --help` "
                        "says what each trains).")
    patch = _merge_all(TASK_RECIPES[task], PROFILES[profile], {
        "model": {"checkpoint": checkpoint, "text_encoder": text_encoder},
        "data": {"dataset": dataset},
        "validation": {"prompts": _EXAMPLE_PROMPTS},
    })
    cfg = parse_config(_merge(Config().model_dump(mode="json"), {**patch, "task": task}), source="profile")
    header = [
        "# ltx-lora training config (LTX-2.3 LoRA).",
        f"# Task {task}: {TASK_PRESETS[task][0]}.",
        f"# Profile {profile}: {PROFILE_NOTES[profile]}",
        "# Paths are local (no URLs); relative ones start at this file's folder, wherever you run ltx-lora.",
        "# Check everything with: ltx-lora doctor --config THIS_FILE",
        "# Every key is described in docs/configuration.md.",
        "",
    ]
    return "\n".join(header + _emit(Config, cfg.model_dump(mode="json"), 0, task)).rstrip() + "\n"


def write_config(path: Path, profile: str = "auto", checkpoint: str = "", text_encoder: str = "",
                 force: bool = False, task: str = DEFAULT_TASK) -> Path:
    if path.exists() and not force:
        raise UserError(f"{path} already exists; pass --force to overwrite it or choose another name.")
    if path.suffix not in (".yaml", ".yml"):
        raise UserError(f"{path} should end in .yaml so editors and ltx-lora treat it as YAML.")
    # A URL would be rewritten as a relative path below (its `//` collapsed): refuse it with the download sentence.
    for value, option, role in ((checkpoint, "--checkpoint", "checkpoint"), (text_encoder, "--text-encoder",
                                                                            "text_encoder")):
        refuse_url(value, option, role)
    # Paths typed on the command line start at the working directory; in the file they start at its folder.
    text = render_config(profile, _from_folder(checkpoint, path.parent), _from_folder(text_encoder, path.parent),
                         task=task)
    return atomic_write(path, text)


def _from_folder(value: str, folder: Path) -> str:
    """A path given relative to the working directory, rewritten relative to `folder` (absolute ones stay)."""
    if not value or Path(value).expanduser().is_absolute():
        return value
    return Path(os.path.relpath(os.path.abspath(value), os.path.abspath(folder))).as_posix()


def render_reference() -> str:
    """docs/configuration.md: every section and key with its default and description, from the schema itself."""
    lines = ["# Configuration reference", "",
             "Generated from `ltx_lora.config` by `python -m ltx_lora.config_template > docs/configuration.md`;",
             "a test fails when this file and the schema differ. `ltx-lora init` writes a commented config.", "",
             "Relative paths in a config file (`model.checkpoint`, `model.text_encoder`, `data.dataset`, "
             "`data.cache_dir`, `output_dir`, `lora.init_from`, `validation.reference_image`, "
             "`validation.preview_distilled_lora`, the inputs of `validation.prompts`) start at the config file's folder, whatever the working directory; media paths in a dataset file "
             "start at the dataset file's folder.", ""]
    defaults = Config().model_dump(mode="json")
    for name, field in Config.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            lines += [f"## `{name}`", "", field.description or "", "", "| key | default | meaning |", "|---|---|---|"]
            for key, sub in ann.model_fields.items():
                inner = sub.annotation
                if isinstance(inner, type) and issubclass(inner, BaseModel):  # a section inside (train.ema)
                    for k, f in inner.model_fields.items():
                        lines.append(f"| `{name}.{key}.{k}` | `{_scalar(defaults[name][key][k])}` | "
                                     f"{f.description or ''} |")
                    continue
                lines.append(f"| `{name}.{key}` | `{_scalar(defaults[name][key])}` | {sub.description or ''} |")
                optional = next((a for a in get_args(inner) if isinstance(a, type) and issubclass(a, BaseModel)),
                                None)
                if optional is not None:  # a section that is off when absent (train.output_preservation): its keys
                    lines += [f"| `{name}.{key}.{k}` | {'required' if f.is_required() else '`' + _scalar(f.default) + '`'}"
                              f" | {f.description or ''} |" for k, f in optional.model_fields.items()]
                if (name, key) == ("validation", "prompts"):  # a prompt written as a mapping: its keys
                    lines += [f"| `validation.prompts[].{k}` | "
                              f"{'required' if f.is_required() else '`' + _scalar(f.default) + '`'} | "
                              f"{f.description or ''} |" for k, f in ValidationSample.model_fields.items()]
            lines.append("")
        else:
            lines += [f"## `{name}`", "", f"Default `{_scalar(defaults[name])}`. {field.description or ''}", ""]
    lines += ["## Profiles (`ltx-lora init --profile`)", ""]
    lines += [f"- `{p}`: {PROFILE_NOTES[p]} Sets: `{json.dumps(PROFILES[p])}`" for p in PROFILES]
    return "\n".join(lines) + "\n"


def _conditions_text(m: ModalityTask) -> str:
    if not m.conditions:
        return ""
    parts = []
    for c in m.conditions:
        extra = {k: v for k, v in c.model_dump(mode="json").items() if k not in ("type", "probability")}
        extra = {k: v for k, v in extra.items() if not (k in ("downscale", "temporal_scale") and v == 1)}
        args = ", ".join(f"{k} {v if not isinstance(v, list) else ','.join(map(str, v))}" for k, v in extra.items())
        parts.append(f"{c.type}" + (f" ({args})" if args else "") + (f" p {c.probability:g}" if c.probability != 1
                                                                      else ""))
    return ", ".join(parts)


def task_table() -> str:
    """The README's and docs/tasks.md's table of task presets, from the presets themselves."""
    lines = ["| task | what the LoRA learns | video | audio | official config | needs in the dataset |",
             "|---|---|---|---|---|---|"]
    for name, (line, official, task) in TASK_PRESETS.items():
        cells = []
        for m in (task.video, task.audio):
            cond = _conditions_text(m)
            cells.append(m.role + (f": {cond}" if cond else ""))
        lines.append(f"| `{name}` | {line} | {cells[0]} | {cells[1]} | {f'`{official}`' if official else '-'} | "
                     f"{TASK_DATA.get(name, 'clips (with sound when audio is generated)')} |")
    return "\n".join(lines) + "\n"


def render_tasks() -> str:
    """docs/tasks.md: what a task is, every condition and every preset (generated, checked by a test)."""
    from ltx_lora import task as task_module

    lines = ["# Tasks: what a LoRA learns", "",
             "Generated by `python -m ltx_lora.config_template tasks > docs/tasks.md`; a test fails when it and the",
             "code differ.", "", *[ln[4:] if ln.startswith("    ") else ln
                                   for ln in (task_module.__doc__ or "").strip().splitlines()], "",
             "## Presets (`task: NAME`, `ltx-lora init --task NAME`)", "",
             "Each writes the official config's task and recipe (LoRA targets, learning rate, steps, kept "
             "checkpoints, guidance of each modality); `ltx-lora init --task NAME` writes it out.", "",
             task_table(), "## Conditions", "",
             "| type | fields | meaning |", "|---|---|---|"]
    for cls in (task_module.FirstFrameCondition, task_module.PrefixCondition, task_module.SuffixCondition,
                task_module.SpatialCropCondition, task_module.MaskCondition, task_module.ReferenceCondition):
        fields = "; ".join(f"`{k}`: {f.description}" for k, f in cls.model_fields.items() if k != "type")
        doc = " ".join((cls.__doc__ or "").split())
        lines.append(f"| `{cls.model_fields['type'].default}` | {fields} | {doc} |")
    from ltx_lora.sample import conditions

    doc = (conditions.__doc__ or "").strip().splitlines()
    intro = ("A `validation.prompts` entry is a string (text only) or a mapping {prompt, image, video, audio, mask, "
             "reference_video, reference_audio} (see docs/configuration.md); the report shows each prompt's inputs "
             "beside its samples.")
    lines += ["", "## Validation prompts with inputs", "", intro, "", *doc[3:]]
    lines += ["", "## A task of your own", "", "```yaml", "task:", "  video:", "    role: generated",
              "    conditions:", "      - {type: prefix, frames: 4, probability: 0.5}",
              "      - {type: first_frame, probability: 0.2}", "  audio:", '    role: "off"   # quoted: YAML reads a bare off '
              "as false (also accepted)", "  sigma: independent", "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(render_tasks() if sys.argv[1:] == ["tasks"] else render_reference(), end="")
