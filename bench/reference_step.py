"""The official trainer's LoRA step, rebuilt for side-by-side comparison (after ../shared/bench/ref_step.py).

Official path (ltx-trainer 1.2.0): ltx-core LTXModel in bf16, peft `get_peft_model` with LoraConfig(r, alpha=r,
target_modules=[to_k, to_q, to_v, to_out.0]), whole-block gradient checkpointing, ltx-core's default attention
(with the text mask as an additive bias), bf16 autocast, MSE on the velocity, AdamW on the LoRA parameters.

`lora_gradients` runs one forward/backward of either path on identical weights, LoRA values and inputs, so the
bench and tests/test_fast_step.py can check that our fast step computes the same loss and gradients.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ltx_lora.config import LoraConfig  # noqa: E402
from ltx_lora.ltx.fast import attention_mask_or_none, compile_blocks, use_sdpa_attention  # noqa: E402
from ltx_lora.ltx.quantize import fp8_granularity, quantize_linears_, set_fp8_matmuls  # noqa: E402
from ltx_lora.task import TaskConfig  # noqa: E402
from ltx_lora.train.graphed import StepGraphs  # noqa: E402
from ltx_lora.train.lora import inject_lora  # noqa: E402
from ltx_lora.train.objective import LatentBatch  # noqa: E402
from ltx_lora.train.step import forward_backward  # noqa: E402
from ltx_lora.train.timesteps import SigmaSampler  # noqa: E402

TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]


def reference_model(model: torch.nn.Module, rank: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(peft wrapper, base) as the official trainer builds them; checkpointing on, training mode."""
    from peft import LoraConfig as PeftLora
    from peft import get_peft_model

    model.requires_grad_(False)
    wrapped = get_peft_model(model, PeftLora(r=rank, lora_alpha=rank, target_modules=TARGETS))
    base = wrapped.get_base_model()
    base.set_gradient_checkpointing(True)
    base.train()
    return wrapped, base


# FP8 options of a variant name after its "fp8": (set_fp8_matmuls argument, value); longest spelling first.
FP8_OPTIONS = {"_tensor": ("granularity", "tensor"), "_exact_fwd": ("fast_accum", False),
               "_exact": ("fast_accum", False), "_bf16_bwd": ("fp8_input_grad", False),
               "_bf16bwd": ("fp8_input_grad", False)}


def fp8_setup(variant: str, device: torch.device) -> dict | None:
    """How `variant` (e.g. ours_fp8_exact, ours_fp8_bf16_bwd_graphed) runs the frozen base: None, bf16; else the FP8
    base with the set_fp8_matmuls arguments {granularity, fast_accum, fp8_input_grad}, granularity None for
    `..._fp8w` (FP8 weights dequantised per matmul). "fp8" takes any of: _tensor (per-tensor activation scales on
    the GPU too), _exact / _exact_fwd (forward without fast accumulation), _bf16bwd / _bf16_bwd (input gradient in
    bf16 from the dequantised weight); the defaults are what memory.fp8_matmuls runs on `device`."""
    name = re.sub(r"_graphed$", "", variant)
    if "_fp8" not in name:
        return None
    rest = name.split("_fp8", 1)[1]
    setup = {"granularity": fp8_granularity(device), "fast_accum": True, "fp8_input_grad": True}
    if rest == "w":
        return {**setup, "granularity": None}
    while rest:
        option = next((o for o in FP8_OPTIONS if rest.startswith(o)), None)
        if option is None:
            raise ValueError(f"{variant!r}: after fp8, expected any of {', '.join(FP8_OPTIONS)}, not {rest!r}")
        key, value = FP8_OPTIONS[option]
        setup[key] = value
        rest = rest[len(option):]
    return setup


def our_model(model: torch.nn.Module, rank: int, compiled: bool | str, seed: int = 0,
              fp8: dict | None = None) -> list[torch.nn.Parameter]:
    """Our fast path on the same model: LoRA in place, flash-capable attention, optionally compiled blocks.
    `fp8` (see fp8_setup): the base's 28 linears per block quantized to FP8 (per tensor, in place, layer by layer)
    and, granularity not None, computing in FP8 with those set_fp8_matmuls arguments (memory.fp8_matmuls)."""
    if fp8 is not None:
        device = next(model.parameters()).device
        quantize_linears_(model, "fp8", device=device)
        if fp8["granularity"] is not None:
            set_fp8_matmuls(model, **fp8)
    params = inject_lora(model, LoraConfig(rank=rank), seed=seed)
    use_sdpa_attention(model)
    if compiled:
        compile_blocks(model, backend=compiled if isinstance(compiled, str) else "inductor")
    model.set_gradient_checkpointing(True)
    model.train()
    return params


def set_lora_values_(model: torch.nn.Module, seed: int = 0) -> None:
    """Deterministic non-zero LoRA A and B by module name (so gradients of A are not all zero)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_" not in name:
                continue
            key = name.removeprefix("base_model.model.")
            g = torch.Generator().manual_seed(seed + sum(map(ord, key)))
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def lora_gradients(variant: str, model: torch.nn.Module, batch: LatentBatch, rank: int, *, seed: int = 0,
                   compiled: bool | str = False) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and {module-path param name: gradient on CPU, fp32} of one step of `variant` ('ref', 'ours' or
    'ours_graphed': the step captured as a CUDA graph and replayed, GPU only; 'ours_fp8' / 'ours_fp8_graphed':
    the same with FP8 matmuls for the frozen base, as `ltx-lora train` sets them up on this device; 'ours_fp8w',
    'ours_fp8_exact', ... with or without _graphed: the FP8 variants of fp8_setup)."""
    gen = torch.Generator(batch.video.device).manual_seed(seed)
    if variant == "ref":
        wrapped, _ = reference_model(model, rank)
        set_lora_values_(wrapped)
        loss = forward_backward(wrapped, batch, SigmaSampler(), gen, task=TaskConfig(),
                                dtype=torch.bfloat16)
    else:
        params = our_model(model, rank, compiled, fp8=fp8_setup(variant, batch.video.device))
        set_lora_values_(model)
        batch = LatentBatch(**{**batch.__dict__, "context_mask": attention_mask_or_none(batch.context_mask)})
        graphs = StepGraphs(model, params, torch.bfloat16) if variant.endswith("_graphed") else None
        loss = forward_backward(model, batch, SigmaSampler(), gen, task=TaskConfig(),
                                dtype=torch.bfloat16, graphs=graphs)
        if graphs is not None:  # the first call ran eager and captured; the same step again, replayed
            assert not graphs.failed, graphs.failed
            for p in params:
                p.grad = None
            gen = torch.Generator(batch.video.device).manual_seed(seed)
            loss = forward_backward(model, batch, SigmaSampler(), gen, task=TaskConfig(),
                                    dtype=torch.bfloat16, graphs=graphs)
            assert graphs.replays == 1
    grads = {n.removeprefix("base_model.model."): p.grad.float().cpu()
             for n, p in model.named_parameters() if ".lora_" in n and p.grad is not None}
    return float(loss.total.detach()), grads


def relative_error(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """|a - b| / |b| over all gradients together (the same names must be present in both)."""
    assert a.keys() == b.keys(), sorted(a.keys() ^ b.keys())[:3]
    num = sum(float((a[k] - b[k]).pow(2).sum()) for k in a)
    den = sum(float(b[k].pow(2).sum()) for k in b)
    return (num / max(den, 1e-30)) ** 0.5
