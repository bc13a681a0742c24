"""Training metrics: one console line per step, `metrics.jsonl` (for the report's plots), TensorBoard, W&B."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ltx_lora.config import LoggingConfig
from ltx_lora.files.atomic import atomic_write


def _gpu_memory() -> str:
    if not torch.cuda.is_available():
        return ""
    return f" | mem {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"


class MetricsLogger:
    def __init__(self, run_dir: Path, cfg: LoggingConfig, console, total_steps: int, start: int):
        self.console = console
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

                self.tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
            except ImportError:
                console.print("tensorboard is not installed: metrics go to metrics.jsonl only")
        if cfg.wandb:
            try:
                import wandb

                self.wandb = wandb.init(project=cfg.wandb_project, dir=str(run_dir), resume="allow")
            except ImportError:
                console.print("wandb is not installed (pip install wandb): metrics go to metrics.jsonl only")

    def log_step(self, step: int, video_loss: float, audio_loss: float | None, lr: float, seconds: float) -> None:
        record = {"step": step, "loss_video": video_loss, "loss_audio": audio_loss, "lr": lr, "s_per_step": seconds}
        self.jsonl.write(json.dumps(record) + "\n")
        if self.tb is not None:
            self.tb.add_scalar("loss/video", video_loss, step)
            if audio_loss is not None:
                self.tb.add_scalar("loss/audio", audio_loss, step)
            self.tb.add_scalar("lr", lr, step)
            self.tb.add_scalar("s_per_step", seconds, step)
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in record.items() if v is not None}, step=step)
        done = step - self.start
        elapsed = time.perf_counter() - self.t_start
        eta = elapsed / max(done, 1) * (self.total - step)
        audio = f" audio {audio_loss:.4f}" if audio_loss is not None else ""
        self.console.print(f"step {step}/{self.total} | loss video {video_loss:.4f}{audio} | lr {lr:.2e} | "
                           f"{seconds:.2f} s/step | ETA {_fmt(eta)}{_gpu_memory()}", highlight=False)

    def close(self) -> None:
        self.jsonl.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


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
