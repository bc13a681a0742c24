"""Optimizers and learning-rate schedules for the LoRA parameters."""

from __future__ import annotations

import math

import torch

from ltx_lora.config import Optimizer, Scheduler, TrainConfig
from ltx_lora.errors import UserError


def param_groups(named: dict[str, torch.nn.Parameter], cfg: TrainConfig) -> list[dict]:
    """The optimizer's parameter groups, each with the multiple of the scheduled learning rate it trains at
    (`lr_scale`, kept in the training checkpoint with the optimizer state). LoRA+ (train.loraplus_lr_ratio; Hayou et
    al. 2024, kohya's sd-scripts and musubi-tuner): lora_B at the ratio, everything else at 1. Without it one group,
    in `named`'s order, as before."""
    if cfg.loraplus_lr_ratio == 1.0:
        return [{"params": list(named.values()), "lr_scale": 1.0}]
    up = [p for n, p in named.items() if ".lora_B." in n]
    rest = [p for n, p in named.items() if ".lora_B." not in n]
    return [{"params": rest, "lr_scale": 1.0}, {"params": up, "lr_scale": cfg.loraplus_lr_ratio}]


def build_optimizer(named: dict[str, torch.nn.Parameter] | list[torch.nn.Parameter],
                    cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer of `named` (the LoRA parameters by name; a plain list where LoRA+ is off: the benches)."""
    if not isinstance(named, dict):
        if cfg.loraplus_lr_ratio != 1.0:
            raise ValueError("LoRA+ tells lora_B from lora_A by name: pass the parameters by name")
        named = {str(i): p for i, p in enumerate(named)}
    params = param_groups(named, cfg)
    if cfg.optimizer == Optimizer.adamw:
        fused = all(p.is_cuda for p in named.values())  # fused AdamW: one kernel for all LoRA tensors on the GPU
        return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=fused or None)
    if cfg.optimizer == Optimizer.adamw8bit:
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise UserError("train.optimizer adamw8bit needs bitsandbytes, which is not installed: pip install "
                            "'ltx-lora[lowvram]' (or pip install bitsandbytes), or set train.optimizer: adamw."
                            ) from None
        # Tensors under bitsandbytes' min_8bit_size (4096 elements) keep 32-bit state; LoRA matrices of the 22B
        # model (rank x 4096 and up) all get 8-bit state.
        return bnb.optim.AdamW8bit(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    if cfg.optimizer == Optimizer.prodigy:
        try:
            from prodigyopt import Prodigy
        except ImportError:
            raise UserError("train.optimizer prodigy needs the prodigyopt package: pip install prodigyopt.") from None
        return Prodigy(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, safeguard_warmup=True,
                       use_bias_correction=True)
    if cfg.optimizer == Optimizer.adafactor:
        from transformers.optimization import Adafactor  # imported on use: transformers takes seconds to import

        # The learning rate is the schedule's (set_lr), not Adafactor's own relative step; no first moment (its
        # default, the memory saving); factored second moments for every LoRA matrix.
        return Adafactor(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, scale_parameter=False,
                         relative_step=False, warmup_init=False)
    raise UserError(f"unknown optimizer {cfg.optimizer}.")


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the peak learning rate for optimizer step `step` (0-based): warm-up, then the schedule.

    Warm-up: step s runs at (s + 1) / warmup_steps, so the first step is not wasted at 0 and step warmup_steps
    (1-based) is the first at the peak. After it, linear and cosine go from the peak (progress 0) to the floor
    `min_lr_ratio` at progress 1 = the end of the last step (as transformers' and diffusers' schedulers do: the
    last step runs just above the floor). A pure function of the step: resuming needs no scheduler state."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.scheduler == Scheduler.constant:
        return 1.0
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    decay = 1.0 - progress if cfg.scheduler == Scheduler.linear else 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * decay


def set_lr(optimizer: torch.optim.Optimizer, step: int, cfg: TrainConfig) -> float:
    """The schedule is a pure function of the step, so resuming needs no scheduler state. Returns the base rate
    (LoRA+'s lora_B group runs at its multiple)."""
    lr = cfg.learning_rate * lr_factor(step, cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    return lr
