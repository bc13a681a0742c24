"""Which clips can be trained on, and in which bucket: the one rule that `dataset scan` reports and `preprocess`
encodes, so the report a user reviewed is what gets trained.

A clip is *used* when it is readable, not a second copy, fits a bucket and has a caption. A clip that fits a
bucket but has no caption *needs a caption*: it stays in the dataset file (so `ltx-lora caption` can fill it in)
but is not trained on. Everything else is *skipped* with a reason in plain words.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ltx_lora.bucket_spec import Bucket
from ltx_lora.data.buckets import ClipShape, Placement, Skipped, assign_bucket, available_frames
from ltx_lora.data.probe import MediaInfo, probe

USED, NEEDS_CAPTION, SKIPPED = "used", "needs caption", "skipped"
CAPTION_FIX = "run `ltx-lora caption` on the folder or dataset file, or add a side-car .txt named like the clip"
NO_CAPTION = f"no caption ({CAPTION_FIX})"


def sidecar_caption(media: Path) -> str | None:
    """The caption in `clip.txt` beside `clip.mp4`, whitespace-trimmed; None when there is none or it is empty."""
    txt = Path(media).with_suffix(".txt")
    if not txt.is_file():
        return None
    text = txt.read_text(encoding="utf-8-sig", errors="replace").strip()
    return text or None


def row_caption(caption: str | None, media: Path) -> tuple[str | None, str | None]:
    """(caption, where it came from) for a dataset row: its caption column, else the side-car .txt, else none."""
    if caption and caption.strip():
        return caption, "dataset file"
    side = sidecar_caption(media)
    return (side, "side-car .txt") if side else (None, None)


@dataclass
class Candidate:
    path: Path  # absolute
    info: MediaInfo
    caption: str | None
    loss_mask: Path | None = None  # absolute path of the row's `loss_mask`, if it has one


@dataclass
class Verdict:
    placement: Placement | None = None
    skip_group: str | None = None  # a short category ("duplicate", "too short", "no audio", ...)
    skip_reason: str | None = None
    has_caption: bool = False

    @property
    def status(self) -> str:
        if self.skip_reason is not None or self.placement is None:
            return SKIPPED
        return USED if self.has_caption else NEEDS_CAPTION

    @property
    def bucket(self) -> Bucket | None:
        return self.placement.bucket if self.placement else None


def judge_clips(clips: Sequence[Candidate], buckets: Sequence[Bucket], *, target_fps: float | None = None,
                allow_shorter: bool = True, skip_without_audio: bool = False,
                name: Callable[[Path], str] = str) -> list[Verdict]:
    """One verdict per clip, in order: listed twice, unreadable, duplicate content, no bucket, (no audio when
    `skip_without_audio`) are skipped; the rest get a bucket, and are used when they have a caption.

    `name(path)` is how a duplicate's original is named in its reason.
    """
    verdicts = []
    first_by_hash: dict[str, Candidate] = {}
    seen_paths: set[Path] = set()
    for clip in clips:
        v = Verdict(has_caption=bool(clip.caption and clip.caption.strip()))
        verdicts.append(v)
        info = clip.info
        if clip.path in seen_paths:
            v.skip_group, v.skip_reason = "listed twice", "listed twice in the dataset file"
            continue
        seen_paths.add(clip.path)
        if not info.usable:
            empty = info.size_bytes == 0 and (info.error or "").startswith("empty")  # not a pipe, not a bad name
            v.skip_group = {"audio": "no video stream"}.get(info.kind or "", "empty" if empty else "unreadable")
            v.skip_reason = info.error or f"a {info.kind} file, not a video or still"
            continue
        original = first_by_hash.setdefault(info.content_hash, clip)
        if original is not clip:
            v.skip_group, v.skip_reason = "duplicate", f"duplicate of {name(original.path)} (same content)"
            continue
        placed = assign_bucket(ClipShape.from_info(info), buckets, target_fps=target_fps, allow_shorter=allow_shorter)
        if isinstance(placed, Skipped):
            v.skip_group, v.skip_reason = placed.group, placed.reason
            continue
        if skip_without_audio and info.kind == "video" and info.audio is None:
            v.skip_group, v.skip_reason = "no audio", "no audio track (data.missing_audio: skip)"
            continue
        if clip.loss_mask is not None:
            bad = loss_mask_problem(clip.loss_mask, info, placed, target_fps)
            if bad:
                v.skip_group, v.skip_reason = "bad loss mask", bad
                continue
        v.placement = placed
    return verdicts


MASK_ASPECT_TOLERANCE = 0.01  # a mask may differ from its clip in size, not in shape: the same crop must apply


def loss_mask_problem(mask: Path, clip: MediaInfo, placed: Placement, target_fps: float | None) -> str | None:
    """Why the clip's loss mask cannot weight it (missing, unreadable, another aspect ratio, too few frames at the
    clip's rate), or None when it fits."""
    if not mask.is_file():
        return f"its loss_mask {mask} does not exist"
    info = probe(mask)
    if not info.usable or info.kind not in ("video", "image"):
        return f"its loss_mask {mask.name} is not a readable video or image ({info.error or info.kind})"
    shape, own = ClipShape.from_info(info), ClipShape.from_info(clip)
    if abs(math.log((shape.width / shape.height) / (own.width / own.height))) > MASK_ASPECT_TOLERANCE:
        return (f"its loss_mask {mask.name} is {shape.width}x{shape.height}, not the clip's aspect ratio "
                f"({own.width}x{own.height}); make the mask the clip's size")
    if not shape.is_still:
        rate = target_fps or own.fps or shape.fps
        have = available_frames(shape, rate)
        if have < placed.bucket.frames:
            return (f"its loss_mask {mask.name} gives {have} frames at {rate:g} fps, fewer than the "
                    f"{placed.bucket.frames} the clip trains on; use a mask as long as the clip, or an image")
    return None
