"""`ltx-lora lora check`: would this LoRA do anything on this base, and what would each consumer apply?

ComfyUI decides the findings, because there a wrong key is not an error but a log line ("lora key not loaded")
and the LoRA silently has no effect. We rebuild ComfyUI's LTXV/LTXAV LoRA key map from the base checkpoint's
header exactly as `comfy/lora.py::model_lora_keys_unet` does, then look every LoRA module up in it:

- for each model key `diffusion_model.X.weight`: `lora_unet_<X with _>`, `diffusion_model.X` and (LTXV/LTXAV only)
  bare `X`; nothing for `transformer.*` (diffusers) or `base_model.model.*` (peft) on LTX;
- `text_embedding_projection.*` belongs to ComfyUI's text encoder, whose LoRA map only knows `text_encoders.*` /
  `lora_te*` names: such keys are not loaded either;
- a matched module whose up @ down does not have the weight's shape is skipped with an error in the log.

ltx-core (`LTXV_LORA_COMFY_RENAMING_MAP`: strip `diffusion_model.`, match `<path>.lora_A/B.weight` to the
transformer's `<path>.weight`) and diffusers' `LTX2LoraLoaderMixin` are reported beside it. Sources:
docs/lora-formats.md.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ltx_lora.errors import UserError
from ltx_lora.files import lora_file
from ltx_lora.files.lora_file import COMFYUI, DIFFUSERS, LoraFile
from ltx_lora.files.model_files import (
    IC_LORA,
    LORA,
    LTX23_DISTILLED_LORA,
    OLD_LORA_ADVICE,
    TRANSFORMER_PREFIX,
    identify,
)
from ltx_lora.files.safetensors_header import NotSafetensors, SafetensorsHeader, read_header

APPLIED, IGNORED, MISMATCH = "applied", "ignored", "shape mismatch"


@dataclass
class ModuleCheck:
    key: str  # the module name as written in the file (down key without its suffix)
    stem: str
    group: str
    shape: tuple[int, int]  # (out, in) of up @ down
    base_shape: tuple[int, ...] | None
    comfyui: str
    ltx_core: str
    diffusers: str


@dataclass
class CheckReport:
    lora: str
    base: str
    lora_format: str
    lora_family: str | None
    lora_family_from: str
    base_family: str | None
    modules: list[ModuleCheck] = field(default_factory=list)
    stray_keys: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.findings

    def counts(self, consumer: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for m in self.modules:
            status = getattr(m, consumer)
            out[status] = out.get(status, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["clean"] = self.clean
        d["summary"] = {c: self.counts(c) for c in ("comfyui", "ltx_core", "diffusers")}
        return d


def comfyui_key_map(base: SafetensorsHeader) -> dict[str, str]:
    """ComfyUI's LoRA key map for an LTXV/LTXAV model loaded from this checkpoint: LoRA module name -> the base
    key (in the checkpoint's own naming) it patches."""
    key_map: dict[str, str] = {}
    for key in base.tensors:
        if not key.startswith(TRANSFORMER_PREFIX):
            continue
        x = key[len(TRANSFORMER_PREFIX):]
        if x.endswith(".weight"):
            path = x[: -len(".weight")]
            key_map[f"lora_unet_{path.replace('.', '_')}"] = key
            key_map[f"diffusion_model.{path}"] = key
            key_map[path] = key  # LTXV / LTXAV: bare module paths
        else:
            key_map[f"diffusion_model.{x}"] = key
    return key_map


def _raw_name(module: lora_file.LoraModule) -> str:
    return lora_file.split_key(module.down_key)[0]


def _ltx_core_status(lora: LoraFile, m: lora_file.LoraModule, raw: str, base: SafetensorsHeader) -> str:
    # LTXV_LORA_COMFY_RENAMING_MAP removes "diffusion_model." and fuse_loras looks for <path>.lora_A/B.weight next
    # to each transformer weight <path>.weight: other names and the text side are never read.
    if not raw.startswith("diffusion_model.") or lora_file.is_text_side(m.stem):
        return IGNORED
    if not (m.down_key.endswith(".lora_A.weight") and m.up_key.endswith(".lora_B.weight")):
        return IGNORED
    info = base.tensors.get(lora_file.base_weight_key(m.stem))
    if info is None:
        return IGNORED
    return APPLIED if tuple(info.shape) == (m.out_features, m.in_features) else MISMATCH


def _diffusers_status(lora: LoraFile, m: lora_file.LoraModule, raw: str, base: SafetensorsHeader,
                      refused: bool) -> str:
    if refused:
        return IGNORED
    info = base.tensors.get(lora_file.base_weight_key(m.stem))
    if not m.down_key.endswith(".lora_A.weight"):
        return IGNORED  # its LTX-2 path renames only `.lora.down/.lora.up`, not kohya's lora_down/lora_up
    if raw.startswith("diffusion_model."):
        # `_convert_non_diffusers_ltx2_lora_to_diffusers` renames transformer modules only: the connectors would
        # become transformer.video_embeddings_connector.*, which the diffusers transformer does not have.
        if lora_file.is_text_side(m.stem):
            return IGNORED
    elif raw.startswith("text_embedding_projection."):
        pass  # converted to connectors.*
    elif lora.format != DIFFUSERS or not raw.startswith(("transformer.", "connectors.")):
        return IGNORED
    if info is None:
        return IGNORED
    return APPLIED if tuple(info.shape) == (m.out_features, m.in_features) else MISMATCH


def require_base(base_path: Path):
    """(identity, header) of the `--base` file of check, verify and merge; one sentence if it is a LoRA or no LTX-2.x
    checkpoint."""
    ident = identify(base_path)
    if ident.kind in (LORA, IC_LORA, LTX23_DISTILLED_LORA):
        raise UserError(f"{base_path.name} is a LoRA, not a base model: pass the checkpoint the LoRA is meant for "
                        "(e.g. ltx-2.3-22b-dev.safetensors) as --base.")
    try:  # identify() has said what the file is; a pickle or a damaged file has no header to read
        header = read_header(base_path) if base_path.is_file() else None
    except NotSafetensors:
        header = None
    if header is None or not any(k.startswith(TRANSFORMER_PREFIX) for k in header.tensors):
        raise UserError(f"{base_path.name} is not an LTX-2.x checkpoint ({ident.summary.rstrip('.')}); pass the "
                        "unified checkpoint, e.g. ltx-2.3-22b-dev.safetensors, as --base.")
    return ident, header


def check(lora_path: str | Path, base_path: str | Path) -> CheckReport:
    lora = lora_file.read_lora(lora_path)
    base_ident, base = require_base(Path(base_path).expanduser())
    lora_ident = identify(lora.path)
    report = CheckReport(str(lora.path), str(base.path), lora.format, lora_ident.family,
                         lora_ident.details.get("family_from", ""), base_ident.family,
                         stray_keys=list(lora.stray_keys))
    key_map = comfyui_key_map(base)
    refused_by_diffusers = any("lora" not in k for k in lora.header.tensors)
    for m in lora.modules.values():
        raw = _raw_name(m)
        target = key_map.get(raw)
        if target is None:
            comfy = IGNORED
        else:
            info = base.tensors[target]
            comfy = APPLIED if tuple(info.shape) == (m.out_features, m.in_features) else MISMATCH
        info = base.tensors.get(lora_file.base_weight_key(m.stem))
        report.modules.append(ModuleCheck(
            raw, m.stem, lora_file.module_group(m.stem), (m.out_features, m.in_features),
            tuple(info.shape) if info else None, comfy, _ltx_core_status(lora, m, raw, base),
            _diffusers_status(lora, m, raw, base, refused_by_diffusers)))
    _findings(report, lora, refused_by_diffusers)
    return report


def _examples(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _findings(report: CheckReport, lora: LoraFile, refused_by_diffusers: bool) -> None:
    total = len(report.modules)
    ignored = [m.key for m in report.modules if m.comfyui == IGNORED and m.group != "text connectors"]
    mismatched = [f"{m.key} {list(m.shape)} vs base {list(m.base_shape or ())}" for m in report.modules
                  if m.comfyui == MISMATCH]
    text_side = [m for m in report.modules if m.group == "text connectors"]
    if ignored:
        what = "the whole LoRA has NO effect" if len(ignored) == total else "that part of the LoRA has no effect"
        fix = (" Convert it: `ltx-lora lora convert FILE --to comfyui`." if lora.format in
               (DIFFUSERS, lora_file.PEFT) or any(r.startswith(("transformer.", "base_model.")) for r in ignored)
               else " The base has no such layers: the LoRA was made for another model.")
        report.findings.append(f"{len(ignored)} of {total} modules would be silently ignored by ComfyUI ({what}): "
                               f"{_examples(ignored)}.{fix}")
    if mismatched:
        report.findings.append(f"{len(mismatched)} modules do not fit the base's layer shapes (ComfyUI logs an error "
                               f"and skips them): {_examples(mismatched)}. The LoRA was made for another model size.")
    if text_side:
        comfy_ok = [m.key for m in text_side if m.comfyui == APPLIED]
        report.findings.append(
            f"{len(text_side)} modules adapt the text connectors / Gemma projection, outside the transformer: "
            f"{_examples([m.key for m in text_side])}. ComfyUI applies {len(comfy_ok)} of them, ltx-core's "
            "transformer fusion none; check the result in the tool you use, or drop them.")
    if report.stray_keys:
        report.findings.append(f"{len(report.stray_keys)} tensors are not LoRA pairs any loader understands and are "
                               f"ignored: {_examples(report.stray_keys)}.")
    if report.lora_family == "2.0" and report.base_family in ("2.3", "2.5"):
        report.findings.append(f"The LoRA was made for LTX-2.0/2.1 (from {report.lora_family_from}) and the base is "
                               f"LTX-{report.base_family}. " + OLD_LORA_ADVICE)
    elif report.lora_family and report.base_family and report.lora_family != report.base_family:
        report.findings.append(f"The LoRA was made for LTX-{report.lora_family} (from {report.lora_family_from}) "
                               f"but the base is LTX-{report.base_family}: LoRAs do not carry over between versions; "
                               "use or train one for this base.")
    # Notes: true, but no reason to fail the check.
    lycoris = lora.kinds - Counter({lora_file.LORA: lora.kinds[lora_file.LORA]})
    if lycoris:
        kinds = ", ".join(f"{n} {k}" for k, n in lycoris.items())
        report.notes.append(f"{kinds} modules (LyCORIS): ComfyUI applies them; ltx-core's fusion and diffusers' LTX-2 "
                            "loader read lora_A/lora_B only and ignore them.")
    scales = {m.scale for m in lora.modules.values() if m.kind == lora_file.LORA}
    if scales - {1.0}:
        s = ", ".join(f"{x:g}" for x in sorted(scales))
        report.notes.append(f"Its .alpha tensors ask for strength x{s} (alpha/rank); ComfyUI applies that, ltx-core "
                            "and diffusers apply x1. `ltx-lora lora convert FILE --to comfyui --fold-alpha` bakes it "
                            "into lora_B so every tool agrees.")
    if refused_by_diffusers:
        report.notes.append("diffusers' LTX-2 loader refuses this file (it accepts only keys containing 'lora', so "
                            "no `.alpha` tensors): `ltx-lora lora convert FILE --to diffusers`.")
    elif lora.format != DIFFUSERS and any(m.diffusers == IGNORED for m in report.modules):
        n = sum(m.diffusers == IGNORED for m in report.modules)
        report.notes.append(f"diffusers' LTX-2 loader would not apply {n} modules of it: "
                            "`ltx-lora lora convert FILE --to diffusers` writes its own layout.")
    if lora.format == COMFYUI and report.lora_family is None:
        report.notes.append("Nothing in the file says which LTX version it was trained on (attention-only LoRAs "
                            "look the same for 2.0 and 2.3).")


def report_lines(r: CheckReport) -> list[str]:
    lines = [f"{Path(r.lora).name} on {Path(r.base).name} (LTX-{r.base_family or '?'}); LoRA layout {r.lora_format}, "
             f"made for {('LTX-' + r.lora_family) if r.lora_family else 'an unknown LTX version'}", "",
             f"{'modules applied by':<24} {'ComfyUI':>8} {'ltx-core':>9} {'diffusers':>10}"]
    groups = [g for g in lora_file.GROUPS if any(m.group == g for m in r.modules)]
    for g in groups + ["all"]:
        ms = [m for m in r.modules if g in ("all", m.group)]
        cells = [f"{sum(getattr(m, c) == APPLIED for m in ms)}/{len(ms)}" for c in ("comfyui", "ltx_core", "diffusers")]
        lines.append(f"  {g:<22} {cells[0]:>8} {cells[1]:>9} {cells[2]:>10}")
    lines.append("")
    if r.findings:
        lines += ["Findings"] + [f"- {f}" for f in r.findings]
    else:
        lines.append("Clean: every module reaches a layer of the right shape in ComfyUI.")
    if r.notes:
        lines += ["", "Notes"] + [f"- {n}" for n in r.notes]
    return lines
