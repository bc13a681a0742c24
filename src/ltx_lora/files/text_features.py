"""Cached text features: Gemma's projected features for one prompt, stored trimmed to the real token count.

What is cached (the same stage the official trainer caches): the OUTPUT of ltx-core's feature extractor (the
checkpoint's `text_embedding_projection`: per-token RMS norm over Gemma's 49 hidden-state layers, then one linear
per modality), BEFORE the frozen text connectors. The connectors run in every training step.

The tokenizer pads every prompt to 1,024 tokens (left padding), and the connectors need that padded layout: they
replace padded positions with learnable registers tiled to the sequence length, so the padded length changes
the result and must be the one inference uses (1,024). Storing all 1,024 rows would cost ~12 MB per caption in
bf16 on the real model; we store only the n real rows plus the one row the projection gives at every padded
position (its bias), and `pad_features` rebuilds the padded layout exactly.

Pure torch + safetensors: importing this module does not import ltx-core or transformers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from ltx_lora.errors import UserError
from ltx_lora.files.atomic import atomic_save_safetensors
from ltx_lora.files.safetensors_header import open_safetensors

PaddingSide = Literal["left", "right"]
FORMAT = "ltx-lora.text-features.v1"


@dataclass
class TextFeatures:
    """One prompt's pre-connector features, trimmed to its real tokens."""

    video: torch.Tensor  # [n, D_video]: features of the n real tokens, in token order
    audio: torch.Tensor | None  # [n, D_audio], or None for a video-only checkpoint
    video_pad: torch.Tensor  # [D_video]: what the projection outputs at a padded position
    audio_pad: torch.Tensor | None  # [D_audio]
    padded_length: int  # the tokenizer's padded length (1,024 for LTX)
    padding_side: PaddingSide  # where the tokenizer put the padding ("left" for LTX's Gemma tokenizer)
    truncated: bool = False  # the prompt had more tokens than padded_length and was cut

    @property
    def num_tokens(self) -> int:
        return int(self.video.shape[0])

    def __post_init__(self) -> None:
        if self.video.ndim != 2 or self.video_pad.shape != self.video.shape[1:]:
            raise ValueError(f"video features {tuple(self.video.shape)} / pad row {tuple(self.video_pad.shape)} "
                             "do not fit together")
        if (self.audio is None) != (self.audio_pad is None):
            raise ValueError("audio features and audio pad row must both be given or both be None")
        if self.audio is not None and (self.audio.shape[0] != self.video.shape[0]
                                       or self.audio_pad.shape != self.audio.shape[1:]):
            raise ValueError(f"audio features {tuple(self.audio.shape)} do not match video {tuple(self.video.shape)}")
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}")
        if self.num_tokens > self.padded_length:
            raise ValueError(f"{self.num_tokens} tokens do not fit a padded length of {self.padded_length}")


@dataclass
class PaddedText:
    """Features in the padded layout the connectors take: [L, D] each, mask [L] (1 = real token)."""

    video: torch.Tensor
    audio: torch.Tensor | None
    mask: torch.Tensor


def _pad(rows: torch.Tensor, pad_row: torch.Tensor, length: int, side: PaddingSide) -> torch.Tensor:
    pad = pad_row.to(rows.dtype).expand(length - rows.shape[0], -1)
    return torch.cat([pad, rows] if side == "left" else [rows, pad])


def pad_features(feat: TextFeatures, length: int | None = None) -> PaddedText:
    """Rebuild the padded layout (default: the tokenizer's own length); trim-then-pad equals the untrimmed output."""
    length = feat.padded_length if length is None else length
    n = feat.num_tokens
    if length < n:
        raise ValueError(f"cannot pad {n} tokens to a shorter length {length}")
    mask = torch.zeros(length, dtype=torch.int64)
    if feat.padding_side == "left":
        mask[length - n:] = 1
    else:
        mask[:n] = 1
    audio = None if feat.audio is None else _pad(feat.audio, feat.audio_pad, length, feat.padding_side)
    return PaddedText(_pad(feat.video, feat.video_pad, length, feat.padding_side), audio, mask)


def pad_batch(feats: list[TextFeatures], length: int | None = None) -> PaddedText:
    """Stack several prompts padded to one length: video [B, L, D], audio [B, L, Da] or None, mask [B, L]."""
    if not feats:
        raise ValueError("pad_batch needs at least one prompt")
    length = max(f.padded_length for f in feats) if length is None else length
    padded = [pad_features(f, length) for f in feats]
    audio = None if any(p.audio is None for p in padded) else torch.stack([p.audio for p in padded])
    return PaddedText(torch.stack([p.video for p in padded]), audio, torch.stack([p.mask for p in padded]))


def save_text_features(feat: TextFeatures, path: str | Path, extra: dict[str, str] | None = None) -> Path:
    """Write one prompt's features to a safetensors file (atomically: temp file, then rename)."""
    path = Path(path)
    tensors = {"video": feat.video, "video_pad": feat.video_pad}
    if feat.audio is not None:
        tensors |= {"audio": feat.audio, "audio_pad": feat.audio_pad}
    meta = {"format": FORMAT, "padded_length": str(feat.padded_length), "padding_side": feat.padding_side,
            "truncated": json.dumps(feat.truncated), **(extra or {})}
    return atomic_save_safetensors(tensors, path, meta)


def load_text_features(path: str | Path, fix: str = "encode the text again") -> TextFeatures:
    """Read a file written by `save_text_features`; a damaged one is one UserError naming it and `fix`."""
    with open_safetensors(path, "text-features file", fix) as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise UserError(f"{path} is not a text-features file ({FORMAT}): {fix}.")
        t = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is no dict
    try:
        feat = TextFeatures(video=t["video"], audio=t.get("audio"), video_pad=t["video_pad"],
                            audio_pad=t.get("audio_pad"), padded_length=int(meta["padded_length"]),
                            padding_side=meta["padding_side"], truncated=json.loads(meta.get("truncated", "false")))
    except (KeyError, ValueError) as e:
        raise UserError(f"text-features file {path} is damaged ({type(e).__name__}: {e}): {fix}.") from None
    if feat.video.dim() != 2 or (feat.audio is not None and feat.audio.dim() != 2) or feat.padding_side not in (
            "left", "right"):
        raise UserError(f"text-features file {path} holds features of another shape than "
                        f"[tokens, width]: {fix}.")
    return feat
