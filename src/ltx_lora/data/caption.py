"""The work of `ltx-lora caption`: write a caption for every clip and still that has none, locally.

Captions go where `dataset scan` and `preprocess` read them: for a folder, a side-car `clip.txt` beside
`clip.mp4`; for a dataset file, its `caption` column. An existing caption (the column, or else the side-car, as
`dataset scan` reads them) is kept unless `overwrite` is set. Each caption is written atomically as soon as it is
made, so a killed run loses at most the clip it was working on and a re-run continues where it stopped.

A backend (`ltx_lora.data.caption_backends`) sees a `MediaSample`: a few frames spread over the clip (one for a
still) and, for backends that hear, the clip's sound as 16 kHz mono. Clips that cannot be decoded are reported
and skipped; they never stop the run.

Caption styles:
- `ltx`: the style of the official LTX trainer's captioner: one detailed paragraph in chronological order, starting
  directly with the action (no "The video shows"), covering shot type and camera motion, people and their
  clothing and movement, setting, lighting and colours, on-screen text and, when the model hears the clip, speech
  quoted word for word, music and ambient sound.
- `plain`: one or two short sentences naming the subject, the action and the setting.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from ltx_lora.config import trigger_as_word
from ltx_lora.data.dataset_file import AUDIO, FORMATS, Dataset, read_dataset, write_dataset
from ltx_lora.data.decode import AUDIO_RATE, _rotate, read_audio
from ltx_lora.data.probe import probe
from ltx_lora.data.scan import find_media, sidecar_caption
from ltx_lora.errors import UserError
from ltx_lora.files.atomic import atomic_write

STYLES = ("ltx", "plain")
DEFAULT_FRAMES = 8
MAX_SIDE = 768  # frames are shrunk to this longest side before a backend sees them (models resize further)
MAX_AUDIO_S = 120.0  # longer soundtracks are cut: the captioners handle a few minutes at most


# ----------------------------------------------------------------------------------------------------------------
# What a backend sees


@dataclass
class MediaSample:
    path: Path
    frames: list[Image.Image]  # RGB, in time order; one for a still; none for a sound file
    duration: float  # seconds of video (or sound) the frames are spread over; 0 for a still
    audio: np.ndarray | None = None  # mono float32 at AUDIO_RATE, None when silent or not asked for
    audio_rate: int = AUDIO_RATE

    @property
    def is_still(self) -> bool:
        return self.duration == 0

    @property
    def is_sound(self) -> bool:
        """A sound file (an audio-only dataset row): nothing to see, only to hear."""
        return not self.frames

    @property
    def frame_rate(self) -> float:
        """Frames per second of the sampled frames (what video models need for their time positions)."""
        return len(self.frames) / self.duration if self.duration > 0 else 1.0


class Captioner(Protocol):
    name: str
    hears_audio: bool  # whether the sample's audio reaches the model (the instruction then asks about sound)

    def caption(self, sample: MediaSample, instruction: str) -> str: ...


class MediaError(ValueError):
    """A clip that cannot be captioned (cannot be decoded, no frames): reported and skipped."""


def _shrink(img: Image.Image, max_side: int) -> Image.Image:
    scale = max_side / max(img.size)
    if scale >= 1:
        return img
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BICUBIC)


def sample_media(path: Path, num_frames: int = DEFAULT_FRAMES, *, with_audio: bool = True,
                 max_side: int = MAX_SIDE, sound: bool = False) -> MediaSample:
    """`num_frames` frames at evenly spaced times (the centres of equal slices of the clip), plus its sound.

    `sound`: the file is an audio-only dataset row's `audio` (a sound file, or a video whose track is meant): its
    sound only, no frames, which needs a captioner that hears (`with_audio`). Raises MediaError (with the probe's
    reason in plain words) for files that cannot be decoded.
    """
    info = probe(path)
    if sound:
        return _sound_sample(path, info, with_audio)
    if not info.usable:
        raise MediaError(info.error or f"a {info.kind} file, not a video or still")
    if info.kind == "image":
        try:
            with Image.open(path) as img:
                return MediaSample(path, [_shrink(img.convert("RGB"), max_side)], 0.0)
        except OSError as e:
            raise MediaError(f"could not be decoded ({e})") from None
    duration = info.duration or ((info.frame_count or 0) / info.fps if info.fps else 0.0)
    if duration <= 0:
        raise MediaError("its duration cannot be read, so frames cannot be spread over it")
    frames = _video_frames(path, num_frames, duration, max_side)
    audio = None
    if with_audio and info.audio is not None:
        try:
            stereo = read_audio(path, 0.0, min(duration, MAX_AUDIO_S))
        except Exception:  # noqa: BLE001 - a broken soundtrack still leaves the picture to caption
            stereo = None
        audio = None if stereo is None else stereo.mean(0).numpy().astype(np.float32)
    return MediaSample(path, frames, duration, audio)


def _sound_sample(path: Path, info, with_audio: bool) -> MediaSample:
    if not with_audio:
        raise MediaError("a sound-only row, and this captioner does not hear: caption sound with a model that does "
                         "(--model with a Qwen2.5-Omni folder)")
    if info.audio is None:
        raise MediaError(info.error or "it has no sound to caption")
    duration = info.duration or 0.0
    if duration <= 0:
        raise MediaError("its duration cannot be read, so its sound cannot be sampled")
    try:
        stereo = read_audio(path, 0.0, min(duration, MAX_AUDIO_S))
    except Exception as e:  # noqa: BLE001 - the decoder's many error kinds: one reason for this file
        raise MediaError(f"its sound could not be decoded ({type(e).__name__}: {e})") from None
    return MediaSample(path, [], duration, stereo.mean(0).numpy().astype(np.float32))


def _video_frames(path: Path, num_frames: int, duration: float, max_side: int) -> list[Image.Image]:
    import av

    wanted = [(i + 0.5) * duration / num_frames for i in range(num_frames)]
    picked: list[Image.Image] = []
    previous = None
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                t = float(frame.pts * stream.time_base) if frame.pts is not None else None
                # each wanted time takes the last frame shown at or before it
                while len(picked) < num_frames and previous is not None and t is not None and t > wanted[len(picked)]:
                    picked.append(previous)
                if len(picked) >= num_frames:
                    break
                upright = _rotate(frame.to_ndarray(format="rgb24"), int(getattr(frame, "rotation", 0) or 0))
                previous = _shrink(Image.fromarray(upright), max_side)
    except (av.error.FFmpegError, OSError) as e:
        if previous is None:
            raise MediaError(f"could not be decoded ({e})") from None
        # a clip broken part-way: the frames read so far are still worth describing
    if previous is None:
        raise MediaError("no video frame could be decoded")
    while len(picked) < num_frames:
        picked.append(previous)
    return picked


# ----------------------------------------------------------------------------------------------------------------
# Instructions and clean-up


def instruction_for(style: str, *, still: bool, hears_audio: bool, has_audio: bool, sound: bool = False) -> str:
    """The request sent with the frames, in our own words, for a still or a clip, with or without sound, or (`sound`)
    for a sound file alone."""
    if style not in STYLES:
        raise UserError(f"Unknown caption style '{style}'; use one of: {', '.join(STYLES)}.")
    if sound:
        if style == "plain":
            return ("Describe this sound recording in one or two short sentences: what makes the sound and how it "
                    "sounds. Answer with the caption only.")
        return " ".join([
            "Write one detailed caption for this sound recording, detailed enough that a listener could recognise it.",
            "Start directly with the sound source or the action; never begin with 'The audio' or 'This recording'.",
            "Cover what makes each sound, its character (pitch, loudness, rhythm, texture), the acoustic space, and "
            "how it changes over time, in order; quote speech word for word in its original language, with the tone "
            "of voice; name music by instruments, tempo and mood. Say so when there is no speech or no music.",
            "Describe only what can be heard; never invent sounds.",
            "Write a single paragraph of plain prose: no headings, lists or labels. Answer with the caption only.",
        ])
    what = "image" if still else "video (the images are frames sampled in order across it)"
    if style == "plain":
        text = (f"Describe this {what} in one or two short sentences: the main subject, what happens and the "
                "setting. Start with the subject, not with 'This video' or 'The image'.")
        if hears_audio and has_audio and not still:
            text += " Mention the most noticeable sound."
        return text + " Answer with the caption only."
    parts = [
        f"Write one detailed caption for this {what}, detailed enough that a reader could picture it exactly.",
        ("Start directly with the subject or the action; never begin with phrases like 'The video shows', "
         "'The scene opens with', 'We see' or 'There is'."),
        "Cover the shot type and framing (wide, medium, close-up, ...)" + ("" if still else " and any camera movement")
        + "; the people (described by appearance, e.g. 'the man in the blue jacket'), their clothing, posture"
        + ("" if still else " and movement (direction and speed)") + "; the setting, its materials, the lighting and "
        "the colours; and any text visible on screen, quoted exactly.",
    ]
    if not still:
        parts.append("Describe events in the order they happen; if there are several shots, describe each in turn.")
    if hears_audio and has_audio and not still:
        parts.append("Include the sound: speech quoted word for word in its original language, the tone of voice, "
                     "music and ambient sounds. Say so when there is no speech or no music; never invent sounds.")
    parts.append("Describe only what can be " + ("seen or heard" if hears_audio and has_audio and not still
                                                else "seen") + "; do not guess intentions or emotions.")
    parts.append("Write a single paragraph of plain prose: no headings, lists or labels. Answer with the caption only.")
    return " ".join(parts)


_PREAMBLE = re.compile(
    r"^(?:(?:here is|here's) (?:a |the )?(?:detailed )?caption[^:]*:\s*|"
    r"(?:the|this) (?:video|clip|image|scene|footage|frame|sequence|photo)s? (?:shows|depicts|features|captures|"
    r"presents|displays|showcases|begins with|opens with)\s+|"
    r"in (?:the|this) (?:video|clip|image|scene|footage),\s*)", re.IGNORECASE)


def clean_caption(raw: str) -> str:
    """Model output -> one caption paragraph: reasoning, JSON wrapping, labels and 'The video shows' removed."""
    text = re.sub(r"<think>[\s\S]*?</think>", "", raw)
    if "</think>" in text:  # thinking models may omit the opening tag
        text = text.rsplit("</think>", 1)[1]
    text = text.strip()
    if text.startswith("```"):
        text = re.sub(r"^```\w*\s*|\s*```$", "", text).strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            values = [v for v in data.values() if isinstance(v, str) and v.strip()]
            if values:
                text = values[0]
    text = re.sub(r"^(?:caption|description)\s*:\s*", "", text.strip(), flags=re.IGNORECASE)
    text = " ".join(text.split())  # one paragraph on one line: side-cars and CSV cells stay simple
    stripped = _PREAMBLE.sub("", text, count=1)
    if stripped and stripped != text:
        text = stripped[0].upper() + stripped[1:]
    return text.strip().strip('"').strip()


def with_trigger(caption: str, trigger: str) -> str:
    """The trigger word in front, as `preprocess` adds data.trigger_word (and never twice)."""
    trigger = trigger.strip()
    return f"{trigger} {caption}".strip() if trigger and not caption.startswith(trigger) else caption


def preservation_caption(caption: str, trigger: str, class_word: str) -> str:
    """The caption train.output_preservation predicts with: every whole-word `trigger` replaced by `class_word`
    ("zxq a woman walks" -> "woman a woman walks" with class word "woman"; spaces then collapsed to one).
    ai-toolkit replaces every occurrence of the trigger as a substring (`str.replace`), which would also change a
    word that merely contains it ("ohwx" in "ohwxs"); here only the word itself is replaced."""
    trigger, class_word = trigger.strip(), class_word.strip()
    if not trigger:
        return caption
    text = trigger_as_word(trigger).sub(lambda _: class_word, caption)
    return " ".join(text.split())


# ----------------------------------------------------------------------------------------------------------------
# Where captions are read from and written to


@dataclass
class CaptionTarget:
    media: Path  # absolute
    display: str  # path as shown to the user
    existing: str | None  # the caption it already has (dataset column, else side-car), if any
    row: int | None = None  # index into the dataset's entries; None for a folder (side-car)
    only_sidecar: bool = False  # a dataset row with an empty caption column but a side-car caption
    sound: bool = False  # an audio-only row: `media` is its sound, captioned by ear


class CaptionStore:
    """The captions of a folder (side-car .txt files) or of a dataset file (its caption column)."""

    def __init__(self, source: Path):
        self.source = Path(source)
        self.dataset: Dataset | None = None
        if self.source.is_dir():
            media = find_media(self.source)
            if not media:
                raise UserError(f"Found no media files in {self.source}; give a folder of clips or stills, or a "
                                "dataset file.")
            self.targets = [CaptionTarget(p, p.relative_to(self.source.resolve()).as_posix(), sidecar_caption(p))
                            for p in media]
        elif self.source.suffix.lower() in FORMATS or self.source.is_file():
            self.dataset = read_dataset(self.source)
            if not self.dataset.entries:
                raise UserError(f"Dataset file {self.source} has no rows; add clips to it or caption a folder.")
            self.targets = []
            for n, entry in enumerate(self.dataset.entries):
                media = self.dataset.resolve(entry.video)
                column = entry.caption.strip()
                existing = column or sidecar_caption(media)
                self.targets.append(CaptionTarget(media, entry.video, existing or None, n,
                                                  only_sidecar=bool(existing and not column),
                                                  sound=entry.media_column == AUDIO))
        else:
            raise UserError(f"{self.source} does not exist; give a folder of clips or a dataset file "
                            "(.jsonl, .json, .csv).")

    def write(self, target: CaptionTarget, caption: str) -> Path:
        """Store one caption at once, atomically: a side-car beside the media, or the whole dataset file."""
        if self.dataset is None:
            path = target.media.with_suffix(".txt")
            atomic_write(path, caption + "\n")
            return path
        entry = self.dataset.entries[target.row]
        entry.caption = caption
        problems = entry.fields.get("problems")
        if isinstance(problems, list):  # the scan's "no caption" note is no longer true
            entry.fields["problems"] = [p for p in problems if not str(p).startswith("no caption")]
        write_dataset(self.dataset.path, self.dataset.entries)
        return self.dataset.path


# ----------------------------------------------------------------------------------------------------------------
# The run


@dataclass
class CaptionResult:
    source: Path
    captioned: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # had a caption and overwrite was off
    failed: list[tuple[str, str]] = field(default_factory=list)  # (media, reason)
    seconds: float = 0.0

    def summary_lines(self, max_listed: int = 20) -> list[str]:
        total = len(self.captioned) + len(self.kept) + len(self.failed)
        lines = [(f"{total} media file{'s' if total != 1 else ''} in {self.source}: {len(self.captioned)} captioned, "
                  f"{len(self.kept)} kept (already captioned), {len(self.failed)} failed.")]
        if self.captioned and self.seconds > 0:
            lines.append(f"{self.seconds / len(self.captioned):.1f} s per caption.")
        for media, reason in self.failed[:max_listed]:
            lines.append(f"  failed {media}: {reason}")
        if len(self.failed) > max_listed:
            lines.append(f"  ... and {len(self.failed) - max_listed} more")
        if self.kept:
            lines.append("Existing captions were kept; pass --overwrite to replace them.")
        return lines


def caption_source(source: Path | str, captioner: Captioner, *, style: str = "ltx", instruction: str | None = None,
                   trigger: str = "", overwrite: bool = False, num_frames: int = DEFAULT_FRAMES,
                   store: CaptionStore | None = None,
                   on_progress: Callable[[int, int, str], None] | None = None) -> CaptionResult:
    """Caption every media file of a folder (recursively) or of a dataset file that needs a caption.

    `on_progress(done, total, current)` is called before and after each file, for a progress bar. Failures of
    one file (cannot be decoded, the model returned nothing) are collected in the result, never raised.
    """
    if style not in STYLES:
        raise UserError(f"Unknown caption style '{style}'; use one of: {', '.join(STYLES)}.")
    if num_frames < 1:
        raise UserError(f"--frames must be at least 1, not {num_frames}.")
    store = store or CaptionStore(Path(source))
    result = CaptionResult(Path(source))
    todo = []
    for target in store.targets:
        if target.existing and not overwrite:
            if target.only_sidecar:  # preprocess reads the column only: copy the side-car's caption there
                store.write(target, target.existing)
            result.kept.append(target.display)
        else:
            todo.append(target)
    t0 = time.perf_counter()
    for n, target in enumerate(todo):
        if on_progress:
            on_progress(n, len(todo), target.display)
        try:
            sample = sample_media(target.media, num_frames, with_audio=captioner.hears_audio, sound=target.sound)
            text = instruction or instruction_for(style, still=sample.is_still, hears_audio=captioner.hears_audio,
                                                  has_audio=sample.audio is not None, sound=sample.is_sound)
            caption = clean_caption(captioner.caption(sample, text))
            if not caption:
                raise MediaError("the model returned an empty caption")
        except MediaError as e:
            result.failed.append((target.display, str(e)))
            continue
        except (RuntimeError, ValueError, OSError) as e:  # one clip's failure in the model code is not fatal
            result.failed.append((target.display, f"{captioner.name} failed: {type(e).__name__}: {e}"))
            continue
        store.write(target, with_trigger(caption, trigger))
        result.captioned.append(target.display)
    if on_progress:
        on_progress(len(todo), len(todo), "")
    result.seconds = time.perf_counter() - t0
    return result
