"""The fast training path for ltx-core's transformer: one compiled graph per block, flash attention kernels.

Three facts make the official step slow (measured, bench/README.md):

- ltx-core routes every attention call through `AttentionFunction.DEFAULT`, an Enum whose `__call__` torch.compile
  cannot trace: each block splits into 7+ graphs, so compiling buys almost nothing. ltx-core's `Attention` takes
  any `AttentionCallable`; we give it a plain function around `scaled_dot_product_attention` (the same math as
  ltx-core's own `PytorchAttention`), and the whole block, LoRA included, becomes one graph.
- The text context mask is all ones after the connectors (their learnable registers fill the padding), yet ltx-core
  turns it into an additive zero bias, which keeps SDPA off its flash kernels. `attention_mask_or_none` drops it.
- Without compilation each block launches thousands of small kernels (casts, norms, rope, AdaLN) and the GPU
  idles; compiled, they fuse.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """ltx-core's AttentionCallable contract: q/k/v [B, T, H*D] -> [B, T, H*D], mask additive or None."""
    b, _, inner = q.shape
    d = inner // heads
    q, k, v = (t.view(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    if mask is not None:
        mask = mask.reshape(mask.shape[0] if mask.ndim > 2 else 1, 1, -1, mask.shape[-1])
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, -1, inner)


def use_sdpa_attention(transformer: torch.nn.Module) -> int:
    """Point every ltx-core Attention module at `sdpa_attention`; returns how many were changed."""
    from ltx_core.model.transformer.attention import Attention

    n = 0
    for module in transformer.modules():
        if isinstance(module, Attention):
            module.attention_function = sdpa_attention
            n += 1
    return n


def attention_mask_or_none(mask: torch.Tensor | None) -> torch.Tensor | None:
    """A 0/1 context mask that keeps every token is no mask at all (lets SDPA pick its flash kernel)."""
    if mask is None or bool(mask.bool().all()):
        return None
    return mask


def _dynamo_settings() -> None:
    import torch._dynamo

    # A block reads its index (a Python int) in the perturbation checks; static, each of the 48 blocks would be a
    # new graph and dynamo gives up after 8 recompilations.
    torch._dynamo.config.allow_unspec_int_on_nn_module = True
    # 48 blocks x (train, recompute, eval) shapes per bucket: leave room for several buckets.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)


def compile_blocks(transformer: torch.nn.Module, backend: str = "inductor") -> None:
    """torch.compile each transformer block (they share one graph: the block index is left dynamic)."""
    _dynamo_settings()
    for block in transformer.transformer_blocks:
        block.compile(backend=backend)


def blocks_compiled(transformer: torch.nn.Module) -> bool:
    """Whether `compile_blocks` compiled this transformer's blocks (and `uncompile_blocks` did not undo it)."""
    return any(getattr(b, "_compiled_call_impl", None) is not None for b in transformer.transformer_blocks)


def _sampling_call(block: torch.nn.Module, *args, **kwargs):
    """Where the sampling graphs start: a code object of their own, so dynamo keeps their cache and the sizes it
    has seen apart from training's (whose graphs start at the block's forward). Shared, the first compile of one
    would make the other's sizes dynamic: validation at step 0 would leave training with dynamic-size graphs."""
    return block._call_impl(*args, **kwargs)


_sampling_compiled: dict[str, object] = {}  # backend -> torch.compile(_sampling_call): one per process


@contextlib.contextmanager
def sampling_blocks(transformer: torch.nn.Module, compiled: bool, backend: str = "inductor"):
    """The blocks compiled for sampling (`compiled`) or eager while sampling, then as they were (training's
    compiled blocks, or eager).

    Compiled, sampling costs one graph per block kind and sampling shape: the blocks (their index dynamic from the
    first compile: `dynamic_sources`), and each STG block (its perturbation check guards the index); the guidance
    passes' perturbations are the same object at every step, so later steps and samples compile nothing
    (tests/test_sampler.py counts). A second validation resolution makes the sizes dynamic (dynamo's automatic
    dynamic shapes): one more set of graphs, then none."""
    saved = [(b, getattr(b, "_compiled_call_impl", None)) for b in transformer.transformer_blocks]
    settings = contextlib.nullcontext()
    if compiled:
        _dynamo_settings()
        if backend not in _sampling_compiled:
            _sampling_compiled[backend] = torch.compile(_sampling_call, backend=backend)
        call = _sampling_compiled[backend]
        for block, _ in saved:
            block._compiled_call_impl = functools.partial(call, block)
        # The block index is an input from the first graph on (left to dynamo, the first block would get a graph
        # of its own with the index static: one more compile).
        sources = ",".join(filter(None, [torch.compiler.config.dynamic_sources, "L['block'].idx"]))
        settings = torch.compiler.config.patch(dynamic_sources=sources)
    else:
        for block, _ in saved:
            block._compiled_call_impl = None
    try:
        with settings:
            yield
    finally:
        for block, impl in saved:
            block._compiled_call_impl = impl


def uncompile_blocks(transformer: torch.nn.Module) -> None:
    """Back to eager (after a compile failure)."""
    import torch._dynamo

    torch._dynamo.reset()
    for block in transformer.transformer_blocks:
        block._compiled_call_impl = None


def can_compile(device: torch.device, asked: bool = False) -> tuple[bool, str]:
    """Whether to compile here (`asked`: the user said on), and why not if not."""
    if device.type != "cuda":
        if asked:
            return True, ""
        return False, "not on a GPU (compiling for CPU takes longer than it saves on small runs)"
    try:
        from torch.utils._triton import has_triton
    except ImportError:  # pragma: no cover - torch always has it in 2.11
        return False, "this torch build cannot tell whether triton is present"
    if not has_triton():
        return False, "triton is not installed"
    return True, ""


def prepare_transformer_args(transformer: torch.nn.Module, video, audio):
    """The first half of ltx-core's LTXModel.forward: modalities -> per-block arguments (TransformerArgs).

    Nothing here is trained (patchify projections, AdaLN timestep embeddings, rope tables): with the LoRA on the
    blocks' attention layers, its outputs need no gradient, so it can run outside a captured CUDA graph (its rope
    tables copy a host array to the GPU, which a capture forbids)."""
    video_args = transformer.video_args_preprocessor.prepare(video, audio) if video is not None else None
    audio_args = transformer.audio_args_preprocessor.prepare(audio, video) if audio is not None else None
    return video_args, audio_args


def transformer_from_args(transformer: torch.nn.Module, video_args, audio_args):
    """The second half of LTXModel.forward: the blocks and the output projections -> (video, audio) velocity."""
    video_out, audio_out = transformer._process_transformer_blocks(video=video_args, audio=audio_args,
                                                                   perturbations=None)
    vx = (transformer._process_output(transformer.scale_shift_table, transformer.norm_out, transformer.proj_out,
                                      video_out.x, video_out.embedded_timestep) if video_out is not None else None)
    ax = (transformer._process_output(transformer.audio_scale_shift_table, transformer.audio_norm_out,
                                      transformer.audio_proj_out, audio_out.x, audio_out.embedded_timestep)
          if audio_out is not None else None)
    return vx, ax


def trained_outside_blocks(transformer: torch.nn.Module) -> bool:
    """Whether any trained parameter lives outside the transformer blocks (then the argument preparation needs
    gradients and cannot run apart from the graph)."""
    inside = {id(p) for p in transformer.transformer_blocks.parameters()}
    return any(p.requires_grad and id(p) not in inside for p in transformer.parameters())


def _run_block(block: torch.nn.Module, video, audio, perturbations, device_anchor: torch.Tensor):
    """One block's call under checkpoint; `device_anchor` only tells checkpoint which GPU's generator to save."""
    return block(video=video, audio=audio, perturbations=perturbations)


def set_recomputed_blocks(transformer: torch.nn.Module, recompute: int | None) -> None:
    """Gradient checkpointing per block: the first `recompute` blocks recompute their activations in backward,
    the others keep them (None: every block recomputes, ltx-core's behaviour). Applies while ltx-core's own
    switch (`set_gradient_checkpointing`) is on and the model is training.

    Replaces ltx-core's block loop on this instance with the same calls. The RNG state is saved and restored around
    a recompute (it matters with LoRA dropout: the recompute must draw the forward's masks), except while a CUDA
    graph is captured (the trainer runs no graphs with dropout: train/graphed.py `can_graph`). torch's checkpoint
    saves a GPU generator only for devices it finds among plain tensor arguments, and it does not look inside
    ltx-core's TransformerArgs (dataclasses, not pytree nodes): ltx-core's own loop therefore restores the CPU
    generator only, and dropout on a GPU drew new masks in the recompute. The block input `x` passed beside them
    (unused by the call) shows checkpoint the device."""
    from torch.utils.checkpoint import checkpoint

    transformer._recomputed_blocks = recompute

    def process_blocks(self, video, audio, perturbations):
        on = self._enable_gradient_checkpointing and self.training and torch.is_grad_enabled()
        n = len(self.transformer_blocks) if self._recomputed_blocks is None else self._recomputed_blocks
        preserve = not (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing())
        device_anchor = (video if video is not None else audio).x
        for i, block in enumerate(self.transformer_blocks):
            if on and i < n:
                video, audio = checkpoint(_run_block, block, video, audio, perturbations, device_anchor,
                                          use_reentrant=False, preserve_rng_state=preserve)
            else:
                video, audio = block(video=video, audio=audio, perturbations=perturbations)
        return video, audio

    transformer._process_transformer_blocks = process_blocks.__get__(transformer)
