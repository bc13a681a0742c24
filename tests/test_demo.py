"""`ltx-lora demo` end to end, as the README runs it, and every artefact it promises."""

import json
import shlex
import subprocess

from conftest import assert_user_error, run_cli
from safetensors import safe_open


def test_demo_runs_the_real_pipeline(tmp_path):
    out = tmp_path / "demo"
    res = run_cli("demo", "--out", out, "--steps", "4")
    assert res.code == 0, res.err[-3000:]
    for stage in ("inspect the checkpoint", "scan the clips", "preprocess", "train 4 steps", "check the LoRA", "done in"):
        assert stage in res.err, stage
    assert "LTX-2.3" in res.out  # inspect named the tiny checkpoint
    with safe_open(str(out / "run" / "lora.safetensors"), "pt") as f:
        keys = list(f.keys())
        meta = f.metadata()
    assert keys and all(k.startswith("diffusion_model.") for k in keys)
    assert meta["step"] == "4"
    assert (out / "dataset_report.html").stat().st_size > 1000
    assert (out / "run" / "samples" / "step_000004" / "p1.mp4").is_file() and (out / "run" / "report.html").is_file()
    steps = [json.loads(line)["step"] for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    # every command it prints pastes into a shell as it is: bash reads the same arguments (the bucket spec whole)
    commands = [line.split(": ", 1)[1] for line in res.err.splitlines() if line.startswith("demo [")]
    assert len(commands) == 5 and all(c.startswith("ltx-lora ") for c in commands), commands
    for command in commands:
        shell = subprocess.run(["bash", "-c", "ltx-lora() { printf '%s\\0' \"$@\"; }; " + command],
                               capture_output=True, text=True)
        assert shell.returncode == 0 and shell.stdout.split("\0")[:-1] == shlex.split(command)[1:], (command, shell)
    assert "64x64x9" in shlex.split(commands[1])
    # the LoRA's clips: the trigger word's concept and regular ones; what the samples show, measured, at the end
    captions = sorted(p.read_text().strip() for p in (out / "clips").glob("*.txt"))
    assert len(captions) == 12 and sum(c.startswith("zxq ") for c in captions) == 8
    assert "prompt 1 (with the trigger 'zxq'), step 0 -> step 4: magenta pixels" in res.err
    assert "prompt 2 (unrelated, no trigger), step 0 -> step 4" in res.err


def test_demo_needs_model_and_text_encoder_together(tmp_path):
    assert_user_error(run_cli("demo", "--out", tmp_path, "--model", tmp_path / "x.safetensors"),
                      "--model and --text-encoder together")
