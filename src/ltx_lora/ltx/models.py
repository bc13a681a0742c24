"""Build LTX-2.x models from a unified checkpoint file with ltx-core's loader.

A unified LTX-2.3 checkpoint is one .safetensors holding the transformer, the text connectors and Gemma feature
projection, both VAEs and the vocoder; the safetensors metadata key `config` holds the architecture as JSON.
Every builder here goes through `ltx_core.loader.SingleGPUModelBuilder`, then checks two things ltx-core does not:

- ltx-core loads with `strict=False`, so a weight missing from the file silently stays on the `meta` device. We
  refuse such a model with a UserError naming what is missing.
- FP8 releases store linears as float8_e4m3fn plus a `<module>.weight_scale` tensor (and an unused
  `<module>.input_scale`). ltx-core 1.0.0's plain loader ignores the scales, which silently gives weights off by
  the scale factor; our loader folds `weight * weight_scale` back into the requested dtype, or (FP8 training,
  `load_transformer(..., quantization="fp8")`) keeps the FP8 bytes with their scales in `QuantizedLinear`s.

It also owns the tiny LTX-2.3 / LTX-2.0 configs that tests and benches build, and random initialisation of every
component (used by `ltx_lora.fixtures` to write tiny checkpoints in the real layout).
"""

from __future__ import annotations

import copy
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ltx_lora.errors import UserError
from ltx_lora.safetensors_header import NotSafetensors, read_header

# The real text encoder (Gemma 3 12B): 3840 wide, 48 layers + the embedding output = 49 hidden states.
GEMMA3_12B_HIDDEN_SIZE = 3840
GEMMA3_12B_HIDDEN_STATES = 49

# The tiny text encoder the fixtures assume (fixtures/gemma.py TINY_TEXT): 64 wide, 2 layers (3 hidden states).
TINY_TEXT_HIDDEN_SIZE = 64  # = the tiny Gemma fixture's hidden size, so the two fit together
TINY_TEXT_NUM_LAYERS = 2

_FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)

# ---------------------------------------------------------------------------------------------------------------
# Tiny configs
# ---------------------------------------------------------------------------------------------------------------


def tiny_ltx23_config() -> dict[str, Any]:
    """A complete LTX-2.3 config (sections transformer, vae, scheduler, audio_vae, vocoder) at tiny sizes
    (about 10 MB of bf16 weights, most of it the two VAEs whose 128-channel latent sizes are fixed).

    Every field of the released 22B config is written, because ltx-core falls back SILENTLY to LTX-2.0 behaviour
    for absent optional fields (no gated attention, no cross-attention AdaLN, caption projection in the
    transformer). Only sizes differ from the release: 2 blocks, video 2x16 heads, audio 2x8, 2 connector layers.
    The VAE keeps the real 32x spatial / 8x temporal compression and 128 latent channels; the audio VAE keeps the
    16 kHz, hop-160, 64-mel front end and its 8 x 16 latent; the vocoder keeps the real upsampling rates
    (16 kHz, then bandwidth extension to 48 kHz) with few channels.
    """
    video_heads, video_head_dim = 2, 16
    audio_heads, audio_head_dim = 2, 8
    transformer = {
        "_class_name": "AVTransformer3DModel", "activation_fn": "gelu-approximate", "attention_bias": True,
        "attention_head_dim": video_head_dim, "attention_type": "default", "caption_channels": TINY_TEXT_HIDDEN_SIZE,
        "cross_attention_dim": video_heads * video_head_dim, "double_self_attention": False, "dropout": 0.0,
        "in_channels": 128, "norm_elementwise_affine": False, "norm_eps": 1e-06, "norm_num_groups": 32,
        "num_attention_heads": video_heads, "num_embeds_ada_norm": 1000, "num_layers": 2, "num_vector_embeds": None,
        "only_cross_attention": False, "cross_attention_norm": True, "out_channels": 128, "upcast_attention": False,
        "use_linear_projection": False, "qk_norm": "rms_norm", "standardization_norm": "rms_norm",
        "positional_embedding_type": "rope", "positional_embedding_theta": 10000.0,
        "positional_embedding_max_pos": [20, 2048, 2048], "timestep_scale_multiplier": 1000,
        "av_ca_timestep_scale_multiplier": 1000.0, "causal_temporal_positioning": True,
        "audio_num_attention_heads": audio_heads, "audio_attention_head_dim": audio_head_dim,
        "use_audio_video_cross_attention": True, "share_ff": False, "audio_in_channels": 128,
        "audio_out_channels": 128, "audio_cross_attention_dim": audio_heads * audio_head_dim,
        "audio_positional_embedding_max_pos": [20], "av_cross_ada_norm": True, "use_embeddings_connector": True,
        "connector_attention_head_dim": video_head_dim, "connector_num_attention_heads": video_heads,
        "connector_num_layers": 2, "connector_positional_embedding_max_pos": [4096],
        "connector_num_learnable_registers": 128, "connector_norm_output": True, "use_middle_indices_grid": True,
        # LTX-2.3 architecture switches: all written, never left to defaults.
        "apply_gated_attention": True, "connector_apply_gated_attention": True,
        "caption_projection_first_linear": False, "caption_projection_second_linear": False,
        "caption_proj_input_norm": False, "connector_learnable_registers_std": 1,
        "caption_proj_before_connector": True, "audio_connector_attention_head_dim": audio_head_dim,
        "audio_connector_num_attention_heads": audio_heads, "cross_attention_adaln": True,
        "text_encoder_norm_type": "per_token_rms", "rope_type": "split", "frequencies_precision": "float64",
    }
    vae = {
        "_class_name": "CausalVideoAutoencoder", "dims": 3, "in_channels": 3, "out_channels": 3, "latent_channels": 128,
        # Same block kinds and order as the release (2x space, 2x time, 2x all, 2x all; patch 4 = 32x / 8x),
        # without the res_x stacks in the encoder and with 4 base decoder channels.
        "encoder_blocks": [["compress_space_res", {"multiplier": 1}], ["compress_time_res", {"multiplier": 1}],
                           ["compress_all_res", {"multiplier": 1}], ["compress_all_res", {"multiplier": 1}]],
        "decoder_blocks": [["res_x", {"num_layers": 1}], ["compress_space", {"multiplier": 2}],
                           ["compress_time", {"multiplier": 2}], ["compress_all", {"multiplier": 1}],
                           ["compress_all", {"multiplier": 2}]],
        "scaling_factor": 1.0, "norm_layer": "pixel_norm", "patch_size": 4, "latent_log_var": "uniform",
        "use_quant_conv": False, "causal_decoder": False, "timestep_conditioning": False,
        "normalize_latent_channels": False, "encoder_base_channels": 128, "decoder_base_channels": 4,
        "spatial_padding_mode": "zeros",
    }
    scheduler = {"_class_name": "RectifiedFlowScheduler", "_diffusers_version": "0.25.1", "num_train_timesteps": 1000,
                 "shifting": None, "base_resolution": None, "sampler": "LinearQuadratic"}
    audio_vae = {
        "model": {"params": {"ddconfig": {
            "double_z": True, "mel_bins": 64, "z_channels": 8, "resolution": 256, "downsample_time": False,
            # ch stays 128: ltx-core sizes the latent statistics by `ch`, which must equal 8 x 16 latent features.
            "in_channels": 2, "out_ch": 2, "ch": 128, "ch_mult": [1, 1, 1], "num_res_blocks": 0, "attn_resolutions": [],
            "dropout": 0.0, "mid_block_add_attention": False, "norm_type": "pixel", "causality_axis": "height"},
            "sampling_rate": 16000}},
        "preprocessing": {
            "audio": {"sampling_rate": 16000, "max_wav_value": 32768.0, "duration": 5.12, "stereo": True,
                      "causal_padding": 3},
            "stft": {"filter_length": 1024, "hop_length": 160, "win_length": 1024, "causal": True},
            "mel": {"n_mel_channels": 64, "mel_fmin": 0, "mel_fmax": 8000}},
    }
    vocoder = {
        "vocoder": {"upsample_initial_channel": 64, "resblock": "AMP1", "upsample_rates": [5, 2, 2, 2, 2, 2],
                    "resblock_kernel_sizes": [3], "upsample_kernel_sizes": [11, 4, 4, 4, 4, 4],
                    "resblock_dilation_sizes": [[1, 3, 5]], "stereo": True, "use_tanh_at_final": False,
                    "activation": "snakebeta", "use_bias_at_final": False},
        "bwe": {"upsample_initial_channel": 32, "resblock": "AMP1", "upsample_rates": [6, 5, 2, 2, 2],
                "resblock_kernel_sizes": [3], "upsample_kernel_sizes": [12, 11, 4, 4, 4],
                "resblock_dilation_sizes": [[1, 3, 5]], "stereo": True, "use_tanh_at_final": False,
                "activation": "snakebeta", "use_bias_at_final": False, "apply_final_activation": False,
                "input_sampling_rate": 16000, "output_sampling_rate": 48000, "hop_length": 80, "n_fft": 512,
                "win_size": 512, "num_mels": 64},
    }
    return {"transformer": transformer, "vae": vae, "scheduler": scheduler, "audio_vae": audio_vae, "vocoder": vocoder}


# Fields that exist only in LTX-2.3 configs; an LTX-2.0 (19B) config has none of them.
LTX23_ONLY_TRANSFORMER_FIELDS = (
    "apply_gated_attention", "connector_apply_gated_attention", "caption_projection_first_linear",
    "caption_projection_second_linear", "caption_proj_input_norm", "connector_learnable_registers_std",
    "caption_proj_before_connector", "audio_connector_attention_head_dim", "audio_connector_num_attention_heads",
    "cross_attention_adaln", "text_encoder_norm_type",
)


def tiny_ltx20_config() -> dict[str, Any]:
    """The same tiny sizes in the LTX-2.0 (19B) layout: caption projection inside the transformer, no gated
    attention, no cross-attention AdaLN, 2-layer connectors as wide as the text encoder, a plain vocoder."""
    cfg = tiny_ltx23_config()
    t = cfg["transformer"]
    for key in LTX23_ONLY_TRANSFORMER_FIELDS:
        t.pop(key)
    # 2.0 connectors work at the text encoder's width (3840 = 30 x 128 in the release).
    t["connector_num_attention_heads"] = 2
    t["connector_attention_head_dim"] = TINY_TEXT_HIDDEN_SIZE // 2
    voc = cfg["vocoder"]["vocoder"]
    cfg["vocoder"] = {**voc, "resblock": "1", "activation": "snake", "use_tanh_at_final": True,
                      "use_bias_at_final": True, "output_sampling_rate": 16000}
    return cfg


TINY_LTX23_CONFIG: dict[str, Any] = tiny_ltx23_config()  # shared: deep-copy before changing it


# ---------------------------------------------------------------------------------------------------------------
# Reading the checkpoint
# ---------------------------------------------------------------------------------------------------------------


def _checked_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; pass the path of the LTX-2.3 .safetensors file.")
    return path


def read_checkpoint_config(path: str | Path) -> dict[str, Any]:
    """The architecture JSON (`config` in the safetensors metadata) of a unified LTX checkpoint."""
    path = _checked_file(path)
    try:
        config = read_header(path).config()
    except NotSafetensors:
        raise UserError(f"{path} is not a .safetensors file; LTX checkpoints are safetensors "
                        f"(run `ltx-lora inspect {path}` to see what it is).") from None
    if config is None:
        raise UserError(f"{path} has no LTX model config in its metadata, so it is not a unified LTX checkpoint "
                        f"(run `ltx-lora inspect {path}` to see what it is).")
    return config


def _require_sections(path: Path, config: dict, *sections: str) -> None:
    missing = [s for s in sections if s not in config]
    if missing:
        raise UserError(f"{path.name} has no '{missing[0]}' section in its config; it is not a unified LTX-2.x "
                        f"checkpoint (LTX-2.5 ships one file per component) - run `ltx-lora inspect {path}`.")


def _scaled_fp8_loader(keep_fp8: bool = False, dtype: torch.dtype | None = None):  # noqa: ANN202 - ltx-core type
    """A state-dict loader for scaled FP8 files. By default it folds `<module>.weight_scale` into the FP8 weights
    (giving plain float weights) and drops `input_scale`. With `keep_fp8` it keeps e4m3 weights as their raw bytes
    next to their `weight_scale` (for `QuantizedLinear`) and casts every other float tensor to `dtype` itself."""
    import safetensors
    from ltx_core.loader import SafetensorsModelStateDictLoader
    from ltx_core.loader.primitives import StateDict

    class ScaledFp8Loader(SafetensorsModelStateDictLoader):
        def load(self, path, sd_ops=None, device=None):  # noqa: ANN001, ANN202 - ltx-core protocol
            device = device or torch.device("cpu")
            sd: dict[str, torch.Tensor] = {}
            dtypes: set[torch.dtype] = set()
            size = 0
            for shard in path if isinstance(path, list) else [path]:
                with safetensors.safe_open(shard, framework="pt", device="cpu") as f:
                    names = set(f.keys())
                    kept = {n.removesuffix(".weight") for n in names if keep_fp8 and n.endswith(".weight")
                            and n.removesuffix(".weight") + ".weight_scale" in names
                            and f.get_slice(n).get_dtype() == "F8_E4M3"}
                    for name in names:
                        if name.endswith(".input_scale"):
                            continue  # only used by FP8 activation kernels
                        if name.endswith(".weight_scale") and name.removesuffix(".weight_scale") not in kept:
                            continue  # folded into the weight below
                        key = name if sd_ops is None else sd_ops.apply_to_key(name)
                        if key is None:
                            continue
                        value = f.get_tensor(name)
                        module = name.removesuffix(".weight")
                        scale_name = module + ".weight_scale"
                        if module in kept and name.endswith(".weight"):
                            value = value.view(torch.uint8)  # QuantizedLinear's raw FP8 bytes
                        elif name.endswith(".weight_scale"):
                            value = value.to(torch.float32)
                        elif value.dtype in _FP8_DTYPES and name.endswith(".weight") and scale_name in names:
                            value = value.to(torch.float32) * f.get_tensor(scale_name).to(torch.float32)
                        if keep_fp8 and dtype is not None and value.is_floating_point() \
                                and not name.endswith(".weight_scale"):
                            value = value.to(dtype)
                        value = value.to(device)
                        pairs = [(key, value)] if sd_ops is None else sd_ops.apply_to_key_value(key, value)
                        for k, v in pairs:
                            sd[k] = v
                            size += v.nbytes
                            dtypes.add(v.dtype)
            return StateDict(sd=sd, device=device, size=size, dtype=dtypes)

    return ScaledFp8Loader()


def scaled_fp8_modules(path: str | Path, prefix: str = "model.diffusion_model.") -> set[str]:
    """Module paths (under `prefix`, prefix removed) stored as float8_e4m3fn weight + `weight_scale` in the file."""
    tensors = read_header(Path(path)).tensors
    return {k.removeprefix(prefix).removesuffix(".weight") for k, t in tensors.items()
            if k.startswith(prefix) and k.endswith(".weight") and t.dtype == "F8_E4M3"
            and k.removesuffix(".weight") + ".weight_scale" in tensors}


def _missing_summary(names: list[str]) -> str:
    """Short prefixes of the missing tensors, e.g. 'transformer_blocks.1.attn1, proj_out'."""
    prefixes: list[str] = []
    for name in names:
        parts = name.split(".")
        depth = 3 if len(parts) > 3 and parts[1].isdigit() else 2
        prefix = ".".join(parts[: min(depth, len(parts) - 1)]) or name
        if prefix not in prefixes:
            prefixes.append(prefix)
    shown = ", ".join(prefixes[:3]) + (f" and {len(prefixes) - 3} more" if len(prefixes) > 3 else "")
    return shown


def _fill_unsaved_buffers(model: nn.Module, configurator: type, config: dict, device: torch.device) -> None:
    """Buffers that are computed in __init__ and never saved (e.g. the vocoder's resampling filter) stay on meta
    when the model is built on the meta device; recompute them from a CPU instance."""
    saved = set(model.state_dict().keys())
    unsaved = [n for n, b in model.named_buffers() if b.is_meta and n not in saved]
    if not unsaved:
        return
    fresh = dict(configurator.from_config(config).named_buffers())
    for name in unsaved:
        owner, _, leaf = name.rpartition(".")
        module = model.get_submodule(owner) if owner else model
        module._buffers[leaf] = fresh[name].to(device)


def _assert_materialised(model: nn.Module, path: Path, what: str) -> None:
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    missing += [n for n, b in model.named_buffers() if b.is_meta]
    if missing:
        raise UserError(f"{path.name} lacks {len(missing)} {what} weights ({_missing_summary(missing)}), so it is an "
                        f"incomplete file or a different model; check it with `ltx-lora inspect {path}`.")


def _build(path: str | Path, configurator: type, sd_ops: Any, what: str, sections: tuple[str, ...],
           device: str | torch.device, dtype: torch.dtype | None, keep_fp8: set[str] | None = None,
           loras: tuple[tuple[str | Path, float], ...] = ()) -> nn.Module:
    from ltx_core.loader import LTXV_LORA_COMFY_RENAMING_MAP, LoraPathStrengthAndSDOps, SingleGPUModelBuilder
    from ltx_core.loader.module_ops import ModuleOps

    path = _checked_file(path)
    config = read_checkpoint_config(path)
    _require_sections(path, config, *sections)
    device = torch.device(device)
    module_ops: tuple = ()
    if keep_fp8:  # these linears become FP8 QuantizedLinears before loading; the loader casts the rest itself
        from ltx_lora.ltx.quantize import replace_with_empty_fp8_

        module_ops = (ModuleOps("ltx_lora_keep_fp8", lambda m: True,
                                lambda m: (replace_with_empty_fp8_(m, keep_fp8), m)[1]),)
    # LoRAs are fused by ltx-core itself (loader/fuse_loras.py), reading ComfyUI-layout keys as ltx-pipelines does.
    builder = SingleGPUModelBuilder(model_class_configurator=configurator, model_path=str(path),
                                    model_sd_ops=sd_ops, module_ops=module_ops,
                                    model_loader=_scaled_fp8_loader(bool(keep_fp8), dtype),
                                    loras=tuple(LoraPathStrengthAndSDOps(str(p), float(s), LTXV_LORA_COMFY_RENAMING_MAP)
                                                for p, s in loras))
    try:
        model = builder.build(device=device, dtype=None if keep_fp8 else dtype)
    except (ValueError, NotImplementedError, KeyError, TypeError) as e:
        raise UserError(f"ltx-core cannot build the {what} from {path.name}'s config ({e}); the file is not an "
                        f"LTX-2.x checkpoint this version supports.") from None
    except RuntimeError as e:  # shape mismatches between the config and the stored tensors
        first = str(e).strip().splitlines()[0]
        raise UserError(f"{path.name}: the stored {what} weights do not match its config ({first}).") from None
    _fill_unsaved_buffers(model, configurator, config, device)
    _assert_materialised(model, path, what)
    return model.to(device).eval()


def load_transformer(path: str | Path, device: str | torch.device = "cpu",
                     dtype: torch.dtype | None = torch.bfloat16, quantization: str = "none",
                     host_blocks: frozenset[int] | set[int] = frozenset(),
                     loras: tuple[tuple[str | Path, float], ...] = ()) -> nn.Module:
    """The audio-video transformer (`LTXModel`).

    quantization "none": FP8 weights are dequantised into `dtype`. "fp8" / "int8": the 28 linears of every block
    become 1-byte `QuantizedLinear`s (an FP8 file's weights and scales are used exactly as stored; a bf16 file is
    quantized layer by layer on `device`). Blocks in `host_blocks` stay in host memory for block swap; nothing of
    them is left on `device`.

    `loras`: (ComfyUI-layout LoRA file, strength) pairs fused into the weights by ltx-core's own fusion, which
    reads `diffusion_model.<path>.lora_A/B.weight` only and ignores `.alpha` (unquantized bf16 bases only).
    """
    from ltx_core.model.transformer.model_configurator import LTXV_MODEL_COMFY_RENAMING_MAP, LTXModelConfigurator

    if quantization not in ("none", "fp8", "int8"):
        raise UserError(f"unknown quantization '{quantization}'; use none, fp8 or int8.")
    args = (path, LTXModelConfigurator, LTXV_MODEL_COMFY_RENAMING_MAP, "transformer", ("transformer",))
    if quantization == "none" and not host_blocks:
        return _build(*args, device, dtype, loras=loras)
    if loras:
        raise UserError("LoRAs can be fused only into an unquantized transformer kept on one device.")
    device = torch.device(device)
    keep = scaled_fp8_modules(_checked_file(path)) if quantization == "fp8" else set()
    # Built in host memory first: the float model may be larger than the GPU.
    model = _build(*args, torch.device("cpu"), dtype, keep_fp8=keep or None)
    quantize = quantization != "none" and not keep
    place_transformer_(model, device, host_blocks, quantization if quantize else None)
    return model


def place_transformer_(model: nn.Module, device: torch.device, host_blocks: frozenset[int] | set[int],
                       quantization: str | None = None) -> None:
    """Move the transformer to `device` block by block (quantizing each on `device` first when asked), leaving
    `host_blocks` in host memory: the device never holds more than what stays there plus one block."""
    from ltx_lora.ltx.quantize import quantize_linears_

    cpu = torch.device("cpu")
    for name, child in model.named_children():
        if name == "transformer_blocks":
            for i, block in enumerate(child):
                if quantization:
                    quantize_linears_(block, quantization, device=device, prefix=f"transformer_blocks.{i}.")  # type: ignore[arg-type]
                block.to(cpu if i in host_blocks else device)
        else:
            child.to(device)
    for t in list(model.parameters(recurse=False)) + list(model.buffers(recurse=False)):
        t.data = t.data.to(device)


def load_video_encoder(path: str | Path, device: str | torch.device = "cpu",
                       dtype: torch.dtype | None = torch.bfloat16) -> nn.Module:
    from ltx_core.model.video_vae import VAE_ENCODER_COMFY_KEYS_FILTER, VideoEncoderConfigurator

    return _build(path, VideoEncoderConfigurator, VAE_ENCODER_COMFY_KEYS_FILTER, "video encoder", ("vae",),
                  device, dtype)


def load_video_decoder(path: str | Path, device: str | torch.device = "cpu",
                       dtype: torch.dtype | None = torch.bfloat16) -> nn.Module:
    from ltx_core.model.video_vae import VAE_DECODER_COMFY_KEYS_FILTER, VideoDecoderConfigurator

    return _build(path, VideoDecoderConfigurator, VAE_DECODER_COMFY_KEYS_FILTER, "video decoder", ("vae",),
                  device, dtype)


def load_audio_encoder(path: str | Path, device: str | torch.device = "cpu",
                       dtype: torch.dtype | None = torch.float32) -> nn.Module:
    from ltx_core.model.audio_vae import AUDIO_VAE_ENCODER_COMFY_KEYS_FILTER, AudioEncoderConfigurator

    return _build(path, AudioEncoderConfigurator, AUDIO_VAE_ENCODER_COMFY_KEYS_FILTER, "audio encoder",
                  ("audio_vae",), device, dtype)


def load_audio_decoder(path: str | Path, device: str | torch.device = "cpu",
                       dtype: torch.dtype | None = torch.float32) -> nn.Module:
    from ltx_core.model.audio_vae import AUDIO_VAE_DECODER_COMFY_KEYS_FILTER, AudioDecoderConfigurator

    return _build(path, AudioDecoderConfigurator, AUDIO_VAE_DECODER_COMFY_KEYS_FILTER, "audio decoder",
                  ("audio_vae",), device, dtype)


def load_vocoder(path: str | Path, device: str | torch.device = "cpu",
                 dtype: torch.dtype | None = torch.float32) -> nn.Module:
    from ltx_core.model.audio_vae import VOCODER_COMFY_KEYS_FILTER, VocoderConfigurator

    return _build(path, VocoderConfigurator, VOCODER_COMFY_KEYS_FILTER, "vocoder", ("vocoder",), device, dtype)


# ---------------------------------------------------------------------------------------------------------------
# Text connectors + Gemma feature projection (the "embeddings processor")
# ---------------------------------------------------------------------------------------------------------------

_V2_TEXT_FIELDS = {"caption_proj_before_connector": True, "caption_projection_first_linear": False,
                   "caption_proj_input_norm": False, "caption_projection_second_linear": False}


def _feature_extractor_version(transformer_cfg: dict) -> int:
    """1 = LTX-2.0 (one aggregate projection to the text width), 2 = LTX-2.3 (video and audio projections)."""
    present = transformer_cfg.keys() & _V2_TEXT_FIELDS.keys()
    if not present:
        return 1
    if present != _V2_TEXT_FIELDS.keys() or any(transformer_cfg[k] != v for k, v in _V2_TEXT_FIELDS.items()):
        raise UserError("the checkpoint's text-projection config mixes LTX-2.0 and LTX-2.3 fields "
                        f"({sorted(present)}); it is not a release ltx-core can build.")
    return 2


def _embeddings_configurator(text_hidden_size: int, flat_dim: int) -> type:
    """ltx-core's EmbeddingsProcessorConfigurator hard-codes Gemma-3-12B's 3840 x 49 input; this one takes the text
    encoder's width from the caller and the flattened input width from the stored projection."""
    from ltx_core.text_encoders.gemma.embeddings_connector import (
        AudioEmbeddings1DConnectorConfigurator,
        Embeddings1DConnectorConfigurator,
    )
    from ltx_core.text_encoders.gemma.embeddings_processor import EmbeddingsProcessor
    from ltx_core.text_encoders.gemma.feature_extractor import FeatureExtractorV1, FeatureExtractorV2

    class Configurator:
        @classmethod
        def from_config(cls, config: dict) -> EmbeddingsProcessor:
            t = config.get("transformer", {})
            if _feature_extractor_version(t) == 1:
                extractor: nn.Module = FeatureExtractorV1(
                    aggregate_embed=nn.Linear(flat_dim, text_hidden_size, bias=False), is_av=True)
            else:
                video_dim = t["num_attention_heads"] * t["attention_head_dim"]
                audio_dim = t["audio_num_attention_heads"] * t["audio_attention_head_dim"]
                extractor = FeatureExtractorV2(video_aggregate_embed=nn.Linear(flat_dim, video_dim, bias=True),
                                               embedding_dim=text_hidden_size,
                                               audio_aggregate_embed=nn.Linear(flat_dim, audio_dim, bias=True))
            return EmbeddingsProcessor(video_connector=Embeddings1DConnectorConfigurator.from_config(config),
                                       audio_connector=AudioEmbeddings1DConnectorConfigurator.from_config(config),
                                       feature_extractor=extractor)

    return Configurator


def load_embeddings_processor(path: str | Path, device: str | torch.device = "cpu",
                              dtype: torch.dtype | None = torch.bfloat16,
                              text_hidden_size: int = GEMMA3_12B_HIDDEN_SIZE) -> nn.Module:
    """The Gemma feature projection (`text_embedding_projection.*`) and the video/audio text connectors
    (`model.diffusion_model.*_embeddings_connector.*`), as ltx-core's `EmbeddingsProcessor`.

    `text_hidden_size` is the text encoder's hidden width (3840 for Gemma 3 12B); the projection's input is that
    width times the number of hidden states it aggregates.
    """
    from ltx_core.text_encoders.gemma import EMBEDDINGS_PROCESSOR_KEY_OPS

    path = _checked_file(path)
    header = read_header(path)
    projection = (header.tensors.get("text_embedding_projection.video_aggregate_embed.weight")
                  or header.tensors.get("text_embedding_projection.aggregate_embed.weight"))
    if projection is None:
        raise UserError(f"{path.name} has no text_embedding_projection weights; it is not a unified LTX-2.x "
                        "checkpoint (LTX-2.5 keeps them in the text-encoder file).")
    flat_dim = projection.shape[1]
    if flat_dim % text_hidden_size:
        raise UserError(f"{path.name}'s text projection takes {flat_dim} features, which is not a multiple of the "
                        f"text encoder width {text_hidden_size}; use the text encoder this checkpoint was made for.")
    return _build(path, _embeddings_configurator(text_hidden_size, flat_dim), EMBEDDINGS_PROCESSOR_KEY_OPS,
                  "text connector", ("transformer",), device, dtype)


# ---------------------------------------------------------------------------------------------------------------
# Random models (benches, tests, fixtures)
# ---------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def _init_random_(module: nn.Module, generator: torch.Generator, recurse: bool = True) -> nn.Module:
    """Deterministic, well-scaled random weights: fan-in normal for matrices, ones for norm gains, small noise
    elsewhere; latent statistics become std ~1, mean ~0. Computed buffers (filters, mel bases) are kept."""
    for name, p in module.named_parameters(recurse=recurse):
        if p.ndim >= 2:
            p.normal_(0.0, 1.0 / math.sqrt(max(1, p[0].numel())), generator=generator)
        elif "norm" in name and name.endswith("weight"):
            p.fill_(1.0)
        else:
            p.normal_(0.0, 0.02, generator=generator)
    for name, b in module.named_buffers():
        if name.endswith("std-of-means"):
            b.copy_(1.0 + 0.1 * torch.rand(b.shape, generator=generator))
        elif name.endswith("mean-of-means"):
            b.copy_(0.1 * torch.randn(b.shape, generator=generator))
    return module


def ltx23_22b_config() -> dict[str, Any]:
    """The released LTX-2.3 22B transformer's sizes on the tiny config's complete field set (benches build the
    full-size model from it with random weights): 48 blocks, video 32 x 128, audio 32 x 64, Gemma 3 12B text."""
    cfg = tiny_ltx23_config()
    cfg["transformer"].update(
        num_layers=48, num_attention_heads=32, attention_head_dim=128, cross_attention_dim=4096,
        audio_num_attention_heads=32, audio_attention_head_dim=64, audio_cross_attention_dim=2048,
        caption_channels=GEMMA3_12B_HIDDEN_SIZE, connector_attention_head_dim=128, connector_num_attention_heads=32,
        connector_num_layers=8, audio_connector_attention_head_dim=64, audio_connector_num_attention_heads=32)
    return cfg


def build_transformer_from_config(cfg: dict[str, Any], device: str | torch.device = "cpu",
                                  dtype: torch.dtype = torch.bfloat16, seed: int = 0,
                                  quantization: str | None = None,
                                  host_blocks: frozenset[int] | set[int] = frozenset()) -> nn.Module:
    """An `LTXModel` with random weights for the given full config (e.g. `tiny_ltx23_config()`).

    On a GPU the weights are allocated and drawn there directly (the 22B model would need 77 GB of host memory
    and minutes of host-side random draws otherwise). With `quantization` ("none", "fp8", "int8") the model is
    built part by part as `load_transformer` places a loaded one: each block drawn on `device`, quantized there,
    and moved to host memory when in `host_blocks` (so a capped GPU never holds the whole float model)."""
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator

    device = torch.device(device)
    if quantization is not None:
        with torch.device("meta"):
            model = LTXModelConfigurator.from_config(copy.deepcopy(cfg))
        model = model.to(dtype=dtype)
        cpu = torch.device("cpu")
        parts = [(f"transformer_blocks.{i}.", b) for i, b in enumerate(model.transformer_blocks)]
        parts += [("", c) for n, c in model.named_children() if n != "transformer_blocks"]
        for k, (prefix, part) in enumerate(parts):
            part.to_empty(device=device)
            with torch.no_grad():
                _init_random_(part, torch.Generator(device).manual_seed(seed * 100_003 + k))
            if prefix and quantization != "none":
                from ltx_lora.ltx.quantize import quantize_linears_

                quantize_linears_(part, quantization, device=device, prefix=prefix)  # type: ignore[arg-type]
            if prefix and int(prefix.split(".")[1]) in host_blocks:
                part.to(cpu)
        model.to_empty(device=device, recurse=False)
        with torch.no_grad():
            _init_random_(model, torch.Generator(device).manual_seed(seed * 100_003 + len(parts)), recurse=False)
        return model.eval()
    if device.type == "cuda":
        with torch.device("meta"):
            model = LTXModelConfigurator.from_config(copy.deepcopy(cfg))
        model = model.to(dtype=dtype).to_empty(device=device)  # the transformer has no computed buffers
        with torch.no_grad():
            _init_random_(model, torch.Generator(device).manual_seed(seed))
        return model.eval()
    model = LTXModelConfigurator.from_config(copy.deepcopy(cfg))
    _materialise_meta_(model)
    _init_random_(model, torch.Generator().manual_seed(seed))
    return model.to(device=device, dtype=dtype).eval()


def ltx23_release_decoders_config() -> dict[str, Any]:
    """`vae` / `audio_vae` / `vocoder` sections at the released LTX-2.3 decoders' sizes, for benches (the VAE decoder
    is 128 base channels with 4/6/4/2/2 residual layers between its space/time/all/all upsamplers; the audio decoder
    128 channels x (1, 2, 4) with 2 residual blocks; the vocoder 1536 channels, resblock kernels 3/7/11, its 48 kHz
    bandwidth extension 512). Sizes as public converters of the release state them; verify before relying on them
    beyond timing."""
    cfg = tiny_ltx23_config()
    cfg["vae"].update(decoder_base_channels=128, decoder_blocks=[
        ["res_x", {"num_layers": 4}], ["compress_space", {"multiplier": 2}], ["res_x", {"num_layers": 6}],
        ["compress_time", {"multiplier": 2}], ["res_x", {"num_layers": 4}], ["compress_all", {"multiplier": 1}],
        ["res_x", {"num_layers": 2}], ["compress_all", {"multiplier": 2}], ["res_x", {"num_layers": 2}]])
    cfg["audio_vae"]["model"]["params"]["ddconfig"].update(ch_mult=[1, 2, 4], num_res_blocks=2)
    kernels = {"resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5]] * 3}
    cfg["vocoder"]["vocoder"].update(upsample_initial_channel=1536, **kernels)
    cfg["vocoder"]["bwe"].update(upsample_initial_channel=512, **kernels)
    return cfg


def build_decoders_from_config(cfg: dict[str, Any], device: str | torch.device = "cpu",
                               dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> dict[str, nn.Module]:
    """Random video decoder (in `dtype`), audio decoder and vocoder (float32, as they are loaded) for `cfg`."""
    from ltx_core.model.audio_vae import AudioDecoderConfigurator, VocoderConfigurator
    from ltx_core.model.video_vae import VideoDecoderConfigurator

    out = {}
    for i, (name, configurator) in enumerate((("video", VideoDecoderConfigurator), ("audio", AudioDecoderConfigurator),
                                              ("vocoder", VocoderConfigurator))):
        module = configurator.from_config(copy.deepcopy(cfg))
        _materialise_meta_(module)
        _init_random_(module, torch.Generator().manual_seed(seed * 1000 + i))
        out[name] = module.to(device=device, dtype=dtype if name == "video" else torch.float32).eval()
    return out


def build_text_connectors_from_config(cfg: dict[str, Any], device: str | torch.device = "cpu",
                                      dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> nn.Module:
    """The video + audio text connectors (as `load_text_connectors` gives them) with random weights, drawn on
    `device` directly (2 B parameters for the 22B config)."""
    from ltx_core.text_encoders.gemma import EmbeddingsProcessor
    from ltx_core.text_encoders.gemma.embeddings_connector import (
        AudioEmbeddings1DConnectorConfigurator,
        Embeddings1DConnectorConfigurator,
    )

    device = torch.device(device)
    with torch.device("meta"):
        model = EmbeddingsProcessor(video_connector=Embeddings1DConnectorConfigurator.from_config(copy.deepcopy(cfg)),
                                    audio_connector=AudioEmbeddings1DConnectorConfigurator.from_config(copy.deepcopy(cfg)))
    model = model.to(dtype=dtype).to_empty(device=device)
    with torch.no_grad():
        _init_random_(model, torch.Generator(device).manual_seed(seed))
    return model.requires_grad_(False).eval()


def _materialise_meta_(module: nn.Module) -> None:
    """ltx-core builds the LTX-2.0 caption projection on the meta device even outside a meta context."""
    for sub in module.modules():
        for key, p in list(sub._parameters.items()):
            if p is not None and p.is_meta:
                sub._parameters[key] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype), requires_grad=p.requires_grad)


def _random_components(cfg: dict, seed: int, text_hidden_size: int, text_hidden_states: int) -> dict[str, nn.Module]:
    from ltx_core.model.audio_vae import AudioDecoderConfigurator, AudioEncoderConfigurator, VocoderConfigurator
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator
    from ltx_core.model.video_vae import VideoDecoderConfigurator, VideoEncoderConfigurator

    flat = text_hidden_size * text_hidden_states
    parts = {
        "transformer": LTXModelConfigurator,
        "embeddings": _embeddings_configurator(text_hidden_size, flat),
        "video_encoder": VideoEncoderConfigurator, "video_decoder": VideoDecoderConfigurator,
        "audio_encoder": AudioEncoderConfigurator, "audio_decoder": AudioDecoderConfigurator,
        "vocoder": VocoderConfigurator,
    }
    out = {}
    for i, (name, configurator) in enumerate(parts.items()):
        module = configurator.from_config(copy.deepcopy(cfg))
        _materialise_meta_(module)
        out[name] = _init_random_(module, torch.Generator().manual_seed(seed * 1000 + i))
    return out


def random_unified_state_dict(cfg: dict[str, Any], seed: int = 0, dtype: torch.dtype = torch.bfloat16,
                              text_hidden_size: int = TINY_TEXT_HIDDEN_SIZE,
                              text_hidden_states: int = TINY_TEXT_NUM_LAYERS + 1) -> dict[str, torch.Tensor]:
    """Random weights for every component of `cfg`, under the key names of a released unified checkpoint."""
    c = _random_components(cfg, seed, text_hidden_size, text_hidden_states)
    sd: dict[str, torch.Tensor] = {}

    def put(prefix: str, module: nn.Module, rename: dict[str, str] | None = None) -> None:
        for k, v in module.state_dict().items():
            for old, new in (rename or {}).items():
                if k.startswith(old):
                    k = new + k[len(old):]
                    break
            else:
                k = prefix + k
            sd[k] = v

    put("model.diffusion_model.", c["transformer"])
    put("", c["embeddings"], {"feature_extractor.": "text_embedding_projection.",
                              "video_connector.": "model.diffusion_model.video_embeddings_connector.",
                              "audio_connector.": "model.diffusion_model.audio_embeddings_connector."})
    stats = {"per_channel_statistics.": "vae.per_channel_statistics."}
    put("vae.encoder.", c["video_encoder"], stats)
    put("vae.decoder.", c["video_decoder"], stats)
    audio_stats = {"per_channel_statistics.": "audio_vae.per_channel_statistics."}
    put("audio_vae.encoder.", c["audio_encoder"], audio_stats)
    put("audio_vae.decoder.", c["audio_decoder"], audio_stats)
    put("vocoder.", c["vocoder"])
    # Float weights in the release dtype; computed float buffers (filters, mel bases) are stored the same way.
    return {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in sd.items()}


def transformer_linear_shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Every nn.Linear inside the transformer blocks: module path -> (in_features, out_features).
    These are the LoRA targets (their names are the ltx-core module paths ComfyUI and ltx-core use)."""
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator

    with torch.device("meta"):
        model = LTXModelConfigurator.from_config(copy.deepcopy(cfg))
    return {name: (m.in_features, m.out_features) for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and name.startswith("transformer_blocks.")}


@dataclass(frozen=True)
class TransformerSize:
    """What the memory plan needs to know about a transformer config (element counts, not bytes)."""

    blocks: int
    quantizable_per_block: int  # weights of the 28 linears per block that fp8 / int8 store in 1 byte
    other_per_block: int  # everything else in a block (biases, norms, gates, scale-shift tables)
    outside_blocks: int  # patchify, AdaLN, output projections
    video_dim: int
    audio_dim: int
    largest_linear: int  # elements of the largest quantizable weight (its dequantised copy is transient memory)
    block_linears: tuple[tuple[str, int, int], ...]  # (path inside a block, in, out) of every linear in block 0
    text_connectors: int = 0  # the video + audio text connectors (frozen, run once per step, bf16)

    def lora_elements_per_rank(self, targets: list[str]) -> int:
        """LoRA parameters per unit of rank for peft-style target names (a module matches `t` or `*.t`)."""
        per_block = sum(i + o for name, i, o in self.block_linears
                        if any(name == t or name.endswith("." + t) for t in targets))
        return per_block * self.blocks


def transformer_size(cfg: dict[str, Any]) -> TransformerSize:
    """Sizes of the transformer a full config (`{"transformer": ...}`) describes, from a meta-device build."""
    return _transformer_size(json.dumps(cfg["transformer"], sort_keys=True))


@functools.lru_cache(maxsize=4)
def _transformer_size(transformer_json: str) -> TransformerSize:
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator

    from ltx_lora.ltx.quantize import is_quantizable

    with torch.device("meta"):
        model = LTXModelConfigurator.from_config({"transformer": json.loads(transformer_json)})
    quant = other = outside = largest = 0
    for name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if not name.startswith("transformer_blocks."):
                outside += p.numel()
            elif pname == "weight" and is_quantizable(name):
                quant += p.numel()
                largest = max(largest, p.numel())
            else:
                other += p.numel()
    blocks = len(model.transformer_blocks)
    linears = tuple((n, m.in_features, m.out_features) for n, m in model.transformer_blocks[0].named_modules()
                    if isinstance(m, nn.Linear))
    t = json.loads(transformer_json)
    with torch.device("meta"):
        embeddings = _embeddings_configurator(TINY_TEXT_HIDDEN_SIZE, TINY_TEXT_HIDDEN_SIZE).from_config({"transformer": t})
    connectors = sum(p.numel() for c in (embeddings.video_connector, embeddings.audio_connector)
                     for p in c.parameters())
    return TransformerSize(text_connectors=connectors, blocks=blocks, quantizable_per_block=quant // blocks, other_per_block=other // blocks,
                           outside_blocks=outside, video_dim=t["num_attention_heads"] * t["attention_head_dim"],
                           audio_dim=t["audio_num_attention_heads"] * t["audio_attention_head_dim"],
                           largest_linear=largest, block_linears=linears)


def random_upsampler(config: dict[str, Any], seed: int = 0, dtype: torch.dtype = torch.bfloat16
                     ) -> dict[str, torch.Tensor]:
    """Random weights for a latent upscaler with the given (flat) config."""
    from ltx_core.model.upsampler.model_configurator import LatentUpsamplerConfigurator

    model = _init_random_(LatentUpsamplerConfigurator.from_config(config), torch.Generator().manual_seed(seed))
    return {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}


def config_json(cfg: dict[str, Any]) -> str:
    return json.dumps(cfg)
