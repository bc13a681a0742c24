"""Noise-level (sigma) sampling for rectified-flow training, as Lightricks trains LTX-2.x.

`shifted_logit_normal`: sigmoid(N(mu, 1)) with mu growing linearly with the token count (0.95 at 1,024 tokens,
2.05 at 4,096, extrapolated beyond), stretched so its 0.5th..99.9th percentiles span [0, 1], values below eps
reflected around eps, and with probability 0.1 a uniform draw instead (keeps every noise level trained at high
token counts). `uniform`: U(min_value, max_value), U(0, 1) by default. The parameters are the official sampler's
(flow_matching.timestep_sampling_params: std, eps, uniform_prob; min_value, max_value), with its defaults.
"""

from __future__ import annotations

import torch

from ltx_lora.config import TrainConfig

_Z_999 = 3.0902  # 99.9th percentile of the standard normal
_Z_005 = -2.5758  # 0.5th percentile


def logit_normal_shift(tokens: int, lo_tokens: int = 1024, hi_tokens: int = 4096,
                       lo_shift: float = 0.95, hi_shift: float = 2.05) -> float:
    slope = (hi_shift - lo_shift) / (hi_tokens - lo_tokens)
    return lo_shift + slope * (tokens - lo_tokens)


class SigmaSampler:
    def __init__(self, kind: str = "shifted_logit_normal", std: float = 1.0, eps: float = 1e-3,
                 uniform_prob: float = 0.1, min_value: float = 0.0, max_value: float = 1.0):
        if kind not in ("shifted_logit_normal", "uniform"):
            raise ValueError(f"unknown timestep sampling {kind!r}")
        self.kind, self.std, self.eps, self.uniform_prob = kind, std, eps, uniform_prob
        self.min_value, self.max_value = min_value, max_value

    @classmethod
    def build(cls, cfg: TrainConfig) -> SigmaSampler:
        """The sampler `train.timestep_sampling` and its parameters ask for."""
        return cls(cfg.timestep_sampling, **cfg.timestep_sampling_params.model_dump())

    def sample(self, batch: int, tokens: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """Sigmas [batch] in [0, 1]; every random draw comes from `generator` (exact resume)."""
        if self.kind == "uniform":  # the official expression: U(0, 1) exactly with the defaults
            return (torch.rand(batch, generator=generator, device=device) * (self.max_value - self.min_value)
                    + self.min_value)
        mu = logit_normal_shift(tokens)
        normal = torch.randn(batch, generator=generator, device=device) * self.std + mu
        # float32 tensors, as the official sampler computes them: the same sigma to the last bit
        lo = torch.sigmoid(torch.tensor(mu + _Z_005 * self.std, device=device))
        hi = torch.sigmoid(torch.tensor(mu + _Z_999 * self.std, device=device))
        stretched = (torch.sigmoid(normal) - lo) / (hi - lo)
        stretched = torch.where(stretched >= self.eps, stretched, 2 * self.eps - stretched).clamp(0, 1)
        uniform = (1 - self.eps) * torch.rand(batch, generator=generator, device=device) + self.eps
        pick_uniform = torch.rand(batch, generator=generator, device=device) <= self.uniform_prob
        return torch.where(pick_uniform, uniform, stretched)
