"""Health checks on every validation sample: what a person would see at once, measured.

- non-finite values in the latents or the waveform (NaN/inf anywhere in sampling);
- black or constant (flat) frames;
- pure noise: the share of the picture's energy in the finest detail (luma minus its 3x3 box blur, relative to
  the luma variance) is about 0.9 for white noise and well below 0.3 for real footage; a sample is noise when it
  is above 0.5, or far above the same prompt's step-0 sample (2.5x, and above 0.25);
- silent audio (RMS below -80 dBFS) or clipped audio (more than 0.5 % of samples at full scale).

A bad step-0 sample from an FP8 Dev base is explained, not alarmed on: the FP8 Dev checkpoint can give pure noise
before any training (LTX-2 issue #165); the later samples are what counts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

NOISE_ABSOLUTE = 0.5
NOISE_RELATIVE = 2.5
NOISE_RELATIVE_FLOOR = 0.25
BLACK_LUMA = 0.03  # mean luma in [0, 1]
FLAT_STD = 0.01  # luma std in [0, 1]
SILENT_RMS = 1e-4  # -80 dBFS
CLIP_LEVEL = 0.999
CLIP_SHARE = 0.005
FP8_STEP0_NOTE = ("This step-0 sample comes from the FP8 Dev base before any training: FP8 Dev checkpoints are known "
                  "to give pure noise here (LTX-2 issue #165). It does not mean training is broken; judge the LoRA "
                  "by the samples after training steps.")


@dataclass
class Health:
    status: str  # "ok", "bad", or "explained" (bad, but a known harmless cause)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _luma(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [F, H, W, 3] -> float luma [F, 1, H, W] in [0, 1] (BT.601)."""
    x = frames.float() / 255.0
    y = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
    return y.unsqueeze(1)


def video_metrics(frames: torch.Tensor) -> dict:
    """Per-sample picture measures of uint8 frames [F, H, W, 3]."""
    y = _luma(frames)
    mean = y.mean(dim=(1, 2, 3))
    std = y.std(dim=(1, 2, 3), unbiased=False)
    black = (mean < BLACK_LUMA) & ((y > 3 * BLACK_LUMA).float().mean(dim=(1, 2, 3)) < 0.01)
    flat = (std < FLAT_STD) & ~black
    detail = y - F.avg_pool2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    var = std.pow(2)
    textured = var > FLAT_STD ** 2
    hf = (detail.pow(2).mean(dim=(1, 2, 3))[textured] / var[textured]).mean().item() if textured.any() else 0.0
    return {"frames": int(frames.shape[0]), "black_frames": int(black.sum()), "flat_frames": int(flat.sum()),
            "high_frequency": round(hf, 4), "mean_luma": round(mean.mean().item(), 4)}


def audio_metrics(wave: torch.Tensor) -> dict:
    """Measures of a float waveform [channels, samples] (before any clamping)."""
    finite = wave[torch.isfinite(wave)]
    rms = finite.pow(2).mean().sqrt().item() if finite.numel() else 0.0
    clipped = (finite.abs() >= CLIP_LEVEL).float().mean().item() if finite.numel() else 0.0
    peak = finite.abs().max().item() if finite.numel() else 0.0
    db = 20 * torch.log10(torch.tensor(max(rms, 1e-12))).item()
    return {"rms_dbfs": round(db, 1), "peak": round(peak, 4), "clipped_share": round(clipped, 5)}


def check_sample(frames: torch.Tensor | None, wave: torch.Tensor | None, *, nonfinite: list[str],
                 step: int | None, baseline_hf: float | None = None, fp8_base: bool = False) -> Health:
    """Judge one decoded sample (frames None: a sound-only sample). `nonfinite` names the tensors (latents,
    waveform) that held NaN/inf; `baseline_hf` is the high-frequency share of the same prompt's step-0 sample."""
    problems: list[str] = []
    metrics: dict = {}
    if nonfinite:
        problems.append(f"NaN/inf values in the {' and '.join(nonfinite)} (shown as garbage in the sample).")
    if frames is not None:
        _check_picture(frames, problems, metrics, baseline_hf)
    if wave is not None:
        am = audio_metrics(wave)
        metrics["audio"] = am
        if am["rms_dbfs"] < 20 * torch.log10(torch.tensor(SILENT_RMS)).item():
            problems.append(f"the audio is silent ({am['rms_dbfs']:.0f} dBFS).")
        if am["clipped_share"] > CLIP_SHARE:
            problems.append(f"the audio clips: {am['clipped_share']:.1%} of samples at full scale.")
    if not problems:
        return Health("ok", metrics=metrics)
    if step == 0 and fp8_base:
        return Health("explained", problems, [FP8_STEP0_NOTE], metrics)
    return Health("bad", problems, [], metrics)


def _check_picture(frames: torch.Tensor, problems: list[str], metrics: dict, baseline_hf: float | None) -> None:
    vm = video_metrics(frames)
    metrics["video"] = vm
    n = vm["frames"]
    if vm["black_frames"] * 2 >= n:
        problems.append(f"{vm['black_frames']} of {n} frames are black.")
    if vm["flat_frames"] * 2 >= n:
        problems.append(f"{vm['flat_frames']} of {n} frames are one flat colour.")
    hf = vm["high_frequency"]
    if hf > NOISE_ABSOLUTE:
        problems.append(f"the picture is noise: {hf:.0%} of its energy is pixel-level detail (real footage stays "
                        f"well below {NOISE_RELATIVE_FLOOR:.0%}).")
    elif baseline_hf is not None and hf > max(NOISE_RELATIVE_FLOOR, NOISE_RELATIVE * baseline_hf):
        problems.append(f"the picture turned to noise: pixel-level detail is {hf:.0%} of its energy, "
                        f"{hf / max(baseline_hf, 1e-6):.1f}x the step-0 sample's {baseline_hf:.0%}.")
