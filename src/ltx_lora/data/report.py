"""The scan report: one self-contained HTML page (thumbnails inlined as base64 JPEG, no scripts, no network).

A summary on top (what is used, what is skipped and why, clips per bucket), then one row per file with its
thumbnail (the part the bucket crop throws away is dimmed), its probe facts, bucket, caption and every problem.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from ltx_lora import __version__
from ltx_lora.data.dataset_file import PATH_COLUMNS
from ltx_lora.data.scan import ScanItem, ScanResult, skip_summary
from ltx_lora.data.usable import CAPTION_FIX, NEEDS_CAPTION, SKIPPED, USED
from ltx_lora.files.atomic import atomic_write

THUMB_SIDE = 192


def report_path_for(dataset_path: Path) -> Path:
    """`dataset.jsonl` -> `dataset_report.html` beside it."""
    return dataset_path.with_name(f"{dataset_path.stem}_report.html")


def _frame_image(item: ScanItem):
    """The displayed picture (rotation applied) from the middle of a video, or the still; None if unreadable."""
    from PIL import Image, ImageOps

    info = item.info
    if info.kind == "image":
        with Image.open(item.path) as img:
            return ImageOps.exif_transpose(img).convert("RGB")
    import av

    frame = None
    with av.open(str(item.path), metadata_errors="ignore") as container:
        vs = container.streams.video[0]
        target = (info.duration or 0.0) / 2
        if target > 2 and vs.time_base:
            # Long clip: jump to the keyframe before the middle instead of decoding everything up to it.
            container.seek(int(target / vs.time_base) + (vs.start_time or 0), stream=vs, backward=True)
        try:
            for f in container.decode(vs):
                frame = f
                if f.time is not None and f.time >= target:
                    break
        except av.FFmpegError:
            pass  # a damaged tail: keep the last frame that decoded
    if frame is None:
        return None
    img = frame.to_image()  # converts any pixel format (10-bit, 4:4:4) to 8-bit RGB
    return img.rotate(info.rotation, expand=True) if info.rotation else img


def thumbnail_jpeg(item: ScanItem, side: int = THUMB_SIDE) -> bytes | None:
    """A JPEG that fits in side x side; for placed clips the area outside the bucket's crop is dimmed."""
    from PIL import Image, ImageDraw

    try:
        img = _frame_image(item)
    except Exception:  # noqa: BLE001 - no thumbnail is not a reason to fail the report
        return None
    if img is None or not img.width or not img.height:
        return None
    fit = min(side / img.width, side / img.height)
    thumb = img.resize((max(1, round(img.width * fit)), max(1, round(img.height * fit))), Image.LANCZOS)
    p = item.placement
    if p is not None:
        # Crop window in displayed-picture pixels, then in thumbnail pixels.
        k = thumb.width / img.width / p.scale
        x0, y0 = p.crop[0] * k, p.crop[1] * k
        x1, y1 = x0 + p.bucket.width * k, y0 + p.bucket.height * k
        shade = Image.new("L", thumb.size, 110)
        ImageDraw.Draw(shade).rectangle([x0, y0, x1 - 1, y1 - 1], fill=0)
        thumb = Image.composite(Image.new("RGB", thumb.size, (0, 0, 0)), thumb, shade)
        ImageDraw.Draw(thumb).rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 210, 0))
    buf = io.BytesIO()
    thumb.save(buf, format="JPEG", quality=82)
    return buf.getvalue()


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d1d1f;background:#fafafa}
h1{font-size:22px;margin:0 0 4px} h2{font-size:16px;margin:20px 0 8px} .muted{color:#6e6e73}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}
.card{background:#fff;border:1px solid #ddd;border-radius:8px;padding:10px 14px;min-width:110px}
.card b{display:block;font-size:22px}
table{border-collapse:collapse;background:#fff;width:100%} td,th{border:1px solid #e0e0e0;padding:6px 8px;
vertical-align:top;text-align:left} th{background:#f0f0f3}
table.small{width:auto}
.thumb{width:200px;text-align:center;background:#222} .thumb img{display:block;margin:auto}
.nothumb{color:#bbb;font-size:12px;padding:40px 0}
.used{color:#0a7d28;font-weight:600} .skipped{color:#b3261e;font-weight:600} .needs{color:#a15c00;font-weight:600}
ul.problems{margin:0;padding-left:18px} ul.problems li{color:#8a5300} li.reason{color:#b3261e;font-weight:600}
.caption{max-width:340px} .file{word-break:break-all;max-width:240px} code{font-size:12px}
"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _facts(item: ScanItem) -> str:
    i = item.info
    if i.kind is None:
        return f"<span class='muted'>{i.size_bytes:,} bytes</span>"
    rows = [f"{_e(i.kind)}"]
    if i.width:
        size = f"{i.width}x{i.height}"
        if i.rotation:
            size += f" (stored {i.coded_width}x{i.coded_height}, rotated {i.rotation}°)"
        rows.append(size)
    if i.kind == "video":
        rows.append(f"{i.frame_count} frames at {i.fps:.3g} fps ({i.fps_mode})" if i.fps else f"{i.frame_count} frames")
        if i.duration:
            rows.append(f"{i.duration:.2f} s")
    if i.pix_fmt:
        rows.append(f"{_e(i.codec or i.container or '')} {_e(i.pix_fmt)}, {i.bit_depth}-bit")
    if i.audio:
        a = i.audio
        dur = f", {a.duration:.2f} s" if a.duration else ""
        rows.append(f"audio {a.sample_rate} Hz, {a.channels} ch{dur}")
    elif i.kind == "video":
        rows.append("no audio")
    return "<br>".join(rows)


def _bucket_cell(item: ScanItem) -> str:
    p = item.placement
    if p is None:
        return "<span class='muted'>—</span>"
    parts = [f"<b>{p.bucket}</b>", f"{p.bucket.tokens:,} tokens"]
    if item.info.kind == "video":
        parts.append(f"frames {p.bucket.frames} of {p.frames_available}")
    parts.append(f"resize to {p.resized[0]}x{p.resized[1]}, crop keeps {p.kept_area:.0%}")
    return "<br>".join(parts)


def _row(result: ScanResult, item: ScanItem, thumb: bytes | None) -> str:
    if thumb:
        img = f"<img alt='{_e(item.path.name)}' src='data:image/jpeg;base64,{base64.b64encode(thumb).decode()}'>"
    else:
        img = "<div class='nothumb'>no picture</div>"
    status = {USED: "<span class='used'>used</span>", NEEDS_CAPTION: "<span class='needs'>needs a caption</span>",
              SKIPPED: "<span class='skipped'>skipped</span>"}[item.status]
    problems = [f"<li class='reason'>{_e(item.skip_reason)}</li>"] if item.skip_reason else []
    problems += [f"<li>{_e(p)}</li>" for p in item.problems]
    problems_html = f"<ul class='problems'>{''.join(problems)}</ul>" if problems else "<span class='muted'>none</span>"
    caption = _e(item.caption) if item.caption else "<span class='muted'>no caption</span>"
    if item.caption_source:
        caption += f"<br><span class='muted'>from {_e(item.caption_source)}</span>"
    hash_title = f" title='content hash {_e(item.info.content_hash)}'" if item.info.content_hash else ""
    paired = "".join(f"<br><span class='muted'>{_e(c)}:</span> <code>{_e(Path(item.extra[c]).name)}</code>"
                     for c in PATH_COLUMNS if item.extra.get(c))  # the row's reference, masks, sound
    return (f"<tr><td class='thumb'>{img}</td><td class='file'{hash_title}><code>{_e(result.display_path(item))}"
            f"</code><br>{status}{paired}</td><td>{_facts(item)}</td><td>{_bucket_cell(item)}</td>"
            f"<td class='caption'>{caption}</td><td>{problems_html}</td></tr>")


def _summary(result: ScanResult, dataset_path: Path | None) -> str:
    used, skipped, uncaptioned = result.used, result.skipped, result.needs_caption
    with_problems = sum(1 for i in used if i.problems)
    cards = [("files", len(result.items)), ("used", len(used)), ("need a caption", len(uncaptioned)),
             ("skipped", len(skipped)), ("used, with notes", with_problems)]
    out = ["<div class='cards'>" + "".join(f"<div class='card'><b>{n}</b>{_e(label)}</div>" for label, n in cards)
           + "</div>"]
    settings = [f"buckets <code>{_e(';'.join(map(str, result.buckets)))}</code>",
                f"target fps {result.target_fps:g}" if result.target_fps else "each clip's own frame rate",
                "clips shorter than every bucket " + ("are shortened" if result.allow_shorter else "are skipped")]
    out.append(f"<p>{' · '.join(settings)}</p>")
    if dataset_path is not None:
        out.append(f"<p>Dataset file: <code>{_e(dataset_path)}</code> ({len(result.placed)} entries)</p>")
    if uncaptioned:
        out.append(f"<p class='needs'>{len(uncaptioned)} file{'s' if len(uncaptioned) != 1 else ''} with a bucket "
                   f"but no caption {'are' if len(uncaptioned) != 1 else 'is'} not trained on until captioned: "
                   f"{_e(CAPTION_FIX)}.</p>")
    counts = result.bucket_counts()
    if counts:
        rows = "".join(f"<tr><td><code>{b}</code></td><td>{n}</td><td>{b.tokens:,}</td></tr>"
                       for b, n in counts.items())
        out.append("<h2>Clips per bucket</h2><table class='small'><tr><th>bucket</th><th>clips</th>"
                   f"<th>tokens per clip</th></tr>{rows}</table>")
    reasons = skip_summary(result)
    if reasons:
        rows = "".join(f"<tr><td>{_e(r)}</td><td>{n}</td></tr>" for r, n in reasons.most_common())
        out.append(f"<h2>Skipped, by reason</h2><table class='small'><tr><th>reason</th><th>files</th></tr>{rows}"
                   "</table>")
    notes = Counter(p.split(":")[0].split(" (")[0] for i in used for p in i.problems)
    if notes:
        rows = "".join(f"<tr><td>{_e(r)}</td><td>{n}</td></tr>" for r, n in notes.most_common())
        out.append(f"<h2>Notes on used files</h2><table class='small'><tr><th>note</th><th>files</th></tr>{rows}"
                   "</table>")
    return "\n".join(out)


def render_report(result: ScanResult, dataset_path: Path | None = None,
                  on_thumbnail: Callable[[int, int], None] | None = None) -> str:
    rows = []
    # Used files first, then those needing a caption, then skipped ones; each group in path order.
    rank = {USED: 0, NEEDS_CAPTION: 1, SKIPPED: 2}
    ordered = sorted(result.items, key=lambda i: (rank[i.status], result.display_path(i)))
    for n, item in enumerate(ordered, start=1):
        rows.append(_row(result, item, thumbnail_jpeg(item) if item.info.kind in ("video", "image") else None))
        if on_thumbnail:
            on_thumbnail(n, len(ordered))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Dataset report: {_e(result.source.name)}</title><style>{_CSS}</style></head>
<body>
<h1>Dataset report</h1>
<p class="muted">Source <code>{_e(result.source)}</code> · {stamp} · ltx-lora {__version__}</p>
{_summary(result, dataset_path)}
<h2>Files</h2>
<table><tr><th>picture (dimmed: cropped away)</th><th>file</th><th>facts</th><th>bucket</th><th>caption</th>
<th>problems</th></tr>
{chr(10).join(rows)}
</table>
</body></html>
"""


def write_report(result: ScanResult, path: Path, dataset_path: Path | None = None,
                 on_thumbnail: Callable[[int, int], None] | None = None) -> Path:
    atomic_write(path, render_report(result, dataset_path, on_thumbnail))
    return path
