"""The training step's transformer forward, loss and backward replayed as one CUDA graph per input shape.

Why: compiled, a block's kernels take ~5 ms of GPU time but ~13 ms of host time to launch (dynamo guards,
AOTAutograd wrappers, checkpoint hooks; bench/README.md), so the GPU idles half the step. A CUDA graph replays the
~35k kernels of forward + recompute + backward with no host work in between.

How:
- The part that needs no gradient (ltx-core's argument preparation: patchify projections, timestep embeddings,
  rope tables) runs eagerly each step; its outputs, the loss targets, weights and loss scale are copied into
  static input buffers. The graph holds the blocks (checkpointed as configured), the output projections, the loss
  and backward.
- The first call for an input signature (shapes, dtypes, which inputs are present) runs the step eagerly: it is a
  real step (and compiles the blocks for that shape); then it captures the graph. Later calls copy and replay.
  A later bucket's eager step allocates from the graphs' pool, so it does not need its activations' room twice.
- LoRA gradients live in fixed buffers (`p.grad` is set to them, zeroed when the caller set it to None): the
  captured backward adds into them, as eager backward does, so accumulation and `zero_grad` keep their meaning.
- One memory pool for all graphs: only one runs at a time and each call's outputs are copied out at once.
- No host sync inside: the finite check on the loss is the caller's, after replay.
- Block swap (runtime/placement.py) is captured with the step: its host-to-device copies, the side stream's
  events and the slot addresses are recorded by the hooks while capturing and replay with the kernels. A graph
  keeps which block each slot held when it was captured and which it leaves; before a replay the slots are put back
  if something else (eager sampling) moved them.
- Any failure to capture turns the graphs off for the rest of the run (eager, same results); the reason is kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from ltx_lora.ltx.fast import prepare_transformer_args, trained_outside_blocks, transformer_from_args
from ltx_lora.runtime.placement import BlockSwap
from ltx_lora.train.objective import LossParts, StepInputs, compute_loss


def can_graph(transformer: torch.nn.Module, device: torch.device, *, distributed: bool, dropout: float = 0.0,
               preservation: bool = False) -> str:
    """Why the step cannot run as CUDA graphs here ('' if it can). Block swap is captured with the step (its copies
    and events; tests/test_memory.py replays it on a GPU): the 24 GiB tier's step went from 1.67 s eager to 0.83 s
    (H200, 2026-12-05, bench/README.md). `dropout`
    (lora.dropout): a captured recompute cannot restore the generator state the forward drew its masks from, so it
    would draw others, and LoKr / LoHa's rank dropout draws on the host, which a graph would replay as one fixed
    mask. `preservation` (train.output_preservation): its two more passes, one with the LoRA switched off, are not
    part of the captured step (the config refuses cuda_graphs: on with it)."""
    if device.type != "cuda":
        return "not on a GPU"
    if distributed:
        return "several processes (gradient all-reduce runs inside backward)"
    if dropout > 0:
        return "lora.dropout is on (a replayed step cannot redraw its masks as the eager step does)"
    if preservation:
        return ("train.output_preservation is on (its passes, one with the LoRA switched off, are not captured with "
                "the step)")
    if trained_outside_blocks(transformer):
        return "parameters outside the transformer blocks are trained"
    return ""


def _flatten(obj, out: list[torch.Tensor]):
    """Tensors of `obj` (dataclasses, tuples, lists nested) appended to `out`; returns a hashable spec to rebuild."""
    if isinstance(obj, torch.Tensor):
        out.append(obj)
        return ("T", tuple(obj.shape), obj.dtype, obj.device, obj.requires_grad)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return ("D", type(obj), tuple((f.name, _flatten(getattr(obj, f.name), out))
                                      for f in dataclasses.fields(obj) if f.init))
    if isinstance(obj, (tuple, list)):
        return ("L", type(obj), tuple(_flatten(x, out) for x in obj))
    return ("V", obj)


def _unflatten(spec, tensors):
    kind = spec[0]
    if kind == "T":
        return next(tensors)
    if kind == "D":
        return spec[1](**{name: _unflatten(s, tensors) for name, s in spec[2]})
    if kind == "L":
        return spec[1](_unflatten(s, tensors) for s in spec[2])
    return spec[1]


@dataclasses.dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    static: list[torch.Tensor]
    loss: LossParts
    swap_start: tuple[int | None, ...] = ()  # the block swap slots' contents the graph was captured with
    swap_end: tuple[int | None, ...] = ()  # ... and those a replay leaves
    swap_loads: int = 0  # block copies one replay makes


class StepGraphs:
    """Forward + loss + backward of one micro-batch, captured once per input signature and replayed."""

    def __init__(self, transformer: torch.nn.Module, params: list[torch.nn.Parameter], autocast_dtype: torch.dtype,
                 on_fallback: Callable[[str], None] | None = None, swap: BlockSwap | None = None):
        self.transformer = transformer
        self.swap = swap
        self.params = list(params)
        self.autocast_dtype = autocast_dtype
        self.graphs: dict[object, _Graph] = {}
        self.failed = ""  # why the graphs were turned off, if they were
        self.on_fallback = on_fallback
        self.captures = self.replays = 0
        self._grads: list[torch.Tensor] | None = None
        self._pool = None
        self._stream: torch.cuda.Stream | None = None

    # -- the step -------------------------------------------------------------------------------------------------
    def _body(self, flat: list[torch.Tensor], spec) -> LossParts:
        args, targets, audio_loss_weight = _unflatten(spec, iter(flat))
        video_args, audio_args = args
        inputs, sample_weight, scale = targets
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast_dtype == torch.bfloat16):
            video_pred, audio_pred = transformer_from_args(self.transformer, video_args, audio_args)
        loss = compute_loss(video_pred, audio_pred, inputs, audio_loss_weight, sample_weight)
        (loss.total * scale).backward()
        return LossParts(total=loss.total.detach(), video=loss.video, audio=loss.audio)

    def _attach_grads(self) -> None:
        """Point every p.grad at the fixed buffers (zeroed where the caller had set the gradient to None)."""
        if self._grads is None:
            self._grads = [torch.zeros_like(p) for p in self.params]
            for p, g in zip(self.params, self._grads, strict=True):
                if p.grad is not None:
                    g.copy_(p.grad)
                p.grad = g
            return
        stale = []
        for p, g in zip(self.params, self._grads, strict=True):
            if p.grad is g:
                continue
            if p.grad is None:
                stale.append(g)
            else:
                g.copy_(p.grad)
            p.grad = g
        if stale:
            torch._foreach_zero_(stale)

    def __call__(self, inputs: StepInputs, sample_weight: torch.Tensor | None, audio_loss_weight: float,
                 loss_scale: float) -> LossParts:
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16,
                                             enabled=self.autocast_dtype == torch.bfloat16):
            args = prepare_transformer_args(self.transformer, inputs.video, inputs.audio)
        # the loss side: targets and weights (the modalities themselves are consumed above)
        loss_inputs = dataclasses.replace(inputs, video=None, audio=None)
        target = inputs.video_target if inputs.video_target is not None else inputs.audio_target
        scale = torch.full((), loss_scale, dtype=torch.float32, device=target.device)
        flat: list[torch.Tensor] = []
        spec = _flatten((args, (loss_inputs, sample_weight, scale), audio_loss_weight), flat)
        self._attach_grads()
        entry = self.graphs.get(spec)
        if entry is None:
            loss = self._warm_up(flat, spec)  # a real step; compiles the blocks for this shape
            if not self.failed:
                self._capture(spec, flat)
            return loss
        for static, new in zip(entry.static, flat, strict=True):
            static.copy_(new)
        if self.swap is not None and self.swap.state() != entry.swap_start:
            self.swap.restore(entry.swap_start)
        entry.graph.replay()
        self.replays += 1
        if self.swap is not None:
            self.swap.assume(entry.swap_end)
            self.swap.loads += entry.swap_loads
        return LossParts(total=entry.loss.total.clone(),
                         video=None if entry.loss.video is None else entry.loss.video.clone(),
                         audio=None if entry.loss.audio is None else entry.loss.audio.clone())

    def _warm_up(self, flat: list[torch.Tensor], spec) -> LossParts:
        """The step run eagerly. Once graphs exist, on the capture stream with its memory taken from the graphs'
        pool (as torch's cudagraph trees warm up): a new bucket's first step then reuses the room the other graphs'
        temporaries have there instead of needing as much again beside it. The first bucket's warm-up runs plainly
        (the pool is empty then; this is the path measured on the H200)."""
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
            self._stream = torch.cuda.Stream()
        if not self.graphs:
            return self._body(flat, spec)
        device = torch.cuda.current_device()
        current = torch.cuda.current_stream()
        self._stream.wait_stream(current)
        with torch.cuda.stream(self._stream):
            torch._C._cuda_beginAllocateCurrentStreamToPool(device, self._pool)
            try:
                loss = self._body(flat, spec)
            finally:
                torch._C._cuda_endAllocateToPool(device, self._pool)
                torch._C._cuda_releasePool(device, self._pool)
        current.wait_stream(self._stream)
        return loss

    def release(self) -> None:
        """Drop the graphs, their pool and the gradient buffers (e.g. before validation sampling needs the room);
        the next call captures again."""
        self.graphs.clear()
        self._pool = None
        if self._grads is not None:
            for p, g in zip(self.params, self._grads, strict=True):
                if p.grad is g:
                    p.grad = None
            self._grads = None
        torch.cuda.synchronize()
        torch.cuda.empty_cache()

    def _capture(self, spec, flat: list[torch.Tensor]) -> None:
        swap = self.swap
        start = swap.state() if swap is not None else ()
        loads = swap.loads if swap is not None else 0
        try:
            torch.cuda.synchronize()
            if swap is not None:
                swap.assume(start)  # the same slots, without the eager step's events (not waitable in a capture)
            static = [t.detach().clone() for t in flat]
            torch.cuda.empty_cache()  # cached blocks of the regular pool: the graph's pool may need the room
            graph = torch.cuda.CUDAGraph()
            # capture records kernels without running them: the gradients are left as the eager step made them
            with torch.cuda.graph(graph, pool=self._pool, stream=self._stream):
                loss = self._body(static, spec)
            torch.cuda.synchronize()
        except Exception as e:  # noqa: BLE001 - any capture failure: eager from here on, same results
            self.failed = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"
            self.graphs.clear()
            self._pool = None
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            if swap is not None:  # nothing ran: the slots hold what they held
                swap.assume(start)
                swap.loads = loads
            if self.on_fallback:
                self.on_fallback(self.failed)
            return
        entry = _Graph(graph=graph, static=static, loss=loss)
        if swap is not None:  # the hooks ran through the whole step while capturing; its copies have not
            entry.swap_start, entry.swap_end, entry.swap_loads = start, swap.state(), swap.loads - loads
            swap.assume(start)
            swap.loads = loads
        self.graphs[spec] = entry
        self.captures += 1
