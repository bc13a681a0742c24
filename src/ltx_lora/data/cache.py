"""The preprocessing cache: what `ltx-lora preprocess` writes and training reads.

    CACHE/latents/<key>.safetensors   video [128, F', H', W'] (+ audio [8, T, 16]) (+ masked-loss weights:
                                      video_loss_weight [F', H', W'], audio_loss_weight [T]); header: item facts
    CACHE/text/<sha256 of text>.safetensors
                                      pre-connector features trimmed to the real tokens (ltx_lora.files.text_features)
    CACHE/manifest.json               settings + model identity + the list of items (written last, atomically)

Text features are stored trimmed and padded back when loaded, so a 20-token caption costs 20 rows, not 1,024.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ltx_lora.errors import UserError
from ltx_lora.files.atomic import atomic_save_safetensors, atomic_write
from ltx_lora.files.safetensors_header import NotSafetensors, open_safetensors, read_header
from ltx_lora.files.text_features import TextFeatures, load_text_features, save_text_features
from ltx_lora.paths import read_user_text

MANIFEST = "manifest.json"
VIDEO_LOSS_WEIGHT, AUDIO_LOSS_WEIGHT = "video_loss_weight", "audio_loss_weight"
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


def made_for_another_model(manifest: Manifest, checkpoint: str | Path) -> bool:
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


def intact(path: Path) -> bool:
    """Whether a cache file exists and its safetensors header is whole (costs one header read). Preprocess reuses
    only intact files, so a damaged one (a disk error, a copy cut short) is encoded again, not trusted."""
    try:
        read_header(path)
    except (NotSafetensors, UserError, OSError):
        return False
    return True


# What a damaged cache file asks of the user: preprocess re-encodes an entry whose file it cannot read.
REENCODE = "run `ltx-lora preprocess` with this config again (it re-encodes what is damaged)"


def read_text(cache: Path, rel: str) -> TextFeatures:
    return load_text_features(cache / rel, fix=REENCODE)


def write_latents(cache: Path, key: str, video: torch.Tensor, audio: torch.Tensor | None, facts: dict,
                  weights: dict[str, torch.Tensor] | None = None) -> str:
    """`weights`: the masked-loss weights ({VIDEO_LOSS_WEIGHT: [F', H', W'], AUDIO_LOSS_WEIGHT: [T]}), if any."""
    rel = f"latents/{key}.safetensors"
    tensors = {"video": video, **{k: w.float().contiguous() for k, w in (weights or {}).items()}}
    if audio is not None:
        tensors["audio"] = audio
    atomic_save_safetensors(tensors, cache / rel, {"facts": json.dumps(facts)})
    return rel


# Dimensions of each tensor of a latents file: a file that loads but holds other shapes is damaged too.
_LATENT_DIMS = {"video": 4, "audio": 3, VIDEO_LOSS_WEIGHT: 3, AUDIO_LOSS_WEIGHT: 1}


def _latent_tensors(cache: Path, rel: str, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The tensors `names` (those present) of a latents file, checked; a damaged file is one UserError."""
    path = cache / rel
    with open_safetensors(path, "cached latents file", REENCODE) as f:
        keys = set(f.keys())
        if "video" not in keys:
            raise UserError(f"cached latents file {path} has no video latents: {REENCODE}.")
        out = {k: f.get_tensor(k) for k in names if k in keys}
    for k, t in out.items():
        if t.dim() != _LATENT_DIMS[k] or not t.is_floating_point():
            raise UserError(f"cached latents file {path} holds {k} of shape {list(t.shape)} ({t.dtype}), not "
                            f"{_LATENT_DIMS[k]}-D float latents: {REENCODE}.")
    return out


def read_latents(cache: Path, rel: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    t = _latent_tensors(cache, rel, ("video", "audio"))
    return t["video"], t.get("audio")


def read_loss_weights(cache: Path, rel: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(video [F', H', W'], audio [T]) masked-loss weights of an entry; None where the clip has none."""
    t = _latent_tensors(cache, rel, (VIDEO_LOSS_WEIGHT, AUDIO_LOSS_WEIGHT))
    return t.get(VIDEO_LOSS_WEIGHT), t.get(AUDIO_LOSS_WEIGHT)


def write_manifest(cache: Path, manifest: Manifest) -> None:
    atomic_write(cache / MANIFEST, json.dumps(asdict(manifest), indent=1))


def read_manifest(cache: Path) -> Manifest:
    path = cache / MANIFEST
    if not path.is_file():
        raise UserError(f"no preprocessed data in {cache} (no {MANIFEST}); run `ltx-lora preprocess CONFIG` first.")
    damaged = f"the cache manifest {path} is damaged"
    try:
        data = json.loads(read_user_text(path, "cache manifest", fix=REENCODE))
    except (ValueError, RecursionError):
        raise UserError(f"{damaged} (not JSON): {REENCODE}.") from None
    if not isinstance(data, dict):
        raise UserError(f"{damaged} (not a JSON object): {REENCODE}.")
    if data.get("format") != FORMAT:
        raise UserError(f"{path} was written by another ltx-lora version; run `ltx-lora preprocess CONFIG` again.")
    try:
        items = [CacheItem(**i) for i in data["items"]]
        manifest = Manifest(settings=data["settings"], items=items, prompts=data.get("prompts", {}),
                            format=data["format"])
    except (KeyError, TypeError) as e:
        raise UserError(f"{damaged} ({type(e).__name__}: {e}): {REENCODE}.") from None
    ok = (isinstance(manifest.settings, dict) and isinstance(manifest.prompts, dict)
          and all(isinstance(v, str) for v in manifest.prompts.values())
          and all(_item_ok(i) for i in manifest.items))
    if not ok:
        raise UserError(f"{damaged} (a value of the wrong type): {REENCODE}.")
    return manifest


def _item_ok(item: CacheItem) -> bool:
    """Whether a manifest entry holds what preprocess writes: relative paths inside the cache, a bucket, numbers."""
    paths_ok = all(isinstance(p, str) and p and not Path(p).is_absolute() and ".." not in Path(p).parts
                   for p in (item.latents, item.text))
    number = (int, float)
    return (paths_ok and isinstance(item.bucket, str) and isinstance(item.fps, number) and math.isfinite(item.fps)
            and item.fps > 0 and isinstance(item.has_audio, bool) and isinstance(item.loss_weight, number)
            and math.isfinite(item.loss_weight) and item.loss_weight >= 0
            and isinstance(item.media, str) and isinstance(item.caption, str))
