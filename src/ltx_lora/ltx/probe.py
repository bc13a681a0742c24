"""Fixed random inputs for one transformer forward, to compare outputs (LoRA verify, interop tests)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ltx_lora.ltx.modality import (
    AUDIO_LATENT_CHANNELS,
    AUDIO_MEL_BINS,
    Modality,
    audio_positions,
    predict_velocity,
    video_positions,
)


@dataclass
class ProbeInputs:
    video: Modality
    audio: Modality


def probe_inputs(transformer_cfg: dict, device: torch.device | str, dtype: torch.dtype, seed: int = 0,
                 latent_frames: int = 2, latent_height: int = 2, latent_width: int = 3, audio_frames: int = 8,
                 text_tokens: int = 16, sigma: float = 0.6) -> ProbeInputs:
    """A noisy video + audio sample with text context, the same for the same arguments on any run."""
    g = torch.Generator("cpu").manual_seed(seed)
    t = transformer_cfg
    if t.get("caption_proj_before_connector"):  # LTX-2.3: the context arrives projected to each modality's width
        v_ctx, a_ctx = t["cross_attention_dim"], t["audio_cross_attention_dim"]
    else:  # LTX-2.0: the transformer projects the Gemma features itself
        v_ctx = a_ctx = t["caption_channels"]
    v_tokens = latent_frames * latent_height * latent_width
    s = torch.full((1,), sigma)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    mask = torch.ones(1, text_tokens, dtype=torch.int64, device=device)
    video = Modality(latent=rand(1, v_tokens, t["in_channels"]), sigma=s.to(device),
                     timesteps=torch.full((1, v_tokens), sigma, device=device),
                     positions=video_positions(latent_frames, latent_height, latent_width, 1, 24.0, device),
                     context=rand(1, text_tokens, v_ctx), context_mask=mask)
    audio = Modality(latent=rand(1, audio_frames, AUDIO_LATENT_CHANNELS * AUDIO_MEL_BINS), sigma=s.to(device),
                     timesteps=torch.full((1, audio_frames), sigma, device=device),
                     positions=audio_positions(audio_frames, 1, device), context=rand(1, text_tokens, a_ctx),
                     context_mask=mask)
    return ProbeInputs(video, audio)


@torch.no_grad()
def forward(transformer, inputs: ProbeInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """(video velocity, audio velocity) in float32."""
    v, a = predict_velocity(transformer, inputs.video, inputs.audio)
    return v.float(), a.float()
