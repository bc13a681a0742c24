"""Dataset files: the CSV / JSON / JSONL layouts the official LTX trainer reads, and our own superset of them.

The official layout has one row per sample with a `caption` column and a `video` column (legacy name
`media_path`), plus optional `audio`, `reference_video` (legacy `ref_media_path`), `reference_audio`,
`video_mask` and `audio_mask`. Media paths are relative to the dataset file's folder (absolute paths work too).
A row without a video (audio-only datasets, as the official trainer takes them) names its sound in `audio`.

An optional `loss_weight` column (a number >= 0, default 1) scales each clip's loss in training: 2 counts a clip
twice, 0 leaves it out of the gradient. An optional `repeats` column (a whole number >= 1, default 1) is how many
times a clip is drawn in each pass over the data: 3 balances a small set of clips against a large one (kohya's and
musubi-tuner's num_repeats), where loss_weight scales a clip's gradient instead. `dataset scan` keeps both,
`preprocess` carries them into the cache.

Rows we write add the probe facts (`width`, `height`, `frames`, `fps`, ..., `bucket`, `content_hash`,
`problems`). The official trainer ignores columns it does not know, so our files work there as well.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ltx_lora.errors import UserError
from ltx_lora.files.atomic import atomic_write
from ltx_lora.paths import read_user_text

CAPTION = "caption"
VIDEO = "video"
AUDIO = "audio"
LOSS_WEIGHT = "loss_weight"
REPEATS = "repeats"
MEDIA_COLUMNS = ("video", "audio", "reference_video", "reference_audio", "video_mask", "audio_mask")
LEGACY_ALIASES = {"media_path": "video", "ref_media_path": "reference_video"}
FORMATS = (".jsonl", ".json", ".csv")
# Masked loss (ltx_lora.data.loss_mask): a weight video/image per clip, and the seconds whose audio counts.
LOSS_MASK = "loss_mask"
AUDIO_LOSS_RANGES = "audio_loss_ranges"
# Columns holding a path besides the main media: resolved against the dataset's folder, rewritten relative to it.
PATH_COLUMNS = (*MEDIA_COLUMNS[1:], LOSS_MASK)

# Our probe columns and their types: CSV stores text, so reading converts these back.
PROBE_COLUMNS: dict[str, type] = {
    "kind": str, "width": int, "height": int, "frames": int, "fps": float, "fps_mode": str, "duration": float,
    "rotation": int, "audio_sample_rate": int, "audio_channels": int, "audio_duration": float,
    "content_hash": str, "bucket": str, "problems": list,
}
_CSV_LIST_SEP = " | "


@dataclass
class DatasetEntry:
    """One sample. `video` is the path as written in the file; `fields` holds every other column."""

    caption: str
    video: str  # the main media: the row's video, or its `audio` file in an audio-only row
    fields: dict[str, Any] = field(default_factory=dict)
    media_column: str = VIDEO  # AUDIO for an audio-only row (no video column): written back as it was

    @property
    def loss_weight(self) -> float:
        return float(self.fields.get(LOSS_WEIGHT, 1.0))

    @property
    def repeats(self) -> int:
        return int(self.fields.get(REPEATS, 1))

    def to_row(self) -> dict[str, Any]:
        return {CAPTION: self.caption, self.media_column: self.video, **self.fields}

    def paths(self, dataset: Dataset) -> dict[str, Path]:
        """The row's other media (PATH_COLUMNS) that are set, as absolute paths."""
        return {c: dataset.resolve(v) for c in PATH_COLUMNS
                if c in self.fields and isinstance(v := self.fields[c], str) and v.strip()}


@dataclass
class Dataset:
    path: Path
    entries: list[DatasetEntry]
    columns: list[str]  # after legacy names were mapped to current ones

    @property
    def root(self) -> Path:
        return self.path.parent

    def resolve(self, value: str) -> Path:
        """A media path from the file, made absolute: relative ones are relative to the dataset's folder."""
        return (self.root / Path(value.strip()).expanduser()).resolve()


def check_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise UserError(f"Dataset file {path} must end in .jsonl, .json or .csv (the format follows the "
                        f"extension), not '{path.suffix or '(none)'}'.")
    return suffix


def read_dataset(path: Path | str) -> Dataset:
    """Read a dataset file; a missing file, bad syntax or a missing column raises a one-sentence UserError."""
    path = Path(path)
    suffix = check_format(path)
    if not path.exists():
        raise UserError(f"Dataset file {path} does not exist; make one with `ltx-lora dataset scan FOLDER -o {path}`.")
    text = read_user_text(path, "Dataset file")  # a regular file, UTF-8 (a spreadsheet's BOM dropped), not binary
    rows, columns = {".csv": _read_csv, ".json": _read_json, ".jsonl": _read_jsonl}[suffix](path, text)
    columns = _apply_aliases(rows, columns)
    for required, has_it in ((VIDEO, VIDEO in columns or AUDIO in columns), (CAPTION, CAPTION in columns)):
        if not has_it:  # audio-only datasets name their sound in "audio" and have no video column
            legacy = ' (or legacy "media_path", or "audio" for sound only)' if required == VIDEO else ""
            has = ", ".join(f'"{c}"' for c in columns) or "no columns at all"
            raise UserError(f'Dataset file {path} has no "{required}" column{legacy}; it has {has}.')
    entries = []
    for n, row in enumerate(rows, start=1):
        for column in (VIDEO, *PATH_COLUMNS[:-1]):  # an empty cell (CSV) or null is no file
            value = row.get(column)
            if value is None or (isinstance(value, str) and not value.strip()):
                row.pop(column, None)
            elif not isinstance(value, str):
                raise UserError(f'Dataset file {path}, row {n}, has a "{column}" that is not a path ({value!r}); '
                                "give a media file path, relative to the dataset file.")
            else:
                row[column] = value.strip()
        main = VIDEO if VIDEO in row or AUDIO not in row else AUDIO
        video = row.pop(main, None)
        if video is None:
            raise UserError(f'Dataset file {path}, row {n}, has no "video" path (nor an "audio" one); give every '
                            "row a media file.")
        for column, value in row.items():  # NaN / inf parse in JSON and CSV, but mean nothing in any column
            if isinstance(value, float) and not math.isfinite(value):
                raise UserError(f'Dataset file {path}, row {n}, has "{column}" {value}; give a finite number or '
                                "leave the cell empty.")
        caption = row.pop(CAPTION, None)
        if caption is not None and not isinstance(caption, str):
            raise UserError(f'Dataset file {path}, row {n}, has a caption that is not text ({caption!r}).')
        if LOSS_WEIGHT in row:
            row[LOSS_WEIGHT] = _loss_weight(path, n, row[LOSS_WEIGHT])
        if REPEATS in row:
            row[REPEATS] = _repeats(path, n, row[REPEATS])
        _check_loss_columns(path, n, row)
        entries.append(DatasetEntry(caption or "", video.strip(), row, main))
    return Dataset(path, entries, columns)


def _number_cell(value: Any) -> float | None:
    """A cell meant to hold a number: None when empty (a CSV cell) or null, NaN for what is no number (a word,
    true/false: JSON's booleans would otherwise pass as 1 and 0)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        return math.nan


def _loss_weight(path: Path, n: int, value: Any) -> float:
    """A row's loss weight: a finite number >= 0; an empty cell (CSV) or null is the default 1."""
    weight = _number_cell(value)
    if weight is None:
        return 1.0
    if not math.isfinite(weight) or weight < 0:
        raise UserError(f'Dataset file {path}, row {n}, has loss_weight {value!r}; give a number >= 0 '
                        "(1 = normal, 0 = left out of the loss) or leave it empty.")
    return weight


def _repeats(path: Path, n: int, value: Any) -> int:
    """A row's repeats: a whole number >= 1 (2.0 and "2" read as 2); an empty cell (CSV) or null is the default 1."""
    number = _number_cell(value)
    if number is None:
        return 1
    if not math.isfinite(number) or number < 1 or number != int(number):
        raise UserError(f'Dataset file {path}, row {n}, has repeats {value!r}; give a whole number >= 1 (how many '
                        "times the clip is drawn in each pass over the data) or leave it empty.")
    return int(number)


def _check_loss_columns(path: Path, n: int, row: dict) -> None:
    """Normalise a row's masked-loss cells in place: an empty cell is dropped, a bad one is a UserError."""
    mask = row.get(LOSS_MASK)
    if mask is None or (isinstance(mask, str) and not mask.strip()):
        row.pop(LOSS_MASK, None)
    elif not isinstance(mask, str):
        raise UserError(f'Dataset file {path}, row {n}, has a "{LOSS_MASK}" that is not a path ({mask!r}); give the '
                        "path of a grayscale mask video or image, relative to the dataset file.")
    else:
        row[LOSS_MASK] = mask.strip()
    try:
        ranges = parse_audio_ranges(row.get(AUDIO_LOSS_RANGES))
    except ValueError as e:
        raise UserError(f'Dataset file {path}, row {n}: "{AUDIO_LOSS_RANGES}" {e}.') from None
    if ranges is None:
        row.pop(AUDIO_LOSS_RANGES, None)
    else:
        row[AUDIO_LOSS_RANGES] = ranges


def parse_audio_ranges(value: Any) -> list[list[float]] | None:
    """The `audio_loss_ranges` cell as [[start_s, end_s], ...]; None when empty. Raises ValueError (the reason)."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            raise ValueError(f"is not a JSON list like [[0, 1.5], [3, 4]] ({value!r})") from None
    if not isinstance(value, list) or not all(isinstance(r, (list, tuple)) and len(r) == 2 for r in value):
        raise ValueError(f"must be a list of [start_s, end_s] pairs like [[0, 1.5], [3, 4]], not {value!r}")
    out = []
    for start, end in value:
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in (start, end)):
            raise ValueError(f"has a range [{start!r}, {end!r}] that is not two numbers of seconds")
        if start < 0 or end <= start:
            raise ValueError(f"has a range [{start:g}, {end:g}] that does not run forward from 0 s or later")
        out.append([float(start), float(end)])
    return out


def _read_csv(path: Path, text: str) -> tuple[list[dict], list[str]]:
    reader = csv.DictReader(io.StringIO(text))
    try:
        rows = list(reader)
    except csv.Error as e:
        raise UserError(f"Dataset file {path} is not valid CSV (line {reader.line_num}: {e}).") from None
    columns = [c.strip() for c in reader.fieldnames or []]
    out = []
    for row in rows:
        clean = {}
        for key, value in row.items():
            if key is None:  # more cells than header columns
                raise UserError(f"Dataset file {path}, line {reader.line_num}, has more cells than the header "
                                f"has columns; quote captions that contain commas.")
            key = key.strip()
            clean[key] = _from_csv(key, value)
        out.append(clean)
    return out, columns


def _from_csv(key: str, value: str | None) -> Any:
    kind = PROBE_COLUMNS.get(key)
    if value is None or kind is None or kind is str:
        return value
    if value == "":
        return [] if kind is list else None
    if kind is list:
        return value.split(_CSV_LIST_SEP)
    try:
        number = float(value)
    except ValueError:
        return value  # not ours after all: keep the text
    if not math.isfinite(number):
        return number  # read_dataset names the cell
    return int(number) if kind is int else kind(number)


def _read_json(path: Path, text: str) -> tuple[list[dict], list[str]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"Dataset file {path} is not valid JSON "
                        f"(line {e.lineno}, column {e.colno}: {e.msg}).") from None
    except RecursionError:
        raise UserError(f"Dataset file {path} nests lists or objects too deeply to be a dataset file; write a "
                        'JSON list of objects like [{"caption": "...", "video": "clip.mp4"}].') from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise UserError(f"Dataset file {path} must hold a JSON list of objects like "
                        '[{"caption": "...", "video": "clip.mp4"}].')
    return data, _columns(data)


def _read_jsonl(path: Path, text: str) -> tuple[list[dict], list[str]]:
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"Dataset file {path}, line {n}, is not valid JSON ({e.msg}, column {e.colno}).") from None
        except RecursionError:
            raise UserError(f"Dataset file {path}, line {n}, nests lists or objects too deeply; write one JSON "
                            'object per line like {"caption": "...", "video": "clip.mp4"}.') from None
        if not isinstance(row, dict):
            raise UserError(f'Dataset file {path}, line {n}, must be a JSON object like '
                            '{"caption": "...", "video": "clip.mp4"}.')
        rows.append(row)
    return rows, _columns(rows)


def _columns(rows: list[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _apply_aliases(rows: list[dict], columns: list[str]) -> list[str]:
    """Map legacy column names to current ones, row by row (a row that has both keeps the current one)."""
    for old, new in LEGACY_ALIASES.items():
        if old not in columns:
            continue
        for row in rows:
            if old in row and new not in row:
                row[new] = row.pop(old)
        columns = list(dict.fromkeys(new if c == old else c for c in columns))
    return columns


def relative_media_path(media: Path, dataset_path: Path) -> str:
    """How a dataset file refers to a media file: relative to its folder when inside it, else absolute."""
    media, root = Path(media).resolve(), Path(dataset_path).resolve().parent
    try:
        return media.relative_to(root).as_posix()
    except ValueError:
        return media.as_posix()


def write_dataset(path: Path | str, entries: list[DatasetEntry]) -> Path:
    """Write entries in the format the extension names, atomically (a reader never sees half a file)."""
    path = Path(path)
    suffix = check_format(path)
    rows = [e.to_row() for e in entries]
    columns = _columns(rows) if rows else [CAPTION, VIDEO]
    if suffix == ".jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    elif suffix == ".json":
        text = json.dumps(rows, ensure_ascii=False, indent=2) + "\n"
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: _to_csv(r.get(k)) for k in columns})
        text = buf.getvalue()
    atomic_write(path, text)
    return path


def _to_csv(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) and any(isinstance(v, (list, tuple)) for v in value):
        return json.dumps(value)  # audio_loss_ranges: [[start, end], ...]
    if isinstance(value, (list, tuple)):
        return _CSV_LIST_SEP.join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)

