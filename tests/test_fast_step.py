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


def test_recomputing_fewer_blocks_changes_no_gradient(reference):
    """Selective checkpointing (the plan's kept blocks) trades memory for time only: every block recomputed, one,
    or none give the same loss and LoRA gradients, bit for bit."""
    from ltx_lora.ltx.fast import set_recomputed_blocks

    cfg, batch, _, _ = reference
    results = []
    for recompute in (None, 1, 0):
        model = build_transformer_from_config(cfg, seed=5)
        set_recomputed_blocks(model, recompute)
        results.append(lora_gradients("ours", model, batch, rank=8))
    (loss0, grads0), rest = results[0], results[1:]
    for loss, grads in rest:
        assert loss == loss0 and grads.keys() == grads0.keys()
        assert all(torch.equal(grads[k], grads0[k]) for k in grads0)


def test_step_graph_inputs_round_trip_and_key_on_shape(reference):
    """The CUDA-graph step (GPU only; replay checked against the official step by bench/train_step.py --check):
    its static inputs rebuild the same objects, a new shape is a new graph, and it says why it cannot run here."""
    from ltx_lora.task import resolve_task
    from ltx_lora.train.graphed import _flatten, _unflatten, can_graph
    from ltx_lora.train.objective import prepare_inputs
    from ltx_lora.train.timesteps import SigmaSampler

    cfg, batch, _, _ = reference

    def inputs_of(b):
        return prepare_inputs(b, SigmaSampler(), torch.Generator().manual_seed(0), task=resolve_task("i2v"),
                              dtype=torch.bfloat16)

    inputs = inputs_of(batch)
    flat: list[torch.Tensor] = []
    spec = _flatten((inputs, None, 0.5), flat)
    hash(spec)
    back, weight, scale = _unflatten(spec, iter(flat))
    assert back.video.latent is inputs.video.latent and back.audio.positions is inputs.audio.positions
    assert back.video_target is inputs.video_target and weight is None and scale == 0.5
    assert _flatten((inputs_of(batch), None, 0.5), []) == spec  # same shapes: the same graph is replayed
    shorter = LatentBatch(**{**batch.__dict__, "video": batch.video[:, :, :2]})
    assert _flatten((inputs_of(shorter), None, 0.5), []) != spec  # another bucket: another graph

    model = build_transformer_from_config(cfg, seed=5).requires_grad_(False)  # frozen, as the trainer's base
    model.transformer_blocks[0].attn1.to_q.weight.requires_grad_(True)  # trained inside the blocks: fine
    assert can_graph(model, torch.device("cpu"), distributed=False, swapped_blocks=0) == "not on a GPU"
    gpu = torch.device("cuda")
    assert can_graph(model, gpu, distributed=False, swapped_blocks=0) == ""
    assert "several processes" in can_graph(model, gpu, distributed=True, swapped_blocks=0)
    assert "swapped" in can_graph(model, gpu, distributed=False, swapped_blocks=2)
    model.patchify_proj.weight.requires_grad_(True)
    assert "outside the transformer blocks" in can_graph(model, gpu, distributed=False, swapped_blocks=0)
