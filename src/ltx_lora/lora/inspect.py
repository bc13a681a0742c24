"""`ltx-lora lora inspect`: what a LoRA file holds: layout, ranks, alphas, targeted modules by group, the LTX
version it was made for, metadata. Reads the header and the `.alpha` scalars only."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ltx_lora.files import lora_file
from ltx_lora.files.model_files import identify

FORMAT_LABELS = {
    lora_file.COMFYUI: "ComfyUI / ltx-core (diffusion_model.*)",
    lora_file.BARE: "bare ltx-core module names",
    lora_file.KOHYA: "kohya (lora_unet_*)",
    lora_file.DIFFUSERS: "diffusers (transformer.* / connectors.*)",
    lora_file.PEFT: "peft (base_model.model.*)",
}
_KIND_LABELS = ("LyCORIS adapters (lokr: kron(w1, w2); loha: (w1_a @ w1_b) * (w2_a @ w2_b)); ComfyUI applies them, "
                "ltx-core's fusion and diffusers do not")
_SHOWN_METADATA = 200  # characters of a metadata value shown (configs can be long)


@dataclass
class LoraReport:
    path: str
    format: str
    format_label: str
    naming: str
    modules: int
    parameters: int
    ranks: dict[int | None, int]  # None: LoKr modules of unsplit factors (no rank)
    alphas: dict[str, int]  # alpha value (or "none") -> modules
    scales: dict[str, int]  # alpha / rank as ComfyUI applies it -> modules
    folded_alpha: float | None
    groups: dict[str, dict[str, Any]]  # group -> {modules, targets}
    blocks: int
    family: str | None
    family_from: str
    kind: str
    summary: str
    advice: list[str]
    metadata: dict[str, str]
    stray_keys: list[str] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)  # lora / lokr / loha -> modules
    mixed_formats: dict[str, int] | None = None
    reference: dict[str, str] = field(default_factory=dict)  # IC-LoRA: the reference_* metadata loaders read

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def inspect_lora(path: str | Path) -> LoraReport:
    lora = lora_file.read_lora(path)
    ident = identify(lora.path)  # family, kind (distilled LoRA, IC-LoRA, ...) and the advice, as `ltx-lora inspect`
    groups: dict[str, dict[str, Any]] = {}
    blocks = set()
    for m in lora.modules.values():
        g = groups.setdefault(lora_file.module_group(m.stem), {"modules": 0, "targets": Counter()})
        g["modules"] += 1
        g["targets"][lora_file.target_name(m.stem)] += 1
        parts = m.stem.split(".")
        if "transformer_blocks" in parts:
            blocks.add(int(parts[parts.index("transformer_blocks") + 1]))
    ordered = {name: {"modules": groups[name]["modules"], "targets": sorted(groups[name]["targets"])}
               for name in lora_file.GROUPS if name in groups}
    params = sum(m.parameters for m in lora.modules.values())
    meta = {k: (v if len(v) <= _SHOWN_METADATA else v[:_SHOWN_METADATA] + "...") for k, v in lora.metadata.items()}
    advice = list(ident.advice)
    if lora.format in (lora_file.DIFFUSERS, lora_file.PEFT) and not any("convert" in a for a in advice):
        advice.append("ComfyUI does not map this layout on LTX (it would load with no effect): "
                      "`ltx-lora lora convert FILE --to comfyui`.")
    return LoraReport(
        path=str(lora.path), format=lora.format, format_label=FORMAT_LABELS[lora.format], naming=lora.naming,
        modules=len(lora.modules), parameters=params,
        ranks=dict(sorted(lora.ranks.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))),
        alphas={("none" if a is None else f"{a:g}"): n for a, n in lora.alphas.items()},
        scales={f"{s:g}": n for s, n in Counter(m.scale for m in lora.modules.values()).items()},
        folded_alpha=lora.folded_alpha, groups=ordered, blocks=len(blocks), family=ident.family,
        family_from=str(ident.details.get("family_from", "")), kind=ident.kind, summary=ident.summary,
        advice=advice, metadata=meta, stray_keys=list(lora.stray_keys), kinds=dict(lora.kinds),
        mixed_formats=lora.format_counts if len(lora.format_counts) > 1 else None,
        reference={k: v for k, v in lora.metadata.items() if k.startswith("reference_")})


def report_lines(r: LoraReport) -> list[str]:
    """The report as plain lines for the terminal."""
    ranks = ", ".join(f"{'none' if k is None else k} ({n} modules)" if len(r.ranks) > 1 else str(k)
                      for k, n in r.ranks.items())
    alphas = ", ".join(f"{a}" + (f" ({n})" if len(r.alphas) > 1 else "") for a, n in r.alphas.items())
    lines = [r.summary, "",
             f"format        {r.format_label}; matrices named {r.naming}",
             *([f"adapter       {', '.join(f'{k} ({n} modules)' for k, n in r.kinds.items())}: "
                + _KIND_LABELS] if set(r.kinds) != {lora_file.LORA} else []),
             f"LTX version   {('LTX-' + r.family) if r.family else 'unknown'} (from {r.family_from or 'nothing'})",
             f"modules       {r.modules} in {r.blocks} blocks, {r.parameters:,} parameters",
             f"rank          {ranks}",
             f"alpha         {alphas}  -> strength alpha/rank: "
             + ", ".join(f"x{s}" for s in r.scales)]
    if r.folded_alpha is not None:
        into = "lora_B" if set(r.kinds) <= {lora_file.LORA} else "lokr_w1 / hada_w1_b"
        lines.append(f"              trained with alpha {r.folded_alpha:g}, already folded into {into} (metadata)")
    if r.reference:
        lines.append(f"IC-LoRA       {_reference_line(r.reference)}")
    lines.append("targets")
    for group, g in r.groups.items():
        lines.append(f"  {group:<22} {g['modules']:>4}  {', '.join(g['targets'][:8])}"
                     + (", ..." if len(g["targets"]) > 8 else ""))
    if r.mixed_formats:
        lines.append(f"mixed layouts {r.mixed_formats}")
    if r.stray_keys:
        lines.append(f"not LoRA pairs ({len(r.stray_keys)}): {', '.join(r.stray_keys[:4])}")
    if r.metadata:
        lines.append("metadata")
        lines += [f"  {k}: {v}" for k, v in sorted(r.metadata.items())]
    if r.advice:
        lines += ["", "What to do"] + [f"- {a}" for a in r.advice]
    return lines


def _reference_line(ref: dict[str, str]) -> str:
    """The reference settings an IC-LoRA pipeline applies, in words (from the reference_* metadata)."""
    kinds = [k for k in ref.get("reference_modalities", "video").split(",") if k]
    parts = []
    if "video" in kinds:
        d = ref.get("reference_downscale_factor") or ref.get("reference_spatial_scale_factor") or "1"
        t = ref.get("reference_temporal_scale_factor") or "1"
        parts.append(f"reference video at 1/{d} of the output's width and height (reference_downscale_factor {d})"
                     + (f", 1/{t} of its frame groups (reference_temporal_scale_factor {t})" if t != "1" else ""))
    if "audio" in kinds:
        parts.append("reference audio")
    return "; ".join(parts)
