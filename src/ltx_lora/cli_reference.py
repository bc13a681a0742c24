"""docs/cli.md: every command's `--help`, generated from the CLI itself so the reference cannot drift.

python -m ltx_lora.cli_reference > docs/cli.md   (tests/test_docs.py checks that the file is current)
"""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from ltx_lora.cli import app

WIDTH = 100


def _command_paths(group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for name in sorted(getattr(group, "commands", {})):
        cmd = group.commands[name]
        if getattr(cmd, "hidden", False):
            continue
        paths.append((*prefix, name))
        paths.extend(_command_paths(cmd, (*prefix, name)))
    return paths


def _help(app: typer.Typer, path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], prog_name="ltx-lora", terminal_width=WIDTH,
                                env={"COLUMNS": str(WIDTH), "NO_COLOR": "1", "TERM": "dumb"})
    assert result.exit_code == 0, (path, result.output)
    return "\n".join(line.rstrip() for line in result.output.splitlines()).strip("\n")


def render() -> str:
    parts = ["# Command-line reference", "",
             "Generated from the CLI's own `--help` (`python -m ltx_lora.cli_reference > docs/cli.md`); "
             "`ltx-lora COMMAND --help` prints the same text.", ""]
    for path in [(), *_command_paths(typer.main.get_command(app))]:
        parts += [f"## {' '.join(('ltx-lora', *path))}", "", "```text", _help(app, path), "```", ""]
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
