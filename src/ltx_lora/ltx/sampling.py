"""Sampling LTX-2.3 as Lightricks' inference does it, with ltx-core's own parts: sigma schedule, noiser, guiders,
STG perturbations, Euler steps, first-frame conditioning, and the video / audio decoders.

The loop (ltx-pipelines' one-stage pipeline and the official trainer's validation, in our words):
- sigmas from `LTX2Scheduler().execute(steps)` (shifted for 4,096 tokens, stretched to end at 0.1, then 0); the
  fast preview uses Lightricks' 8-step distilled schedule instead;
- the initial video and audio states come from ltx-core's latent tools; Gaussian noise from one generator seeded
  with the sample's seed, video first, then audio (a given modality is not noised); conditions keep their tokens
  clean at timestep 0: latent frames at an index (a first frame, a prefix, a suffix: `VideoConditionByLatentIndex`,
  strength 1), masked tokens (outpainting, inpainting), references appended to the sequence with their own
  positions (IC-LoRA: `VideoConditionByReferenceLatent`; audio references on the audio grid); a given modality
  (the audio of a2v, the video of v2a) is clean, at sigma 0, for the whole sampling and never stepped, and its
  guidance is neutral, as the official trainer's validation samples them;
- every step runs the transformer as an x0 model (`X0Model`) for: the prompt; the negative prompt (CFG); the
  prompt with self-attention skipped in the STG blocks (STG); the prompt with the audio<->video cross-attention
  skipped (modality guidance); `MultiModalGuider` combines them per modality
  (cond + (cfg-1)(cond-neg) + stg(cond-perturbed) + (mod-1)(cond-isolated), then std rescale). The passes run
  as one batch of one forward (ltx-core's blocks take a perturbation per batch item), not one forward each as
  the pipelines do: the same result (tests/test_sampler.py, 1e-5 in fp32), one host-side pass through the 48
  blocks per step instead of up to 4;
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
from ltx_core.conditioning.types.reference_video_cond import VideoConditionByReferenceLatent
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
class LatentAt:
    """Given latents placed at a temporal index, clean: video [1, 128, n, H', W'] at latent frame `index` (a first
    frame, a prefix at 0, a suffix at F' - n); audio [1, 8, n, 16] at audio step `index`."""

    latent: torch.Tensor
    index: int = 0


@dataclass
class Masked:
    """A given latent of the whole sample's shape, kept where `mask` is 1: video mask [F', H', W'], audio [T]."""

    latent: torch.Tensor
    mask: torch.Tensor


@dataclass
class Reference:
    """IC-LoRA: latents appended to the sequence, clean, with their own positions; a video reference encoded at
    1/downscale of the size (positions scaled back up) and 1/temporal_scale of the frame groups."""

    latent: torch.Tensor
    downscale: int = 1
    temporal_scale: int = 1


Condition = LatentAt | Masked | Reference


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
    with_video: bool = True
    first_frame: torch.Tensor | None = None  # clean latent [1, 128, 1, H/32, W/32] of a reference image
    video_given: torch.Tensor | None = None  # v2a: the whole video [1, 128, F', H', W'], clean throughout
    audio_given: torch.Tensor | None = None  # a2v: the whole sound [1, 8, T, 16], clean throughout
    video_conditions: list[Condition] = field(default_factory=list)
    audio_conditions: list[Condition] = field(default_factory=list)

    def video_items(self) -> list[Condition]:
        first = [LatentAt(self.first_frame, 0)] if self.first_frame is not None else []
        return first + list(self.video_conditions)


def audio_steps(frames: int, fps: float) -> int:
    """Audio latent steps of a sample of `frames` video frames at `fps` (25 per second, as ltx-core sizes them)."""
    pixel = VideoPixelShape(batch=1, frames=frames, height=32, width=32, fps=fps)
    return AudioLatentShape.from_video_pixel_shape(pixel).frames


def _mask_or_none(mask: torch.Tensor) -> torch.Tensor | None:
    # After the connectors every position holds a real token or a learnable register, so the mask is all ones;
    # passing None (as the pipelines do) lets attention skip an all-zero bias.
    return None if bool(mask.bool().all()) else mask


def _modality(state: LatentState, prompt: Prompt, context: torch.Tensor, sigma: torch.Tensor) -> Modality:
    return Modality(latent=state.latent, sigma=sigma.view(1), timesteps=state.denoise_mask * sigma,
                    positions=state.positions, context=context, context_mask=_mask_or_none(prompt.mask))


def _given_state(tools, latent: torch.Tensor, device, dtype) -> LatentState:
    """A whole modality given (a2v's sound, v2a's video): its clean latent throughout, never denoised."""
    state = tools.create_initial_state(device=device, dtype=dtype, initial_latent=latent.to(device=device, dtype=dtype))
    return replace(state, denoise_mask=torch.zeros_like(state.denoise_mask))


def _video_state(req: SampleRequest, vtools, device, dtype) -> LatentState:
    if req.video_given is not None:
        return _given_state(vtools, req.video_given, device, dtype)
    state = vtools.create_initial_state(device=device, dtype=dtype)
    for item in req.video_items():
        latent = item.latent.to(device=device, dtype=dtype)
        if isinstance(item, LatentAt):
            state = VideoConditionByLatentIndex(latent=latent, strength=1.0, latent_idx=item.index).apply_to(state,
                                                                                                            vtools)
        elif isinstance(item, Masked):
            state = _keep_masked(state, vtools.patchifier.patchify(latent), item.mask.reshape(1, -1).to(device))
        else:
            before = state.positions.shape[2]
            state = VideoConditionByReferenceLatent(latent=latent, downscale_factor=item.downscale,
                                                    strength=1.0).apply_to(state, vtools)
            if item.temporal_scale != 1:
                state = _stretch_reference_time(state, before, item.temporal_scale, req.fps)
    return state


def _stretch_reference_time(state: LatentState, start: int, scale: int, fps: float) -> LatentState:
    """A reference with 1/scale of the frame groups sits on its own time spacing (fps / scale), shifted so that
    its last frame group ends with the target's, never before 0 (ltx-core 1.0.0's reference item predates the
    temporal scale; the official trainer and later ltx-core place it so)."""
    positions = state.positions.clone()
    t = positions[:, 0, start:].float() * scale - (scale - 1) / fps
    positions[:, 0, start:] = t.clamp(min=0).to(positions.dtype)
    return replace(state, positions=positions)


def _keep_masked(state: LatentState, tokens: torch.Tensor, mask: torch.Tensor) -> LatentState:
    """Tokens where `mask` [1, N] is 1 take the given tokens [1, N, D], clean and at timestep 0."""
    keep = (mask > 0.5).unsqueeze(-1)
    state = state.clone()
    n = tokens.shape[1]
    given = tokens.to(state.latent.dtype)
    state.latent[:, :n] = torch.where(keep, given, state.latent[:, :n])
    state.clean_latent[:, :n] = torch.where(keep, given, state.clean_latent[:, :n])
    state.denoise_mask[:, :n] = torch.where(keep, torch.zeros_like(state.denoise_mask[:, :n]),
                                            state.denoise_mask[:, :n])
    return state


def _audio_state(req: SampleRequest, atools, device, dtype) -> LatentState:
    if req.audio_given is not None:
        return _given_state(atools, req.audio_given, device, dtype)
    state = atools.create_initial_state(device=device, dtype=dtype)
    for item in req.audio_conditions:
        tokens = atools.patchifier.patchify(item.latent.to(device=device, dtype=dtype))
        if isinstance(item, LatentAt):
            tokens = tokens[:, :max(0, state.latent.shape[1] - item.index)]
            mask = torch.zeros(1, state.latent.shape[1], device=device)
            mask[:, item.index:item.index + tokens.shape[1]] = 1
            full = torch.zeros_like(state.latent)
            full[:, item.index:item.index + tokens.shape[1]] = tokens
            state = _keep_masked(state, full, mask)
        elif isinstance(item, Masked):
            state = _keep_masked(state, tokens, item.mask.reshape(1, -1).to(device))
        else:  # appended with positions of its own grid, as the official trainer's validation does
            positions = atools.patchifier.get_patch_grid_bounds(
                output_shape=AudioLatentShape.from_torch_shape(item.latent.shape), device=device)
            state = LatentState(
                latent=torch.cat([state.latent, torch.zeros_like(tokens)], dim=1),
                denoise_mask=torch.cat([state.denoise_mask, torch.zeros(*tokens.shape[:2], 1, device=device,
                                                                         dtype=state.denoise_mask.dtype)], dim=1),
                positions=torch.cat([state.positions, positions.to(state.positions.dtype)], dim=2),
                clean_latent=torch.cat([state.clean_latent, tokens], dim=1), attention_mask=None)
    return state


@torch.no_grad()
def sample_latents(transformer, req: SampleRequest, prompt: Prompt, negative: Prompt, *, device: torch.device,
                   dtype: torch.dtype, on_step: Callable[[int], None] | None = None, batched: bool = True
                   ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Denoise one sample; returns video latents [1, 128, F', H', W'] and audio latents [1, 8, T, 16] (None for a
    modality not sampled; a given modality comes back as given).

    `batched` (the default) runs a step's guidance passes as one batch of one forward; False runs them one at a
    time at batch 1, as ltx-pipelines does: a quarter of the activation memory (validation falls back to it when the
    batch runs out of GPU memory), the reference the batched sampler is tested against, and the bench's "before"
    line (4 passes at batch 1 took 1.14 s per step on an H100, bench/README.md)."""
    pixel = VideoPixelShape(batch=1, frames=req.frames, height=req.height, width=req.width, fps=req.fps)
    noiser = GaussianNoiser(generator=torch.Generator(device=device).manual_seed(req.seed))
    video = vtools = video_clean = None
    video_frozen = req.video_given is not None
    if req.with_video or video_frozen:
        vtools = VideoLatentTools(patchifier=VideoLatentPatchifier(patch_size=1),
                                  target_shape=VideoLatentShape.from_pixel_shape(shape=pixel), fps=req.fps)
        video = _video_state(req, vtools, device, dtype)
        video_clean = video.clean_latent
        if not video_frozen:
            video = noiser(video, noise_scale=1.0)
    audio = atools = audio_clean = None
    audio_frozen = req.audio_given is not None
    if req.with_audio or audio_frozen:
        shape = (AudioLatentShape.from_torch_shape(req.audio_given.shape) if audio_frozen
                 else AudioLatentShape.from_video_pixel_shape(pixel))
        atools = AudioLatentTools(patchifier=AudioPatchifier(patch_size=1), target_shape=shape)
        audio = _audio_state(req, atools, device, dtype)
        audio_clean = audio.clean_latent
        if not audio_frozen:
            audio = noiser(audio, noise_scale=1.0)

    # A given modality gets neutral guidance; cross-modal guidance needs the other modality present.
    v_params = Guidance().params() if video_frozen else _alone(req.video_guidance, audio is None).params()
    a_params = Guidance().params() if audio_frozen else _alone(req.audio_guidance, video is None).params()
    v_guide, a_guide = MultiModalGuider(v_params), MultiModalGuider(a_params)
    passes = guidance_passes(req, v_guide if video is not None else None, a_guide if audio is not None else None,
                             video_frozen=video_frozen)
    # One perturbation config for the whole sample: compiled blocks see the same object at every step.
    perturbations = BatchedPerturbationConfig([p.perturbation for p in passes])
    text = batched_text(passes, prompt, negative) if batched else None
    model = X0Model(transformer)
    sigmas = req.sigmas.to(device=device, dtype=torch.float32)
    stepper = EulerDiffusionStep()
    for i, sigma in enumerate(sigmas[:-1]):
        v = (_modality(video, prompt, prompt.video, sigma * (0 if video_frozen else 1))
             if video is not None else None)
        a = (_modality(audio, prompt, prompt.audio, sigma * (0 if audio_frozen else 1))
             if audio is not None else None)
        if batched:
            out = _batched_passes(model, passes, perturbations, v, a, text)
        else:
            out = _one_pass_at_a_time(model, passes, v, a, negative)
        if video is not None and not video_frozen:
            den_v = _keep_conditioned(v_guide.calculate(*(out.get(name, (0.0, 0.0))[0] for name in PASS_NAMES)),
                                      video.denoise_mask, video_clean)
            video = replace(video, latent=stepper.step(video.latent, den_v, sigmas, i))
        if audio is not None and not audio_frozen:
            den_a = _keep_conditioned(a_guide.calculate(*(out.get(name, (0.0, 0.0))[1] for name in PASS_NAMES)),
                                      audio.denoise_mask, audio_clean)
            audio = replace(audio, latent=stepper.step(audio.latent, den_a, sigmas, i))
        if on_step is not None:
            on_step(i + 1)
    video_latent = vtools.unpatchify(vtools.clear_conditioning(video)).latent if video is not None else None
    audio_latent = atools.unpatchify(atools.clear_conditioning(audio)).latent if audio is not None else None
    return video_latent, audio_latent


PASS_NAMES = ("cond", "negative", "perturbed", "isolated")  # MultiModalGuider.calculate's argument order


@dataclass(frozen=True)
class GuidancePass:
    """One transformer pass of a step: `name` in PASS_NAMES; the negative prompt's context or the prompt's; the
    attention it skips (ltx-core's per-sample PerturbationConfig: empty for cond and negative)."""

    name: str
    perturbation: PerturbationConfig

    @property
    def uses_negative(self) -> bool:
        return self.name == "negative"


def guidance_passes(req: SampleRequest, v_guide: MultiModalGuider | None, a_guide: MultiModalGuider | None, *,
                    video_frozen: bool) -> list[GuidancePass]:
    """The passes a step needs (None: the modality is not in the sample): always cond; negative for CFG; perturbed
    for STG (self-attention skipped in the STG blocks of each modality whose STG scale is not 0); isolated for
    modality guidance (both cross-attentions skipped in every block; needs both modalities)."""
    guides = [g for g in (v_guide, a_guide) if g is not None]
    passes = [GuidancePass("cond", PerturbationConfig([]))]
    if any(g.do_unconditional_generation() for g in guides):
        passes.append(GuidancePass("negative", PerturbationConfig([])))
    kinds = ([PerturbationType.SKIP_VIDEO_SELF_ATTN] if v_guide is not None and v_guide.do_perturbed_generation()
             else []) + ([PerturbationType.SKIP_AUDIO_SELF_ATTN]
                         if a_guide is not None and a_guide.do_perturbed_generation() else [])
    if kinds:
        blocks = list(req.video_guidance.stg_blocks if v_guide is not None and not video_frozen
                      else req.audio_guidance.stg_blocks)
        passes.append(GuidancePass("perturbed", PerturbationConfig([Perturbation(type=k, blocks=blocks)
                                                                     for k in kinds])))
    if v_guide is not None and a_guide is not None and any(g.do_isolated_modality_generation() for g in guides):
        passes.append(GuidancePass("isolated", PerturbationConfig([
            Perturbation(type=PerturbationType.SKIP_A2V_CROSS_ATTN, blocks=None),
            Perturbation(type=PerturbationType.SKIP_V2A_CROSS_ATTN, blocks=None)])))
    return passes


Denoised = tuple[torch.Tensor | None, torch.Tensor | None]


def _one_pass_at_a_time(model, passes: list[GuidancePass], v: Modality | None, a: Modality | None,
                        negative: Prompt) -> dict[str, Denoised]:
    out = {}
    for p in passes:
        pv, pa = v, a
        if p.uses_negative:
            mask = _mask_or_none(negative.mask)
            pv = replace(v, context=negative.video, context_mask=mask) if v is not None else None
            pa = replace(a, context=negative.audio, context_mask=mask) if a is not None else None
        perturbation = BatchedPerturbationConfig([p.perturbation]) if p.perturbation.perturbations else None
        out[p.name] = model(video=pv, audio=pa, perturbations=perturbation)
    return out


@dataclass
class BatchedText:
    """The text side of a batch of passes, the same at every step: each pass's context (the negative prompt's for
    CFG), padded to one length, and their mask (None when every token of every pass is kept)."""

    video: torch.Tensor | None
    audio: torch.Tensor | None
    mask: torch.Tensor | None


def batched_text(passes: list[GuidancePass], prompt: Prompt, negative: Prompt) -> BatchedText:
    """Contexts of different lengths are padded at the end with masked tokens (ltx-core turns a mask 0 into a
    -max bias: the padded keys get exactly zero attention weight)."""
    texts = [negative if p.uses_negative else prompt for p in passes]
    length = max(t.video.shape[1] for t in texts)

    def stack(contexts: list[torch.Tensor | None]) -> torch.Tensor | None:
        if any(c is None for c in contexts):
            return None
        return torch.cat([torch.nn.functional.pad(c, (0, 0, 0, length - c.shape[1])) for c in contexts])

    mask = torch.cat([torch.nn.functional.pad(t.mask.reshape(1, -1), (0, length - t.mask.shape[-1])) for t in texts])
    return BatchedText(stack([t.video for t in texts]), stack([t.audio for t in texts]), _mask_or_none(mask))


def _batched_passes(model, passes: list[GuidancePass], perturbations: BatchedPerturbationConfig,
                    v: Modality | None, a: Modality | None, text: BatchedText) -> dict[str, Denoised]:
    """Every pass of a step as one batch: the same latents, sigma and positions repeated, each item its own
    context and perturbation (ltx-core's blocks apply a BatchedPerturbationConfig per item: a skipped attention
    passes its value projection through, a skipped cross-attention adds nothing, as the single passes do)."""
    n = len(passes)
    bv = _repeat(v, n, text.video, text.mask) if v is not None else None
    ba = _repeat(a, n, text.audio, text.mask) if a is not None else None
    den_v, den_a = model(video=bv, audio=ba, perturbations=perturbations)
    return {p.name: (None if den_v is None else den_v[k:k + 1], None if den_a is None else den_a[k:k + 1])
            for k, p in enumerate(passes)}


def _repeat(m: Modality, n: int, context: torch.Tensor, mask: torch.Tensor | None) -> Modality:
    return replace(m, latent=m.latent.repeat(n, 1, 1), sigma=m.sigma.repeat(n), timesteps=m.timesteps.repeat(n, 1, 1),
                   positions=m.positions.repeat(n, *([1] * (m.positions.ndim - 1))), context=context,
                   context_mask=mask)


def _alone(guidance: Guidance, other_absent: bool) -> Guidance:
    """Without the other modality there is no cross-attention to isolate: modality guidance off."""
    return replace(guidance, modality=1.0) if other_absent else guidance


def _keep_conditioned(denoised: torch.Tensor, mask: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Tokens with denoise mask 0 (conditions, references) stay at their clean value."""
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
