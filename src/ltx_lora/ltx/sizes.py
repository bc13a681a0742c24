"""Sizes of LTX-2.3 models: the released 22B transformer's config (what the memory plan assumes before a
checkpoint is given), and what a transformer config holds (`transformer_size`, `transformer_linear_shapes`),
read from a meta-device build (no memory, no weights)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from torch import nn

from ltx_lora.ltx.components import build_component
from ltx_lora.ltx.quantize import is_quantizable

# The real text encoder (Gemma 3 12B): 3840 wide, 48 layers + the embedding output = 49 hidden states.
GEMMA3_12B_HIDDEN_SIZE = 3840
GEMMA3_12B_HIDDEN_STATES = 49


def ltx23_22b_config() -> dict[str, Any]:
    """`{"transformer": ...}`: the released LTX-2.3 22B transformer's config, every field written (ltx-core falls
    back SILENTLY to LTX-2.0 behaviour for absent optional fields): 48 blocks, video 32 x 128, audio 32 x 64,
    8-layer text connectors, Gemma 3 12B text. Benches build the full-size model from it with random weights;
    `ltx_lora.fixtures.models.tiny_ltx23_config` shrinks it."""
    transformer = {
        "_class_name": "AVTransformer3DModel", "activation_fn": "gelu-approximate", "attention_bias": True,
        "attention_head_dim": 128, "attention_type": "default", "caption_channels": GEMMA3_12B_HIDDEN_SIZE,
        "cross_attention_dim": 4096, "double_self_attention": False, "dropout": 0.0,
        "in_channels": 128, "norm_elementwise_affine": False, "norm_eps": 1e-06, "norm_num_groups": 32,
        "num_attention_heads": 32, "num_embeds_ada_norm": 1000, "num_layers": 48, "num_vector_embeds": None,
        "only_cross_attention": False, "cross_attention_norm": True, "out_channels": 128, "upcast_attention": False,
        "use_linear_projection": False, "qk_norm": "rms_norm", "standardization_norm": "rms_norm",
        "positional_embedding_type": "rope", "positional_embedding_theta": 10000.0,
        "positional_embedding_max_pos": [20, 2048, 2048], "timestep_scale_multiplier": 1000,
        "av_ca_timestep_scale_multiplier": 1000.0, "causal_temporal_positioning": True,
        "audio_num_attention_heads": 32, "audio_attention_head_dim": 64,
        "use_audio_video_cross_attention": True, "share_ff": False, "audio_in_channels": 128,
        "audio_out_channels": 128, "audio_cross_attention_dim": 2048,
        "audio_positional_embedding_max_pos": [20], "av_cross_ada_norm": True, "use_embeddings_connector": True,
        "connector_attention_head_dim": 128, "connector_num_attention_heads": 32,
        "connector_num_layers": 8, "connector_positional_embedding_max_pos": [4096],
        "connector_num_learnable_registers": 128, "connector_norm_output": True, "use_middle_indices_grid": True,
        # LTX-2.3 architecture switches: all written, never left to defaults.
        "apply_gated_attention": True, "connector_apply_gated_attention": True,
        "caption_projection_first_linear": False, "caption_projection_second_linear": False,
        "caption_proj_input_norm": False, "connector_learnable_registers_std": 1,
        "caption_proj_before_connector": True, "audio_connector_attention_head_dim": 64,
        "audio_connector_num_attention_heads": 32, "cross_attention_adaln": True,
        "text_encoder_norm_type": "per_token_rms", "rope_type": "split", "frequencies_precision": "float64",
    }
    return {"transformer": transformer}


def transformer_linear_shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Every nn.Linear inside the transformer blocks: module path -> (in_features, out_features).
    These are the LoRA targets (their names are the ltx-core module paths ComfyUI and ltx-core use)."""
    model = build_component("transformer", cfg)
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
        return sum(i + o for i, o in self.target_shapes(targets)) * self.blocks

    def target_shapes(self, targets: list[str]) -> tuple[tuple[int, int], ...]:
        """(in, out) of the linears of one block that peft-style target names adapt."""
        return tuple((i, o) for _, i, o in self.target_linears(targets))

    def target_linears(self, targets: list[str]) -> tuple[tuple[str, int, int], ...]:
        """(path inside a block, in, out) of the linears of one block that peft-style target names adapt."""
        return tuple((name, i, o) for name, i, o in self.block_linears
                     if any(name == t or name.endswith("." + t) for t in targets))


def linear_input(path: str, video: int, audio: int, text: int) -> tuple[int, bool]:
    """The token rows a block linear (`path` inside a block, e.g. "attn2.to_k") multiplies in one forward, as
    ltx-core 1.0.0's block routes them, and whether that input carries a gradient (not the text context: the
    connectors are frozen). The video layers take the video tokens, the audio layers the audio tokens; the text
    cross-attentions' keys and values take the prompt's `text` tokens (where their modality runs); the audio-video
    cross-attentions (which run only with both) take their query's tokens in to_q / the gate / to_out and the other
    modality's in to_k / to_v."""
    module, _, proj = path.partition(".")
    kv = proj.startswith(("to_k", "to_v"))
    if module in ("audio_to_video_attn", "video_to_audio_attn"):
        if not (video and audio):
            return 0, True
        query, keys = (video, audio) if module == "audio_to_video_attn" else (audio, video)
        return (keys if kv else query), True
    own = audio if module.startswith("audio_") else video
    if module in ("attn2", "audio_attn2") and kv:
        return (text if own else 0), False
    return own, True


def lokr_factorization(dim: int, factor: int = -1) -> tuple[int, int]:
    """How peft's LoKr splits a layer width into its two Kronecker factors' widths (its own function; `factor`:
    lora.lokr_factor, -1 = near the square root)."""
    from peft.tuners.lokr.layer import factorization

    return factorization(dim, factor)


def transformer_size(cfg: dict[str, Any], text_connectors: int | None = None) -> TransformerSize:
    """Sizes of the transformer a full config (`{"transformer": ...}`) describes, from a meta-device build.
    `text_connectors`: their parameter count when known (a checkpoint's header says it), else they are built too."""
    return _transformer_size(json.dumps(cfg["transformer"], sort_keys=True), text_connectors)


@functools.lru_cache(maxsize=4)  # the memory plan asks several times for the same config
def _transformer_size(transformer_json: str, text_connectors: int | None) -> TransformerSize:
    t = json.loads(transformer_json)
    model = build_component("transformer", {"transformer": t})
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
    if text_connectors is None:
        connectors = build_component("text_connectors", {"transformer": t})
        text_connectors = sum(p.numel() for p in connectors.parameters())
    return TransformerSize(text_connectors=text_connectors, blocks=blocks,
                           quantizable_per_block=quant // blocks, other_per_block=other // blocks,
                           outside_blocks=outside, video_dim=t["num_attention_heads"] * t["attention_head_dim"],
                           audio_dim=t["audio_num_attention_heads"] * t["audio_attention_head_dim"],
                           largest_linear=largest, block_linears=linears)
