"""LoRA training on the tiny LTX-2.3 fixture: every mode, learning, frozen base, exact resume after SIGKILL,
kill-safety, clear refusals, and the objective's fidelity to the official step."""

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
from conftest import BUCKETS, SRC, assert_user_error, run_cli
from safetensors import safe_open
from safetensors.torch import load_file

from ltx_lora.files.lock import LOCK_NAME


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, tiny_checkpoint, tiny_gemma, scanned_dataset):
    """The session's scanned dataset preprocessed once (real VAE + Gemma path); tests train from its cache.
    Read-only: (root, base config); a test that changes the cache copies it."""
    root = tmp_path_factory.mktemp("prepared")
    cfg = {"output_dir": str(root / "unused"),
           "model": {"checkpoint": str(tiny_checkpoint("dev")), "text_encoder": str(tiny_gemma)},
           "data": {"dataset": str(scanned_dataset), "buckets": BUCKETS, "cache_dir": str(root / "cache")},
           "train": {"steps": 6, "learning_rate": 1e-3, "mixed_precision": "fp32"},
           "checkpoints": {"every": 1, "keep_last": 3},
           # stg_blocks: the tiny model has blocks 0-1 (29, the default, is a block of the 22B model)
           "validation": {"prompts": ["a red ball bouncing"], "every": None, "stg_blocks": [1]},
           "logging": {"tensorboard": False}}
    (root / "base.yaml").write_text(yaml.safe_dump(cfg))
    res = run_cli("preprocess", root / "base.yaml")
    assert res.code == 0, res.err
    assert "used 5 clips" in res.out, res.out
    return root, cfg


def write_config(prepared, tmp_path: Path, name: str = "run", task: str | dict | None = None, **train) -> Path:
    _, base = prepared
    cfg = {**base, "output_dir": str(tmp_path / name), "train": {**base["train"], **train}}
    if task:
        cfg["task"] = task
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def lora_tensors(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "lora.safetensors"))


def test_the_trainer_without_the_cli_keeps_bitsandbytes_kernels_note_quiet():
    """A program using the trainer (as the bench scripts do) does not show bitsandbytes' "pip install kernels" note
    either: the package silences it on import, before peft loads bitsandbytes. Where plain `import peft` shows no
    note (a CPU without AVX512-BF16, or no bitsandbytes), there is nothing to check."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}

    def stderr(code: str) -> str:
        p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        return p.stderr

    if "pip install kernels" not in stderr("import peft"):
        pytest.skip("importing peft shows no bitsandbytes kernels note on this machine")
    code = ("from ltx_lora.config import LoraConfig; from ltx_lora.train.lora import peft_config; "
            "peft_config(LoraConfig())")
    assert "pip install kernels" not in stderr(code)


@pytest.mark.parametrize("task", ["t2v", "t2av", "i2v"])
def test_every_mode_trains_and_exports_a_comfy_lora(prepared, tmp_path, task):
    cfg = write_config(prepared, tmp_path, task=task, steps=3)
    fp32 = task == "t2v"  # one mode writes its LoRA files unrounded (checkpoints.precision)
    if fp32:
        data = yaml.safe_load(cfg.read_text())
        data["checkpoints"]["precision"] = "fp32"
        cfg.write_text(yaml.safe_dump(data))
    res = run_cli("train", cfg)
    assert res.code == 0, res.err
    assert "step 3/3" in res.err
    assert "pip install kernels" not in res.err  # bitsandbytes' 4-bit CPU note (peft imports it) is not ours to show
    t = lora_tensors(tmp_path / "run")
    assert all(k.startswith("diffusion_model.") for k in t)
    assert any(".audio_attn1.to_q.lora_A.weight" in k for k in t)  # short patterns reach the audio branch too
    moved_audio = any(v.abs().sum() > 0 for k, v in t.items() if "audio_attn1" in k and "lora_B" in k)
    assert moved_audio == (task != "t2v")  # t2v never runs the audio branch
    with safe_open(str(tmp_path / "run" / "lora.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["task"] == task and meta["rank"] == "32" and meta["step"] == "3"
    assert (meta["model_version"], meta["base_model"]) == ("2.3.0", "LTX-2.3 22B Dev")  # lora check reads both
    assert {v.dtype for v in t.values()} == {torch.float32 if fp32 else torch.bfloat16}
    checkpoint = tmp_path / "run" / "checkpoints" / "step_000003"
    assert {v.dtype for v in load_file(str(checkpoint / "run_step_000003.safetensors")).values()} == \
        {torch.float32 if fp32 else torch.bfloat16}
    if fp32:  # the trained fp32 weights themselves (rank 32, alpha 32: scale 1 folded into lora_B)
        from ltx_lora.train.checkpointer import load_training_state

        state = load_training_state(checkpoint).lora
        assert len(state) == len(t)
        for name, value in state.items():
            module, ab = name.split(".lora_")
            assert torch.equal(t[f"diffusion_model.{module}.lora_{ab[0]}.weight"], value), name


OUTPAINTING_64 = {"audio": {"role": "off"},  # video_outpainting with a box inside the fixture's 64x64 frames
                  "video": {"conditions": [{"type": "spatial_crop", "box": [0, 0, 32, 64]}]}}


@pytest.mark.parametrize("task", ["t2a", "a2v", "v2a", "video_extend", "video_suffix", "audio_extend",
                                  "audio_suffix", "video_outpainting"])
def test_every_task_without_new_data_columns_trains(prepared, tmp_path, task):
    """2 steps of each task the fixture's clips can train (mask and reference tasks need their own columns).
    Which branch's LoRA moves says which modality was generated or conditioned; a modality that is off never
    runs (its LoRA stays zero)."""
    cfg = write_config(prepared, tmp_path, task=OUTPAINTING_64 if task == "video_outpainting" else task, steps=2)
    data = yaml.safe_load(cfg.read_text())
    data["validation"]["prompts"] = []  # a conditioned task's prompts need their inputs (tests/test_validation.py)
    cfg.write_text(yaml.safe_dump(data))
    res = run_cli("train", cfg)
    assert res.code == 0, res.err
    assert "step 2/2" in res.err
    t = lora_tensors(tmp_path / "run")

    def moved(branch: str) -> bool:
        return any(v.abs().sum() > 0 for k, v in t.items() if f".{branch}.to_q.lora_B" in k)

    video_off, audio_off = task == "t2a" or task.startswith("audio_"), task == "video_outpainting"
    assert moved("attn1") != video_off and moved("audio_attn1") != audio_off, (moved("attn1"), moved("audio_attn1"))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    video_logged = task not in ("v2a", "t2a") and not task.startswith("audio_")
    assert [r["loss_video"] is not None for r in records] == [video_logged] * 2
    audio_logged = [r["loss_audio"] is not None for r in records]  # a step of silent clips trains video alone
    assert any(audio_logged) if task not in ("a2v", "video_outpainting") else not any(audio_logged)
    if task in ("a2v", "v2a", "t2a") or task.startswith("audio_"):  # the fixture's silent clips and stills
        assert "have no audio and are left out" in res.err
    if task in ("video_extend", "video_suffix"):  # 8 latent frames given: all of the fixture's 2-frame clips
        assert "8 latent frame(s) cover every frame (2) of bucket 64x64x9" in res.err
    with safe_open(str(tmp_path / "run" / "lora.safetensors"), "pt") as f:
        assert f.metadata()["task"] == ("custom" if task == "video_outpainting" else task)


def test_loss_decreases_when_overfitting(prepared, tmp_path):
    cfg = write_config(prepared, tmp_path, task="t2v", steps=40, learning_rate=3e-3, scheduler="constant",
                       timestep_sampling="uniform")
    res = run_cli("train", cfg)
    assert res.code == 0, res.err
    losses = [json.loads(line)["loss_video"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 40
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10, losses


def _train_in_background(cfg: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.Popen([sys.executable, "-m", "ltx_lora", "train", str(cfg), *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _steps_logged(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line)["step"] for line in lines if line.endswith("}")]  # a line being written is left out


def _lora_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def test_resume_after_sigkill_is_bit_exact(prepared, tmp_path):
    ema = {"decay": 0.9, "start_step": 1}  # the EMA of the LoRA resumes exactly too, and LoRA+'s two groups
    straight = write_config(prepared, tmp_path, name="straight", ema=ema, loraplus_lr_ratio=4.0)
    assert run_cli("train", straight).code == 0
    killed = write_config(prepared, tmp_path, name="killed", ema=ema, loraplus_lr_ratio=4.0)
    data = yaml.safe_load(killed.read_text())
    data["checkpoints"] = {"every": 3, "keep_last": 3}
    killed.write_text(yaml.safe_dump(data))
    proc = _train_in_background(killed)
    run, ckpts = tmp_path / "killed", tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 300
    while not ((ckpts / "step_000003").exists() and 4 in _steps_logged(run)):  # step 4 logged past checkpoint 3
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (ckpts / "step_000006").exists(), "the run ended before the kill: nothing left to resume"
    res = run_cli("train", killed, "--resume")
    assert res.code == 0, res.err
    assert "resumed from" in res.err
    a, b = lora_tensors(tmp_path / "straight"), lora_tensors(run)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    (ea, ma), (eb, mb) = _lora_file(tmp_path / "straight" / "lora_ema.safetensors"), _lora_file(run / "lora_ema.safetensors")
    assert ea.keys() == a.keys() and ma["ema_decay"] == "0.9" and ma == mb and ma["loraplus_lr_ratio"] == "4.0"
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
    assert any(not torch.equal(ea[k], a[k]) for k in a if "lora_B" in k), "the EMA export is the raw LoRA"
    assert (ckpts / "step_000006" / "killed_step_000006_ema.safetensors").is_file()
    # the checkpoints' LoRA files (the glob `lora ema --help` shows) average oldest first by their recorded step
    res = run_cli("lora", "ema", *sorted(ckpts.glob("*/killed_step_??????.safetensors"), reverse=True), "-o",
                  tmp_path / "post_hoc.safetensors")
    assert res.code == 0 and "(step 3), killed_step_000006.safetensors (step 6)" in res.out, res.out + res.err
    assert _steps_logged(run) == [1, 2, 3, 4, 5, 6]  # steps 4.. of the killed run are dropped, not logged twice
    # resuming the finished run: one line, exit 0, nothing rewritten
    files = lambda: {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != LOCK_NAME}  # noqa: E731
    before = files()
    res = run_cli("train", killed, "--resume")
    assert res.code == 0, res.err
    assert "already complete at step 6" in res.err and "steps 7..6" not in res.err, res.err
    assert before == files()  # (the run folder's lock, .ltx-lora.lock, was taken and released)
    # ... unless --max-steps asks for more
    res = run_cli("train", killed, "--resume", "--max-steps", "7")
    assert res.code == 0, res.err
    assert "resumed from" in res.err and "step 7/7" in res.err, res.err
    assert _steps_logged(run) == [1, 2, 3, 4, 5, 6, 7]
    final, final_ema = _lora_file(run / "lora.safetensors"), _lora_file(run / "lora_ema.safetensors")
    (run / "lora.safetensors").unlink()  # as a kill between the last checkpoint and the final export leaves it
    (run / "lora_ema.safetensors").unlink()
    res = run_cli("train", killed, "--resume", "--max-steps", "7")
    assert res.code == 0 and "already complete at step 7" in res.err and "wrote the final LoRA" in res.err, res.err
    for before, path in ((final, "lora.safetensors"), (final_ema, "lora_ema.safetensors")):
        again = _lora_file(run / path)
        assert again[1] == before[1] and all(torch.equal(again[0][k], v) for k, v in before[0].items())


@pytest.fixture(scope="module")
def one_step_run(prepared, tmp_path_factory) -> Path:
    """One step of the base config (default task) trained through the CLI, once for this module: its run folder
    (`<folder>/run`, config `<folder>/run.yaml`). Read-only: a test that trains on or resumes it copies it."""
    folder = tmp_path_factory.mktemp("one-step")
    res = run_cli("train", write_config(prepared, folder, steps=1))
    assert res.code == 0, res.err
    return folder / "run"


def test_refusals_are_one_sentence(prepared, tmp_path, tiny_checkpoint, one_step_run):
    shutil.copytree(one_step_run, tmp_path / "run")  # a finished run with checkpoints, this test's own
    cfg = write_config(prepared, tmp_path, steps=1)
    assert_user_error(run_cli("train", cfg), "already holds checkpoints", "--resume")
    data = yaml.safe_load(cfg.read_text())
    data["lora"] = {"rank": 8}
    cfg.write_text(yaml.safe_dump(data))
    assert_user_error(run_cli("train", cfg, "--resume"), "rank=32", "config says 8")
    # another optimizer's state does not load into this one (it crashed at the first step with KeyError 'beta1')
    data["lora"] = {}
    data["train"]["optimizer"] = "adafactor"
    cfg.write_text(yaml.safe_dump(data))
    assert_user_error(run_cli("train", cfg, "--resume"), "optimizer='adamw'", "config says 'adafactor'")
    data["train"]["optimizer"] = "adamw"
    data["model"]["checkpoint"] = str(tiny_checkpoint("distilled"))
    data["output_dir"] = str(tmp_path / "other")
    cfg.write_text(yaml.safe_dump(data))
    assert_user_error(run_cli("train", cfg), "distilled")
    data["model"]["checkpoint"] = "https://huggingface.co/Lightricks/LTX-2.3/blob/main/ltx-2.3-22b-dev.safetensors"
    cfg.write_text(yaml.safe_dump(data))
    assert_user_error(run_cli("train", cfg), "ltx-2.3-22b-dev.safetensors", "model.checkpoint")
    data["model"]["checkpoint"] = str(tiny_checkpoint("dev"))
    data["data"]["cache_dir"] = str(tmp_path / "empty-cache")
    cfg.write_text(yaml.safe_dump(data))
    assert_user_error(run_cli("train", cfg), "ltx-lora preprocess")


def test_a_resumed_run_uses_the_configs_weight_decay(prepared, tmp_path, one_step_run):
    """Loading the optimizer state puts back the saved parameter groups' settings: train.weight_decay changed for
    the resume applies (it was silently the saved one), as a changed learning rate does."""
    from rich.console import Console

    from ltx_lora.config import load_config
    from ltx_lora.runtime.run import resolve_run
    from ltx_lora.train.trainer import Trainer

    shutil.copytree(one_step_run, tmp_path / "run")
    cfg = write_config(prepared, tmp_path, steps=2, weight_decay=0.25)
    trainer = Trainer(resolve_run(load_config(cfg)), console=Console(quiet=True), resume=True)
    manifest, resume = trainer._check_inputs()
    t = trainer._build(manifest, resume)
    assert t.start == 1 and [g["weight_decay"] for g in t.optimizer.param_groups] == [0.25]


def test_prodigy_and_gradient_accumulation_train(prepared, tmp_path):
    cfg = write_config(prepared, tmp_path, task="t2v", steps=2, optimizer="prodigy", learning_rate=1.0,
                       gradient_accumulation=2, scheduler="cosine", warmup_steps=1)
    res = run_cli("train", cfg)
    assert res.code == 0, res.err
    t = lora_tensors(tmp_path / "run")
    assert any(v.abs().sum() > 0 for k, v in t.items() if "lora_B" in k)


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_checkpoint(prepared, tmp_path):
    import shutil

    from safetensors.torch import save_file

    root, base = prepared
    cache = tmp_path / "cache"
    shutil.copytree(base["data"]["cache_dir"], cache)
    cfg = write_config(prepared, tmp_path, task="t2v", steps=4)
    data = yaml.safe_load(cfg.read_text())
    data["data"]["cache_dir"] = str(cache)
    data["checkpoints"] = {"every": 2, "keep_last": 2}
    cfg.write_text(yaml.safe_dump(data))
    assert run_cli("train", cfg, "--max-steps", "2").code == 0
    for f in (cache / "latents").glob("*.safetensors"):  # every clip now decodes to NaN
        t = load_file(str(f))
        save_file({k: torch.full_like(v, float("nan")) for k, v in t.items()}, str(f))
    res = run_cli("train", cfg, "--resume")
    assert res.code == 1, res.err
    assert "at step 3" in res.err and "step_000002" in res.err and "Traceback" not in res.err
    assert (tmp_path / "run" / "checkpoints" / "step_000002" / "run_step_000002.safetensors").is_file()


def test_the_dataset_repeats_reach_the_batch_order(prepared, tmp_path):
    """A cache whose manifest draws one clip 3 times (preprocess writes the dataset's repeats column there,
    tests/test_preprocess.py): training plans 7 draws a pass over its 5 clips, and says so."""
    import shutil

    _, base = prepared
    cache = tmp_path / "cache"
    shutil.copytree(base["data"]["cache_dir"], cache)
    manifest = json.loads((cache / "manifest.json").read_text())
    manifest["items"][0]["repeats"] = 3
    (cache / "manifest.json").write_text(json.dumps(manifest))
    cfg = write_config(prepared, tmp_path, task="t2v", steps=1)
    data = yaml.safe_load(cfg.read_text())
    data["data"]["cache_dir"] = str(cache)
    cfg.write_text(yaml.safe_dump(data))
    res = run_cli("train", cfg)
    assert res.code == 0, res.err
    assert "5 cached clips (7 draws a pass over the data, with the dataset's repeats)" in res.err, res.err


def test_a_failing_compiler_falls_back_to_eager_with_one_line(prepared, tmp_path):
    """train.compile: on with a C++ compiler that fails (inductor needs one on CPU): one note, then the same
    training as eager, bit for bit (the failed step's data and random draws are replayed)."""
    eager = write_config(prepared, tmp_path, name="eager", task="t2v", steps=2, compile="off")
    assert run_cli("train", eager).code == 0
    broken = write_config(prepared, tmp_path, name="broken", task="t2v", steps=2, compile="on")
    res = run_cli("train", broken, env={"CXX": "/bin/false", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "ind")})
    assert res.code == 0, res.err
    assert res.err.count("compiling the transformer blocks failed") == 1, res.err
    assert "Traceback" not in res.err
    a, b = lora_tensors(tmp_path / "eager"), lora_tensors(tmp_path / "broken")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_rank_lowered_by_the_memory_plan_resumes_with_the_same_config(prepared, tmp_path):
    """The plan may train a lower rank than the config's; the config stays as written, the run records what was
    trained, and --resume with the same config continues (it used to be refused: the rank was written back into
    the config after the resume fingerprint had been read)."""
    from dataclasses import replace

    from rich.console import Console

    from ltx_lora.config import parse_config
    from ltx_lora.ltx.sizes import transformer_size
    from ltx_lora.runtime.base_file import BaseFile
    from ltx_lora.runtime.memory import FRAGMENTATION, estimate, workload_for_config
    from ltx_lora.runtime.run import resolve_run
    from ltx_lora.train.trainer import Trainer

    cfg = parse_config(yaml.safe_load(write_config(prepared, tmp_path, task="t2v", steps=2).read_text()))
    # A budget between the smallest plans at rank 16 and at rank 32: only a lowered rank fits.
    size = transformer_size(BaseFile.read(cfg.model.checkpoint).architecture)
    work = workload_for_config(cfg, size)

    def smallest(rank: int) -> float:
        return min(sum(estimate(size, replace(work, rank=rank), q, s, host).values())
                   for q in ("none", "int8") for s in range(size.blocks + 1) for host in (False, True))

    budget = ((smallest(16) + smallest(32)) / 2 * FRAGMENTATION, "test budget")
    quiet = Console(quiet=True)
    first = resolve_run(cfg, max_steps=1, budget=budget)
    assert (first.plan.rank, first.lora.rank, first.lora.effective_alpha) == (16, 16, 16.0)
    assert cfg.lora.rank == 32 and first.config.lora.rank == 32  # the config stays what the user wrote
    Trainer(first, console=quiet).train()
    run_dir = tmp_path / "run"
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["lora"]["rank"] == 32
    import json

    assert json.loads((run_dir / "run.json").read_text())["lora"]["rank"] == 16
    out = Trainer(resolve_run(cfg, budget=budget), resume=True, console=quiet).train()
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert (meta["rank"], meta["alpha"], meta["step"]) == ("16", "16.0", "2")
    assert {v.shape[0] for k, v in lora_tensors(run_dir).items() if ".lora_A." in k} == {16}


def test_log_lines_are_whole_one_per_step(prepared, tmp_path):
    """Not a terminal (a log): no bar, one line per step, and no line wrapped at the width (a long path is whole)."""
    deep = tmp_path / ("a_rather_long_folder_name_for_the_runs_of_this_experiment_" * 2)
    deep.mkdir()
    cfg = write_config(prepared, deep, steps=3, task="t2v")
    res = run_cli("train", cfg, env={"COLUMNS": "80"})
    assert res.code == 0, res.err
    lines = res.err.splitlines()
    assert [line.split(" |")[0] for line in lines if line.startswith("step ")] == ["step 1/3", "step 2/3", "step 3/3"]
    final = str(deep / "run" / "lora.safetensors")
    assert len(final) > 80 and any(final in line for line in lines), res.err


def test_wandb_without_wandb_is_refused_at_start(prepared, tmp_path):
    cfg = write_config(prepared, tmp_path, steps=1)
    data = yaml.safe_load(cfg.read_text())
    data["logging"] = {"wandb": True, "tensorboard": False}
    cfg.write_text(yaml.safe_dump(data))
    assert_user_error(run_cli("train", cfg), "logging.wandb", "pip install wandb")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_caption_dropout_trains_and_a_cache_without_the_empty_prompt_is_refused(prepared, tmp_path, one_step_run):
    root, _ = prepared
    cfg = write_config(prepared, tmp_path, name="dropout", steps=1, caption_dropout=1.0)
    res = run_cli("train", cfg)
    assert res.code == 0, res.err
    a, b = lora_tensors(tmp_path / "dropout"), lora_tensors(one_step_run)  # the same run without dropout
    assert any(not torch.equal(a[k], b[k]) for k in a)  # every sample trained on the empty prompt instead
    # a cache preprocessed before caption dropout existed: one sentence, run preprocess again
    stale = tmp_path / "stale_cache"
    shutil.copytree(root / "cache", stale)
    manifest = json.loads((stale / "manifest.json").read_text())
    del manifest["prompts"][""]
    (stale / "manifest.json").write_text(json.dumps(manifest))
    data = yaml.safe_load(cfg.read_text())
    data["data"]["cache_dir"], data["output_dir"] = str(stale), str(tmp_path / "stale_run")
    cfg.write_text(yaml.safe_dump(data))
    assert_user_error(run_cli("train", cfg), "caption_dropout needs the empty prompt", "ltx-lora preprocess")


def test_validation_with_use_ema_samples_the_ema_and_puts_the_raw_weights_back_exactly(prepared, tmp_path):
    """The validation hook sees the EMA weights (validation.use_ema) and training goes on with the raw ones, bit for
    bit: the run ends where the same run sampling with the raw weights ends."""
    from ltx_lora.config import load_config
    from ltx_lora.runtime.run import resolve_run
    from ltx_lora.train.checkpointer import load_training_state
    from ltx_lora.train.lora import lora_parameters
    from ltx_lora.train.trainer import Trainer

    seen: dict[bool, dict[int, dict[str, torch.Tensor]]] = {}
    for use_ema in (True, False):
        path = write_config(prepared, tmp_path, name=f"ema_{use_ema}", steps=4, ema={"decay": 0.5})
        data = yaml.safe_load(path.read_text())
        data["validation"] = {**data["validation"], "every": 2, "use_ema": use_ema}
        path.write_text(yaml.safe_dump(data))
        samples = seen.setdefault(use_ema, {})

        def factory(_connectors, samples=samples):  # stands in for the sampler: records what it would sample with
            def sample(transformer, step, _optimizer):
                samples[step] = {n: p.detach().clone() for n, p in lora_parameters(transformer).items()}
                return []
            return sample

        Trainer(resolve_run(load_config(path)), validation=factory).train()
    assert sorted(seen[True]) == [0, 2, 4]
    for step in (2, 4):
        state = load_training_state(tmp_path / "ema_True" / "checkpoints" / f"step_{step:06d}")
        assert all(torch.equal(seen[True][step][n], state.ema[n]) for n in state.ema)  # sampled with the EMA
        assert all(torch.equal(seen[False][step][n], state.lora[n]) for n in state.lora)  # use_ema off: the raw
        assert any(not torch.equal(state.ema[n], state.lora[n]) for n in state.lora)
    a = load_training_state(tmp_path / "ema_True" / "checkpoints" / "step_000004")
    b = load_training_state(tmp_path / "ema_False" / "checkpoints" / "step_000004")
    assert all(torch.equal(a.lora[n], b.lora[n]) and torch.equal(a.ema[n], b.ema[n]) for n in a.lora)
    final, other = (load_file(str(tmp_path / f"ema_{u}" / "lora.safetensors")) for u in (True, False))
    assert final.keys() == other.keys() and all(torch.equal(final[k], other[k]) for k in final)  # after the last
