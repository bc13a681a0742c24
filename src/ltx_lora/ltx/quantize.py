"""Weight-only quantized linears for the frozen base: FP8 (e4m3, per-tensor scale) and INT8 (per-output-channel
scale). The weights stay 1 byte each in memory and are dequantised to the compute dtype per matmul; the LoRA
(peft, fp32) sits on top unchanged.

- FP8 is the released Dev FP8 format: `weight` float8_e4m3fn and a float32 scalar `weight_scale`, real weight =
  `weight * weight_scale` (the file's `input_scale` is for FP8 activation kernels and unused here).
- INT8 is symmetric per output row: `scale = max|row| / 127`, weight = `int8 * scale`.

The 1-byte weights are stored as raw bytes (uint8 / int8 tensors): peft casts its LoRA layers to the base weight's
dtype when that dtype is floating point, which would round the LoRA init to FP8. A custom autograd function keeps
only the 1-byte weight for backward (autograd would otherwise hold a bf16 copy of every dequantised weight).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Format = Literal["fp8", "int8"]
FP8_MAX = 448.0  # largest float8_e4m3fn value

# The linears quantized in every transformer block: q/k/v/out of the six attentions and both feed-forward layers
# (28 per block, the set the official FP8 file stores as FP8). Gates, norms, biases and AdaLN tables stay bf16.
QUANTIZED_SUFFIXES = tuple(
    f"{attn}.{proj}" for attn in ("attn1", "attn2", "audio_attn1", "audio_attn2", "audio_to_video_attn",
                                  "video_to_audio_attn") for proj in ("to_q", "to_k", "to_v", "to_out.0")
) + ("ff.net.0.proj", "ff.net.2", "audio_ff.net.0.proj", "audio_ff.net.2")


def is_quantizable(name: str) -> bool:
    """`transformer_blocks.<i>.<one of QUANTIZED_SUFFIXES>` (ltx-core module path)."""
    parts = name.split(".", 2)
    return len(parts) == 3 and parts[0] == "transformer_blocks" and parts[1].isdigit() and parts[2] in QUANTIZED_SUFFIXES


def quantize_weight(w: torch.Tensor, fmt: Format) -> tuple[torch.Tensor, torch.Tensor]:
    """(raw 1-byte weight, float32 scale) of a [out, in] weight."""
    w32 = w.detach().to(torch.float32)
    if fmt == "fp8":
        scale = w32.abs().amax().clamp(min=1e-12) / FP8_MAX
        q = (w32 / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).view(torch.uint8)
        return q, scale.reshape(())
    scale = w32.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(w32 / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def dequantize(raw: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if raw.dtype == torch.uint8:  # FP8 bits; a per-tensor scale (the release), or one per output row
        s = scale if scale.ndim == 0 else scale.reshape(-1, 1)
        return (raw.view(torch.float8_e4m3fn).to(torch.float32) * s).to(dtype)
    return (raw.to(torch.float32) * scale[:, None]).to(dtype)


class _DequantLinear(torch.autograd.Function):
    """y = x @ dequant(W).T + b for a frozen W: saves only the 1-byte W, gives a gradient for x only."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, raw: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
        ctx.save_for_backward(raw, scale)
        w = dequantize(raw, scale, x.dtype)
        return F.linear(x, w, None if bias is None else bias.to(x.dtype))

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        raw, scale = ctx.saved_tensors
        grad_x = grad_out @ dequantize(raw, scale, grad_out.dtype) if ctx.needs_input_grad[0] else None
        return grad_x, None, None, None


class QuantizedLinear(nn.Linear):
    """A frozen nn.Linear whose weight is FP8 or INT8 (see the module docstring). An nn.Linear subclass, so peft
    wraps it like any linear and the module paths (and LoRA key names) stay those of ltx-core."""

    def __init__(self, in_features: int, out_features: int, fmt: Format, bias: bool = True,
                 device: torch.device | str | None = None, bias_dtype: torch.dtype = torch.bfloat16):
        nn.Module.__init__(self)  # no float weight is ever allocated
        self.in_features, self.out_features, self.fmt = in_features, out_features, fmt
        raw_dtype = torch.uint8 if fmt == "fp8" else torch.int8
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=raw_dtype, device=device),
                                   requires_grad=False)
        scale_shape = () if fmt == "fp8" else (out_features,)
        self.register_buffer("weight_scale", torch.ones(scale_shape, dtype=torch.float32, device=device))
        self.bias = (nn.Parameter(torch.empty(out_features, dtype=bias_dtype, device=device), requires_grad=False)
                     if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, fmt: Format, device: torch.device | str | None = None) -> QuantizedLinear:
        device = torch.device(device) if device is not None else linear.weight.device
        q = cls(linear.in_features, linear.out_features, fmt, bias=linear.bias is not None, device="meta")
        raw, scale = quantize_weight(linear.weight.to(device), fmt)
        q.weight = nn.Parameter(raw, requires_grad=False)
        q.weight_scale = scale
        if linear.bias is not None:
            q.bias = nn.Parameter(linear.bias.detach().to(device), requires_grad=False)
        return q

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize(self.weight, self.weight_scale, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type):  # match what autocast would give an nn.Linear
            x = x.to(torch.get_autocast_dtype(x.device.type))
        with torch.autocast(x.device.type, enabled=False):
            return _DequantLinear.apply(x, self.weight, self.weight_scale, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fmt={self.fmt}"


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


@torch.no_grad()
def quantize_linears_(model: nn.Module, fmt: Format, device: torch.device | str | None = None,
                      prefix: str = "") -> int:
    """Replace every quantizable block linear (see QUANTIZED_SUFFIXES) by a QuantizedLinear on `device`, one at a
    time (the float weight of one layer at most is on `device` at once). `prefix` is the path of `model` inside the
    transformer (e.g. "transformer_blocks.3." for one block). Returns how many layers were replaced."""
    n = 0
    for name, module in list(model.named_modules()):
        if type(module) is nn.Linear and is_quantizable(prefix + name):
            _set_module(model, name, QuantizedLinear.from_linear(module, fmt, device))
            n += 1
    return n


def replace_with_empty_fp8_(model: nn.Module, names: set[str]) -> None:
    """On a meta model: turn the linears named (module paths) into empty FP8 QuantizedLinears, so a state dict with
    the file's FP8 bytes and scales loads into them as they are."""
    for name in names:
        linear = model.get_submodule(name)
        _set_module(model, name, QuantizedLinear(linear.in_features, linear.out_features, "fp8",
                                                 bias=linear.bias is not None, device="meta"))
