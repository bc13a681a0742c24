"""`ltx-lora preprocess`: the cache skips what is done, redoes what changed, survives a kill, reports bad clips."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import yaml
from conftest import BUCKETS, SRC, assert_user_error, run_cli
from test_train import prepared  # noqa: F401 - the session's preprocessed tiny dataset


def _config(tmp_path, tiny_checkpoint, tiny_gemma, dataset, buckets=BUCKETS, cache="cache"):
    cfg = {"output_dir": str(tmp_path / "run"),
           "model": {"checkpoint": str(tiny_checkpoint("dev")), "text_encoder": str(tiny_gemma)},
           "data": {"dataset": str(dataset), "buckets": buckets, "cache_dir": str(tmp_path / cache)},
           "train": {}, "validation": {"prompts": ["a ball"]}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _manifest(tmp_path, cache="cache"):
    return json.loads((tmp_path / cache / "manifest.json").read_text())


def test_rerun_skips_and_changed_settings_redo_and_prune(tmp_path, tiny_checkpoint, tiny_gemma, scanned_dataset):
    rows = [json.loads(line) for line in scanned_dataset.read_text().splitlines()]
    for n, row in enumerate(rows):  # a per-clip loss weight and repeats travel from the dataset file into the cache
        row["loss_weight"], row["repeats"] = n / 4, n + 1
        row["video"] = str(scanned_dataset.parent / row["video"])  # this copy lives elsewhere
    (tmp_path / "ds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _config(tmp_path, tiny_checkpoint, tiny_gemma, tmp_path / "ds.jsonl")
    first = run_cli("preprocess", cfg)
    assert first.code == 0 and "used 5 clips (0 already cached)" in first.out, first.out + first.err
    weights = {os.path.basename(i["media"]): i["loss_weight"] for i in _manifest(tmp_path)["items"]}
    assert weights == {os.path.basename(r["video"]): r["loss_weight"] for r in rows if os.path.basename(r["video"]) in weights}
    assert len(set(weights.values())) == 5
    repeats = {os.path.basename(i["media"]): i["repeats"] for i in _manifest(tmp_path)["items"]}
    assert repeats == {os.path.basename(r["video"]): r["repeats"] for r in rows if os.path.basename(r["video"]) in repeats}
    assert "" in _manifest(tmp_path)["prompts"]  # the empty prompt (caption dropout) is cached once
    assert "no caption" in first.out  # uncaptioned clips are skipped with their reason, the run goes on
    assert "slow image processor" not in first.err  # transformers' notice about Gemma's processor is not ours to show
    # the default task generates audio: the one clip without a sound track is said to teach silence, with the fixes
    assert "note: 1 of 5 clips have no sound track (e.g. " in first.err and "bounce_128x128_30fps.mp4" in first.err
    assert "trained to make silence" in first.err and "`task: t2v`" in first.err, first.err
    again = run_cli("preprocess", cfg)
    assert "used 5 clips (5 already cached)" in again.out and "0 texts encoded" in again.out, again.out
    before = {i["latents"] for i in _manifest(tmp_path)["items"]}
    # without the 96x64 / 64x96 buckets three clips move to another bucket: only those are encoded again
    cfg.write_text(cfg.read_text().replace(BUCKETS, "64x64x9;64x64x1"))
    changed = run_cli("preprocess", cfg)
    assert changed.code == 0 and "used 5 clips (2 already cached)" in changed.out, changed.out
    # the dataset file was scanned with other buckets: said, with each clip that moved
    assert 'data.buckets "64x64x9;64x64x1" differ from the buckets' in changed.err, changed.err
    assert "clips moved" in changed.err and "walk_96x64_24fps.mp4: 96x64x9 -> 64x64x9" in changed.err
    assert "moved" not in again.err  # same buckets as the scan: nothing to say
    after = {i["latents"] for i in _manifest(tmp_path)["items"]}
    assert len(before & after) == 2 and len(after - before) == 3
    on_disk = lambda: {f"latents/{p.name}" for p in (tmp_path / "cache" / "latents").glob("*.safetensors")}  # noqa: E731
    assert on_disk() == before | after  # nothing this run did not make is deleted unasked ...
    assert "kept 3 cache entries this config does not use" in changed.out and "--prune" in changed.out, changed.out
    pruned = run_cli("preprocess", cfg, "--prune")  # ... only when asked, listing each
    assert pruned.code == 0 and "pruned 3 cache entries" in pruned.out, pruned.out
    assert sorted(line.split()[-1] for line in pruned.out.splitlines() if "  removed " in line) == sorted(before - after)
    assert on_disk() == after


def test_killed_preprocess_resumes(tmp_path, tiny_checkpoint, tiny_gemma, scanned_dataset):
    cfg = _config(tmp_path, tiny_checkpoint, tiny_gemma, scanned_dataset)
    proc = subprocess.Popen([sys.executable, "-m", "ltx_lora", "preprocess", str(cfg)],
                            env={**os.environ, "PYTHONPATH": str(SRC)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    latents = tmp_path / "cache" / "latents"
    deadline = time.time() + 120
    while not (latents.is_dir() and any(latents.glob("*.safetensors"))):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-2000:]
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "cache" / "manifest.json").exists()  # written last: no half-made cache is ever used
    res = run_cli("preprocess", cfg)
    assert res.code == 0, res.err
    assert "used 5 clips" in res.out and "0 already cached" not in res.out, res.out
    assert len(_manifest(tmp_path)["items"]) == 5


def test_no_usable_clip_and_bad_buckets_are_one_sentence(tmp_path, tiny_checkpoint, tiny_gemma, scanned_dataset):
    cfg = _config(tmp_path, tiny_checkpoint, tiny_gemma, scanned_dataset, buckets="64x64x48")
    assert_user_error(run_cli("preprocess", cfg), "48", "49")


def test_8bit_gemma_without_gpu_is_refused_before_any_work(tmp_path, tiny_checkpoint, tiny_gemma, scanned_dataset):
    import torch

    if torch.cuda.is_available():
        import pytest

        pytest.skip("this machine has a GPU")
    cfg = _config(tmp_path, tiny_checkpoint, tiny_gemma, scanned_dataset)
    data = yaml.safe_load(cfg.read_text())
    data["memory"] = {"text_encoder_8bit": True}
    cfg.write_text(yaml.safe_dump(data))
    assert_user_error(run_cli("preprocess", cfg), "8-bit needs a CUDA GPU", "text_encoder_8bit: false")
    assert not (tmp_path / "cache" / "latents").exists()  # refused before a single clip was encoded


def test_no_captioned_clip_is_exit_2_with_the_reasons(tmp_path, tiny_checkpoint, tiny_gemma, synthetic_clips):
    """Scan and preprocess agree: the clips the scan says need a caption are not used, and none usable is an
    error naming the reasons and the fix, not an empty cache."""
    ds = tmp_path / "ds.jsonl"
    scanned = run_cli("dataset", "scan", synthetic_clips, "-o", ds, "--buckets", BUCKETS)
    assert scanned.code == 0 and "2 need a caption" in scanned.out, scanned.out
    uncaptioned = [line for line in ds.read_text().splitlines() if json.loads(line)["caption"] == ""]
    assert len(uncaptioned) == 2
    only = tmp_path / "uncaptioned.jsonl"
    rows = [json.loads(line) for line in uncaptioned]  # media paths made absolute: the file lives elsewhere
    only.write_text("".join(json.dumps({**r, "video": str(synthetic_clips / r["video"])}) + "\n" for r in rows))
    res = run_cli("preprocess", _config(tmp_path, tiny_checkpoint, tiny_gemma, only))
    assert_user_error(res, "None of the 2 clips", "2 no caption", "ltx-lora caption", "side-car .txt",
                      "uncaptioned_report.html")
    assert "clips/s" not in res.out and not (tmp_path / "cache" / "manifest.json").exists()


def test_config_paths_start_at_its_folder_from_any_working_directory(tmp_path, tiny_checkpoint, tiny_gemma,
                                                                      synthetic_clips, prepared):  # noqa: F811
    """Relative paths in a config file start at its folder, media paths in the dataset file at the dataset's.
    The cache folder starts as a copy of the session's entries (no manifest): preprocess finds every clip cached
    there, which only the config-relative cache_dir and media paths can give, and encodes none again."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copytree(synthetic_clips, project / "data" / "clips")
    shutil.copytree(prepared[0] / "cache", project / "cache", ignore=shutil.ignore_patterns("manifest.json"))
    assert run_cli("dataset", "scan", project / "data" / "clips", "-o", project / "data" / "ds.jsonl",
                   "--buckets", BUCKETS).code == 0
    cfg = {"output_dir": "run",
           "model": {"checkpoint": os.path.relpath(tiny_checkpoint("dev"), project),
                     "text_encoder": os.path.relpath(tiny_gemma, project)},
           "data": {"dataset": "data/ds.jsonl", "buckets": BUCKETS, "cache_dir": "cache"},
           "train": {}, "validation": {"prompts": ["a ball"]}}
    (project / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    res = run_cli("preprocess", "../project/cfg.yaml", cwd=elsewhere)
    assert res.code == 0 and "used 5 clips (5 already cached)" in res.out, res.out + res.err
    assert (project / "cache" / "manifest.json").is_file() and not list(elsewhere.iterdir())
    doctor = run_cli("doctor", "--config", "../project/cfg.yaml", cwd=elsewhere)
    for key in ("model.checkpoint", "model.text_encoder"):
        assert re.search(rf"OK\s+{re.escape(key)}", doctor.out), doctor.out
    # ... naming the checkpoint's kind (a Distilled one FAILs: tests/test_guarantees.py, wrong or damaged model)
    line = next(ln for ln in doctor.out.splitlines() if "model.checkpoint" in ln)
    assert "Dev" in line, doctor.out


def test_gemma_out_of_gpu_memory_says_what_to_set():
    """The sentence preprocess gives when Gemma does not fit the GPU (a CUDA out-of-memory error while it loads:
    exercised on a GPU only): 8-bit Gemma when it is off, free memory when it is already on; the clips stay."""
    from ltx_lora.config import parse_config
    from ltx_lora.data.preprocess import _gemma_memory_sentence

    import torch

    cpu = torch.device("cpu")
    off = _gemma_memory_sentence(parse_config({"model": {"text_encoder": "g"}}), cpu)
    on = _gemma_memory_sentence(parse_config({"model": {"text_encoder": "g"}, "memory": {"text_encoder_8bit": True}}),
                                cpu)
    assert "set memory.text_encoder_8bit: true" in off and "kept" in off
    assert "text_encoder_8bit" not in on and "free GPU memory" in on
