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


def compile_blocks(transformer: torch.nn.Module, backend: str = "inductor") -> None:
    """torch.compile each transformer block (they share one graph: the block index is left dynamic)."""
    import torch._dynamo

    # A block reads its index (a Python int) in the perturbation checks; static, each of the 48 blocks would be a
    # new graph and dynamo gives up after 8 recompilations.
    torch._dynamo.config.allow_unspec_int_on_nn_module = True
    # 48 blocks x (train, recompute, eval) shapes per bucket: leave room for several buckets.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    for block in transformer.transformer_blocks:
        block.compile(backend=backend)


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
