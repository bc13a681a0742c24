"""The torchrun environment: rank and world size, the process group, barriers and small collectives.

torchrun (torch.distributed.run) starts one process per GPU and tells each its place through RANK, WORLD_SIZE and
LOCAL_RANK. Without them this is rank 0 of 1 and every collective below returns at once, so callers need no
`if distributed` branches. Small objects travel as JSON in uint8 tensors (never pickle).
"""

from __future__ import annotations

import gc

import json
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ltx_lora.errors import UserError
from ltx_lora.files.lock import folder_lock

# Ranks wait for each other at barriers (rank 0 writing a checkpoint, a slow preprocessing share): allow long waits.
TIMEOUT = timedelta(minutes=60)


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, writes checkpoints and manifests; the others compute and wait."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def share(self, n: int) -> slice:
        """This rank's contiguous part of n items (sizes differ by at most one; a rank may get none)."""
        return slice(n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size)

    # -- collectives (no-ops with one process) ---------------------------------------------------------------
    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.active:
            values = values.clone()
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def all_agree(self, ok: bool) -> bool:
        """True only if `ok` on every rank (e.g. rank 0 wrote its file): everyone then takes the same branch."""
        if not self.active:
            return ok
        flag = torch.tensor([0.0 if ok else 1.0], device=_comm_device())
        dist.all_reduce(flag, op=dist.ReduceOp.SUM)
        return flag.item() == 0

    def gather_json(self, obj) -> list:
        """Every rank's JSON-able `obj`, in rank order, on every rank."""
        if not self.active:
            return [obj]
        device = _comm_device()
        data = torch.tensor(list(json.dumps(obj).encode()), dtype=torch.uint8, device=device)
        sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(self.world_size)]
        dist.all_gather(sizes, torch.tensor([data.numel()], device=device))
        longest = max(int(s.item()) for s in sizes)
        padded = torch.zeros(longest, dtype=torch.uint8, device=device)
        padded[:data.numel()] = data
        out = [torch.zeros(longest, dtype=torch.uint8, device=device) for _ in range(self.world_size)]
        dist.all_gather(out, padded)
        return [json.loads(bytes(t[:int(s.item())].tolist()).decode()) for t, s in zip(out, sizes)]


def _comm_device() -> torch.device:
    # NCCL moves only GPU tensors; gloo only CPU ones.
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def current() -> DistEnv:
    """This process's place, from torchrun's variables (rank 0 of 1 without torchrun)."""
    if not under_torchrun():
        return DistEnv()
    return DistEnv(rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]),
                   local_rank=int(os.environ["LOCAL_RANK"]))


@contextmanager
def process_group():
    """Join torchrun's process group for the duration of a command (NCCL on GPUs, gloo on CPU); with one process
    there is nothing to join. Each process drives the GPU numbered by its LOCAL_RANK."""
    env = current()
    if not env.active or dist.is_initialized():
        yield env
        return
    if torch.cuda.is_available():
        if env.local_rank >= torch.cuda.device_count():
            raise UserError(f"torchrun started {env.local_rank + 1}+ processes on this machine but it has only "
                            f"{torch.cuda.device_count()} GPU(s); set --nproc-per-node (or --gpus) to at most that.")
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=TIMEOUT, device_id=device)
    else:
        dist.init_process_group("gloo", timeout=TIMEOUT)
    try:
        yield env
    finally:
        # What may still hold the group (FSDP2's meshes and sharded parameters in reference cycles) is collected
        # first, so the group is torn down here, not at interpreter exit. Seen once (2 CPU processes under load,
        # 2026-12-05, 1 run of 5): a rank aborted in gloo at exit after a complete run; the likely cause, not proven.
        gc.collect()
        dist.destroy_process_group()


@contextmanager
def locked(env: DistEnv, folder, command: str, what: str, say: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold `folder`'s lock (ltx_lora.files.lock) for the block: rank 0 takes it for every process of the run, and
    every rank stops together when another process holds it (rank 0 says which)."""
    with ExitStack() as stack:
        error: UserError | None = None
        if env.is_main:
            try:
                stack.enter_context(folder_lock(folder, command, what, say))
            except UserError as e:
                error = e
        if not env.all_agree(error is None):
            raise error or UserError(f"{folder} is in use by another process.")
        yield


def rank_console(console):
    """`console` on rank 0; a silent one elsewhere, so N processes print one log."""
    if current().is_main:
        return console
    from rich.console import Console

    return Console(stderr=True, quiet=True)
