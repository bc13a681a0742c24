"""The training objective: the official trainer's `flexible` strategy (ltx-trainer 1.2.0), for every `TaskConfig`.

Rectified flow with a velocity target: x_t = (1 - sigma) x0 + sigma noise, the transformer predicts v = noise - x0.
Per modality (`task.video`, `task.audio`, see ltx_lora.task):

- `generated`: noised with the modality's own sigma, in the loss. `condition`: clean latents, sigma 0, timestep 0,
  no loss, still in the sequence (the audio of audio-to-video). `off`: not passed to the transformer at all
  (ltx-core's LTXModel takes `video=None` / `audio=None`).
- Sigma: by default each generated modality draws its own, from the shifted logit-normal shifted by *its own*
  token count, as the official `timestep_sampler.sample_for(latents)` does per modality; audio's few tokens give a
  lower sigma (measured at 960x544x49: median 0.79 for video, 0.60 for audio, correlation about 0). `sigma: shared`
  gives audio the video's sigma (the older text_to_video strategy, and our trainer before the flexible recipe).
- Intrinsic conditions of a generated modality, in the order listed, each with its own per-sample Bernoulli draw
  (`probability`): the chosen tokens keep x0, get timestep 0 and leave the loss. first_frame = the first latent
  frame; prefix / suffix = the first / last `frames` latent frames (audio: latent steps); spatial_crop = the
  latent cells of a pixel box (each edge integer-divided by the VAE's 32, clamped to the grid, in every frame);
  mask = the per-clip condition mask thresholded at > 0.5 (1 = given clean).
- reference (IC-LoRA): one batch-wide draw (the sequence length changes, so the whole batch joins it or none);
  the reference's clean latents go in front of the modality's tokens, timestep 0, out of the loss. A video
  reference encoded at 1/downscale size and (frames - 1)/temporal_scale + 1 frames gets positions at fps /
  temporal_scale, shifted back by (temporal_scale - 1) target frames (clamped at 0) so that its last frame lines up
  with the target's, and its height / width positions multiplied by downscale: where the official places them.
- Loss per generated modality: the prediction's last T tokens (T = the modality's own tokens, the reference in
  front dropped), squared error masked by the loss mask, mean over tokens and channels divided by the mask's mean
  (the official `_compute_modality_loss`); the total is video + audio_loss_weight x audio per sample, then the
  batch mean.

Tested equal to the official formulas on identical inputs for every condition type (tests/test_flexible.py). Where
we differ: every draw comes from our own generator, split into one stream per purpose (video sigma, video noise,
audio sigma, ...) each seeded from it once per micro-batch; the official draws from the global torch RNG. So a
batch without audio, or with the reference skipped, leaves every other draw as it was, every process advances the
generator alike, and the generator's saved state resumes exactly.

Per-clip loss weights (the dataset file's `loss_weight`) multiply each sample's loss before the batch mean, and
the mean stays over the samples (not over the weights' sum): a weight means the same whatever else the batch
holds (2 = the clip counts twice, 0 = it adds no gradient), and weights of 1 are exactly the unweighted loss.
The per-sample losses returned for logging are unweighted.

Masked loss (a clip's `loss_mask` / `audio_loss_ranges`, see ltx_lora.data.loss_mask): the per-token squared
error is multiplied by the token's weight in [0, 1] (times 0 on conditioned tokens) and divided by the sum of the
weights, not by the token count. So a clip whose mask covers half the picture still trains at the full loss scale
on the half that counts, instead of at half the scale (which would act like a lower learning rate for masked clips
and mix badly with unmasked ones in a batch). A clip whose weights are all 0 gives loss 0. Without weights every
formula is exactly the official one above.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ltx_lora.errors import UserError
from ltx_lora.ltx.modality import (
    VIDEO_SCALE,
    Modality,
    audio_positions,
    patchify_audio,
    patchify_video,
    video_positions,
)
from ltx_lora.task import ModalityTask, ReferenceCondition, SpatialCropCondition, TaskConfig
from ltx_lora.train.timesteps import SigmaSampler


@dataclass
class LatentBatch:
    """One batch from the preprocessing cache (all items share a bucket). None = absent."""

    video: torch.Tensor | None  # [B, 128, F', H', W'] clean video latents (None when the task has video off)
    audio: torch.Tensor | None  # [B, 8, T, 16] clean audio latents
    video_context: torch.Tensor  # [B, L, D] text context after the frozen connectors
    audio_context: torch.Tensor | None  # [B, L, Da]
    context_mask: torch.Tensor | None  # [B, L] 0/1; None = every token kept
    fps: float
    loss_weight: torch.Tensor | None = None  # [B] per-clip loss weights; None = all 1
    video_loss_weight: torch.Tensor | None = None  # [B, F', H', W'] in [0, 1] (masked loss); None = all 1
    audio_loss_weight: torch.Tensor | None = None  # [B, T] in [0, 1]; None = all 1
    reference_video: torch.Tensor | None = None  # [B, 128, Fr, Hr, Wr] clean reference latents (IC-LoRA)
    reference_audio: torch.Tensor | None = None  # [B, 8, Tr, 16]
    video_condition_mask: torch.Tensor | None = None  # [B, F', H', W'] in [0, 1], > 0.5 = given clean (mask)
    audio_condition_mask: torch.Tensor | None = None  # [B, T]


@dataclass
class StepInputs:
    """What the transformer sees and what the loss compares with. Targets, loss masks and weights cover the
    modality's own tokens only (a reference joined in front is not among them)."""

    video: Modality | None  # None: video off
    audio: Modality | None
    video_target: torch.Tensor | None  # [B, T, C] velocity target; None unless video is generated
    audio_target: torch.Tensor | None
    video_loss_mask: torch.Tensor | None  # [B, T] bool, True where the loss counts
    audio_loss_mask: torch.Tensor | None
    video_sigma: torch.Tensor | None  # [B] (0 for a condition modality)
    audio_sigma: torch.Tensor | None
    video_loss_weight: torch.Tensor | None = None  # [B, T] float token weights (masked loss); None = all 1
    audio_loss_weight: torch.Tensor | None = None  # [B, Ta]


@dataclass
class LossParts:
    total: torch.Tensor  # scalar, what backward() sees
    video: torch.Tensor | None  # [B], None unless video is generated
    audio: torch.Tensor | None  # [B]


# One random stream per purpose, each seeded from the trainer's generator once per micro-batch (see the docstring).
_STREAMS = ("video_sigma", "video_noise", "video_conditions", "audio_sigma", "audio_noise", "audio_conditions")


def random_streams(generator: torch.Generator) -> dict[str, torch.Generator]:
    """Fresh generators for one micro-batch's draws; advances `generator` by exactly one draw whatever follows."""
    device = generator.device
    seeds = torch.randint(0, 2**62, (len(_STREAMS),), generator=generator, device=device).tolist()
    return {name: torch.Generator(device).manual_seed(seed) for name, seed in zip(_STREAMS, seeds)}


def temporal_mask(batch: int, tokens: int, frame_tokens: int, frames: int, from_end: bool,
                  device: torch.device) -> torch.Tensor:
    """[B, T] float: 1 on the first (or last) `frames` temporal units' tokens."""
    mask = torch.zeros(batch, tokens, device=device)
    n = min(frames * frame_tokens, tokens)
    if from_end:
        mask[:, tokens - n:] = 1.0
    else:
        mask[:, :n] = 1.0
    return mask


def spatial_crop_mask(batch: int, frames: int, height: int, width: int, box: tuple[int, int, int, int],
                      device: torch.device) -> torch.Tensor:
    """[B, T] float: 1 on the latent cells of a pixel box (top, left, bottom, right), in every latent frame; each
    edge integer-divided by the VAE's scale and clamped to the grid, as the official places it."""
    top, left, bottom, right = box
    rows = [max(0, min(v // VIDEO_SCALE.height, height)) for v in (top, bottom)]
    cols = [max(0, min(v // VIDEO_SCALE.width, width)) for v in (left, right)]
    cells = torch.zeros(height, width, device=device)
    cells[rows[0]:rows[1], cols[0]:cols[1]] = 1.0
    return cells.flatten().repeat(frames).unsqueeze(0).expand(batch, -1)


@dataclass
class _Tokens:
    """One modality laid out as tokens, before the transformer's Modality is built."""

    latent: torch.Tensor  # [B, T, C] float32: noised (or clean) latents
    timesteps: torch.Tensor  # [B, T]
    positions: torch.Tensor
    sigma: torch.Tensor  # [B]
    target: torch.Tensor | None
    loss_mask: torch.Tensor | None  # [B, T] bool


def _intrinsic_masks(spec: ModalityTask, batch: LatentBatch, name: str, shape: tuple[int, int, int, int],
                     total: int, mine: slice, stream: torch.Generator, device: torch.device) -> torch.Tensor | None:
    """[B, T] float in {0, 1}: the tokens the intrinsic conditions give clean this time (None: none)."""
    b, frames, height, width = shape  # audio: height = width = 1
    tokens = frames * height * width
    combined = None
    for cond in spec.conditions:
        if cond.type == "reference":
            continue
        chosen = (torch.rand(total, generator=stream, device=device) < cond.probability)[mine]
        if cond.type == "first_frame":
            mask = temporal_mask(b, tokens, height * width, 1, False, device)
        elif cond.type in ("prefix", "suffix"):
            mask = temporal_mask(b, tokens, height * width, cond.frames, cond.type == "suffix", device)
        elif isinstance(cond, SpatialCropCondition):
            mask = spatial_crop_mask(b, frames, height, width, cond.box, device)
        else:  # mask
            given = batch.video_condition_mask if name == "video" else batch.audio_condition_mask
            if given is None:
                raise UserError(f"task.{name} trains with a mask condition but this batch has no {name}_mask; "
                                f"give every clip a {name}_mask in the dataset file and run `ltx-lora preprocess`.")
            if name == "video":
                given = patchify_video(given.unsqueeze(1).float())[..., 0]
            mask = (given.reshape(b, tokens).float() > 0.5).float()
        mask = mask * chosen.view(-1, 1).to(mask.dtype)
        combined = mask if combined is None else torch.maximum(combined, mask)
    return combined


def _modality_tokens(spec: ModalityTask, batch: LatentBatch, name: str, sampler: SigmaSampler,
                     streams: dict[str, torch.Generator], rows: tuple[int, int],
                     shared_sigma: torch.Tensor | None) -> _Tokens:
    clean = batch.video if name == "video" else batch.audio
    b = clean.shape[0]
    device = clean.device
    first, total = rows
    mine = slice(first, first + b)
    if name == "video":
        _, _, frames, height, width = clean.shape
        x0 = patchify_video(clean).float()
        positions = video_positions(frames, height, width, b, batch.fps, device)
    else:
        frames, height, width = clean.shape[2], 1, 1
        x0 = patchify_audio(clean).float()
        positions = audio_positions(frames, b, device)
    tokens = x0.shape[1]
    if not spec.generated:  # a condition: clean, sigma 0, timestep 0, no loss
        zeros = torch.zeros(b, device=device)
        return _Tokens(x0, torch.zeros(b, tokens, device=device), positions, zeros, None, None)
    sigma = (shared_sigma if shared_sigma is not None
             else sampler.sample(total, tokens, streams[f"{name}_sigma"], device)[mine])
    noise = torch.randn((total, *x0.shape[1:]), generator=streams[f"{name}_noise"], device=device)[mine]
    s = sigma.view(-1, 1, 1)
    x_t = (1 - s) * x0 + s * noise
    timesteps = sigma.view(-1, 1).expand(b, tokens)
    loss_mask = torch.ones(b, tokens, dtype=torch.bool, device=device)
    given = _intrinsic_masks(spec, batch, name, (b, frames, height, width), total, mine,
                             streams[f"{name}_conditions"], device)
    if given is not None:
        keep = given.bool()
        x_t = torch.where(keep.unsqueeze(-1), x0, x_t)
        timesteps = torch.where(keep, torch.zeros_like(timesteps), timesteps)
        loss_mask = loss_mask & ~keep
    return _Tokens(x_t, timesteps, positions, sigma, noise - x0, loss_mask)


def _join_reference(tokens: _Tokens, cond: ReferenceCondition, batch: LatentBatch, name: str,
                    stream: torch.Generator) -> _Tokens:
    """IC-LoRA: the clean reference in front of the modality's tokens (one draw for the whole batch)."""
    device = tokens.latent.device
    if torch.rand((), generator=stream, device=device).item() >= cond.probability:
        return tokens
    ref = batch.reference_video if name == "video" else batch.reference_audio
    if ref is None:
        raise UserError(f"task.{name} joins a reference but this batch has no reference_{name}; give every clip a "
                        f"reference_{name} in the dataset file and run `ltx-lora preprocess` with this config.")
    b = ref.shape[0]
    if name == "video":
        _, _, frames, height, width = ref.shape
        ref_tokens = patchify_video(ref).float()
        positions = video_positions(frames, height, width, b, batch.fps / cond.temporal_scale, device)
        if cond.temporal_scale != 1:  # its last frame lines up with the target's; the first clamped at 0
            one_frame = tokens.positions[:, 0, 0:1, 1:2]  # the end of the target's first latent frame: 1 / fps
            positions[:, 0] = (positions[:, 0] - (cond.temporal_scale - 1) * one_frame).clamp(min=0)
        if cond.downscale != 1:
            positions[:, 1:3] = positions[:, 1:3] * cond.downscale
    else:
        ref_tokens = patchify_audio(ref).float()
        positions = audio_positions(ref_tokens.shape[1], b, device)
    n = ref_tokens.shape[1]
    return _Tokens(latent=torch.cat([ref_tokens, tokens.latent], dim=1),
                   timesteps=torch.cat([torch.zeros(b, n, device=device), tokens.timesteps], dim=1),
                   positions=torch.cat([positions.to(tokens.positions.dtype), tokens.positions], dim=2),
                   sigma=tokens.sigma, target=tokens.target, loss_mask=tokens.loss_mask)


def prepare_inputs(batch: LatentBatch, sampler: SigmaSampler, generator: torch.Generator, *, task: TaskConfig,
                   dtype: torch.dtype, rows: tuple[int, int] | None = None) -> StepInputs:
    """Noise the clean latents and lay them out as the transformer's two modalities, as `task` says.

    `rows=(first, total)`: this batch is rows first.. of a global batch of `total` samples spread over several
    processes. Every draw is made for the whole global batch and this batch keeps its rows, so each sample gets
    the same sigma, noise and conditions whatever the number of processes (and the generator advances alike on
    every rank).
    """
    streams = random_streams(generator)
    rows = rows or (0, batch.video_context.shape[0])
    laid: dict[str, _Tokens | None] = {"video": None, "audio": None}
    for name, spec in (("video", task.video), ("audio", task.audio)):
        clean = batch.video if name == "video" else batch.audio
        if not spec.present or clean is None:
            if name == "video" and spec.present:
                raise UserError("the task has video but this batch has no video latents; run `ltx-lora preprocess` "
                                "with this config.")
            continue  # audio absent from this batch (clips without sound): video alone, as the task allows
        shared = None  # sigma: shared gives audio the generated video's sigma
        if name == "audio" and task.sigma == "shared" and task.video.generated and laid["video"] is not None:
            shared = laid["video"].sigma
        laid[name] = _modality_tokens(spec, batch, name, sampler, streams, rows, shared)
    if not any(t is not None and t.target is not None for t in laid.values()):
        raise UserError("this batch has nothing to train: the task generates audio but its clips have no audio; "
                        "preprocess clips with sound for this task.")
    for name, spec in (("video", task.video), ("audio", task.audio)):
        for cond in spec.find("reference"):
            if laid[name] is not None:
                laid[name] = _join_reference(laid[name], cond, batch, name, streams[f"{name}_conditions"])

    def modality(t: _Tokens | None, context: torch.Tensor | None) -> Modality | None:
        if t is None:
            return None
        return Modality(latent=t.latent.to(dtype), sigma=t.sigma, timesteps=t.timesteps, positions=t.positions,
                        context=context, context_mask=batch.context_mask)

    v, a = laid["video"], laid["audio"]
    video_weight = audio_weight = None
    if v is not None and v.target is not None and batch.video_loss_weight is not None:  # frame-major, as the tokens
        video_weight = patchify_video(batch.video_loss_weight.unsqueeze(1).float())[..., 0]
    if a is not None and a.target is not None and batch.audio_loss_weight is not None:
        audio_weight = batch.audio_loss_weight.float()
    return StepInputs(video=modality(v, batch.video_context), audio=modality(a, batch.audio_context),
                      video_target=v.target if v else None, audio_target=a.target if a else None,
                      video_loss_mask=v.loss_mask if v else None, audio_loss_mask=a.loss_mask if a else None,
                      video_sigma=v.sigma if v else None, audio_sigma=a.sigma if a else None,
                      video_loss_weight=video_weight, audio_loss_weight=audio_weight)


def modality_loss(pred: torch.Tensor, target: torch.Tensor, loss_mask: torch.Tensor,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """[B] masked MSE of one modality over its own (last) tokens: the official `_compute_modality_loss`, with the
    masked-loss token weights multiplied into the mask."""
    pred = pred[:, pred.shape[1] - target.shape[1]:].float()
    w = loss_mask.float() if weight is None else loss_mask.float() * weight
    w = w.unsqueeze(-1)
    err = (pred - target).pow(2) * w
    return err.mean(dim=(1, 2)) / w.mean(dim=(1, 2)).clamp(min=1e-8)  # = sum(w * err) / (sum(w) * channels)


def compute_loss(video_pred: torch.Tensor | None, audio_pred: torch.Tensor | None, inputs: StepInputs,
                 audio_weight: float = 1.0, sample_weight: torch.Tensor | None = None) -> LossParts:
    """Per-sample losses in float32 and their weighted batch mean (`sample_weight` [B]: per-clip loss weights,
    multiplied in before the mean over the B samples; token weights of a masked loss inside each sample: see the
    module's docstring)."""
    video = audio = None
    if video_pred is not None and inputs.video_target is not None:
        video = modality_loss(video_pred, inputs.video_target, inputs.video_loss_mask, inputs.video_loss_weight)
    if audio_pred is not None and inputs.audio_target is not None:
        audio = modality_loss(audio_pred, inputs.audio_target, inputs.audio_loss_mask, inputs.audio_loss_weight)
    per_sample = video if audio is None else audio_weight * audio if video is None else video + audio_weight * audio
    if per_sample is None:
        raise ValueError("no generated modality was predicted")
    w = None if sample_weight is None else sample_weight.to(device=per_sample.device, dtype=torch.float32)
    total = (per_sample if w is None else per_sample * w).mean()
    return LossParts(total=total, video=None if video is None else video.detach(),
                     audio=None if audio is None else audio.detach())
