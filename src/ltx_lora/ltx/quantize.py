"""Weight-only quantized linears for the frozen base: FP8 (e4m3, per-tensor scale) and INT8 (per-output-channel
scale). The weights stay 1 byte each in memory and are dequantised to the compute dtype per matmul; the LoRA
(peft, fp32) sits on top unchanged.

- FP8 is the released Dev FP8 format: `weight` float8_e4m3fn and a float32 scalar `weight_scale`, real weight =
  `weight * weight_scale` (the file's `input_scale` is for FP8 activation kernels and unused here).
- INT8 is symmetric per output row: `scale = max|row| / 127`, weight = `int8 * scale`.

The 1-byte weights are stored as raw bytes (uint8 / int8 tensors): peft casts its LoRA layers to the base weight's
dtype when that dtype is floating point, which would round the LoRA init to FP8. A custom autograd function keeps
only the 1-byte weight for backward (autograd would otherwise hold a bf16 copy of every dequantised weight).

FP8 matmuls (`memory.fp8_matmuls`, `set_fp8_matmuls`): an FP8 QuantizedLinear can instead compute with FP8
operands on the tensor cores (`torch._scaled_mm`: 1,441 vs 758 TFLOP/s for bf16 on an H100,
../shared/notes/performance-anchor.md). Forward: y = (x8 * sx) @ (W8 * sw)^T with the activations quantized to
e4m3 per call (scale from their amax, computed on the device: no host sync, so it runs inside compiled blocks and
CUDA graphs). Backward, input gradient only (the base is frozen): dx = (g8 * sg) @ (W8 * sw), the output gradient
in e4m3 with its own amax scale. `_scaled_mm` wants its second operand column-major, which W8 [out, in] is for the
forward (W8^T) but not for the backward (W8 itself): each backward call transposes its 1-byte weight (a read and
a write of the layer's bytes: ~37 GB of traffic a step for the 22B base, ~10 ms on an H200, estimated) instead of
keeping a transposed copy of the whole base (+1 byte per weight, 18.5 GB for the 22B model) or dequantizing to
bf16 (6 bytes per weight of traffic and a bf16 matmul at half the FP8 rate). Scales are per tensor on the CPU (all
torch's CPU kernel supports) and per token row on the GPU (`granularity="row"`; the weight's per-tensor scale
broadcast over its columns), one code path either way. e4m3 for the gradient too: the per-row amax scale covers
its range, and e4m3 keeps one mantissa bit more than e5m2.

Two knobs of `set_fp8_matmuls` for numerics (defaults as above; bench/train_step.py --check measures each against
the bf16 reference: the FP8 step's LoRA gradients are 10.6% from it on the 22B model, H200, bench/README.md):
`fast_accum` (forward only; Hopper's fast accumulation skips the periodic promotion of the tensor cores' partial
sums to full fp32, a suspected error source) and `fp8_input_grad` (False: the input gradient in the gradient's
dtype, bf16 in training, from the dequantised 1-byte weight, as memory.quantization alone computes it: the
gradient is then not rounded to e4m3, at the cost of a bf16 matmul and the dequantisation traffic).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Format = Literal["fp8", "int8"]
Granularity = Literal["tensor", "row"]  # scales of the activations / gradients in an FP8 matmul
FP8_MAX = 448.0  # largest float8_e4m3fn value
FP8_MIN_CAPABILITY = (8, 9)  # FP8 tensor cores: Ada (8.9), Hopper (9.0), Blackwell

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


def fp8_matmul_support(device: torch.device) -> str:
    """Why FP8 matmuls cannot run on `device` ('' if they can). The CPU runs them (torch's per-tensor CPU kernel:
    slow, for tests and tiny runs)."""
    if device.type == "cpu":
        return ""
    if device.type != "cuda":
        return f"FP8 matmuls run on CUDA GPUs only, not on {device.type}"
    cc = torch.cuda.get_device_capability(device)
    if cc < FP8_MIN_CAPABILITY:
        return (f"{torch.cuda.get_device_name(device)} has compute capability {cc[0]}.{cc[1]}; FP8 matmuls need 8.9 "
                "or newer (Ada, Hopper, Blackwell)")
    return ""


def fp8_granularity(device: torch.device) -> Granularity:
    """The activation scales FP8 matmuls use on `device`: per token row on a GPU (each token's own range, a
    rowwise kernel), per tensor on the CPU (the only scaling torch's CPU kernel supports)."""
    return "row" if device.type == "cuda" else "tensor"


def _to_fp8(t: torch.Tensor, granularity: Granularity) -> tuple[torch.Tensor, torch.Tensor]:
    """(e4m3 values, float32 scale) of a 2-D tensor, real = values * scale: one scale per tensor ([] ) or per row
    ([rows, 1]), from the amax on the device."""
    a = t.abs()
    amax = a.amax(dim=1, keepdim=True) if granularity == "row" else a.amax()
    scale = amax.float().clamp(min=1e-12) / FP8_MAX
    q = (t.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q, scale


def _fp8_mm(a8: torch.Tensor, a_scale: torch.Tensor, b8: torch.Tensor, b_scale: torch.Tensor,
            granularity: Granularity, out_dtype: torch.dtype, fast_accum: bool) -> torch.Tensor:
    """(a8 * a_scale) @ (b8 * b_scale) for a8 [M, K] row-major and b8 [K, N] column-major, b_scale per tensor."""
    if granularity == "row":  # rowwise kernels: a scale per row of a, per column of b; bf16 out only
        b_scale = b_scale.reshape(1, 1).expand(1, b8.shape[1]).contiguous()
        out = torch._scaled_mm(a8, b8, scale_a=a_scale, scale_b=b_scale, out_dtype=torch.bfloat16,
                               use_fast_accum=fast_accum)
        return out.to(out_dtype)
    return torch._scaled_mm(a8, b8, scale_a=a_scale, scale_b=b_scale, out_dtype=out_dtype, use_fast_accum=fast_accum)


class _Fp8Linear(torch.autograd.Function):
    """y = x @ W^T + b with FP8 operands for a frozen FP8 W (raw e4m3 bytes, per-tensor scale); the gradient of x
    only, also as an FP8 matmul (or, `fp8_input_grad` False, g @ dequant(W) in g's dtype). Saves nothing but the
    1-byte weight (see the module docstring)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, raw: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
                granularity: Granularity, fast_accum: bool = True, fp8_input_grad: bool = True):
        ctx.save_for_backward(raw, scale)
        ctx.granularity, ctx.fp8_input_grad = granularity, fp8_input_grad
        x2 = x.reshape(-1, x.shape[-1])
        x8, x_scale = _to_fp8(x2, granularity)
        # W8 [out, in] row-major is W8^T [in, out] column-major: the layout _scaled_mm wants, no copy.
        # Fast accumulation (the default) in forward only, as torchao's float8 training does; backward never uses it.
        y = _fp8_mm(x8, x_scale, raw.view(torch.float8_e4m3fn).t(), scale, granularity, x.dtype, fast_accum)
        if bias is not None:
            y = y + bias.to(y.dtype)
        return y.reshape(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None, None
        raw, scale = ctx.saved_tensors
        g2 = grad_out.reshape(-1, grad_out.shape[-1])
        if ctx.fp8_input_grad:
            g8, g_scale = _to_fp8(g2, ctx.granularity)
            # dx = g @ W: W8 [out, in] must be column-major, so this call transposes the layer's bytes once.
            w_col = raw.t().contiguous().t().view(torch.float8_e4m3fn)
            dx = _fp8_mm(g8, g_scale, w_col, scale, ctx.granularity, grad_out.dtype, fast_accum=False)
        else:  # the gradient unrounded: a matmul in its own dtype against the dequantised weight
            dx = g2 @ dequantize(raw, scale, grad_out.dtype)
        return dx.reshape(*grad_out.shape[:-1], dx.shape[-1]), None, None, None, None, None, None


class QuantizedLinear(nn.Linear):
    """A frozen nn.Linear whose weight is FP8 or INT8 (see the module docstring). An nn.Linear subclass, so peft
    wraps it like any linear and the module paths (and LoRA key names) stay those of ltx-core.

    `fp8_matmul` (FP8 only; set by `set_fp8_matmuls`, with `fp8_fast_accum` and `fp8_input_grad`): None
    dequantises per matmul (memory only), "tensor" / "row" computes with FP8 operands at that granularity of
    activation scales."""

    fp8_matmul: Granularity | None = None
    fp8_fast_accum: bool = True
    fp8_input_grad: bool = True

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
            if self.fp8_matmul is not None:
                return _Fp8Linear.apply(x, self.weight, self.weight_scale, self.bias, self.fp8_matmul,
                                        self.fp8_fast_accum, self.fp8_input_grad)
            return _DequantLinear.apply(x, self.weight, self.weight_scale, self.bias)

    def extra_repr(self) -> str:
        matmul = f", fp8_matmul={self.fp8_matmul}" if self.fp8_matmul else ""
        if self.fp8_matmul and not self.fp8_fast_accum:
            matmul += ", fp8_fast_accum=False"
        if self.fp8_matmul and not self.fp8_input_grad:
            matmul += ", fp8_input_grad=False"
        return f"in_features={self.in_features}, out_features={self.out_features}, fmt={self.fmt}{matmul}"


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


def set_fp8_matmuls(model: nn.Module, granularity: Granularity | None, *, fast_accum: bool = True,
                    fp8_input_grad: bool = True) -> int:
    """Make every FP8 QuantizedLinear of `model` compute with FP8 operands at `granularity` (None: dequantise per
    matmul again). Returns how many layers were set. Layers whose widths are not multiples of 16 (cuBLAS' and
    CUTLASS' FP8 alignment; every linear of LTX-2.3 is) keep dequantising. `fast_accum`: the forward matmul with
    Hopper's fast accumulation; `fp8_input_grad`: the input gradient as an FP8 matmul, else in the gradient's dtype
    from the dequantised weight (see the module docstring)."""
    n = 0
    for module in model.modules():
        if isinstance(module, QuantizedLinear) and module.fmt == "fp8":
            fits = module.in_features % 16 == 0 and module.out_features % 16 == 0
            module.fp8_matmul = granularity if fits else None
            module.fp8_fast_accum, module.fp8_input_grad = fast_accum, fp8_input_grad
            n += granularity is not None and fits
    return n


def replace_with_empty_fp8_(model: nn.Module, names: set[str]) -> None:
    """On a meta model: turn the linears named (module paths) into empty FP8 QuantizedLinears, so a state dict with
    the file's FP8 bytes and scales loads into them as they are."""
    for name in names:
        linear = model.get_submodule(name)
        _set_module(model, name, QuantizedLinear(linear.in_features, linear.out_features, "fp8",
                                                 bias=linear.bias is not None, device="meta"))
