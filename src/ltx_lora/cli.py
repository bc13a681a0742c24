"""The `ltx-lora` command line. Commands only: each one parses its options and calls into the package."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ltx_lora.errors import UserError

console = Console(stderr=True)

app = typer.Typer(
    name="ltx-lora",
    help="Train LoRAs on Lightricks' LTX-2.3 (22B audio-video): inspect checkpoints, prepare data, train, validate, "
    "export. Start with `ltx-lora demo` (no downloads needed) or `ltx-lora doctor`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
dataset_app = typer.Typer(help="Scan a folder of clips and stills into a dataset file with a report.", no_args_is_help=True)
lora_app = typer.Typer(help="Look inside, check, convert, verify and merge LoRA files.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")
app.add_typer(lora_app, name="lora")


@app.command()
def version() -> None:
    """Print the ltx-lora version."""
    from ltx_lora import __version__

    print(__version__)


@app.command()
def init(
    config: Path = typer.Argument(..., help="Where to write the new config, e.g. my-lora.yaml."),
    profile: str = typer.Option("auto", help="Memory profile: auto, 80gb, 48gb, 32gb or 24gb (the guide's GPU tiers)."),
    checkpoint: str = typer.Option("", help="Local path of the LTX-2.3 Dev checkpoint, written into model.checkpoint."),
    text_encoder: str = typer.Option("", help="Local Gemma 3 folder, written into model.text_encoder."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a commented training config with the guide's recommended settings for your GPU tier."""
    from ltx_lora.config_template import write_config

    path = write_config(config, profile, checkpoint, text_encoder, force)
    print(f"wrote {path} (profile {profile}); edit the paths, then run: ltx-lora doctor --config {path}")


@app.command()
def doctor(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Also check the model paths of this config."),
) -> None:
    """Check Python, torch, CUDA, GPU memory tier, disk, codecs and (with --config) every model path."""
    from rich.table import Table

    from ltx_lora.doctor import run_checks

    checks = run_checks(config)
    table = Table(show_header=False, box=None, pad_edge=False)
    colour = {"OK": "green", "WARN": "yellow", "FAIL": "red"}
    for c in checks:
        line = c.detail + (f"  -> {c.fix}" if c.fix else "")
        table.add_row(f"[{colour[c.status]}]{c.status}[/]", c.name, line)
    Console().print(table)
    if any(c.status == "FAIL" for c in checks):
        raise typer.Exit(1)


GPUS_HELP = ("Run on N GPUs of this machine (starts torchrun for you). Several machines: start torchrun on each, "
             "see README 'Several GPUs'.")


@app.command()
def preprocess(
    config: Path = typer.Argument(..., help="Training config (YAML): its data, model and validation sections are used."),
    gpus: int = typer.Option(1, "--gpus", min=1, help=GPUS_HELP + " Each GPU encodes its share of the clips."),
) -> None:
    """Encode clips into cached video/audio latents and captions + validation prompts into text features.

    Re-runs skip what is cached, redo what changed, and resume after a kill. Bad clips are skipped with a reason.
    """
    from ltx_lora.config import load_config
    from ltx_lora.data.preprocess import preprocess as run
    from ltx_lora.distributed.env import process_group

    cfg = load_config(config)
    if gpus > 1:
        from ltx_lora.distributed.launch import run_on_gpus

        raise typer.Exit(run_on_gpus(gpus, ["preprocess", str(config)], say=console.print))
    with process_group() as dist:
        result = run(cfg, console)
    if not dist.is_main:
        return
    rate = (result.used - result.reused) / max(result.seconds, 1e-9)
    print(f"used {result.used} clips ({result.reused} already cached), skipped {len(result.skipped)}, "
          f"{result.texts_encoded} texts encoded, {rate:.2f} clips/s")
    for media, reason in result.skipped:
        print(f"  skipped {media}: {reason}")


@app.command()
def train(
    config: Path = typer.Argument(..., help="Training config (YAML) from `ltx-lora init`."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest complete checkpoint of output_dir."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="Override train.steps (the total)."),
    gpus: int = typer.Option(1, "--gpus", min=1, help=GPUS_HELP + " distributed.strategy picks DDP or FSDP."),
) -> None:
    """Train a LoRA on the LTX-2.3 transformer from the preprocessed cache (run `ltx-lora preprocess` first)."""
    from ltx_lora.config import load_config
    from ltx_lora.distributed.env import process_group
    from ltx_lora.train.trainer import Trainer, TrainingFailed

    cfg = load_config(config)
    if gpus > 1:
        from ltx_lora.distributed.launch import run_on_gpus

        command = ["train", str(config), *(["--resume"] if resume else []),
                   *(["--max-steps", str(max_steps)] if max_steps else [])]
        raise typer.Exit(run_on_gpus(gpus, command, say=console.print))
    with process_group() as dist:
        try:
            out = Trainer(cfg, resume=resume, max_steps=max_steps).run()
        except TrainingFailed as e:
            if dist.is_main:
                console.print(f"[bold red]training stopped:[/] {e}", highlight=False)
            raise typer.Exit(1)
    if dist.is_main:
        print(out)


# --- inspect ---------------------------------------------------------------------------------------------------
@app.command()
def inspect(
    path: Path = typer.Argument(..., help="A .safetensors checkpoint or LoRA, any model file, or a model folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON instead of a panel."),
) -> None:
    """Say what a model file is (LTX-2.3 Dev / FP8 / Distilled, distilled LoRA, LTX-2.0, IC-LoRA, upscaler, Gemma
    folder, ...) and what to do with it. Reads only the file header: instant even for 46 GB files."""
    import json

    from ltx_lora.checkpoints import identify

    ident = identify(path)
    if as_json:
        print(json.dumps(ident.to_dict(), indent=2, default=str))
        return
    from rich.console import Console as RichConsole
    from rich.panel import Panel
    from rich.table import Table

    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row("kind", ident.kind)
    facts.add_row("LTX version", ident.family or "unknown")
    if ident.precision:
        facts.add_row("precision", ident.precision)
    facts.add_row("training base", "yes" if ident.is_trainable_base else "no")
    for key, value in ident.details.items():
        if value in (None, [], {}) or key == "config":
            continue
        if isinstance(value, list):
            value = ", ".join(map(str, value[:12])) + (", ..." if len(value) > 12 else "")
        elif isinstance(value, int) and value >= 10_000:
            value = f"{value:,}"
        facts.add_row(key.replace("_", " "), str(value))
    advice = "\n".join(f"- {a}" for a in ident.advice)
    body = Table.grid()
    body.add_row(f"[bold]{ident.summary}[/]")
    body.add_row("")
    body.add_row(facts)
    if advice:
        body.add_row("")
        body.add_row("[bold]What to do[/]")
        body.add_row(advice)
    RichConsole().print(Panel(body, title=str(path), expand=False), highlight=False)


# --- dataset scan -------------------------------------------------------------------------------------------------
@dataset_app.command("scan")
def dataset_scan(
    source: Path = typer.Argument(
        ..., help="A folder of clips and stills (searched recursively; captions come from side-car .txt files "
        "named like the clip), or an existing dataset file (.jsonl/.json/.csv) whose media should be re-checked."),
    output: Path = typer.Option(
        Path("dataset.jsonl"), "-o", "--output",
        help="Dataset file to write; its extension picks the format (.jsonl, .json or .csv). Media paths in it are "
        "relative to its folder (absolute for media outside it). The HTML report is written beside it (dataset.jsonl -> dataset_report.html)."),
    buckets: str = typer.Option(
        "960x544x49", "--buckets",
        help='Resolution buckets WIDTHxHEIGHTxFRAMES separated by ";" (width and height multiples of 32, frames '
        '8k+1: 1, 9, 17, ... 49). Add a 1-frame bucket such as 960x544x1 for stills.'),
    target_fps: Optional[float] = typer.Option(
        None, "--target-fps", help="Frame rate clips will be resampled to; it changes how many frames a clip "
        "gives. Default: each clip's own rate."),
    allow_shorter: bool = typer.Option(
        True, "--allow-shorter/--skip-shorter",
        help="A video too short for every multi-frame bucket gets a shortened one (a listed size, the longest 8k+1 "
        "frame count it fills) by default; with --skip-shorter it goes to a 1-frame bucket if one is listed, else "
        "it is skipped."),
) -> None:
    """Check every clip and still, assign buckets, and write a dataset file plus an HTML report.

    Each file is probed (size, frames, frame rate, rotation, audio, pixel format); unreadable, empty, duplicate
    or too-short files are skipped with a reason, never stopping the scan. Open the report in a browser to see
    a thumbnail, the bucket crop and every problem of each file.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ltx_lora.data.buckets import parse_buckets
    from ltx_lora.data.dataset_file import check_format, write_dataset
    from ltx_lora.data.report import report_path_for, write_report
    from ltx_lora.data.scan import dataset_entries, scan, summary_lines

    bucket_list = parse_buckets(buckets)
    check_format(output)
    report_path = report_path_for(output)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("eta"),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("probing", total=None)
        result = scan(source, bucket_list, target_fps=target_fps, allow_shorter=allow_shorter,
                      on_probe=lambda done, total, path: progress.update(task, completed=done, total=total))
        thumbs = progress.add_task("report", total=len(result.items))
        used = result.used
        if used:
            write_dataset(output, dataset_entries(result, output))
        write_report(result, report_path, output if used else None,
                     on_thumbnail=lambda done, total: progress.update(thumbs, completed=done))
    out = Console(highlight=False, markup=False, soft_wrap=True)
    for line in summary_lines(result):
        out.print(line)
    if not used:
        raise UserError(f"None of the {len(result.items)} media files in {source} can be used, so no dataset file "
                        f"was written; see {report_path} for the reason for each.")
    out.print(f"Wrote {output} ({len(used)} entries) and {report_path}.")


@app.command()
def demo(
    out: Path = typer.Option(Path("ltx-lora-demo"), "--out", help="Folder for everything the demo makes."),
    steps: int = typer.Option(50, "--steps", min=1, help="Training steps."),
    model: Optional[Path] = typer.Option(None, "--model", help="A real LTX-2.3 Dev checkpoint instead of the tiny one."),
    text_encoder: Optional[Path] = typer.Option(None, "--text-encoder", help="A real Gemma 3 folder (with --model)."),
) -> None:
    """Run the whole pipeline on a tiny generated model and synthetic clips: no downloads, no GPU needed.

    Stages: inspect, dataset scan, preprocess, train. Each is the same command you would run by hand.
    """
    from ltx_lora.demo import run_demo

    if (model is None) != (text_encoder is None):
        raise UserError("give --model and --text-encoder together (the real LTX-2.3 Dev file and Gemma 3 folder), "
                        "or neither for the tiny built-in model.")
    def invoke(args: list[str]) -> None:
        code = app(args, standalone_mode=False)
        if isinstance(code, int) and code != 0:  # a failed stage ends the demo with its code
            raise typer.Exit(code)

    run_demo(out, steps, model, text_encoder, invoke=invoke,
             say=lambda msg: console.print(f"[bold cyan]demo[/] {msg}", highlight=False))


def main() -> None:
    """Entry point: bad input ends with one sentence and exit 2, our own failures with exit 1."""
    try:
        # Without standalone mode click returns (not raises) the code of a typer.Exit: pass it on.
        code = app(prog_name="ltx-lora", standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except UserError as e:
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank meets the same error: rank 0 says it
            console.print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        console.print("interrupted")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - the last line of defence for a CLI
        if hasattr(e, "exit_code") and hasattr(e, "show"):  # a usage error of typer's (vendored) click
            e.show()
            sys.exit(e.exit_code)
        if os.environ.get("LTX_LORA_DEBUG"):
            raise
        console.print(f"[bold red]failed:[/] {type(e).__name__}: {e}", highlight=False)
        console.print("(set LTX_LORA_DEBUG=1 to see the traceback)")
        sys.exit(1)
