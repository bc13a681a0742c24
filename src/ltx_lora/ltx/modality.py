"""Token layout, positions and the transformer call, as ltx-core defines them for LTX-2.x."""

from __future__ import annotations

import torch
from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier, get_pixel_coords
from ltx_core.model.transformer.modality import Modality
from ltx_core.types import AudioLatentShape, SpatioTemporalScaleFactors, VideoLatentShape

__all__ = ["Modality", "patchify_video", "patchify_audio", "video_positions", "audio_positions",
           "predict_velocity", "AUDIO_LATENT_CHANNELS", "AUDIO_MEL_BINS", "VIDEO_SCALE"]

AUDIO_LATENT_CHANNELS = 8
AUDIO_MEL_BINS = 16
VIDEO_SCALE = SpatioTemporalScaleFactors.default()  # pixels per latent cell: time 8, height 32, width 32
_VIDEO = VideoLatentPatchifier(patch_size=1)
_AUDIO = AudioPatchifier(patch_size=1)


def patchify_video(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, F, H, W] -> [B, F*H*W, C] (frame-major, so the first frame is the first H*W tokens)."""
    return _VIDEO.patchify(latents)


def patchify_audio(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, T, M] -> [B, T, C*M]."""
    return _AUDIO.patchify(latents)


def video_positions(frames: int, height: int, width: int, batch: int, fps: float,
                    device: torch.device | str) -> torch.Tensor:
    """Pixel-space positions [B, 3, T, 2] of latent tokens, time axis in seconds (hence fps)."""
    shape = VideoLatentShape(frames=frames, height=height, width=width, batch=batch, channels=128)
    coords = get_pixel_coords(latent_coords=_VIDEO.get_patch_grid_bounds(output_shape=shape, device=device),
                              scale_factors=SpatioTemporalScaleFactors.default(), causal_fix=True).float()
    coords[:, 0, ...] = coords[:, 0, ...] / fps
    return coords


def audio_positions(frames: int, batch: int, device: torch.device | str) -> torch.Tensor:
    """Positions [B, 1, T, 2] of audio latent frames, in seconds."""
    shape = AudioLatentShape(frames=frames, mel_bins=AUDIO_MEL_BINS, batch=batch, channels=AUDIO_LATENT_CHANNELS)
    return _AUDIO.get_patch_grid_bounds(output_shape=shape, device=device)


def predict_velocity(transformer, video: Modality | None, audio: Modality | None):
    """One transformer forward: the velocity prediction for each modality given. ltx-core's LTXModel takes either
    as None (that modality is not in the sequence; its prediction comes back None)."""
    return transformer(video=video, audio=audio, perturbations=None)
