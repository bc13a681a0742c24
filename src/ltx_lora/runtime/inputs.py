"""The model files of a config, checked once the same way for `doctor --config`, `preprocess` and `train`.

`doctor --config` once said OK for a truncated checkpoint and a broken Gemma folder that `preprocess` then crashed
on, and `preprocess` encoded a whole dataset with a Distilled checkpoint that `train` refuses. One set of checks,
reading headers only (milliseconds, no weights): the checkpoint is a local safetensors file, an LTX-2.3 Dev training
base, and holds every byte its header places; the Gemma folder is complete (every file and weight shard, each shard
whole), its config loads and its features are as wide as the checkpoint's text projection takes.
"""

from __future__ import annotations

from pathlib import Path

from ltx_lora.errors import UserError
from ltx_lora.files.model_files import check_training_base
from ltx_lora.files.safetensors_header import NotSafetensors, read_header
from ltx_lora.ltx.text import check_gemma_fits, gemma_weight_files
from ltx_lora.paths import check_model_path
from ltx_lora.runtime.base_file import BaseFile


def _complete(path: Path, what: str) -> None:
    """`path` holds every byte its header places (read_header checks the length, among the rest)."""
    try:
        read_header(path)
    except NotSafetensors as e:
        raise UserError(f"{path} is not a readable safetensors file ({e}): download {what} again.") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}.") from None


def check_base(base: BaseFile) -> BaseFile:
    """A training base (LTX-2.3 Dev, bf16 or FP8) whose file is complete."""
    check_training_base(base.identity)
    _complete(base.path, "the checkpoint")
    return base


def read_base(value: str | Path) -> BaseFile:
    """model.checkpoint read (its header) and checked as `check_base` does."""
    try:
        base = BaseFile.read(value)
    except NotSafetensors as e:
        raise UserError(f"model.checkpoint {value} is not a readable safetensors file ({e}): download it again "
                        "or point it at ltx-2.3-22b-dev.safetensors.") from None
    return check_base(base)


def check_text_encoder(value: str | Path, checkpoint: str | Path | None) -> Path:
    """model.text_encoder: a complete Gemma 3 folder that fits `checkpoint`'s text projection (when given)."""
    folder = check_model_path(value, "text_encoder")
    for shard in gemma_weight_files(folder):
        _complete(shard, f"{shard.name} (google/gemma-3-12b-it)")
    if checkpoint is not None:
        check_gemma_fits(folder, Path(checkpoint))
    return folder
