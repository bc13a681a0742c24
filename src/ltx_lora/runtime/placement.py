"""Block swap: the frozen weights of some transformer blocks live in pinned host memory and are streamed into a
small ring of GPU slots just before each block runs, in forward and in backward.

- One flat pinned host buffer per swapped block holds all its frozen tensors (weights, scales, biases, norms);
  the trainable LoRA tensors inside the block stay on the GPU. A block's frozen tensors are views into either a
  GPU slot (resident) or, when not resident, the host buffer (any use then fails with a device error; on CPU,
  where tests run the same code, they point at a NaN-filled buffer so a use of a non-resident block is seen).
- Copies run host-to-device on a side stream. A forward pre-hook on every swapped block makes it resident, makes
  the compute stream wait for its copy, and starts the copy of the next swapped block in the direction of travel
  (increasing in forward, decreasing in backward) into the other slot, after an event that marks the end of the
  compute-stream work that last used that slot.
- Under CUDA graphs (train/graphed.py) the hooks run once, while the step is captured: the copies, the events
  and the slot addresses the blocks read are recorded with it and replayed as they are. With two slots the
  residency a step ends with is the one it started with (block k of the swapped order always lands in slot k % 2),
  so replays chain; `state` / `restore` / `assume` let the graphs check that and repair it (after eager sampling,
  say) before a replay.
- Backward needs the weights again. With whole-block gradient checkpointing (required here) the autograd engine
  recomputes each block, which calls the block again, so the same pre-hook loads it; the block's backward runs
  right after, before the next block's recompute evicts anything. Without checkpointing autograd would keep
  references to weights of every block, so block swap refuses to run without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ltx_lora.files.lora_file import is_adapter_parameter

_ALIGN = 64  # bytes; every tensor starts aligned in the flat buffers


@dataclass
class _Entry:
    module: nn.Module
    name: str
    is_param: bool
    offset: int
    nbytes: int
    dtype: torch.dtype
    shape: torch.Size


def spread_blocks(n_swapped: int, n_blocks: int) -> list[int]:
    """Which blocks to swap: evenly spread, so each copy has the compute of the blocks in between to hide behind."""
    n_swapped = max(0, min(n_swapped, n_blocks))
    return sorted({(k * n_blocks) // n_swapped for k in range(n_swapped)}) if n_swapped else []


def _frozen_tensors(block: nn.Module) -> list[tuple[nn.Module, str, bool, torch.Tensor]]:
    out = []
    for mod_name, module in block.named_modules():
        if is_adapter_parameter(mod_name):
            continue  # the adapters (LoRA's lora_A / lora_B, LoKr's and LoHa's factors): trainable, stay on the device
        for name, p in module._parameters.items():
            if p is not None:
                if p.requires_grad:
                    raise ValueError(f"block swap found a trainable base tensor ({mod_name}.{name}); freeze the "
                                     "base (inject the LoRA) before attaching it")
                out.append((module, name, True, p))
        for name, b in module._buffers.items():
            if b is not None:
                out.append((module, name, False, b))
    return out


class BlockSwap:
    """Streams `swapped` blocks of `blocks` (an nn.ModuleList) through `slots` device buffers. See module doc."""

    def __init__(self, blocks: nn.ModuleList, swapped: list[int], device: torch.device, slots: int = 2):
        if slots < 2:
            raise ValueError("block swap needs at least 2 slots (one computing, one loading)")
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.order = sorted(swapped)
        self.blocks = blocks
        self.entries: dict[int, list[_Entry]] = {}
        self.host: dict[int, torch.Tensor] = {}
        size = 0
        for i in self.order:
            entries, offset = [], 0
            tensors = _frozen_tensors(blocks[i])
            for module, name, is_param, t in tensors:
                entries.append(_Entry(module, name, is_param, offset, t.nbytes, t.dtype, t.shape))
                offset += -(-t.nbytes // _ALIGN) * _ALIGN
            host = torch.empty(offset, dtype=torch.uint8, pin_memory=self.cuda)
            for e, (_, _, _, t) in zip(entries, tensors):
                self._view(host, e).copy_(t.detach().cpu())
            self.entries[i], self.host[i] = entries, host
            size = max(size, offset)
            for p in blocks[i].parameters():  # the trainable LoRA parts of this block live on the device
                if p.requires_grad:
                    p.data = p.data.to(self.device)
        self.slots = [torch.empty(size, dtype=torch.uint8, device=self.device) for _ in range(min(slots, len(self.order)))]
        self.poison = None if self.cuda else torch.full((size,), 0xFF, dtype=torch.uint8)  # NaN in every float dtype
        self.occupant: list[int | None] = [None] * len(self.slots)
        self.slot_of: dict[int, int] = {}
        self.ready: dict[int, torch.cuda.Event] = {}
        self.freed: list[torch.cuda.Event | None] = [None] * len(self.slots)
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        self.loads = 0  # host-to-device block copies issued (tests and benches read it)
        for i in self.order:
            self._point(i, None)
        self.handles = [blocks[i].register_forward_pre_hook(self._make_hook(i)) for i in self.order]

    # -- views ---------------------------------------------------------------------------------------------------
    @staticmethod
    def _view(flat: torch.Tensor, e: _Entry) -> torch.Tensor:
        return flat[e.offset:e.offset + e.nbytes].view(e.dtype).view(e.shape)

    def _point(self, i: int, slot: int | None) -> None:
        """Point block i's frozen tensors at a slot, or (not resident) at its host copy / the poison buffer."""
        flat = self.slots[slot] if slot is not None else (self.host[i] if self.cuda else self.poison)
        for e in self.entries[i]:
            view = self._view(flat, e)
            if e.is_param:
                e.module._parameters[e.name].data = view
            else:
                e.module._buffers[e.name] = view

    # -- residency -----------------------------------------------------------------------------------------------
    def _load(self, i: int, slot: int) -> None:
        old = self.occupant[slot]
        if old is not None:
            self._point(old, None)
            del self.slot_of[old]
        if self.cuda:
            # The slot is free once the compute work queued so far (its last use included) is done.
            self.freed[slot] = torch.cuda.Event()
            self.freed[slot].record(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.stream):
                self.stream.wait_event(self.freed[slot])
                self.slots[slot].copy_(self.host[i], non_blocking=True)
                self.ready[i] = torch.cuda.Event()
                self.ready[i].record(self.stream)
        else:
            self.slots[slot].copy_(self.host[i])
        self.loads += 1
        self.occupant[slot], self.slot_of[i] = i, slot
        self._point(i, slot)

    def _next(self, i: int, backward: bool) -> int | None:
        k = self.order.index(i) + (-1 if backward else 1)
        return self.order[k] if 0 <= k < len(self.order) else None

    def _make_hook(self, i: int):
        # Compiled blocks run their hooks inside the compiled call: keep this one (and what it calls) eager. Applied
        # here, not as a decorator: torch.compiler.disable imports torch._dynamo (~1 s), which every command
        # importing this module (train, validate, doctor) paid at start-up even without block swap.
        @torch.compiler.disable
        def hook(module, args):
            self.before_block(i)
        return hook

    def before_block(self, i: int) -> None:
        backward = torch._C._current_graph_task_id() != -1  # called from the autograd engine: checkpoint recompute
        if i not in self.slot_of:  # not prefetched (first use, or the direction changed): load now
            self._load(i, self._victim(keep=None))
        slot = self.slot_of[i]
        ready = self.ready.get(i)  # none: loaded by a step that has finished (a replay, before a capture)
        if ready is not None:
            torch.cuda.current_stream(self.device).wait_event(ready)
        nxt = self._next(i, backward)
        if nxt is not None and nxt not in self.slot_of:
            self._load(nxt, self._victim(keep=slot))

    def _victim(self, keep: int | None) -> int:
        for s, occ in enumerate(self.occupant):
            if occ is None and s != keep:
                return s
        for s in range(len(self.slots)):
            if s != keep:
                return s
        raise AssertionError("unreachable: at least two slots")

    # -- residency as a whole: what a captured step assumes (train/graphed.py) ------------------------------------
    def state(self) -> tuple[int | None, ...]:
        """The block each slot holds (None: empty)."""
        return tuple(self.occupant)

    def assume(self, state: tuple[int | None, ...]) -> None:
        """Take `state` as the slots' contents without copying: what a replayed graph leaves them holding, or what
        they held before a capture (which records copies without running them). Events of earlier copies are
        dropped: their work is done by then, and a capture may not wait on an event recorded outside it."""
        for i in list(self.slot_of):
            self._point(i, None)
        self.occupant, self.slot_of, self.ready = list(state), {}, {}
        for s, i in enumerate(state):
            if i is not None:
                self.slot_of[i] = s
                self._point(i, s)

    def restore(self, state: tuple[int | None, ...]) -> None:
        """Copy blocks into the slots until they hold `state`, and make the compute stream wait for the copies: a
        replayed graph reads the blocks it found resident at capture without waiting for anything."""
        for s, want in enumerate(state):
            have = self.occupant[s]
            if have is not None and have != want:
                self._point(have, None)
                del self.slot_of[have]
                self.occupant[s] = None
        for s, want in enumerate(state):
            if want is not None and self.occupant[s] != want:
                self._load(want, s)
        if self.cuda:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
        self.ready = {}

    def resident(self) -> list[int]:
        return sorted(self.slot_of)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def device_bytes(self) -> int:
        return sum(s.nbytes for s in self.slots)


def attach_block_swap(transformer: nn.Module, swapped: list[int], device: torch.device,
                      slots: int = 2) -> BlockSwap | None:
    """Block swap on ltx-core's `transformer_blocks`; the blocks in `swapped` must still be on the host."""
    if not swapped:
        return None
    return BlockSwap(transformer.transformer_blocks, swapped, device, slots)


class HostOffload:
    """A frozen module kept in (pinned) host memory and copied to the device only inside `on_device()`, for a module
    that runs once per step without gradients (the text connectors). Leaving the context drops the device copy."""

    def __init__(self, module: nn.Module, device: torch.device):
        self.device = torch.device(device)
        pin = self.device.type == "cuda"
        self.tensors: list[tuple[nn.Module, str, bool, torch.Tensor]] = []
        for sub in module.modules():
            for name, p in sub._parameters.items():
                if p is not None:
                    host = p.detach().cpu()
                    self.tensors.append((sub, name, True, host.pin_memory() if pin else host))
                    sub._parameters[name] = nn.Parameter(self.tensors[-1][3], requires_grad=False)
            for name, b in sub._buffers.items():
                if b is not None:
                    host = b.cpu()
                    self.tensors.append((sub, name, False, host.pin_memory() if pin else host))
                    sub._buffers[name] = self.tensors[-1][3]

    def _point(self, on_device: bool) -> None:
        for sub, name, is_param, host in self.tensors:
            t = host.to(self.device, non_blocking=True) if on_device else host
            if is_param:  # a new frozen Parameter each time: nothing (no optimizer) holds the old one
                sub._parameters[name] = nn.Parameter(t, requires_grad=False)
            else:
                sub._buffers[name] = t

    def on_device(self):
        import contextlib

        @contextlib.contextmanager
        def ctx():
            self._point(True)
            try:
                yield
            finally:
                self._point(False)

        return ctx()
