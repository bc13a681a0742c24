"""The frozen models a training or validation command needs, loaded once as the memory plan places them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ltx_lora.ltx.loader import load_transformer
from ltx_lora.ltx.quantize import fp8_granularity, set_fp8_matmuls
from ltx_lora.ltx.text import load_text_connectors
from ltx_lora.runtime.memory import Plan


@dataclass
class Models:
    transformer: torch.nn.Module
    text_connectors: torch.nn.Module  # frozen; turn cached Gemma features into the two text contexts
    fp8_matmuls: str = ""  # what computes in FP8 (memory.fp8_matmuls), for the log; "" when nothing does


def load_models(base_file: str, device: torch.device, dtype: torch.dtype, plan: Plan | None = None,
                transformer_device: torch.device | None = None) -> Models:
    """The transformer (weights format, FP8 matmuls and host blocks from `plan`) and the text connectors (on the host
    when the plan streams them). `transformer_device`: where the transformer is built, when not `device` (FSDP: the
    host)."""
    transformer = load_transformer(base_file, device=transformer_device or device, dtype=dtype,
                                   quantization=plan.quantization if plan else "none",
                                   host_blocks=frozenset(plan.swapped_blocks) if plan else frozenset())
    fp8 = ""
    if plan is not None and plan.fp8_matmuls:
        granularity = fp8_granularity(device)
        n = set_fp8_matmuls(transformer, granularity)
        fp8 = f"FP8 matmuls: {n} linears of the base compute in FP8 (activation scales per {granularity})"
    on_host = plan is not None and plan.text_connectors_on_host
    connectors = load_text_connectors(base_file, device="cpu" if on_host else device, dtype=dtype)
    connectors.requires_grad_(False).eval()
    return Models(transformer, connectors, fp8)
