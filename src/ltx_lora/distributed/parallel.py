"""DDP or FSDP2 around the LTX transformer, and the LoRA / optimizer state in a world-size independent form.

- `ddp`: every GPU holds the whole frozen base (bf16, 44 GB for 22B) and the LoRA; LoRA gradients are averaged
  after backward. Fastest when the model fits.
- `fsdp`: FSDP2 `fully_shard` on every transformer block, then on the root. Each GPU keeps 1/N of every weight,
  frozen base included, and gathers one block at a time. The mixed-precision policy computes in bf16 and keeps
  the frozen base in its own dtype: it is never upcast (the official trainer's fp32 upcast costs 88 GB for 22B).
  LoRA weights stay fp32 shards; their gradients are reduced in fp32.

Checkpoints hold the full LoRA tensors and the full optimizer state, exactly as one process writes them: every
rank takes part in gathering them, rank 0 writes, and on resume each rank keeps its own shard of what it reads.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from ltx_lora.distributed.env import DistEnv
from ltx_lora.errors import UserError

STRATEGIES = ("ddp", "fsdp")


def wrap(transformer: nn.Module, strategy: str, env: DistEnv, compute_dtype: torch.dtype,
         some_lora_may_idle: bool = True) -> nn.Module:
    """The module to call for the forward pass. One process: the transformer itself. The inner module keeps its
    parameter names under both strategies (LoRA export and checkpoints use them). `some_lora_may_idle`: a step
    can leave LoRA layers without a gradient (the audio branch in a batch without audio); DDP must then look for
    them after every forward."""
    if not env.active:
        return transformer
    if strategy == "ddp":
        return _ddp(transformer, env, some_lora_may_idle)
    if strategy == "fsdp":
        return _fsdp(transformer, compute_dtype)
    raise UserError(f"distributed.strategy {strategy!r} is not one of {', '.join(STRATEGIES)}.")


def _ddp(transformer: nn.Module, env: DistEnv, find_unused: bool) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    # Every rank loaded the same base from the same file and drew the same LoRA init from the seed: broadcast only
    # the LoRA (init_sync=False skips DDP's broadcast of all 22B weights), which also proves the ranks agree.
    for p in transformer.parameters():
        if p.requires_grad:
            torch.distributed.broadcast(p.data, src=0)
    cuda = next(transformer.parameters()).is_cuda
    return DistributedDataParallel(transformer, device_ids=[env.local_rank] if cuda else None,
                                   broadcast_buffers=False, find_unused_parameters=find_unused, init_sync=False)


def _fsdp(transformer: nn.Module, compute_dtype: torch.dtype) -> nn.Module:
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    dtypes = {p.dtype for p in transformer.parameters()}
    # FSDP2 gathers a block's weights as one buffer of one dtype: with a bf16 base and fp32 LoRA, compute in bf16.
    # The frozen base is already bf16 (no copy is made); only the small LoRA shards are cast when gathered.
    param_dtype = compute_dtype if len(dtypes) > 1 else None
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    for block in transformer.transformer_blocks:
        fully_shard(block, mp_policy=policy)
    fully_shard(transformer, mp_policy=policy)  # the rest: patchify, AdaLN, output projections, ...
    return transformer


def gradient_sync(model: nn.Module, enabled: bool):
    """Reduce gradients only on the last micro-batch of an accumulated step (no-op with one process)."""
    if enabled:
        return nullcontext()
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(model, DistributedDataParallel):
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(False)
        return _ResyncOnExit(model)
    return nullcontext()


class _ResyncOnExit:
    def __init__(self, model):
        self.model = model

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.model.set_requires_gradient_sync(True)


# -- full state: world-size independent --------------------------------------------------------------------------
def _is_dtensor(t) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor on every rank (a collective for an FSDP2 shard: every rank must call it)."""
    return t.full_tensor().detach() if _is_dtensor(t) else t.detach()


def full_lora(params: dict[str, nn.Parameter]) -> dict[str, torch.Tensor]:
    return {name: full_tensor(p) for name, p in params.items()}


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """What this rank holds of `t`: its shard (FSDP2) or the whole tensor."""
    return t.to_local() if _is_dtensor(t) else t


def full_like(local: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """The whole tensor of which `local` is this rank's part, laid out as `param` is (a collective under FSDP2:
    every rank must call it); `local` itself when `param` is not sharded."""
    if not _is_dtensor(param):
        return local.detach()
    from torch.distributed.tensor import DTensor

    part = local.to(param.device)
    return DTensor.from_local(part, param.device_mesh, param.placements, shape=param.shape,
                              stride=param.stride()).full_tensor().detach()


def local_part(full: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """This rank's part of a whole tensor, laid out as `param` is (no communication)."""
    value = _shard_like(full, param)
    return value.to_local() if _is_dtensor(value) else value


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """`optimizer.state_dict()` with every sharded tensor gathered: the layout one process saves."""
    sd = optimizer.state_dict()
    state = {idx: {k: full_tensor(v) if isinstance(v, torch.Tensor) else v for k, v in st.items()}
             for idx, st in sd["state"].items()}
    return {"state": state, "param_groups": sd["param_groups"]}


def _shard_like(full: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    if not _is_dtensor(param):
        return full
    from torch.distributed.tensor import distribute_tensor

    # Every rank holds the full tensor (read from the checkpoint): each keeps its own slice, no communication.
    return distribute_tensor(full.to(param.device), param.device_mesh, param.placements, src_data_rank=None)


@torch.no_grad()
def load_full_lora_(params: dict[str, nn.Parameter], full: dict[str, torch.Tensor]) -> None:
    for name, p in params.items():
        value = _shard_like(full[name].to(p.dtype), p)
        (p.to_local() if _is_dtensor(p) else p).copy_(value.to_local() if _is_dtensor(value) else value)


def load_full_optimizer_state(optimizer: torch.optim.Optimizer, sd: dict) -> None:
    """Load a full optimizer state (as saved by one process or gathered) into a possibly sharded optimizer. The
    state's indices count the parameters group after group (LoRA+ puts lora_B in a group of its own)."""
    in_order = [p for group in optimizer.param_groups for p in group["params"]]
    state = {}
    for idx, st in sd["state"].items():
        p = in_order[int(idx)]
        state[idx] = {k: _shard_like(v, p) if isinstance(v, torch.Tensor) and v.shape == p.shape else v
                      for k, v in st.items()}
    optimizer.load_state_dict({"state": state, "param_groups": sd["param_groups"]})
