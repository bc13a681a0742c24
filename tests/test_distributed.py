"""Several processes on CPU (gloo), through the real CLI under torch.distributed.run, on the tiny fixture:
DDP and FSDP2 train the LoRA one process trains with the same global batch, resume exactly, refuse another world
size, and sharded preprocessing writes the cache one process writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import SRC, CliResult, assert_user_error, run_cli
from safetensors.torch import load_file
from test_train import prepared  # noqa: F401 - the shared preprocessed tiny dataset (session fixture)

STEPS = 4
# In-loop validation at step 0 and the end (tiny sampling); sampling draws from forked RNGs, so it leaves training
# exactly as without it, and the one-process reference runs without it.
VALIDATION = {"prompts": ["a red ball bouncing"], "every": STEPS, "resolution": "64x64x9", "steps": 2,
              "stg_blocks": [1]}


def torchrun(*args: str, nproc: int = 2) -> CliResult:
    """`python -m torch.distributed.run --nproc-per-node 2 -m ltx_lora ARGS`, as documented in the README."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "200", "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", "ltx_lora", *map(str, args)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    return CliResult(p.returncode, p.stdout, p.stderr)


def config(prepared, folder: Path, name: str, *, batch_size: int, strategy: str = "ddp",
           validation: bool = False) -> Path:
    _, base = prepared
    cfg = {**base, "output_dir": str(folder / name), "validation": VALIDATION if validation else base["validation"],
           "train": {**base["train"], "steps": STEPS, "batch_size": batch_size, "gradient_accumulation": 2,
                     "ema": {"decay": 0.5}},  # the EMA of the LoRA: per rank (FSDP: per shard), saved whole
           "checkpoints": {"every": 2, "keep_last": 3}, "distributed": {"strategy": strategy}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def lora(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "lora.safetensors"))


@pytest.fixture(scope="module")
def one_process(prepared, tmp_path_factory) -> Path:
    """The reference: one process with batch 2 (the global batch of 2 processes x batch 1), 2 micro-batches."""
    folder = tmp_path_factory.mktemp("one-process")
    res = run_cli("train", config(prepared, folder, "run", batch_size=2))
    assert res.code == 0, res.err
    return folder / "run"


def truncate_to_step(run: Path, step: int) -> None:
    """Leave the run folder as a kill right after checkpoint `step` leaves it."""
    for ckpt in (run / "checkpoints").iterdir():
        if int(ckpt.name.split("_")[1]) > step:
            shutil.rmtree(ckpt)
    (run / "lora.safetensors").unlink()


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_train_the_one_process_lora_and_resume_exactly(prepared, tmp_path, one_process, strategy):
    cfg = config(prepared, tmp_path, "run", batch_size=1, strategy=strategy, validation=True)
    if strategy == "ddp":
        res = torchrun("train", cfg)
    else:  # the launcher users call: the same torchrun underneath
        res = run_cli("train", cfg, "--gpus", "2")
    out = res.err
    assert res.code == 0, out[-3000:]
    assert f"2 processes, {strategy}: global batch 1 x 2 x 2" in out
    assert out.count(f"step {STEPS}/{STEPS}") == 1  # rank 0 logs, the other rank is silent
    if strategy == "ddp":  # rank 0 samples with its whole model while the other rank waits
        assert out.count("validation step_000000: 1 samples") == 1 and out.count("validation step_000004: 1 samples") == 1, out
    else:  # no GPU holds the whole model: said, not silently skipped
        assert "in-loop validation is not available with distributed.strategy fsdp" in out
    run = tmp_path / "run"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))

    # The same LoRA as one process with the same global batch (same samples, sigmas and noise; the gradient sums
    # differ in float order only). Compared on the fp32 training state; lora_B starts at 0, so it must have moved.
    one_state = load_file(str(one_process / "checkpoints/step_000004/state.safetensors"))
    two_state = load_file(str(run / "checkpoints/step_000004/state.safetensors"))
    assert two_state.keys() == one_state.keys()  # full LoRA + full optimizer state, as one process writes it
    lora_b = [k for k in one_state if k.startswith("lora.") and ".lora_B." in k]
    assert lora_b and min(one_state[k].abs().max().item() for k in lora_b) > 1e-4
    for k, v in one_state.items():
        if k.startswith(("lora.", "ema.")):
            torch.testing.assert_close(two_state[k], v, rtol=1e-4, atol=1e-5, msg=k)
    assert any(k.startswith("ema.") for k in one_state) and (run / "lora_ema.safetensors").is_file()
    two, one = lora(run), lora(one_process)  # the exported bf16 files: equal up to bf16 rounding
    assert two.keys() == one.keys()
    for k in one:
        torch.testing.assert_close(two[k].float(), one[k].float(), rtol=1e-2, atol=1e-5, msg=k)

    # Resume: a run stopped right after its step-2 checkpoint continues bit-exactly.
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    truncate_to_step(resumed, 2)
    data = yaml.safe_load(cfg.read_text())
    data["output_dir"] = str(resumed)
    cfg.write_text(yaml.safe_dump(data))
    res = torchrun("train", cfg, "--resume")
    assert res.code == 0, res.err[-3000:]
    assert "resumed from" in res.err and "step_000002" in res.err
    back, straight = lora(resumed), lora(run)
    for k in straight:
        assert torch.equal(back[k], straight[k]), k
    back_state = load_file(str(resumed / "checkpoints/step_000004/state.safetensors"))
    for k, v in two_state.items():
        assert torch.equal(back_state[k], v), k

    if strategy == "ddp":
        # Another global batch (1 process x batch 1) would change the data order: refused in one sentence, before
        # any model is loaded.
        assert_user_error(run_cli("train", cfg, "--resume"), "batch_size 1 on 2 process", "--gpus 2")
    else:
        # The same global batch on another number of processes resumes: the checkpoint is world-size independent.
        # One process x batch 2 stopped after step 2, continued by 2 processes x batch 1, through the launcher.
        across = tmp_path / "across"
        shutil.copytree(one_process, across)
        truncate_to_step(across, 2)
        data["output_dir"] = str(across)
        cfg.write_text(yaml.safe_dump(data))
        res = run_cli("train", cfg, "--resume", "--gpus", "2")
        assert res.code == 0, res.err[-3000:]
        assert "resumed from" in res.err
        state = load_file(str(across / "checkpoints/step_000004/state.safetensors"))
        for k, v in one_state.items():
            if k.startswith("lora."):
                torch.testing.assert_close(state[k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_sharded_preprocess_writes_the_one_process_cache(prepared, tmp_path):
    _, base = prepared
    cfg = {**base, "data": {**base["data"], "cache_dir": str(tmp_path / "cache")}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = torchrun("preprocess", path)
    assert res.code == 0, res.err[-3000:]
    assert res.out.count("used 5 clips") == 1, res.out  # rank 0 reports for both
    one = json.loads((Path(base["data"]["cache_dir"]) / "manifest.json").read_text())
    two = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert one["items"] == two["items"] and one["prompts"] == two["prompts"]
    files = sorted(p.relative_to(tmp_path / "cache") for p in (tmp_path / "cache").rglob("*.safetensors"))
    assert files == sorted(p.relative_to(base["data"]["cache_dir"])
                           for p in Path(base["data"]["cache_dir"]).rglob("*.safetensors"))
    for rel in files:
        a, b = load_file(str(tmp_path / "cache" / rel)), load_file(str(Path(base["data"]["cache_dir"]) / rel))
        for k in a:  # the same encoders on the same inputs (thread counts differ: float order only)
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-4)
    # One process afterwards finds every entry: the cache does not depend on the number of processes.
    res = run_cli("preprocess", path)
    assert res.code == 0, res.err
    assert "used 5 clips (5 already cached)" in res.out and "0 texts encoded" in res.out, res.out


def test_sigterm_to_gpus_saves_every_workers_step(prepared, tmp_path):
    """`train --gpus 2` stopped with SIGTERM (a cloud machine being stopped): torchrun passes it to the workers,
    which finish the step under way and save it together; the launcher exits 143 without a traceback."""
    import signal
    import time

    cfg = config(prepared, tmp_path, "term", batch_size=1)
    data = yaml.safe_load(cfg.read_text())
    data["train"]["steps"], data["checkpoints"] = 500, {"every": 1000, "keep_last": 1}
    cfg.write_text(yaml.safe_dump(data))
    env = {**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "200", "NO_COLOR": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ltx_lora", "train", str(cfg), "--gpus", "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "term" / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 2):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err and "SIGTERM: finishing the step under way" in err, err[-3000:]
    step = json.loads(metrics.read_text().splitlines()[-1])["step"]
    assert (tmp_path / "term" / "checkpoints" / f"step_{step:06d}").is_dir(), err[-3000:]
