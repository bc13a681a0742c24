"""Load LTX-2.x models from a unified checkpoint file, all through one build-and-check (`build`).

A unified LTX-2.3 checkpoint is one .safetensors holding the transformer, the text connectors and Gemma feature
projection, both VAEs and the vocoder; the safetensors metadata key `config` holds the architecture as JSON.
Every model we load (these here and the text models of `ltx_lora.ltx.text`) goes through `build`, which uses
`ltx_core.loader.SingleGPUModelBuilder` and then does two things ltx-core does not:

- ltx-core loads with `strict=False`, so a weight missing from the file silently stays on the `meta` device. We
  refuse such a model with a UserError naming what is missing.
- FP8 releases store linears as float8_e4m3fn plus a `<module>.weight_scale` tensor (and an unused
  `<module>.input_scale`). ltx-core 1.0.0's plain loader ignores the scales, which silently gives weights off by
  the scale factor; our loader folds `weight * weight_scale` back into the requested dtype, or (FP8 training,
  `load_transformer(..., quantization="fp8")`) keeps the FP8 bytes with their scales in `QuantizedLinear`s.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

# ltx-core's loader and model modules add ~0.1 s to `import torch`, so they are imported here; only its text-encoder
# modules (which pull in transformers, ~3.5 s) stay inside the functions of ltx/text.py.
from ltx_core.loader import (
    LTXV_LORA_COMFY_RENAMING_MAP,
    LoraPathStrengthAndSDOps,
    SafetensorsModelStateDictLoader,
    SingleGPUModelBuilder,
)
from ltx_core.loader.module_ops import ModuleOps
from ltx_core.loader.primitives import StateDict
from ltx_core.model.audio_vae import (
    AUDIO_VAE_DECODER_COMFY_KEYS_FILTER,
    AUDIO_VAE_ENCODER_COMFY_KEYS_FILTER,
    VOCODER_COMFY_KEYS_FILTER,
    AudioDecoderConfigurator,
    AudioEncoderConfigurator,
    VocoderConfigurator,
)
from ltx_core.model.transformer.model_configurator import LTXV_MODEL_COMFY_RENAMING_MAP, LTXModelConfigurator
from ltx_core.model.video_vae import (
    VAE_DECODER_COMFY_KEYS_FILTER,
    VAE_ENCODER_COMFY_KEYS_FILTER,
    VideoDecoderConfigurator,
    VideoEncoderConfigurator,
)
from torch import nn

from ltx_lora.errors import UserError
from ltx_lora.files.model_files import scaled_fp8_modules
from ltx_lora.files.safetensors_header import NotSafetensors, open_safetensors, read_header
from ltx_lora.ltx.quantize import quantize_linears_, replace_with_empty_fp8_

_FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)

# ---------------------------------------------------------------------------------------------------------------
# Reading the checkpoint
# ---------------------------------------------------------------------------------------------------------------


def checked_file(path: str | Path) -> Path:
    """`path` as a Path, or a UserError when no such file exists."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; pass the path of the LTX-2.3 .safetensors file.")
    return path


def read_checkpoint_config(path: str | Path) -> dict[str, Any]:
    """The architecture JSON (`config` in the safetensors metadata) of a unified LTX checkpoint."""
    path = checked_file(path)
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


class _ScaledFp8Loader(SafetensorsModelStateDictLoader):
    """ltx-core's safetensors loader, for scaled FP8 files too. By default it folds `<module>.weight_scale` into the
    FP8 weights (giving plain float weights) and drops `input_scale`; files without scales load as ltx-core loads
    them. With `keep_fp8` it keeps e4m3 weights as their raw bytes next to their `weight_scale` (for
    `QuantizedLinear`) and casts every other float tensor to `dtype` itself."""

    def __init__(self, keep_fp8: bool = False, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.keep_fp8, self.dtype = keep_fp8, dtype

    def load(self, path, sd_ops=None, device=None):  # ltx-core protocol: untyped
        keep_fp8, dtype = self.keep_fp8, self.dtype
        device = device or torch.device("cpu")
        sd: dict[str, torch.Tensor] = {}
        dtypes: set[torch.dtype] = set()
        size = 0
        for shard in path if isinstance(path, list) else [path]:
            with open_safetensors(shard, "model file", "download it again") as f:
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


# ---------------------------------------------------------------------------------------------------------------
# The one build-and-check
# ---------------------------------------------------------------------------------------------------------------


def _missing_summary(names: list[str]) -> str:
    """Short prefixes of the missing tensors, e.g. 'transformer_blocks.1.attn1, proj_out'."""
    prefixes: list[str] = []
    for name in names:
        parts = name.split(".")
        depth = 3 if len(parts) > 3 and parts[1].isdigit() else 2
        prefix = ".".join(parts[: min(depth, len(parts) - 1)]) or name
        if prefix not in prefixes:
            prefixes.append(prefix)
    return ", ".join(prefixes[:3]) + (f" and {len(prefixes) - 3} more" if len(prefixes) > 3 else "")


def _fill_unsaved_buffers(model: nn.Module, builder: SingleGPUModelBuilder, device: torch.device) -> None:
    """Buffers that are computed in __init__ and never saved (e.g. the vocoder's resampling filter) stay on meta
    when the model is built on the meta device; recompute them from a CPU instance."""
    saved = set(model.state_dict().keys())
    unsaved = [n for n, b in model.named_buffers() if b.is_meta and n not in saved]
    if not unsaved:
        return
    fresh = dict(builder.model_class_configurator.from_config(builder.model_config()).named_buffers())
    for name in unsaved:
        owner, _, leaf = name.rpartition(".")
        module = model.get_submodule(owner) if owner else model
        module._buffers[leaf] = fresh[name].to(device)


def build(configurator: type, weights: Path | Sequence[Path], sd_ops: Any, what: str, *,
          device: str | torch.device, dtype: torch.dtype | None, source: Path | None = None,
          module_ops: tuple = (), keep_fp8: set[str] | None = None,
          loras: tuple[tuple[str | Path, float], ...] = ()) -> nn.Module:
    """Build `what` from `weights` (one file or the shards of one model) with ltx-core's SingleGPUModelBuilder and
    our scaled-FP8 loader, then refuse a model with any weight left on the meta device. `source` (default: the
    file) is what error messages name; `keep_fp8` (module paths) become FP8 `QuantizedLinear`s before loading;
    `loras` are (ComfyUI-layout LoRA file, strength) pairs ltx-core fuses into the weights."""
    device = torch.device(device)
    paths = [weights] if isinstance(weights, (str, Path)) else list(weights)
    source = Path(source or paths[0])
    if keep_fp8:  # these linears become FP8 QuantizedLinears before loading; the loader casts the rest itself
        module_ops = (*module_ops, ModuleOps("ltx_lora_keep_fp8", lambda m: True,
                                             lambda m: (replace_with_empty_fp8_(m, keep_fp8), m)[1]))
    # LoRAs are fused by ltx-core itself (loader/fuse_loras.py), reading ComfyUI-layout keys as ltx-pipelines does.
    builder = SingleGPUModelBuilder(
        model_class_configurator=configurator, model_sd_ops=sd_ops, module_ops=module_ops,
        model_path=str(paths[0]) if len(paths) == 1 else tuple(str(p) for p in paths),
        model_loader=_ScaledFp8Loader(bool(keep_fp8), dtype),
        loras=tuple(LoraPathStrengthAndSDOps(str(p), float(s), LTXV_LORA_COMFY_RENAMING_MAP) for p, s in loras))
    try:
        model = builder.build(device=device, dtype=None if keep_fp8 else dtype)
    except (ValueError, NotImplementedError, KeyError, TypeError) as e:
        raise UserError(f"ltx-core cannot build the {what} from {source.name}'s config ({e}); the file is not an "
                        f"LTX-2.x checkpoint this version supports.") from None
    except RuntimeError as e:  # shape mismatches between the config and the stored tensors
        first = str(e).strip().splitlines()[0]
        raise UserError(f"{source.name}: the stored {what} weights do not match its config ({first}).") from None
    _fill_unsaved_buffers(model, builder, device)
    missing = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if missing:
        raise UserError(f"{source} has no weights for the {what}: {len(missing)} tensors missing "
                        f"({_missing_summary(missing)}; e.g. {missing[0]}), so it is an incomplete file or a "
                        f"different model; check it with `ltx-lora inspect {source}`.")
    return model.to(device).eval()


def _build_from_checkpoint(path: str | Path, configurator: type, sd_ops: Any, what: str, sections: tuple[str, ...],
                           device: str | torch.device, dtype: torch.dtype | None, keep_fp8: set[str] | None = None,
                           loras: tuple[tuple[str | Path, float], ...] = ()) -> nn.Module:
    """`build` from a unified checkpoint, after checking that its config has the component's sections."""
    path = checked_file(path)
    _require_sections(path, read_checkpoint_config(path), *sections)
    return build(configurator, path, sd_ops, what, device=device, dtype=dtype, keep_fp8=keep_fp8, loras=loras)


# ---------------------------------------------------------------------------------------------------------------
# The components of a unified checkpoint
# ---------------------------------------------------------------------------------------------------------------


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
    if quantization not in ("none", "fp8", "int8"):
        raise UserError(f"unknown quantization '{quantization}'; use none, fp8 or int8.")
    args = (path, LTXModelConfigurator, LTXV_MODEL_COMFY_RENAMING_MAP, "transformer", ("transformer",))
    if quantization == "none" and not host_blocks:
        return _build_from_checkpoint(*args, device, dtype, loras=loras)
    if loras:
        raise UserError("LoRAs can be fused only into an unquantized transformer kept on one device.")
    device = torch.device(device)
    keep = scaled_fp8_modules(read_header(checked_file(path))) if quantization == "fp8" else set()
    # Built in host memory first: the float model may be larger than the GPU.
    model = _build_from_checkpoint(*args, torch.device("cpu"), dtype, keep_fp8=keep or None)
    quantize = quantization != "none" and not keep
    place_transformer_(model, device, host_blocks, quantization if quantize else None)
    return model


def place_transformer_(model: nn.Module, device: torch.device, host_blocks: frozenset[int] | set[int],
                       quantization: str | None = None) -> None:
    """Move the transformer to `device` block by block (quantizing each on `device` first when asked), leaving
    `host_blocks` in host memory: the device never holds more than what stays there plus one block."""
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
    return _build_from_checkpoint(path, VideoEncoderConfigurator, VAE_ENCODER_COMFY_KEYS_FILTER, "video encoder",
                                  ("vae",), device, dtype)


def load_video_decoder(path: str | Path, device: str | torch.device = "cpu",
                       dtype: torch.dtype | None = torch.bfloat16) -> nn.Module:
    return _build_from_checkpoint(path, VideoDecoderConfigurator, VAE_DECODER_COMFY_KEYS_FILTER, "video decoder",
                                  ("vae",), device, dtype)


def load_audio_encoder(path: str | Path, device: str | torch.device = "cpu",
                       dtype: torch.dtype | None = torch.float32) -> nn.Module:
    return _build_from_checkpoint(path, AudioEncoderConfigurator, AUDIO_VAE_ENCODER_COMFY_KEYS_FILTER,
                                  "audio encoder", ("audio_vae",), device, dtype)


def load_audio_decoder(path: str | Path, device: str | torch.device = "cpu",
                       dtype: torch.dtype | None = torch.float32) -> nn.Module:
    return _build_from_checkpoint(path, AudioDecoderConfigurator, AUDIO_VAE_DECODER_COMFY_KEYS_FILTER,
                                  "audio decoder", ("audio_vae",), device, dtype)


def load_vocoder(path: str | Path, device: str | torch.device = "cpu",
                 dtype: torch.dtype | None = torch.float32) -> nn.Module:
    return _build_from_checkpoint(path, VocoderConfigurator, VOCODER_COMFY_KEYS_FILTER, "vocoder", ("vocoder",),
                                  device, dtype)
