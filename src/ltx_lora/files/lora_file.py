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
LyCORIS adapters (ComfyUI's `comfy/weight_adapter/lokr.py` and `loha.py`) sit under the same module names:
- LoKr: `<module>.lokr_w1` (or `lokr_w1_a` @ `lokr_w1_b`) and `<module>.lokr_w2` (or `lokr_w2_a` @ `lokr_w2_b`);
  the layer gains kron(w1, w2), times alpha / rank where `.alpha` is stored AND a factor is split in two (rank =
  `lokr_w2_b.shape[0]`, else `lokr_w1_b.shape[0]`); a file of unsplit factors is applied at x1 whatever its alpha.
- LoHa: `<module>.hada_w1_a/b`, `hada_w2_a/b`; the layer gains (w1_a @ w1_b) * (w2_a @ w2_b) (element-wise), times
  alpha / `hada_w1_b.shape[0]` where `.alpha` is stored.
Only ComfyUI-style loaders apply them: ltx-core's fusion and diffusers' LTX-2 loader read lora_A/lora_B only.

This module owns the file format: `read_lora` / `load_pairs` / `load_weights` read every layout, `lora_keys` names
the keys of each layout and `write_lora` writes every LoRA file ltx-lora produces. It sits at the bottom layer
(files): it imports only `ltx_lora.errors`, `ltx_lora.files.atomic`, `ltx_lora.files.safetensors_header`, the standard library and, lazily,
torch / safetensors, so `model_files` (which `lora.check` imports) can use it without a cycle.
"""

from __future__ import annotations

import math
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
LORA, LOKR, LOHA = "lora", "lokr", "loha"  # adapter kinds (a module's `kind`)
# LyCORIS tensor names by kind, as ComfyUI loads them (`<module>.<name>`); Tucker cores (`lokr_t2`, `hada_t1/t2`)
# exist only for convolutions, which LTX's transformer has none of: such keys stay stray.
LYCORIS_TENSORS = {LOKR: ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b"),
                   LOHA: ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")}
_LYCORIS_KIND = {name: kind for kind, names in LYCORIS_TENSORS.items() for name in names}
# One tensor every module of that kind has exactly once: what marks the module (like a LoRA's down matrix).
_MARKERS = {"down", "lokr_w1", "lokr_w1_a", "hada_w1_b"}
DIFFUSION = "diffusion_model."
TEXT_PROJECTION = "text_embedding_projection."

_SUFFIXES = (  # (key suffix, role, naming)
    (".lora_A.default.weight", "down", "lora_A/lora_B"), (".lora_B.default.weight", "up", "lora_A/lora_B"),
    (".lora_A.weight", "down", "lora_A/lora_B"), (".lora_B.weight", "up", "lora_A/lora_B"),
    (".lora_down.weight", "down", "lora_down/lora_up"), (".lora_up.weight", "up", "lora_down/lora_up"),
    (".alpha", "alpha", None),
)

# The name parts of an adapter's tensors in peft's injected modules (`...to_q.lora_A.default.weight`,
# `...to_q.lokr_w1.default`, `...to_q.hada_w1_a.default`), as their keys in files begin: what trains, and what block
# swap leaves on the device (runtime/placement.py).
ADAPTER_PREFIXES = ("lora_", "lokr_", "hada_")


def is_adapter_parameter(name: str) -> bool:
    """Whether a parameter or module (full name) belongs to an injected adapter rather than to the frozen base."""
    return any(part.startswith(ADAPTER_PREFIXES) for part in name.split("."))


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


# Which token stream each block layer writes into (ltx-core's BasicAVTransformerBlock): audio_to_video_attn is the
# video tokens attending to the audio ones (its output is added to the video), video_to_audio_attn the reverse.
STREAMS = {"attn1": "video", "attn2": "video", "ff": "video", "audio_to_video_attn": "video",
           "audio_attn1": "audio", "audio_attn2": "audio", "audio_ff": "audio", "video_to_audio_attn": "audio"}


def module_stream(stem: str) -> str | None:
    """"video" or "audio": the tokens a transformer block's layer writes into; None outside the blocks."""
    m = _BLOCK.search(stem)
    return STREAMS.get(m.group(1)) if m and not is_text_side(stem) else None


def target_name(stem: str) -> str:
    """The module inside a block (`attn1.to_q`, `ff.net.2`) or the top-level path, for short listings."""
    return re.sub(r"^.*?transformer(?:_1d)?_blocks\.\d+\.", "", stem.removeprefix(DIFFUSION))


# --- parsed files -------------------------------------------------------------------------------------------------


@dataclass
class LoraModule:
    """One adapted layer of a file. For LoKr / LoHa, `down_key` / `up_key` are its first and second factor's
    first tensor (`lokr_w1[_a]` / `lokr_w2[_a]`, `hada_w1_a` / `hada_w2_a`) and `keys` names all of them."""

    stem: str
    down_key: str
    up_key: str
    rank: int | None  # None: a LoKr module of unsplit factors (no rank)
    in_features: int
    out_features: int
    alpha_key: str | None = None
    alpha: float | None = None
    kind: str = LORA
    keys: dict[str, str] = field(default_factory=dict)  # LyCORIS tensor name -> key
    parameters: int = 0

    @property
    def scale(self) -> float:
        """The strength the file asks for, by ComfyUI's rule: alpha / rank where an alpha is stored (and, for LoKr,
        a factor is split, which is what gives it a rank), else 1."""
        return self.alpha / self.rank if self.alpha is not None and self.rank else 1.0

    @property
    def all_keys(self) -> list[str]:
        keys = list(self.keys.values()) if self.kind != LORA else [self.down_key, self.up_key]
        return keys + ([self.alpha_key] if self.alpha_key else [])


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

    @property
    def kinds(self) -> Counter:
        return Counter(m.kind for m in self.modules.values())

    def key_of(self, key: str) -> str | None:
        """The stem a raw key belongs to."""
        for m in self.modules.values():
            if key in m.all_keys:
                return m.stem
        return None


def split_key(key: str) -> tuple[str, str | None, str | None]:
    """(module name as written, role, matrix naming) of one tensor key. Role: "down"/"up"/"alpha" for LoRA
    matrices and `.alpha`, the tensor name (`lokr_w1`, `hada_w1_a`, ...) for LyCORIS ones (naming: the kind),
    None for anything else."""
    for suffix, role, naming in _SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)], role, naming
    raw, _, last = key.rpartition(".")
    if raw and last in _LYCORIS_KIND:
        return raw, last, _LYCORIS_KIND[last]
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


def _lycoris_module(path: Path, header: SafetensorsHeader, stem: str, slot: dict[str, str],
                    kinds: set[str]) -> LoraModule | None:
    """A LoKr / LoHa module from its keys (None when it has none, or not all a linear layer needs); shapes that do
    not multiply out are a damaged file (UserError), as for LoRA pairs."""
    if len(kinds) != 1 or "down" in slot or "up" in slot:
        return None
    kind = kinds.pop()
    keys = {r: k for r, k in slot.items() if r in _LYCORIS_KIND}
    shape = {r: tuple(header.tensors[k].shape) for r, k in keys.items()}
    if any(len(v) != 2 for v in shape.values()):
        return None

    def damaged() -> UserError:
        shapes = ", ".join(f"{r} {list(v)}" for r, v in shape.items())
        return UserError(f"{path.name}: the {kind} tensors of {stem} ({shapes}) do not multiply out; the file is "
                         "damaged or not a LoRA.")

    if kind == LOHA:
        if set(keys) != set(LYCORIS_TENSORS[LOHA]):
            return None
        w1a, w1b, w2a, w2b = (shape[n] for n in LYCORIS_TENSORS[LOHA])
        if w1a[1] != w1b[0] or w2a[1] != w2b[0] or (w1a[0], w1b[1]) != (w2a[0], w2b[1]):
            raise damaged()
        return LoraModule(stem, keys["hada_w1_a"], keys["hada_w2_a"], w1b[0], w1b[1], w1a[0], kind=LOHA, keys=keys,
                          parameters=sum(a * b for a, b in shape.values()))
    factors = []  # (out, in, rank or None) of w1 and w2
    for i in ("1", "2"):
        whole, a, b = f"lokr_w{i}", f"lokr_w{i}_a", f"lokr_w{i}_b"
        if whole in keys and a not in keys and b not in keys:
            factors.append((*shape[whole], None))
        elif a in keys and b in keys and whole not in keys:
            if shape[a][1] != shape[b][0]:
                raise damaged()
            factors.append((shape[a][0], shape[b][1], shape[b][0]))
        else:
            return None
    (o1, i1, r1), (o2, i2, r2) = factors
    rank = r2 if r2 is not None else r1  # ComfyUI: the split w2's rank, else the split w1's
    return LoraModule(stem, keys.get("lokr_w1", keys.get("lokr_w1_a")), keys.get("lokr_w2", keys.get("lokr_w2_a")),
                      rank, i1 * i2, o1 * o2, kind=LOKR, keys=keys, parameters=sum(a * b for a, b in shape.values()))
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
        kinds = {_LYCORIS_KIND[r] for r in slot if r in _LYCORIS_KIND}
        if kinds or ("down" not in slot and "up" not in slot):
            module = _lycoris_module(path, header, stem, slot, kinds)
            if module is None:
                stray.extend(slot.values())
                continue
            lora.modules[stem] = module
        elif "down" not in slot or "up" not in slot:
            stray.extend(slot.values())
            continue
        else:
            down, up = header.tensors[slot["down"]], header.tensors[slot["up"]]
            if len(down.shape) != 2 or len(up.shape) != 2 or down.shape[0] != up.shape[1]:
                raise UserError(f"{path.name}: {slot['down']} {list(down.shape)} and {slot['up']} {list(up.shape)} "
                                "are not a LoRA pair (down is rank x in, up is out x rank); the file is damaged or "
                                "not a LoRA.")
            lora.modules[stem] = LoraModule(stem, slot["down"], slot["up"], down.shape[0], down.shape[1], up.shape[0],
                                            alpha_key=slot.get("alpha"), parameters=down.numel + up.numel)
        if "alpha" in slot:
            lora.modules[stem].alpha_key = slot["alpha"]
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


def load_pairs(lora: LoraFile, device: str = "cpu") -> dict[str, tuple | dict]:
    """{stem: (down, up)} tensors as stored (no scale applied); a LoKr / LoHa module's value is {tensor name:
    tensor} instead."""
    out: dict[str, tuple | dict] = {}
    with open_safetensors(lora.path, "LoRA file", _DAMAGED_LORA, device=device) as f:
        for m in lora.modules.values():
            out[m.stem] = ({n: f.get_tensor(k) for n, k in m.keys.items()} if m.kind != LORA
                           else (f.get_tensor(m.down_key), f.get_tensor(m.up_key)))
    return out


_split_key = split_key  # older spelling, still used by tests/test_lora_tools.py


def is_lora(header: SafetensorsHeader) -> bool:
    """Whether any tensor of the file is a LoRA down matrix or marks a LoKr / LoHa module (in any layout, even one
    we cannot map)."""
    return any(split_key(k)[1] in _MARKERS for k in header.tensors)


def down_modules(header: SafetensorsHeader) -> dict[str, str]:
    """{down key: module name as written} for every LoRA down matrix in the header, whatever its layout (also names
    no layout here maps, e.g. another model's LoRA): what `ltx-lora inspect` describes before any mapping. LoKr and
    LoHa modules are named by their marker (`lokr_w1[_a]`, `hada_w1_b`: the latter is rank x in like a down)."""
    out = {}
    for key in header.tensors:
        raw, role, _ = split_key(key)
        if role in _MARKERS:
            out[key] = raw
    return out


def marker_dims(header: SafetensorsHeader, key: str) -> tuple[str, int | None, int]:
    """(kind, rank or None, in_features) of the module a `down_modules` key marks: a LoRA down (and LoHa's
    hada_w1_b) is rank x in; a LoKr module's width is the product of its factors' (rank: its split factor's)."""
    raw, role, _ = split_key(key)
    shape = tuple(header.tensors[key].shape)
    if role == "down" or role == "hada_w1_b":
        return (LOHA if role == "hada_w1_b" else LORA), shape[0], shape[-1]
    dims = {n: tuple(header.tensors[f"{raw}.{n}"].shape) for n in LYCORIS_TENSORS[LOKR]
            if f"{raw}.{n}" in header.tensors}
    width, rank = 1, None
    for i in ("1", "2"):
        whole, b = dims.get(f"lokr_w{i}"), dims.get(f"lokr_w{i}_b")
        width *= whole[-1] if whole else (b[-1] if b else 0)
        rank = b[0] if b else rank
    return LOKR, rank, width


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


def kron_linear(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """x @ kron(w1, w2)^T without building the Kronecker product (out x in: 16.8M elements for a 4,096-wide layer).

    With kron's index order (row i1 * a2 + i2, column j1 * b2 + j2) the product is two small contractions of the
    input viewed as [tokens, b1, b2], for w1 [a1, b1] and w2 [a2, b2]: y[t, i1, i2] = sum_j1,j2 w1[i1, j1]
    x[t, j1, j2] w2[i2, j2], T * in * (a1 + a2) multiply-adds instead of T * in * out."""
    import torch

    (a1, b1), (a2, b2) = w1.shape, w2.shape
    z = x.reshape(-1, b1, b2) @ w2.t()  # [T, b1, a2]
    return torch.einsum("ij,tjk->tik", w1, z).reshape(*x.shape[:-1], a1 * a2)


def hadamard_linear(x: torch.Tensor, w1a: torch.Tensor, w1b: torch.Tensor, w2a: torch.Tensor,
                    w2b: torch.Tensor) -> torch.Tensor:
    """x @ ((w1a @ w1b) * (w2a @ w2b))^T (LoHa's change, w_a [out, r], w_b [r, in]), without building the out x in
    change where that is cheaper.

    The Hadamard product of two rank-r matrices is one of rank r * r: L @ K with L[i, (p, q)] = w1a[i, p] w2a[i, q]
    and K[(p, q), j] = w1b[p, j] w2b[q, j]. x @ K^T @ L^T costs T * r^2 * (in + out) multiply-adds against
    T * in * out for the built change: fewer while r^2 * (in + out) < in * out (r = 32 on a 4,096-wide layer: half);
    otherwise the change is built and applied as it is."""
    import torch.nn.functional as F

    (out, r1), (_, r2), inp = w1a.shape, w2a.shape, w1b.shape[1]
    if r1 * r2 * (inp + out) >= inp * out:
        return F.linear(x, (w1a @ w1b) * (w2a @ w2b))
    k = (w1b[:, None, :] * w2b[None, :, :]).reshape(r1 * r2, inp)
    lo = (w1a[:, :, None] * w2a[:, None, :]).reshape(out, r1 * r2)
    return F.linear(F.linear(x, k), lo)


@dataclass
class LycorisWeights:
    """A LoKr or LoHa module's tensors (names as in `LYCORIS_TENSORS`) and the strength its file asks for (ComfyUI's
    rule, `LoraModule.scale`). The layer gains `scale * ` kron(w1, w2) (LoKr; w = w_a @ w_b where split) or
    (w1_a @ w1_b) * (w2_a @ w2_b) (LoHa)."""

    kind: str
    tensors: dict[str, torch.Tensor]
    scale: float = 1.0

    def product(self, device=None) -> torch.Tensor:
        """The weight change before any scale (out x in), in float32."""
        import torch

        if self.kind == LOHA:
            t = {n: v.to(device=device, dtype=torch.float32) for n, v in self.tensors.items()}
            return (t["hada_w1_a"] @ t["hada_w1_b"]) * (t["hada_w2_a"] @ t["hada_w2_b"])
        return torch.kron(*self.lokr_factors(device))

    def loha_factors(self, device=None) -> tuple[torch.Tensor, ...]:
        """LoHa's (w1_a, w1_b, w2_a, w2_b) in float32: the change is (w1_a @ w1_b) * (w2_a @ w2_b)."""
        import torch

        return tuple(self.tensors[n].to(device=device, dtype=torch.float32)
                     for n in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"))

    def lokr_factors(self, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """LoKr's (w1, w2) before any scale, split factors multiplied out, in float32: the change is kron(w1, w2)."""
        import torch

        t = {n: v.to(device=device, dtype=torch.float32) for n, v in self.tensors.items()}
        w1, w2 = (t[f"lokr_w{i}"] if f"lokr_w{i}" in t else t[f"lokr_w{i}_a"] @ t[f"lokr_w{i}_b"] for i in "12")
        return w1, w2

    def delta(self, strength: float = 1.0, device=None) -> torch.Tensor:
        """The weight change `strength * scale * product` (out x in), in float32."""
        return self.product(device) * (strength * self.scale)

    def folded(self) -> LycorisWeights:
        """The same change at scale 1: the scale multiplied into one factor (`lokr_w1` or `lokr_w1_b`,
        `hada_w1_b`), so a file without `.alpha` applies it."""
        name = {LOHA: "hada_w1_b"}.get(self.kind, "lokr_w1" if "lokr_w1" in self.tensors else "lokr_w1_b")
        t = dict(self.tensors)
        t[name] = (t[name].float() * self.scale).to(t[name].dtype)
        return LycorisWeights(self.kind, t, 1.0)


def first_damaged(weights: dict[str, LoraPair | LycorisWeights | tuple[torch.Tensor, torch.Tensor]]) -> str | None:
    """The first module whose tensors or strength hold NaN or infinite values (None: all finite). One damaged
    module makes every merged, mixed, resized or continued result NaN: the tools refuse the file with its name.
    Takes `load_weights`' modules or `lora convert`'s (down, up) pairs with the strength folded in."""
    import torch

    for stem, m in weights.items():
        if isinstance(m, LycorisWeights):
            tensors, scale = m.tensors.values(), m.scale
        else:
            tensors, scale = ((m.down, m.up), m.scale) if isinstance(m, LoraPair) else (m, 1.0)
        if not math.isfinite(scale) or not all(bool(torch.isfinite(t).all()) for t in tensors):
            return stem
    return None


def load_weights(lora: LoraFile, device: str = "cpu") -> dict[str, LoraPair | LycorisWeights]:
    """{stem: LoraPair or LycorisWeights} of a parsed file: the one way attach, merge and verify get a module's
    tensors and scale; `.delta()` is its weight change either way."""
    out: dict[str, LoraPair | LycorisWeights] = {}
    for stem, value in load_pairs(lora, device).items():
        m = lora.modules[stem]
        out[stem] = LycorisWeights(m.kind, value, m.scale) if m.kind != LORA else LoraPair(*value, m.scale)
    return out


# --- writing ------------------------------------------------------------------------------------------------------


LYCORIS_LAYOUTS = (COMFYUI, BARE, KOHYA)  # where ComfyUI finds LoKr / LoHa keys; diffusers and peft have none


def lora_tensors(modules: dict[str, tuple[torch.Tensor, torch.Tensor] | LycorisWeights], *, layout: str = COMFYUI,
                 alphas: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
    """The state dict of `{stem: (down, up)}` (or `{stem: LycorisWeights}`: its tensors under `<module>.<name>`) in
    `layout`, with a `.alpha` scalar for every stem in `alphas`. Raises UserError when a module has no name in that
    layout (kohya has none for the text side, diffusers and peft none for LoKr / LoHa)."""
    import torch

    out: dict[str, torch.Tensor] = {}
    for stem, value in modules.items():
        lycoris = isinstance(value, LycorisWeights)
        if lycoris and layout not in LYCORIS_LAYOUTS:
            raise UserError(f"{value.kind} modules have no {layout} layout (its loaders read lora_A/lora_B only); "
                            "write this file as comfyui or kohya.")
        try:
            key_down, key_up, key_alpha = lora_keys(stem, layout)
        except ValueError:
            raise UserError(f"{stem} has no name in the {layout} layout; write this LoRA as comfyui or diffusers "
                            "instead.") from None
        if lycoris:
            name = module_key(stem, layout)
            for tensor_name, t in value.tensors.items():
                out[f"{name}.{tensor_name}"] = t.contiguous()
            dtype = next(iter(value.tensors.values())).dtype
        else:
            down, up = value
            out[key_down], out[key_up] = down.contiguous(), up.contiguous()
            dtype = up.dtype
        if alphas and alphas.get(stem) is not None:  # in the module's dtype, as kohya writes it; a float one always
            out[key_alpha] = torch.tensor(alphas[stem], dtype=dtype if dtype.is_floating_point else torch.float32)
    return out


def write_lora(path: str | Path, modules: dict[str, tuple[torch.Tensor, torch.Tensor] | LycorisWeights], *,
               layout: str = COMFYUI, alphas: dict[str, float] | None = None, metadata: dict[str, str] | None = None) -> Path:
    """Write `{stem: (down, up)}` as a LoRA file in `layout` (see `lora_tensors`), atomically."""
    return write_lora_tensors(path, lora_tensors(modules, layout=layout, alphas=alphas), metadata)


def write_lora_tensors(path: str | Path, tensors: dict[str, torch.Tensor],
                       metadata: dict[str, str] | None = None) -> Path:
    """Write a state dict named by `lora_tensors` (e.g. the training export) atomically: readers see the old
    file or the complete new one, never a partial one."""
    return atomic_save_safetensors(tensors, path, metadata)
