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


def _trains(cfg: Path, name: str) -> str:
    """One training step of the config's task from the cache just made (its own output folder): the task runs
    end to end on these data. Returns the train command's stderr."""
    data = yaml.safe_load(cfg.read_text())
    data["output_dir"] = str(cfg.parent / f"run_{name}")
    cfg.write_text(yaml.safe_dump(data))
    res = run_cli("train", cfg)
    assert res.code == 0, res.err
    assert "step 1/1" in res.err and (cfg.parent / f"run_{name}" / "lora.safetensors").is_file(), res.err
    return res.err


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
    write_clip(refs / "walk_edges.mp4", ClipSpec("", 96, 64, 24, 2.0, (16000, 2), None), random.Random(1))
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
    _trains(cfg, "v2v")  # IC-LoRA with a downscaled reference at half the frame groups, end to end
    write_clip(refs / "walk_edges.mp4", ClipSpec("", 96, 64, 24, 2.0, (16000, 2), None), random.Random(9))
    res = run_cli("preprocess", cfg)  # a changed reference file: its clip's entry is encoded again
    assert res.code == 0 and "used 1 clips (0 already cached)" in res.out, res.out
    assert not torch.equal(_entries(tmp_path / "cache")["walk_96x64_24fps.mp4"]["reference_video"],
                           entry["reference_video"])

    # audio-video IC-LoRA: the reference video's sound is the audio reference, over the clip's span
    av = _config(tmp_path, tiny_checkpoint, tiny_gemma, src, buckets, "av2av_ic", "av")
    res = run_cli("preprocess", av)
    assert res.code == 0 and "used 1 clips" in res.out, res.out
    _trains(av, "av2av")
    entry = _entries(tmp_path / "cache")["walk_96x64_24fps.mp4"]
    assert entry["reference_video"].shape == entry["video"].shape == (128, 3, 2, 4)
    assert entry["reference_audio"].shape == entry["audio"].shape and entry["audio"].shape[0] == 8
    assert not torch.equal(entry["reference_audio"], entry["audio"])  # another sound than the clip's own


def test_condition_masks_are_cached_on_the_latent_grid_as_the_official_preprocessing_reduces_them(
        tmp_path, tiny_checkpoint, tiny_gemma, synthetic_clips):
    folder = tmp_path / "in"
    pixels = np.zeros((64, 96), dtype=np.uint8)  # 3 x 2 latent cells of 32 x 32 pixels
    pixels[:32, :32] = 255  # cell (0, 0): all given
    pixels[:32, 32:56] = 255  # cell (0, 1): 3/4 given -> mean 0.75 -> given
    pixels[32:40, :32] = 255  # cell (1, 0): 1/4 given -> generated
    folder.mkdir()
    Image.fromarray(pixels, mode="L").save(folder / "mask.png")
    # given in frames 8-15 only: the official groups 0-7, 8-15, 16.. give latent frames [0, 1, 0]
    write_mask_video(folder / "mask.mp4", 128, 96, 24, [8 <= i < 16 for i in range(30)])
    write_sound(folder / "lead.wav", 1.0, level=[(0.0, 0.25, 0.9)])  # the first quarter second is given
    rows = [
        {"caption": "a red disc", "video": str(synthetic_clips / "walk_96x64_24fps.mp4"), "video_mask": "mask.png",
         "audio_mask": "lead.wav"},
        {"caption": "an orange bar", "video": str(synthetic_clips / "sub/drift_128x96_24fps.mp4"),
         "video_mask": "mask.mp4", "audio_mask": "lead.wav"},
        {"caption": "a square", "video": str(synthetic_clips / "orbit_64x96_25fps.mp4"), "video_mask": "mask.png",
         "audio_mask": "lead.wav"},
        {"caption": "a ball", "video": str(synthetic_clips / "bounce_128x128_30fps.mp4"), "audio_mask": "lead.wav"},
    ]
    src = _rows(folder / "in.jsonl", rows)
    task = {"video": {"conditions": [{"type": "mask"}]}, "audio": {"conditions": [{"type": "mask"}]}}
    cfg = _config(tmp_path, tiny_checkpoint, tiny_gemma, src, "96x64x17", task)
    why = ["mask.png is 96x64, not the clip's aspect ratio", "no video_mask in its row"]
    res = run_cli("dataset", "scan", src, "-o", tmp_path / "dataset.jsonl", "--buckets", "96x64x17", "--task", cfg)
    assert res.code == 0 and "2 used, 2 skipped" in res.out and all(w in res.out for w in why), res.out
    res = run_cli("preprocess", cfg)  # the same verdicts as the scan with the config's task
    assert res.code == 0, res.err
    assert "used 2 clips" in res.out and all(w in res.out for w in why), res.out

    entries = _entries(tmp_path / "cache")
    image_mask = entries["walk_96x64_24fps.mp4"]["video_condition_mask"]
    assert torch.equal(image_mask, torch.tensor([[1.0, 1, 0], [0, 0, 0]]).expand(3, 2, 3))
    video_mask = entries["drift_128x96_24fps.mp4"]["video_condition_mask"]
    assert torch.equal(video_mask, torch.tensor([0.0, 1, 0]).view(3, 1, 1).expand(3, 2, 3))
    for entry in entries.values():
        steps = entry["audio"].shape[1]
        samples = round(17 / 24 * 16000)  # the span the clip trains on, at the audio VAE's rate
        given = torch.tensor([float(i * samples // steps < 4000) for i in range(steps)])  # nearest sample
        assert torch.equal(entry["audio_condition_mask"], given), entry["audio_condition_mask"]
        assert 0 < given.sum() < steps

    items = read_manifest(tmp_path / "cache").items
    batch = load_batch(tmp_path / "cache", items, CPU, torch.float32, task=parse_config({"task": task}).task)
    assert batch.video_condition_mask.shape == (2, 3, 2, 3) and batch.audio_condition_mask.shape == (2, steps)
    assert batch.reference_video is None and batch.audio.shape[:2] == (2, 8)
    _trains(cfg, "inpainting")  # video and audio inpainting, end to end


def test_audio_only_task_takes_sound_files_and_clips_sound_without_any_video(
        tmp_path, tiny_checkpoint, tiny_gemma, synthetic_clips):
    folder = tmp_path / "sounds"
    write_sound(folder / "rain.wav", 1.0, seed=1)
    write_sound(folder / "bell.flac", 0.5, channels=1, seed=2)
    (folder / "rain.txt").write_text("steady rain on a roof")
    (folder / "bell.txt").write_text("a small bell rings once")
    (folder / "walk.mp4").write_bytes((synthetic_clips / "walk_96x64_24fps.mp4").read_bytes())
    (folder / "walk.txt").write_text("a tone rises and falls")
    buckets = "96x64x9;96x64x17"
    res = run_cli("dataset", "scan", folder, "-o", tmp_path / "dataset.jsonl", "--buckets", buckets, "--task", "t2a")
    assert res.code == 0, res.err
    assert "3 used" in res.out, res.out
    rows = [json.loads(line) for line in (tmp_path / "dataset.jsonl").read_text().splitlines()]
    by_media = {r.get("audio", r.get("video")): r for r in rows}
    assert "video" not in by_media["sounds/rain.wav"] and by_media["sounds/rain.wav"]["bucket"] == "96x64x17"
    assert by_media["sounds/bell.flac"]["bucket"] == "96x64x9" and by_media["sounds/walk.mp4"]["video"]

    cfg = _config(tmp_path, tiny_checkpoint, tiny_gemma, tmp_path / "dataset.jsonl", buckets, "t2a")
    res = run_cli("preprocess", cfg)
    assert res.code == 0, res.err
    assert "used 3 clips" in res.out, res.out
    entries = _entries(tmp_path / "cache")
    assert all(set(e) == {"audio"} for e in entries.values()), {k: set(e) for k, e in entries.items()}
    steps = {name: e["audio"].shape[1] for name, e in entries.items()}
    assert steps["rain.wav"] == steps["walk.mp4"] > steps["bell.flac"]  # 17 vs 9 frames at 24 fps

    items = read_manifest(tmp_path / "cache").items
    order = BatchOrder(items, batch_size=2, seed=0)
    batches = [sorted(Path(items[i].media).name for i in b) for b in order.epoch_batches(0)]
    assert sorted(batches) == [["bell.flac"], ["rain.wav", "walk.mp4"]]  # grouped by their audio length
    pair = [items[i] for b in order.epoch_batches(0) for i in b if len(b) == 2]
    batch = load_batch(tmp_path / "cache", pair, CPU, torch.float32, task=resolve_task("t2a"))
    assert batch.video is None and batch.audio.shape == (2, 8, steps["rain.wav"], 16)
    _trains(cfg, "t2a")  # text to audio from sound files, no video anywhere

    write_sound(folder / "echo.wav", 1.0, seed=3)  # audio-to-audio IC-LoRA: a reference sound per clip
    a2a = _rows(tmp_path / "a2a.jsonl", [{"caption": "steady rain on a roof", "audio": str(folder / "rain.wav"),
                                          "reference_audio": str(folder / "echo.wav")}])
    cfg = _config(tmp_path, tiny_checkpoint, tiny_gemma, a2a, buckets, "a2a_ic", "a2a")
    res = run_cli("preprocess", cfg)
    assert res.code == 0 and "used 1 clips" in res.out, res.out
    _trains(cfg, "a2a")


def _judge(rows: list[tuple[Path, dict[str, Path]]], task: str | None, buckets: str = "96x64x17", **kw):
    from ltx_lora.bucket_spec import parse_buckets
    from ltx_lora.data.probe import probe
    from ltx_lora.data.usable import Candidate, judge_clips

    clips = [Candidate(media, probe(media), "a caption", None, paths) for media, paths in rows]
    return judge_clips(clips, parse_buckets(buckets), task=resolve_task(task) if task else None, **kw)


def test_sound_pairs_are_found_and_checked_by_the_one_judge(tmp_path, synthetic_clips):
    walk, drift = synthetic_clips / "walk_96x64_24fps.mp4", synthetic_clips / "sub/drift_128x96_24fps.mp4"
    long, short = write_sound(tmp_path / "long.wav", 1.0), write_sound(tmp_path / "short.wav", 0.3, seed=4)
    other = write_sound(tmp_path / "other.flac", 1.0, seed=6)
    (tmp_path / "mask.pt").write_bytes(b"not read")
    ref = write_clip(tmp_path / "ref.mp4", ClipSpec("", 96, 64, 24, 1.0, (16000, 2), None), random.Random(5))

    # audio IC-LoRA: the reference sound must cover the span trained (17 frames at 24 fps = 0.71 s)
    ok, too_short, none = _judge([(long, {"reference_audio": long}), (other, {"reference_audio": short}),
                                  (walk, {})], "a2a_ic")
    assert ok.status == "used" and ok.sources == {"reference_audio": long}
    assert "short.wav is 0.30 s long, shorter than the 0.71 s" in too_short.skip_reason
    assert "no reference_audio in its row" in none.skip_reason
    # audio-video IC-LoRA: without a reference sound, the reference video's own sound is the reference
    [both] = _judge([(walk, {"reference_video": ref})], "av2av_ic")
    assert both.status == "used" and both.sources == {"reference_video": ref, "reference_audio": ref}
    # an audio mask given as a pickle is never loaded; a mask the task does not read is not checked
    [pickled] = _judge([(walk, {"audio_mask": tmp_path / "mask.pt"})], "audio_inpainting")
    assert "is a .pt file (a pickle" in pickled.skip_reason
    [ignored] = _judge([(walk, {"audio_mask": tmp_path / "mask.pt"})], "t2av")
    assert ignored.status == "used" and ignored.sources == {}
    # without a task every file a row names is checked
    [missing] = _judge([(drift, {"video_mask": tmp_path / "gone.png"})], None)
    assert "its video_mask" in missing.skip_reason and "gone.png does not exist" in missing.skip_reason
    # an explicit audio file replaces the clip's sound: a silent clip with one trains even with missing_audio skip
    bounce = synthetic_clips / "bounce_128x128_30fps.mp4"
    silent, dubbed, short_dub = _judge(
        [(bounce, {}), (bounce.with_name("orbit_64x96_25fps.mp4"), {"audio": long}), (walk, {"audio": short})],
        "t2av", skip_without_audio=True)
    assert silent.skip_group == "no audio" and dubbed.status == "used" and dubbed.sources == {"audio": long}
    assert "short.wav is 0.30 s long" in short_dub.skip_reason
    # a reference the bucket cannot halve is refused with what to do
    task = resolve_task("v2v_ic")
    task.video.conditions[0].downscale = 2
    from ltx_lora.bucket_spec import parse_buckets
    from ltx_lora.data.probe import probe
    from ltx_lora.data.usable import Candidate, judge_clips

    [odd] = judge_clips([Candidate(walk, probe(walk), "c", None, {"reference_video": ref})],
                        parse_buckets("96x64x17"), task=task)
    assert "cannot hold a reference at 1/2 size" in odd.skip_reason


def test_a_cache_made_for_another_task_is_refused_in_one_sentence(tmp_path):
    from ltx_lora.data.cache import CacheItem, Manifest, write_latents
    from ltx_lora.data.loader import check_cache_for_task
    from ltx_lora.errors import UserError

    rel = write_latents(tmp_path, "k", torch.zeros(128, 1, 1, 1), None, {})
    item = CacheItem(rel, "text/t.safetensors", "32x32x1", 1.0, False)
    check_cache_for_task(tmp_path, Manifest({}, [item]), resolve_task("t2v"))
    for task in ("v2v_ic", "video_inpainting", "t2a"):
        with pytest.raises(UserError, match="run `ltx-lora preprocess` with this config again"):
            check_cache_for_task(tmp_path, Manifest({}, [item]), resolve_task(task))
        with pytest.raises(UserError, match="has no (reference|video masks|audio latents)"):
            load_batch(tmp_path, [item], CPU, torch.float32, task=resolve_task(task))


def test_a_folder_of_official_reference_pairs_scans_without_a_dataset_file(tmp_path, synthetic_clips):
    folder = tmp_path / "clips"
    for name in ("walk_96x64_24fps", "orbit_64x96_25fps"):
        (folder / f"{name}.mp4").parent.mkdir(exist_ok=True)
        (folder / f"{name}.mp4").write_bytes((synthetic_clips / f"{name}.mp4").read_bytes())
        (folder / f"{name}.txt").write_text((synthetic_clips / f"{name}.txt").read_text())
    # compute_reference.py's naming: clip_reference.mp4 beside clip.mp4
    write_clip(folder / "walk_96x64_24fps_reference.mp4", ClipSpec("", 96, 64, 24, 2.0, None, None), random.Random(7))
    res = run_cli("dataset", "scan", folder, "-o", tmp_path / "d.jsonl", "--buckets", "96x64x17", "--task", "v2v_ic")
    assert res.code == 0, res.err
    assert "Scanned 2 media files" in res.out and "1 used, 1 skipped" in res.out, res.out
    assert "orbit_64x96_25fps.mp4: no reference_video in its row" in res.out, res.out
    [row] = read_dataset(tmp_path / "d.jsonl").entries
    assert row.video == "clips/walk_96x64_24fps.mp4"
    assert row.fields["reference_video"] == "clips/walk_96x64_24fps_reference.mp4"
