"""`ltx-lora demo`: the whole pipeline on the embedded default, a tiny LTX-2.3-format model and synthetic clips.

Every stage is the real command a user runs (inspect, dataset scan, preprocess, train with validation,
lora check), on files generated here in seconds, so a fresh machine with no downloads and no GPU proves the
installation end to end. The tiny model is the one `ltx_lora.fixtures.pretrain` trained on the world of
`ltx_lora.fixtures.scenes` when its weights are installed (package data), else random weights; the LoRA learns the
trigger word `zxq` (the shape turns magenta and whistles) from 8 clips, with 8 regular clips beside them, and the
demo ends by measuring what the step-0 and final samples show. With --model/--text-encoder pointing at the real
LTX-2.3 files it runs the same short pipeline for real.
"""

from __future__ import annotations

import shlex
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from ltx_lora.config import parse_config
from ltx_lora.fixtures import scenes
from ltx_lora.fixtures.checkpoints import RELEASE_FILE_NAMES, write_tiny_checkpoint
from ltx_lora.fixtures.clips import write_synthetic_clips
from ltx_lora.fixtures.gemma import write_tiny_gemma
from ltx_lora.fixtures.pretrain import CHECKPOINT_NAME, GEMMA_NAME, PRETRAINED

# Small enough for 2 CPU cores; the tiny VAE still compresses 32x in space and 8x in time (64x64x9 -> 2x2x2).
DEMO_BUCKETS = "64x64x9"
REAL_BUCKETS = "512x512x49;512x512x1"
DEMO_PROMPTS = [scenes.CONCEPT_PROMPT, scenes.UNRELATED_PROMPT]
REAL_PROMPTS = ["a red disc bounces across a dark room with a rising tone",
                "a small blue square drifts slowly to the right"]


def pretrained_model() -> tuple[Path, Path] | None:
    """The tiny pretrained checkpoint and its Gemma folder, when this installation has them."""
    ckpt, gemma = PRETRAINED / CHECKPOINT_NAME, PRETRAINED / GEMMA_NAME
    return (ckpt, gemma) if ckpt.is_file() and (gemma / "config.json").is_file() else None


def prepare_inputs(out: Path, model: Path | None, text_encoder: Path | None, say: Callable[[str], None]) -> tuple[Path, Path, Path]:
    """The model, the text encoder and a clip folder: the given ones, or generated."""
    tiny = model is None
    clips = out / "clips"
    if not clips.is_dir():
        if tiny:
            scenes.write_concept_dataset(clips)
        else:
            write_synthetic_clips(clips)
    n = sum(1 for _ in clips.rglob("*") if _.suffix in (".mp4", ".png", ".jpg"))
    say(f"clips: {n} synthetic clips with side-car captions in {clips}" + (
        f" ({n // 2} teach the trigger word '{scenes.TRIGGER}': the shape turns magenta and whistles; {n - n // 2} regular "
        "ones keep the rest as it was)" if tiny else ""))
    pretrained = pretrained_model()
    if model is None:
        model = out / "models" / RELEASE_FILE_NAMES["dev"]
        if not model.is_file():
            if pretrained:
                model.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(pretrained[0], model)
            else:
                write_tiny_checkpoint(model, "dev")
        say(f"model: tiny LTX-2.3-format checkpoint {model} " + (
            "(pretrained on moving shapes and tones by ltx_lora.fixtures.pretrain)" if pretrained else
            "(random weights: this installation has no pretrained demo weights, so samples are noise)"))
    if text_encoder is None:
        text_encoder = out / "models" / "gemma-3-12b-it"
        if not (text_encoder / "config.json").is_file():
            if pretrained:
                shutil.copytree(pretrained[1], text_encoder, dirs_exist_ok=True)
            else:
                write_tiny_gemma(text_encoder)
        say(f"text encoder: tiny Gemma 3 folder {text_encoder}")
    return model, text_encoder, clips


def _tiny_sampling(pretrained: bool) -> dict:
    """Validation settings for the tiny model. Pretrained, it samples with CFG 3 against validation's default
    negative prompt (pretraining dropped 10 % of captions to it; at CFG 1 it follows colours far less:
    fixtures.pretrain), without STG or modality guidance (passes it was not trained for). Random weights give noise
    at any step count, so they get the fewest, without guidance."""
    guided = {"steps": 20, "cfg": 3.0, "audio_cfg": 3.0} if pretrained else {"steps": 2, "cfg": 1.0, "audio_cfg": 1.0}
    return {"resolution": "64x64x9", **guided, "stg_scale": 0.0, "stg_blocks": [1], "modality_scale": 1.0,
            "audio_modality_scale": 1.0}


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
                  "mixed_precision": "fp32" if tiny else "bf16", "scheduler": "constant",
                  # The whistle clips' audio loss (2-5) dwarfs the video loss (0.1-0.2): at full weight the tiny
                  # LoRA learned the sound long before the colour.
                  **({"audio_loss_weight": 0.2} if tiny else {})},
        "checkpoints": {"every": max(1, steps // 2), "keep_last": 2},
        # Samples at step 0 and at the end.
        "validation": {"prompts": DEMO_PROMPTS if tiny else REAL_PROMPTS, "every": steps,
                       **(_tiny_sampling(pretrained_model() is not None) if tiny else {})},
    }
    parse_config(cfg)  # the demo's own config must be valid before anything runs
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# Steps the tiny model's LoRA needs to learn the trigger (measured 2026-12-04, 2 CPU cores: at 120 steps the
# shape of the trigger prompt is 50 % magenta against 21 % at step 0 and whistles; the unrelated prompt keeps its
# colour and beep; 200 steps gave the same).
TINY_STEPS = 120
REAL_STEPS = 50


def run_demo(out: Path, steps: int | None, model: Path | None, text_encoder: Path | None,
             invoke: Callable[[list[str]], None], say: Callable[[str], None]) -> Path:
    """Run each stage as the user-facing command (`invoke` runs one `ltx-lora ...` command line)."""
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    tiny = model is None
    steps = steps or (TINY_STEPS if tiny else REAL_STEPS)
    if tiny:
        # A model this small spends more time syncing threads than computing (2 CPU cores, 2026-12-04: the whole
        # 50-step demo took 106 s with torch's default 2 threads; 100 steps took 79 s with 1 thread, even with a
        # second demo running beside it).
        torch.set_num_threads(1)
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
    if tiny:
        for line in concept_summary(out / "run", steps):
            say(line)
    say(f"done in {time.perf_counter() - t0:.0f} s. LoRA: {lora}; dataset report: {out / 'dataset_report.html'}; "
        f"training report (samples, loss curves): {out / 'run' / 'report.html'}; metrics: "
        f"{out / 'run' / 'metrics.jsonl'}; config: {config}")
    return lora


def concept_summary(run_dir: Path, steps: int) -> list[str]:
    """What the step-0 and the final samples of each prompt show, measured (see fixtures.scenes)."""
    first, last = run_dir / "samples" / "step_000000", run_dir / "samples" / f"step_{steps:06d}"
    lines = []
    for i, what in enumerate((f"with the trigger '{scenes.TRIGGER}'", "unrelated, no trigger")):
        a_path, b_path = first / f"p{i}.mp4", last / f"p{i}.mp4"
        if not (a_path.is_file() and b_path.is_file()):
            continue
        a, b = scenes.measure_clip(a_path), scenes.measure_clip(b_path)

        def hz(m: dict) -> str:
            return "silent" if m["dominant_hz"] is None else f"{m['dominant_hz']:.0f} Hz"

        lines.append(f"prompt {i + 1} ({what}), step 0 -> step {steps}: magenta share of the shape {a['concept_share']:.0%} -> "
                     f"{b['concept_share']:.0%}, frames showing a magenta shape {a['frames_with_concept']}/"
                     f"{a['frames']} -> {b['frames_with_concept']}/{b['frames']}, pitch {hz(a)} -> {hz(b)} "
                     f"(the concept whistles at {scenes.CONCEPT_HZ:.0f} Hz)")
    return lines
