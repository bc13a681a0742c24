"""The one device and the one compute dtype every command uses."""

from __future__ import annotations

import re

import torch

from ltx_lora.errors import UserError

_DEVICE = re.compile(r"(cpu|cuda)(?::(\d+))?")


def parse_device(device: str, option: str = "--device") -> torch.device:
    """A `--device` value: auto (the GPU when there is one), cpu, cuda or cuda:N; anything else (tpu, mps, a typo)
    or a GPU this machine does not have is one UserError."""
    if device == "auto":
        return pick_device()
    m = _DEVICE.fullmatch(device.strip().lower())
    if m is None:
        raise UserError(f"{option} {device} is not a device ltx-lora runs on: use auto, cpu, cuda or cuda:N.")
    if m.group(1) == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(f"{option} {device} asks for a GPU, but torch sees no CUDA device here; use {option} cpu.")
    index = int(m.group(2) or torch.cuda.current_device())
    if index >= torch.cuda.device_count():
        raise UserError(f"{option} {device}: this machine has {torch.cuda.device_count()} CUDA device(s), numbered "
                        f"from 0; pick one of them.")
    return torch.device("cuda", index)


def pick_device() -> torch.device:
    """The current CUDA device under torchrun / CUDA_VISIBLE_DEVICES, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def compute_dtype(mixed_precision: str) -> torch.dtype:
    """train.mixed_precision as a dtype: training and every validation sample of a run use the same one."""
    return torch.bfloat16 if mixed_precision == "bf16" else torch.float32
