"""Progress of long work: a live bar on a terminal, plain lines in a log.

A rich `Progress` writes nothing useful into a log (a file, a pipe, a job scheduler's output): a transient bar leaves
an empty line behind, a kept one prints its final state once the work is over, hours later for captioning or
preprocessing a large dataset. `progress(console, *columns)` is the rich bar on a terminal and, anywhere else, a
`LogProgress` with the same calls (`add_task`, `update`, `advance`) that prints one line per task now and then
("encoding clips 120/3000 (4%), 0:02:10 elapsed, about 0:50:00 left") and one when the task completes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta

LOG_EVERY_S = 30.0  # a line per running task at most this often


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=int(seconds)))


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float = 0
    fields: dict = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    last_line: float = field(default_factory=time.monotonic)
    finished: bool = False


class LogProgress:
    """What rich's Progress shows, as lines: at most one every `every_s` seconds per task while it runs, and one when
    it completes (unless `final_line` is off: a caller that prints its own summary then)."""

    def __init__(self, console, every_s: float = LOG_EVERY_S, final_line: bool = True):
        self.console = console
        self.every_s = every_s
        self.final_line = final_line
        self.tasks: list[_Task] = []

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **fields) -> int:
        self.tasks.append(_Task(description, total, completed, dict(fields)))
        return len(self.tasks) - 1

    def advance(self, task: int, advance: float = 1) -> None:
        self.update(task, advance=advance)

    def update(self, task: int, *, completed: float | None = None, total: float | None = None,
               advance: float | None = None, description: str | None = None, **fields) -> None:
        t = self.tasks[task]
        if total is not None:
            t.total = total
        if completed is not None:
            t.completed = completed
        if advance is not None:
            t.completed += advance
        if description is not None:
            t.description = description
        t.fields.update(fields)
        now = time.monotonic()
        done = t.total is not None and t.completed >= t.total
        if done and not t.finished:
            t.finished = True
            if self.final_line:
                self._line(t, now)
        elif not done and now - t.last_line >= self.every_s:
            self._line(t, now)

    def _line(self, t: _Task, now: float) -> None:
        t.last_line = now
        elapsed = now - t.started
        count = f"{t.completed:g}" if t.total is None else f"{t.completed:g}/{t.total:g}"
        parts = [f"{t.description} {count}"]
        if t.total:
            parts[0] += f" ({100 * t.completed / t.total:.0f}%)"
        parts.append(f"{_clock(elapsed)} elapsed")
        if t.total and 0 < t.completed < t.total:
            parts.append(f"about {_clock(elapsed * (t.total - t.completed) / t.completed)} left")
        current = t.fields.get("current")
        if current:
            parts.append(str(current))
        self.console.print(", ".join(parts), highlight=False, markup=False)


def progress(console, *columns, transient: bool = True, every_s: float = LOG_EVERY_S, final_line: bool = True):
    """A rich live bar with `columns` on a terminal, else a `LogProgress` (see the module docstring)."""
    if getattr(console, "is_terminal", False):
        from rich.progress import Progress

        return Progress(*columns, console=console, transient=transient)
    return LogProgress(console, every_s=every_s, final_line=final_line)
