"""Data for every task: references (IC-LoRA) and condition masks paired by the official columns, checked by
`dataset scan` and `preprocess` alike, cached content-keyed on the latent grid; audio-only datasets without video.

Real clips (ltx_lora.fixtures.clips), the real CLI, the tiny model."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import run_cli
from PIL import Image

from ltx_lora.config import parse_config
from ltx_lora.data.cache import read_entry, read_manifest
from ltx_lora.data.dataset_file import read_dataset
from ltx_lora.data.decode import read_clip
from ltx_lora.data.loader import BatchOrder, load_batch
from ltx_lora.fixtures.clips import ClipSpec, write_clip, write_mask_video, write_sound
from ltx_lora.ltx.loader import load_video_encoder
from ltx_lora.ltx.vae import encode_video
from ltx_lora.task import resolve_task

CPU = torch.device("cpu")


def _config(tmp_path: Path, tiny_checkpoint, tiny_gemma, dataset: Path, buckets: str, task, name: str = "c") -> Path:
    cfg = {"output_dir": str(tmp_path / "run"), "task": task,
           "model": {"checkpoint": str(tiny_checkpoint("dev")), "text_encoder": str(tiny_gemma)},
           "data": {"dataset": str(dataset), "buckets": buckets, "cache_dir": str(tmp_path / "cache")},
           "train": {"steps": 1, "mixed_precision": "fp32"},
           "validation": {"prompts": [], "every": None}, "logging": {"tensorboard": False}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _rows(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _entries(cache: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Each cached clip's tensors by the clip's file name."""
    return {Path(i.media).name: read_entry(cache, i.latents) for i in read_manifest(cache).items}


def test_references_pair_cache_downscaled_skip_mismatches_and_rerun_encodes_nothing(
        tmp_path, tiny_checkpoint, tiny_gemma, synthetic_clips):
    refs = tmp_path / "in" / "refs"
    write_clip(refs / "walk_edges.mp4", ClipSpec("", 96, 64, 24, 2.0, None, None), random.Random(1))
    write_clip(refs / "drift_30fps.mp4", ClipSpec("", 128, 96, 30, 1.25, None, None), random.Random(2))
    write_clip(refs / "orbit_short.mp4", ClipSpec("", 64, 96, 25, 0.4, None, None), random.Random(3))
    rows = [
        {"caption": "a red disc", "video": str(synthetic_clips / "walk_96x64_24fps.mp4"),
         "reference_video": "refs/walk_edges.mp4"},
        {"caption": "an orange bar", "video": str(synthetic_clips / "sub/drift_128x96_24fps.mp4"),
         "ref_media_path": "refs/drift_30fps.mp4"},  # the legacy column name
        {"caption": "a square", "video": str(synthetic_clips / "orbit_64x96_25fps.mp4"),
         "reference_video": "refs/orbit_short.mp4"},
        {"caption": "a ball", "video": str(synthetic_clips / "bounce_128x128_30fps.mp4")},
    ]
    src = _rows(tmp_path / "in" / "in.jsonl", rows)
    buckets = "128x64x17"
    why = ["runs at 30 fps, the clip at 24 fps", "gives 10 frames at 25 fps, fewer than the 17",
           "no reference_video in its row"]

    res = run_cli("dataset", "scan", src, "-o", tmp_path / "dataset.jsonl", "--buckets", buckets, "--task", "v2v_ic")
    assert res.code == 0, res.err
    assert all(w in res.out for w in why), res.out
    [row] = read_dataset(tmp_path / "dataset.jsonl").entries
    assert row.fields["reference_video"] == "in/refs/walk_edges.mp4"  # relative to the new file

    # preprocess judges the original file by the same rule (the task's reference at 1/2 size, every 2nd frame)
    task = {"audio": {"role": "off"}, "video": {"conditions": [{"type": "reference", "downscale": 2,
                                                                "temporal_scale": 2}]}}
    cfg = _config(tmp_path, tiny_checkpoint, tiny_gemma, src, buckets, task)
    res = run_cli("preprocess", cfg)
    assert res.code == 0, res.err
    assert "used 1 clips (0 already cached), skipped 3" in res.out and all(w in res.out for w in why), res.out
    entry = _entries(tmp_path / "cache")["walk_96x64_24fps.mp4"]
    assert set(entry) == {"video", "reference_video"}  # the task has no audio: none encoded
    assert entry["video"].shape == (128, 3, 2, 4) and entry["reference_video"].shape == (128, 2, 1, 2)
    # the reference is the pair's frames 0, 1, 3, ..., 15 at 64x32, encoded like any clip
    frames = read_clip(refs / "walk_edges.mp4", 64, 32, 17, with_audio=False).frames[:, [0, *range(1, 17, 2)]]
    encoder = load_video_encoder(str(tiny_checkpoint("dev")), device=CPU, dtype=torch.float32)
    assert torch.equal(entry["reference_video"], encode_video(encoder, frames.unsqueeze(0))[0].float())

    manifest = read_manifest(tmp_path / "cache")
    batch = load_batch(tmp_path / "cache", manifest.items, CPU, torch.float32,
                       task=resolve_task(parse_config(yaml.safe_load(cfg.read_text())).task))
    assert batch.reference_video.shape == (1, 128, 2, 1, 2) and batch.audio is None
    assert batch.video_condition_mask is None and batch.reference_audio is None

    res = run_cli("preprocess", cfg)  # nothing changed: nothing encoded
    assert res.code == 0 and "used 1 clips (1 already cached)" in res.out, res.out
    write_clip(refs / "walk_edges.mp4", ClipSpec("", 96, 64, 24, 2.0, None, None), random.Random(9))
    res = run_cli("preprocess", cfg)  # a changed reference file: its clip's entry is encoded again
    assert res.code == 0 and "used 1 clips (0 already cached)" in res.out, res.out
    assert not torch.equal(_entries(tmp_path / "cache")["walk_96x64_24fps.mp4"]["reference_video"],
                           entry["reference_video"])
