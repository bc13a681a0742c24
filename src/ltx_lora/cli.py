"""The `ltx-lora` command line. Commands only: each one parses its options and calls into the package."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Optional, get_args

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text
from typer.core import TyperArgument, TyperOption

from ltx_lora.errors import UserError, environment_sentence
from ltx_lora.paths import reject_remote
from ltx_lora.progress import progress
from ltx_lora.task_catalog import DEFAULT_TASK, TASK_LINES

# Markup off: paths, captions and config values the user wrote are printed as written (a `[/]` in them is text,
# not a rich tag). Styled words are Text pieces (`_styled`).
console = Console(stderr=True, markup=False)
console.soft_wrap = not console.is_terminal  # a log (not a terminal) gets whole lines: never wrapped mid-path

# typer 0.29 shows a `<bool>` type beside every on/off flag (`--resume <bool>`), which reads as if the flag took a
# value, yet `--resume true` is an error. A flag shows no type.
_option_type = TyperOption.display_type_rich
TyperOption.display_type_rich = lambda self, ctx: None if self.is_flag and not self.count else _option_type(self, ctx)


# typer shows a path `<path>`, but names the annotation (`<Path>`, `<list[Path]>`) where a `parser` (`_local`) reads
# the value: every path shows `<path>`, a repeatable one too (its help says to repeat it).
def _path_type(display_type):
    def display(self, ctx):
        desc = self.type_descriptor
        value = get_args(desc.annotation)[0] if desc.is_list else desc.annotation
        return "<path>" if value is Path and not desc.is_path else display_type(self, ctx)

    return display


TyperOption.display_type = _path_type(TyperOption.display_type)
TyperArgument.display_type = _path_type(TyperArgument.display_type)


def _local(role: str, label: str):
    """typer parser of a model-file path: a URL or Hugging Face reference that is not a local path gets the sentence
    on how to download it. It sees the string as typed: a Path() collapses a URL's `//` (https:/huggingface.co)."""
    def parse(value: str) -> Path:
        if not Path(value).expanduser().exists():
            reject_remote(value, role, label)
        return Path(value)

    return parse


def _styled(label: str, style: str, rest: str) -> Text:
    """`label` in `style`, then `rest` as plain text (never parsed as markup)."""
    return Text.assemble((label, style), " ", rest)


def _finite(param: typer.CallbackParam, value: Optional[float]) -> Optional[float]:
    """Callback of every number option: `nan` and `inf` parse as floats, but no option means anything with them."""
    if value is not None and not math.isfinite(value):
        raise UserError(f"{param.opts[0] if param.opts else param.name} {value} is not a finite number; give one "
                        "such as 1.0.")
    return value


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
lora_app = typer.Typer(help="Look inside, check against a base, convert, verify and merge LoRA files.",
                       no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")
app.add_typer(lora_app, name="lora")


@app.command()
def version() -> None:
    """Print the ltx-lora version."""
    from ltx_lora import __version__

    print(__version__)


# typer's help is rich markup (rich_markup_mode): the task names are bold, their lines escaped.
_TASKS_EPILOG = "Tasks (--task); docs/tasks.md says which official ltx-trainer config each one matches:\n\n" + "\n\n".join(
    f"[bold]{name}[/]: {escape(line)}" for name, (line, _) in TASK_LINES.items())


@app.command(epilog=_TASKS_EPILOG)
def init(
    config: Path = typer.Argument(..., help="Where to write the new config, e.g. my-lora.yaml."),
    task: str = typer.Option(DEFAULT_TASK, help="What the LoRA learns (listed below); the config writes its video "
                             "and audio roles and conditions out, with the official recipe's settings."),
    profile: str = typer.Option("auto", help="The GPU memory the training plan is made for (memory.plan): auto (the "
                                "GPU's free memory when training starts), or 80gb (H100), 48gb (RTX 6000, A6000), "
                                "32gb (RTX 5090) or 24gb (RTX 4090, experimental); between two sizes take the lower "
                                "one (a 40 GB A100: 32gb)."),
    checkpoint: str = typer.Option("", help="Local path of the LTX-2.3 Dev checkpoint (ltx-2.3-22b-dev.safetensors "
                                   "or its FP8 version), written into model.checkpoint; leave out to fill it in later."),
    text_encoder: str = typer.Option("", help="Local Gemma 3 12B folder, written into model.text_encoder; leave out "
                                     "to fill it in later."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a commented training config for a task with the recommended settings for your GPU tier."""
    from ltx_lora.config_template import write_config

    path = write_config(config, profile, checkpoint, text_encoder, force, task=task)
    unset = [key for key, value in (("model.checkpoint", checkpoint), ("model.text_encoder", text_encoder)) if not value]
    dataset = path.parent / "dataset.jsonl"  # data.dataset as written: relative to the config's folder
    print(f"wrote {path} (task {task}, profile {profile}). Next: "
          + (f"set {' and '.join(unset)} in it to local paths; " if unset else "")
          + f"ltx-lora doctor --config {path}; ltx-lora dataset scan CLIPS/ -o {dataset} --task {path} (its "
          f"data.dataset); ltx-lora preprocess {path}; ltx-lora train {path}.")


@app.command()
def doctor(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Also check the model paths of this config."),
) -> None:
    """Check Python, torch, CUDA, GPU memory tier, disk, codecs and (with --config) every model path."""
    from rich.table import Table

    from ltx_lora.doctor import run_checks

    checks = run_checks(config)
    out = Console()
    lines = [(c.status, c.name, c.detail + (f"  -> {c.fix}" if c.fix else "")) for c in checks]
    if out.is_terminal:
        table = Table(show_header=False, box=None, pad_edge=False)
        colour = {"OK": "green", "WARN": "yellow", "FAIL": "red"}
        for status, name, line in lines:  # Text cells: paths in the details are not markup
            table.add_row(Text(status, style=colour[status]), Text(name), Text(line))
        out.print(table)
    else:  # a log or a pipe: one whole line a check, no path cut short or wrapped at 80 columns
        width = max(len(name) for _, name, _ in lines)
        for status, name, line in lines:
            print(f"{status:<5} {name:<{width}}  {line}")
    if any(c.status == "FAIL" for c in checks):
        raise typer.Exit(1)


GPUS_HELP = ("Run on N GPUs of this machine (starts torchrun for you). Several machines: start torchrun on each, "
             "see README 'Several GPUs'.")


@app.command()
def preprocess(
    config: Path = typer.Argument(..., help="Training config (YAML): its data, model and validation sections are used."),
    gpus: int = typer.Option(1, "--gpus", min=1, help=GPUS_HELP + " Each GPU encodes its share of the clips."),
    prune: bool = typer.Option(False, "--prune", help="Also remove the cache entries this config does not use "
                               "(made for other datasets, models or settings), listing each. Without it nothing is "
                               "ever removed: one cache serves several datasets and models."),
) -> None:
    """Encode clips into cached video/audio latents and captions + validation prompts into text features.

    Re-runs skip what is cached, redo what changed, and resume after a kill. Bad clips are skipped with a reason.
    Entries of other datasets, models or settings in the same cache are kept (--prune removes them).
    """
    from ltx_lora.config import load_config
    from ltx_lora.data.preprocess import preprocess as run
    from ltx_lora.distributed.env import process_group

    cfg = load_config(config)
    if gpus > 1:
        from ltx_lora.distributed.launch import run_on_gpus

        raise typer.Exit(run_on_gpus(gpus, ["preprocess", str(config), *(["--prune"] if prune else [])],
                                     say=console.print))
    with process_group() as dist:
        result = run(cfg, console, prune=prune)
    if not dist.is_main:
        return
    rate = (result.used - result.reused) / max(result.seconds, 1e-9)
    print(f"used {result.used} clips ({result.reused} already cached), skipped {len(result.skipped)}, "
          f"{result.texts_encoded} texts encoded, {rate:.2f} clips/s")
    for media, reason in result.skipped:
        print(f"  skipped {media}: {reason}")
    if result.stale_temps:
        print(f"removed {len(result.stale_temps)} temp file(s) a killed preprocess left in {cfg.data.cache_dir}")
    if result.pruned:
        print(f"pruned {len(result.unused)} cache entries this config does not use from {cfg.data.cache_dir}"
              + (":" if result.unused else ""))
        for rel in result.unused:
            print(f"  removed {rel}")
    elif result.unused:
        print(f"kept {len(result.unused)} cache entries this config does not use (other datasets, models or "
              f"settings); `ltx-lora preprocess {config} --prune` lists and removes them")


@app.command()
def train(
    config: Path = typer.Argument(..., help="Training config (YAML) from `ltx-lora init`."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest complete checkpoint of output_dir."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="Override train.steps (the total)."),
    gpus: int = typer.Option(1, "--gpus", min=1, help=GPUS_HELP + " distributed.strategy picks DDP or FSDP."),
) -> None:
    """Train a LoRA on the LTX-2.3 transformer from the preprocessed cache (run `ltx-lora preprocess` first)."""
    from ltx_lora.config import load_config
    from ltx_lora.distributed.env import locked, process_group
    from ltx_lora.runtime.run import resolve_run
    from ltx_lora.sample.validate import training_validation, write_training_report
    from ltx_lora.train.trainer import Trainer, TrainingFailed, TrainingInterrupted

    cfg = load_config(config)
    if gpus > 1:
        from ltx_lora.distributed.launch import run_on_gpus

        command = ["train", str(config), *(["--resume"] if resume else []),
                   *(["--max-steps", str(max_steps)] if max_steps else [])]
        raise typer.Exit(run_on_gpus(gpus, command, say=console.print))
    with process_group() as dist:
        run = resolve_run(cfg, max_steps=max_steps, dist=dist)
        with locked(dist, run.run_dir, "train", "run folder", say=console.print):  # one writer per run folder
            trainer = Trainer(run, resume=resume, validation=training_validation(run, console), console=console)
            try:
                out = trainer.train()
            except (TrainingFailed, TrainingInterrupted) as e:
                stopped = isinstance(e, TrainingInterrupted)
                if dist.is_main:
                    write_training_report(run)  # the loss curves up to where it stopped
                    if stopped:
                        console.print(f"interrupted {e}; continue with `ltx-lora train {config} --resume`.",
                                      highlight=False)
                    else:
                        console.print(_styled("training stopped:", "bold red", str(e)), highlight=False)
                raise typer.Exit(e.exit_status if stopped else 1)
            if dist.is_main:
                if trainer.trained:  # validation or not: report.html with the loss curves (and samples, if any)
                    console.print(f"report: {write_training_report(run)}", highlight=False)
                print(out)


# --- validate --------------------------------------------------------------------------------------------------
@app.command()
def validate(
    config: Path = typer.Argument(..., help="The training config: model, cache (for the prompts) and validation settings."),
    lora: list[Path] = typer.Option([], "--lora", parser=_local("lora", "--lora"),
                                    help="A LoRA file to sample (repeat for several: one column each)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=2, help="Denoising steps instead of validation.steps."),
    final: bool = typer.Option(False, "--final", help="Final quality check: 50 denoising steps."),
    preview_lora: Optional[Path] = typer.Option(
        None, "--preview-lora", parser=_local("lora", "--preview-lora"),
        help="Fast preview with this distilled LoRA (Dev + distilled-lora-384, 8 steps, CFG 1.0) at "
        "validation.preview_strength (0.55 by default; 1.0 burns the output)."),
    base: bool = typer.Option(True, "--base/--no-base", help="Also sample the base model without LoRA (the baseline)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: OUTPUT_DIR/validate)."),
) -> None:
    """Sample the validation prompts with LoRA files (same prompts, seed and settings as in training) and write
    mp4s with sound, contact sheets, records and a report.html comparing them side by side."""
    from ltx_lora.config import load_config
    from ltx_lora.runtime.run import FINAL_STEPS, resolve_run
    from ltx_lora.sample.validate import validate_loras

    if final and steps:
        raise UserError("give --final (50 steps) or --steps N, not both.")
    if preview_lora and (final or steps):
        raise UserError("--steps / --final do not apply to the fast preview (--preview-lora always samples 8 steps); "
                        "leave them out, or leave out --preview-lora for a full-quality check.")
    cfg = load_config(config)
    run = resolve_run(cfg, sampling_steps=FINAL_STEPS if final else steps,
                      preview_lora=str(preview_lora) if preview_lora else None)
    report = validate_loras(run, lora, out=out, base=base, console=console)
    print(report)


# --- inspect ---------------------------------------------------------------------------------------------------
@app.command()
def inspect(
    # str, not Path: a Path() around a URL would collapse its `//` before we could recognise it.
    path: str = typer.Argument(..., help="A .safetensors checkpoint or LoRA, any model file, or a model folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON instead of a panel."),
) -> None:
    """Say what a model file is (LTX-2.3 Dev / FP8 / Distilled, distilled LoRA, LTX-2.0, IC-LoRA, upscaler, Gemma
    folder, ...) and what to do with it. Reads only the file header: instant even for 46 GB files."""
    import json

    from ltx_lora.files.model_files import OTHER_FILE, identify
    from ltx_lora.paths import reject_remote

    if not Path(path).expanduser().exists():
        reject_remote(path, "checkpoint", "PATH")
    ident = identify(path)
    if ident.kind == OTHER_FILE:
        raise UserError(f"{path}: {ident.summary}")
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
        facts.add_row(key.replace("_", " "), Text(str(value)))
    advice = "\n".join(f"- {a}" for a in ident.advice)
    body = Table.grid()  # Text cells: names from the file and the path are not markup
    body.add_row(Text(ident.summary, style="bold"))
    body.add_row("")
    body.add_row(facts)
    if advice:
        body.add_row("")
        body.add_row(Text("What to do", style="bold"))
        body.add_row(Text(advice))
    RichConsole().print(Panel(body, title=Text(str(path)), expand=False), highlight=False)


# --- lora tools ---------------------------------------------------------------------------------------------------
def _print_report(report, report_lines, as_json: bool) -> None:
    """A `lora` command's report: JSON for scripts, else its lines as plain text."""
    if as_json:
        import json

        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        Console(highlight=False, markup=False, soft_wrap=True).print("\n".join(report_lines(report)))


@lora_app.command("inspect")
def lora_inspect(
    file: Path = typer.Argument(..., parser=_local("lora", "FILE"),
                                help="A LoRA .safetensors file in any layout (ComfyUI, diffusers, peft, kohya)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Show what a LoRA holds: key layout, rank(s), alpha(s) and the strength they ask for, which layers it adapts
    (video / audio / cross-modal attention, feed-forward, text connectors), which LTX version it was made for, and
    its metadata. Reads only the file header."""
    from ltx_lora.lora.inspect import inspect_lora, report_lines

    report = inspect_lora(file)
    _print_report(report, report_lines, as_json)


@lora_app.command("check")
def lora_check(
    file: Path = typer.Argument(..., parser=_local("lora", "FILE"), help="The LoRA .safetensors file to check."),
    base: Path = typer.Option(..., "--base", parser=_local("checkpoint", "--base"), help="The base checkpoint it will be used with, e.g. "
                              "ltx-2.3-22b-dev.safetensors (only its header is read)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Check that a LoRA would really do something on a base model.

    Every key is looked up the way ComfyUI maps LoRAs for LTX-2 (keys it does not know are skipped with only a log
    line: the LoRA "loads" but has no effect). Reports ignored keys, layers of the wrong shape, keys outside the
    transformer (text connectors), LoRAs made for another LTX version, and what ltx-core and diffusers would apply.
    Exit status: 0 clean, 1 findings, 2 unusable input.
    """
    from ltx_lora.lora.check import check, report_lines

    report = check(file, base)
    _print_report(report, report_lines, as_json)
    if not report.clean:
        raise typer.Exit(1)


@lora_app.command("convert")
def lora_convert(
    file: Path = typer.Argument(..., parser=_local("lora", "FILE"),
                                help="The LoRA .safetensors file to convert (any layout)."),
    to: str = typer.Option(..., "--to", help="Target layout: comfyui (also what ltx-core loads), kohya "
                           "(lora_unet_*, read by ComfyUI), diffusers (LTX2Pipeline.load_lora_weights) or peft "
                           "(base_model.model.* names)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Where to write; default: FILE_<target>"
                                          ".safetensors beside the input."),
    fold_alpha: bool = typer.Option(False, "--fold-alpha", help="comfyui/kohya: multiply lora_B by alpha/rank and "
                                    "drop the .alpha tensors, so ltx-core and diffusers apply the same strength as "
                                    "ComfyUI (diffusers and peft outputs are always folded)."),
    force: bool = typer.Option(False, "--force", help="Overwrite the output file."),
) -> None:
    """Rename a LoRA's keys to another tool's layout, keeping its strength (alpha/rank) and metadata.

    Covers attention, feed-forward and the modules whose names differ between ltx-core/ComfyUI and diffusers
    (patchify_proj = proj_in, adaln_single = time_embed, text connectors, ...)."""
    from ltx_lora.lora.convert import convert

    out = output or file.with_name(f"{file.stem}_{to}.safetensors")
    result = convert(file, to, out, fold_alpha=fold_alpha, overwrite=force)
    folded = ("alpha folded into lora_B" if result.alpha_folded else
              f"{result.alphas_kept} .alpha tensors kept" if result.alphas_kept else "no .alpha tensors")
    print(f"wrote {result.path}: {result.modules} modules, {result.source_format} -> {result.target}, {folded}")
    if result.dropped_keys:
        print(f"left out {len(result.dropped_keys)} tensors that are not LoRA pairs: {', '.join(result.dropped_keys[:4])}")


@lora_app.command("mix")
def lora_mix(
    video: Path = typer.Option(..., "--video", parser=_local("lora", "--video"),
                               help="The LoRA whose video layers to take (e.g. the latest checkpoint)."),
    audio: Path = typer.Option(..., "--audio", parser=_local("lora", "--audio"),
                               help="The LoRA whose audio layers to take (e.g. an earlier checkpoint, before its sound "
                                    "over-trained)."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the mixed LoRA (.safetensors)."),
    force: bool = typer.Option(False, "--force", help="Overwrite the output file."),
) -> None:
    """One LoRA from two: the video layers of one file and the audio layers of another.

    Audio usually learns faster than video, so the best sound may be in an earlier checkpoint than the best picture
    (the training report says when the audio loss has flattened). Each layer of a transformer block writes into
    the video or the audio tokens (attn1, attn2, ff, audio_to_video_attn: video; audio_attn1, audio_attn2,
    audio_ff, video_to_audio_attn: audio); the output keeps each with the strength its file applies, in ComfyUI's
    layout (which ltx-core and diffusers load too)."""
    from ltx_lora.lora.mix import mix

    result = mix(video, audio, output, overwrite=force)
    other = f", {result.layers['other']} other layers from {video.name}" if result.layers["other"] else ""
    print(f"wrote {result.path}: {result.layers['video']} video layers from {video.name}, {result.layers['audio']} "
          f"audio layers from {audio.name}{other}")


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


@lora_app.command("resize")
def lora_resize(
    file: Path = typer.Argument(..., parser=_local("lora", "FILE"), help="The LoRA .safetensors file (any layout)."),
    rank: int = typer.Option(..., "--rank", help="The new rank, below the file's (e.g. 16 for a rank-32 LoRA: "
                             "half the size)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Where to write; default: FILE_rankN"
                                          ".safetensors beside the input."),
    force: bool = typer.Option(False, "--force", help="Overwrite the output file."),
) -> None:
    """A smaller LoRA: each layer's change cut to its closest change of a lower rank.

    Each layer keeps its largest singular values (the closest change of that rank, as kohya's resize_lora); the
    output says how much of each change is kept (its Frobenius norm), overall and for the layer that loses most.
    Written in ComfyUI's layout with the strength folded in, which ltx-core and diffusers load too."""
    from ltx_lora.lora.resize import resize

    out = output or file.with_name(f"{file.stem}_rank{rank}.safetensors")
    r = resize(file, rank, out, overwrite=force)
    least = min(r.kept, key=r.kept.get)
    print(f"wrote {r.path}: {len(r.kept)} layers at rank {r.rank} (was {', '.join(map(str, r.ranks_before))}), "
          f"{_size(r.bytes_before)} -> {_size(r.bytes_after)}; kept {r.overall:.1%} of the change "
          f"(Frobenius norm), the least of a layer {r.kept[least]:.1%} ({least.removeprefix('diffusion_model.')})")


@lora_app.command("ema")
def lora_ema(
    files: list[Path] = typer.Argument(
        ..., parser=_local("lora", "FILE"),
        help="Two or more LoRA files of one run's checkpoints (e.g. "
             "runs/my-lora/checkpoints/*/my-lora_step_??????.safetensors)."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the averaged LoRA."),
    beta: float = typer.Option(0.95, "--beta", callback=_finite, help="Decay: how much of the average each newer "
                               "file keeps (0.95: each adds 5%)."),
    beta2: Optional[float] = typer.Option(None, "--beta2", callback=_finite, help="Decay at the last file; it moves "
                                          "linearly from --beta (musubi-tuner's option). Default: --beta throughout."),
    force: bool = typer.Option(False, "--force", help="Overwrite the output file."),
) -> None:
    """One smoother LoRA from several checkpoints of a run trained without train.ema: their exponential moving
    average, oldest first (musubi-tuner's post-hoc EMA).

    Files are ordered by the training step each records (every ltx-lora export does), else by modification time;
    each file's strength is folded in first. Written in ComfyUI's layout, which ltx-core and diffusers load too."""
    from ltx_lora.lora.ema import post_hoc_ema

    r = post_hoc_ema(files, output, beta=beta, beta2=beta2, overwrite=force)
    order = ", ".join(f"{name} ({what})" for name, what in r.order)
    betas = f"{r.betas[0]:g}" if len(set(r.betas)) == 1 else f"{r.betas[0]:g} -> {r.betas[-1]:g}"
    print(f"wrote {r.path}: {r.layers} layers, the EMA of {len(r.order)} files oldest first ({order}), decay {betas}")


@lora_app.command("verify")
def lora_verify(
    file: Path = typer.Argument(..., parser=_local("lora", "FILE"), help="The LoRA .safetensors file."),
    base: Path = typer.Option(..., "--base", parser=_local("checkpoint", "--base"),
                              help="The base checkpoint (bf16 or FP8) to apply it to."),
    strength: float = typer.Option(1.0, "--strength", callback=_finite,
                                   help="LoRA strength, as in ComfyUI's LoRA loader."),
    device: str = typer.Option("auto", "--device", help="auto (the GPU when there is one), cuda or cpu (small "
                               "bases only: the 22B model needs a GPU with ~48 GB)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Prove the LoRA changes the model: run the base transformer on a fixed random sample with and without the
    LoRA and print the relative change of the video and audio outputs per module group, and per consumer (ComfyUI,
    ltx-core, diffusers: the modules `lora check` says each applies; ltx-lora reads every layout). Exit 1 when it has
    no effect even with ltx-lora's reader."""

    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn

    from ltx_lora.lora.verify import report_lines, verify

    with progress(console, TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn()) as bar:
        task = bar.add_task("forward passes", total=None)
        report = verify(file, base, strength, device,
                        on_progress=lambda done, total: bar.update(task, completed=done, total=total))
    _print_report(report, report_lines, as_json)
    if not report.has_effect:
        raise typer.Exit(1)


@lora_app.command("merge")
def lora_merge(
    file: Path = typer.Argument(..., parser=_local("lora", "FILE"), help="The LoRA .safetensors file (any layout)."),
    base: Path = typer.Option(..., "--base", parser=_local("checkpoint", "--base"),
                              help="The unified base checkpoint, e.g. ltx-2.3-22b-dev.safetensors."),
    output: Path = typer.Option(..., "-o", "--output", help="The merged checkpoint to write."),
    strength: float = typer.Option(1.0, "--strength", callback=_finite,
                                   help="LoRA strength to bake in (ComfyUI's meaning)."),
    force: bool = typer.Option(False, "--force", help="Overwrite the output file."),
) -> None:
    """Write a copy of the base checkpoint with the LoRA fused into its weights: same layout, config and metadata,
    so ltx-core and ComfyUI load it like the original. FP8 bases are re-quantised with new scales. Refuses a LoRA
    that does not fit the base (see `ltx-lora lora check`)."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn

    from ltx_lora.lora.merge import merge

    with progress(console, TextColumn("fusing"), BarColumn(), MofNCompleteColumn()) as p:
        task = p.add_task("fusing", total=None)
        result = merge(file, base, output, strength, overwrite=force,
                       on_progress=lambda done, total: p.update(task, completed=done, total=total))
    extra = f", {result.fp8_requantised} FP8 weights re-quantised" if result.fp8_requantised else ""
    print(f"wrote {result.path}: {result.modules} weights fused at strength {result.strength:g}{extra}")


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
        None, "--target-fps", callback=_finite, help="Frame rate clips will be resampled to; it changes how many frames a clip "
        "gives. Default: each clip's own rate."),
    allow_shorter: bool = typer.Option(
        True, "--allow-shorter/--skip-shorter",
        help="A video too short for every multi-frame bucket gets a shortened one (a listed size, the longest 8k+1 "
        "frame count it fills) by default; with --skip-shorter it goes to a 1-frame bucket if one is listed, else "
        "it is skipped."),
    task: Optional[str] = typer.Option(
        None, "--task", help="Judge the clips as this task trains (a preset of `ltx-lora init --task`, or a "
        "config .yaml: its task and train.fps, as preprocess judges them): the references and masks it needs must "
        "be in each row and fit the clip, a task without video takes sound files too. Default: check whatever "
        "files the rows name."),
) -> None:
    """Check every clip and still, assign buckets, and write a dataset file plus an HTML report.

    Each file is probed (size, frames, frame rate, rotation, audio, pixel format); unreadable, empty, duplicate
    or too-short files are skipped with a reason, never stopping the scan. Open the report in a browser to see
    a thumbnail, the bucket crop and every problem of each file.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from ltx_lora.bucket_spec import parse_buckets
    from ltx_lora.data.dataset_file import check_format, write_dataset
    from ltx_lora.data.report import report_path_for, write_report
    from ltx_lora.data.scan import dataset_entries, scan, summary_lines
    from ltx_lora.task import TASK_PRESETS, resolve_task

    task_config, audio_fps = None, 24.0
    if task is not None and Path(task).suffix.lower() in (".yaml", ".yml"):
        from ltx_lora.config import load_config

        cfg = load_config(task)
        task_config, audio_fps = resolve_task(cfg.task), cfg.train.fps
    elif task is not None:
        if task not in TASK_PRESETS:
            raise UserError(f"--task {task} is neither a task nor a config .yaml; use one of "
                            f"{', '.join(TASK_PRESETS)}, or the training config.")
        task_config = resolve_task(task)
    bucket_list = parse_buckets(buckets)
    check_format(output)
    report_path = report_path_for(output)
    columns = (TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TextColumn("eta"),
               TimeRemainingColumn())
    with progress(console, *columns) as bar:
        task = bar.add_task("probing", total=None)
        result = scan(source, bucket_list, target_fps=target_fps, allow_shorter=allow_shorter, task=task_config,
                      audio_fps=audio_fps, on_probe=lambda done, total, path: bar.update(task, completed=done, total=total))
        thumbs = bar.add_task("report", total=len(result.items))
        rows = result.placed  # used, or waiting for a caption
        if rows:
            write_dataset(output, dataset_entries(result, output))
        write_report(result, report_path, output if rows else None,
                     on_thumbnail=lambda done, total: bar.update(thumbs, completed=done))
    out = Console(highlight=False, markup=False, soft_wrap=True)
    for line in summary_lines(result):
        out.print(line)
    if not rows:
        raise UserError(f"None of the {len(result.items)} media files in {source} can be used, so no dataset file "
                        f"was written; see {report_path} for the reason for each.")
    out.print(f"Wrote {output} ({len(rows)} entries) and {report_path}.")


# --- caption ----------------------------------------------------------------------------------------------------
@app.command()
def caption(
    source: Path = typer.Argument(
        ..., help="A folder of clips and stills (searched recursively; each caption goes to a side-car .txt beside "
        "its clip, where `dataset scan` reads it) or a dataset file (.jsonl/.json/.csv; captions go to its caption "
        "column; its sound-only rows are captioned by ear, with Qwen2.5-Omni)."),
    model: Optional[Path] = typer.Option(
        None, "--model", help="Local model folder: gemma-3-12b-it (the text-encoder folder you already have; it "
        "sees the frames) or a Qwen2.5-Omni folder (sees the frames and hears the sound)."),
    endpoint: Optional[str] = typer.Option(
        None, "--endpoint", help="Instead of --model: the base URL of an OpenAI-compatible server (vLLM, llama.cpp, "
        "a cloud API), e.g. http://127.0.0.1:8000/v1. Frames are sent as images."),
    api_model: Optional[str] = typer.Option(None, "--api-model", help="The model name the endpoint serves."),
    api_key_env: str = typer.Option(
        "OPENAI_API_KEY", "--api-key-env", help="Environment variable holding the endpoint's API key (sent as a "
        "Bearer token when set; the key itself never goes on the command line)."),
    style: str = typer.Option(
        "ltx", "--style", help="ltx: one detailed paragraph in the official LTX captioner's style (shots, camera, "
        "people, setting, on-screen text and, with Qwen2.5-Omni, speech and sound); plain: one or two short "
        "sentences."),
    instruction: Optional[str] = typer.Option(None, "--instruction", help="Your own request to the model, "
                                              "replacing the style's."),
    trigger: str = typer.Option(
        "", "--trigger", help="A trigger word (or any prefix) put in front of every new caption, e.g. 'zxq_style'. "
        "preprocess adds data.trigger_word the same way and never twice."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing captions. By default clips that "
                                   "already have one keep it."),
    frames: int = typer.Option(8, "--frames", min=1, help="Frames sampled evenly across each clip."),
    max_tokens: int = typer.Option(512, "--max-tokens", min=8, help="The most tokens one caption may have."),
    device: str = typer.Option("auto", "--device", help="auto (the GPU when there is one), cpu, cuda or cuda:N."),
) -> None:
    """Write a caption for every clip and still that has none, with a local model or your own endpoint.

    Each caption is written as soon as it is made, so an interrupted run continues where it stopped when you run
    the same command again. Clips that cannot be decoded are listed at the end and skipped. Review the captions
    before training: models miss things and sometimes invent them.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from ltx_lora.data.caption import STYLES, CaptionStore, caption_source
    from ltx_lora.data.caption_backends import load_captioner

    if style not in STYLES:
        raise UserError(f"Unknown caption style '{style}'; use one of: {', '.join(STYLES)}.")
    store = CaptionStore(source)  # bad sources fail before a model is loaded
    with console.status("loading the captioning model"):
        captioner = load_captioner(model=model, endpoint=endpoint, api_model=api_model, api_key_env=api_key_env,
                                   device=device, max_new_tokens=max_tokens)
    columns = (TextColumn("captioning"), BarColumn(), MofNCompleteColumn(), TextColumn("eta"), TimeRemainingColumn(),
               TextColumn("{task.fields[current]}", markup=False))
    with progress(console, *columns) as bar:
        task = bar.add_task("captioning", total=None, current="")
        result = caption_source(source, captioner, style=style, instruction=instruction, trigger=trigger,
                                overwrite=overwrite, num_frames=frames, store=store,
                                on_progress=lambda done, total, cur: bar.update(task, completed=done, total=total,
                                                                                current=cur))
    out = Console(highlight=False, markup=False, soft_wrap=True)
    for line in result.summary_lines():
        out.print(line)
    if result.failed and not (result.captioned or result.kept):
        raise typer.Exit(1)


@app.command()
def demo(
    out: Path = typer.Option(Path("ltx-lora-demo"), "--out", help="Folder for everything the demo makes."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1,
                                        help="Training steps (default: 120 on the tiny model, 50 on a real one)."),
    model: Optional[Path] = typer.Option(None, "--model", parser=_local("checkpoint", "--model"),
                                         help="A real LTX-2.3 Dev checkpoint instead of the tiny one."),
    text_encoder: Optional[Path] = typer.Option(None, "--text-encoder", parser=_local("text_encoder", "--text-encoder"),
                                                help="A real Gemma 3 folder (with --model)."),
) -> None:
    """Run the whole pipeline on a tiny generated model and synthetic clips: no downloads, no GPU needed.

    Stages: inspect, dataset scan, preprocess, train (with validation samples and report.html), lora check on the
    exported LoRA. Each is the same command you would run by hand, printed before it runs.
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
             say=lambda msg: console.print(_styled("demo", "bold cyan", msg), highlight=False))


def _unwrap_help(*apps: typer.Typer) -> None:
    """Make each paragraph of every command's docstring one line. typer's rich help keeps a docstring's line breaks
    (wrapped at 120 columns in this file) inside its own wrapping, which left half-empty lines in `--help` at any
    other width (`... and write` / `mp4s with sound ...`); the terminal now wraps each paragraph."""
    import inspect

    for group in apps:
        for info in group.registered_commands:
            doc = info.help or (inspect.getdoc(info.callback) if info.callback else None)
            if doc:
                info.help = "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(doc).split("\n\n"))


_unwrap_help(app, dataset_app, lora_app)


def _say_error(label: str, message: str, every_rank: bool = False) -> None:
    # Under torchrun every rank meets the same bad input: rank 0 says it. A crash may be one rank's own: all say it.
    if every_rank or os.environ.get("RANK", "0") == "0":  # one line: a newline in a quoted value stays inside it
        console.print(_styled(label, "bold red", " ".join(message.splitlines())), highlight=False)


def main() -> None:
    """Entry point, and the CLI's one error boundary: bad input, and faults of the machine the user can fix (full
    disk, an output path that is a folder), end with one sentence and exit 2; our own failures with exit 1."""
    try:
        # Without standalone mode click returns (not raises) the code of a typer.Exit: pass it on.
        code = app(prog_name="ltx-lora", standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except UserError as e:
        _say_error("error:", str(e))
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        console.print("interrupted")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:
        if hasattr(e, "exit_code") and hasattr(e, "show"):  # a usage error of typer's (vendored) click
            e.show()
            sys.exit(e.exit_code)
        sentence = environment_sentence(e)
        if sentence is not None:
            _say_error("error:", sentence)
            sys.exit(2)
        if os.environ.get("LTX_LORA_DEBUG"):
            raise
        _say_error("failed:", f"{type(e).__name__}: {e}", every_rank=True)
        console.print("(set LTX_LORA_DEBUG=1 to see the traceback)")
        sys.exit(1)


if __name__ == "__main__":  # `python -m ltx_lora.cli` as well as `python -m ltx_lora`
    main()
