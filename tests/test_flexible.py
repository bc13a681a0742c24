"""The flexible strategy against the official one (ltx-trainer 1.2.0 `training_strategies/flexible.py`), per
condition type: on identical inputs our transformer inputs, loss and LoRA gradients equal the official formulas,
re-expressed below against ltx-core directly, on the tiny transformer in fp32: measured equal to the last bit.

The official draws from the global torch RNG, we from one stream per purpose (train/objective.py); the official
side here draws the same random tensors from the same streams (`random_streams` of the same seed), in the order
the official makes them: sigma (normal, uniform, pick), noise, one per-sample draw per intrinsic condition, one
batch-wide draw per reference.
"""

from __future__ import annotations

import einops
import pytest
import torch
from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier, get_pixel_coords
from ltx_core.model.transformer.modality import Modality
from ltx_core.types import AudioLatentShape, SpatioTemporalScaleFactors, VideoLatentShape

from ltx_lora.config import LoraConfig
from ltx_lora.errors import UserError
from ltx_lora.fixtures.models import build_transformer_from_config, tiny_ltx23_config
from ltx_lora.ltx.modality import predict_velocity
from ltx_lora.task import (
    FirstFrameCondition,
    MaskCondition,
    ModalityTask,
    PrefixCondition,
    ReferenceCondition,
    SpatialCropCondition,
    SuffixCondition,
    TaskConfig,
    resolve_task,
)
from ltx_lora.train.lora import inject_lora
from ltx_lora.train.objective import LatentBatch, compute_loss, prepare_inputs, random_streams
from ltx_lora.train.timesteps import SigmaSampler

B, F, H, W, T_AUDIO = 3, 3, 4, 4, 7  # latent grid 3 x 4 x 4 (17 frames of 128 x 128 pixels), 7 audio steps
FPS = 25.0


@pytest.fixture(scope="module")
def model():
    cfg = tiny_ltx23_config()
    m = build_transformer_from_config(cfg, dtype=torch.float32)
    inject_lora(m, LoraConfig(rank=4, alpha=8), seed=0)
    with torch.no_grad():  # B starts at zero; give the LoRA an effect so the gradients cover both factors
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(n)))
    return m, cfg["transformer"]


def make_batch(t: dict, seed: int = 7) -> LatentBatch:
    g = torch.Generator().manual_seed(seed)
    return LatentBatch(
        video=torch.randn(B, 128, F, H, W, generator=g), audio=torch.randn(B, 8, T_AUDIO, 16, generator=g),
        video_context=torch.randn(B, 16, t["cross_attention_dim"], generator=g),
        audio_context=torch.randn(B, 16, t["audio_cross_attention_dim"], generator=g),
        context_mask=torch.ones(B, 16, dtype=torch.int64), fps=FPS,
        # a reference at half the size and half the frame groups (17 -> 9 pixel frames: 2 latent frames)
        reference_video=torch.randn(B, 128, 2, H // 2, W // 2, generator=g),
        reference_audio=torch.randn(B, 8, 5, 16, generator=g),
        video_condition_mask=torch.rand(B, F, H, W, generator=g),
        audio_condition_mask=torch.rand(B, T_AUDIO, generator=g))


# -- the official formulas, re-expressed (facts of flexible.py / timestep_samplers.py / base_strategy.py) ---------


def official_sigma(stream: torch.Generator, batch: int, seq_len: int) -> torch.Tensor:
    """ShiftedLogitNormalTimestepSampler.sample(batch, seq_len): shift linear in the sequence length."""
    slope = (2.05 - 0.95) / (4096 - 1024)
    mu = slope * seq_len + (0.95 - slope * 1024)
    logit = torch.sigmoid(torch.randn((batch,), generator=stream) + mu)
    hi, lo = torch.sigmoid(torch.tensor(mu + 3.0902)), torch.sigmoid(torch.tensor(mu - 2.5758))
    raw = (logit - lo) / (hi - lo)
    stretched = torch.where(raw >= 1e-3, raw, 2e-3 - raw).clamp(0, 1)
    uniform = (1 - 1e-3) * torch.rand((batch,), generator=stream) + 1e-3
    prob = torch.rand((batch,), generator=stream)
    return torch.where(prob > 0.1, stretched, uniform)


def official_video_positions(f: int, h: int, w: int, b: int, fps: float) -> torch.Tensor:
    coords = get_pixel_coords(VideoLatentPatchifier(1).get_patch_grid_bounds(
        output_shape=VideoLatentShape(frames=f, height=h, width=w, batch=b, channels=128), device="cpu"),
        scale_factors=SpatioTemporalScaleFactors.default(), causal_fix=True).float()
    coords[:, 0, ...] = coords[:, 0, ...] / fps
    return coords


def official_audio_positions(t: int, b: int) -> torch.Tensor:
    return AudioPatchifier(1).get_patch_grid_bounds(
        output_shape=AudioLatentShape(frames=t, mel_bins=16, batch=b, channels=8), device="cpu")


def official_modality(spec: ModalityTask, name: str, batch: LatentBatch, streams: dict, sigma=None):
    """FlexibleStrategy._process_modality: (Modality, targets, loss_mask, sigmas, per-condition draws)."""
    if name == "video":
        latents = einops.rearrange(batch.video, "b c f h w -> b (f h w) c")
        _, _, f, h, w = batch.video.shape
        positions = official_video_positions(f, h, w, B, batch.fps)
    else:
        latents = einops.rearrange(batch.audio, "b c t m -> b t (c m)")
        h = w = 1
        positions = official_audio_positions(latents.shape[1], B)
    b, seq_len, _ = latents.shape
    if spec.generated:
        sigmas = sigma if sigma is not None else official_sigma(streams[f"{name}_sigma"], b, seq_len)
        noise = torch.randn(latents.shape, generator=streams[f"{name}_noise"])
        s = sigmas.view(-1, 1, 1)
        noisy, targets = (1 - s) * latents + s * noise, noise - latents
        timesteps = sigmas.view(-1, 1).expand(b, seq_len).clone()
        loss_mask = torch.ones(b, seq_len, dtype=torch.bool)
    else:
        noisy, targets, loss_mask = latents, None, None
        timesteps, sigmas = torch.zeros(b, seq_len), torch.zeros(b)
    draws = []
    stream = streams[f"{name}_conditions"]
    for cond in spec.conditions:
        if cond.type == "reference" or not spec.generated:
            continue
        apply = torch.rand(b, generator=stream) < cond.probability
        draws.append(apply)
        if not apply.any():
            continue
        mask = torch.zeros(b, seq_len)
        if cond.type == "first_frame":
            mask[:, :h * w] = 1.0
        elif cond.type == "prefix":
            mask[:, :cond.frames * h * w] = 1.0
        elif cond.type == "suffix":
            mask[:, -cond.frames * h * w:] = 1.0
        elif cond.type == "spatial_crop":
            y1, x1, y2, x2 = cond.box
            spatial = torch.zeros(h, w)
            ly1, ly2 = (max(0, min(v // 32, h)) for v in (y1, y2))
            lx1, lx2 = (max(0, min(v // 32, w)) for v in (x1, x2))
            spatial[ly1:ly2, lx1:lx2] = 1.0
            mask = spatial.flatten().repeat(seq_len // (h * w)).unsqueeze(0).expand(b, -1)
        else:
            given = batch.video_condition_mask if name == "video" else batch.audio_condition_mask
            mask = (given.reshape(b, seq_len) > 0.5).float()
        mask = mask * apply.view(-1, 1).float()
        m = mask.unsqueeze(-1)
        noisy = m * latents + (1 - m) * noisy
        timesteps = (1 - mask) * timesteps
        loss_mask = loss_mask & (mask == 0)
    for cond in spec.conditions:
        if cond.type != "reference":
            continue
        if torch.rand((), generator=stream).item() >= cond.probability:
            draws.append(False)
            continue
        draws.append(True)
        if name == "video":
            ref = einops.rearrange(batch.reference_video, "b c f h w -> b (f h w) c")
            _, _, rf, rh, rw = batch.reference_video.shape
            ref_positions = official_video_positions(rf, rh, rw, b, batch.fps / cond.temporal_scale)
            if cond.downscale != 1 or cond.temporal_scale != 1:
                ref_positions = ref_positions.clone()
                if cond.temporal_scale != 1:
                    t_target = positions[:, 0, 0:1, 1:2]
                    ref_positions[:, 0, ...] = torch.clamp(
                        ref_positions[:, 0, ...] - (cond.temporal_scale - 1) * t_target, min=0)
                if cond.downscale != 1:
                    ref_positions[:, 1, ...] *= cond.downscale
                    ref_positions[:, 2, ...] *= cond.downscale
        else:
            ref = einops.rearrange(batch.reference_audio, "b c t m -> b t (c m)")
            ref_positions = official_audio_positions(ref.shape[1], b)
        n = ref.shape[1]
        noisy = torch.cat([ref, noisy], dim=1)
        positions = torch.cat([ref_positions, positions], dim=2)
        timesteps = torch.cat([torch.zeros(b, n), timesteps], dim=1)
        if loss_mask is not None:
            loss_mask = torch.cat([torch.zeros(b, n, dtype=torch.bool), loss_mask], dim=1)
    context = batch.video_context if name == "video" else batch.audio_context
    modality = Modality(latent=noisy, sigma=sigmas, timesteps=timesteps, positions=positions, context=context,
                        context_mask=batch.context_mask)
    return modality, targets, loss_mask, sigmas, draws


def official_modality_loss(pred, targets, loss_mask):
    """FlexibleStrategy._compute_modality_loss: [B]."""
    target_len = targets.shape[1]
    pred, mask = pred[:, -target_len:, :], loss_mask[:, -target_len:]
    m = mask.unsqueeze(-1).float()
    return ((pred - targets).pow(2) * m).mean(dim=[-2, -1]) / m.mean(dim=[-2, -1]).clamp(min=1e-8)


def official_step(m, batch: LatentBatch, task: TaskConfig, seed: int):
    """The official loss (sum of the modalities' [B] losses, batch mean) with its inputs and draws."""
    streams = random_streams(torch.Generator().manual_seed(seed))
    video = audio = None
    if task.video.present:
        video = official_modality(task.video, "video", batch, streams)
    if task.audio.present:
        shared = video[3] if task.sigma == "shared" and task.video.generated else None  # text_to_video strategy
        audio = official_modality(task.audio, "audio", batch, streams, sigma=shared)
    vp, ap = m(video=video[0] if video else None, audio=audio[0] if audio else None, perturbations=None)
    total = None
    for pred, part in ((vp, video), (ap, audio)):
        if pred is not None and part is not None and part[1] is not None:
            loss = official_modality_loss(pred, part[1], part[2])
            total = loss if total is None else total + loss
    return total.mean(), video, audio


# -- the cases ----------------------------------------------------------------------------------------------------


def _task(video="generated", audio="generated", v=(), a=(), sigma="independent") -> TaskConfig:
    return TaskConfig(video=ModalityTask(role=video, conditions=list(v)),
                      audio=ModalityTask(role=audio, conditions=list(a)), sigma=sigma)


CASES = {
    "t2av_independent_sigma": resolve_task("t2av"),
    "shared_sigma": _task(sigma="shared"),
    "first_frame": _task(v=[FirstFrameCondition(probability=0.6)]),
    "video_prefix_audio_suffix": _task(v=[PrefixCondition(frames=2, probability=0.6)],
                                       a=[SuffixCondition(frames=3, probability=0.6)]),
    "video_suffix_audio_prefix": _task(v=[SuffixCondition(frames=1, probability=0.6)],
                                       a=[PrefixCondition(frames=2, probability=0.6)]),
    "spatial_crop": _task(audio="off", v=[SpatialCropCondition(box=(32, 0, 128, 64), probability=0.6)]),
    "mask_video_and_audio": _task(v=[MaskCondition(probability=0.6)], a=[MaskCondition(probability=0.6)]),
    "first_frame_and_suffix": _task(v=[FirstFrameCondition(probability=0.5), SuffixCondition(frames=1)]),
    "reference_video_downscaled": _task(v=[ReferenceCondition(downscale=2, temporal_scale=2),
                                           FirstFrameCondition(probability=0.6)]),
    "reference_audio": resolve_task("a2a_ic"),
    "reference_video_and_audio": _task(v=[ReferenceCondition(downscale=2, temporal_scale=2)],
                                       a=[ReferenceCondition(), PrefixCondition(frames=2, probability=0.35)]),
    "a2v_condition_audio": resolve_task("a2v"),
    "v2a_condition_video": resolve_task("v2a"),
    "t2a_video_off": resolve_task("t2a"),
    "t2v_audio_off": resolve_task("t2v"),
    "audio_extend_video_off": resolve_task("audio_extend").model_copy(
        update={"audio": ModalityTask(conditions=[PrefixCondition(frames=3, probability=0.35)])}),
}
SEEDS = (0,)


def _ours(m, batch, task, seed):
    inputs = prepare_inputs(batch, SigmaSampler(), torch.Generator().manual_seed(seed), task=task,
                            dtype=torch.float32)
    return compute_loss(*predict_velocity(m, inputs.video, inputs.audio), inputs).total, inputs


def _grads(m, loss):
    m.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("case", list(CASES))
def test_loss_and_lora_gradients_equal_the_official_formulas(model, case):
    m, t = model
    task = CASES[case]
    batch = make_batch(t)
    draws = []
    for seed in SEEDS:
        ours, inputs = _ours(m, batch, task, seed)
        ref, video, audio = official_step(m, batch, task, seed)
        # The transformer's inputs, the loss and every LoRA gradient: the same to the last bit.
        for got, want in ((inputs.video, video), (inputs.audio, audio)):
            assert (got is None) == (want is None)
            if got is None:
                continue
            mod = want[0]
            for field in ("latent", "sigma", "timesteps", "positions"):
                assert torch.equal(getattr(got, field), getattr(mod, field)), (seed, field)
            draws.append(want[4])
        for got_mask, want in ((inputs.video_loss_mask, video), (inputs.audio_loss_mask, audio)):
            if want is not None and want[2] is not None:
                assert torch.equal(got_mask, want[2][:, -got_mask.shape[1]:])
        ours_grads, ref_grads = _grads(m, ours), _grads(m, ref)
        assert torch.equal(ours, ref), (seed, ours.item(), ref.item())
        assert ours_grads.keys() == ref_grads.keys() and ours_grads
        for n in ref_grads:
            assert torch.equal(ours_grads[n], ref_grads[n]), (seed, n)
    # every per-sample condition of probability < 1 was applied to some samples and not to others, somewhere
    flat = [d for per_modality in draws for d in per_modality if isinstance(d, torch.Tensor)]
    if flat:
        every = torch.cat(flat)
        assert every.any() and not every.all()


def test_independent_sigma_is_shifted_by_each_modality_s_own_token_count():
    """At 960x544x49 (3,570 video tokens, 51 audio steps) the medians are 0.79 and 0.60 (ltx_lora.task)."""
    g = torch.Generator().manual_seed(0)
    video = SigmaSampler().sample(200_000, 3570, g, torch.device("cpu")).median().item()
    audio = SigmaSampler().sample(200_000, 51, g, torch.device("cpu")).median().item()
    assert abs(video - 0.79) < 0.01 and abs(audio - 0.60) < 0.01, (video, audio)


def test_every_draw_is_made_for_the_global_batch(model):
    """rows=(first, total): two processes holding rows 0 and 1..2 get exactly what one process gets for the batch
    of three: sigma, noise, per-sample conditions and the batch-wide reference draw."""
    _, t = model
    batch = make_batch(t)
    task = _task(v=[ReferenceCondition(downscale=2, temporal_scale=2, probability=0.5),
                    FirstFrameCondition(probability=0.5), MaskCondition(probability=0.5)],
                 a=[PrefixCondition(frames=2, probability=0.5)])

    def part(rows: slice) -> LatentBatch:
        return LatentBatch(**{k: v[rows] if isinstance(v, torch.Tensor) else v for k, v in batch.__dict__.items()})

    joined_some = skipped_some = False
    for seed in range(4):
        whole = prepare_inputs(batch, SigmaSampler(), torch.Generator().manual_seed(seed), task=task,
                               dtype=torch.float32)
        halves = [prepare_inputs(part(slice(a, b)), SigmaSampler(), torch.Generator().manual_seed(seed), task=task,
                                 dtype=torch.float32, rows=(a, 3)) for a, b in ((0, 1), (1, 3))]
        for name in ("video", "audio"):
            for field in ("latent", "timesteps", "positions", "sigma"):
                got = torch.cat([getattr(getattr(h, name), field) for h in halves])
                assert torch.equal(got, getattr(getattr(whole, name), field)), (seed, name, field)
            for field in ("target", "loss_mask"):
                got = torch.cat([getattr(h, f"{name}_{field}") for h in halves])
                assert torch.equal(got, getattr(whole, f"{name}_{field}")), (seed, name, field)
        joined = whole.video.latent.shape[1] > F * H * W
        joined_some, skipped_some = joined_some or joined, skipped_some or not joined
    assert joined_some and skipped_some  # the batch-wide reference draw went both ways over the seeds


def test_a_missing_mask_or_reference_is_refused_in_one_sentence(model):
    _, t = model
    batch = make_batch(t)
    batch.video_condition_mask = None
    with pytest.raises(UserError, match="video_mask"):
        prepare_inputs(batch, SigmaSampler(), torch.Generator().manual_seed(0), task=resolve_task("video_inpainting"),
                       dtype=torch.float32)
    batch.reference_audio = None
    with pytest.raises(UserError, match="reference_audio"):
        prepare_inputs(batch, SigmaSampler(), torch.Generator().manual_seed(0), task=resolve_task("a2a_ic"),
                       dtype=torch.float32)
