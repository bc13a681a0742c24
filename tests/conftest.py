"""Shared test helpers: run the real CLI in a subprocess, the way a user does."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600) -> CliResult:
    """Run `ltx-lora ARGS` as a user would (python -m ltx_lora), with this checkout's sources first on the path."""
    full_env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                "COLUMNS": "200", "NO_COLOR": "1", **(env or {})}
    full_env.pop("LTX_LORA_DEBUG", None)
    p = subprocess.run([sys.executable, "-m", "ltx_lora", *map(str, args)], cwd=cwd, env=full_env,
                       capture_output=True, text=True, timeout=timeout)
    return CliResult(p.returncode, p.stdout, p.stderr)


def assert_user_error(res: CliResult, *needles: str) -> None:
    """Bad input: exit 2, one sentence on stderr, no traceback."""
    assert res.code == 2, (res.code, res.out, res.err)
    assert "Traceback" not in res.err + res.out, res.err
    for n in needles:
        assert n.lower() in res.err.lower(), (n, res.err)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """Factory: `tiny_checkpoint("dev")` -> path of a tiny release-shaped file under its real release name.

    Files are written once per test session and shared (treat them as read-only). Variants:
    ltx_lora.fixtures.checkpoints.VARIANTS.
    """
    from ltx_lora.fixtures.checkpoints import RELEASE_FILE_NAMES, write_tiny_checkpoint

    root = tmp_path_factory.mktemp("tiny-checkpoints")
    made: dict[str, Path] = {}

    def make(variant: str = "dev") -> Path:
        if variant not in made:
            made[variant] = write_tiny_checkpoint(root / RELEASE_FILE_NAMES[variant], variant)
        return made[variant]

    return make
# --- synthetic media (data-scan) ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def synthetic_clips(tmp_path_factory) -> Path:
    """A folder of small good clips (H.264 + AAC, several sizes and rates, some silent) and stills, most with
    side-car .txt captions: see `ltx_lora.fixtures.clips.SYNTHETIC_CLIPS`. Shared by the session: do not modify."""
    from ltx_lora.fixtures.clips import write_synthetic_clips

    folder = tmp_path_factory.mktemp("synthetic_clips")
    write_synthetic_clips(folder)
    return folder


# The buckets the shared dataset file is scanned with (tests/test_train.py's `prepared` preprocesses it).
BUCKETS = "64x64x9;96x64x9;64x96x9;64x64x1"


@pytest.fixture(scope="session")
def scanned_dataset(tmp_path_factory, synthetic_clips) -> Path:
    """`ltx-lora dataset scan` of `synthetic_clips` with `BUCKETS`, once per session: the dataset file (media paths
    relative to its folder). Shared, read-only: configs point at it; a test that changes rows writes its own file."""
    root = tmp_path_factory.mktemp("scanned")
    res = run_cli("dataset", "scan", synthetic_clips, "-o", root / "dataset.jsonl", "--buckets", BUCKETS)
    assert res.code == 0, res.err
    return root / "dataset.jsonl"


@pytest.fixture(scope="session")
def problem_clips(tmp_path_factory) -> dict[str, Path]:
    """{case: path} for every bad case of `ltx_lora.fixtures.clips.PROBLEM_CASES`, in one folder. Do not modify."""
    from ltx_lora.fixtures.clips import write_problem_clips

    return write_problem_clips(tmp_path_factory.mktemp("problem_clips"))


@pytest.fixture(scope="session")
def tiny_gemma(tmp_path_factory) -> Path:
    """A tiny Gemma 3 folder laid out like google/gemma-3-12b-it, generated offline once per session.

    Shared by every test of the session: copy it before changing anything in it.
    """
    from ltx_lora.fixtures.gemma import write_tiny_gemma

    return write_tiny_gemma(tmp_path_factory.mktemp("gemma") / "gemma-3-12b-it")
