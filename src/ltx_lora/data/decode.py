"""Decode the part of a clip a bucket needs: F frames resized + centre-cropped to WxH, and the matching audio."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image

AUDIO_RATE = 16_000  # the LTX audio VAE's rate; decoding straight to it avoids a second resampling


@dataclass
class DecodedClip:
    frames: torch.Tensor  # [3, F, H, W] float in [-1, 1]
    fps: float
    audio: torch.Tensor | None  # [2, N] float at AUDIO_RATE covering exactly the frames' time span
    audio_rate: int = AUDIO_RATE


def _fit(img: Image.Image, width: int, height: int) -> Image.Image:
    """Scale to cover WxH, then crop the centre (keeps the aspect ratio, loses the edges)."""
    scale = max(width / img.width, height / img.height)
    w, h = max(width, round(img.width * scale)), max(height, round(img.height * scale))
    img = img.resize((w, h), Image.Resampling.BICUBIC)
    left, top = (w - width) // 2, (h - height) // 2
    return img.crop((left, top, left + width, top + height))


def _rotate(arr: np.ndarray, degrees: int) -> np.ndarray:
    # PyAV reports the display-matrix rotation counter-clockwise; np.rot90 with k>0 turns counter-clockwise too
    k = (round(degrees / 90) % 4)
    return np.ascontiguousarray(np.rot90(arr, k=k)) if k else arr


def read_image(path: Path, width: int, height: int) -> DecodedClip:
    img = Image.open(path).convert("RGB")
    arr = np.asarray(_fit(img, width, height), dtype=np.float32)
    frames = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(1) / 127.5 - 1.0
    return DecodedClip(frames=frames, fps=1.0, audio=None)


def read_clip(path: Path, width: int, height: int, num_frames: int, target_fps: float | None = None,
              start_s: float = 0.0, with_audio: bool = True) -> DecodedClip:
    """Frames start_s .. start_s + num_frames/fps, at the clip's own rate or resampled to `target_fps`."""
    import av

    with av.open(str(path)) as container:
        vstream = container.streams.video[0]
        rate = vstream.average_rate or vstream.guessed_rate or Fraction(24)
        src_fps = float(rate)
        fps = float(target_fps) if target_fps else src_fps
        wanted = [start_s + i / fps for i in range(num_frames)]  # the time of each output frame
        half = 0.5 / src_fps
        picked: list[np.ndarray | None] = [None] * num_frames
        slot, last_t = 0, None

        def shown(frame) -> np.ndarray:  # rotate, resize and crop only frames that are used
            upright = _rotate(frame.to_ndarray(format="rgb24"), int(getattr(frame, "rotation", 0) or 0))
            return np.asarray(_fit(Image.fromarray(upright), width, height))

        last_frame, last_arr = None, None
        for frame in container.decode(vstream):
            t = float(frame.pts * vstream.time_base) if frame.pts is not None else (last_t or 0.0) + 1 / src_fps
            # every output time before this frame shows the previous frame (nearest-previous resampling)
            while slot < num_frames and last_frame is not None and t > wanted[slot] + half:
                if last_arr is None:
                    last_arr = shown(last_frame)
                picked[slot] = last_arr
                slot += 1
            if slot >= num_frames:
                break
            last_t, last_frame, last_arr = t, frame, None
        # past the last frame: only within one frame period of the end (rounding of durations)
        while slot < num_frames and last_frame is not None and wanted[slot] < last_t + 1 / src_fps - 1e-6:
            picked[slot] = last_arr if last_arr is not None else shown(last_frame)
            last_arr = picked[slot]
            slot += 1
    if any(p is None for p in picked):
        got = sum(p is not None for p in picked)
        raise ValueError(f"clip gives {got} frames at {fps:g} fps, fewer than the {num_frames} its bucket needs")
    arr = np.stack(picked).astype(np.float32)  # [F, H, W, 3]
    frames = torch.from_numpy(arr).permute(3, 0, 1, 2) / 127.5 - 1.0
    audio = read_audio(path, start_s, num_frames / fps) if with_audio else None
    return DecodedClip(frames=frames, fps=fps, audio=audio)


def read_audio(path: Path, start_s: float, duration_s: float) -> torch.Tensor | None:
    """Stereo float waveform [2, round(duration*16k)] from start_s, or None without an audio track.

    Shorter tracks are padded with silence so audio and video always span the same time."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        astream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)
        chunks = []
        for frame in container.decode(astream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
    if not chunks:
        return None
    wave = torch.from_numpy(np.concatenate(chunks, axis=1).astype(np.float32))
    first = round(start_s * AUDIO_RATE)
    count = round(duration_s * AUDIO_RATE)
    wave = wave[:, first:first + count]
    if wave.shape[1] < count:
        wave = torch.nn.functional.pad(wave, (0, count - wave.shape[1]))
    return wave


def silence(duration_s: float) -> torch.Tensor:
    return torch.zeros(2, round(duration_s * AUDIO_RATE))
