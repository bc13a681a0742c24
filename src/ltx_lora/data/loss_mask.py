"""Masked loss: per-clip weights on the training loss (musubi-tuner's LTX fork calls it masked loss).

A dataset row may name a `loss_mask`: a grayscale video or image (white = 1 = full weight, black = 0 = ignored;
an image weights every frame alike), and `audio_loss_ranges`: [[start_s, end_s], ...] seconds of the clip whose
audio counts (weight 0 elsewhere). This is not mask *conditioning*: nothing the model sees changes, only how much
each part of the prediction error counts.

Preprocessing decodes the mask with the clip's own resize/crop plan (`buckets.resize_plan`), so its pixels stay
on the clip's pixels, and average-pools it to the latent grid the way the VAE compresses: 32x32 pixels per latent
cell, the first frame alone, then 8 frames per latent frame. Audio ranges become one weight per audio latent step
(25 per second): the share of the step's time span inside a range.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ltx_lora.bucket_spec import Bucket
from ltx_lora.data.buckets import resize_plan
from ltx_lora.data.decode import read_clip
from ltx_lora.data.probe import IMAGE_EXTENSIONS

SPATIAL, TEMPORAL = 32, 8  # the LTX video VAE's compression
AUDIO_LATENTS_PER_SECOND = 25


def pixel_to_latent(mask: torch.Tensor) -> torch.Tensor:
    """[F, H, W] weights in [0, 1] -> [F', H/32, W/32]: the mean of each latent cell's pixels.

    F' = 1 + (F - 1) / 8: the first frame is a latent frame of its own, every following 8 frames make one. F must
    be 1 + 8k and H, W multiples of 32 (what every bucket is)."""
    f, h, w = mask.shape
    if (f - 1) % TEMPORAL or h % SPATIAL or w % SPATIAL:
        raise ValueError(f"a loss mask of {f} frames of {w}x{h} does not fit the latent grid "
                         f"(frames 1 + 8k, sides multiples of 32)")
    m = mask.float()
    first = m[:1]
    rest = m[1:].reshape((f - 1) // TEMPORAL, TEMPORAL, h, w).mean(dim=1) if f > 1 else m[:0]
    frames = torch.cat([first, rest])  # [F', H, W]
    return F.avg_pool2d(frames.unsqueeze(1), SPATIAL).squeeze(1)


def read_pixel_mask(path: Path, clip_width: int, clip_height: int, bucket: Bucket, fps: float) -> torch.Tensor:
    """The mask as the clip's pixels are trained: [F, H, W] in [0, 1] at the bucket's size and frame count.

    Resized like the clip (scaled to cover the bucket, centre crop; `resize_plan` of the clip's size), so a mask
    of the clip's own size, or of its aspect ratio, lands on the same pixels. Frames are taken at the clip's rate
    `fps` from the start, as the clip's are; an image is used for every frame."""
    (rw, rh), (left, top), _ = resize_plan(clip_width, clip_height, bucket)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        img = Image.open(path).convert("L").resize((rw, rh), Image.Resampling.BILINEAR)
        gray = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).unsqueeze(0)
        gray = gray.expand(bucket.frames, -1, -1)
    else:
        frames = read_clip(path, rw, rh, bucket.frames, fps, with_audio=False).frames  # [3, F, rh, rw] in [-1, 1]
        gray = ((frames + 1) / 2).mean(dim=0)
    return gray[:, top:top + bucket.height, left:left + bucket.width].clamp(0, 1).contiguous()


def audio_weights(ranges: list[list[float]], steps: int, per_second: float = AUDIO_LATENTS_PER_SECOND) -> torch.Tensor:
    """[steps] weights: the share of each audio latent step's span [i/25, (i+1)/25) s that lies inside a range."""
    w = torch.zeros(steps)
    for i in range(steps):
        a, b = i / per_second, (i + 1) / per_second
        inside = sum(max(0.0, min(b, end) - max(a, start)) for start, end in _merged(ranges))
        w[i] = min(1.0, inside * per_second)
    return w


def _merged(ranges: list[list[float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for start, end in sorted((float(s), float(e)) for s, e in ranges):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out
