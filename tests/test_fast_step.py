"""The fast training path computes what the official step computes, and falls back instead of crashing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from reference_step import lora_gradients, relative_error  # noqa: E402

from ltx_lora.fixtures.models import build_transformer_from_config, tiny_ltx23_config  # noqa: E402
from ltx_lora.train.objective import LatentBatch  # noqa: E402


def tiny_batch(cfg: dict) -> LatentBatch:
    t = cfg["transformer"]
    g = torch.Generator().manual_seed(3)
    bf16 = torch.bfloat16
    return LatentBatch(video=torch.randn(1, 128, 3, 2, 3, generator=g, dtype=bf16),
                       audio=torch.randn(1, 8, 13, 16, generator=g, dtype=bf16),
                       video_context=torch.randn(1, 128, t["cross_attention_dim"], generator=g, dtype=bf16),
                       audio_context=torch.randn(1, 128, t["audio_cross_attention_dim"], generator=g, dtype=bf16),
                       context_mask=torch.ones(1, 128, dtype=torch.int64), fps=24.0)


@pytest.fixture(scope="module")
def reference():
    cfg = tiny_ltx23_config()
    batch = tiny_batch(cfg)
    loss, grads = lora_gradients("ref", build_transformer_from_config(cfg, seed=5), batch, rank=8)
    return cfg, batch, loss, grads


def test_fast_step_matches_the_official_step(reference):
    cfg, batch, ref_loss, ref_grads = reference
    loss, grads = lora_gradients("ours", build_transformer_from_config(cfg, seed=5), batch, rank=8)
    assert len(grads) == len(ref_grads) > 0
    assert loss == pytest.approx(ref_loss, rel=1e-2)
    assert relative_error(grads, ref_grads) < 2e-2


def test_compiled_blocks_match_the_official_step(reference):
    """The blocks traced whole (dynamo + AOT autograd, the graphs inductor compiles on a GPU; its kernels are
    checked by the GPU bench) compute the same gradients: nothing is lost or graph-broken in tracing."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    cfg, batch, ref_loss, ref_grads = reference
    torch._dynamo.reset()
    counters.clear()
    loss, grads = lora_gradients("ours", build_transformer_from_config(cfg, seed=5), batch, rank=8,
                                 compiled="aot_eager")
    assert not counters["graph_break"], f"graph breaks: {dict(counters['graph_break'])}"
    assert loss == pytest.approx(ref_loss, rel=1e-2)
    assert relative_error(grads, ref_grads) < 2e-2
