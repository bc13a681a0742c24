"""Every LoRA key layout LTX-2.x LoRAs come in, parsed into one canonical form, and the rename tables between them.

Canonical module name ("stem"): the ComfyUI / ltx-core LoRA key without its suffix, e.g.
`diffusion_model.transformer_blocks.0.attn1.to_q` (transformer and text connectors, which the unified checkpoint
stores under `model.diffusion_model.`) or `text_embedding_projection.video_aggregate_embed` (the Gemma feature
projection, stored at the top level of the checkpoint).

Layouts (docs/lora-formats.md has the sources):

| format | key of one module's down matrix |
|---|---|
| comfyui | `diffusion_model.<ltx path>.lora_A.weight` (+ `.lora_B.weight`, optional `.alpha`) |
| bare | `<ltx path>.lora_A.weight` (ComfyUI maps it for LTXV/LTXAV) |
| kohya | `lora_unet_<ltx path with _>.lora_down.weight` (+ `.lora_up.weight`, `.alpha`) |
| diffusers | `transformer.<diffusers path>.lora_A.weight`, text side under `connectors.` |
| peft | `base_model.model.<ltx path>.lora_A.weight` (peft's own state-dict names) |

Any layout may name the matrices `lora_A/lora_B` or kohya's `lora_down/lora_up`; ComfyUI and ltx-lora read both.

This module owns the file format: `read_lora` / `load_pairs` / `load_weights` read every layout, `lora_keys` names
the keys of each layout and `write_lora` writes every LoRA file ltx-lora produces. It sits at the bottom layer
(files): it imports only `ltx_lora.errors`, `ltx_lora.files.atomic`, `ltx_lora.files.safetensors_header`, the standard library and, lazily,
torch / safetensors, so `model_files` (which `lora.check` imports) can use it without a cycle.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ltx_lora.errors import UserError
from ltx_lora.files.atomic import atomic_save_safetensors
from ltx_lora.files.safetensors_header import NotSafetensors, SafetensorsHeader, open_safetensors, read_header

if TYPE_CHECKING:  # torch is imported lazily: `ltx-lora inspect` reads headers only
    import torch

COMFYUI, BARE, KOHYA, DIFFUSERS, PEFT = "comfyui", "bare", "kohya", "diffusers", "peft"
FORMATS = (COMFYUI, BARE, KOHYA, DIFFUSERS, PEFT)
DIFFUSION = "diffusion_model."
TEXT_PROJECTION = "text_embedding_projection."

_SUFFIXES = (  # (key suffix, role, naming)
    (".lora_A.default.weight", "down", "lora_A/lora_B"), (".lora_B.default.weight", "up", "lora_A/lora_B"),
    (".lora_A.weight", "down", "lora_A/lora_B"), (".lora_B.weight", "up", "lora_A/lora_B"),
    (".lora_down.weight", "down", "lora_down/lora_up"), (".lora_up.weight", "up", "lora_down/lora_up"),
    (".alpha", "alpha", None),
)

# --- ltx-core <-> diffusers module names ------------------------------------------------------------------------
# Top-level transformer modules whose names differ (diffusers' `convert_ltx2_transformer_to_diffusers` and
# `_convert_non_diffusers_ltx2_lora_to_diffusers`, plus the LTX-2.3 renames of scripts/convert_ltx2_to_diffusers.py).
TOP_LEVEL_TO_DIFFUSERS = {
    "patchify_proj": "proj_in",
    "audio_patchify_proj": "audio_proj_in",
    "adaln_single": "time_embed",
    "audio_adaln_single": "audio_time_embed",
    "prompt_adaln_single": "prompt_adaln",
    "audio_prompt_adaln_single": "audio_prompt_adaln",
    "av_ca_video_scale_shift_adaln_single": "av_cross_attn_video_scale_shift",
    "av_ca_a2v_gate_adaln_single": "av_cross_attn_video_a2v_gate",
    "av_ca_audio_scale_shift_adaln_single": "av_cross_attn_audio_scale_shift",
    "av_ca_v2a_gate_adaln_single": "av_cross_attn_audio_v2a_gate",
}
# Path components renamed wherever they appear (norms and tables: not LoRA targets, listed for completeness).
COMPONENT_TO_DIFFUSERS = {
    "q_norm": "norm_q",
    "k_norm": "norm_k",
    "scale_shift_table_a2v_ca_video": "video_a2v_cross_attn_scale_shift_table",
    "scale_shift_table_a2v_ca_audio": "audio_a2v_cross_attn_scale_shift_table",
    "transformer_1d_blocks": "transformer_blocks",  # inside the text connectors only
}
# Text side: ltx-core keeps the connectors in the diffusion model and the Gemma projection at the top level;
# diffusers puts both into its `connectors` component (LTX2TextConnectors).
CONNECTORS_TO_DIFFUSERS = {
    "diffusion_model.video_embeddings_connector": "connectors.video_connector",
    "diffusion_model.audio_embeddings_connector": "connectors.audio_connector",
    "text_embedding_projection.video_aggregate_embed": "connectors.video_text_proj_in",
    "text_embedding_projection.audio_aggregate_embed": "connectors.audio_text_proj_in",
    "text_embedding_projection.aggregate_embed": "connectors.text_proj_in",  # LTX-2.0
}
_TOP_FROM_DIFFUSERS = {v: k for k, v in TOP_LEVEL_TO_DIFFUSERS.items()}
_CONNECTORS_FROM_DIFFUSERS = {v: k for k, v in CONNECTORS_TO_DIFFUSERS.items()}
_COMPONENT_FROM_DIFFUSERS = {v: k for k, v in COMPONENT_TO_DIFFUSERS.items() if k != "transformer_1d_blocks"}

# Path components of ltx-core module names, to undo kohya's "." -> "_" flattening without a base checkpoint.
_LTX_COMPONENTS = {
    "transformer_blocks", "transformer_1d_blocks", "attn1", "attn2", "audio_attn1", "audio_attn2",
    "audio_to_video_attn", "video_to_audio_attn", "to_q", "to_k", "to_v", "to_out", "to_gate_logits", "ff",
    "audio_ff", "net", "proj", "q_norm", "k_norm", "emb", "timestep_embedder", "linear_1", "linear_2", "linear",
    "proj_out", "audio_proj_out", "caption_projection", "audio_caption_projection", "video_embeddings_connector",
    "audio_embeddings_connector", *TOP_LEVEL_TO_DIFFUSERS,
}
_TOP_LEVEL_LTX = {
    "transformer_blocks", "proj_out", "audio_proj_out", "caption_projection", "audio_caption_projection",
    "video_embeddings_connector", "audio_embeddings_connector", *TOP_LEVEL_TO_DIFFUSERS,
}


def to_diffusers(stem: str) -> str:
    """Canonical stem -> diffusers module key (`transformer.` or `connectors.` prefixed)."""
    for ltx, diff in CONNECTORS_TO_DIFFUSERS.items():
        if stem == ltx or stem.startswith(ltx + "."):
            rest = stem[len(ltx):]
            return diff + ".".join(COMPONENT_TO_DIFFUSERS.get(p, p) for p in rest.split("."))
    if not stem.startswith(DIFFUSION):
        raise ValueError(f"no diffusers name for {stem}")
    parts = stem[len(DIFFUSION):].split(".")
    parts[0] = TOP_LEVEL_TO_DIFFUSERS.get(parts[0], parts[0])
    return "transformer." + ".".join(COMPONENT_TO_DIFFUSERS.get(p, p) if p != "transformer_1d_blocks" else p
                                     for p in parts)


def from_diffusers(name: str) -> str | None:
    """diffusers module key (with `transformer.` / `connectors.` prefix) -> canonical stem, or None."""
    for diff, ltx in _CONNECTORS_FROM_DIFFUSERS.items():
        if name == diff or name.startswith(diff + "."):
            rest = name[len(diff):].split(".")
            mapped = [{"transformer_blocks": "transformer_1d_blocks", **_COMPONENT_FROM_DIFFUSERS}.get(p, p)
                      for p in rest]
            return ltx + ".".join(mapped)
    if not name.startswith("transformer."):
        return None
    parts = name[len("transformer."):].split(".")
    parts[0] = _TOP_FROM_DIFFUSERS.get(parts[0], parts[0])
    return DIFFUSION + ".".join(_COMPONENT_FROM_DIFFUSERS.get(p, p) for p in parts)


def to_kohya(stem: str) -> str:
    """ComfyUI's kohya name: `lora_unet_` + the diffusion-model path with dots as underscores."""
    if not stem.startswith(DIFFUSION):
        raise ValueError(f"kohya names exist only for diffusion-model modules, not {stem}")
    return "lora_unet_" + stem[len(DIFFUSION):].replace(".", "_")


def from_kohya(flat: str) -> str | None:
    """Undo the flattening with the ltx-core component names (greedy, longest match first)."""
    tokens = flat.split("_")
    parts: list[str] = []
    i = 0
    while i < len(tokens):
        for j in range(len(tokens), i, -1):
            piece = "_".join(tokens[i:j])
            if piece in _LTX_COMPONENTS or (j == i + 1 and piece.isdigit()):
                parts.append(piece)
                i = j
                break
        else:
            return None
    return DIFFUSION + ".".join(parts)


def to_peft(stem: str) -> str:
    """peft's state-dict name on a model whose module names are ltx-core's (how our trainer injects)."""
    return "base_model.model." + (stem[len(DIFFUSION):] if stem.startswith(DIFFUSION) else stem)


def stem_of_ltx_core_path(path: str) -> str:
    """Canonical stem of a module of ltx-core's transformer (the names our trainer injects peft into)."""
    return DIFFUSION + path


def module_key(stem: str, layout: str = COMFYUI) -> str:
    """The module name `layout` writes for a canonical stem (a LoRA key without its `.lora_A.weight` suffix)."""
    if layout == COMFYUI:
        return stem  # the canonical stem is ComfyUI's / ltx-core's own name
    if layout == BARE:
        return stem.removeprefix(DIFFUSION)
    if layout == KOHYA:
        return to_kohya(stem)
    if layout == DIFFUSERS:
        return to_diffusers(stem)
    if layout == PEFT:
        return to_peft(stem)
    raise ValueError(f"unknown LoRA layout {layout!r}")


def lora_keys(stem: str, layout: str = COMFYUI) -> tuple[str, str, str]:
    """(down, up, alpha) keys of one module in `layout`: kohya names the matrices lora_down/lora_up, the others
    lora_A/lora_B (what ltx-core and diffusers read)."""
    name = module_key(stem, layout)
    down, up = (".lora_down.weight", ".lora_up.weight") if layout == KOHYA else (".lora_A.weight", ".lora_B.weight")
    return name + down, name + up, name + ".alpha"


def base_weight_key(stem: str) -> str:
    """The key of the weight this module adapts in a unified LTX-2.x checkpoint."""
    return ("model." + stem if stem.startswith(DIFFUSION) else stem) + ".weight"


def ltx_core_path(stem: str) -> str | None:
    """The module path inside ltx-core's `LTXModel` (the transformer), or None for modules outside it."""
    if not stem.startswith(DIFFUSION) or is_text_side(stem):
        return None
    return stem[len(DIFFUSION):]


def is_text_side(stem: str) -> bool:
    """Text connectors and the Gemma feature projection: outside the transformer ltx-core builds."""
    return stem.startswith(TEXT_PROJECTION) or "_embeddings_connector." in stem


GROUPS = ("video attention", "audio attention", "cross-modal attention", "video feed-forward", "audio feed-forward",
          "other transformer", "text connectors")
_BLOCK = re.compile(r"transformer_blocks\.\d+\.([a-z0-9_]+)")


def module_group(stem: str) -> str:
    if is_text_side(stem):
        return "text connectors"
    m = _BLOCK.search(stem)
    part = m.group(1) if m else ""
    return {"attn1": "video attention", "attn2": "video attention", "audio_attn1": "audio attention",
            "audio_attn2": "audio attention", "audio_to_video_attn": "cross-modal attention",
            "video_to_audio_attn": "cross-modal attention", "ff": "video feed-forward",
            "audio_ff": "audio feed-forward"}.get(part, "other transformer")


def target_name(stem: str) -> str:
    """The module inside a block (`attn1.to_q`, `ff.net.2`) or the top-level path, for short listings."""
    return re.sub(r"^.*?transformer(?:_1d)?_blocks\.\d+\.", "", stem.removeprefix(DIFFUSION))


# --- parsed files -------------------------------------------------------------------------------------------------


@dataclass
class LoraModule:
    stem: str
    down_key: str
    up_key: str
    rank: int
    in_features: int
    out_features: int
    alpha_key: str | None = None
    alpha: float | None = None

    @property
    def scale(self) -> float:
        """The strength the file asks for: alpha / rank where an alpha is stored, else 1 (ComfyUI's rule)."""
        return self.alpha / self.rank if self.alpha is not None else 1.0


@dataclass
class LoraFile:
    path: Path
    header: SafetensorsHeader
    format: str
    naming: str
    modules: dict[str, LoraModule] = field(default_factory=dict)
    format_counts: dict[str, int] = field(default_factory=dict)
    stray_keys: list[str] = field(default_factory=list)  # keys that are no part of a down/up pair we understand

    @property
    def metadata(self) -> dict[str, str]:
        return self.header.metadata

    @property
    def ranks(self) -> Counter:
        return Counter(m.rank for m in self.modules.values())

    @property
    def alphas(self) -> Counter:
        return Counter(m.alpha for m in self.modules.values())

    @property
    def folded_alpha(self) -> float | None:
        """The trained alpha ltx-lora folded into lora_B at export (metadata), if any."""
        if self.metadata.get("alpha_folded_into_lora_B") == "true":
            try:
                return float(self.metadata["alpha"])
            except (KeyError, ValueError):
                return None
        return None

    def key_of(self, key: str) -> str | None:
        """The stem a raw key belongs to."""
        for m in self.modules.values():
            if key in (m.down_key, m.up_key, m.alpha_key):
                return m.stem
        return None


def split_key(key: str) -> tuple[str, str | None, str | None]:
    """(module name as written, role "down"/"up"/"alpha" or None, matrix naming) of one tensor key."""
    for suffix, role, naming in _SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)], role, naming
    return key, None, None


def parse_module_name(raw: str) -> tuple[str | None, str | None]:
    """(format, canonical stem) of a module name as it appears in a LoRA key (suffix removed)."""
    if raw.startswith(DIFFUSION) or raw.startswith(TEXT_PROJECTION):
        return COMFYUI, raw
    if raw.startswith(("transformer.", "connectors.")):
        return DIFFUSERS, from_diffusers(raw)
    if raw.startswith("base_model.model."):
        rest = raw[len("base_model.model."):]
        return PEFT, rest if rest.startswith((DIFFUSION, TEXT_PROJECTION)) else DIFFUSION + rest
    if raw.startswith("lora_unet_"):
        return KOHYA, from_kohya(raw[len("lora_unet_"):])
    if raw.split(".", 1)[0] in _TOP_LEVEL_LTX:
        return BARE, DIFFUSION + raw
    return None, None


_DAMAGED_LORA = "download or export it again"


def read_lora(path: str | Path) -> LoraFile:
    """Parse a LoRA file from its header (and its `.alpha` scalars). Raises UserError for anything else."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{path} is not a file; pass the path of a LoRA .safetensors file.")
    try:
        header = read_header(path)
    except NotSafetensors as e:
        raise UserError(f"{path.name} is not a safetensors file ({e}); LoRAs are read from .safetensors only "
                        "(pickle files are never opened).") from None
    entries: dict[str, dict[str, str]] = {}
    formats: Counter = Counter()
    namings: Counter = Counter()
    stray: list[str] = []
    for key in header.tensors:
        raw, role, naming = split_key(key)
        fmt, stem = parse_module_name(raw) if role else (None, None)
        if role is None or stem is None:
            stray.append(key)
            continue
        slot = entries.setdefault(stem, {})
        if role in slot:  # the same module twice (e.g. both lora_A and lora_down): keep the first, flag the rest
            stray.append(key)
            continue
        slot[role] = key
        if role != "alpha":
            formats[fmt] += 1
            namings[naming] += 1
    if not formats:
        raise UserError(f"{path.name} has no LoRA weights (no *.lora_A/lora_B or lora_down/lora_up tensors); "
                        "check it with `ltx-lora inspect`.")
    lora = LoraFile(path, header, formats.most_common(1)[0][0], namings.most_common(1)[0][0],
                    format_counts=dict(formats), stray_keys=stray)
    alpha_keys = []
    for stem, slot in entries.items():
        if "down" not in slot or "up" not in slot:
            stray.extend(slot.values())
            continue
        down, up = header.tensors[slot["down"]], header.tensors[slot["up"]]
        if len(down.shape) != 2 or len(up.shape) != 2 or down.shape[0] != up.shape[1]:
            raise UserError(f"{path.name}: {slot['down']} {list(down.shape)} and {slot['up']} {list(up.shape)} are "
                            "not a LoRA pair (down is rank x in, up is out x rank); the file is damaged or not a "
                            "LoRA.")
        lora.modules[stem] = LoraModule(stem, slot["down"], slot["up"], down.shape[0], down.shape[1], up.shape[0],
                                        alpha_key=slot.get("alpha"))
        if "alpha" in slot:
            alpha_keys.append(slot["alpha"])
    if not lora.modules:
        raise UserError(f"{path.name} has LoRA tensors but no complete down/up pair; the file is damaged.")
    bad_alpha = next((k for k in alpha_keys if header.tensors[k].numel != 1), None)
    if bad_alpha is not None:
        raise UserError(f"{path.name}: {bad_alpha} has the shape {list(header.tensors[bad_alpha].shape)}, but an "
                        "alpha is one number; the file is damaged or not a LoRA.")
    if alpha_keys:
        with open_safetensors(path, "LoRA file", _DAMAGED_LORA) as f:
            for m in lora.modules.values():
                if m.alpha_key:
                    m.alpha = float(f.get_tensor(m.alpha_key).float().item())
    return lora


def load_pairs(lora: LoraFile, device: str = "cpu") -> dict[str, tuple]:
    """{stem: (down, up)} tensors as stored (no scale applied)."""
    out = {}
    with open_safetensors(lora.path, "LoRA file", _DAMAGED_LORA, device=device) as f:
        for m in lora.modules.values():
            out[m.stem] = (f.get_tensor(m.down_key), f.get_tensor(m.up_key))
    return out


_split_key = split_key  # older spelling, still used by tests/test_lora_tools.py


def is_lora(header: SafetensorsHeader) -> bool:
    """Whether any tensor of the file is a LoRA down matrix (in any layout, even one we cannot map)."""
    return any(split_key(k)[1] == "down" for k in header.tensors)


def down_modules(header: SafetensorsHeader) -> dict[str, str]:
    """{down key: module name as written} for every LoRA down matrix in the header, whatever its layout (also names
    no layout here maps, e.g. another model's LoRA): what `ltx-lora inspect` describes before any mapping."""
    out = {}
    for key in header.tensors:
        raw, role, _ = split_key(key)
        if role == "down":
            out[key] = raw
    return out


def first_alpha(path: str | Path, header: SafetensorsHeader) -> float | None:
    """The value of the first `.alpha` tensor in the header (a scalar: reading it loads 2-4 bytes), or None."""
    key = next((k for k in header.tensors if split_key(k)[1] == "alpha"), None)
    if key is None or header.tensors[key].numel != 1:  # an alpha that is not one number is no alpha
        return None
    with open_safetensors(path, "LoRA file", _DAMAGED_LORA) as f:
        return float(f.get_tensor(key).float().item())


# --- what a module adds to its layer ------------------------------------------------------------------------------


@dataclass
class LoraPair:
    """One module's matrices and the strength its file asks for: the layer gains `scale * up @ down`."""

    down: torch.Tensor  # [rank, in]
    up: torch.Tensor  # [out, rank]
    scale: float  # alpha / rank where the file stores `.alpha`, else 1 (ltx-lora's exports fold alpha into up)

    def delta(self, strength: float = 1.0, device=None) -> torch.Tensor:
        """The weight change `strength * scale * up @ down` (out x in), in float32."""
        import torch

        up = self.up.to(device=device, dtype=torch.float32)
        return (up * (strength * self.scale)) @ self.down.to(device=device, dtype=torch.float32)


def load_weights(lora: LoraFile, device: str = "cpu") -> dict[str, LoraPair]:
    """{stem: LoraPair} of a parsed file: the one way attach, merge and verify get (down, up, scale)."""
    return {stem: LoraPair(down, up, lora.modules[stem].scale) for stem, (down, up) in load_pairs(lora, device).items()}


# --- writing ------------------------------------------------------------------------------------------------------


def lora_tensors(modules: dict[str, tuple[torch.Tensor, torch.Tensor]], *, layout: str = COMFYUI,
                 alphas: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
    """The state dict of `{stem: (down, up)}` in `layout`, with a `.alpha` scalar (in up's dtype) for every stem in
    `alphas`. Raises UserError when a module has no name in that layout (kohya has none for the text side)."""
    import torch

    out: dict[str, torch.Tensor] = {}
    for stem, (down, up) in modules.items():
        try:
            key_down, key_up, key_alpha = lora_keys(stem, layout)
        except ValueError:
            raise UserError(f"{stem} has no name in the {layout} layout; write this LoRA as comfyui or diffusers "
                            "instead.") from None
        out[key_down], out[key_up] = down.contiguous(), up.contiguous()
        if alphas and alphas.get(stem) is not None:
            out[key_alpha] = torch.tensor(alphas[stem], dtype=up.dtype)
    return out


def write_lora(path: str | Path, modules: dict[str, tuple[torch.Tensor, torch.Tensor]], *, layout: str = COMFYUI,
               alphas: dict[str, float] | None = None, metadata: dict[str, str] | None = None) -> Path:
    """Write `{stem: (down, up)}` as a LoRA file in `layout` (see `lora_tensors`), atomically."""
    return write_lora_tensors(path, lora_tensors(modules, layout=layout, alphas=alphas), metadata)


def write_lora_tensors(path: str | Path, tensors: dict[str, torch.Tensor],
                       metadata: dict[str, str] | None = None) -> Path:
    """Write a state dict named by `lora_tensors` (e.g. the training export) atomically: readers see the old
    file or the complete new one, never a partial one."""
    return atomic_save_safetensors(tensors, path, metadata)
