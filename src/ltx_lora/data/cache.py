"""The preprocessing cache: what `ltx-lora preprocess` writes and training reads.

    CACHE/latents/<key>.safetensors   one clip's tensors, each present only when the task and the clip have it:
                                      video [128, F', H', W'] (absent when the task has no video), audio [8, T, 16],
                                      reference_video [128, Fr, Hr, Wr], reference_audio [8, Tr, 16] (IC-LoRA),
                                      video_condition_mask [F', H', W'], audio_condition_mask [T] (mask condition),
                                      video_loss_weight [F', H', W'], audio_loss_weight [T] (masked loss);
                                      header: item facts
    CACHE/text/<sha256 of text>.safetensors
                                      pre-connector features trimmed to the real tokens (ltx_lora.files.text_features):
                                      every caption, validation prompt, the negative and the empty prompt, and with
                                      train.output_preservation each caption with the trigger word replaced
    CACHE/manifest.json               settings + model identity + the list of items (written last, atomically)

Text features are stored trimmed and padded back when loaded, so a 20-token caption costs 20 rows, not 1,024.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ltx_lora.errors import UserError
from ltx_lora.files.atomic import atomic_save_safetensors, atomic_write
from ltx_lora.files.safetensors_header import NotSafetensors, open_safetensors, read_header
from ltx_lora.files.text_features import TextFeatures, load_text_features, save_text_features
from ltx_lora.paths import read_user_text

MANIFEST = "manifest.json"
VIDEO, AUDIO = "video", "audio"
VIDEO_LOSS_WEIGHT, AUDIO_LOSS_WEIGHT = "video_loss_weight", "audio_loss_weight"
REFERENCE_VIDEO, REFERENCE_AUDIO = "reference_video", "reference_audio"
VIDEO_CONDITION_MASK, AUDIO_CONDITION_MASK = "video_condition_mask", "audio_condition_mask"
FORMAT = "ltx-lora-cache-1"


def text_key(text: str, encoder: str = "") -> str:
    """`encoder`: the text encoder's identity (`text_encoder_key`); features of one text by two models differ."""
    return hashlib.sha256(f"{encoder}\0{text}".encode() if encoder else text.encode("utf-8")).hexdigest()[:32]


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


def text_encoder_key(checkpoint_identity: dict, gemma_config: Path, gemma_weights: list[Path], in_8bit: bool) -> str:
    """What cached text features depend on, by content: Gemma (its config and each weight shard's size and header),
    the checkpoint's text projection (the checkpoint's content) and 8-bit loading. One cache can then hold the
    features of several models side by side, and a text is never served with another model's features."""
    spec = {"checkpoint": model_content(checkpoint_identity),
            "gemma_config": hashlib.sha256(gemma_config.read_bytes()).hexdigest()[:16],
            "gemma_weights": [model_content(model_identity(w)) for w in gemma_weights], "in_8bit": in_8bit}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def same_path(a: str | Path, b: str | Path) -> bool:
    """Whether two spellings name one file or folder (`./x` and `x`, a symlink and its target, a `~` path)."""
    a, b = Path(a).expanduser(), Path(b).expanduser()
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them is gone: compare what they resolve to
        return os.path.realpath(a) == os.path.realpath(b)


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
    repeats: int = 1  # the dataset file's repeats column (draws of this clip in each pass over the data)
    has_video: bool = True  # False for tasks without video (video role off): the entry holds no video latents
    audio_steps: int = 0  # audio latent steps T (0: no audio); video-off items batch by it
    has_reference: bool = False  # the entry holds the reference latents the task's reference condition reads
    has_mask: bool = False  # the entry holds the condition masks the task's mask condition reads
    # train.output_preservation: the caption with the trigger word replaced by the class word, and its features
    # (relative path); "" when the cache was made without it
    preservation_caption: str = ""
    preservation_text: str = ""

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


def text_file(text: str, encoder: str = "") -> str:
    return f"text/{text_key(text, encoder)}.safetensors"


def write_text(cache: Path, text: str, features: TextFeatures, encoder: str = "") -> str:
    """Store one text's trimmed features (see ltx_lora.files.text_features); return the relative path."""
    rel = text_file(text, encoder)
    save_text_features(features, cache / rel, extra={"text": text, "text_encoder": encoder})
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


# Dimensions of each tensor an entry may hold: a file that loads but holds other shapes is damaged too.
_ENTRY_DIMS = {VIDEO: 4, AUDIO: 3, REFERENCE_VIDEO: 4, REFERENCE_AUDIO: 3, VIDEO_CONDITION_MASK: 3,
               AUDIO_CONDITION_MASK: 1, VIDEO_LOSS_WEIGHT: 3, AUDIO_LOSS_WEIGHT: 1}


def read_entry(cache: Path, rel: str) -> dict[str, torch.Tensor]:
    """Every tensor of one cache entry by name (see the module docstring), checked: a damaged file (a disk error,
    a copy cut short, tensors of other shapes) is one UserError asking for preprocess again."""
    path = cache / rel
    with open_safetensors(path, "cached latents file", REENCODE) as f:
        out = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is no dict
    if VIDEO not in out and AUDIO not in out:
        raise UserError(f"cached latents file {path} holds neither video nor audio latents: {REENCODE}.")
    for k, t in out.items():
        if k in _ENTRY_DIMS and (t.dim() != _ENTRY_DIMS[k] or not t.is_floating_point()):
            raise UserError(f"cached latents file {path} holds {k} of shape {list(t.shape)} ({t.dtype}), not "
                            f"{_ENTRY_DIMS[k]}-D float values: {REENCODE}.")
    return out


def entry_shapes(cache: Path, rel: str) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of an entry, from its header only (no tensor is read)."""
    path = cache / rel
    try:
        header = read_header(path)
    except NotSafetensors as e:
        raise UserError(f"cached latents file {path} is damaged ({e}): {REENCODE}.") from None
    return {k: t.shape for k, t in header.tensors.items()}


def read_latents(cache: Path, rel: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    entry = read_entry(cache, rel)
    return entry.get(VIDEO), entry.get(AUDIO)


def read_loss_weights(cache: Path, rel: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(video [F', H', W'], audio [T]) masked-loss weights of an entry; None where the clip has none."""
    entry = read_entry(cache, rel)
    return entry.get(VIDEO_LOSS_WEIGHT), entry.get(AUDIO_LOSS_WEIGHT)


def missing_files(manifest: Manifest, cache: Path) -> list[str]:
    """The files the manifest lists that are not in the cache (relative paths), each with what it holds."""
    listed = {i.latents: f"the latents of {i.media}" for i in manifest.items}
    listed |= {i.text: f"the text features of {i.media}'s caption" for i in manifest.items}
    listed |= {i.preservation_text: f"the text features of {i.media}'s preservation caption"
               for i in manifest.items if i.preservation_text}
    listed |= {rel: f"the text features of the prompt {text!r}" for text, rel in manifest.prompts.items()}
    return [f"{rel}: {what}" for rel, what in listed.items() if not (cache / rel).is_file()]


ENTRY_FOLDERS = ("latents", "text")  # what a cache holds besides its manifest (and its lock)


def unused_entries(cache: Path, manifest: Manifest) -> list[str]:
    """Entries on disk (relative paths) that `manifest` does not use: made for other datasets, models or settings.
    Only `--prune` removes them (preprocess never deletes what another config may need)."""
    used = ({i.latents for i in manifest.items} | {i.text for i in manifest.items}
            | {i.preservation_text for i in manifest.items if i.preservation_text} | set(manifest.prompts.values()))
    return [f"{sub}/{f.name}" for sub in ENTRY_FOLDERS if (cache / sub).is_dir()
            for f in sorted((cache / sub).glob("*.safetensors")) if f"{sub}/{f.name}" not in used]


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
                   for p in (item.latents, item.text, *([item.preservation_text] if item.preservation_text else [])))
    number = (int, float)
    return (paths_ok and isinstance(item.bucket, str) and isinstance(item.fps, number) and math.isfinite(item.fps)
            and item.fps > 0 and isinstance(item.has_audio, bool) and isinstance(item.loss_weight, number)
            and math.isfinite(item.loss_weight) and item.loss_weight >= 0
            and isinstance(item.repeats, int) and not isinstance(item.repeats, bool) and item.repeats >= 1
            and isinstance(item.media, str) and isinstance(item.caption, str)
            and isinstance(item.preservation_caption, str) and isinstance(item.preservation_text, str))
