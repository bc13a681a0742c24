"""Which clips can be trained on, and in which bucket: the one rule that `dataset scan` reports and `preprocess`
encodes, so the report a user reviewed is what gets trained.

A clip is *used* when it is readable, not a second copy, fits a bucket and has a caption. A clip that fits a
bucket but has no caption *needs a caption*: it stays in the dataset file (so `ltx-lora caption` can fill it in)
but is not trained on. Everything else is *skipped* with a reason in plain words.

A clip is paired with the files its row names (the official columns `audio`, `reference_video`,
`reference_audio`, `video_mask`, `audio_mask`): the ones the task reads must exist and fit the clip (aspect
ratio, frame rate, enough frames or seconds), and a task whose condition needs one (IC-LoRA references,
inpainting masks) skips a clip whose row has none. A reference video the task needs but the row does not name
is found by the official trainer's naming (its scripts/compute_reference.py writes `clip_reference.mp4` beside
`clip.mp4`), so a folder of such pairs scans without a dataset file. Without a task (`dataset scan` without
`--task`) every file a row names is checked.

Tasks without video (`task.video.role: off`) take sound: an audio file (wav, flac, mp3, ...) or a video
clip's sound; its length in frames at the clip's rate (audio files: `audio_fps`) picks a bucket's frame count,
and the bucket's frames / fps seconds are trained.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ltx_lora.bucket_spec import SPATIAL_FACTOR, TEMPORAL_FACTOR, Bucket, largest_frame_count
from ltx_lora.data.buckets import ClipShape, Placement, Skipped, assign_bucket, available_frames
from ltx_lora.data.probe import MediaInfo, probe
from ltx_lora.task import ReferenceCondition, TaskConfig

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
    paths: dict[str, Path] = field(default_factory=dict)  # the row's other media by column (absolute), if any


@dataclass
class Verdict:
    placement: Placement | None = None
    skip_group: str | None = None  # a short category ("duplicate", "too short", "no audio", ...)
    skip_reason: str | None = None
    has_caption: bool = False
    fps: float | None = None  # the rate the clip trains at (audio-only: the rate its length is counted in)
    sources: dict[str, Path] = field(default_factory=dict)  # what each cached tensor is made from, by role

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
                name: Callable[[Path], str] = str, task: TaskConfig | None = None,
                audio_fps: float = 24.0) -> list[Verdict]:
    """One verdict per clip, in order: listed twice, unreadable, duplicate content, no bucket, (no audio when
    `skip_without_audio`), a missing or mismatched paired file (see the module docstring) are skipped; the rest
    get a bucket, and are used when they have a caption. `task` None checks every paired file a row names.

    `name(path)` is how a duplicate's original is named in its reason.
    """
    verdicts = []
    first_by_hash: dict[str, Candidate] = {}
    seen_paths: set[Path] = set()
    sound_only = task is not None and not task.video.present
    for clip in clips:
        v = Verdict(has_caption=bool(clip.caption and clip.caption.strip()))
        verdicts.append(v)
        info = clip.info
        if clip.path in seen_paths:
            v.skip_group, v.skip_reason = "listed twice", "listed twice in the dataset file"
            continue
        seen_paths.add(clip.path)
        if sound_only:
            if not (info.usable or (info.kind == "audio" and info.audio is not None)):
                v.skip_group = "empty" if info.size_bytes == 0 else "unreadable"
                v.skip_reason = info.error or f"a {info.kind} file, not a sound or a video"
                continue
        elif not info.usable:
            v.skip_group = {"audio": "no video stream"}.get(info.kind or "", "empty" if info.size_bytes == 0
                                                             else "unreadable")
            v.skip_reason = info.error or f"a {info.kind} file, not a video or still"
            continue
        original = first_by_hash.setdefault(info.content_hash, clip)
        if original is not clip:
            v.skip_group, v.skip_reason = "duplicate", f"duplicate of {name(original.path)} (same content)"
            continue
        if sound_only:
            placed = _place_sound(clip, buckets, target_fps, allow_shorter, audio_fps)
            v.fps = target_fps or (info.fps if info.kind == "video" else None) or audio_fps
        else:
            placed = assign_bucket(ClipShape.from_info(info), buckets, target_fps=target_fps,
                                   allow_shorter=allow_shorter)
            v.fps = 1.0 if info.kind == "image" else (target_fps or info.fps)
        if isinstance(placed, Skipped):
            v.skip_group, v.skip_reason = placed.group, placed.reason
            continue
        audio_file = clip.paths.get("audio")
        if skip_without_audio and info.kind == "video" and info.audio is None and audio_file is None:
            v.skip_group, v.skip_reason = "no audio", "no audio track (data.missing_audio: skip)"
            continue
        if clip.loss_mask is not None and not sound_only:
            bad = loss_mask_problem(clip.loss_mask, info, placed, target_fps)
            if bad:
                v.skip_group, v.skip_reason = "bad loss mask", bad
                continue
        problem = _pair(clip, placed, v, task, target_fps)
        if problem:
            v.skip_group, v.skip_reason = problem
            continue
        v.placement = placed
    return verdicts


def _place_sound(clip: Candidate, buckets: Sequence[Bucket], target_fps: float | None, allow_shorter: bool,
                 audio_fps: float) -> Placement | Skipped:
    """A bucket for a sound (video-off tasks): the most frames its seconds fill at the clip's rate."""
    source = clip.paths.get("audio")
    audio = probe(source).audio if source is not None else clip.info.audio
    if audio is None or not audio.duration:
        return Skipped("no sound: a task without video trains on audio (an audio file or a clip's sound)", "no audio")
    fps = target_fps or (clip.info.fps if clip.info.kind == "video" else None) or audio_fps
    available = math.floor(audio.duration * fps + 1e-6)
    fitting = [b for b in buckets if 1 < b.frames <= available]
    shortened = False
    if not fitting and allow_shorter and largest_frame_count(available) > 1:
        longest = max(buckets, key=lambda b: b.frames)
        fitting, shortened = [Bucket(longest.width, longest.height, largest_frame_count(available))], True
    if not fitting:
        need = min((b.frames for b in buckets if b.frames > 1), default=0)
        return Skipped(f"{audio.duration:.2f} s of sound, {available} frames at {fps:g} fps; the shortest bucket "
                       f"needs {need}" if need else "every bucket has 1 frame: a sound needs a multi-frame bucket")
    bucket = max(fitting, key=lambda b: b.frames)  # the first listed among equals
    return Placement(bucket, (bucket.width, bucket.height), (0, 0), 1.0, available, shortened)


def reference_sibling(media: Path) -> Path:
    """Where the official trainer's compute_reference.py puts a clip's reference: `clip_reference.mp4` beside it."""
    return media.with_name(f"{media.stem}_reference{media.suffix}")


def reference_bucket(bucket: Bucket, cond: ReferenceCondition) -> Bucket:
    """The size and frame count a video reference is encoded at: the bucket's width and height / downscale, its
    frames (F - 1) / temporal_scale + 1 (the first frame, then every temporal_scale-th), as the official
    trainer's process_dataset.py makes them. ValueError (the reason) when the bucket cannot be scaled so."""
    d, t = cond.downscale, cond.temporal_scale
    if bucket.width % (d * SPATIAL_FACTOR) or bucket.height % (d * SPATIAL_FACTOR):
        raise ValueError(f"bucket {bucket} cannot hold a reference at 1/{d} size: its width and height / {d} "
                         f"must be multiples of {SPATIAL_FACTOR}; choose buckets that are multiples of "
                         f"{d * SPATIAL_FACTOR} or another downscale")
    if (bucket.frames - 1) % (t * TEMPORAL_FACTOR):
        raise ValueError(f"bucket {bucket} cannot hold a reference with temporal_scale {t}: frames - 1 must be a "
                         f"multiple of {t * TEMPORAL_FACTOR}")
    return Bucket(bucket.width // d, bucket.height // d, (bucket.frames - 1) // t + 1)


def reference_frame_indices(frames: int, temporal_scale: int) -> list[int]:
    """Which of the bucket's frames a reference keeps: the first (the VAE encodes it alone), then every
    temporal_scale-th from frame 1, so each latent frame of the reference spans temporal_scale of the target's."""
    return [0, *range(1, frames, temporal_scale)]


AUDIO_SHORT_TOLERANCE = 0.25  # seconds a paired sound may fall short of the span trained (padded with silence)


def _pair(clip: Candidate, placed: Placement, v: Verdict, task: TaskConfig | None,
          target_fps: float | None) -> tuple[str, str] | None:
    """Find and check the files the task reads beside the clip; fill `v.sources`. (group, reason) if one is
    missing or does not fit."""
    paths, info, bucket = clip.paths, clip.info, placed.bucket
    span = bucket.frames / v.fps if bucket.frames > 1 else 0.0  # seconds of sound trained
    ref_v = task.video.find("reference") if task else []
    ref_a = task.audio.find("reference") if task else []
    wants = {  # column -> whether the task reads it (None: no task, check when given)
        "reference_video": bool(ref_v) if task else None,
        "reference_audio": bool(ref_a) if task else None,
        "video_mask": bool(task.video.find("mask")) if task else None,
        "audio_mask": bool(task.audio.find("mask")) if task else None,
        "audio": task.audio.present if task else None,
    }
    for column, wanted in wants.items():
        given = paths.get(column)
        if wanted is False:
            continue
        if given is None and wanted and column == "reference_video" and reference_sibling(clip.path).is_file():
            given = reference_sibling(clip.path)
        if given is None and wanted and column == "reference_audio":
            given = paths.get("reference_video")  # without a reference sound: the reference video's sound
        if given is None:
            # the clip's own sound needs no column; a still has no sound to mask
            if wanted and column != "audio" and not (column == "audio_mask" and not span):
                what = {"reference_video": "a reference video", "reference_audio": "a reference sound",
                        "video_mask": "a video mask", "audio_mask": "an audio mask"}[column]
                beside = (f", nor {reference_sibling(clip.path).name} beside it" if column == "reference_video"
                          else "")
                return "no " + column.replace("_", " "), (f"no {column} in its row{beside}: the task needs {what} "
                                                          f"per clip (the {column} column)")
            continue
        if not given.is_file():
            return f"missing {column.replace('_', ' ')}", f"its {column} {given} does not exist"
        if column == "reference_video":
            bad = _reference_video_problem(given, info, bucket, v.fps, target_fps, ref_v[0] if ref_v else None)
        elif column == "video_mask":
            bad = loss_mask_problem(given, info, placed, target_fps, label=column)
        else:
            bad = _sound_problem(given, column, span)
        if bad:
            return f"bad {column.replace('_', ' ')}", bad
        v.sources[column] = given
    return None


def _reference_video_problem(ref: Path, clip: MediaInfo, bucket: Bucket, fps: float | None,
                             target_fps: float | None, cond: ReferenceCondition | None) -> str | None:
    info = probe(ref)
    if not info.usable:
        return f"its reference_video {ref.name} is not a readable video or image ({info.error or info.kind})"
    shape, own = ClipShape.from_info(info), ClipShape.from_info(clip)
    if abs(math.log((shape.width / shape.height) / (own.width / own.height))) > MASK_ASPECT_TOLERANCE:
        return (f"its reference_video {ref.name} is {shape.width}x{shape.height}, not the clip's aspect ratio "
                f"({own.width}x{own.height}): the pair would be cropped differently")
    if cond is not None:
        try:
            reference_bucket(bucket, cond)
        except ValueError as e:
            return str(e)
    if own.is_still:
        return None
    if shape.is_still:
        return f"its reference_video {ref.name} is a still, the clip a video; give a video of the clip's length"
    if target_fps is None and own.fps and shape.fps and abs(shape.fps / own.fps - 1) > 0.01:
        return (f"its reference_video {ref.name} runs at {shape.fps:.3g} fps, the clip at {own.fps:.3g} fps: the "
                "frames would not line up; give the reference the clip's rate (or set data.target_fps)")
    have = available_frames(shape, target_fps)
    if have < bucket.frames:
        return (f"its reference_video {ref.name} gives {have} frames at {fps:g} fps, fewer than the "
                f"{bucket.frames} the clip trains on; give a reference as long as the clip")
    return None


def _sound_problem(path: Path, column: str, span: float) -> str | None:
    if path.suffix.lower() == ".pt":
        return (f"its {column} {path.name} is a .pt file (a pickle, which ltx-lora never loads); give it as a "
                "sound file (wav, flac)")
    info = probe(path)
    if info.audio is None:
        return f"its {column} {path.name} has no sound ({info.error or 'no audio stream'})"
    if info.audio.duration is not None and info.audio.duration < span - AUDIO_SHORT_TOLERANCE:
        return (f"its {column} {path.name} is {info.audio.duration:.2f} s long, shorter than the {span:.2f} s the "
                "clip trains on; give one as long as the clip")
    return None


MASK_ASPECT_TOLERANCE = 0.01  # a mask may differ from its clip in size, not in shape: the same crop must apply


def loss_mask_problem(mask: Path, clip: MediaInfo, placed: Placement, target_fps: float | None,
                      label: str = "loss_mask") -> str | None:
    """Why the clip's loss mask (or video_mask: `label`) cannot apply to it (missing, unreadable, another aspect
    ratio, too few frames at the clip's rate), or None when it fits."""
    if not mask.is_file():
        return f"its {label} {mask} does not exist"
    info = probe(mask)
    if not info.usable or info.kind not in ("video", "image"):
        return f"its {label} {mask.name} is not a readable video or image ({info.error or info.kind})"
    shape, own = ClipShape.from_info(info), ClipShape.from_info(clip)
    if abs(math.log((shape.width / shape.height) / (own.width / own.height))) > MASK_ASPECT_TOLERANCE:
        return (f"its {label} {mask.name} is {shape.width}x{shape.height}, not the clip's aspect ratio "
                f"({own.width}x{own.height}); make the mask the clip's size")
    if not shape.is_still:
        rate = target_fps or own.fps or shape.fps
        have = available_frames(shape, rate)
        if have < placed.bucket.frames:
            return (f"its {label} {mask.name} gives {have} frames at {rate:g} fps, fewer than the "
                    f"{placed.bucket.frames} the clip trains on; use a mask as long as the clip, or an image")
    return None
