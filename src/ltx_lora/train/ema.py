"""An exponential moving average (EMA) of the LoRA weights.

After each optimizer step `update` moves every average towards the weights: ema = decay * ema + (1 - decay) * w
(up to `start_step` the average simply follows the weights). The averages are fp32, on the weights' device or in
host memory (`on_host`). They are saved in the training state (`ema.*`), exported beside the LoRA
(`lora_ema.safetensors`) and can be swapped into the LoRA parameters for validation samples (`swapped_in`).

One process and DDP: every rank holds the whole LoRA and keeps the same whole average. FSDP2: each rank holds a
shard of every LoRA parameter and averages only that shard; `full` gathers the whole tensors (a collective: every
rank calls it, as `parallel.full_lora` for the LoRA) and `load_full` keeps each rank's part of saved whole tensors.
tests/test_distributed.py checks both against one process, resume included. In-loop validation (`swapped_in`) is
not offered under FSDP (no GPU holds the whole model); validate `lora_ema.safetensors` with `ltx-lora validate`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ltx_lora.distributed import parallel


class LoraEma:
    def __init__(self, params: dict[str, nn.Parameter], decay: float, *, on_host: bool = False,
                 start_step: int = 0):
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.params = params
        self.decay = float(decay)
        self.on_host = on_host
        self.start_step = start_step
        self.averages: dict[str, torch.Tensor] = {}
        self.reset()

    def _home(self, t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(torch.device("cpu") if self.on_host else t.device, torch.float32, copy=True)

    @torch.no_grad()
    def reset(self) -> None:
        """The averages := the weights as they are now."""
        self.averages = {n: self._home(parallel.local_tensor(p)) for n, p in self.params.items()}

    @torch.no_grad()
    def update(self, step: int) -> None:
        """After optimizer step `step` (1-based): follow the weights up to start_step, average after it."""
        if step <= self.start_step:
            self.reset()
            return
        weight = 1.0 - self.decay
        for n, p in self.params.items():
            avg = self.averages[n]
            avg.lerp_(parallel.local_tensor(p).detach().to(avg.device, torch.float32), weight)

    # -- saving and loading ----------------------------------------------------------------------------------------
    def full(self) -> dict[str, torch.Tensor]:
        """The whole averaged tensors by parameter name (a collective under FSDP: every rank calls it)."""
        return {n: parallel.full_like(self.averages[n], p).float() for n, p in self.params.items()}

    @torch.no_grad()
    def load_full(self, full: dict[str, torch.Tensor]) -> None:
        missing = set(self.params) ^ set(full)
        if missing:
            raise KeyError(f"EMA state does not match the LoRA layers: {min(missing)} ...")
        for n, p in self.params.items():
            part = parallel.local_part(full[n].to(torch.float32), p)
            self.averages[n].copy_(part)

    # -- sampling with the averages --------------------------------------------------------------------------------
    @contextlib.contextmanager
    @torch.no_grad()
    def swapped_in(self) -> Iterator[None]:
        """The LoRA parameters hold the averages inside the block, their own values again (bit for bit) after."""
        raw = {n: parallel.local_tensor(p).detach().clone() for n, p in self.params.items()}
        try:
            for n, p in self.params.items():
                local = parallel.local_tensor(p)
                local.copy_(self.averages[n].to(local.device, local.dtype))
            yield
        finally:
            for n, p in self.params.items():
                parallel.local_tensor(p).copy_(raw[n])
