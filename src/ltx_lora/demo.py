"""`ltx-lora demo`: the whole pipeline on the embedded default, a tiny LTX-2.3-format model and synthetic clips.

Every stage is the real command a user runs (inspect, dataset scan, preprocess, train with validation,
lora check), on files generated
here in seconds, so a fresh machine with no downloads and no GPU proves the installation end to end. With
--model/--text-encoder pointing at the real LTX-2.3 files it runs the same short pipeline for real.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Callable

import yaml

from ltx_lora.config import parse_config
from ltx_lora.fixtures.checkpoints import RELEASE_FILE_NAMES, write_tiny_checkpoint
from ltx_lora.fixtures.clips import write_synthetic_clips
from ltx_lora.fixtures.gemma import write_tiny_gemma

# Small enough for 2 CPU cores; the tiny VAE still compresses 32x in space and 8x in time (64x64x9 -> 2x2x2).
DEMO_BUCKETS = "64x64x9;96x64x9;64x96x9;64x64x1"
REAL_BUCKETS = "512x512x49;512x512x1"
DEMO_PROMPTS = ["a red disc bounces across a dark room with a rising tone",
                "a small blue square drifts slowly to the right"]


def prepare_inputs(out: Path, model: Path | None, text_encoder: Path | None, say: Callable[[str], None]) -> tuple[Path, Path, Path]:
    """The model, the text encoder and a clip folder: the given ones, or generated."""
    clips = out / "clips"
    if not clips.is_dir():
        write_synthetic_clips(clips)
    say(f"clips: {sum(1 for _ in clips.rglob('*') if _.suffix in ('.mp4', '.png', '.jpg'))} synthetic clips and "
        f"stills with side-car captions in {clips}")
    if model is None:

        model = out / "models" / RELEASE_FILE_NAMES["dev"]
        if not model.is_file():
            write_tiny_checkpoint(model, "dev")
        say(f"model: tiny LTX-2.3-format checkpoint {model}")
    if text_encoder is None:

        text_encoder = out / "models" / "gemma-3-12b-it"
        if not (text_encoder / "config.json").is_file():
            write_tiny_gemma(text_encoder)
        say(f"text encoder: tiny Gemma 3 folder {text_encoder}")
    return model, text_encoder, clips


def write_demo_config(out: Path, model: Path, text_encoder: Path, steps: int, tiny: bool) -> Path:
    def rel(p: Path) -> str:  # relative paths in a config start at its folder (out): the demo can be moved
        try:
            return Path(p).resolve().relative_to(out.resolve()).as_posix()
        except ValueError:
            return str(Path(p).resolve())

    cfg = {
        "output_dir": "run",
        "model": {"checkpoint": rel(model), "text_encoder": rel(text_encoder)},
        "data": {"dataset": "dataset.jsonl", "buckets": DEMO_BUCKETS if tiny else REAL_BUCKETS, "cache_dir": "cache"},
        "train": {"steps": steps, "learning_rate": 1e-3 if tiny else 1e-4,
                  "mixed_precision": "fp32" if tiny else "bf16", "scheduler": "constant"},
        "checkpoints": {"every": max(1, steps // 2), "keep_last": 2},
        # Samples at step 0 and at the end; the tiny model has 2 blocks (STG on the last) and gives noise, fast.
        "validation": {"prompts": DEMO_PROMPTS, "every": steps,
                       **({"resolution": "64x64x9", "steps": 3, "stg_blocks": [1]} if tiny else {})},
    }
    parse_config(cfg)  # the demo's own config must be valid before anything runs
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_demo(out: Path, steps: int, model: Path | None, text_encoder: Path | None,
             invoke: Callable[[list[str]], None], say: Callable[[str], None]) -> Path:
    """Run each stage as the user-facing command (`invoke` runs one `ltx-lora ...` command line)."""
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    tiny = model is None
    model, text_encoder, clips = prepare_inputs(out, model, text_encoder, say)
    config = write_demo_config(out, model, text_encoder, steps, tiny)
    stages = [
        ("inspect the checkpoint", ["inspect", str(model)]),
        ("scan the clips", ["dataset", "scan", str(clips), "-o", str(out / "dataset.jsonl"), "--buckets",
                            DEMO_BUCKETS if tiny else REAL_BUCKETS]),
        ("preprocess (latents + text features)", ["preprocess", str(config)]),
        (f"train {steps} steps", ["train", str(config)] + (["--resume"] if (out / "run" / "checkpoints").is_dir() else [])),
        # What ComfyUI would do with the exported file: every key maps onto the base, nothing silently ignored.
        ("check the LoRA against the base", ["lora", "check", str(out / "run" / "lora.safetensors"), "--base", str(model)]),
    ]
    for i, (what, args) in enumerate(stages, 1):
        say(f"[{i}/{len(stages)}] {what}: {shlex.join(['ltx-lora', *args])}")  # pastes into a shell as it is
        invoke(args)
    lora = out / "run" / "lora.safetensors"
    say(f"done in {time.perf_counter() - t0:.0f} s. LoRA: {lora}; dataset report: {out / 'dataset_report.html'}; "
        f"training report (samples, loss curves): {out / 'run' / 'report.html'}; metrics: "
        f"{out / 'run' / 'metrics.jsonl'}; config: {config}")
    return lora
