"""Long work in a log: plain progress lines (no bar, no empty lines); on a terminal rich's live bar."""

from __future__ import annotations

import io

from conftest import run_cli
from rich.console import Console
from rich.progress import Progress

from ltx_lora.progress import LogProgress, progress


def _log_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200, markup=False), out


def test_log_progress_prints_lines_with_count_share_elapsed_and_what_is_next():
    console, out = _log_console()
    with progress(console, every_s=0) as bar:
        assert isinstance(bar, LogProgress)
        task = bar.add_task("encoding clips", total=4)
        for _ in range(4):
            bar.advance(task)
        bar.update(task, completed=4)  # a repeated completion prints nothing more
        named = bar.add_task("captioning", total=None, current="")
        bar.update(named, completed=0, total=2, current="clips/a.mp4")
        bar.update(named, completed=2, total=2, current="")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("encoding clips 1/4 (25%), 0:00:00 elapsed, about 0:00:00 left")
    assert lines[3].startswith("encoding clips 4/4 (100%), 0:00:00 elapsed") and "left" not in lines[3]
    assert lines[4] == "captioning 0/2 (0%), 0:00:00 elapsed, clips/a.mp4"
    assert lines[5].startswith("captioning 2/2 (100%)") and len(lines) == 6 and all(lines)


def test_log_progress_waits_between_lines_and_can_leave_the_end_to_the_caller():
    console, out = _log_console()
    bar = LogProgress(console, every_s=3600, final_line=False)
    task = bar.add_task("sampling", total=30)
    for n in range(1, 31):
        bar.update(task, completed=n)
    assert out.getvalue() == ""  # nothing within the interval, and no final line (the caller prints the sample's)
    bar = LogProgress(console, every_s=3600)
    task = bar.add_task("probing", total=None)
    bar.update(task, completed=5)  # unknown total: no end to announce yet
    bar.update(task, completed=7, total=7)
    assert out.getvalue().splitlines() == ["probing 7/7 (100%), 0:00:00 elapsed"]


def test_a_terminal_gets_the_live_bar():
    assert isinstance(progress(Console(file=io.StringIO(), force_terminal=True)), Progress)


def test_scan_in_a_log_prints_clean_progress_lines(synthetic_clips, tmp_path):
    res = run_cli("dataset", "scan", synthetic_clips, "-o", tmp_path / "d.jsonl", "--buckets", "64x64x9")
    assert res.code == 0, res.err
    lines = res.err.splitlines()
    assert all(line.strip() for line in lines), res.err  # no empty line left by a bar
    assert any(line.startswith("probing ") and "(100%)" in line for line in lines), res.err
    assert "━" not in res.err  # no bar drawn into the log
