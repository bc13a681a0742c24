"""Tiny release-shaped checkpoints: each variant is written, loads back through the ltx-core adapter with no
weight left on the meta device, and the VAEs, audio VAE and vocoder really run at the real compression."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ltx_lora.errors import UserError
from ltx_lora.files.safetensors_header import read_header
from ltx_lora.fixtures import models
from ltx_lora.fixtures.checkpoints import VARIANTS, write_tiny_checkpoint
from ltx_lora.ltx import loader
from ltx_lora.ltx.text import load_text_connectors, load_text_projection

UNIFIED = ("dev", "dev-fp8", "distilled", "ltx2-19b")


def _no_meta(module: torch.nn.Module) -> None:
    assert not [n for n, p in module.named_parameters() if p.is_meta]
    assert not [n for n, b in module.named_buffers() if b.is_meta]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_is_written_small(tiny_checkpoint, variant):
    path = tiny_checkpoint(variant)
    header = read_header(path)
    assert header.tensors
    assert path.stat().st_size < 11 * 1024 * 1024


@pytest.mark.parametrize("variant", UNIFIED)
def test_unified_variants_load_every_component(tiny_checkpoint, variant):
    path = tiny_checkpoint(variant)
    text_width = models.TINY_TEXT_HIDDEN_SIZE
    for load in (loader.load_transformer, loader.load_video_encoder, loader.load_video_decoder,
                 loader.load_audio_encoder, loader.load_audio_decoder, loader.load_vocoder):
        _no_meta(load(path))
    _no_meta(load_text_projection(path, text_width, models.TINY_TEXT_NUM_LAYERS + 1))
    _no_meta(load_text_connectors(path))


def test_ltx23_config_is_written_explicitly_and_builds_2_3_modules(tiny_checkpoint):
    cfg = loader.read_checkpoint_config(tiny_checkpoint("dev"))
    for key in models.LTX23_ONLY_TRANSFORMER_FIELDS:
        assert key in cfg["transformer"], key
    model = loader.load_transformer(tiny_checkpoint("dev"))
    block = model.transformer_blocks[0]
    assert block.attn1.to_gate_logits is not None  # gated attention
    assert hasattr(block, "prompt_scale_shift_table")  # cross-attention AdaLN
    assert not hasattr(model, "caption_projection")  # projection lives before the connectors in 2.3


def test_ltx20_layout_differs(tiny_checkpoint):
    model = loader.load_transformer(tiny_checkpoint("ltx2-19b"))
    assert hasattr(model, "caption_projection")
    assert model.transformer_blocks[0].attn1.to_gate_logits is None
    keys = set(read_header(tiny_checkpoint("ltx2-19b")).tensors)
    assert "text_embedding_projection.aggregate_embed.weight" in keys
    assert not any("prompt_adaln_single" in k for k in keys)


def test_fp8_scales_are_folded(tiny_checkpoint):
    fp8 = tiny_checkpoint("dev-fp8")
    with safe_open(str(fp8), framework="pt") as f:
        key = "model.diffusion_model.transformer_blocks.0.attn1.to_q.weight"
        assert f.get_tensor(key).dtype == torch.float8_e4m3fn
        assert f.get_tensor(key.replace(".weight", ".weight_scale")).shape == ()
        raw = f.get_tensor(key).float()
    ref = loader.load_transformer(tiny_checkpoint("dev"), dtype=torch.float32).transformer_blocks[0].attn1.to_q.weight
    got = loader.load_transformer(fp8, dtype=torch.float32).transformer_blocks[0].attn1.to_q.weight
    assert torch.allclose(got, ref, atol=0.08 * ref.abs().max().item())  # e4m3 keeps 3 mantissa bits
    assert (raw - ref).abs().max() > 10 * ref.abs().max()  # ignoring the scales gives wrong weights


def test_video_vae_round_trip_real_compression(tiny_checkpoint):
    path = tiny_checkpoint("dev")
    enc = loader.load_video_encoder(path, dtype=torch.float32)
    dec = loader.load_video_decoder(path, dtype=torch.float32)
    with torch.no_grad():
        latent = enc(torch.rand(1, 3, 9, 64, 64) * 2 - 1)
        assert latent.shape == (1, 128, 2, 2, 2)  # 32x spatial, 8x temporal, 128 channels
        video = dec(latent)
    assert video.shape == (1, 3, 9, 64, 64)
    assert torch.isfinite(video).all()


def test_audio_round_trip_and_vocoder(tiny_checkpoint):
    from ltx_core.model.audio_vae import decode_audio, encode_audio
    from ltx_core.types import Audio

    path = tiny_checkpoint("dev")
    enc, dec, voc = loader.load_audio_encoder(path), loader.load_audio_decoder(path), loader.load_vocoder(path)
    with torch.no_grad():
        latent = encode_audio(Audio(0.1 * torch.randn(1, 2, 16000), 16000), enc)
        assert latent.shape[1] == 8 and latent.shape[3] == 16  # 8 channels x 16 mel bins, ~25 frames per second
        assert 25 <= latent.shape[2] <= 26
        audio = decode_audio(latent, dec, voc)
    assert audio.sampling_rate == 48000
    assert audio.waveform.shape[-1] >= 48000 and torch.isfinite(audio.waveform).all()


def test_missing_weights_are_refused(tmp_path, tiny_checkpoint):
    src = tiny_checkpoint("dev")
    with safe_open(str(src), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys() if ".transformer_blocks.1.attn1." not in k}
    broken = tmp_path / "broken.safetensors"
    save_file(tensors, str(broken), metadata=meta)
    with pytest.raises(UserError, match=r"transformer_blocks\.1\.attn1"):
        loader.load_transformer(broken)


def test_not_a_checkpoint_is_a_user_error(tmp_path, tiny_checkpoint):
    with pytest.raises(UserError, match="no LTX model config"):
        loader.load_transformer(tiny_checkpoint("user-lora"))
    with pytest.raises(UserError, match="no 'vae' section"):
        loader.load_video_encoder(tiny_checkpoint("ltx25-transformer"))
    with pytest.raises(UserError, match="does not exist"):
        loader.load_transformer(tmp_path / "nope.safetensors")


def test_random_transformer_from_config_runs():
    cfg = models.tiny_ltx23_config()
    model = models.build_transformer_from_config(cfg, dtype=torch.float32, seed=1)
    again = models.build_transformer_from_config(cfg, dtype=torch.float32, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    _no_meta(model)
    assert json.loads(json.dumps(cfg)) == cfg  # JSON-safe, as stored in the metadata


def test_unknown_variant_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="unknown tiny checkpoint variant"):
        write_tiny_checkpoint(tmp_path / "x.safetensors", "nope")
