"""`ltx-lora demo` end to end, as the README runs it, every artefact it promises, and the proof that the LoRA it
trains changes generation as intended (the product's end-to-end learning test)."""

import json
import shlex
import subprocess

import pytest
from conftest import assert_user_error, run_cli
from safetensors import safe_open

from ltx_lora.demo import TINY_STEPS, pretrained_model
from ltx_lora.fixtures import scenes


@pytest.mark.skipif(pretrained_model() is None, reason="this checkout has no pretrained demo weights")
def test_demo_teaches_the_trigger_word(tmp_path):
    """The demo as a newcomer runs it (default steps), then the LoRA file sampled by `ltx-lora validate --lora`, as
    an inference user loads it: the trigger prompt's shape turns magenta and whistles, the unrelated prompt keeps
    its colour and beep; the training report plays in Chromium with every sample healthy."""
    out = tmp_path / "demo"
    res = run_cli("demo", "--out", out)
    assert res.code == 0, res.err[-3000:]
    for stage in ("inspect the checkpoint", "scan the clips", "preprocess", f"train {TINY_STEPS} steps", "check the LoRA", "done in"):
        assert stage in res.err, stage
    assert "LTX-2.3" in res.out  # inspect named the tiny checkpoint
    with safe_open(str(out / "run" / "lora.safetensors"), "pt") as f:
        keys = list(f.keys())
        meta = f.metadata()
    assert keys and all(k.startswith("diffusion_model.") for k in keys)
    assert meta["step"] == str(TINY_STEPS)
    assert (out / "dataset_report.html").stat().st_size > 1000
    final = f"step_{TINY_STEPS:06d}"
    assert (out / "run" / "samples" / final / "p1.mp4").is_file() and (out / "run" / "report.html").is_file()
    steps = [json.loads(line)["step"] for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, TINY_STEPS + 1))
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
    assert len(captions) == 16 and sum(c.startswith("zxq ") for c in captions) == 8
    assert f"prompt 1 (with the trigger 'zxq'), step 0 -> step {TINY_STEPS}: magenta share of the shape" in res.err
    assert f"prompt 2 (unrelated, no trigger), step 0 -> step {TINY_STEPS}" in res.err

    # The LoRA file, loaded the way an inference user loads it, against the base (same prompts, seeds, settings).
    check = out / "check"
    val = run_cli("validate", out / "config.yaml", "--lora", out / "run" / "lora.safetensors", "--out", check)
    assert val.code == 0, val.err[-3000:]
    base = [scenes.measure_clip(check / "samples" / "base" / f"p{i}.mp4") for i in (0, 1)]
    lora = [scenes.measure_clip(check / "samples" / "lora" / f"p{i}.mp4") for i in (0, 1)]
    trigger_base, trigger_lora, other_base, other_lora = base[0], lora[0], base[1], lora[1]
    # Measured 2026-12-04 (2 CPU cores): trigger 21 % -> 50 % magenta, 672 -> 1,328 Hz; unrelated 0 % -> 2 %, 664 Hz.
    assert trigger_lora["concept_share"] >= trigger_base["concept_share"] + 0.15, (trigger_base, trigger_lora)
    assert abs(trigger_lora["dominant_hz"] - scenes.CONCEPT_HZ) < 0.05 * scenes.CONCEPT_HZ, trigger_lora
    assert abs(trigger_base["dominant_hz"] - scenes.CONCEPT_HZ) > 0.2 * scenes.CONCEPT_HZ, trigger_base
    assert other_lora["concept_share"] <= other_base["concept_share"] + 0.1, (other_base, other_lora)
    beep = scenes.SOUNDS["square"][1]
    assert abs(other_lora["dominant_hz"] - beep) < 0.1 * beep, other_lora  # the unrelated square still beeps
    for folder in ("base", "lora"):
        for i in (0, 1):
            record = json.loads((check / "samples" / folder / f"p{i}.json").read_text())
            assert record["health"]["status"] == "ok", record["health"]

    # The training report a newcomer opens: both columns play in a real browser, every cell healthy.
    from browser import APT_HINT, find_chromium, load_page

    if find_chromium() is None:
        pytest.skip(f"no Chromium: {APT_HINT}")
    report = out / "run" / "report.html"
    page = load_page(report)
    assert page.errors == []
    assert len(page.videos) == 4, page.videos  # 2 prompts x (step 0, final)
    for v in page.videos:
        assert v["error"] is None and v["readyState"] >= 1 and v["duration"] > 0.3 and v["width"] == 64, v
    html = report.read_text()
    assert html.count(">healthy<") == 4 and ">problem<" not in html, html[:2000]


def test_demo_needs_model_and_text_encoder_together(tmp_path):
    assert_user_error(run_cli("demo", "--out", tmp_path, "--model", tmp_path / "x.safetensors"),
                      "--model and --text-encoder together")
