"""What a validation sample becomes on disk: an mp4 with its sound (H.264 + AAC, through PyAV) a contact sheet
PNG (frames in a grid, the waveform under them) and a poster PNG (the first frame); a sound-only sample, a WAV and
a PNG of its waveform over its spectrogram. Files are written atomically (ltx_lora.files.atomic)."""

from __future__ import annotations

import io
import wave as wavefile
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ltx_lora.files.atomic import atomic_path, atomic_write

AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)


def write_mp4(path: Path, frames: torch.Tensor, fps: float, wave: torch.Tensor | None = None,
              sample_rate: int | None = None) -> Path:
    """uint8 frames [F, H, W, 3] (+ float waveform [C, N] in [-1, 1]) -> an mp4 browsers play (yuv420p, faststart)."""
    import av

    path = Path(path)
    f, h, w, _ = frames.shape
    rate = Fraction(fps).limit_denominator(1001)
    # libav writes the file itself (and seeks back for faststart), so it gets a temp path; the temp name keeps
    # the .mp4 extension in case a muxer looks at it.
    with atomic_path(path, suffix=path.suffix) as tmp:  # renamed into place after av has closed (finished) it
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out:
            video = out.add_stream("libx264", rate=rate)
            video.width, video.height, video.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
            video.options = {"crf": "18", "preset": "medium"}
            audio = None
            if wave is not None:
                if sample_rate not in AAC_RATES:
                    raise ValueError(f"AAC cannot store {sample_rate} Hz audio")
                audio = out.add_stream("aac", rate=sample_rate)
                audio.layout = "mono" if wave.shape[0] == 1 else "stereo"
                audio.bit_rate = 192_000
            arr = frames[:, : h - h % 2, : w - w % 2].contiguous().numpy()
            for i in range(f):
                frame = av.VideoFrame.from_ndarray(arr[i], format="rgb24")
                frame.pts = i
                out.mux(video.encode(frame))
            out.mux(video.encode(None))
            if audio is not None:
                pcm = wave[:2].float().clamp(-1, 1).contiguous().numpy()
                step = 1024 * 8
                for start in range(0, pcm.shape[1], step):
                    chunk = np.ascontiguousarray(pcm[:, start:start + step])
                    aframe = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=audio.layout.name)
                    aframe.sample_rate, aframe.pts, aframe.time_base = sample_rate, start, Fraction(1, sample_rate)
                    out.mux(audio.encode(aframe))
                out.mux(audio.encode(None))
    return path


def _waveform_strip(wave: torch.Tensor, width: int, height: int) -> Image.Image:
    """Peak envelope of the (mono-mixed) waveform, one column per pixel, with a red mark where it clips."""
    img = Image.new("RGB", (width, height), (24, 24, 28))
    draw = ImageDraw.Draw(img)
    mono = torch.nan_to_num(wave.float()).mean(0)
    n = mono.shape[0]
    mid = height // 2
    draw.line([(0, mid), (width, mid)], fill=(60, 60, 70))
    if n == 0:
        return img
    edges = torch.linspace(0, n, width + 1).long()
    for x in range(width):
        seg = mono[edges[x]:max(edges[x + 1], edges[x] + 1)]
        lo, hi = float(seg.min()), float(seg.max())
        colour = (230, 80, 80) if max(abs(lo), abs(hi)) >= 0.999 else (110, 200, 150)
        draw.line([(x, mid - hi * (mid - 1)), (x, mid - lo * (mid - 1))], fill=colour)
    return img


def write_poster(path: Path, frames: torch.Tensor) -> Path:
    """The first frame as a PNG: what the report's <video> shows before it plays."""
    png = io.BytesIO()
    Image.fromarray(frames[0].numpy()).save(png, format="PNG")
    return atomic_write(Path(path), png.getvalue())


def write_contact_sheet(path: Path, frames: torch.Tensor, wave: torch.Tensor | None = None, *, fps: float,
                        count: int = 8, columns: int = 4, tile_width: int = 240) -> Path:
    """Up to `count` evenly spaced frames in a grid, each labelled with its time, and the waveform under them."""
    path = Path(path)
    f, h, w, _ = frames.shape
    picks = sorted(set(np.linspace(0, f - 1, min(count, f)).round().astype(int).tolist()))
    tw = min(tile_width, w)
    th = max(1, round(h * tw / w))
    cols = min(columns, len(picks))
    rows = (len(picks) + cols - 1) // cols
    strip_h = 48 if wave is not None else 0
    sheet = Image.new("RGB", (cols * tw, rows * th + strip_h), (16, 16, 16))
    draw = ImageDraw.Draw(sheet)
    for k, i in enumerate(picks):
        tile = Image.fromarray(frames[i].numpy()).resize((tw, th), Image.Resampling.BILINEAR)
        x, y = (k % cols) * tw, (k // cols) * th
        sheet.paste(tile, (x, y))
        draw.text((x + 3, y + 2), f"{i / fps:.2f}s", fill=(255, 255, 0))
    if wave is not None:
        sheet.paste(_waveform_strip(wave, cols * tw, strip_h), (0, rows * th))
    png = io.BytesIO()
    sheet.save(png, format="PNG")
    return atomic_write(path, png.getvalue())


def write_wav(path: Path, wave: torch.Tensor, sample_rate: int) -> Path:
    """Float waveform [C, N] in [-1, 1] -> 16-bit PCM WAV (what every browser's <audio> plays)."""
    pcm = (torch.nan_to_num(wave.float()).clamp(-1, 1) * 32767).round().to(torch.int16)
    buf = io.BytesIO()
    with wavefile.open(buf, "wb") as w:
        w.setnchannels(pcm.shape[0])
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.T.contiguous().numpy().tobytes())
    return atomic_write(Path(path), buf.getvalue())


def _spectrogram(wave: torch.Tensor, sample_rate: int, width: int, height: int) -> Image.Image:
    """Log-magnitude STFT of the mono mix (0 Hz at the bottom, up to half the rate), scaled to width x height."""
    mono = torch.nan_to_num(wave.float()).mean(0)
    n_fft = 1024 if sample_rate >= 32000 else 512
    if mono.numel() < n_fft:
        mono = torch.nn.functional.pad(mono, (0, n_fft - mono.numel()))
    spec = torch.stft(mono, n_fft, hop_length=n_fft // 4, window=torch.hann_window(n_fft), return_complex=True)
    db = 20 * torch.log10(spec.abs() + 1e-6)
    db = (db - (db.max() - 80)).clamp(min=0) / 80  # an 80 dB range below the loudest bin
    img = (db.flip(0) * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(img).resize((width, height), Image.Resampling.BILINEAR).convert("RGB")


def write_audio_sheet(path: Path, wave: torch.Tensor, sample_rate: int, *, width: int = 480) -> Path:
    """A sound-only sample's picture: its waveform (peak envelope, clipping in red) over its spectrogram."""
    strip, spec_h = 64, 160
    sheet = Image.new("RGB", (width, strip + spec_h), (16, 16, 16))
    sheet.paste(_waveform_strip(wave, width, strip), (0, 0))
    sheet.paste(_spectrogram(wave, sample_rate, width, spec_h), (0, strip))
    ImageDraw.Draw(sheet).text((3, strip + 2), f"{wave.shape[-1] / sample_rate:.2f} s, {sample_rate} Hz",
                               fill=(255, 255, 0))
    png = io.BytesIO()
    sheet.save(png, format="PNG")
    return atomic_write(Path(path), png.getvalue())
