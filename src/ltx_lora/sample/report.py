"""`report.html`: the page to look at during and after a run. Self-contained apart from the sample files it links
with relative paths, so the run folder can be copied or served as it is.

- a grid: one row per validation prompt, one column per checkpoint (step 0 / the base first), each cell the mp4
  with its sound, its health and its time;
- loss curves of video and audio, each on its own plot (raw points and an exponential moving average), drawn as
  inline SVG;
- a note when one modality's loss has flattened while the other's still falls (audio usually converges first);
- the config of the run.
"""

from __future__ import annotations

import html
import json
import math
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
    """{"video": [(step, loss)], "audio": [...]} from metrics.jsonl; a step logged twice (resume) keeps its last."""
    by_step: dict[int, dict] = {}
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            try:
                rec = json.loads(line)
                by_step[int(rec["step"])] = rec
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a half-written last line
    out: dict[str, list[tuple[int, float]]] = {"video": [], "audio": []}
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


def recent_fall(points: list[tuple[int, float]]) -> float | None:
    """Relative fall of the smoothed loss over the last quarter of the steps (positive = still improving)."""
    if len(points) < MIN_STEPS_FOR_TREND:
        return None
    s = smooth([v for _, v in points])
    q = max(1, len(s) // 4)
    before = sum(s[-2 * q:-q]) / q
    last = sum(s[-q:]) / q
    return (before - last) / abs(before) if before else None


def plateau_note(losses: dict[str, list[tuple[int, float]]]) -> str | None:
    v, a = recent_fall(losses["video"]), recent_fall(losses["audio"])
    if v is None or a is None:
        return None
    if a < PLATEAU_BELOW and v > IMPROVING_ABOVE:
        return (f"Audio has plateaued (its loss fell {a:.1%} over the last quarter of the run) while video still "
                f"improves ({v:.1%}). Audio usually converges first: listen to the latest samples for over-trained "
                "sound; an earlier checkpoint may have the better audio, or lower train.audio_loss_weight.")
    if v < PLATEAU_BELOW and a > IMPROVING_ABOVE:
        return (f"Video has plateaued (its loss fell {v:.1%} over the last quarter of the run) while audio still "
                f"improves ({a:.1%}). The two learn at different rates: watch the latest samples for over-trained "
                "picture; an earlier checkpoint may have the better video.")
    return None


def svg_plot(points: list[tuple[int, float]], title: str, colour: str, width: int = 560, height: int = 240) -> str:
    """Raw losses as faint dots, the smoothed curve as a line, log-free linear axes with a few ticks."""
    if not points:
        return f'<div class="noplot">{html.escape(title)}: no values logged</div>'
    steps = [s for s, _ in points]
    raw = [v for _, v in points]
    sm = smooth(raw)
    left, right, top, bottom = 56, 12, 26, 30
    x0, x1 = min(steps), max(steps) if max(steps) > min(steps) else min(steps) + 1
    lo, hi = min(raw), max(raw)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5 * abs(lo or 1), hi + 0.5 * abs(hi or 1)
    pw, ph = width - left - right, height - top - bottom

    def px(s: float) -> float:
        return left + (s - x0) / (x1 - x0) * pw

    def py(v: float) -> float:
        return top + (hi - v) / (hi - lo) * ph

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
        parts.append(f'<text x="{px(s):.1f}" y="{height - 10}" class="xl">{s}</text>')
    if len(points) <= 3000:  # raw values as dots (bigger when there are few, so one logged step still shows)
        r, alpha = (3, 0.7) if len(points) < 50 else (1.4, 0.25)
        parts += [f'<circle cx="{px(s):.1f}" cy="{py(v):.1f}" r="{r}" fill="{colour}" opacity="{alpha}"/>'
                  for s, v in points]
    line = " ".join(f"{px(s):.1f},{py(v):.1f}" for s, v in zip(steps, sm))
    parts.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>')
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;background:#111;color:#ddd}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table.grid{border-collapse:collapse}
.grid th,.grid td{border:1px solid #333;padding:6px;vertical-align:top}
.grid th{background:#1c1c1c;font-weight:600}
td.prompt{max-width:220px;font-size:13px;color:#bbb}
video{width:320px;display:block;background:#000}img.sheet{width:320px}
.meta{font-size:12px;color:#999;margin-top:4px}
.ok{color:#6c6}.bad{color:#f66}.explained{color:#fc6}
.problem{font-size:12px;color:#f99;max-width:320px}.explain{font-size:12px;color:#fc6;max-width:320px}
.note{background:#332b00;border-left:4px solid #fc6;padding:8px 12px;max-width:900px}
svg{background:#181818;margin-right:16px}svg .t{fill:#ddd;font-size:13px}
svg .frame{fill:none;stroke:#444}svg .grid{stroke:#2a2a2a}
svg .yl{fill:#999;font-size:10px;text-anchor:end}svg .xl{fill:#999;font-size:10px;text-anchor:middle}
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
    out = [f'<td><video controls preload="metadata"><source src="{html.escape(files["video"])}" type="video/mp4">'
           '</video>',
           f'<div class="meta"><span class="{h["status"]}">{badge}</span> | {rec["seconds"]:.1f} s | '
           f'<a href="{html.escape(files["record"])}">record</a></div>',
           f'<details><summary class="meta">frames and waveform</summary><a href="{sheet}">'
           f'<img class="sheet" src="{sheet}" alt="contact sheet: {html.escape(rec["label"])}, prompt '
           f'{rec["prompt_index"] + 1}"></a></details>']
    out += [f'<div class="problem">{html.escape(p)}</div>' for p in h["problems"] if h["status"] == "bad"]
    if h["status"] == "explained":
        out += [f'<div class="explain">{html.escape(p)}</div>' for p in h["problems"]]
        out += [f'<div class="explain">{html.escape(n)}</div>' for n in h["notes"]]
    return "".join(out) + "</td>"


def build_report(root: Path, *, title: str, config_text: str, metrics: Path | None = None) -> Path:
    """Write root/report.html from the sample records under root/samples and the losses in `metrics`."""
    records = load_records(root)
    columns = _columns(records)
    prompts: dict[int, str] = {}
    cells: dict[tuple[int, str], dict] = {}
    for r in records:
        prompts[r["prompt_index"]] = r["prompt"]
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
    rows = [f"<tr><td class='prompt'>{html.escape(prompts[i])}</td>{''.join(_cell(cells.get((i, c))) for c in columns)}</tr>"
            for i in sorted(prompts)]
    settings = records[-1]["settings"] if records else {}
    losses = read_losses(metrics) if metrics is not None else {"video": [], "audio": []}
    note = plateau_note(losses)
    body = [f"<h1>{html.escape(title)}</h1>"]
    if settings:
        s = settings
        body.append(f"<div class='meta'>{s['width']}x{s['height']}x{s['frames']} at {s['fps']:g} fps, {s['steps']} steps, "
                    f"CFG {s['cfg']:g} (audio {s['audio_cfg']:g}), STG {s['stg_scale']:g} on blocks {s['stg_blocks']}, "
                    f"seed {s['seed']}{', fast preview (distilled LoRA)' if s.get('preview') else ''}</div>")
    body.append("<h2>Samples</h2>")
    if records:
        body.append(f"<table class='grid'><tr><th>prompt</th>{''.join(heads)}</tr>{''.join(rows)}</table>")
    else:
        body.append("<p>No samples yet.</p>")
    if metrics is not None:
        body.append("<h2>Loss</h2>")
        if note:
            body.append(f"<p class='note'>{html.escape(note)}</p>")
        body.append(svg_plot(losses["video"], "video loss", "#5fa8ff") + svg_plot(losses["audio"], "audio loss", "#ff9f5f"))
    body.append(f"<h2>Config</h2><pre>{html.escape(config_text)}</pre>")
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>")
    return atomic_write(root / "report.html", page)
