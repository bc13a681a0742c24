"""The validation sampler's fast path: a step's guidance passes as one batch compute what the passes one at a time
compute (every guidance combination, modality set and condition), and compiled blocks what eager blocks compute,
without recompiling across steps (bench/validation_sample.py --tiny)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import validation_sample  # noqa: E402 - the bench, run here on the tiny config

from ltx_lora.fixtures.models import build_transformer_from_config, tiny_ltx23_config  # noqa: E402
from ltx_lora.ltx.fast import blocks_compiled, compile_blocks, sampling_blocks, use_sdpa_attention  # noqa: E402
from ltx_lora.ltx.sampling import (  # noqa: E402
    Guidance,
    LatentAt,
    Masked,
    Prompt,
    Reference,
    SampleRequest,
    sample_latents,
    sigma_schedule,
)

FULL = Guidance(cfg=4.0, stg=1.0, stg_blocks=[1], rescale=0.7, modality=3.0)


@pytest.fixture(scope="module")
def tiny():
    """The tiny LTX-2.3 transformer (fp32, SDPA attention as validation runs it), prompts and given latents."""
    t = build_transformer_from_config(tiny_ltx23_config(), dtype=torch.float32, seed=5).eval()
    use_sdpa_attention(t)
    g = torch.Generator().manual_seed(0)

    def prompt(length: int, kept: int) -> Prompt:
        mask = torch.zeros(1, length, dtype=torch.int64)
        mask[:, :kept] = 1
        return Prompt(torch.randn(1, length, 32, generator=g), torch.randn(1, length, 16, generator=g), mask)

    prompts = {"pos": prompt(256, 256), "neg": prompt(256, 256), "ragged_neg": prompt(128, 100)}
    latents = {"video": torch.randn(1, 128, 3, 2, 2, generator=g), "sound": torch.randn(1, 8, 18, 16, generator=g),
               "ref": torch.randn(1, 128, 2, 1, 1, generator=g)}
    return t, prompts, latents


def _top_row() -> torch.Tensor:
    mask = torch.zeros(3, 2, 2)
    mask[:, 0, :] = 1
    return mask


# case: (guidance, negative prompt, request fields, passes per step)
CASES = {
    "cfg": (Guidance(cfg=4.0), "neg", {}, 2),
    "cfg_stg": (Guidance(cfg=4.0, stg=1.0, stg_blocks=[1]), "ragged_neg", {}, 3),
    "cfg_stg_modality": (FULL, "ragged_neg", {}, 4),
    "video_only": (FULL, "ragged_neg", {"with_audio": False}, 3),
    "audio_only": (FULL, "neg", {"with_video": False}, 3),
    "audio_given": (FULL, "ragged_neg", {"audio_given": "sound"}, 4),
    "video_given": (FULL, "neg", {"video_given": "video", "with_video": False}, 4),
    "conditioned": (FULL, "ragged_neg", {"first_frame": "video[:1]",
                                         "video_conditions": ["masked", "reference"],
                                         "audio_conditions": ["prefix"]}, 4),
}


def _request(guide: Guidance, fields: dict, latents: dict) -> SampleRequest:
    v, sound = latents["video"], latents["sound"]
    named = {"sound": sound, "video": v, "video[:1]": v[:, :, :1]}
    items = {"masked": Masked(v, _top_row()), "reference": Reference(latents["ref"], downscale=2, temporal_scale=2),
             "prefix": LatentAt(sound[:, :, :5], 0)}
    kw = {k: ([items[i] for i in val] if isinstance(val, list) else named.get(val, val) if isinstance(val, str)
              else val) for k, val in fields.items()}
    return SampleRequest(width=64, height=64, frames=17, fps=24.0, seed=3, sigmas=sigma_schedule(3),
                         video_guidance=guide, audio_guidance=guide, **kw)


@pytest.mark.parametrize("case", list(CASES))
def test_batched_passes_equal_the_passes_one_at_a_time(tiny, case):
    """fp32 on CPU: the same latents within 1e-5 of their scale; the batched sampler runs one forward per step
    holding every pass the guidance needs, the reference one forward per pass (counted at the transformer)."""
    t, prompts, latents = tiny
    guide, negative, fields, passes = CASES[case]
    req = _request(guide, fields, latents)
    calls: list[int] = []
    hook = t.register_forward_pre_hook(lambda _m, args: calls.append(next(
        m.latent.shape[0] for m in args[:2] if m is not None)))
    try:
        results = {}
        for batched in (False, True):
            calls.clear()
            results[batched] = sample_latents(t, req, prompts["pos"], prompts[negative], device=torch.device("cpu"),
                                              dtype=torch.float32, batched=batched)
            assert calls == ([passes] if batched else [1] * passes) * 3, (batched, calls)
    finally:
        hook.remove()
    for one_at_a_time, batched in zip(results[False], results[True], strict=True):
        assert (one_at_a_time is None) == (batched is None)
        if batched is not None:
            torch.testing.assert_close(batched, one_at_a_time, rtol=1e-5, atol=1e-5 * one_at_a_time.abs().max().item())


def test_sampling_blocks_compiles_for_the_sample_and_restores_the_blocks(tiny):
    t = build_transformer_from_config(tiny_ltx23_config(), dtype=torch.float32, seed=5)
    with sampling_blocks(t, True, backend="aot_eager"):
        assert blocks_compiled(t)
    assert not blocks_compiled(t)  # eager training stays eager
    compile_blocks(t, backend="aot_eager")
    impls = [b._compiled_call_impl for b in t.transformer_blocks]
    with sampling_blocks(t, False):
        assert not blocks_compiled(t)
    assert [b._compiled_call_impl for b in t.transformer_blocks] == impls  # training's compiled blocks come back


def test_bench_variants_agree_and_compiled_blocks_do_not_recompile_across_steps():
    """bench/validation_sample.py --tiny: sequential eager, batched eager and batched compiled (aot_eager: the
    graphs inductor compiles on a GPU) give the same latents; the compiled blocks are 2 graphs on the 3-block tiny
    model (blocks 0 and 1 share one, their index dynamic; the STG block 2 has its own) compiled in the 2-step
    warm-up, and the timed 3-step sample (another schedule: every sigma new) compiles none."""
    import torch._dynamo

    torch._dynamo.reset()
    rows = validation_sample.main(["--tiny"])
    assert [r["variant"] for r in rows] == list(validation_sample.VARIANTS)
    assert [r["forwards_per_step"] for r in rows] == [4, 1, 1] and rows[0]["passes_per_step"] == 4
    for r in rows:
        assert r["max_abs_diff"] < 1e-4, r
        assert r["compiled_graphs_timed"] == 0, r
    assert rows[2]["compiled_graphs"] == 2 and rows[2]["seconds_compile"] is not None
