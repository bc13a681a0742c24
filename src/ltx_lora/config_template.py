"""`ltx-lora init`: write a commented config for a memory profile.

The comments come from the schema's field descriptions, so the file a user edits and the schema cannot drift.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ltx_lora.config import Config, ValidationSample, parse_config
from ltx_lora.errors import UserError
from ltx_lora.files.atomic import atomic_write

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
    "48gb": "48 GB (RTX 6000 Ada/Pro, A6000): the plan for 48 GB (a 1-byte base: bf16 leaves no margin).",
    "32gb": "32 GB (RTX 5090): the plan for 32 GB (INT8, or FP8 from the FP8 checkpoint; no block swap).",
    "24gb": "24 GB (RTX 4090, experimental): the plan for 24 GB (1-byte base, blocks streamed from host memory).",
}

_EXAMPLE_PROMPTS = [
    "A red fox trots through fresh snow in a quiet birch forest at dawn, its breath visible in the cold air. "
    "The audio is the soft crunch of paws on snow and distant bird calls.",
    "A close-up of hands kneading bread dough on a floured wooden table in a sunlit kitchen. "
    "The audio is the muffled thump of dough and a kettle starting to whistle.",
]


def _merge(base: dict, patch: dict) -> dict:
    out = dict(base)
    for k, v in patch.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def _scalar(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(v, ensure_ascii=False)  # JSON strings are valid YAML scalars


def _emit(model: type[BaseModel], values: dict, indent: int) -> list[str]:
    lines: list[str] = []
    pad = " " * indent
    for name, field in model.model_fields.items():
        value = values.get(name)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            if field.description:
                lines.append(f"{pad}# {field.description}")
            lines.append(f"{pad}{name}:")
            lines += _emit(ann, value or {}, indent + 2)
            if indent == 0:  # a blank line between top-level sections
                lines.append("")
            continue
        if field.description:
            lines.append(f"{pad}# {field.description}")
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
                  dataset: str = "dataset.jsonl") -> str:
    if profile not in PROFILES:
        raise UserError(f"unknown profile '{profile}'; choose one of {', '.join(PROFILES)}.")
    patch = _merge(PROFILES[profile], {
        "model": {"checkpoint": checkpoint, "text_encoder": text_encoder},
        "data": {"dataset": dataset},
        "validation": {"prompts": _EXAMPLE_PROMPTS},
    })
    cfg = parse_config(_merge(Config().model_dump(mode="json"), patch), source="profile")
    header = [
        "# ltx-lora training config (LTX-2.3 LoRA).",
        f"# Profile {profile}: {PROFILE_NOTES[profile]}",
        "# Paths are local (no URLs); relative ones start at this file's folder, wherever you run ltx-lora.",
        "# Check everything with: ltx-lora doctor --config THIS_FILE",
        "# Every key is described in docs/configuration.md.",
        "",
    ]
    return "\n".join(header + _emit(Config, cfg.model_dump(mode="json"), 0)).rstrip() + "\n"


def write_config(path: Path, profile: str = "auto", checkpoint: str = "", text_encoder: str = "",
                 force: bool = False) -> Path:
    if path.exists() and not force:
        raise UserError(f"{path} already exists; pass --force to overwrite it or choose another name.")
    if path.suffix not in (".yaml", ".yml"):
        raise UserError(f"{path} should end in .yaml so editors and ltx-lora treat it as YAML.")
    # Paths typed on the command line start at the working directory; in the file they start at its folder.
    text = render_config(profile, _from_folder(checkpoint, path.parent), _from_folder(text_encoder, path.parent))
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
             "`data.cache_dir`, `output_dir`, `validation.reference_image`, `validation.preview_distilled_lora`, "
             "the inputs of `validation.prompts`) start at the config file's folder, whatever the working directory; media paths in a dataset file "
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


if __name__ == "__main__":
    print(render_reference(), end="")
