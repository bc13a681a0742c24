"""The preprocessing cache: what `ltx-lora preprocess` writes and training reads.

    CACHE/latents/<key>.safetensors   video [128, F', H', W'] (+ audio [8, T, 16]); header: item facts as JSON
    CACHE/text/<sha256 of text>.safetensors
                                      video_features [L, D] (+ audio_features [L, Da]) trimmed to the real
                                      token count L; header: padded_length, padding_side, the text
    CACHE/manifest.json               settings + model identity + the list of items (written last, atomically)

Text features are stored trimmed and padded back when loaded, so a 20-token caption costs 20 rows, not 1,024.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ltx_lora.errors import UserError

MANIFEST = "manifest.json"
FORMAT = "ltx-lora-cache-1"


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass
class CacheItem:
    latents: str  # relative path under the cache
    text: str  # relative path of the caption's features
    bucket: str  # WxHxF
    fps: float
    has_audio: bool
    media: str = ""
    caption: str = ""


@dataclass
class Manifest:
    settings: dict  # buckets, fps, model identity ... (a changed setting means a stale cache)
    items: list[CacheItem] = field(default_factory=list)
    prompts: dict[str, str] = field(default_factory=dict)  # validation prompt -> text file
    format: str = FORMAT


def atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    tmp.replace(path)


def write_text_features(cache: Path, text: str, video: torch.Tensor, audio: torch.Tensor | None,
                        padded_length: int, padding_side: str) -> str:
    """Store features [L_real, D] already trimmed; return the relative path."""
    rel = f"text/{text_key(text)}.safetensors"
    tensors = {"video_features": video}
    if audio is not None:
        tensors["audio_features"] = audio
    atomic_save(tensors, cache / rel, {"padded_length": str(padded_length), "padding_side": padding_side,
                                       "text": text})
    return rel


def pad_features(features: torch.Tensor, padded_length: int, padding_side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """[L, D] -> ([padded_length, D] with zeros where the tokenizer padded, mask [padded_length] 0/1)."""
    real = features.shape[0]
    if real > padded_length:
        raise ValueError(f"{real} tokens do not fit a padded length of {padded_length}")
    pad = features.new_zeros(padded_length - real, features.shape[1])
    mask = torch.zeros(padded_length, dtype=torch.int64)
    if padding_side == "left":
        mask[padded_length - real:] = 1
        return torch.cat([pad, features]), mask
    mask[:real] = 1
    return torch.cat([features, pad]), mask


def read_text_features(cache: Path, rel: str) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(video_features [P, D], audio_features [P, Da] or None, mask [P]) padded back to the stored length."""
    with safe_open(str(cache / rel), framework="pt") as f:
        meta = f.metadata()
        video = f.get_tensor("video_features")
        audio = f.get_tensor("audio_features") if "audio_features" in f.keys() else None
    length, side = int(meta["padded_length"]), meta["padding_side"]
    video, mask = pad_features(video, length, side)
    if audio is not None:
        audio, _ = pad_features(audio, length, side)
    return video, audio, mask


def write_latents(cache: Path, key: str, video: torch.Tensor, audio: torch.Tensor | None, facts: dict) -> str:
    rel = f"latents/{key}.safetensors"
    tensors = {"video": video}
    if audio is not None:
        tensors["audio"] = audio
    atomic_save(tensors, cache / rel, {"facts": json.dumps(facts)})
    return rel


def read_latents(cache: Path, rel: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    with safe_open(str(cache / rel), framework="pt") as f:
        video = f.get_tensor("video")
        audio = f.get_tensor("audio") if "audio" in f.keys() else None
    return video, audio


def write_manifest(cache: Path, manifest: Manifest) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{MANIFEST}.tmp"
    data = asdict(manifest)
    tmp.write_text(json.dumps(data, indent=1))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    tmp.replace(cache / MANIFEST)


def read_manifest(cache: Path) -> Manifest:
    path = cache / MANIFEST
    if not path.is_file():
        raise UserError(f"no preprocessed data in {cache} (no {MANIFEST}); run `ltx-lora preprocess CONFIG` first.")
    data = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        raise UserError(f"{path} was written by another ltx-lora version; run `ltx-lora preprocess CONFIG` again.")
    return Manifest(settings=data["settings"], items=[CacheItem(**i) for i in data["items"]],
                    prompts=data.get("prompts", {}), format=data["format"])
