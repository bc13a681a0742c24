"""Our training step against a step built from ltx-core the way the official trainer builds it (ref_step.py):
same inputs, same loss to float32 rounding; and only the LoRA weights ever change. Every condition type of the
flexible strategy against its official formulas: tests/test_flexible.py."""

import einops
import pytest
import torch
from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier, get_pixel_coords
from ltx_core.model.transformer.modality import Modality
from ltx_core.types import AudioLatentShape, VideoLatentShape

from ltx_lora.config import LoraConfig, TrainConfig
from ltx_lora.fixtures.models import build_transformer_from_config, tiny_ltx23_config
from ltx_lora.ltx.modality import predict_velocity
from ltx_lora.task import FirstFrameCondition, ModalityTask, TaskConfig
from ltx_lora.train.lora import inject_lora
from ltx_lora.train.objective import LatentBatch, compute_loss, prepare_inputs
from ltx_lora.train.optim import build_optimizer, set_lr
from ltx_lora.train.timesteps import SigmaSampler


@pytest.fixture
def model():
    cfg = tiny_ltx23_config()
    m = build_transformer_from_config(cfg, dtype=torch.float32)
    inject_lora(m, LoraConfig(rank=4, alpha=8), seed=0)
    with torch.no_grad():  # B starts at zero; give the LoRA an effect so the comparison covers it
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(n)))
    return m, cfg["transformer"]


def first_frame_task(p: float, sigma: str = "shared") -> TaskConfig:
    return TaskConfig(video=ModalityTask(conditions=[FirstFrameCondition(probability=p)] if p else []), sigma=sigma)


def _batch(t, b=2, f=3, h=2, w=3, ta=7, fps=25.0):
    g = torch.Generator().manual_seed(11)
    return LatentBatch(video=torch.randn(b, 128, f, h, w, generator=g), audio=torch.randn(b, 8, ta, 16, generator=g),
                       video_context=torch.randn(b, 16, t["cross_attention_dim"], generator=g),
                       audio_context=torch.randn(b, 16, t["audio_cross_attention_dim"], generator=g),
                       context_mask=torch.ones(b, 16, dtype=torch.int64), fps=fps)


def reference_loss(model, batch: LatentBatch, noise_v, noise_a, sigma, cond) -> torch.Tensor:
    """The official text-to-video strategy's formulas (audio shares the video's sigma), written out against
    ltx-core directly."""
    b, _, f, h, w = batch.video.shape
    x0 = einops.rearrange(batch.video, "b c f h w -> b (f h w) c")
    s = sigma.view(-1, 1, 1)
    xt = torch.where(cond.unsqueeze(-1), x0, (1 - s) * x0 + s * noise_v)
    coords = get_pixel_coords(VideoLatentPatchifier(1).get_patch_grid_bounds(
        output_shape=VideoLatentShape(frames=f, height=h, width=w, batch=b, channels=128), device="cpu"),
        scale_factors=(8, 32, 32), causal_fix=True).float()
    coords[:, 0] = coords[:, 0] / batch.fps
    video = Modality(latent=xt, sigma=sigma, timesteps=torch.where(cond, 0.0, sigma.view(-1, 1).expand_as(cond)),
                     positions=coords, context=batch.video_context, context_mask=batch.context_mask)
    a0 = einops.rearrange(batch.audio, "b c t f -> b t (c f)")
    at = (1 - s) * a0 + s * noise_a
    apos = AudioPatchifier(1).get_patch_grid_bounds(
        output_shape=AudioLatentShape(frames=a0.shape[1], mel_bins=16, batch=b, channels=8), device="cpu")
    audio = Modality(latent=at, sigma=sigma, timesteps=sigma.view(-1, 1).expand(b, a0.shape[1]), positions=apos,
                     context=batch.audio_context, context_mask=batch.context_mask)
    vp, ap = model(video=video, audio=audio, perturbations=None)
    mask = (~cond).unsqueeze(-1).float()
    v = ((vp - (noise_v - x0)).pow(2) * mask).mean(dim=(1, 2)) / mask.mean(dim=(1, 2))
    a = (ap - (noise_a - a0)).pow(2).mean(dim=(1, 2))
    return (v + a).mean()


def test_loss_equals_the_official_step_on_identical_inputs(model):
    m, t = model
    batch = _batch(t)
    for seed in range(3):  # some draws condition the first frame, some do not
        inputs = prepare_inputs(batch, SigmaSampler(), torch.Generator().manual_seed(seed),
                                task=first_frame_task(0.5), dtype=torch.float32)
        ours = compute_loss(*predict_velocity(m, inputs.video, inputs.audio), inputs).total
        x0 = einops.rearrange(batch.video, "b c f h w -> b (f h w) c")
        a0 = einops.rearrange(batch.audio, "b c t f -> b t (c f)")
        ref = reference_loss(m, batch, inputs.video_target + x0, inputs.audio_target + a0, inputs.video_sigma,
                             ~inputs.video_loss_mask)
        assert torch.allclose(ours, ref, rtol=1e-5, atol=0), (seed, ours.item(), ref.item())


def test_first_frame_conditioning_keeps_x0_and_timestep_zero(model):
    _, t = model
    batch = _batch(t)
    inputs = prepare_inputs(batch, SigmaSampler(), torch.Generator().manual_seed(0), task=first_frame_task(1.0),
                            dtype=torch.float32)
    frame = batch.video.shape[3] * batch.video.shape[4]
    x0 = einops.rearrange(batch.video, "b c f h w -> b (f h w) c")
    assert torch.equal(inputs.video.latent[:, :frame], x0[:, :frame])
    assert (inputs.video.timesteps[:, :frame] == 0).all() and (inputs.video.timesteps[:, frame:] > 0).all()
    assert not inputs.video_loss_mask[:, :frame].any() and inputs.video_loss_mask[:, frame:].all()


def test_only_lora_weights_change(model):
    m, t = model
    base = {n: p.detach().clone() for n, p in m.named_parameters() if ".lora_" not in n}
    lora = {n: p.detach().clone() for n, p in m.named_parameters() if ".lora_" in n}
    params = [p for p in m.parameters() if p.requires_grad]
    assert len(params) == len(lora)
    opt = build_optimizer(params, TrainConfig(learning_rate=1e-2))
    inputs = prepare_inputs(_batch(t), SigmaSampler(), torch.Generator().manual_seed(0),
                            task=first_frame_task(0.1, "independent"), dtype=torch.float32)
    compute_loss(*predict_velocity(m, inputs.video, inputs.audio), inputs).total.backward()
    opt.step()
    for n, p in m.named_parameters():
        if n in base:
            assert torch.equal(p, base[n]), n
    assert all(not torch.equal(p, lora[n]) for n, p in m.named_parameters() if n in lora)


def test_loraplus_trains_lora_b_at_its_ratio_of_the_scheduled_rate(model):
    """LoRA+ (train.loraplus_lr_ratio 4): after one AdamW step (whose first update is lr x g / (|g| + eps), so
    each moved entry moves by its group's rate) the lora_B entries moved 4x the scheduled rate, lora_A's 1x; the
    schedule scales both groups (warm-up step 1 of 4: a quarter)."""
    m, t = model
    named = {n: p for n, p in m.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in named.items()}
    cfg = TrainConfig(learning_rate=1e-2, loraplus_lr_ratio=4.0, warmup_steps=4, weight_decay=0.0)
    opt = build_optimizer(named, cfg)
    assert set_lr(opt, 0, cfg) == pytest.approx(2.5e-3)
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([2.5e-3, 1e-2])
    inputs = prepare_inputs(_batch(t), SigmaSampler(), torch.Generator().manual_seed(0), task=TaskConfig(),
                            dtype=torch.float32)
    compute_loss(*predict_velocity(m, inputs.video, inputs.audio), inputs).total.backward()
    opt.step()
    moved = {n: (p.detach() - before[n]).abs().max().item() for n, p in named.items()}
    assert any(".lora_B." in n for n in named) and any(".lora_A." in n for n in named)
    for n, d in moved.items():
        assert d == pytest.approx(1e-2 if ".lora_B." in n else 2.5e-3, rel=1e-3), n


def test_a_weight_zero_clip_adds_no_gradient(model):
    """Per-clip loss weights: 0 drops a clip from the gradient, 1 is the unweighted loss exactly."""
    m, t = model
    params = [p for p in m.parameters() if p.requires_grad]

    def grads(batch, weight=None, only=None):
        m.zero_grad(set_to_none=True)
        inputs = prepare_inputs(batch, SigmaSampler(), torch.Generator().manual_seed(3), task=TaskConfig(),
                                dtype=torch.float32)
        loss = compute_loss(*predict_velocity(m, inputs.video, inputs.audio), inputs, sample_weight=weight)
        total = loss.total if only is None else (loss_per_sample(m, inputs)[only]) / 2
        total.backward()
        return [p.grad.clone() for p in params], loss

    def loss_per_sample(m, inputs):
        vp, ap = predict_velocity(m, inputs.video, inputs.audio)
        parts = compute_loss(vp, ap, inputs)
        v = ((vp.float() - inputs.video_target).pow(2)).mean(dim=(1, 2))
        a = ((ap.float() - inputs.audio_target).pow(2)).mean(dim=(1, 2))
        assert torch.allclose(v, parts.video) and torch.allclose(a, parts.audio)
        return v + a

    batch = _batch(t)
    plain, plain_loss = grads(batch)
    ones, _ = grads(batch, torch.ones(2))
    assert all(torch.equal(a, b) for a, b in zip(plain, ones))
    zero_first, weighted = grads(batch, torch.tensor([0.0, 1.0]))
    second_only, _ = grads(batch, only=1)  # the second clip's loss alone, over the batch of 2
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(zero_first, second_only))
    assert torch.equal(weighted.video, plain_loss.video)  # what is logged stays the unweighted per-clip loss
    none, _ = grads(batch, torch.zeros(2))
    assert all(not g.any() for g in none)
