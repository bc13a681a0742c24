"""Generated docs are current (they come from the code, so they cannot drift)."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_cli_reference_matches_the_cli():
    from ltx_lora.cli_reference import render

    assert (DOCS / "cli.md").read_text() == render(), "run: python -m ltx_lora.cli_reference > docs/cli.md"


def test_flags_show_no_value_type():
    """An on/off flag takes no value (`--resume true` is an error), so its help shows no `<bool>` type."""
    from conftest import run_cli

    res = run_cli("train", "--help")
    assert res.code == 0 and "--resume" in res.out, res.err
    assert "<bool>" not in res.out and "<bool>" not in (DOCS / "cli.md").read_text()
    assert "<int range>" in res.out  # options that take a value still say which


def test_paths_show_one_value_type():
    """Every path shows `<path>`, also those a parser reads (typer would name their annotation: `<Path>`, or
    `<list[Path]>` for a repeatable one)."""
    import re

    from conftest import run_cli

    res = run_cli("lora", "check", "--help")
    assert res.code == 0, res.err
    assert re.search(r"\bfile +<path>", res.out) and re.search(r"--base +<path>", res.out), res.out
    text = (DOCS / "cli.md").read_text()
    assert re.search(r"--lora +<path>", text) and re.search(r"--preview-lora +<path>", text)
    assert "<Path>" not in text and "list[Path]" not in text
