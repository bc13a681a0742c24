"""`report.html`: the page to look at during and after a run. Self-contained apart from the sample files it links
with relative paths, so the run folder can be copied or served as it is.

- a grid: one row per validation prompt, one column per checkpoint (step 0 / the base first), each cell the mp4
  with its sound (its first frame as poster), its health and its time (a sound-only sample: an audio player and
  its waveform over its spectrogram); the prompt's conditioning inputs (first image, given or reference clip,
  mask, given or reference sound) beside it in the prompt column, as the model got them; with many columns the
  grid scrolls sideways in its own box, the prompt column staying in view;
- loss curves of video and audio, each on its own plot (raw points and an exponential moving average, axis titles,
  a legend), drawn as inline SVG;
- a note, in words, when one modality's smoothed loss has flattened while the other's still falls (audio usually
  converges first);
- the config of the run.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

from ltx_lora.files.atomic import atomic_write

SMOOTHING = 0.9  # EMA weight of the past (TensorBoard-style, bias-corrected)
PLATEAU_BELOW = 0.02  # relative fall over the recent window under which a curve counts as flat
IMPROVING_ABOVE = 0.05  # relative fall over the same window that counts as still learning
MIN_STEPS_FOR_TREND = 40


def load_records(root: Path) -> list[dict]:
    """Every sample record (samples/<checkpoint>/*.json) under `root`."""
    records = []
    for path in sorted((root / "samples").glob("*/*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue  # a record being written right now; the next rebuild shows it
    return records


def read_losses(metrics: Path) -> dict[str, list[tuple[int, float]]]:
    """{"video": [(step, loss)], "audio": [...], "preservation": [...]} from metrics.jsonl (preservation: the
    train.output_preservation loss, empty without it); a step logged twice (resume) keeps its last."""
    by_step: dict[int, dict] = {}
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            try:
                rec = json.loads(line)
                by_step[int(rec["step"])] = rec
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a half-written last line
    out: dict[str, list[tuple[int, float]]] = {"video": [], "audio": [], "preservation": []}
    for step in sorted(by_step):
        for kind in out:
            v = by_step[step].get(f"loss_{kind}")
            if isinstance(v, (int, float)) and math.isfinite(v):
                out[kind].append((step, float(v)))
    return out


def smooth(values: list[float], weight: float = SMOOTHING) -> list[float]:
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight ** i))
    return out


@dataclass(frozen=True)
class Trend:
    """How the smoothed loss moved between the second-last and the last quarter of the logged steps."""

    fall: float  # relative fall of the last quarter's mean against the quarter before (positive = still falling)
    before: tuple[int, int]  # first and last step of the quarter before
    last: tuple[int, int]  # first and last step of the last quarter


def recent_trend(points: list[tuple[int, float]]) -> Trend | None:
    """The smoothed loss's recent trend; None with too few points (or a zero loss) to tell."""
    if len(points) < MIN_STEPS_FOR_TREND:
        return None
    s = smooth([v for _, v in points])
    q = max(1, len(s) // 4)
    before = sum(s[-2 * q:-q]) / q
    last = sum(s[-q:]) / q
    if not before:
        return None
    steps = [st for st, _ in points]
    return Trend((before - last) / abs(before), (steps[-2 * q], steps[-q - 1]), (steps[-q], steps[-1]))


def recent_fall(points: list[tuple[int, float]]) -> float | None:
    """Relative fall of the smoothed loss over the last quarter of the steps (positive = still improving)."""
    trend = recent_trend(points)
    return None if trend is None else trend.fall


def _moved(fall: float) -> str:
    if abs(fall) < 0.0005:
        return "did not change"
    return f"{'fell' if fall > 0 else 'rose'} {abs(fall):.1%}"


def plateau_note(losses: dict[str, list[tuple[int, float]]]) -> str | None:
    """A note, in words, when one modality's smoothed loss has gone flat while the other's still falls."""
    v, a = recent_trend(losses["video"]), recent_trend(losses["audio"])
    if v is None or a is None:
        return None

    def says(flat: str, flat_t: Trend, other: str, other_t: Trend) -> str:
        (b0, b1), (l0, l1) = flat_t.before, flat_t.last
        return (f"{flat.capitalize()} has plateaued while {other} still learns: on the curves below, the smoothed "
                f"{flat} loss is flat (its mean over steps {l0}-{l1} {_moved(flat_t.fall)} compared with steps {b0}-{b1}), "
                f"while the smoothed {other} loss still falls (its mean {_moved(other_t.fall)} over the same "
                "steps). ")

    if a.fall < PLATEAU_BELOW and v.fall > IMPROVING_ABOVE:
        return (says("audio", a, "video", v) + "Audio usually converges first: listen to the latest samples for "
                "over-trained sound; an earlier checkpoint may have the better audio (`ltx-lora lora mix --video "
                "LATER.safetensors --audio EARLIER.safetensors -o mixed.safetensors` takes each from its own "
                "checkpoint), or lower train.audio_loss_weight.")
    if v.fall < PLATEAU_BELOW and a.fall > IMPROVING_ABOVE:
        return (says("video", v, "audio", a) + "The two learn at different rates: watch the latest samples for "
                "over-trained picture; an earlier checkpoint may have the better video (`ltx-lora lora mix --video "
                "EARLIER.safetensors --audio LATER.safetensors -o mixed.safetensors` takes each from its own "
                "checkpoint).")
    return None


MAX_DOTS = 2000  # raw values drawn as dots; a longer run draws every k-th (same look, fewer elements)


def svg_plot(points: list[tuple[int, float]], title: str, colour: str, width: int = 560, height: int = 260) -> str:
    """Raw losses as faint dots, the smoothed curve as a line, linear axes with a few ticks, axis titles and a
    legend. The marks look the same whatever the number of points."""
    if not points:
        return f'<div class="noplot">{html.escape(title)}: no values logged</div>'
    steps = [s for s, _ in points]
    raw = [v for _, v in points]
    sm = smooth(raw)
    left, right, top, bottom = 64, 12, 26, 44
    x0, x1 = min(steps), max(steps) if max(steps) > min(steps) else min(steps) + 1
    lo, hi = min(raw), max(raw)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5 * abs(lo or 1), hi + 0.5 * abs(hi or 1)
    pw, ph = width - left - right, height - top - bottom

    def px(s: float) -> float:
        return left + (s - x0) / (x1 - x0) * pw

    def py(v: float) -> float:
        return top + (hi - v) / (hi - lo) * ph

    stride = max(1, math.ceil(len(points) / MAX_DOTS))
    dots = points[::stride]
    raw_label = "raw" if stride == 1 else f"raw (1 in {stride})"
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">',
             f'<text x="{left}" y="16" class="t">{html.escape(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="frame"/>']
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        y = py(v)
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{left - 4}" y="{y + 4:.1f}" class="yl">{v:.3g}</text>')
    for s in sorted({int(round(x0 + (x1 - x0) * k / 4)) for k in range(5)}):
        parts.append(f'<text x="{px(s):.1f}" y="{top + ph + 14}" class="xl">{s}</text>')
    # axis titles
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 6}" class="at">step</text>'
                 f'<text x="14" y="{top + ph / 2:.1f}" class="at" '
                 f'transform="rotate(-90 14 {top + ph / 2:.1f})">loss</text>')
    parts += [f'<circle cx="{px(s):.1f}" cy="{py(v):.1f}" r="2" fill="{colour}" opacity="0.35"/>' for s, v in dots]
    line = " ".join(f"{px(s):.1f},{py(v):.1f}" for s, v in zip(steps, sm))
    parts.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>')
    # legend, top right, above the plot area
    lx = left + pw - 240
    parts.append(f"<g class='legend'><circle cx=\"{lx}\" cy=\"12\" r=\"3\" fill=\"{colour}\" opacity=\"0.6\"/>"
                 f'<text x="{lx + 7}" y="16" class="lg">{html.escape(raw_label)}</text>'
                 f'<line x1="{lx + 100}" x2="{lx + 118}" y1="12" y2="12" stroke="{colour}" stroke-width="2"/>'
                 f'<text x="{lx + 122}" y="16" class="lg">smoothed (EMA {SMOOTHING:g})</text></g>')
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;background:#111;color:#ddd}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
.gridwrap{overflow-x:auto;max-width:100%}
table.grid{border-collapse:collapse}
td.prompt,th.prompt{position:sticky;left:0;z-index:1;background:#111}
.grid th,.grid td{border:1px solid #333;padding:6px;vertical-align:top}
.grid th{background:#1c1c1c;font-weight:600}
td.prompt{max-width:220px;font-size:13px;color:#bbb}
video{width:320px;display:block;background:#000}img.sheet{width:320px}audio{width:320px;display:block}
.input{margin-top:8px}.input video,.input img,.input audio{width:200px;display:block}
.input .meta{margin:0 0 2px 0}
.meta{font-size:12px;color:#999;margin-top:4px}
.ok{color:#6c6}.bad{color:#f66}.explained{color:#fc6}
.problem{font-size:12px;color:#f99;max-width:320px}.explain{font-size:12px;color:#fc6;max-width:320px}
.note{background:#332b00;border-left:4px solid #fc6;padding:8px 12px;max-width:900px}
svg{background:#181818;margin-right:16px}svg .t{fill:#ddd;font-size:13px}
svg .frame{fill:none;stroke:#444}svg .grid{stroke:#2a2a2a}
svg .yl{fill:#999;font-size:10px;text-anchor:end}svg .xl{fill:#999;font-size:10px;text-anchor:middle}
svg .at{fill:#bbb;font-size:11px;text-anchor:middle}svg .lg{fill:#bbb;font-size:11px}
pre{background:#181818;padding:12px;max-width:900px;overflow:auto;font-size:12px}
a{color:#8bf}
"""


def _columns(records: list[dict]) -> list[str]:
    keyed = {}
    for r in records:
        step = r.get("step")
        keyed[r["label"]] = (step is None, step if step is not None else 0, r.get("created", ""), r["label"])
    return sorted(keyed, key=lambda label: keyed[label])


def _cell(rec: dict | None) -> str:
    if rec is None:
        return "<td>-</td>"
    files = rec["files"]
    h = rec["health"]
    badge = {"ok": "healthy", "bad": "problem", "explained": "explained"}[h["status"]]
    sheet = html.escape(files["contact_sheet"])
    alt = f'{html.escape(rec["label"])}, prompt {rec["prompt_index"] + 1}'
    meta = (f'<div class="meta"><span class="{h["status"]}">{badge}</span> | {rec["seconds"]:.1f} s | '
            f'<a href="{html.escape(files["record"])}">record</a></div>')
    if "video" in files:
        poster = html.escape(files.get("poster") or files["contact_sheet"])  # records from before posters: the sheet
        out = [f'<td><video controls preload="metadata" poster="{poster}"><source src="{html.escape(files["video"])}" '
               'type="video/mp4"></video>', meta,
               f'<details><summary class="meta">frames and waveform</summary><a href="{sheet}">'
               f'<img class="sheet" src="{sheet}" alt="contact sheet: {alt}"></a></details>']
    else:  # sound only: the player and the waveform over the spectrogram, both in view
        out = [f'<td><audio controls preload="metadata" src="{html.escape(files["audio"])}"></audio>', meta,
               f'<a href="{sheet}"><img class="sheet" src="{sheet}" alt="waveform and spectrogram: {alt}"></a>']
    out += [f'<div class="problem">{html.escape(p)}</div>' for p in h["problems"] if h["status"] == "bad"]
    if h["status"] == "explained":
        out += [f'<div class="explain">{html.escape(p)}</div>' for p in h["problems"]]
        out += [f'<div class="explain">{html.escape(n)}</div>' for n in h["notes"]]
    return "".join(out) + "</td>"


INPUT_LABELS = {"image": "first frame", "video": "given video", "audio": "given sound", "mask": "mask",
                "reference_video": "reference video", "reference_audio": "reference sound"}


def _inputs(items: list[dict]) -> str:
    """A prompt's conditioning inputs as the model got them, each under its name."""
    out = []
    for item in items:
        label = html.escape(f"{INPUT_LABELS.get(item['name'], item['name'])}: {Path(item['source']).name}")
        src = html.escape(item["file"])
        if item["kind"] == "image":
            media = f'<img src="{src}" alt="{label}">'
        elif item["kind"] == "video":
            media = (f'<video controls muted preload="metadata" poster="{html.escape(item["poster"])}">'
                     f'<source src="{src}" type="video/mp4"></video>')
        else:
            media = (f'<audio controls preload="metadata" src="{src}"></audio>'
                     f'<img src="{html.escape(item["poster"])}" alt="{label} waveform">')
        out.append(f'<div class="input"><div class="meta">{label}</div>{media}</div>')
    return "".join(out)


def build_report(root: Path, *, title: str, config_text: str, metrics: Path | None = None,
                 records: list[dict] | None = None) -> Path:
    """Write root/report.html from `records` (default: every sample record under root/samples) and the losses in
    `metrics`."""
    records = load_records(root) if records is None else records
    columns = _columns(records)
    prompts: dict[int, str] = {}
    inputs: dict[int, list[dict]] = {}
    cells: dict[tuple[int, str], dict] = {}
    for r in records:
        prompts[r["prompt_index"]] = r["prompt"]
        inputs[r["prompt_index"]] = r.get("inputs") or []  # the latest record's (the same for every checkpoint)
        cells[(r["prompt_index"], r["label"])] = r
    heads = []
    for label in columns:
        any_rec = next(r for r in records if r["label"] == label)
        sub = f"step {any_rec['step']}" if any_rec.get("step") is not None else ""
        if any_rec.get("lora_file"):
            lora = Path(any_rec["lora_file"]).name
        else:
            lora = "base model" if any_rec.get("step") == 0 else "LoRA in training"
        heads.append(f"<th>{html.escape(label)}<div class='meta'>{html.escape(sub)} {html.escape(lora)}</div></th>")
    rows = [f"<tr><td class='prompt'>{html.escape(prompts[i])}{_inputs(inputs[i])}</td>"
            f"{''.join(_cell(cells.get((i, c))) for c in columns)}</tr>" for i in sorted(prompts)]
    settings = records[-1]["settings"] if records else {}
    losses = read_losses(metrics) if metrics is not None else {"video": [], "audio": []}
    note = plateau_note(losses)
    body = [f"<h1>{html.escape(title)}</h1>"]
    if settings:
        s = settings
        body.append(f"<div class='meta'>{s['width']}x{s['height']}x{s['frames']} at {s['fps']:g} fps, {s['steps']} steps, "
                    f"CFG {s['cfg']:g} (audio {s['audio_cfg']:g}), STG {s['stg_scale']:g} "
                    f"(audio {s.get('audio_stg_scale', s['stg_scale']):g}) on blocks {s['stg_blocks']}, "
                    f"seed {s['seed']}{', fast preview (distilled LoRA)' if s.get('preview') else ''}</div>")
    body.append("<h2>Samples</h2>")
    if records:
        body.append(f"<div class='gridwrap'><table class='grid'><tr><th class='prompt'>prompt</th>{''.join(heads)}</tr>"
                    f"{''.join(rows)}</table></div>")
    else:
        body.append("<p>No samples yet.</p>")
    if metrics is not None:
        body.append("<h2>Loss</h2>")
        if note:
            body.append(f"<p class='note'>{html.escape(note)}</p>")
        body.append(svg_plot(losses["video"], "video loss", "#5fa8ff") + svg_plot(losses["audio"], "audio loss", "#ff9f5f"))
        if losses.get("preservation"):  # train.output_preservation: the LoRA's drift from the base on the class
            body.append(svg_plot(losses["preservation"], "preservation loss (class caption, before its weight)",
                                 "#9fdf7f"))
    body.append(f"<h2>Config</h2><pre>{html.escape(config_text)}</pre>")
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>")
    return atomic_write(root / "report.html", page)
