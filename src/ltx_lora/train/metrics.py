"""Training metrics: the console (a live bar on a terminal, one unwrapped line per step in a log), `metrics.jsonl`
(for the report's plots), TensorBoard (scalars, the config, and after each validation every prompt's sample as an
animated image and its frames-and-waveform sheet, with the health checks as text), W&B.

The trainer never imports the sampler: the validation hook returns the samples' records, whose file paths (relative
to the run folder) are all this module reads. TensorBoard's own `add_video` needs moviepy; the animation is encoded
here instead (a GIF through Pillow, the same image summary `add_video` writes), so no extra package is needed.
TensorBoard plays no sound: the report's mp4s have it."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import time
import uuid
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from ltx_lora.config import LoggingConfig
from ltx_lora.errors import UserError
from ltx_lora.files.atomic import atomic_write


def _gpu_memory() -> str:
    if not torch.cuda.is_available():
        return ""
    return f" | mem {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"


WANDB_ID_FILE = "wandb_id"


def wandb_run_id(run_dir: Path, resuming: bool) -> str:
    """The W&B run this run folder logs to, kept in `wandb_id`: a resumed run continues the W&B run of its first
    start (`wandb.init(resume="allow")` without an id starts a new W&B run each time), a run from step 0 starts a new
    one."""
    path = run_dir / WANDB_ID_FILE
    if resuming and path.is_file():
        kept = path.read_text().strip()
        if kept.isalnum():
            return kept
    new = uuid.uuid4().hex[:16]  # letters and digits, as W&B ids are
    atomic_write(path, new + "\n")
    return new


def require_logging_packages(cfg: LoggingConfig) -> None:
    """Refuse, before anything loads, a logger whose package is not installed."""
    if cfg.wandb and importlib.util.find_spec("wandb") is None:
        raise UserError("logging.wandb is true but wandb is not installed: install it with `pip install wandb`, "
                        "or set logging.wandb: false.")


class MetricsLogger:
    def __init__(self, run_dir: Path, cfg: LoggingConfig, console, total_steps: int, start: int,
                 config_text: str = "", run_text: str = ""):
        require_logging_packages(cfg)
        self.console = console
        self.run_dir = run_dir
        self.total, self.start = total_steps, start
        self.t_start = time.perf_counter()
        run_dir.mkdir(parents=True, exist_ok=True)
        # Append: a resumed run continues the same curve. Steps past the resume point (logged by a killed run after
        # its last checkpoint) are dropped first: this run logs them again.
        path = run_dir / "metrics.jsonl"
        _drop_steps_after(path, start)
        self.jsonl = open(path, "a", buffering=1)
        self.tb = self.wandb = None
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # A resumed run: events of steps past the resume point (a killed run's, after its last checkpoint)
                # are purged by TensorBoard's reader (its SessionLog START at `purge_step`), as metrics.jsonl's are.
                self.tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start + 1 if start else None)
            except ImportError:
                console.print("tensorboard is not installed: metrics go to metrics.jsonl only")
        if self.tb is not None:
            if config_text:
                self.tb.add_text("config", _code(config_text), start)
            if run_text:
                self.tb.add_text("run", _code(run_text), start)
        if cfg.wandb:
            import wandb

            self.wandb = wandb.init(project=cfg.wandb_project, dir=str(run_dir), id=wandb_run_id(run_dir, start > 0),
                                    resume="allow")
        # On a terminal: a live bar (its line carries the step's numbers) and a kept line every tenth of the run;
        # in a log (not a terminal): one line per step, never a bar.
        self.bar: Progress | None = None
        self.keep_every = max(1, (total_steps - start) // 10)
        if getattr(console, "is_terminal", False) and not getattr(console, "quiet", False):
            self.bar = Progress(TextColumn("step"), MofNCompleteColumn(), BarColumn(), TextColumn("{task.description}", markup=False),
                                console=console, transient=True)
            self.task = self.bar.add_task("", total=total_steps, completed=start)
            self.bar.start()

    @contextlib.contextmanager
    def paused(self):
        """Hide the bar while something else (validation sampling, with its own bar) uses the console."""
        if self.bar is None:
            yield
            return
        self.bar.stop()
        try:
            yield
        finally:
            self.bar.start()

    def log_step(self, step: int, video_loss: float | None, audio_loss: float | None, lr: float,
                 seconds: float, preservation: float | None = None) -> None:
        """One step's losses (None: that modality is not generated, or no clip of the step had it). `preservation`:
        train.output_preservation's loss before its weight (video + audio_loss_weight x audio, how far the LoRA's
        prediction for the class caption is from the base model's), only with it on."""
        record = {"step": step, "loss_video": video_loss, "loss_audio": audio_loss, "lr": lr, "s_per_step": seconds}
        if preservation is not None:
            record = {**record, "loss_preservation": preservation}
        self.jsonl.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for tag, value in (("loss/video", video_loss), ("loss/audio", audio_loss),
                               ("loss/preservation", preservation)):
                if value is not None:
                    self.tb.add_scalar(tag, value, step)
            self.tb.add_scalar("lr", lr, step)
            self.tb.add_scalar("s_per_step", seconds, step)
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in record.items() if v is not None}, step=step)
        done = step - self.start
        elapsed = time.perf_counter() - self.t_start
        eta = elapsed / max(done, 1) * (self.total - step)
        parts = [f"{name} {value:.4f}" for name, value in (("video", video_loss), ("audio", audio_loss),
                                                            ("preservation", preservation)) if value is not None]
        numbers = (f"loss {' '.join(parts)} | lr {lr:.2e} | {seconds:.2f} s/step | ETA {_fmt(eta)}"
                   f"{_gpu_memory()}")
        if self.bar is not None:
            self.bar.update(self.task, completed=step, description=numbers)
            if done % self.keep_every and step != self.total:
                return
        self.console.print(f"step {step}/{self.total} | {numbers}", highlight=False, markup=False)

    def log_validation(self, step: int, records: list[dict] | None) -> None:
        """Each validation sample in TensorBoard: its video as an animated image (`validation/p<N>/video`, no sound),
        its frames-and-waveform sheet (`validation/p<N>/frames`) and the health checks as a table (text)."""
        if self.tb is None or not records:
            return
        for r in records:
            self._log_sample_media(step, r)
        rows = ["| prompt | health | problems and notes | seconds |", "|---|---|---|---|"]
        for r in records:
            h = r.get("health", {})
            said = "; ".join(h.get("problems", []) + h.get("notes", [])) or "-"
            rows.append(f"| {r.get('prompt_index')}: {r.get('prompt', '')[:80]} | {h.get('status', '?')} | {said} "
                        f"| {r.get('seconds', 0):.1f} |")
        self.tb.add_text("validation/health", "\n".join(rows), step)
        self.tb.flush()

    def _log_sample_media(self, step: int, record: dict) -> None:
        files = record.get("files") or {}
        tag = f"validation/p{record.get('prompt_index', 0)}"
        try:
            if files.get("video"):
                self.tb._get_file_writer().add_summary(  # what add_video writes, without moviepy
                    _animation_summary(f"{tag}/video", self.run_dir / files["video"]), step)
            if files.get("contact_sheet"):
                with Image.open(self.run_dir / files["contact_sheet"]) as sheet:
                    self.tb.add_image(f"{tag}/frames", np.asarray(sheet.convert("RGB")), step, dataformats="HWC")
        except Exception as e:  # a sample file that cannot be read never stops training; the report still shows it
            self.console.print(f"note: validation sample {files.get('video')} not logged to TensorBoard: {e}",
                               highlight=False, markup=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
        self.jsonl.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


ANIMATION_WIDTH = 256  # px; a TensorBoard preview, the report has the full-size mp4
ANIMATION_FRAMES = 64  # at most; a longer sample shows every k-th frame (at the same speed)


def _animation_summary(tag: str, mp4: Path):
    """The mp4's frames as an animated GIF image summary (TensorBoard's IMAGES tab plays it)."""
    import av
    from tensorboard.compat.proto.summary_pb2 import Summary

    with av.open(str(mp4)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 24)
        frames = [f.to_image() for f in container.decode(stream)]
    if not frames:
        raise ValueError("no frames")
    stride = max(1, -(-len(frames) // ANIMATION_FRAMES))
    frames = frames[::stride]
    w, h = frames[0].size
    if w > ANIMATION_WIDTH:
        w, h = ANIMATION_WIDTH, max(1, round(h * ANIMATION_WIDTH / w))
        frames = [f.resize((w, h), Image.Resampling.BILINEAR) for f in frames]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], loop=0,
                   duration=max(20, round(1000 * stride / fps)))
    image = Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=gif.getvalue())
    return Summary(value=[Summary.Value(tag=tag, image=image)])


def _code(text: str) -> str:
    """Markdown code block (TensorBoard renders text as markdown): indented so nothing in it is formatting."""
    return "\n".join("    " + line for line in text.splitlines())


def _drop_steps_after(path: Path, step: int) -> None:
    """Keep the lines of `path` up to `step` (atomically rewritten; untouched when nothing goes). A line cut off
    by a kill, or one that is not a step record, goes too."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    keep = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if line.endswith("\n") and isinstance(record, dict) and isinstance(record.get("step"), int) \
                and record["step"] <= step:
            keep.append(line)
    if keep != lines:
        atomic_write(path, "".join(keep))


def _fmt(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
