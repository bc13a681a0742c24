"""The preprocessing cache: what `ltx-lora preprocess` writes and training reads.

    CACHE/latents/<key>.safetensors   one clip's tensors, each present only when the task and the clip have it:
                                      video [128, F', H', W'] (absent when the task has no video), audio [8, T, 16],
                                      reference_video [128, Fr, Hr, Wr], reference_audio [8, Tr, 16] (IC-LoRA),
                                      video_condition_mask [F', H', W'], audio_condition_mask [T] (mask condition),
                                      video_loss_weight [F', H', W'], audio_loss_weight [T] (masked loss);
                                      header: item facts
    CACHE/text/<sha256 of text>.safetensors
                                      pre-connector features trimmed to the real tokens (ltx_lora.files.text_features)
    CACHE/manifest.json               settings + model identity + the list of items (written last, atomically)

Text features are stored trimmed and padded back when loaded, so a 20-token caption costs 20 rows, not 1,024.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from ltx_lora.errors import UserError
from ltx_lora.files.atomic import atomic_save_safetensors, atomic_write
from ltx_lora.files.text_features import TextFeatures, load_text_features, save_text_features

MANIFEST = "manifest.json"
VIDEO, AUDIO = "video", "audio"
VIDEO_LOSS_WEIGHT, AUDIO_LOSS_WEIGHT = "video_loss_weight", "audio_loss_weight"
REFERENCE_VIDEO, REFERENCE_AUDIO = "reference_video", "reference_audio"
VIDEO_CONDITION_MASK, AUDIO_CONDITION_MASK = "video_condition_mask", "audio_condition_mask"
FORMAT = "ltx-lora-cache-1"


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


MODEL_CONTENT = ("size", "header_sha")  # what a model identity compares: the file's content, not its name


def model_identity(checkpoint: str | Path) -> dict:
    """Name, size and a hash of the safetensors header: changes when the model file does, costs no tensor read.
    The name is kept for people; caches compare the content (`MODEL_CONTENT`) only, so a renamed or copied file
    still fits its cache."""
    path = Path(checkpoint)
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = f.read(min(n, 64 << 20))
    return {"name": path.name, "size": path.stat().st_size, "header_sha": hashlib.sha256(header).hexdigest()[:16]}


def model_content(identity: dict) -> dict:
    return {k: identity.get(k) for k in MODEL_CONTENT}


def made_for_another_model(manifest: "Manifest", checkpoint: str | Path) -> bool:
    """Whether the cache was encoded with another model file than `checkpoint` (by content; a cache from before
    identities were recorded is judged by the file name)."""
    identity = manifest.settings.get("model_identity")
    if identity:
        return model_content(identity) != model_content(model_identity(checkpoint))
    made_for = manifest.settings.get("checkpoint")
    return bool(made_for) and Path(made_for).name != Path(checkpoint).name


@dataclass
class CacheItem:
    latents: str  # relative path under the cache
    text: str  # relative path of the caption's features
    bucket: str  # WxHxF
    fps: float
    has_audio: bool
    media: str = ""
    caption: str = ""
    loss_weight: float = 1.0  # the dataset file's loss_weight column (scales this clip's loss)
    has_video: bool = True  # False for tasks without video (video role off): the entry holds no video latents
    audio_steps: int = 0  # audio latent steps T (0: no audio); video-off items batch by it
    has_reference: bool = False  # the entry holds the reference latents the task's reference condition reads
    has_mask: bool = False  # the entry holds the condition masks the task's mask condition reads

    @property
    def group(self) -> tuple:
        """Items of one group share every tensor shape (and positions): a batch never mixes groups. Video-off
        items share a shape when their audio length is the same, whatever bucket their source was placed in."""
        return (self.bucket, self.fps) if self.has_video else ("audio", self.audio_steps)


@dataclass
class Manifest:
    settings: dict  # buckets, fps, model identity ... (a changed setting means a stale cache)
    items: list[CacheItem] = field(default_factory=list)
    prompts: dict[str, str] = field(default_factory=dict)  # validation prompt -> text file
    format: str = FORMAT


def text_file(text: str) -> str:
    return f"text/{text_key(text)}.safetensors"


def write_text(cache: Path, text: str, features: TextFeatures) -> str:
    """Store one text's trimmed features (see ltx_lora.files.text_features); return the relative path."""
    rel = text_file(text)
    save_text_features(features, cache / rel, extra={"text": text})
    return rel


def read_text(cache: Path, rel: str) -> TextFeatures:
    return load_text_features(cache / rel)


def write_latents(cache: Path, key: str, video: torch.Tensor | None, audio: torch.Tensor | None, facts: dict,
                  weights: dict[str, torch.Tensor] | None = None) -> str:
    """`weights`: the other tensors of the entry by name (masked-loss weights, references, condition masks)."""
    rel = f"latents/{key}.safetensors"
    tensors = {k: w.float().contiguous() for k, w in (weights or {}).items()}
    for name, t in ((VIDEO, video), (AUDIO, audio)):
        if t is not None:
            tensors[name] = t
    atomic_save_safetensors(tensors, cache / rel, {"facts": json.dumps(facts)})
    return rel


def read_entry(cache: Path, rel: str) -> dict[str, torch.Tensor]:
    """Every tensor of one cache entry by name (see the module docstring)."""
    with safe_open(str(cache / rel), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def entry_shapes(cache: Path, rel: str) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of an entry, from its header only (no tensor is read)."""
    with safe_open(str(cache / rel), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def read_latents(cache: Path, rel: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    entry = read_entry(cache, rel)
    return entry.get(VIDEO), entry.get(AUDIO)


def read_loss_weights(cache: Path, rel: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(video [F', H', W'], audio [T]) masked-loss weights of an entry; None where the clip has none."""
    with safe_open(str(cache / rel), framework="pt") as f:
        keys = set(f.keys())
        return tuple(f.get_tensor(k) if k in keys else None for k in (VIDEO_LOSS_WEIGHT, AUDIO_LOSS_WEIGHT))


def write_manifest(cache: Path, manifest: Manifest) -> None:
    atomic_write(cache / MANIFEST, json.dumps(asdict(manifest), indent=1))


def read_manifest(cache: Path) -> Manifest:
    path = cache / MANIFEST
    if not path.is_file():
        raise UserError(f"no preprocessed data in {cache} (no {MANIFEST}); run `ltx-lora preprocess CONFIG` first.")
    data = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        raise UserError(f"{path} was written by another ltx-lora version; run `ltx-lora preprocess CONFIG` again.")
    return Manifest(settings=data["settings"], items=[CacheItem(**i) for i in data["items"]],
                    prompts=data.get("prompts", {}), format=data["format"])
