"""lora.init_from: a run starts from a LoRA file (any layout, any stored strength) and refuses, before any model
loads, a file it cannot continue. LoKr and LoHa start from their own exports in tests/test_lora_variants.py."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import assert_user_error, run_cli
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_lora_variants import _config
from test_train import prepared  # noqa: F401 - the session's preprocessed tiny dataset

from ltx_lora.config import LoraConfig
from ltx_lora.errors import UserError
from ltx_lora.files import lora_file
from ltx_lora.runtime.base_file import BaseFile
from ltx_lora.runtime.inputs import check_lora_init


def test_a_run_starts_from_a_lora_file_in_another_layout_and_strength(prepared, tmp_path):  # noqa: F811
    res = run_cli("train", _config(prepared, tmp_path, "first", {"rank": 4, "alpha": 8}))  # scale 2, folded in
    assert res.code == 0, res.err
    first = load_file(str(tmp_path / "first" / "lora.safetensors"))

    # The video attention of that LoRA as a kohya file whose alpha 2 asks for half its up matrices (alpha / rank):
    # up is doubled, so the change it applies is the first run's.
    pairs = lora_file.load_weights(lora_file.read_lora(tmp_path / "first" / "lora.safetensors"))
    kept = {stem: p for stem, p in pairs.items() if lora_file.module_group(stem) == "video attention"}
    assert 0 < len(kept) < len(pairs)
    kohya = lora_file.write_lora(tmp_path / "kohya.safetensors", {s: (p.down, p.up * 2) for s, p in kept.items()},
                                 layout=lora_file.KOHYA, alphas={s: 2.0 for s in kept})

    # A second run at another strength (rank 4, alpha 4: scale 1), a learning rate too small to move a weight
    # (Adam's first step moves each by about the learning rate): it exports the file's change in our layout, and
    # the layers the file lacks start from zero.
    cfg = _config(prepared, tmp_path, "second", {"rank": 4, "init_from": str(kohya)}, steps=1, learning_rate=1e-30)
    res = run_cli("train", cfg)
    assert res.code == 0, res.err
    assert f"starting from lora.init_from {kohya} ({len(kept)} of {len(pairs)} adapted layers" in res.err, res.err
    second = load_file(str(tmp_path / "second" / "lora.safetensors"))
    assert second.keys() == first.keys()
    for key, value in second.items():
        stem = key.rsplit(".lora_", 1)[0]
        if stem in kept:
            assert torch.equal(value, first[key]), key
        elif key.endswith(".lora_B.weight"):  # zero, moved by the one tiny step only
            assert value.float().abs().max() < 1e-29, key
    with safe_open(str(tmp_path / "second" / "lora.safetensors"), "pt") as f:
        assert f.metadata()["init_from"] == "kohya.safetensors"
    run = yaml.safe_load((tmp_path / "second" / "run.json").read_text())
    assert run["lora"]["init_from"] == str(kohya)


def test_a_lora_file_the_run_cannot_continue_is_refused_before_any_model_loads(prepared, tmp_path,  # noqa: F811
                                                                               tiny_checkpoint):
    res = run_cli("train", _config(prepared, tmp_path, "first", {"rank": 4}, steps=1))
    assert res.code == 0, res.err
    made = str(tmp_path / "first" / "lora.safetensors")
    # through `train` (and no run folder made): a rank the file does not have, a URL, blocks the base lacks
    for i, (lora, needle) in enumerate([
            ({"rank": 4, "blocks": "1-2"}, "lora.blocks [2] are not blocks of"),
            ({"rank": 8, "init_from": made}, "set lora.rank: 4"),
            ({"rank": 4, "init_from": "https://huggingface.co/me/my-lora/blob/main/lora.safetensors"}, "download")]):
        cfg = _config(prepared, tmp_path, f"run{i}", lora)
        assert_user_error(run_cli("train", cfg), "lora.init_from" if "init_from" in lora else "lora.blocks", needle)
        assert not (tmp_path / f"run{i}").exists(), lora  # refused before the run folder was made
    # the rest by the check `train` and `doctor --config` run (runtime.inputs.check_lora_init)
    base = BaseFile.read(tiny_checkpoint("dev"))
    for lora, needle in [
            ({"rank": 4, "variant": "lokr", "init_from": made}, "set lora.variant: lora"),
            ({"rank": 4, "target_modules": ["to_q"], "init_from": made}, "adapt the same layers the file does"),
            ({"rank": 4, "blocks": [1], "init_from": made},  # the layer named with its block
             r"adapts transformer_blocks\.0\.attn1\.to_k, which .*lora.blocks \[1\]\): adapt the same"),
            ({"rank": 4, "init_from": str(tiny_checkpoint("dev"))}, "is not a LoRA"),
            ({"rank": 4, "init_from": str(tmp_path / "missing.safetensors")}, "does not exist")]:
        config = LoraConfig(**lora)
        with pytest.raises(UserError, match=needle):
            check_lora_init(config.init_from, base, config, config)
    damaged = load_file(made)
    first_b = next(k for k in damaged if k.endswith("lora_B.weight"))
    damaged[first_b][0, 0] = float("nan")
    save_file(damaged, tmp_path / "nan.safetensors")
    cfg = _config(prepared, tmp_path, "nan", {"rank": 4, "init_from": str(tmp_path / "nan.safetensors")})
    assert_user_error(run_cli("train", cfg), "lora.init_from", "NaN or infinite values")
    assert not (tmp_path / "nan").exists()  # read before any model loads too
    doctor = run_cli("doctor", "--config", _config(prepared, tmp_path, "doctor", {"rank": 8, "init_from": made}))
    assert "lora.init_from" in doctor.out + doctor.err and "set lora.rank: 4" in doctor.out + doctor.err
