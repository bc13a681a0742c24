"""`ltx-lora lora convert`: write a LoRA in the ComfyUI, diffusers or peft layout, keeping its strength.

Strength: ComfyUI applies alpha / rank where a `<module>.alpha` tensor exists; ltx-core's fusion and diffusers'
LTX-2 loader ignore alpha, and diffusers refuses a file with `.alpha` tensors outright. So:
- comfyui keeps the `.alpha` tensors as they are (or, with `fold_alpha`, multiplies lora_B by alpha / rank and
  drops them: the file then has the same strength in ComfyUI, ltx-core and diffusers);
- diffusers and peft always fold alpha / rank into lora_B.
The trained alpha and rank stay in the metadata (`alpha`, `rank`, `alpha_folded_into_lora_B`), as our trainer
writes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ltx_lora.errors import UserError
from ltx_lora.lora import formats
from ltx_lora.lora.formats import COMFYUI, DIFFUSERS, PEFT, LoraFile

TARGETS = (COMFYUI, DIFFUSERS, PEFT)


@dataclass
class ConvertResult:
    path: Path
    source_format: str
    target: str
    modules: int
    alpha_folded: bool
    dropped_keys: list[str] = field(default_factory=list)


def _names(stem: str, target: str) -> tuple[str, str, str]:
    base = {COMFYUI: lambda s: s, DIFFUSERS: formats.to_diffusers, PEFT: formats.to_peft}[target](stem)
    return f"{base}.lora_A.weight", f"{base}.lora_B.weight", f"{base}.alpha"


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise UserError(f"unknown target format '{target}'; choose one of {', '.join(TARGETS)}.")


def converted_tensors(lora: LoraFile, target: str, fold_alpha: bool = False) -> tuple[dict, dict[str, str], bool]:
    """(tensors, metadata, alpha folded?) of `lora` in the `target` layout."""
    import torch

    _check_target(target)
    fold = fold_alpha or target != COMFYUI
    pairs = formats.load_pairs(lora)
    out = {}
    for stem, (down, up) in pairs.items():
        module = lora.modules[stem]
        key_a, key_b, key_alpha = _names(stem, target)
        if fold and module.alpha is not None:
            up = (up.float() * module.scale).to(up.dtype)
        out[key_a], out[key_b] = down.contiguous(), up.contiguous()
        if not fold and module.alpha is not None:
            out[key_alpha] = torch.tensor(module.alpha, dtype=up.dtype)
    meta = dict(lora.metadata)
    meta["ltx_lora_converted_from"] = lora.format
    alphas = {m.alpha for m in lora.modules.values()}
    ranks = {m.rank for m in lora.modules.values()}
    if fold and alphas != {None}:
        meta["alpha_folded_into_lora_B"] = "true"
        if len(alphas) == 1 and len(ranks) == 1:
            meta["alpha"], meta["rank"] = f"{alphas.pop():g}", str(ranks.pop())
    return out, meta, fold


def convert(src: str | Path, target: str, out: str | Path, fold_alpha: bool = False,
            overwrite: bool = False) -> ConvertResult:
    from ltx_lora.data.cache import atomic_save

    _check_target(target)
    lora = formats.read_lora(src)
    out = Path(out).expanduser()
    if out.resolve() == lora.path.resolve():
        raise UserError("the output file is the input file; choose another -o path.")
    if out.exists() and not overwrite:
        raise UserError(f"{out} exists; choose another -o path or pass --force.")
    tensors, meta, folded = converted_tensors(lora, target, fold_alpha)
    atomic_save(tensors, out, meta)
    return ConvertResult(out, lora.format, target, len(lora.modules), folded, list(lora.stray_keys))
