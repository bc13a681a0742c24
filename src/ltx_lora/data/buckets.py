"""Resolution buckets in use: put each clip in one, and plan batches that never mix them (the bucket spec itself,
WxHxF and its rules, is `ltx_lora.bucket_spec`).

Everything here is a pure function of its arguments (the batch planner takes a seed), so preprocessing and
training agree on the same assignment, and tests can check the rules directly.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from ltx_lora.bucket_spec import Bucket, batch_size_for, largest_frame_count


@dataclass(frozen=True)
class ClipShape:
    """What assignment needs to know about a clip: its displayed size, readable frames and rate."""

    width: int
    height: int
    frames: int
    fps: float | None = None
    is_still: bool = False

    @classmethod
    def from_info(cls, info) -> ClipShape:
        """From a `probe.MediaInfo` (duck-typed to keep this module free of media imports)."""
        still = info.kind == "image"
        return cls(int(info.width), int(info.height), 1 if still else int(info.frame_count or 0),
                   None if still else info.fps, still)


def available_frames(clip: ClipShape, target_fps: float | None = None) -> int:
    """Frames the clip can give at `target_fps` (its own rate when None): resampling changes the count."""
    if clip.is_still:
        return 1
    if target_fps is None or not clip.fps or clip.frames < 1:
        return clip.frames
    # The epsilon keeps exact ratios exact (48 frames at 24 fps -> 60 at 30 fps, not 59.999...).
    return max(1, math.floor(clip.frames * target_fps / clip.fps + 1e-6))


def source_frame_indices(count: int, fps: float | None, target_fps: float | None) -> list[int]:
    """Which source frames make the first `count` frames at `target_fps` (nearest earlier frame; repeats when
    the target rate is higher than the clip's)."""
    if target_fps is None or not fps:
        return list(range(count))
    return [math.floor(i * fps / target_fps + 1e-6) for i in range(count)]


@dataclass(frozen=True)
class Placement:
    """Where a clip goes and how it gets there: resize to `resized` (keeping aspect), crop the bucket-sized window
    at `crop` (centred), take the first `bucket.frames` frames at the target rate."""

    bucket: Bucket
    resized: tuple[int, int]  # (width, height) after the aspect-keeping resize
    crop: tuple[int, int]  # (x, y) of the window's top-left corner in the resized picture
    scale: float  # > 1 means the clip is upscaled
    frames_available: int
    shortened: bool  # the frame count was cut below every listed bucket's to fit a short clip

    @property
    def kept_area(self) -> float:
        """Fraction of the picture that survives the crop."""
        return self.bucket.width * self.bucket.height / (self.resized[0] * self.resized[1])

    @property
    def kept_time(self) -> float:
        """Fraction of the clip's frames (at the target rate) that are used."""
        return self.bucket.frames / self.frames_available if self.frames_available else 0.0


@dataclass(frozen=True)
class Skipped:
    reason: str
    group: str = "too short"  # or "unusable" (no size, no frames)


def resize_plan(width: int, height: int, bucket: Bucket) -> tuple[tuple[int, int], tuple[int, int], float]:
    """Scale so the picture covers the bucket (the smaller relative side fits), then centre the crop."""
    scale = max(bucket.width / width, bucket.height / height)
    rw = max(bucket.width, round(width * scale))
    rh = max(bucket.height, round(height * scale))
    return (rw, rh), ((rw - bucket.width) // 2, (rh - bucket.height) // 2), scale


def _aspect_distance(clip: ClipShape, bucket: Bucket) -> float:
    # Log scale: 2:1 and 1:2 are equally far from 1:1. Rounded so float noise cannot break ties.
    return round(abs(math.log(clip.width / clip.height) - math.log(bucket.aspect)), 9)


def assign_bucket(clip: ClipShape, buckets: Sequence[Bucket], *, target_fps: float | None = None,
                  allow_shorter: bool = True) -> Placement | Skipped:
    """Put a clip in the bucket that keeps most of it: the closest aspect ratio first (least cropped away),
    then the most frames, then a listed bucket over a shortened one, then the largest area, then the order given.

    A clip too short for every listed bucket (apart from 1-frame ones, which would turn a video into a still)
    gets, with `allow_shorter`, a listed size with the longest 8k+1 frame count it fills: a 15-frame clip and
    buckets "96x64x1;96x64x25" give 96x64x9. Without it, such a clip goes to a 1-frame bucket if there is one,
    else is skipped with the reason. Clips that fill a listed multi-frame bucket always get a listed bucket, so
    shortening never splits a dataset into many small buckets.
    """
    if not buckets:
        raise ValueError("assign_bucket needs at least one bucket")
    if clip.width < 1 or clip.height < 1:
        return Skipped("no picture size", "unusable")
    available = available_frames(clip, target_fps)
    if available < 1:
        return Skipped("no readable frames", "unusable")
    # (bucket, shortened, position in the list given)
    options = [(b, False, i) for i, b in enumerate(buckets) if b.frames <= available]
    only_stills = all(b.frames == 1 for b, _, _ in options)  # also True when nothing fits
    if allow_shorter and (not options or (only_stills and available > 1)):
        fill = largest_frame_count(available)
        options += [(Bucket(b.width, b.height, fill), True, i) for i, b in enumerate(buckets) if b.frames > available]
    if not options:
        shortest = min(b.frames for b in buckets)
        at = f" at {target_fps:g} fps" if target_fps and not clip.is_still else ""
        what = "a still image (1 frame)" if clip.is_still else f"only {available} frames{at}"
        return Skipped(f"{what}, and the shortest bucket needs {shortest}; add a shorter bucket or allow "
                       "shorter clips")
    bucket, shortened, _ = min(options, key=lambda o: (_aspect_distance(clip, o[0]), -o[0].frames, o[1],
                                                         -o[0].width * o[0].height, o[2]))
    resized, crop, scale = resize_plan(clip.width, clip.height, bucket)
    return Placement(bucket, resized, crop, scale, available, shortened)


@dataclass(frozen=True)
class Batch:
    bucket: Bucket
    items: tuple[int, ...]  # indices into the list given to `plan_batches`

    @property
    def tokens(self) -> int:
        return self.bucket.tokens * len(self.items)


def plan_batches(item_buckets: Sequence[Bucket], *, batch_size: int = 1, token_budget: int | None = None,
                 seed: int = 0, drop_last: bool = False) -> list[Batch]:
    """One epoch of batches. Item i is in bucket `item_buckets[i]`; a batch holds items of one bucket only.

    With a token budget each bucket gets its own batch size, so stills and long clips can share a run without
    forcing batch size 1. Items are shuffled within each bucket and the batches are shuffled, both from `seed`
    (pass seed + epoch for a new order each epoch). `drop_last` drops each bucket's incomplete last batch.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    by_bucket: dict[Bucket, list[int]] = defaultdict(list)
    for i, b in enumerate(item_buckets):
        by_bucket[b].append(i)
    rng = random.Random(seed)
    batches: list[Batch] = []
    for bucket in sorted(by_bucket):  # a fixed bucket order: the random stream is consumed the same way each run
        items = by_bucket[bucket]
        rng.shuffle(items)
        size = batch_size_for(bucket, batch_size=batch_size, token_budget=token_budget)
        for start in range(0, len(items), size):
            chunk = tuple(items[start : start + size])
            if drop_last and len(chunk) < size:
                continue
            batches.append(Batch(bucket, chunk))
    rng.shuffle(batches)
    return batches
