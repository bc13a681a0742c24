"""`ltx-lora lora merge`: a unified checkpoint with the LoRA fused into its weights.

The output has the base's key names, dtypes and metadata (`config`, `model_version`), so ltx-core and ComfyUI load
it like the base. It is written tensor by tensor (untouched tensors are copied byte for byte), so memory stays at
one weight at a time even for a 46 GB base, then renamed into place.

Fusion: W' = W + strength * alpha/rank * (lora_B @ lora_A), computed in float32 (alpha/rank = 1 without `.alpha`).
LoKr / LoHa modules fuse their weight change the same way (`lora_file.LycorisWeights.delta`: ComfyUI's formula
and strength rule).
FP8 bases with per-tensor `weight_scale` are dequantised (w8 * scale), fused, and re-quantised with a new scale
(max |W'| / 448, the format of the official FP8 file); `input_scale` is kept. FP8 weights without scale tensors
are refused: re-casting W' to FP8 without a scale would round most of the LoRA away.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from ltx_lora.errors import UserError
from ltx_lora.files import lora_file
from ltx_lora.files.atomic import atomic_path
from ltx_lora.files.model_files import identify
from ltx_lora.files.safetensors_header import open_safetensors
from ltx_lora.lora.check import require_base
from ltx_lora.lora.output import output_path

_FP8_MAX = 448.0
_TORCH_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F8_E4M3": torch.float8_e4m3fn,
                 "F8_E5M2": torch.float8_e5m2}
_FP8 = ("F8_E4M3", "F8_E5M2")


@dataclass
class MergeResult:
    path: Path
    modules: int
    fp8_requantised: int
    strength: float


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _fused(base_file, key: str, info, delta: torch.Tensor) -> dict[str, torch.Tensor]:
    w = base_file.get_tensor(key)
    if info.dtype in _FP8:
        scale_key = key.removesuffix(".weight") + ".weight_scale"
        w_scale = base_file.get_tensor(scale_key).float()
        fused = w.float() * w_scale + delta
        new_scale = (fused.abs().max().clamp(min=1e-12) / _FP8_MAX).reshape(w_scale.shape)
        q = (fused / new_scale).clamp(-_FP8_MAX, _FP8_MAX).to(w.dtype)
        return {key: q, scale_key: new_scale.to(base_file.get_tensor(scale_key).dtype)}
    return {key: (w.float() + delta).to(w.dtype)}


def merge(lora_path: str | Path, base_path: str | Path, out: str | Path, strength: float = 1.0,
          overwrite: bool = False, on_progress=None) -> MergeResult:
    lora = lora_file.read_lora(lora_path)
    bad_alpha = [m.alpha_key for m in lora.modules.values() if m.alpha is not None and not math.isfinite(m.alpha)]
    if bad_alpha:
        raise UserError(f"{lora.path.name} stores a NaN/inf alpha ({bad_alpha[0]}{' and more' if len(bad_alpha) > 1 else ''}): "
                        "the merged weights would all be NaN/inf; nothing written (retrain or re-export the LoRA).")
    base_ident, base = require_base(Path(base_path).expanduser())
    lora_ident = identify(lora.path)
    if lora_ident.family and base_ident.family and lora_ident.family != base_ident.family:
        raise UserError(f"{lora.path.name} was made for LTX-{lora_ident.family} (from "
                        f"{lora_ident.details.get('family_from', 'its file')}) but {base.path.name} is "
                        f"LTX-{base_ident.family}: LoRAs do not carry over between versions, so nothing was written; "
                        "merge it into a base of its own version.")
    out = output_path(out, [base.path, lora.path], overwrite)

    targets: dict[str, lora_file.LoraModule] = {}
    unfit = []
    for m in lora.modules.values():
        key = lora_file.base_weight_key(m.stem)
        info = base.tensors.get(key)
        if info is None or tuple(info.shape) != (m.out_features, m.in_features):
            unfit.append(m.down_key)
        else:
            targets[key] = m
    if unfit:
        raise UserError(f"{len(unfit)} of {len(lora.modules)} LoRA modules have no layer of that name and shape in "
                        f"{base.path.name} (e.g. {unfit[0]}); run `ltx-lora lora check` to see why. Nothing written.")
    fp8 = [k for k in targets if base.tensors[k].dtype in _FP8]
    unscaled = [k for k in fp8 if k.removesuffix(".weight") + ".weight_scale" not in base.tensors]
    if unscaled:
        raise UserError(f"{base.path.name} stores {len(unscaled)} targeted weights as FP8 without weight_scale "
                        f"tensors (e.g. {unscaled[0]}); fusing into them would round most of the LoRA away: merge "
                        "into the bf16 checkpoint instead.")

    pairs = lora_file.load_weights(lora)
    replaced: dict[str, torch.Tensor] = {}
    with open_safetensors(base.path, "--base", "download it again") as f:
        for i, (key, m) in enumerate(targets.items()):
            delta = pairs[m.stem].delta(strength)
            if not bool(torch.isfinite(delta).all()):  # checked before the output file is opened
                raise UserError(f"{lora.path.name} holds NaN/inf values ({m.down_key} / {m.up_key}): the merged "
                                "weights would be NaN/inf; nothing written (retrain or re-export the LoRA).")
            replaced.update(_fused(f, key, base.tensors[key], delta))
            if on_progress:
                on_progress(i + 1, len(targets))

    # Streamed write: header first (shapes and dtypes are the base's), then every tensor in the base's order.
    metadata = dict(base.metadata)
    metadata["ltx_lora_merged"] = json.dumps({"lora": lora.path.name, "strength": strength,
                                              "modules": len(targets), "fp8_requantised": len(fp8)})
    header: dict = {"__metadata__": metadata}
    offset = 0
    for key, info in base.tensors.items():
        n = len(_tensor_bytes(replaced[key])) if key in replaced else info.offsets[1] - info.offsets[0]
        header[key] = {"dtype": info.dtype, "shape": list(info.shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(base.path, "rb") as src_file, atomic_path(out) as tmp, tmp.open("wb") as dst:
        dst.write(struct.pack("<Q", len(raw)))
        dst.write(raw)
        for key in base.tensors:
            if key in replaced:
                dst.write(_tensor_bytes(replaced[key]))
                continue
            begin, end = base.tensors[key].offsets  # checked by read_header: inside the file
            src_file.seek(base.data_start + begin)
            remaining = end - begin
            while remaining:
                chunk = src_file.read(min(remaining, 64 << 20))
                dst.write(chunk)
                remaining -= len(chunk)
    return MergeResult(out, len(targets), len(fp8), strength)
