"""Look at one media file and report what training needs to know about it, without ever raising.

`probe(path)` reads videos with PyAV and stills with Pillow. For videos it reads every packet (no decoding
beyond the first frame), so frame counts, durations and the constant/variable frame-rate verdict come from the
timestamps actually in the file, not from header claims that a cut or a re-mux can make wrong.

Anything odd goes into `MediaInfo.problems` as a short phrase in plain words; anything that makes the file
unusable as a training clip sets `MediaInfo.error` (and `kind` may be None).
"""

from __future__ import annotations

import hashlib
import os
import statistics
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv", ".flv",
                              ".ts", ".mts", ".3gp", ".gif"})
MEDIA_EXTENSIONS = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
# Sound files: the media of tasks without video (text-to-audio, audio IC-LoRA), and audio / reference_audio columns.
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac", ".opus"})

# Above this many pixels a frame is "large": slow to decode, and most of it is thrown away by the resize.
LARGE_PIXELS = 2560 * 1440
# Below this side length a clip must be upscaled for even the smallest (32 px) bucket side.
SMALL_SIDE = 32
# Frame intervals further than this from the median interval make a clip variable frame rate. Timestamps in
# whole milliseconds give 33/34 ms for 30 fps (3% jitter): that is still constant.
VFR_TOLERANCE = 0.10
# Audio and video lengths further apart than this (seconds) are reported.
AV_LENGTH_TOLERANCE = 0.25

_MIB = 1 << 20


@dataclass
class AudioInfo:
    sample_rate: int
    channels: int
    codec: str
    duration: float | None


@dataclass
class MediaInfo:
    """What `probe` found. Sizes are as displayed (after rotation); `coded_*` are as stored."""

    path: str
    size_bytes: int = 0
    content_hash: str | None = None
    kind: str | None = None  # "video", "image", or "audio" (a file with sound but no picture: not usable)
    container: str | None = None
    codec: str | None = None
    width: int | None = None
    height: int | None = None
    coded_width: int | None = None
    coded_height: int | None = None
    rotation: int = 0  # degrees counter-clockwise the stored picture is turned to display it (0, 90, 180, 270)
    pix_fmt: str | None = None
    bit_depth: int | None = None
    fps: float | None = None
    fps_mode: str | None = None  # "constant" or "variable" (from packet timestamps); None for stills
    frame_count: int | None = None  # frames that can actually be read
    duration: float | None = None  # seconds of readable video
    audio: AudioInfo | None = None
    problems: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def usable(self) -> bool:
        return self.error is None and self.kind in ("video", "image")

    def to_dict(self) -> dict:
        return asdict(self)


def content_hash(path: Path | str, size: int | None = None) -> str:
    """A fast fingerprint for finding duplicate files: sha256 of the file size (8 bytes, little-endian), the
    first MiB, 1 MiB from the middle and the last MiB (the whole file when it is at most 3 MiB).

    Reads at most 3 MiB however large the file. Byte-identical files always match; two different files match
    only if they have the same size and differ nowhere in the sampled windows, which real media does not do
    (encoders spread changes over the whole stream and mp4 indexes sit at one end).
    """
    size = os.path.getsize(path) if size is None else size
    h = hashlib.sha256(size.to_bytes(8, "little"))
    with open(path, "rb") as f:
        if size <= 3 * _MIB:
            h.update(f.read())
        else:
            for offset in (0, size // 2 - _MIB // 2, size - _MIB):
                f.seek(offset)
                h.update(f.read(_MIB))
    return h.hexdigest()


def readable_name(path: Path | str) -> bool:
    """Whether a path is valid UTF-8 text: Linux allows any bytes in a file name (Python keeps the others as
    surrogates), but JSON, CSV and HTML hold only text."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(path: Path | str) -> str:
    """A path as text to show, with any bytes that are not UTF-8 shown as U+FFFD."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def probe(path: Path | str) -> MediaInfo:
    """Probe one still or video file. Never raises: unreadable media comes back with `error` set."""
    path = Path(path)
    info = MediaInfo(path=str(path))
    try:
        if not readable_name(path):
            info.error = ("its file name is not valid UTF-8, so no dataset file or report can name it; rename it "
                          "(e.g. with `convmv -f latin1 -t utf8`)")
            return info
        if not path.is_file():
            info.error = ("a folder, not a media file" if path.is_dir() else
                          "not a regular file (a pipe, socket or device), so it is not read" if path.exists()
                          else "file not found")
            return info
        info.size_bytes = path.stat().st_size
        if info.size_bytes == 0:
            info.error = "empty file (0 bytes)"
            return info
        info.content_hash = content_hash(path, info.size_bytes)
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            _probe_image(path, info)
        else:
            _probe_video(path, info)
        if info.error is None:
            _size_problems(info)
    except Exception as e:  # noqa: BLE001 - a probe reports bad media, it must not stop a scan
        info.error = f"could not be read ({type(e).__name__}: {e})"
    return info


def _probe_image(path: Path, info: MediaInfo) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            info.container = (img.format or "").lower() or None
            info.pix_fmt = img.mode
            img.load()  # decodes the pixels: catches truncated and corrupt files, not just bad headers
            info.coded_width, info.coded_height = img.size
            orientation = img.getexif().get(0x0112, 1)  # EXIF Orientation
            frames = getattr(img, "n_frames", 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        info.error = f"cannot be read as an image ({e})"
        return
    info.kind, info.frame_count = "image", 1
    info.bit_depth = {"1": 1, "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}.get(info.pix_fmt, 8)
    # EXIF orientations 5-8 are the ones that turn the picture by 90 or 270 degrees.
    info.rotation = {3: 180, 6: 270, 8: 90, 5: 90, 7: 270}.get(orientation, 0)
    swap = info.rotation in (90, 270)
    info.width, info.height = (info.coded_height, info.coded_width) if swap else (info.coded_width, info.coded_height)
    if orientation != 1:
        info.problems.append(f"EXIF orientation {orientation}: stored as {info.coded_width}x{info.coded_height}, "
                             f"shown as {info.width}x{info.height}")
    if info.bit_depth > 8:
        info.problems.append(f"{info.bit_depth}-bit image ({info.pix_fmt}): reduced to 8 bits per channel")
    if frames > 1:
        info.problems.append(f"animated image with {frames} frames: only the first is used")


def _probe_video(path: Path, info: MediaInfo) -> None:
    import av

    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as e:
        info.error = _open_error(path, e)
        return
    with container:
        info.container = container.format.name
        vstreams, astreams = container.streams.video, container.streams.audio
        if not vstreams:
            if astreams:
                info.kind = "audio"
                info.audio = _audio_info(astreams[0], _audio_span(container, astreams[0]))
                info.duration = info.audio.duration
                info.error = "no video stream (audio only): it cannot be a video clip"
            else:
                info.error = "no video or audio stream"
            return
        vs = vstreams[0]
        astream = astreams[0] if astreams else None
        ctx = vs.codec_context
        info.kind, info.codec = "video", ctx.name
        info.coded_width, info.coded_height, info.pix_fmt = ctx.width, ctx.height, ctx.pix_fmt

        video_pts: list[int] = []
        audio_span: list[int] = []  # [first pts, end pts] of the readable audio
        corrupt = 0
        first_frame = None
        read_error = None
        try:
            for packet in container.demux(*(s for s in (vs, astream) if s is not None)):
                if packet.pts is None:
                    continue  # the flush packet at the end of each stream
                if packet.stream is vs:
                    video_pts.append(packet.pts)
                    corrupt += packet.is_corrupt
                    if first_frame is None:
                        # Decoding the first frame proves the stream decodes and yields the display rotation
                        # (the display-matrix side data rides on decoded frames).
                        for frame in packet.decode():
                            first_frame = frame
                            break
                else:
                    end = packet.pts + (packet.duration or 0)
                    audio_span = [min(audio_span[0], packet.pts), max(audio_span[1], end)] if audio_span \
                        else [packet.pts, end]
        except av.FFmpegError as e:
            read_error = str(e)
        if first_frame is None:
            first_frame = _flush_first_frame(vs)

        if not video_pts or first_frame is None:
            info.error = "the video stream has no decodable frames" + (f" ({read_error})" if read_error else "")
            return
        info.pix_fmt = first_frame.format.name
        info.bit_depth = _bit_depth(info.pix_fmt)
        info.rotation = round(first_frame.rotation or 0) % 360
        swap = info.rotation in (90, 270)
        info.width, info.height = (ctx.height, ctx.width) if swap else (ctx.width, ctx.height)

        _timing(info, vs, sorted(video_pts))
        declared = vs.frames or 0
        if read_error:
            info.problems.append(f"read error after {len(video_pts)} frames ({read_error})")
        if declared > info.frame_count:
            info.problems.append(f"truncated: only {info.frame_count} of {declared} frames can be read")
        if corrupt:
            info.problems.append(f"{corrupt} corrupt video packet{'s' if corrupt > 1 else ''}")
        if info.rotation:
            info.problems.append(f"rotated {info.rotation}°: stored as {ctx.width}x{ctx.height}, "
                                 f"shown as {info.width}x{info.height}")
        if info.bit_depth and info.bit_depth > 8:
            info.problems.append(f"{info.bit_depth}-bit video ({info.pix_fmt}): reduced to 8 bits when loaded")
        sar = vs.sample_aspect_ratio
        if sar and sar != 1:
            info.problems.append(f"non-square pixels (aspect {sar.numerator}:{sar.denominator}): the picture is "
                                 "used as stored, so it may look squeezed")

        if astream is None:
            info.problems.append("no audio track")
        else:
            tb = astream.time_base
            duration = float((audio_span[1] - audio_span[0]) * tb) if audio_span and tb else None
            info.audio = _audio_info(astream, duration)
            if info.audio.duration is not None and info.duration is not None:
                gap = info.duration - info.audio.duration
                if abs(gap) > AV_LENGTH_TOLERANCE:
                    word = "shorter" if gap > 0 else "longer"
                    info.problems.append(f"audio is {abs(gap):.2f} s {word} than the video")


def _timing(info: MediaInfo, vs, pts: list[int]) -> None:
    """Frame count, fps, constant/variable rate and duration from the sorted video packet timestamps."""
    tb = vs.time_base or Fraction(1, 1)
    info.frame_count = len(pts)
    gaps = [b - a for a, b in zip(pts, pts[1:], strict=False) if b > a]
    if not gaps:
        rate = vs.average_rate or vs.guessed_rate
        info.fps = float(rate) if rate else None
        info.fps_mode = "constant" if rate else None
        info.duration = float(1 / rate) if rate else None
        return
    median = statistics.median(gaps)
    # One tick of slack: a 1/1000 time base cannot hold 1/30 s exactly.
    worst = max(abs(g - median) for g in gaps)
    variable = worst > max(1, VFR_TOLERANCE * median)
    info.fps_mode = "variable" if variable else "constant"
    span = pts[-1] - pts[0]
    # Average rate for variable clips; for constant ones the exact rate of the median interval (24, 30000/1001).
    info.fps = float(len(gaps) / (span * tb)) if variable else float(1 / (median * tb))
    info.duration = float((span + median) * tb)
    if variable:
        lo, hi = min(gaps) * tb * 1000, max(gaps) * tb * 1000
        info.problems.append(f"variable frame rate (frames {float(lo):.0f} to {float(hi):.0f} ms apart, "
                             f"{info.fps:.1f} fps on average)")


def _audio_span(container, stream) -> float | None:
    """Seconds of readable sound in an audio-only file, from its packet timestamps (headers of cut files lie)."""
    import av

    span: list[int] = []
    try:
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            end = packet.pts + (packet.duration or 0)
            span = [min(span[0], packet.pts), max(span[1], end)] if span else [packet.pts, end]
    except av.FFmpegError:
        pass  # a damaged tail: what was read counts
    return float((span[1] - span[0]) * stream.time_base) if span and stream.time_base else None


def _flush_first_frame(vs):
    """Decoders with delay (B-frames, frame threads) hand out the first frame only when flushed."""
    try:
        for frame in vs.codec_context.decode(None):
            return frame
    except Exception:  # noqa: BLE001 - a stream that cannot flush has no frames for us
        return None
    return None


def _audio_info(stream, duration: float | None) -> AudioInfo:
    ctx = stream.codec_context
    if duration is None and stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    return AudioInfo(sample_rate=ctx.sample_rate, channels=ctx.layout.nb_channels, codec=ctx.name, duration=duration)


def _bit_depth(pix_fmt: str | None) -> int | None:
    import av

    try:
        return max(c.bits for c in av.VideoFormat(pix_fmt).components)
    except Exception:  # noqa: BLE001 - unknown or hardware formats: depth unknown, not an error
        return None


def _size_problems(info: MediaInfo) -> None:
    w, h = info.coded_width, info.coded_height
    if not w or not h:
        return
    if w % 2 or h % 2:
        info.problems.append(f"odd size {w}x{h}: many tools need even sizes, one edge line is cropped")
    if info.width * info.height > LARGE_PIXELS:
        info.problems.append(f"large resolution {info.width}x{info.height}: slow to decode, and heavily "
                             "downscaled to fit a bucket")
    if min(w, h) < SMALL_SIDE:
        info.problems.append(f"very small picture {w}x{h}: it will be upscaled")


def _open_error(path: Path, err: Exception) -> str:
    """Say why a file cannot be opened in words a user can act on."""
    with open(path, "rb") as f:
        head = f.read(12)
    if head[4:8] == b"ftyp":
        # An MP4/MOV whose index never got written (recording interrupted) or whose end was cut off.
        return "an MP4/MOV file whose index (moov) is missing or damaged: it was cut short or not finished " \
               "writing; re-export or re-download it"
    reason = getattr(err, "strerror", None) or str(err)
    return f"not a readable media file ({reason})"
