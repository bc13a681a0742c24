"""The tiny Gemma folder and the text path through the real ltx-core code: Gemma, projection (cached), connectors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from ltx_lora.errors import UserError
from ltx_lora.files.text_features import TextFeatures, load_text_features, pad_batch, pad_features, save_text_features

VIDEO_DIM, AUDIO_DIM = 32, 16  # the tiny transformer's video / audio inner dims (heads x head dim)

PROMPTS = ["A red fox runs across a snowy field at dawn, its breath visible in the cold air.", "A cat jumps."]


def write_text_checkpoint(path: Path, gemma_hidden: int, gemma_states: int, seed: int = 0) -> Path:
    """A minimal LTX-2.3-style checkpoint: text projection + text connectors only, made with ltx-core's modules."""
    from ltx_core.text_encoders.gemma.embeddings_connector import (
        AudioEmbeddings1DConnectorConfigurator,
        Embeddings1DConnectorConfigurator,
    )
    from ltx_core.text_encoders.gemma.feature_extractor import FeatureExtractorV2
    from safetensors.torch import save_file

    transformer = {
        "num_attention_heads": 2, "attention_head_dim": VIDEO_DIM // 2,
        "audio_num_attention_heads": 2, "audio_attention_head_dim": AUDIO_DIM // 2,
        # LTX-2.3 (V2 feature extractor): all four, with exactly these values.
        "caption_proj_before_connector": True, "caption_projection_first_linear": False,
        "caption_proj_input_norm": False, "caption_projection_second_linear": False,
        "connector_num_attention_heads": 2, "connector_attention_head_dim": VIDEO_DIM // 2, "connector_num_layers": 2,
        "audio_connector_num_attention_heads": 2, "audio_connector_attention_head_dim": AUDIO_DIM // 2,
        "audio_connector_num_layers": 2, "connector_apply_gated_attention": True,
        "rope_type": "split", "frequencies_precision": "float64",
    }
    config = {"transformer": transformer}
    torch.manual_seed(seed)
    flat = gemma_hidden * gemma_states
    projection = FeatureExtractorV2(torch.nn.Linear(flat, VIDEO_DIM), gemma_hidden, torch.nn.Linear(flat, AUDIO_DIM))
    with torch.no_grad():  # a visible bias, so padded rows differ from zeros
        projection.video_aggregate_embed.bias.normal_()
        projection.audio_aggregate_embed.bias.normal_()
    sd = {f"text_embedding_projection.{k}": v for k, v in projection.state_dict().items()}
    for name, conf in (("video", Embeddings1DConnectorConfigurator), ("audio", AudioEmbeddings1DConnectorConfigurator)):
        sd |= {f"model.diffusion_model.{name}_embeddings_connector.{k}": v
               for k, v in conf.from_config(config).state_dict().items()}
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in sd.items()}, str(path),
              metadata={"config": json.dumps(config)})
    return path


@pytest.fixture(scope="module")
def text_checkpoint(tiny_gemma, tmp_path_factory) -> Path:
    cfg = json.loads((tiny_gemma / "config.json").read_text())["text_config"]
    return write_text_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-ltx.safetensors", cfg["hidden_size"],
                                 cfg["num_hidden_layers"] + 1)


@pytest.fixture(scope="module")
def encoder(tiny_gemma, text_checkpoint):
    from ltx_lora.ltx.text import load_prompt_encoder

    return load_prompt_encoder(tiny_gemma, text_checkpoint, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def features(encoder) -> list[TextFeatures]:
    return encoder.encode_prompts(PROMPTS)


# --- the fixture folder ---------------------------------------------------------------------------------------


def test_tiny_gemma_has_the_real_folder_layout(tiny_gemma):
    names = {p.name for p in tiny_gemma.iterdir()}
    assert names >= {"config.json", "generation_config.json", "tokenizer.model", "tokenizer.json",
                     "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "chat_template.json",
                     "preprocessor_config.json", "processor_config.json", "model.safetensors.index.json",
                     "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
    config = json.loads((tiny_gemma / "config.json").read_text())
    assert config["architectures"] == ["Gemma3ForConditionalGeneration"]
    assert config["vision_config"]["model_type"] == "siglip_vision_model"
    index = json.loads((tiny_gemma / "model.safetensors.index.json").read_text())
    # Hub key layout, which ltx-core's GEMMA_LLM_KEY_OPS maps.
    assert {k.split(".")[0] for k in index["weight_map"]} == {"language_model", "vision_tower", "multi_modal_projector"}
    assert "language_model.model.embed_tokens.weight" in index["weight_map"]
    assert "chat_template" in json.loads((tiny_gemma / "tokenizer_config.json").read_text())


def test_tokenizer_and_processor_load_offline(tiny_gemma, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoProcessor, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_gemma), local_files_only=True)
    config = json.loads((tiny_gemma / "config.json").read_text())
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    for token in ("<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>"):
        assert len(tok(token, add_special_tokens=False).input_ids) == 1, token
    assert tok.image_token_id == config["image_token_index"]
    assert tok.convert_tokens_to_ids("<start_of_image>") == config["boi_token_index"]
    ids = tok("A café 🎬 at night.").input_ids
    assert ids[0] == tok.bos_token_id and tok.unk_token_id not in ids  # byte fallback, like Gemma
    chat = tok.apply_chat_template([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                                   tokenize=False, add_generation_prompt=True)
    assert chat == "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"

    proc = AutoProcessor.from_pretrained(str(tiny_gemma), local_files_only=True)
    assert type(proc).__name__ == "Gemma3Processor"
    from PIL import Image

    out = proc(text="<start_of_image> describe", images=Image.new("RGB", (40, 30)), return_tensors="pt")
    assert (out.input_ids == tok.image_token_id).sum() == config["mm_tokens_per_image"]


# --- encoding through ltx-core ----------------------------------------------------------------------------------


def test_features_have_expected_shapes(encoder, features, tiny_gemma):
    tok = encoder.tokenizer
    assert encoder.padding_side == "left"  # what ltx-core's Gemma tokenizer sets
    for prompt, feat in zip(PROMPTS, features):
        n = len(tok(prompt).input_ids)  # <bos> + pieces
        assert feat.video.shape == (n, VIDEO_DIM) and feat.audio.shape == (n, AUDIO_DIM)
        assert feat.padded_length == 1024 and feat.padding_side == "left" and not feat.truncated
        assert torch.isfinite(feat.video).all() and feat.video.abs().sum() > 0
    assert features[0].num_tokens > features[1].num_tokens  # different prompts, different trimmed lengths
    # Gemma gives num_hidden_layers + 1 stacked states (embeddings + every layer), like 49 for the 12B model.
    hidden_states, mask = encoder.text_encoder.encode(PROMPTS[1])
    layers = json.loads((tiny_gemma / "config.json").read_text())["text_config"]["num_hidden_layers"]
    assert len(hidden_states) == layers + 1 and mask.shape == (1, 1024)


def untrimmed(encoder, prompt):
    """The untrimmed output of ltx-core's encoder + feature extractor, as the official trainer caches it."""
    with torch.inference_mode():
        hidden_states, mask = encoder.text_encoder.encode(prompt)
        video, audio = encoder.feature_extractor(hidden_states, mask, "left")
    return video[0], audio[0], mask[0]


def test_trimmed_then_padded_equals_untrimmed_exactly(encoder, features):
    for prompt, feat in zip(PROMPTS, features):
        video, audio, mask = untrimmed(encoder, prompt)
        padded = pad_features(feat)
        assert torch.equal(padded.video, video) and torch.equal(padded.audio, audio)
        assert torch.equal(padded.mask, mask.long())


def test_pad_row_is_the_projection_bias(encoder, features):
    fe = encoder.feature_extractor
    assert torch.equal(features[0].video_pad, fe.video_aggregate_embed.bias.detach())
    assert torch.equal(features[0].audio_pad, fe.audio_aggregate_embed.bias.detach())


def test_prompt_longer_than_the_tokenizer_length_is_cut_and_flagged(encoder):
    (feat,) = encoder.encode_prompts(["fox " * 1100])
    assert feat.truncated and feat.num_tokens == 1024
    assert torch.equal(feat.video_pad, encoder.feature_extractor.video_aggregate_embed.bias.detach())


def test_save_and_load_round_trip(features, tmp_path):
    path = save_text_features(features[0], tmp_path / "sub" / "a.safetensors", extra={"text": PROMPTS[0]})
    back = load_text_features(path)
    assert torch.equal(back.video, features[0].video) and torch.equal(back.audio, features[0].audio)
    assert torch.equal(back.video_pad, features[0].video_pad)
    assert (back.padded_length, back.padding_side, back.truncated) == (1024, "left", False)
    assert [p.name for p in path.parent.iterdir()] == ["a.safetensors"]  # no temp file left behind


def test_pad_batch_and_lengths(features):
    batch = pad_batch(features)
    assert batch.video.shape == (2, 1024, VIDEO_DIM) and batch.audio.shape == (2, 1024, AUDIO_DIM)
    assert batch.mask.sum(1).tolist() == [f.num_tokens for f in features]
    longer = pad_features(features[1], 1152)
    assert longer.mask[-features[1].num_tokens:].all() and not longer.mask[:-features[1].num_tokens].any()
    with pytest.raises(ValueError):
        pad_features(features[0], features[0].num_tokens - 1)


# --- connectors (training step) ---------------------------------------------------------------------------------


def test_connectors_run_per_prompt_and_ignore_pad_values(text_checkpoint, features):
    from ltx_lora.ltx.text import load_text_connectors, run_text_connectors

    connectors = load_text_connectors(text_checkpoint, device="cpu", dtype=torch.float32)
    video, audio, mask = run_text_connectors(connectors, pad_batch(features))
    assert video.shape == (2, 1024, VIDEO_DIM) and audio.shape == (2, 1024, AUDIO_DIM)
    assert mask.shape == (2, 1024) and bool(mask.all())  # registers fill the padding: every position attends
    for i, feat in enumerate(features):
        v1, a1, _ = run_text_connectors(connectors, pad_features(feat))
        assert torch.equal(v1[0], video[i]) and torch.equal(a1[0], audio[i])
    # Padded rows are replaced by learnable registers, so zero padding gives the same context.
    zero_padded = pad_features(features[1])
    zero_padded.video[zero_padded.mask == 0] = 0
    zero_padded.audio[zero_padded.mask == 0] = 0
    assert torch.equal(run_text_connectors(connectors, zero_padded)[0][0], video[1])


# --- bad inputs -------------------------------------------------------------------------------------------------


def test_8bit_without_bitsandbytes_or_cuda_is_a_user_error(tiny_gemma, text_checkpoint):
    import importlib.util

    from ltx_lora.ltx.text import load_prompt_encoder

    if importlib.util.find_spec("bitsandbytes") is not None and torch.cuda.is_available():
        pytest.skip("bitsandbytes and CUDA are both present here")
    with pytest.raises(UserError, match=r"8-bit.*(bitsandbytes|CUDA).*text_encoder_8bit: false"):
        load_prompt_encoder(tiny_gemma, text_checkpoint, device="cpu", load_in_8bit=True)


def test_projection_for_another_gemma_size_is_a_user_error(tiny_gemma, tmp_path):
    from ltx_lora.ltx.text import load_prompt_encoder

    ckpt = write_text_checkpoint(tmp_path / "12b.safetensors", gemma_hidden=96, gemma_states=3)
    with pytest.raises(UserError, match="width 288.*gives 192"):
        load_prompt_encoder(tiny_gemma, ckpt, dtype=torch.float32)


def test_checkpoint_without_projection_is_a_user_error(tiny_gemma, tmp_path):
    from safetensors.torch import save_file

    from ltx_lora.ltx.text import load_prompt_encoder

    ckpt = tmp_path / "transformer_only.safetensors"
    save_file({"model.diffusion_model.x": torch.zeros(2)}, str(ckpt), metadata={"config": "{}"})
    with pytest.raises(UserError, match="no text projection"):
        load_prompt_encoder(tiny_gemma, ckpt, dtype=torch.float32)


def test_gemma_shard_without_weights_is_a_user_error(tiny_gemma, text_checkpoint, tmp_path):
    from ltx_lora.ltx.text import load_prompt_encoder

    broken = shutil.copytree(tiny_gemma, tmp_path / "gemma")
    from safetensors.torch import load_file, save_file

    shard = broken / "model-00001-of-00002.safetensors"
    sd = load_file(str(shard))
    sd.pop("language_model.model.norm.weight")
    save_file(sd, str(shard))
    with pytest.raises(UserError, match="no weights for the Gemma text encoder"):
        load_prompt_encoder(broken, text_checkpoint, dtype=torch.float32)
