"""The work of `ltx-lora dataset scan`: probe every clip, find captions, buckets and duplicates, decide what is used.

What is used and in which bucket is decided by `ltx_lora.data.usable.judge_clips`, the rule `preprocess` applies
too. Bad media never stops a scan: it becomes a skipped item with a reason in plain words. The result feeds both
the dataset file (the clips with a bucket: used ones and those that still need a caption) and the HTML report
(everything).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ltx_lora.bucket_spec import Bucket
from ltx_lora.data.buckets import Placement
from ltx_lora.data.dataset_file import (
    AUDIO,
    FORMATS,
    LOSS_MASK,
    PATH_COLUMNS,
    PROBE_COLUMNS,
    VIDEO,
    DatasetEntry,
    read_dataset,
    relative_media_path,
)
from ltx_lora.data.probe import AUDIO_EXTENSIONS, MEDIA_EXTENSIONS, MediaInfo, printable, probe
from ltx_lora.data.usable import (
    CAPTION_FIX,
    NEEDS_CAPTION,
    NO_CAPTION,
    SKIPPED,
    USED,
    Candidate,
    judge_clips,
    reference_sibling,
    row_caption,
    sidecar_caption,
)
from ltx_lora.errors import UserError
from ltx_lora.task import TaskConfig

# A crop that keeps less of the picture than this is worth a warning (e.g. a 16:9 clip in a 9:16 bucket).
HEAVY_CROP = 0.6
# Using less than this share of a clip's frames suggests splitting it into several clips.
FEW_FRAMES_USED = 0.5
# Upscaling by more than this blurs the picture visibly (odd sizes like 97x63 upscale by ~1.02: no note).
UPSCALE_NOTE = 1.1


@dataclass
class ScanItem:
    path: Path  # absolute
    info: MediaInfo
    caption: str | None = None
    caption_source: str | None = None  # "side-car .txt" or "dataset file"
    extra: dict[str, Any] = field(default_factory=dict)  # other columns carried over from an input dataset file
    placement: Placement | None = None
    skip_reason: str | None = None
    skip_group: str | None = None  # a short category of the reason, for summaries ("duplicate", "too short")
    notes: list[str] = field(default_factory=list)  # problems found by the scan (duplicates, crops, captions)

    @property
    def status(self) -> str:
        """used, needs caption (it has a bucket but nothing to train it on yet) or skipped."""
        if self.skip_reason is not None or self.placement is None:
            return SKIPPED
        return USED if self.caption else NEEDS_CAPTION

    @property
    def used(self) -> bool:
        return self.status == USED

    def skip(self, group: str, reason: str) -> None:
        self.skip_group, self.skip_reason = group, reason

    @property
    def problems(self) -> list[str]:
        return [*self.info.problems, *self.notes]


@dataclass
class ScanResult:
    source: Path
    items: list[ScanItem]
    buckets: list[Bucket]
    target_fps: float | None
    allow_shorter: bool

    @property
    def used(self) -> list[ScanItem]:
        return [i for i in self.items if i.used]

    @property
    def needs_caption(self) -> list[ScanItem]:
        return [i for i in self.items if i.status == NEEDS_CAPTION]

    @property
    def skipped(self) -> list[ScanItem]:
        return [i for i in self.items if i.status == SKIPPED]

    @property
    def placed(self) -> list[ScanItem]:
        """The items with a bucket (used or needing a caption): the rows of the dataset file."""
        return [i for i in self.items if i.status != SKIPPED]

    def bucket_counts(self) -> dict[Bucket, int]:
        counts = Counter(i.placement.bucket for i in self.used if i.placement)
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def display_path(self, item: ScanItem) -> str:
        """The item's path relative to the scanned folder (or the dataset file's folder)."""
        return _display(self.source, item.path)


def _display(source: Path, path: Path) -> str:
    root = source if source.is_dir() else source.parent
    try:
        return printable(path.relative_to(root.resolve()).as_posix())
    except ValueError:
        return printable(path.as_posix())


def find_media(folder: Path, extensions: frozenset[str] = MEDIA_EXTENSIONS) -> list[Path]:
    """Media files under `folder`, recursively, sorted; hidden files and folders (".name") are left out."""
    found = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder).parts
        if any(part.startswith(".") for part in rel):
            continue
        if p.is_file() and p.suffix.lower() in extensions:
            found.append(p.resolve())
    return sorted(found)


def collect(source: Path, extensions: frozenset[str] = MEDIA_EXTENSIONS
            ) -> list[tuple[Path, str | None, str | None, dict]]:
    """(media path, caption, caption source, other columns) for a folder or a dataset file. Paths in the other
    columns are made absolute while scanning (written back relative to the output file)."""
    source = Path(source)
    if source.is_dir():
        media = find_media(source, extensions)
        if not media:
            exts = ", ".join(sorted(e.lstrip(".") for e in extensions))
            raise UserError(f"Found no media files in {source}; put clips or stills there ({exts}).")
        out = []
        for p in media:
            cap = sidecar_caption(p)
            out.append((p, cap, "side-car .txt" if cap else None, {}))
        return out
    if source.suffix.lower() in FORMATS or source.is_file():
        dataset = read_dataset(source)
        out = []
        for e in dataset.entries:
            p = dataset.resolve(e.video)
            # Our own probe columns are recomputed; the official ones (audio, reference_video, ...) are kept.
            extra = {k: v for k, v in e.fields.items() if k not in PROBE_COLUMNS}
            extra.update({c: str(path) for c, path in e.paths(dataset).items()})
            cap, src = row_caption(e.caption, p)
            out.append((p, cap, src, extra))
        if not out:
            raise UserError(f"Dataset file {source} has no rows; add clips to it or scan a folder instead.")
        return out
    raise UserError(f"{source} does not exist; give a folder of clips or a dataset file (.jsonl, .json, .csv).")


def scan(source: Path | str, buckets: Sequence[Bucket], *, target_fps: float | None = None,
         allow_shorter: bool = True, on_probe: Callable[[int, int, Path], None] | None = None,
         task: TaskConfig | None = None, audio_fps: float = 24.0) -> ScanResult:
    """Probe and classify every media file of a folder (recursively) or of a dataset file.

    `task`: judge as this task trains (its references and masks are required, a task without video takes sound
    files too, counted at `audio_fps` unless `target_fps`); None checks whatever the rows name.
    `on_probe(done, total, path)` is called after each file, for progress display.
    """
    source = Path(source)
    if target_fps is not None and not (math.isfinite(target_fps) and target_fps > 0):
        raise UserError(f"--target-fps must be a positive frame rate such as 24, not {target_fps:g}.")
    sound_only = task is not None and not task.video.present
    todo = collect(source, MEDIA_EXTENSIONS | AUDIO_EXTENSIONS if sound_only else MEDIA_EXTENSIONS)
    if source.is_dir() and task is not None and task.video.find("reference"):
        # `clip_reference.mp4` beside `clip.mp4` is the clip's reference (the official naming), not a clip
        siblings = {reference_sibling(path) for path, *_ in todo}
        todo = [t for t in todo if t[0] not in siblings]
    items = []
    for n, (path, caption, cap_src, extra) in enumerate(todo, start=1):
        items.append(ScanItem(path, probe(path), caption, cap_src, extra))
        if on_probe:
            on_probe(n, len(todo), path)

    result = ScanResult(source, items, list(buckets), target_fps, allow_shorter)
    verdicts = judge_clips([Candidate(i.path, i.info, i.caption, _mask(i.extra), _paths(i.extra)) for i in items],
                           buckets, target_fps=target_fps, allow_shorter=allow_shorter,
                           name=lambda p: _display(source, p), task=task, audio_fps=audio_fps)
    for item, v in zip(items, verdicts):
        if v.skip_reason is not None:
            item.skip(v.skip_group, v.skip_reason)
            continue
        item.placement = v.placement
        if "reference_video" in v.sources and not item.extra.get("reference_video"):  # found by its name
            item.extra["reference_video"] = str(v.sources["reference_video"])
        item.notes.extend(_placement_notes(item.info, v.placement, target_fps))
        if not item.caption:
            item.notes.append(NO_CAPTION)
    return result


def _mask(extra: dict) -> Path | None:
    return Path(extra[LOSS_MASK]) if extra.get(LOSS_MASK) else None


def _paths(extra: dict) -> dict[str, Path]:
    return {c: Path(extra[c]) for c in PATH_COLUMNS if c != LOSS_MASK and extra.get(c)}


def _placement_notes(info: MediaInfo, p: Placement, target_fps: float | None) -> list[str]:
    notes = []
    b = p.bucket
    if p.shortened:
        notes.append(f"too short for its bucket size ({p.frames_available} frames): uses the shortened bucket {b}")
    if p.scale > UPSCALE_NOTE:
        notes.append(f"upscaled {p.scale:.1f}x to fill {b.width}x{b.height}")
    if p.kept_area < HEAVY_CROP:
        notes.append(f"the crop to {b.width}x{b.height} keeps only {p.kept_area:.0%} of the picture")
    if info.kind == "video" and p.kept_time < FEW_FRAMES_USED:
        notes.append(f"only the first {b.frames} of {p.frames_available} frames are used (split long clips)")
    if info.fps_mode == "variable" and target_fps is None:
        notes.append("variable frame rate and no --target-fps: frames are used as they come, so motion speed "
                     "varies; set --target-fps to resample")
    return notes


def dataset_entries(result: ScanResult, dataset_path: Path) -> list[DatasetEntry]:
    """The items with a bucket (used, or needing a caption) as dataset rows: the official columns plus our probe
    facts. Rows without a caption stay so that `ltx-lora caption DATASET` can fill them in."""
    entries = []
    for item in result.placed:
        info, b = item.info, item.placement.bucket
        fields: dict[str, Any] = {
            **item.extra,
            **{c: relative_media_path(Path(item.extra[c]), dataset_path) for c in PATH_COLUMNS if item.extra.get(c)},
            "kind": info.kind, "width": info.width, "height": info.height, "frames": info.frame_count,
            "fps": round(info.fps, 4) if info.fps else None, "fps_mode": info.fps_mode,
            "duration": round(info.duration, 4) if info.duration else None, "rotation": info.rotation,
            "audio_sample_rate": info.audio.sample_rate if info.audio else None,
            "audio_channels": info.audio.channels if info.audio else None,
            "audio_duration": round(info.audio.duration, 4) if info.audio and info.audio.duration else None,
            "content_hash": info.content_hash, "bucket": str(b), "problems": item.problems,
        }
        column = AUDIO if info.kind == "audio" and AUDIO not in fields else VIDEO  # a sound file: the audio column
        entries.append(DatasetEntry(item.caption or "", relative_media_path(item.path, dataset_path), fields,
                                    column))
    return entries


def skip_summary(result: ScanResult) -> Counter:
    """How many items were skipped for each kind of reason ("duplicate", "unreadable", "too short", ...)."""
    return Counter(i.skip_group for i in result.skipped)


# How each placement note (`_placement_notes`) is counted in the summary: a clip that will train softer, shorter or
# cropped is said in the terminal too, not only in the report a newcomer may not open.
_NOTE_COUNTS = (("upscaled ", f"upscaled more than {UPSCALE_NOTE:g}x to fill their bucket (softer: sharper clips or a "
                 "smaller bucket avoid it)"),
                ("too short for its bucket size", "too short for their bucket's frame count (they train in a "
                 "shortened bucket)"),
                ("the crop to ", f"cropped to under {HEAVY_CROP:.0%} of the picture (a bucket of their aspect ratio "
                 "avoids it)"),
                ("only the first ", f"long clips of which under {FEW_FRAMES_USED:.0%} of the frames are used (split "
                 "them)"))


def summary_lines(result: ScanResult, max_listed: int = 20) -> list[str]:
    """A short plain-text summary: counts, every skipped file with its reason and every file that needs a caption
    (up to `max_listed` each), buckets."""
    used, skipped, uncaptioned = result.used, result.skipped, result.needs_caption
    need = f"{len(uncaptioned)} need{'s' if len(uncaptioned) == 1 else ''} a caption, " if uncaptioned else ""
    lines = [f"Scanned {len(result.items)} media file{'s' if len(result.items) != 1 else ''} in {result.source}: "
             f"{len(used)} used, {need}{len(skipped)} skipped."]
    if skipped:
        groups = ", ".join(f"{n} {g}" for g, n in skip_summary(result).most_common())
        lines.append(f"Skipped ({groups}):")
        for item in skipped[:max_listed]:
            lines.append(f"  {result.display_path(item)}: {item.skip_reason}")
        if len(skipped) > max_listed:
            lines.append(f"  ... and {len(skipped) - max_listed} more (see the report)")
    if uncaptioned:
        lines.append(f"Need a caption, not used until they have one ({CAPTION_FIX}):")
        for item in uncaptioned[:max_listed]:
            lines.append(f"  {result.display_path(item)}: {item.placement.bucket}")
        if len(uncaptioned) > max_listed:
            lines.append(f"  ... and {len(uncaptioned) - max_listed} more (see the report)")
    counts = result.bucket_counts()
    if counts:
        lines.append("Buckets: " + ", ".join(f"{b} ({n} clip{'s' if n != 1 else ''})" for b, n in counts.items()))
    noted = [(sum(any(n.startswith(start) for n in item.notes) for item in result.placed), what)
             for start, what in _NOTE_COUNTS]
    if any(n for n, _ in noted):
        lines.append("Notes (each clip's in the report): " + "; ".join(f"{n} {what}" for n, what in noted if n) + ".")
    return lines
