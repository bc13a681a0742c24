"""Where a LoRA tool writes: one rule for convert, merge, mix and resize."""

from __future__ import annotations

from pathlib import Path

from ltx_lora.errors import UserError


def output_path(out: str | Path, inputs: list[Path], overwrite: bool) -> Path:
    """`-o` as a path: never one of the tool's inputs, and an existing file only with --force (the tools write
    atomically, so an interrupted write leaves the old file)."""
    out = Path(out).expanduser()
    if out.resolve() in {Path(p).resolve() for p in inputs}:
        raise UserError("the output file would overwrite an input; choose another -o path.")
    if out.exists() and not overwrite:
        raise UserError(f"{out} exists; choose another -o path or pass --force.")
    return out
