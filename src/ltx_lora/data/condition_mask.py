"""Condition masks (the `mask` condition, inpainting): which latent tokens are given clean, per clip.

A dataset row's `video_mask` (a grayscale video or image, white = given, black = generated) and `audio_mask` (a
sound whose loudness marks what is given) are reduced to the latent grid the way the official trainer's
`process_videos.py` (ltx-trainer 1.2.0, compute_video_masks / compute_audio_masks) reduces them, so a mask means
the same task here as there:

- video [F, H, W] pixels in [0, 1] -> [F', H/32, W/32]: the mean of each 32x32 cell; then the maximum over
  consecutive groups of 8 frames counted from frame 0 (any given frame makes the group given; the last group is
  padded with 0), the first F' groups kept; then thresholded at 0.5 (1 = given). Note the groups are 0-7, 8-15,
  ... and not the VAE's (0 alone, then 1-8, 9-16, ...): kept as the official trainer has it.
- audio [C, N] waveform -> [T]: the mean over channels of |sample|, resampled to the T audio latent steps by
  nearest sample (step i takes sample floor(i * N / T)), thresholded at 0.5.

Pixels reach the reduction through the clip's own resize/crop plan (`loss_mask.read_pixel_mask`), so a mask of
the clip's aspect ratio lands on the clip's pixels; the official trainer resizes the mask straight to the bucket,
which is the same when the clip has the bucket's aspect ratio. Sounds are read over the span the clip trains on.
Values are stored as 0.0 / 1.0 floats; the objective thresholds > 0.5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SPATIAL, TEMPORAL = 32, 8  # the LTX video VAE's compression
THRESHOLD = 0.5


def video_mask_to_latent(pixels: torch.Tensor, latent_frames: int) -> torch.Tensor:
    """[F, H, W] in [0, 1] -> [latent_frames, H/32, W/32] of 0.0 / 1.0 (see the module docstring)."""
    f, h, w = pixels.shape
    if h % SPATIAL or w % SPATIAL:
        raise ValueError(f"a video mask of {w}x{h} does not fit the latent grid (sides multiples of {SPATIAL})")
    cells = F.avg_pool2d(pixels.float().unsqueeze(1), SPATIAL).squeeze(1)  # [F, H', W']
    groups = -(-f // TEMPORAL)
    padded = F.pad(cells, (0, 0, 0, 0, 0, groups * TEMPORAL - f))
    grouped = padded.reshape(groups, TEMPORAL, *cells.shape[1:]).amax(dim=1)
    if groups < latent_frames:
        raise ValueError(f"a video mask of {f} frames gives {groups} latent frames, fewer than {latent_frames}")
    return (grouped[:latent_frames] > THRESHOLD).float()


def audio_mask_to_latent(waveform: torch.Tensor, steps: int) -> torch.Tensor:
    """[C, N] waveform -> [steps] of 0.0 / 1.0 (see the module docstring)."""
    envelope = waveform.float().abs().mean(dim=0)
    picked = F.interpolate(envelope.view(1, 1, -1), size=steps, mode="nearest").view(steps)
    return (picked > THRESHOLD).float()
