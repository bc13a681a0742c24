"""Video and audio VAE encoding (ltx-core): pixels and waveforms to latents."""

from __future__ import annotations

import torch
from ltx_core.model.audio_vae.audio_vae import encode_audio as _encode_audio
from ltx_core.model.audio_vae.ops import AudioProcessor
from ltx_core.model.video_vae.tiling import SpatialTilingConfig, TemporalTilingConfig, TilingConfig
from ltx_core.types import Audio

# Encoding in tiles bounds memory for long or large clips; tiles overlap and are blended by ltx-core.
_TILING = TilingConfig(spatial_config=SpatialTilingConfig(tile_size_in_pixels=512, tile_overlap_in_pixels=64),
                       temporal_config=TemporalTilingConfig(tile_size_in_frames=64, tile_overlap_in_frames=24))


@torch.no_grad()
def encode_video(encoder, frames: torch.Tensor) -> torch.Tensor:
    """[B, 3, F, H, W] in [-1, 1] -> normalised latents [B, 128, 1+(F-1)/8, H/32, W/32]."""
    _, _, f, h, w = frames.shape
    if f > 64 or h > 512 or w > 512:
        return encoder.tiled_encode(frames, _TILING)
    p = next(encoder.parameters())
    return encoder(frames.to(device=p.device, dtype=p.dtype))


@torch.no_grad()
def encode_audio(encoder, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Waveform [B, C, N] at `sample_rate` -> latents [B, 8, T, 16] (resampled to the encoder's rate)."""
    channels = encoder.in_channels  # the LTX audio VAE takes stereo: mono is duplicated, extra channels averaged
    if waveform.shape[1] != channels:
        waveform = waveform.mean(1, keepdim=True).expand(-1, channels, -1)
    audio = Audio(waveform=waveform.float(), sampling_rate=sample_rate)
    if sample_rate != encoder.sample_rate:
        import torchaudio

        audio = Audio(waveform=torchaudio.functional.resample(audio.waveform, sample_rate, encoder.sample_rate),
                      sampling_rate=encoder.sample_rate)
    return _encode_audio(audio, encoder)


def log_mel(encoder, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Waveform [B, C, N] -> the log-mel spectrogram [B, C, T, mels] the audio encoder takes (ltx-core's
    AudioProcessor with the encoder's settings), with gradients allowed through what consumes it."""
    processor = AudioProcessor(target_sample_rate=encoder.sample_rate, mel_bins=encoder.mel_bins,
                               mel_hop_length=encoder.mel_hop_length, n_fft=encoder.n_fft).to(waveform.device)
    return processor.waveform_to_mel(Audio(waveform=waveform.float(), sampling_rate=sample_rate))
