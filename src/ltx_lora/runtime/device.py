"""The one device and the one compute dtype every command uses."""

from __future__ import annotations

import torch


def pick_device() -> torch.device:
    """The current CUDA device under torchrun / CUDA_VISIBLE_DEVICES, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def compute_dtype(mixed_precision: str) -> torch.dtype:
    """train.mixed_precision as a dtype: training and every validation sample of a run use the same one."""
    return torch.bfloat16 if mixed_precision == "bf16" else torch.float32
