"""Model paths: local only; Hugging Face references, missing paths and incomplete Gemma folders get one exact fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ltx_lora.errors import UserError
from ltx_lora.paths import check_gemma_folder, check_model_path


def user_error(value, role, **kw) -> str:
    with pytest.raises(UserError) as e:
        check_model_path(value, role, **kw)
    msg = str(e.value)
    assert "\n" not in msg and msg.endswith("."), msg  # one sentence
    return msg


@pytest.fixture
def gemma_copy(tiny_gemma, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_gemma, tmp_path / "gemma-3-12b-it"))


# --- Hugging Face references ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    "https://huggingface.co/Lightricks/LTX-2.3",
    "https://huggingface.co/Lightricks/LTX-2.3/blob/main/ltx-2.3-22b-dev.safetensors",
    "huggingface.co/Lightricks/LTX-2.3/resolve/main/ltx-2.3-22b-dev.safetensors?download=true",
    "hf://Lightricks/LTX-2.3",
    "Lightricks/LTX-2.3",
])
def test_checkpoint_hf_reference_names_file_and_key(value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no local folder called Lightricks
    msg = user_error(value, "checkpoint")
    assert "ltx-2.3-22b-dev.safetensors" in msg and "Lightricks/LTX-2.3" in msg
    assert "set model.checkpoint: models/ltx-2.3-22b-dev.safetensors" in msg
    assert "local files only" in msg


def test_checkpoint_url_to_another_file_names_that_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    msg = user_error("https://huggingface.co/Lightricks/LTX-2.3-fp8/blob/main/ltx-2.3-22b-dev-fp8.safetensors",
                     "checkpoint")
    assert "download ltx-2.3-22b-dev-fp8.safetensors from Lightricks/LTX-2.3-fp8" in msg
    assert "model.checkpoint" in msg


@pytest.mark.parametrize("value", ["google/gemma-3-12b-it", "https://huggingface.co/google/gemma-3-12b-it/tree/main",
                                   "Lightricks/LTX-2.3"])
def test_text_encoder_hf_reference_names_gemma_files_and_key(value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    msg = user_error(value, "text_encoder")
    for needle in ("google/gemma-3-12b-it", "tokenizer.model", "preprocessor_config.json",
                   "model.safetensors.index.json", "set model.text_encoder: models/gemma-3-12b-it",
                   "huggingface-cli download google/gemma-3-12b-it"):
        assert needle in msg, (needle, msg)


def test_upscaler_and_lora_references(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "ltx-2.3-spatial-upscaler-x2-1.1.safetensors" in user_error("Lightricks/LTX-2.3", "upscaler")
    msg = user_error("https://huggingface.co/someone/my-style/resolve/main/lora/style.safetensors", "lora",
                     key="--lora")
    assert "download style.safetensors from someone/my-style" in msg
    assert "pass --lora loras/lora/style.safetensors" in msg


def test_other_urls_are_refused(tmp_path):
    assert "local files only" in user_error("s3://bucket/ltx-2.3-22b-dev.safetensors", "checkpoint")


# --- local paths ------------------------------------------------------------------------------------------------


def test_missing_local_path_is_one_sentence(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()  # a real local folder: "models/x" is a path, not a repo id
    msg = user_error("models/ltx-2.3-22b-dev", "checkpoint")
    assert "does not exist" in msg and str(tmp_path) in msg and "model.checkpoint" in msg
    assert "does not exist" in user_error(tmp_path / "nope.safetensors", "checkpoint")


def test_checkpoint_must_be_a_safetensors_file(tmp_path):
    (tmp_path / "ltx-2.3-22b-dev.safetensors").write_bytes(b"x")
    assert "is a folder (it holds ltx-2.3-22b-dev.safetensors)" in user_error(tmp_path, "checkpoint")
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"x")
    assert "must be a .safetensors file" in user_error(ckpt, "checkpoint")
    assert check_model_path(tmp_path / "ltx-2.3-22b-dev.safetensors", "checkpoint") == \
        (tmp_path / "ltx-2.3-22b-dev.safetensors").resolve()


def test_text_encoder_single_file_is_refused(tmp_path):
    f = tmp_path / "gemma_3_12B_it_fp8_scaled.safetensors"
    f.write_bytes(b"x")
    msg = user_error(f, "text_encoder")
    assert "not the single file gemma_3_12B_it_fp8_scaled.safetensors" in msg and "model.text_encoder" in msg


# --- Gemma folder -----------------------------------------------------------------------------------------------


def test_complete_tiny_gemma_passes_with_a_size_warning(tiny_gemma):
    assert check_model_path(tiny_gemma, "text_encoder") == tiny_gemma.resolve()
    result = check_gemma_folder(tiny_gemma)
    assert result.status == "WARN" and "hidden 64, 2 layers" in result.detail and "12B" in result.fix


def test_gemma_with_12b_sizes_is_ok(gemma_copy):
    config = json.loads((gemma_copy / "config.json").read_text())
    config["text_config"] |= {"hidden_size": 3840, "num_hidden_layers": 48}
    (gemma_copy / "config.json").write_text(json.dumps(config))
    result = check_gemma_folder(gemma_copy)
    assert (result.status, result.fix) == ("OK", "") and "2 weight shards" in result.detail


def test_incomplete_gemma_lists_every_missing_file(gemma_copy):
    (gemma_copy / "tokenizer.model").unlink()
    (gemma_copy / "preprocessor_config.json").unlink()
    (gemma_copy / "model-00002-of-00002.safetensors").unlink()
    msg = user_error(gemma_copy, "text_encoder")
    assert "model.text_encoder" in msg and "tokenizer.model" in msg and "preprocessor_config.json" in msg
    assert "model-00002-of-00002.safetensors (named in model.safetensors.index.json)" in msg
    assert "tokenizer.json" not in msg  # present files are not listed
    assert check_gemma_folder(gemma_copy).status == "FAIL"


def test_gemma_without_index_checks_shard_numbering(gemma_copy):
    (gemma_copy / "model.safetensors.index.json").unlink()
    (gemma_copy / "model-00001-of-00002.safetensors").unlink()
    msg = check_gemma_folder(gemma_copy).fix
    assert "model-00001-of-00002.safetensors" in msg and "model.safetensors.index.json" in msg


def test_gemma_without_weights(gemma_copy):
    for shard in gemma_copy.glob("model-*.safetensors"):
        shard.unlink()
    (gemma_copy / "model.safetensors.index.json").unlink()
    (gemma_copy / "pytorch_model.bin").write_bytes(b"x")
    assert "the weights (model*.safetensors; pytorch_model.bin is pickle and not read)" in \
        check_gemma_folder(gemma_copy).fix


def test_interrupted_download_is_detected(gemma_copy):
    shard = gemma_copy / "model-00001-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:1000])
    assert "interrupted download" in user_error(gemma_copy, "text_encoder")


def test_pointing_above_the_gemma_folder_names_the_right_one(gemma_copy, tmp_path):
    cache = tmp_path / "hf-cache" / "models--google--gemma-3-12b-it"
    snapshot = cache / "snapshots" / "abc123"
    snapshot.parent.mkdir(parents=True)
    shutil.move(str(gemma_copy), snapshot)
    msg = user_error(cache, "text_encoder")
    assert f"set model.text_encoder: {snapshot.resolve()}" in msg


def test_not_a_gemma3_model(gemma_copy):
    config = json.loads((gemma_copy / "config.json").read_text())
    config["model_type"] = "t5"
    (gemma_copy / "config.json").write_text(json.dumps(config))
    assert "holds a 't5' model" in user_error(gemma_copy, "text_encoder")
