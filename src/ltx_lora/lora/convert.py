"""`ltx-lora lora convert`: write a LoRA in the ComfyUI, kohya, diffusers or peft layout, keeping its strength.

Strength: ComfyUI applies alpha / rank where a `<module>.alpha` tensor exists; ltx-core's fusion and diffusers'
LTX-2 loader ignore alpha, and diffusers refuses a file with `.alpha` tensors outright. So:
- comfyui and kohya (both read by ComfyUI) keep the `.alpha` tensors as they are (or, with `fold_alpha`, multiply
  lora_B by alpha / rank and drop them: a comfyui file then has the same strength in ComfyUI, ltx-core and
  diffusers);
- diffusers and peft always fold alpha / rank into lora_B.
LoKr / LoHa modules (`lokr_*`, `hada_*`) have only the comfyui and kohya layouts (ComfyUI reads them under any
module name it maps); `--fold-alpha` multiplies their scale into `lokr_w1` (`lokr_w1_b`) / `hada_w1_b`.
Key names come from `lora_file.lora_keys`; the file is written by `lora_file.write_lora`.
The trained alpha and rank stay in the metadata (`alpha`, `rank`, `alpha_folded_into_lora_B`), as our trainer
writes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ltx_lora.errors import UserError
from ltx_lora.files import lora_file
from ltx_lora.files.lora_file import COMFYUI, DIFFUSERS, KOHYA, PEFT, LoraFile
from ltx_lora.lora.output import output_path

TARGETS = (COMFYUI, KOHYA, DIFFUSERS, PEFT)
_KEEPS_ALPHA = (COMFYUI, KOHYA)  # ComfyUI applies `.alpha` in both; the other consumers need it folded


@dataclass
class ConvertResult:
    path: Path
    source_format: str
    target: str
    modules: int
    alpha_folded: bool  # the file had .alpha tensors and they were folded into lora_B
    dropped_keys: list[str] = field(default_factory=list)
    alphas_kept: int = 0  # .alpha tensors written to the output


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise UserError(f"unknown target format '{target}'; choose one of {', '.join(TARGETS)}.")


def converted_modules(lora: LoraFile, target: str, fold_alpha: bool = False
                      ) -> tuple[dict, dict[str, float], dict[str, str], bool]:
    """({stem: (down, up)}, {stem: alpha} to store, metadata, alpha folded?) of `lora` for the `target` layout."""
    _check_target(target)
    fold = fold_alpha or target not in _KEEPS_ALPHA
    lycoris = sorted(set(lora.kinds) - {lora_file.LORA})
    if lycoris and target not in lora_file.LYCORIS_LAYOUTS:
        raise UserError(f"{lora.path.name} holds {' and '.join(lycoris)} modules, which have no {target} layout (its "
                        "loaders read lora_A/lora_B only); convert it to comfyui or kohya.")
    modules, kept_alphas = {}, {}
    for stem, weights in lora_file.load_weights(lora).items():
        module = lora.modules[stem]
        if isinstance(weights, lora_file.LycorisWeights):
            # LoKr: a file of unsplit factors has scale 1 whatever its alpha; folding drops such an alpha too.
            value = weights.folded() if fold else lora_file.LycorisWeights(weights.kind, weights.tensors)
        elif fold and module.alpha is not None:
            value = (weights.down, (weights.up.float() * module.scale).to(weights.up.dtype))
        else:
            value = (weights.down, weights.up)
        if not fold and module.alpha is not None:
            kept_alphas[stem] = module.alpha
        modules[stem] = value
    meta = dict(lora.metadata)
    meta["ltx_lora_converted_from"] = lora.format
    alphas = {m.alpha for m in lora.modules.values()}
    ranks = {m.rank for m in lora.modules.values()}
    if fold and alphas != {None}:
        meta["alpha_folded_into_lora_B"] = "true"
        if len(alphas) == 1 and len(ranks) == 1:
            meta["alpha"], meta["rank"] = f"{alphas.pop():g}", str(ranks.pop())
    return modules, kept_alphas, meta, fold


def convert(src: str | Path, target: str, out: str | Path, fold_alpha: bool = False,
            overwrite: bool = False) -> ConvertResult:
    _check_target(target)
    lora = lora_file.read_lora(src)
    out = output_path(out, [lora.path], overwrite)
    modules, alphas, meta, folded = converted_modules(lora, target, fold_alpha)
    lora_file.write_lora(out, modules, layout=target, alphas=alphas, metadata=meta)
    had_alpha = any(m.alpha is not None for m in lora.modules.values())
    return ConvertResult(out, lora.format, target, len(lora.modules), folded and had_alpha, list(lora.stray_keys),
                         len(alphas))
