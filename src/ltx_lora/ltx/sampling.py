"""Sampling LTX-2.3 as Lightricks' inference does it, with ltx-core's own parts: sigma schedule, noiser, guiders,
STG perturbations, Euler steps, first-frame conditioning, and the video / audio decoders.

The loop (ltx-pipelines' one-stage pipeline and the official trainer's validation, in our words):
- sigmas from `LTX2Scheduler().execute(steps)` (shifted for 4,096 tokens, stretched to end at 0.1, then 0); the
  fast preview uses Lightricks' 8-step distilled schedule instead;
- the initial video and audio states come from ltx-core's latent tools; Gaussian noise from one generator seeded
  with the sample's seed, video first, then audio; a reference image replaces the first latent frame and keeps
  timestep 0 (`VideoConditionByLatentIndex`, strength 1);
- every step runs the transformer as an x0 model (`X0Model`) for: the prompt; the negative prompt (CFG); the
  prompt with self-attention skipped in the STG blocks (STG); the prompt with the audio<->video cross-attention
  skipped (modality guidance); `MultiModalGuider` combines them per modality
  (cond + (cfg-1)(cond-neg) + stg(cond-perturbed) + (mod-1)(cond-isolated), then std rescale);
- conditioned tokens are put back to their clean value, then one Euler step.
Passes whose scale makes them a no-op are not run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from ltx_core.components.diffusion_steps import EulerDiffusionStep
from ltx_core.components.guiders import MultiModalGuider, MultiModalGuiderParams
from ltx_core.components.noisers import GaussianNoiser
from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier
from ltx_core.components.schedulers import LTX2Scheduler
from ltx_core.conditioning.types.latent_cond import VideoConditionByLatentIndex
from ltx_core.guidance.perturbations import (
    BatchedPerturbationConfig,
    Perturbation,
    PerturbationConfig,
    PerturbationType,
)
from ltx_core.model.transformer.modality import Modality
from ltx_core.model.transformer.model import X0Model
from ltx_core.tools import AudioLatentTools, VideoLatentTools
from ltx_core.types import AudioLatentShape, LatentState, VideoLatentShape, VideoPixelShape

# Lightricks' sigma schedule for 8-step distilled sampling (ltx-pipelines, DISTILLED_SIGMA_VALUES).
DISTILLED_SIGMAS = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0)


def sigma_schedule(steps: int, distilled: bool = False) -> torch.Tensor:
    """steps + 1 sigmas from 1 to 0."""
    if distilled:
        return torch.tensor(DISTILLED_SIGMAS, dtype=torch.float32)
    return LTX2Scheduler().execute(steps=steps).float()


@dataclass(frozen=True)
class Guidance:
    """Guidance of one modality (ltx-core's MultiModalGuiderParams)."""

    cfg: float = 1.0
    stg: float = 0.0
    stg_blocks: list[int] = field(default_factory=list)
    rescale: float = 0.0
    modality: float = 1.0

    def params(self) -> MultiModalGuiderParams:
        return MultiModalGuiderParams(cfg_scale=self.cfg, stg_scale=self.stg, stg_blocks=list(self.stg_blocks),
                                      rescale_scale=self.rescale, modality_scale=self.modality)


@dataclass
class Prompt:
    """Text contexts after the connectors: [1, L, D] each, mask [1, L]."""

    video: torch.Tensor
    audio: torch.Tensor | None
    mask: torch.Tensor


@dataclass
class SampleRequest:
    width: int
    height: int
    frames: int
    fps: float
    seed: int
    sigmas: torch.Tensor
    video_guidance: Guidance
    audio_guidance: Guidance
    with_audio: bool = True
    first_frame: torch.Tensor | None = None  # clean latent [1, 128, 1, H/32, W/32] of a reference image


def _perturbation(*kinds: PerturbationType, blocks: list[int] | None) -> BatchedPerturbationConfig:
    return BatchedPerturbationConfig([PerturbationConfig([Perturbation(type=k, blocks=blocks) for k in kinds])])


def _mask_or_none(mask: torch.Tensor) -> torch.Tensor | None:
    # After the connectors every position holds a real token or a learnable register, so the mask is all ones;
    # passing None (as the pipelines do) lets attention skip an all-zero bias.
    return None if bool(mask.bool().all()) else mask


def _modality(state: LatentState, prompt: Prompt, context: torch.Tensor, sigma: torch.Tensor) -> Modality:
    return Modality(latent=state.latent, sigma=sigma.view(1), timesteps=state.denoise_mask * sigma,
                    positions=state.positions, context=context, context_mask=_mask_or_none(prompt.mask))


@torch.no_grad()
def sample_latents(transformer, req: SampleRequest, prompt: Prompt, negative: Prompt, *, device: torch.device,
                   dtype: torch.dtype, on_step: Callable[[int], None] | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Denoise one sample; returns video latents [1, 128, F', H', W'] and audio latents [1, 8, T, 16] (or None)."""
    pixel = VideoPixelShape(batch=1, frames=req.frames, height=req.height, width=req.width, fps=req.fps)
    vtools = VideoLatentTools(patchifier=VideoLatentPatchifier(patch_size=1),
                              target_shape=VideoLatentShape.from_pixel_shape(shape=pixel), fps=req.fps)
    video = vtools.create_initial_state(device=device, dtype=dtype)
    if req.first_frame is not None:
        cond = VideoConditionByLatentIndex(latent=req.first_frame.to(device=device, dtype=dtype), strength=1.0,
                                           latent_idx=0)
        video = cond.apply_to(video, vtools)
    video_clean = video.clean_latent
    noiser = GaussianNoiser(generator=torch.Generator(device=device).manual_seed(req.seed))
    video = noiser(video, noise_scale=1.0)
    audio = atools = audio_clean = None
    if req.with_audio:
        atools = AudioLatentTools(patchifier=AudioPatchifier(patch_size=1),
                                  target_shape=AudioLatentShape.from_video_pixel_shape(pixel))
        audio = noiser(atools.create_initial_state(device=device, dtype=dtype), noise_scale=1.0)
        audio_clean = audio.clean_latent

    v_guide = MultiModalGuider(req.video_guidance.params())
    a_guide = MultiModalGuider(req.audio_guidance.params())
    any_of = (lambda f: f(v_guide) or (audio is not None and f(a_guide)))
    need_neg = any_of(MultiModalGuider.do_unconditional_generation)
    need_stg = any_of(MultiModalGuider.do_perturbed_generation)
    need_mod = audio is not None and any_of(MultiModalGuider.do_isolated_modality_generation)
    stg_kinds = [PerturbationType.SKIP_VIDEO_SELF_ATTN] + ([PerturbationType.SKIP_AUDIO_SELF_ATTN] if audio else [])
    stg = _perturbation(*stg_kinds, blocks=list(req.video_guidance.stg_blocks)) if need_stg else None
    isolate = _perturbation(PerturbationType.SKIP_A2V_CROSS_ATTN, PerturbationType.SKIP_V2A_CROSS_ATTN,
                            blocks=None) if need_mod else None
    model = X0Model(transformer)
    sigmas = req.sigmas.to(device=device, dtype=torch.float32)
    stepper = EulerDiffusionStep()
    for i, sigma in enumerate(sigmas[:-1]):
        v = _modality(video, prompt, prompt.video, sigma)
        a = _modality(audio, prompt, prompt.audio, sigma) if audio is not None else None
        cond_v, cond_a = model(video=v, audio=a, perturbations=None)
        neg_v = neg_a = ptb_v = ptb_a = mod_v = mod_a = 0.0
        if need_neg:
            nv = replace(v, context=negative.video, context_mask=_mask_or_none(negative.mask))
            na = replace(a, context=negative.audio, context_mask=_mask_or_none(negative.mask)) if a is not None else None
            neg_v, neg_a = model(video=nv, audio=na, perturbations=None)
        if stg is not None:
            ptb_v, ptb_a = model(video=v, audio=a, perturbations=stg)
        if isolate is not None:
            mod_v, mod_a = model(video=v, audio=a, perturbations=isolate)
        den_v = v_guide.calculate(cond_v, neg_v, ptb_v, mod_v)
        den_v = _keep_conditioned(den_v, video.denoise_mask, video_clean)
        video = replace(video, latent=stepper.step(video.latent, den_v, sigmas, i))
        if audio is not None:
            den_a = _keep_conditioned(a_guide.calculate(cond_a, neg_a, ptb_a, mod_a), audio.denoise_mask, audio_clean)
            audio = replace(audio, latent=stepper.step(audio.latent, den_a, sigmas, i))
        if on_step is not None:
            on_step(i + 1)
    video_latent = vtools.unpatchify(vtools.clear_conditioning(video)).latent
    audio_latent = atools.unpatchify(atools.clear_conditioning(audio)).latent if audio is not None else None
    return video_latent, audio_latent


def _keep_conditioned(denoised: torch.Tensor, mask: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Tokens with denoise mask 0 (the reference frame) stay at their clean value."""
    return (denoised * mask + clean.float() * (1 - mask)).to(denoised.dtype)


# ---------------------------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def decode_video(decoder, latent: torch.Tensor, seed: int) -> torch.Tensor:
    """Video latents [1, 128, F', H', W'] -> uint8 frames [F, H, W, 3] (tiled above 512 px or 64 frames, with
    ltx-core's default tiles, as the pipelines decode)."""
    from ltx_core.model.video_vae import TilingConfig
    from ltx_core.model.video_vae import decode_video as _decode

    p = next(decoder.parameters())
    latent = latent.to(device=p.device, dtype=p.dtype)
    _, _, f, h, w = latent.shape
    tiling = TilingConfig.default() if (h * 32 > 512 or w * 32 > 512 or (f - 1) * 8 + 1 > 64) else None
    gen = torch.Generator(device=p.device).manual_seed(seed)
    return torch.cat([chunk.cpu() for chunk in _decode(latent, decoder, tiling, gen)], dim=0)


@torch.no_grad()
def decode_audio(audio_decoder, vocoder, latent: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Audio latents [1, 8, T, 16] -> (waveform [channels, samples] float32 on CPU, sample rate) via the audio VAE
    decoder and the vocoder (48 kHz stereo for LTX-2.3)."""
    from ltx_core.model.audio_vae.audio_vae import decode_audio as _decode

    p = next(audio_decoder.parameters())
    audio = _decode(latent.to(device=p.device, dtype=p.dtype), audio_decoder, vocoder)
    wave = audio.waveform.float().cpu()
    if wave.ndim == 1:
        wave = wave[None]
    return wave, int(audio.sampling_rate)


@torch.no_grad()
def encode_first_frame(encoder, image: torch.Tensor) -> torch.Tensor:
    """An image [3, 1, H, W] in [-1, 1] -> its clean latent [1, 128, 1, H/32, W/32]."""
    p = next(encoder.parameters())
    return encoder(image.unsqueeze(0).to(device=p.device, dtype=p.dtype)).float().cpu()
