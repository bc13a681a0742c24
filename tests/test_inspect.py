"""`ltx-lora inspect` and `identify()`: every fixture variant is named with the right advice, from the header only."""

from __future__ import annotations

import json
import pickle

import pytest
from conftest import assert_user_error, run_cli

from ltx_lora.errors import UserError
from ltx_lora.files import model_files as ck

# variant -> (kind, family, trainable base, words the advice must contain)
EXPECTED = {
    "dev": (ck.LTX23_DEV, "2.3", True, ["training"]),
    "dev-fp8": (ck.LTX23_DEV_FP8, "2.3", True, ["fp8", "less memory"]),
    "distilled": (ck.LTX23_DISTILLED, "2.3", False, ["8 steps", "cfg 1.0", "distilled lora off", "never train"]),
    "ltx2-19b": (ck.LTX2_CHECKPOINT, "2.0", False, ["ltx-2.3-22b-dev"]),
    "ltx25-transformer": (ck.LTX25_CHECKPOINT, "2.5", False, ["ltx-2.3"]),
    "distilled-lora-384": (ck.LTX23_DISTILLED_LORA, "2.3", False, ["0.5-0.6", "burns"]),
    "user-lora": (ck.LORA, None, False, ["retrain", "alpha/rank"]),
    "ltx2-lora": (ck.LORA, "2.0", False, ["retrain", "0.2-0.4"]),
    "ic-lora": (ck.IC_LORA, "2.3", False, ["reference"]),
    "spatial-upscaler": (ck.SPATIAL_UPSCALER, "2.3", False, ["two-stage"]),
}


@pytest.mark.parametrize("variant", sorted(EXPECTED))
def test_identify_every_variant(tiny_checkpoint, variant):
    kind, family, base, words = EXPECTED[variant]
    ident = ck.identify(tiny_checkpoint(variant))
    assert (ident.kind, ident.family, ident.is_trainable_base) == (kind, family, base), ident
    advice = " ".join(ident.advice).lower()
    for word in words:
        assert word in advice, (word, ident.advice)


def test_lora_details(tiny_checkpoint):
    user = ck.identify(tiny_checkpoint("user-lora")).details
    assert (user["rank"], user["alpha"], user["scale"]) == (4, 8.0, 2.0)
    assert {"attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0"} <= set(user["targets"])
    assert user["min_layers"] == 2 and "video width 32" in user["fits"]
    distilled = ck.identify(tiny_checkpoint("distilled-lora-384")).details
    assert distilled["rank"] == 384 and "ff.net.0.proj" in distilled["targets"]
    assert ck.identify(tiny_checkpoint("ic-lora")).details["reference_downscale_factor"] == 2


def test_dev_vs_distilled_goes_by_name(tmp_path, tiny_checkpoint):
    renamed = tmp_path / "model.safetensors"
    renamed.write_bytes(tiny_checkpoint("distilled").read_bytes())
    ident = ck.identify(renamed)
    assert ident.kind == ck.LTX23_DEV and ident.details["variant_from"] == "unknown"
    assert "cannot tell" in ident.advice[0]


def test_checkpoint_details_count_layers_and_parameters(tiny_checkpoint):
    d = ck.identify(tiny_checkpoint("dev")).details
    assert d["layers"] == 2 and d["video_width"] == 32 and d["audio_width"] == 16
    assert d["transformer_parameters"] > 10_000 and d["total_parameters"] > d["transformer_parameters"]
    assert ck.identify(tiny_checkpoint("dev-fp8")).precision == "fp8-scaled"


def test_require_training_base(tiny_checkpoint):
    assert ck.require_training_base(tiny_checkpoint("dev")).kind == ck.LTX23_DEV
    assert ck.require_training_base(tiny_checkpoint("dev-fp8")).is_trainable_base
    for variant, needle in (("distilled", "Distilled"), ("distilled-lora-384", "distilled LoRA"),
                            ("ltx2-19b", "LTX-2.0"), ("user-lora", "LoRA")):
        with pytest.raises(UserError, match=needle):
            ck.require_training_base(tiny_checkpoint(variant))


def test_pickle_is_reported_without_loading(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    bad = tmp_path / "model.pt"
    bad.write_bytes(pickle.dumps({"x": Boom()}))
    ident = ck.identify(bad)
    assert ident.kind == ck.PICKLE and "not opened" in ident.summary
    res = run_cli("inspect", str(bad))
    assert res.code == 0 and "pickle" in res.out.lower() and "unpickled" not in res.out + res.err
    with pytest.raises(UserError, match="pickle"):
        ck.require_training_base(bad)


def test_gemma_folder_and_other_folders(tmp_path):
    gemma = tmp_path / "gemma-3-12b"
    gemma.mkdir()
    (gemma / "config.json").write_text(json.dumps(
        {"model_type": "gemma3", "text_config": {"hidden_size": 3840, "num_hidden_layers": 48}}))
    ident = ck.identify(gemma)
    assert ident.kind == ck.GEMMA3_FOLDER and "48 layers x 3840" in ident.summary
    assert any("tokenizer" in a for a in ident.advice)  # nothing downloaded yet
    empty = tmp_path / "empty"
    empty.mkdir()
    assert ck.identify(empty).kind == ck.MODEL_FOLDER


def test_unknown_safetensors_says_what_it_holds(tmp_path):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "weights.safetensors"
    save_file({"encoder.layer.0.weight": torch.zeros(4, 4), "encoder.layer.1.weight": torch.zeros(4, 4)}, str(path))
    ident = ck.identify(path)
    assert ident.kind == ck.UNKNOWN_SAFETENSORS and "encoder (2)" in ident.summary


def test_cli_panel_and_json(tiny_checkpoint):
    res = run_cli("inspect", str(tiny_checkpoint("distilled")))
    assert res.code == 0, res.err
    assert "Distilled" in res.out and "8 steps" in res.out
    res = run_cli("inspect", str(tiny_checkpoint("distilled-lora-384")), "--json")
    assert res.code == 0, res.err
    data = json.loads(res.out)
    assert data["kind"] == ck.LTX23_DISTILLED_LORA and data["details"]["rank"] == 384


def test_cli_missing_path_exits_2(tmp_path):
    res = run_cli("inspect", str(tmp_path / "nope.safetensors"))
    assert_user_error(res, "does not exist")
    assert len(res.err.strip().splitlines()) == 1  # one sentence


def test_cli_help():
    res = run_cli("inspect", "--help")
    assert res.code == 0 and "--json" in res.out


def test_cli_not_a_model_file_exits_2(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x93random bytes, not a header at all" * 4)
    res = run_cli("inspect", str(bad))
    assert_user_error(res, "not a model file", "no safetensors header")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert_user_error(run_cli("inspect", str(text)), "not a model file")


def test_cli_hugging_face_reference_gets_the_download_advice():
    res = run_cli("inspect", "Lightricks/LTX-2.3")
    assert_user_error(res, "hugging face reference", "huggingface-cli download")
    assert "does not exist" not in res.err
    url = "https://huggingface.co/Lightricks/LTX-2.3/blob/main/ltx-2.3-22b-dev.safetensors"
    res = run_cli("inspect", url)
    assert_user_error(res, "hugging face reference", url)
    assert "https:/h" not in res.err
