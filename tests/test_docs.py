"""Generated docs are current (they come from the code, so they cannot drift)."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_cli_reference_matches_the_cli():
    from ltx_lora.cli_reference import render

    assert (DOCS / "cli.md").read_text() == render(), "run: python -m ltx_lora.cli_reference > docs/cli.md"
