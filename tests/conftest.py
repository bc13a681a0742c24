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
def tiny_gemma(tmp_path_factory) -> Path:
    """A tiny Gemma 3 folder laid out like google/gemma-3-12b-it, generated offline once per session.

    Shared by every test of the session: copy it before changing anything in it.
    """
    from ltx_lora.fixtures.gemma import write_tiny_gemma

    return write_tiny_gemma(tmp_path_factory.mktemp("gemma") / "gemma-3-12b-it")
