"""What we guarantee (README "What we guarantee"), through the real CLI on the tiny fixture: nothing a command did
not make is deleted unasked, one writer per run folder and cache (two real processes), Ctrl-C saves the step, the
same seed gives the same LoRA with dropout, and inputs that would train or merge something silently wrong are
refused with one sentence before anything is written."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import SRC, assert_user_error, run_cli
from safetensors.torch import load_file, save_file
from test_train import _steps_logged, lora_tensors, prepared, write_config  # noqa: F401 - a session fixture

from ltx_lora.files.lock import LOCK_NAME, folder_lock
from ltx_lora.train.trainer import StopOnSignal


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _own_cache(prepared, tmp_path: Path) -> Path:
    """A copy of the session's preprocessed cache, for tests that preprocess into it."""
    root, _ = prepared
    cache = tmp_path / "cache"
    shutil.copytree(root / "cache", cache)
    return cache


def _config(prepared, tmp_path: Path, name: str, **data) -> Path:
    _, base = prepared
    cfg = {**base, "output_dir": str(tmp_path / f"run_{name}"), "data": {**base["data"], **data}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _rows(prepared) -> list[dict]:
    """The session dataset's rows with absolute media paths (so a dataset file elsewhere finds them)."""
    _, base = prepared
    dataset = Path(base["data"]["dataset"])
    rows = [json.loads(line) for line in dataset.read_text().splitlines()]
    return [{**r, "video": str(dataset.parent / r["video"]) if not os.path.isabs(r["video"]) else r["video"]}
            for r in rows]


def _background(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ltx_lora", *map(str, args)],
                            env={**os.environ, "PYTHONPATH": str(SRC)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.02)


# --- the cache: nothing lost ---------------------------------------------------------------------------------------


def test_one_cache_serves_several_datasets_and_nothing_is_removed_unasked(prepared, tmp_path):
    cache = _own_cache(prepared, tmp_path)
    before = _files(cache)
    used = [r for r in _rows(prepared) if r.get("caption")]
    fewer = tmp_path / "fewer.jsonl"  # one line dropped and one media path that no longer resolves
    fewer.write_text("".join(json.dumps(r) + "\n" for r in [*used[1:], {**used[0], "video": "/gone/clip.mp4"}]))
    res = run_cli("preprocess", _config(prepared, tmp_path, "fewer", dataset=str(fewer), cache_dir=str(cache)))
    assert res.code == 0, res.err
    assert f"used {len(used) - 1} clips ({len(used) - 1} already cached)" in res.out, res.out
    assert "kept 2 cache entries this config does not use" in res.out, res.out  # the dropped clip's latents + text
    after = _files(cache)
    assert all(after[name] == data for name, data in before.items() if name != "manifest.json")  # every entry kept
    # training the first dataset on that cache: its manifest is now the other dataset's, so say so
    full = _config(prepared, tmp_path, "full", cache_dir=str(cache))
    assert_user_error(run_cli("train", full), "last preprocessed for another dataset", "ltx-lora preprocess")
    again = run_cli("preprocess", full)  # ... and preprocessing it again encodes nothing
    assert again.code == 0 and f"used {len(used)} clips ({len(used)} already cached)" in again.out, again.out
    assert "0 texts encoded" in again.out and "kept" not in again.out
    # nothing usable (a header-only CSV, every media file missing): exit 2 with the reasons, the cache untouched
    snapshot = _files(cache)
    header_only = tmp_path / "empty.csv"
    header_only.write_text("video,caption\n")
    missing = tmp_path / "missing.jsonl"
    missing.write_text("".join(json.dumps({**r, "video": f"/gone/{n}.mp4"}) + "\n" for n, r in enumerate(used)))
    for dataset in (header_only, missing):
        res = run_cli("preprocess", _config(prepared, tmp_path, dataset.stem, dataset=str(dataset),
                                            cache_dir=str(cache)))
        assert_user_error(res, "can be used" if dataset is missing else "lists no clips")
        assert _files(cache) == snapshot, dataset


def test_a_wrong_or_damaged_model_is_refused_by_doctor_and_preprocess_alike(prepared, tmp_path, tiny_checkpoint,
                                                                          tiny_gemma):
    cache = _own_cache(prepared, tmp_path)
    snapshot = _files(cache)
    dev = tiny_checkpoint("dev")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(dev.read_bytes()[:-1000])
    broken_gemma = tmp_path / "gemma"
    shutil.copytree(tiny_gemma, broken_gemma)
    shard = sorted(broken_gemma.glob("model*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:-64])
    bad_config = tmp_path / "gemma-config"
    shutil.copytree(tiny_gemma, bad_config)
    config = json.loads((tiny_gemma / "config.json").read_text())
    config["text_config"]["hidden_size"] = "wide"
    (bad_config / "config.json").write_text(json.dumps(config))
    cases = [  # (model section, the key doctor fails, what both say); doctor's OK for Dev: tests/test_preprocess.py
        ({"checkpoint": str(tiny_checkpoint("distilled"))}, "model.checkpoint", "Distilled"),
        ({"checkpoint": str(truncated)}, "model.checkpoint", "1,000 bytes shorter than its header says"),
        ({"text_encoder": str(broken_gemma)}, "model.text_encoder", "64 bytes shorter than its header says"),
        ({"text_encoder": str(bad_config)}, "model.text_encoder", "Gemma config"),
    ]
    for n, (model, key, needle) in enumerate(cases):
        _, base = prepared
        cfg = {**base, "model": {**base["model"], **model}, "output_dir": str(tmp_path / "run"),
               "data": {**base["data"], "cache_dir": str(cache)}}
        path = tmp_path / f"case{n}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        doctor = run_cli("doctor", "--config", path)
        line = next((ln for ln in doctor.out.splitlines() if key in ln), "")
        assert doctor.code == 1 and "FAIL" in line and needle in " ".join(doctor.out.split()), (needle, doctor.out)
        assert_user_error(run_cli("preprocess", path), needle)
        assert _files(cache) == snapshot, needle  # refused before anything was encoded or written


def test_nan_weights_are_refused_before_anything_is_cached(prepared, tmp_path, tiny_checkpoint):
    weights = load_file(str(tiny_checkpoint("dev")))
    from safetensors import safe_open

    with safe_open(str(tiny_checkpoint("dev")), "pt") as f:
        metadata = f.metadata()
    for key in weights:
        if key.startswith("vae.encoder."):
            weights[key] = torch.full_like(weights[key], float("nan"))
    nan = tmp_path / "ltx-2.3-22b-dev-nan.safetensors"
    save_file(weights, str(nan), metadata=metadata)
    _, base = prepared
    cfg = {**base, "model": {**base["model"], "checkpoint": str(nan)}, "output_dir": str(tmp_path / "run"),
           "data": {**base["data"], "cache_dir": str(tmp_path / "fresh")}}
    path = tmp_path / "nan.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert_user_error(run_cli("preprocess", path), "NaN/inf", "download the checkpoint again")
    assert not list((tmp_path / "fresh").rglob("*.safetensors"))


def test_stale_temp_files_of_ours_are_removed_and_others_kept(prepared, tmp_path):
    cache = _own_cache(prepared, tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a PID that has ended: its writer was killed mid-write
    ours = cache / "latents" / f".abc.safetensors.{pid}.0123abcd.tmp"
    ours.write_bytes(b"half a file")
    live = cache / "text" / f".def.safetensors.{os.getpid()}.0123abcd.tmp"  # a running writer's: not stale
    live.write_bytes(b"being written")
    theirs = cache / "latents" / "notes.tmp"  # not a name we make
    theirs.write_text("keep me")
    res = run_cli("preprocess", _config(prepared, tmp_path, "tmp", cache_dir=str(cache)))
    assert res.code == 0 and "removed 1 temp file(s) a killed preprocess left" in res.out, res.out + res.err
    assert not ours.exists() and live.exists() and theirs.read_text() == "keep me"


# --- one writer per folder -------------------------------------------------------------------------------------


def test_two_trains_on_one_run_folder_the_second_is_refused_naming_the_first(prepared, tmp_path):
    cfg = write_config(prepared, tmp_path, name="race", steps=500, task="t2v")
    data = yaml.safe_load(cfg.read_text())
    data["checkpoints"] = {"every": 1000, "keep_last": 1}
    cfg.write_text(yaml.safe_dump(data))
    run = tmp_path / "race"
    first = _background("train", cfg)
    try:
        lock = run / LOCK_NAME
        _wait_for(first, lambda: lock.is_file() and bool(lock.read_text()))  # taken before the model loads
        second = run_cli("train", cfg, "--resume")
        assert_user_error(second, f"PID {first.pid}", "ltx-lora train", "in use")
        assert not (run / "checkpoints").exists()  # the second wrote nothing
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the holder was killed: its lock is stale, the next run takes it over and says so
    third = run_cli("train", cfg, "--max-steps", "1")
    assert third.code == 0, third.err
    assert f"PID {first.pid}" in third.err and "no longer running" in third.err, third.err
    assert (run / LOCK_NAME).read_text() == ""  # released


def test_preprocess_on_a_cache_in_use_is_refused(prepared, tmp_path):
    cache = _own_cache(prepared, tmp_path)
    cfg = _config(prepared, tmp_path, "locked", cache_dir=str(cache))
    snapshot = {k: v for k, v in _files(cache).items() if k != LOCK_NAME}
    with folder_lock(cache, "preprocess", "cache"):  # held by this (test) process
        assert_user_error(run_cli("preprocess", cfg), f"PID {os.getpid()}", "in use")
    assert {k: v for k, v in _files(cache).items() if k != LOCK_NAME} == snapshot  # (the lock is the test's)
    assert run_cli("preprocess", cfg).code == 0  # released


# --- training: reproducible, interruptible, never silently wrong -------------------------------------------------


def test_same_seed_with_lora_dropout_gives_the_same_lora(prepared, tmp_path):
    tensors = []
    for name in ("a", "b"):
        cfg = write_config(prepared, tmp_path, name=name, steps=2, task="t2v")
        data = yaml.safe_load(cfg.read_text())
        data["lora"] = {"dropout": 0.1}
        cfg.write_text(yaml.safe_dump(data))
        res = run_cli("train", cfg)
        assert res.code == 0, res.err
        tensors.append(lora_tensors(tmp_path / name))
    a, b = tensors
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _stopped_after_two_steps(prepared, tmp_path, name: str, signum: int, status: int) -> None:
    """A long run stopped by `signum` once two steps are logged: the step under way is finished and saved, the
    exit status is `status`, the lock is released, and --resume continues from that step."""
    cfg = write_config(prepared, tmp_path, name=name, steps=500, task="t2v")
    data = yaml.safe_load(cfg.read_text())
    data["checkpoints"] = {"every": 1000, "keep_last": 1}
    cfg.write_text(yaml.safe_dump(data))
    run = tmp_path / name
    proc = _background("train", cfg)
    _wait_for(proc, lambda: len(_steps_logged(run)) >= 2)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err[-3000:]
    step = _steps_logged(run)[-1]
    saved = run / "checkpoints" / f"step_{step:06d}"
    assert saved.is_dir() and f"interrupted after step {step}" in err and "--resume" in err, err[-2000:]
    assert f"{StopOnSignal.NAMES[signum]}: finishing the step under way" in err, err[-2000:]
    assert "Traceback" not in err and "was locked by" not in err and (run / LOCK_NAME).read_text() == ""
    res = run_cli("train", cfg, "--resume", "--max-steps", str(step + 1))
    assert res.code == 0 and f"resumed from {saved} at step {step}" in res.err, res.err


def test_ctrl_c_saves_the_step_and_says_how_to_resume_and_a_second_stops_at_once(prepared, tmp_path):
    _stopped_after_two_steps(prepared, tmp_path, "ctrlc", signal.SIGINT, 130)
    # twice: stops at once, without saving
    proc = _background("train", write_config(prepared, tmp_path, name="twice", steps=500, task="t2v"))
    _wait_for(proc, lambda: bool(_steps_logged(tmp_path / "twice")))
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)  # two signals sent at once may arrive as one
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    # 130, or killed by the SIGINT itself (-2) when the second one lands while Python is already exiting
    assert proc.returncode in (130, -signal.SIGINT) and "Traceback" not in err, err[-3000:]
    assert "was locked by" not in err  # a fresh run folder: no stale lock to speak of


def test_sigterm_saves_the_step_as_ctrl_c_does(prepared, tmp_path):
    """A cloud machine being stopped or a scheduler's preemption sends SIGTERM: as Ctrl-C, with exit status 143
    (as a shell reports SIGTERM)."""
    _stopped_after_two_steps(prepared, tmp_path, "term", signal.SIGTERM, 143)


def test_resume_refuses_to_go_back_and_accepts_the_same_files_spelled_otherwise(prepared, tmp_path):
    cfg = write_config(prepared, tmp_path, name="done", steps=2, task="t2v")
    assert run_cli("train", cfg).code == 0
    run = tmp_path / "done"
    files = _files(run)
    res = run_cli("train", cfg, "--resume", "--max-steps", "1")
    assert_user_error(res, "is at step 2, past the 1 steps", "nothing was changed")
    assert {k: v for k, v in _files(run).items() if k != LOCK_NAME} == {k: v for k, v in files.items() if k != LOCK_NAME}
    # the same checkpoint and cache through symlinks (and spelled with ./): the same run
    data = yaml.safe_load(cfg.read_text())
    (tmp_path / "link.safetensors").symlink_to(data["model"]["checkpoint"])
    (tmp_path / "cache-link").symlink_to(data["data"]["cache_dir"])
    data["model"]["checkpoint"], data["data"]["cache_dir"] = "./link.safetensors", "cache-link"
    cfg.write_text(yaml.safe_dump(data))
    res = run_cli("train", cfg, "--resume", "--max-steps", "3")
    assert res.code == 0 and "resumed from" in res.err and "step 3/3" in res.err, res.err


def test_a_cache_missing_text_features_is_refused(prepared, tmp_path):
    cache = _own_cache(prepared, tmp_path)
    manifest = json.loads((cache / "manifest.json").read_text())
    (cache / manifest["items"][-1]["text"]).unlink()
    cfg = write_config(prepared, tmp_path, name="notext", steps=1)
    data = yaml.safe_load(cfg.read_text())
    data["data"]["cache_dir"] = str(cache)
    cfg.write_text(yaml.safe_dump(data))
    assert_user_error(run_cli("train", cfg), "lacks 1 file(s)", "text features", "ltx-lora preprocess")
    assert not (tmp_path / "notext").exists()  # refused before writing: not even the run folder (or its lock)


# --- lora merge ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["nan_value", "inf_alpha", "strength_nan", "strength_inf"])
def test_merge_refuses_what_would_write_a_broken_base(damage, tiny_checkpoint, tmp_path):
    lora = load_file(str(tiny_checkpoint("user-lora")))
    if damage == "nan_value":
        key = next(k for k in lora if k.endswith("lora_B.weight") or ".lora_up." in k)
        lora[key][0, 0] = float("nan")
    if damage == "inf_alpha":
        key = next(k for k in lora if k.endswith(".alpha"))
        lora[key] = torch.tensor(float("inf"))
    path = tmp_path / "lora.safetensors"
    save_file(lora, str(path))
    strength = {"strength_nan": "nan", "strength_inf": "inf"}.get(damage, "1.0")
    out = tmp_path / "merged.safetensors"
    res = run_cli("lora", "merge", path, "--base", tiny_checkpoint("dev"), "-o", out, "--strength", strength)
    assert_user_error(res, "not a finite number" if damage.startswith("strength") else "NaN/inf")
    assert not out.exists() and not list(tmp_path.glob(".merged*"))
