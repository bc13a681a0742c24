"""The training objective, as Lightricks trains LTX-2.3: rectified flow with a velocity target.

x_t = (1 - sigma) x0 + sigma noise; the transformer predicts v = noise - x0. With first-frame conditioning the
first latent frame's tokens keep x0, get timestep 0 and are left out of the loss. Audio shares the video's sigma
and is never conditioned. Video loss is the masked MSE normalised by the mask mean; audio loss is plain MSE.

Per-clip loss weights (the dataset file's `loss_weight`) multiply each sample's loss before the batch mean, and
the mean stays over the samples (not over the weights' sum): a weight means the same whatever else the batch
holds (2 = the clip counts twice, 0 = it adds no gradient), and weights of 1 are exactly the unweighted loss.
The per-sample losses returned for logging are unweighted.

Masked loss (a clip's `loss_mask` / `audio_loss_ranges`, see ltx_lora.data.loss_mask): the per-token squared
error is multiplied by the token's weight in [0, 1] (times 0 on conditioning tokens, as before) and divided by
the sum of the weights, not by the token count. So a clip whose mask covers half the picture still trains at the
full loss scale on the half that counts, instead of at half the scale (which would act like a lower learning rate
for masked clips and mix badly with unmasked ones in a batch). A clip whose weights are all 0 gives loss 0.
Without weights every formula is exactly the one above.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ltx_lora.ltx.modality import Modality, audio_positions, patchify_audio, patchify_video, video_positions
from ltx_lora.train.timesteps import SigmaSampler


@dataclass
class LatentBatch:
    """One batch from the preprocessing cache (all items share a bucket)."""

    video: torch.Tensor  # [B, 128, F', H', W'] clean video latents
    audio: torch.Tensor | None  # [B, 8, T, 16] clean audio latents, or None
    video_context: torch.Tensor  # [B, L, D] text context after the frozen connectors
    audio_context: torch.Tensor | None  # [B, L, Da]
    context_mask: torch.Tensor | None  # [B, L] 0/1; None = every token kept
    fps: float
    loss_weight: torch.Tensor | None = None  # [B] per-clip loss weights; None = all 1
    video_loss_weight: torch.Tensor | None = None  # [B, F', H', W'] in [0, 1] (masked loss); None = all 1
    audio_loss_weight: torch.Tensor | None = None  # [B, T] in [0, 1]; None = all 1


@dataclass
class StepInputs:
    video: Modality
    audio: Modality | None
    video_target: torch.Tensor
    audio_target: torch.Tensor | None
    video_loss_mask: torch.Tensor  # [B, T] bool, True where the loss counts
    sigma: torch.Tensor  # [B]
    video_loss_weight: torch.Tensor | None = None  # [B, T] float token weights (masked loss); None = all 1
    audio_loss_weight: torch.Tensor | None = None  # [B, Ta]


@dataclass
class LossParts:
    total: torch.Tensor  # scalar, what backward() sees
    video: torch.Tensor  # [B]
    audio: torch.Tensor | None  # [B]


def first_frame_mask(batch: int, tokens: int, frame_tokens: int, p: float, generator: torch.Generator,
                     device: torch.device) -> torch.Tensor:
    """[B, T] bool: True on the first latent frame's tokens of the samples drawn for conditioning (prob. p each)."""
    mask = torch.zeros(batch, tokens, dtype=torch.bool, device=device)
    draw = torch.rand(batch, generator=generator, device=device) < p
    if p > 0 and frame_tokens < tokens:
        mask[draw, :frame_tokens] = True
    return mask


def prepare_inputs(batch: LatentBatch, sampler: SigmaSampler, generator: torch.Generator, *,
                   train_audio: bool, first_frame_p: float, dtype: torch.dtype,
                   rows: tuple[int, int] | None = None) -> StepInputs:
    """Noise the clean latents and lay them out as the transformer's two modalities.

    `rows=(first, total)`: this batch is rows first.. of a global batch of `total` samples spread over several
    processes. Every draw is made for the whole global batch and this batch keeps its rows, so each sample gets
    the same sigma and noise whatever the number of processes (and the generator advances alike on every rank).
    """
    b, _, f, h, w = batch.video.shape
    device = batch.video.device
    first, total = rows or (0, b)
    mine = slice(first, first + b)
    x0 = patchify_video(batch.video).float()
    tokens = x0.shape[1]
    cond = first_frame_mask(total, tokens, h * w, first_frame_p, generator, device)[mine]
    sigma = sampler.sample(total, tokens, generator, device)[mine]
    noise = torch.randn((total, *x0.shape[1:]), generator=generator, device=device)[mine]
    s = sigma.view(-1, 1, 1)
    x_t = torch.where(cond.unsqueeze(-1), x0, (1 - s) * x0 + s * noise)
    timesteps = torch.where(cond, torch.zeros_like(x_t[..., 0]), sigma.view(-1, 1).expand(b, tokens))
    video = Modality(latent=x_t.to(dtype), sigma=sigma, timesteps=timesteps,
                     positions=video_positions(f, h, w, b, batch.fps, device),
                     context=batch.video_context, context_mask=batch.context_mask)
    audio = audio_target = audio_weight = None
    video_weight = None
    if batch.video_loss_weight is not None:  # laid out like the latents' tokens: frame-major
        video_weight = patchify_video(batch.video_loss_weight.unsqueeze(1).float())[..., 0]
    if train_audio and batch.audio is not None:
        a0 = patchify_audio(batch.audio).float()
        a_noise = torch.randn((total, *a0.shape[1:]), generator=generator, device=device)[mine]
        a_t = (1 - s) * a0 + s * a_noise
        audio = Modality(latent=a_t.to(dtype), sigma=sigma, timesteps=sigma.view(-1, 1).expand(b, a0.shape[1]),
                         positions=audio_positions(a0.shape[1], b, device),
                         context=batch.audio_context, context_mask=batch.context_mask)
        audio_target = a_noise - a0
        if batch.audio_loss_weight is not None:
            audio_weight = batch.audio_loss_weight.float()
    return StepInputs(video=video, audio=audio, video_target=noise - x0, audio_target=audio_target,
                      video_loss_mask=~cond, sigma=sigma, video_loss_weight=video_weight,
                      audio_loss_weight=audio_weight)


def compute_loss(video_pred: torch.Tensor, audio_pred: torch.Tensor | None, inputs: StepInputs,
                 audio_weight: float = 1.0, sample_weight: torch.Tensor | None = None) -> LossParts:
    """Per-sample losses in float32 and their weighted batch mean (`sample_weight` [B]: per-clip loss weights,
    multiplied in before the mean over the B samples; token weights of a masked loss inside each sample: see the
    module's docstring)."""
    mask = inputs.video_loss_mask.float()
    if inputs.video_loss_weight is not None:
        mask = mask * inputs.video_loss_weight
    mask = mask.unsqueeze(-1)
    err = (video_pred.float() - inputs.video_target).pow(2) * mask
    video = err.mean(dim=(1, 2)) / mask.mean(dim=(1, 2)).clamp(min=1e-8)  # = sum(w * err) / (sum(w) * channels)
    w = None if sample_weight is None else sample_weight.to(device=video.device, dtype=torch.float32)
    total = (video if w is None else video * w).mean()
    audio = None
    if audio_pred is not None and inputs.audio_target is not None:
        audio = (audio_pred.float() - inputs.audio_target).pow(2)
        if inputs.audio_loss_weight is not None:
            aw = inputs.audio_loss_weight.unsqueeze(-1)
            audio = (audio * aw).mean(dim=(1, 2)) / aw.mean(dim=(1, 2)).clamp(min=1e-8)
        else:
            audio = audio.mean(dim=(1, 2))
        total = total + audio_weight * (audio if w is None else audio * w).mean()
    return LossParts(total=total, video=video.detach(), audio=None if audio is None else audio.detach())
