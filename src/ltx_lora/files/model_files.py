"""Say what a model file is (LTX-2.3 Dev, FP8, Distilled, distilled LoRA, LTX-2.0, LTX-2.5, IC-LoRA, user LoRA,
upscaler, Gemma folder, ...) and what to do with it, from the safetensors header alone.

Only the header is read (names, dtypes, shapes, metadata), so a 46 GB checkpoint is identified in milliseconds.
Pickle files are never opened. What tells the files apart, with sources, is in docs/checkpoint-facts.md; where
only the file name can tell (Dev vs Distilled, and the LTX version of an attention-only LoRA) the result says so.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ltx_lora.errors import UserError
from ltx_lora.files import lora_file
from ltx_lora.files.safetensors_header import NotSafetensors, SafetensorsHeader, read_header

TRANSFORMER_PREFIX = "model.diffusion_model."

# Kinds (stable strings: they appear in `inspect --json`).
LTX23_DEV = "ltx-2.3-dev"
LTX23_DEV_FP8 = "ltx-2.3-dev-fp8"
LTX23_DISTILLED = "ltx-2.3-distilled"
LTX23_DISTILLED_LORA = "ltx-2.3-distilled-lora"
LTX2_CHECKPOINT = "ltx-2.0-checkpoint"
LTX25_CHECKPOINT = "ltx-2.5-checkpoint"
TRANSFORMER_ONLY = "ltx-transformer-only"
IC_LORA = "ic-lora"
LORA = "lora"
SPATIAL_UPSCALER = "spatial-upscaler"
TEMPORAL_UPSCALER = "temporal-upscaler"
GEMMA3_FOLDER = "gemma3-folder"
MODEL_FOLDER = "model-folder"
UNKNOWN_SAFETENSORS = "unknown-safetensors"
PICKLE = "pickle"
GGUF = "gguf"
OTHER_FILE = "other-file"

# Advice the user guide gives, in one place.
_DEV_TRAIN = "Use it as `model.checkpoint` for training: this is the base your LoRA adapts."
_DEV_INFER = "For inference use ~30-40 steps with CFG (the guide validates with CFG 4.0, STG 1.0)."
_DISTILLED_INFER = ("Inference only: 8 steps, CFG 1.0, and leave the distilled LoRA off (it is already baked in; "
                    "adding it gives bad results).")
_DISTILLED_NOT_BASE = ("Never train on it: a distilled model is not a training base; train on "
                       "ltx-2.3-22b-dev.safetensors (or ltx-2.3-22b-dev-fp8.safetensors) instead.")
_DISTILLED_LORA = ("Apply it to the Dev model at strength 0.5-0.6 for fast previews (8 steps, CFG 1.0); at 1.0 it "
                   "burns the output, and it must not be combined with the Distilled checkpoint.")
_OLD_LORA = ("LTX-2.0/2.1 LoRAs load on 2.3 but degrade it (identity drift, motion and quality loss): retrain it on "
             "LTX-2.3 Dev; only simple style/helper LoRAs may pass at strength 0.2-0.4.")
OLD_LORA_ADVICE = _OLD_LORA  # the user guide's advice for LTX-2.0/2.1 LoRAs on 2.3 (used by `lora check`)


@dataclass
class Identification:
    """What a file is and what to do with it."""

    path: str
    kind: str
    family: str | None  # "2.0", "2.3", "2.5" or None
    precision: str | None  # "bf16", "fp8-scaled", "fp8", "fp16", "fp32", ...
    is_trainable_base: bool
    summary: str
    advice: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------------------
# Helpers on names and headers
# ---------------------------------------------------------------------------------------------------------------


def _family_from_name(name: str) -> str | None:
    """The LTX version a file name states (release names: ltx-2.3-22b-*, ltx-2-19b-*, ltx-2.5-22b-*)."""
    n = name.lower().replace("_", "-")
    if re.search(r"ltx-?2[.-]?5|2\.5", n):
        return "2.5"
    if re.search(r"ltx-?2[.-]?3|ltx23|2\.3|22b", n):
        return "2.3"
    if re.search(r"ltx-?2[.-]?[01]\b|ltx-?2-19b|19b|ltx-?2(?![.\d])|ltx2(?![.\d])", n):
        return "2.0"
    return None


def _version_family(model_version: str | None) -> str | None:
    if not model_version:
        return None
    parts = re.split(r"[.-]", model_version)
    try:
        major, minor = int(parts[0]), int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    except ValueError:
        return None
    if (major, minor) >= (2, 5):
        return "2.5"
    if (major, minor) >= (2, 3):
        return "2.3"
    return "2.0"


def _precision(header: SafetensorsHeader, prefix: str) -> str | None:
    """Storage precision of the weights under `prefix` (the transformer for checkpoints)."""
    weights = {k: v for k, v in header.tensors.items() if k.startswith(prefix) and k.endswith(".weight")}
    if not weights:
        return None
    counts = Counter(v.dtype for v in weights.values())
    if counts.get("F8_E4M3") or counts.get("F8_E5M2"):
        scaled = any(k.endswith(".weight_scale") for k in header.tensors if k.startswith(prefix))
        return "fp8-scaled" if scaled else "fp8"
    dtype = counts.most_common(1)[0][0]
    return {"BF16": "bf16", "F16": "fp16", "F32": "fp32"}.get(dtype, dtype.lower())


def _num_layers(header: SafetensorsHeader, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"transformer_blocks\.(\d+)\.")
    blocks = {int(m.group(1)) for k in header.tensors if (m := pattern.match(k))}
    return max(blocks) + 1 if blocks else 0


def _params(header: SafetensorsHeader, prefix: str = "") -> int:
    return sum(v.numel for k, v in header.tensors.items() if k.startswith(prefix) and not k.endswith("_scale"))


def _billions(n: int) -> str:
    return f"{n / 1e9:.1f} B" if n >= 1e8 else f"{n / 1e6:.2f} M"


# ---------------------------------------------------------------------------------------------------------------
# Unified checkpoints (transformer + VAEs + vocoder in one file) and LTX-2.5 component files
# ---------------------------------------------------------------------------------------------------------------


def _checkpoint_family(header: SafetensorsHeader, tcfg: dict) -> tuple[str, str]:
    """(family, how we know). The config's LTX-2.3 fields and the key set decide 2.0 vs 2.3+;
    `model_version` metadata separates 2.5."""
    by_version = _version_family(header.metadata.get("model_version"))
    if by_version == "2.5":
        return "2.5", "model_version metadata"
    has_23_config = tcfg.get("caption_proj_before_connector") is True
    has_23_keys = any(k.startswith(TRANSFORMER_PREFIX + "prompt_adaln_single.") or k.endswith(".to_gate_logits.weight")
                      for k in header.tensors)
    has_20_keys = any(k.startswith(TRANSFORMER_PREFIX + "caption_projection.") for k in header.tensors)
    if has_23_config or has_23_keys:
        return "2.3", "config fields (caption projection before the connectors, gated attention, prompt AdaLN)"
    if has_20_keys or tcfg:
        return "2.0", "config without the LTX-2.3 fields and caption projection inside the transformer"
    return by_version or "2.3", "model_version metadata"


def _identify_checkpoint(path: Path, header: SafetensorsHeader, config: dict) -> Identification:
    tcfg = config.get("transformer") or {}
    family, family_source = _checkpoint_family(header, tcfg)
    precision = _precision(header, TRANSFORMER_PREFIX + "transformer_blocks.")
    layers = _num_layers(header, TRANSFORMER_PREFIX)
    details: dict[str, Any] = {
        "layers": layers,
        "transformer_parameters": _params(header, TRANSFORMER_PREFIX + "transformer_blocks."),
        "total_parameters": _params(header),
        "video_width": (tcfg.get("num_attention_heads") or 0) * (tcfg.get("attention_head_dim") or 0),
        "audio_width": (tcfg.get("audio_num_attention_heads") or 0) * (tcfg.get("audio_attention_head_dim") or 0),
        "components": sorted(k for k in config if k != "scheduler"),
        "model_version": header.metadata.get("model_version"),
        "family_from": family_source,
    }
    sections = set(config)
    if not config:
        return Identification(
            str(path), TRANSFORMER_ONLY, family, precision, False,
            f"LTX-{family} transformer weights without the model config ({layers} blocks), as in community "
            "transformer-only / ComfyUI repacks.",
            ["Training needs the official unified file (config, VAEs and text connectors): use "
             "ltx-2.3-22b-dev.safetensors from Lightricks/LTX-2.3."], details)
    if family == "2.5" or ("transformer" in sections and not sections & {"vae", "audio_vae", "vocoder"}):
        component = "transformer component" if "transformer" in sections else "component"
        variant = "distilled" if "distilled" in path.name.lower() else "dev" if "dev" in path.name.lower() else None
        details["variant"] = variant
        return Identification(
            str(path), LTX25_CHECKPOINT, family if family == "2.5" else "2.5", precision, False,
            f"An LTX-2.5 {component} ({variant or 'variant not stated'}; LTX-2.5 ships one file per component).",
            ["This trainer targets LTX-2.3: use ltx-2.3-22b-dev.safetensors as the training base.",
             "LTX-2.5 files and LoRAs are not interchangeable with LTX-2.3 ones."], details)

    if family == "2.0":
        return Identification(
            str(path), LTX2_CHECKPOINT, "2.0", precision, False,
            f"An LTX-2.0/2.1 (19B) checkpoint: the older architecture ({layers} blocks, caption projection inside "
            "the transformer, no gated attention).",
            ["Do not train LTX-2.3 LoRAs on it: download ltx-2.3-22b-dev.safetensors from Lightricks/LTX-2.3.",
             "LoRAs trained on it degrade on LTX-2.3; retrain them there."], details)

    # LTX-2.3: Dev, Dev FP8 and Distilled share config and key set; only the file name tells Dev from Distilled.
    name = path.name.lower()
    details["variant_from"] = "file name"
    fp8 = precision in ("fp8-scaled", "fp8")
    if "distill" in name:
        return Identification(
            str(path), LTX23_DISTILLED, "2.3", precision, False,
            "The LTX-2.3 22B Distilled checkpoint: a fast-inference model (told by its file name; its contents have "
            "the same layout as Dev).", [_DISTILLED_INFER, _DISTILLED_NOT_BASE], details)
    advice = [_DEV_TRAIN, _DEV_INFER]
    if "dev" not in name:
        details["variant_from"] = "unknown"
        advice.insert(0, "The file name does not say Dev or Distilled and the contents cannot tell: make sure this is "
                         "the Dev checkpoint (ltx-2.3-22b-dev*.safetensors); Distilled is not a training base.")
    if fp8:
        scaled = "with per-tensor weight_scale" if precision == "fp8-scaled" else "WITHOUT scale tensors"
        advice.insert(1, "FP8 weights (float8_e4m3fn) " + scaled + ": trainable with less memory than bf16; the frozen "
                         "base is dequantised on load.")
        return Identification(str(path), LTX23_DEV_FP8, "2.3", precision, True,
                              f"The LTX-2.3 22B Dev checkpoint in FP8 ({layers} blocks): a training base.",
                              advice, details)
    return Identification(str(path), LTX23_DEV, "2.3", precision, True,
                          f"The LTX-2.3 22B Dev checkpoint ({precision}, {layers} blocks): the training base.",
                          advice, details)


# ---------------------------------------------------------------------------------------------------------------
# LoRAs
# ---------------------------------------------------------------------------------------------------------------

# The layout labels `inspect` prints (stable strings: they appear in `inspect --json`); keys are parsed by
# files.lora_file, the one reader of LoRA files.
_LAYOUT_LABELS = {lora_file.COMFYUI: "ComfyUI / ltx-core (diffusion_model.*)",
                  lora_file.PEFT: "raw peft (base_model.model.*)",
                  lora_file.DIFFUSERS: "diffusers (transformer.*)",
                  lora_file.KOHYA: "kohya (lora_unet_*)"}
_LTX23_ONLY_MODULES = ("to_gate_logits", "prompt_adaln_single", "audio_prompt_adaln_single")
_LTX20_ONLY_MODULES = ("caption_projection",)


def _layout_label(module: str) -> str:
    fmt, _ = lora_file.parse_module_name(module)
    if module.startswith(lora_file.TEXT_PROJECTION) or module.startswith("connectors."):
        fmt = None  # `inspect` has always called these bare; kept so its --json output does not change
    return _LAYOUT_LABELS.get(fmt, "bare module names")


def _identify_lora(path: Path, header: SafetensorsHeader) -> Identification:
    down_modules = lora_file.down_modules(header)  # every down matrix, also of layouts formats cannot map
    downs = {k: header.tensors[k] for k in down_modules}
    dims = {k: lora_file.marker_dims(header, k) for k in down_modules}  # (kind, rank, in) per module
    kinds = Counter(d[0] for d in dims.values())
    ranks = Counter(d[1] for d in dims.values() if d[1] is not None) or Counter({None: len(dims)})
    rank = ranks.most_common(1)[0][0]
    modules = list(down_modules.values())
    layout = _layout_label(modules[0])
    # Target patterns: the module path inside a block, e.g. "attn1.to_q", "ff.net.0.proj".
    targets = sorted({re.sub(r"^.*?transformer_blocks[._](\d+)[._]", "", m) for m in modules})
    pattern = re.compile(r"transformer_blocks[._](\d+)[._]")
    blocks = {int(m.group(1)) for mod in modules if (m := pattern.search(mod))}
    alpha = lora_file.first_alpha(path, header)
    meta = header.metadata
    in_features = {d[2] for d in dims.values()}  # of the targets, to say which model width it fits
    details: dict[str, Any] = {
        "rank": rank, "ranks": dict(ranks) if len(ranks) > 1 else None, "alpha": alpha,
        "adapter": "+".join(sorted(kinds)),
        "scale": (alpha / rank) if alpha and rank else 1.0,
        "modules": len(modules), "blocks_covered": len(blocks), "min_layers": (max(blocks) + 1) if blocks else None,
        "targets": targets, "layout": layout, "parameters": _params(header),
        "in_features": sorted(in_features),
        "metadata_keys": sorted(meta),
    }
    names = " ".join(modules)
    if any(m in names for m in _LTX23_ONLY_MODULES):
        family, source = "2.3", "it adapts modules only LTX-2.3 has"
    elif any(m in names for m in _LTX20_ONLY_MODULES):
        family, source = "2.0", "it adapts modules only LTX-2.0 has"
    elif _version_family(meta.get("model_version")):
        family, source = _version_family(meta.get("model_version")), "model_version metadata"
    elif (family := _family_from_name(str(meta.get("base_model") or ""))) is not None:
        source = "base_model metadata"
    elif (family := _family_from_name(path.name)) is not None:
        source = "file name only (LTX-2.0 and 2.3 blocks have the same names and widths)"
    else:
        source = "unknown: nothing in the file or its name says which LTX version it was trained on"
    details["family_from"] = source
    # The video width is what the video self-attention query reads (4096 on the 22B/19B releases).
    q_in = [dims[k][2] for k in downs if re.search(r"[._]attn1[._]to_q[._]", k)]
    width = q_in[0] if q_in else (max(details["in_features"]) if details["in_features"] else 0)
    details["fits"] = (f"LTX-2.x transformer blocks (video width {width}, at least {details['min_layers']} blocks)"
                       if blocks else "no transformer blocks")
    advice: list[str] = []
    if layout.startswith(("diffusers", "raw peft", "bare")):
        advice.append(f"Its keys are in the {layout} layout, which ComfyUI does not map on LTX (it loads with zero "
                      "effect): convert it with `ltx-lora lora convert`.")

    name = path.name.lower().replace("_", "-")
    is_ic = any(k.startswith("reference_") for k in meta) or re.search(r"ic-?lora", name) is not None
    covers_ff = any(t.startswith(("ff.", "audio_ff.")) for t in targets)
    if "distilled-lora" in name or (rank == 384 and covers_ff and not is_ic):
        details["family_from"] = source if family else "file name"
        fam = family or "2.3"
        if fam == "2.0":
            return Identification(str(path), LTX23_DISTILLED_LORA, "2.0", None, False,
                                  "The LTX-2.0 (19B) distilled LoRA: an inference speed-up for the older model.",
                                  ["For LTX-2.3 use ltx-2.3-22b-distilled-lora-384.safetensors instead.",
                                   "Not a training base."] + advice, details)
        return Identification(
            str(path), LTX23_DISTILLED_LORA, fam, None, False,
            f"The LTX-{fam} distilled LoRA (rank {rank} on every attention and feed-forward linear): an inference "
            "speed-up for the Dev model.", [_DISTILLED_LORA, "Not a training base: train on the Dev checkpoint."]
            + advice, details)
    if is_ic:
        factor = meta.get("reference_downscale_factor") or meta.get("reference_spatial_scale_factor")
        details["reference_downscale_factor"] = int(factor) if factor and factor.isdigit() else None
        fam_text = f"LTX-{family}" if family else "LTX (version not stated)"
        tip = [_OLD_LORA] if family == "2.0" else []
        ref = details["reference_downscale_factor"]
        temporal = meta.get("reference_temporal_scale_factor")
        details["reference_temporal_scale_factor"] = int(temporal) if temporal and temporal.isdigit() else None
        kinds = [k for k in (meta.get("reference_modalities") or "video").split(",") if k]
        what = " and ".join(f"a reference {k}" for k in kinds)
        return Identification(
            str(path), IC_LORA, family, None, False,
            f"An {fam_text} IC-LoRA (in-context control from {what}, rank {rank}"
            + (f", reference at 1/{ref} size" if ref else "")
            + (f", 1/{details['reference_temporal_scale_factor']} of the frames"
               if (details["reference_temporal_scale_factor"] or 1) > 1 else "") + ").",
            tip + [f"Use it for inference with {what}; it is not a training base."] + advice, details)
    fam_text = f"LTX-{family}" if family else "LTX-2.x"
    kind_text = "".join(f" ({k.replace('lokr', 'LoKr').replace('loha', 'LoHa')})" for k in kinds if k != "lora")
    rank_text = f"rank {rank}" if rank is not None else "unsplit Kronecker factors"
    summary = (f"An {fam_text} LoRA{kind_text}: {rank_text}" + (f", alpha {alpha:g}" if alpha is not None else "")
               + f", {len(modules)} modules ({', '.join(targets[:6])}{', ...' if len(targets) > 6 else ''}).")
    if family == "2.0":
        advice.insert(0, _OLD_LORA)
    elif family is None:
        advice.insert(0, "Its LTX version cannot be read from the file: if it was trained on LTX-2.0/2.1, "
                         "retrain it on LTX-2.3 (old LoRAs degrade 2.3).")
    else:
        advice.insert(0, "Load it on top of the matching base model; it is a LoRA, not a training base "
                         "(to continue training it, use the Dev checkpoint as base).")
    if alpha is not None and rank is not None and alpha != rank:
        advice.append(f"alpha {alpha:g} != rank {rank}: ComfyUI applies it at alpha/rank = {alpha / rank:g}, while "
                      "ltx-core and diffusers ignore alpha (scale 1.0).")
    return Identification(str(path), LORA, family, None, False, summary, advice, details)


# ---------------------------------------------------------------------------------------------------------------
# Everything else
# ---------------------------------------------------------------------------------------------------------------


def _identify_upscaler(path: Path, header: SafetensorsHeader, config: dict) -> Identification:
    spatial, temporal = bool(config.get("spatial_upsample", True)), bool(config.get("temporal_upsample", False))
    family = _family_from_name(path.name)
    details = {"config": config, "parameters": _params(header), "family_from": "file name" if family else "unknown"}
    if temporal and not spatial:
        return Identification(str(path), TEMPORAL_UPSCALER, family, _precision(header, ""), False,
                              "A latent temporal upscaler (doubles the frame rate of latents between stages).",
                              ["Used by multi-stage inference pipelines; not needed for training."], details)
    scale = config.get("spatial_scale", 2.0)
    return Identification(str(path), SPATIAL_UPSCALER, family, _precision(header, ""), False,
                          f"A latent spatial upscaler (x{scale:g}) for two-stage inference.",
                          ["Used for two-stage inference and validation, not as a training base."], details)


def _identify_safetensors(path: Path, header: SafetensorsHeader) -> Identification:
    config = header.config() or {}
    if "transformer" in config or any(k.startswith(TRANSFORMER_PREFIX) for k in header.tensors):
        return _identify_checkpoint(path, header, config)
    if lora_file.is_lora(header):
        return _identify_lora(path, header)
    if config and ("spatial_upsample" in config or "temporal_upsample" in config or "mid_channels" in config) or (
            any(k.startswith("upsampler.") for k in header.tensors) and "initial_conv.weight" in header.tensors):
        return _identify_upscaler(path, header, config)
    prefixes = Counter(k.split(".", 1)[0] for k in header.tensors)
    top = ", ".join(f"{p} ({n})" for p, n in prefixes.most_common(5))
    details = {"tensors": len(header.tensors), "parameters": _params(header),
               "top_level_keys": dict(prefixes.most_common(10)), "metadata_keys": sorted(header.metadata), "config_sections": sorted(config)}
    return Identification(str(path), UNKNOWN_SAFETENSORS, None, _precision(header, ""), False,
                          f"A safetensors file that is not an LTX checkpoint or LoRA: {len(header.tensors)} tensors "
                          f"({_billions(details['parameters'])} parameters) under {top or 'no keys'}.",
                          ["ltx-lora cannot use it as a model; pass the LTX-2.3 Dev checkpoint instead."], details)


def _identify_folder(path: Path) -> Identification:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        files = sorted(p.name for p in path.iterdir())[:10]
        return Identification(str(path), MODEL_FOLDER, None, None, False,
                              "A folder without a config.json: not a model folder.",
                              ["Pass a checkpoint file (.safetensors) or the Gemma 3 folder."], {"files": files})
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, json.JSONDecodeError):
        cfg = {}
    model_type = cfg.get("model_type")
    weights = sorted(p.name for p in path.glob("*.safetensors"))
    has_tokenizer = any((path / n).is_file() for n in ("tokenizer.model", "tokenizer.json"))
    text = cfg.get("text_config") or cfg
    details = {"model_type": model_type, "hidden_size": text.get("hidden_size"),
               "layers": text.get("num_hidden_layers"), "weight_files": len(weights), "tokenizer": has_tokenizer}
    if model_type in ("gemma3", "gemma3_text"):
        advice = ["Use it as `model.text_encoder` (needed by `ltx-lora preprocess` only)."]
        if not weights:
            advice.insert(0, "No *.safetensors weights found in it: download the whole repository.")
        if not has_tokenizer:
            advice.insert(0, "No tokenizer (tokenizer.model / tokenizer.json) found in it: download the whole "
                             "repository.")
        size = f"{text.get('num_hidden_layers')} layers x {text.get('hidden_size')}"
        return Identification(str(path), GEMMA3_FOLDER, None, cfg.get("torch_dtype"), False,
                              f"A Gemma 3 text-encoder folder ({size}, {len(weights)} weight files): the LTX-2.3 "
                              "text encoder.", advice, details)
    return Identification(str(path), MODEL_FOLDER, None, cfg.get("torch_dtype"), False,
                          f"A Hugging Face model folder of type '{model_type}', not an LTX model or Gemma 3.",
                          ["LTX-2.3 needs its .safetensors checkpoint and a Gemma 3 12B folder."], details)


def _sniff_other(path: Path) -> Identification:
    with path.open("rb") as f:
        head = f.read(8)
    suffix = path.suffix.lower()
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80" or suffix in (".pt", ".pth", ".ckpt", ".bin", ".pkl"):
        return Identification(str(path), PICKLE, None, None, False,
                              "A PyTorch pickle file (.pt/.ckpt): not opened, because unpickling can run code.",
                              ["LTX-2.3 checkpoints are .safetensors; download those instead of pickle files."],
                              {"size_bytes": path.stat().st_size})
    if head.startswith(b"GGUF"):
        return Identification(str(path), GGUF, None, "gguf", False,
                              "A GGUF quantised model (ComfyUI-GGUF / llama.cpp format).",
                              ["GGUF models are for inference only; train on the LTX-2.3 Dev .safetensors."],
                              {"size_bytes": path.stat().st_size})
    what = ("Not a model file: named .safetensors but it has no safetensors header (a damaged or partial download, "
            "or another file renamed)." if suffix == ".safetensors" else
            f"Not a model file ({suffix or 'no extension'}, not safetensors).")
    return Identification(str(path), OTHER_FILE, None, None, False, what,
                          ["Pass an LTX-2.3 .safetensors checkpoint."], {"size_bytes": path.stat().st_size})


def identify(path: str | Path) -> Identification:
    """Identify a file or folder from its header and metadata only."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{path} does not exist; pass the path of a .safetensors file or a model folder.")
    if path.is_dir():
        return _identify_folder(path)
    try:
        header = read_header(path)
    except NotSafetensors:
        return _sniff_other(path)
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}.") from None
    return _identify_safetensors(path, header)


def require_training_base(path: str | Path) -> Identification:
    """Identify `path` and raise a UserError unless it is an LTX-2.3 Dev checkpoint (bf16 or FP8)."""
    return check_training_base(identify(path))


def identify_header(path: str | Path, header: SafetensorsHeader) -> Identification:
    """Identify a safetensors file whose header the caller has read already (the base file is read once a run)."""
    return _identify_safetensors(Path(path), header)


def check_training_base(ident: Identification) -> Identification:
    """Raise a UserError unless `ident` is an LTX-2.3 Dev checkpoint (bf16 or FP8)."""
    if ident.is_trainable_base:
        return ident
    why = {
        LTX23_DISTILLED: "is the Distilled model (8-step inference only); LoRAs must be trained on Dev",
        LTX23_DISTILLED_LORA: "is the distilled LoRA, an inference speed-up, not a base model",
        LTX2_CHECKPOINT: "is an LTX-2.0/2.1 (19B) checkpoint, the older architecture",
        LTX25_CHECKPOINT: "is an LTX-2.5 file, which this trainer does not train",
        LORA: "is a LoRA, not a base model",
        IC_LORA: "is an IC-LoRA, not a base model",
        PICKLE: "is a pickle file, which is never opened",
    }.get(ident.kind, f"is not an LTX-2.3 checkpoint ({ident.summary.rstrip('.')})")
    raise UserError(f"{Path(ident.path).name} {why}: use ltx-2.3-22b-dev.safetensors (or -dev-fp8) from "
                    "Lightricks/LTX-2.3 as model.checkpoint.")


def scaled_fp8_modules(header: SafetensorsHeader, prefix: str = TRANSFORMER_PREFIX) -> set[str]:
    """Module paths (under `prefix`, prefix removed) stored as float8_e4m3fn weight + `weight_scale`."""
    tensors = header.tensors
    return {k.removeprefix(prefix).removesuffix(".weight") for k, t in tensors.items()
            if k.startswith(prefix) and k.endswith(".weight") and t.dtype == "F8_E4M3"
            and k.removesuffix(".weight") + ".weight_scale" in tensors}
