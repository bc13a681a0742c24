"""Why a CUDA-graph capture of the training step fails: runs bench/train_step.py with every Python exception raised
while a capture is underway recorded (even one that something caught), then prints them in order.

CUDA reports a capture broken by an earlier illegal call as "operation failed due to a previous error during
capture", which names no cause; the trainer then falls back to eager steps with that line (seen at batch 4 on an
H200, 2026-12-04: bench/README.md, throughput). The first exception raised inside the capture usually is the cause.
Needs Python 3.12+ (sys.monitoring) and a GPU; the arguments are train_step.py's:

    python bench/capture_errors.py --variants ours_b4 --steps 1 --warmup 1
"""

from __future__ import annotations

import os
import runpy
import sys
import traceback
from pathlib import Path

import torch

MAX_RECORDED = 8
STDLIB = os.path.dirname(os.__file__)


def main() -> None:
    if not hasattr(sys, "monitoring"):
        sys.exit("bench/capture_errors.py needs Python 3.12 or newer (sys.monitoring).")
    recorded: list[tuple[str, str]] = []
    mon = sys.monitoring
    tool = next(t for t in range(6) if mon.get_tool(t) is None)
    mon.use_tool_id(tool, "capture-errors")

    def on_raise(code, offset, exc):  # noqa: ARG001 - sys.monitoring's signature
        # inspect.signature probes attributes by catching AttributeError (torch's checkpoint calls it every block):
        # the standard library's own probing is never the cause.
        if code.co_filename.startswith(STDLIB) and "-packages" not in code.co_filename:
            return
        if len(recorded) < MAX_RECORDED and torch.cuda.is_current_stream_capturing():
            stack = "".join(traceback.format_stack(limit=16)[:-1])
            recorded.append((f"{type(exc).__name__}: {str(exc)[:400]}", stack))

    mon.register_callback(tool, mon.events.RAISE, on_raise)
    mon.set_events(tool, mon.events.RAISE)
    script = Path(__file__).with_name("train_step.py")
    sys.argv = [str(script), *sys.argv[1:]]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        mon.set_events(tool, 0)
        mon.free_tool_id(tool)
        print(f"== {len(recorded)} exception(s) raised while capturing, first to last:", flush=True)
        for message, _ in recorded:
            print(f"   {message}", flush=True)
        for message, stack in recorded:
            print(f"---- {message}\n{stack}", flush=True)


if __name__ == "__main__":
    main()
