"""Batches from the preprocessing cache, in an order that resumes exactly.

Items are grouped by bucket and frame rate (video-off items by their audio length) and every batch comes from one group (shapes must match); each bucket has its own
batch size, so stills and clips can train together without forcing batch size 1. The order of an epoch is a
pure function of (seed, epoch), and the position is (epoch, batch index): saving those two numbers is enough to
continue exactly where a killed run stopped.

With several processes every rank plans the same order of global batches (`world_size` times the per-process
batch size) and takes its own share of each (`DistEnv.share`), so 2 ranks x batch 1 see what 1 rank x batch 2
sees, and the position means the same on every rank.

Caption dropout (`train.caption_dropout`) trains a sample on the empty prompt, whose features preprocess caches
once: which samples are dropped is drawn for the whole global batch from the trainer's generator (saved in every
training checkpoint), so a resumed run drops the same samples; at 0 nothing is drawn and nothing changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ltx_lora.bucket_spec import batch_size_for, parse_buckets
from ltx_lora.data import cache as store
from ltx_lora.data.cache import CacheItem, Manifest, read_entry, read_text
from ltx_lora.errors import UserError
from ltx_lora.files.text_features import PaddedText, pad_batch
from ltx_lora.task import TaskConfig

EMPTY_PROMPT = ""  # what a dropped caption is replaced by


def empty_prompt_file(manifest: Manifest, cache: Path) -> str:
    """The cached empty prompt's features (relative path); a cache made before caption dropout has none."""
    rel = manifest.prompts.get(EMPTY_PROMPT)
    if rel is None or not (cache / rel).is_file():
        raise UserError(f"train.caption_dropout needs the empty prompt's text features, which the cache in {cache} "
                        "lacks; run `ltx-lora preprocess` with this config again (only that prompt is encoded).")
    return rel


def caption_dropout_draw(n: int, p: float, generator: torch.Generator) -> list[bool]:
    """For each of a global batch's n samples: whether it trains on the empty prompt (probability p). Nothing is
    drawn at p = 0, so runs without dropout see the generator exactly as before."""
    if p <= 0:
        return [False] * n
    return (torch.rand(n, generator=generator, device=generator.device) < p).tolist()


def text_files(items: list[CacheItem], dropped: list[bool], empty: str | None) -> list[str]:
    """The text features each sample trains on: its caption's, or the empty prompt's where dropped."""
    return [empty if drop and empty is not None else item.text for item, drop in zip(items, dropped)]


def _audio_batch_size(steps: int, batch_size: int, token_budget: int | None) -> int:
    """Video-off items: a token budget counts their audio tokens (one per audio latent step)."""
    return batch_size if token_budget is None else max(1, token_budget // max(1, steps))


@dataclass
class BatchOrder:
    """Which clips each step takes: every pass over the data (epoch) draws each clip `repeats` times (the dataset
    file's column, 1 by default) in an order drawn from the seed and the epoch, in batches of one shape; its
    position (epoch, batch) is saved with each training checkpoint, so a resumed run takes the same batches."""

    items: list[CacheItem]
    batch_size: int
    seed: int
    token_budget: int | None = None
    epoch: int = 0
    index: int = 0
    world_size: int = 1  # batches are global: world_size x the per-process size

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        by_group: dict[tuple, list[int]] = {}
        draws = [i for i, item in enumerate(self.items) for _ in range(item.repeats)]  # the dataset's repeats
        for i in (draws[k] for k in torch.randperm(len(draws), generator=gen).tolist()):
            # bucket and fps (positions and the audio length depend on it); video-off items: their audio length
            by_group.setdefault(self.items[i].group, []).append(i)
        batches = []
        for group in sorted(by_group):
            idx = by_group[group]
            first = self.items[idx[0]]
            size = (batch_size_for(parse_buckets(first.bucket)[0], batch_size=self.batch_size,
                                   token_budget=self.token_budget) if first.has_video
                    else _audio_batch_size(first.audio_steps, self.batch_size, self.token_budget)) * self.world_size
            batches += [idx[j:j + size] for j in range(0, len(idx), size)]
        order = torch.randperm(len(batches), generator=gen).tolist()
        return [batches[k] for k in order]

    def _batches(self, epoch: int) -> list[list[int]]:
        if getattr(self, "_cached_epoch", None) != epoch:  # planned once per epoch, not once per step
            self._cached, self._cached_epoch = self.epoch_batches(epoch), epoch
        return self._cached

    def next(self) -> list[int]:
        batches = self._batches(self.epoch)
        if self.index >= len(batches):
            self.epoch, self.index = self.epoch + 1, 0
            batches = self._batches(self.epoch)
        self.index += 1
        return batches[self.index - 1]

    def position(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def restore(self, position: dict) -> None:
        self.epoch, self.index = int(position["epoch"]), int(position["index"])


@dataclass
class RawBatch:
    """Tensors of one batch as cached (text still before the connectors); None = absent.

    What is present follows the task (`ltx_lora.task`): video is None when the task has no video; the reference
    latents only with a reference condition (IC-LoRA) of that modality; the condition masks only with a mask
    condition (inpainting), on the latent grid with values in [0, 1] (> 0.5: given clean)."""

    video: torch.Tensor | None  # [B, 128, F', H', W']
    audio: torch.Tensor | None  # [B, 8, T, 16]; None when the task has no audio or a clip has none
    text: PaddedText  # [B, L, D] features in the tokenizer's padded layout, mask [B, L]
    fps: float
    loss_weight: torch.Tensor | None = None  # [B] float32 per-clip loss weights; None = all 1
    video_weight: torch.Tensor | None = None  # [B, F', H', W'] masked-loss weights; None: no item has a mask
    audio_weight: torch.Tensor | None = None  # [B, T]; None: no item has audio_loss_ranges (or no audio)
    reference_video: torch.Tensor | None = None  # [B, 128, Fr, Hr, Wr] clean reference latents
    reference_audio: torch.Tensor | None = None  # [B, 8, Tr, 16]
    video_condition_mask: torch.Tensor | None = None  # [B, F', H', W'] float32 in [0, 1]
    audio_condition_mask: torch.Tensor | None = None  # [B, T] float32 in [0, 1]


def _stale(cache: Path, what: str) -> UserError:
    return UserError(f"the cache in {cache} has no {what} for the task's conditions; run `ltx-lora preprocess` "
                     "with this config again (only what is missing is encoded).")


def check_cache_for_task(cache: Path, manifest: Manifest, task: TaskConfig) -> None:
    """Refuse, before any model loads, a cache that lacks what the task reads (made for another task): one
    sentence saying to run preprocess again, which encodes only what is missing."""
    items = manifest.items
    needs = [("video latents", task.video.present, lambda i: i.has_video),
             ("reference latents", task.has_reference, lambda i: i.has_reference),
             ("condition masks", bool(task.video.find("mask") or task.audio.find("mask")), lambda i: i.has_mask),
             ("audio latents", task.audio.present and not task.video.present, lambda i: i.has_audio)]
    for what, needed, has in needs:
        if needed and not all(has(i) for i in items):
            raise _stale(cache, what)


def load_batch(cache: Path, items: list[CacheItem], device: torch.device, dtype: torch.dtype, *, task: TaskConfig,
               texts: list[str] | None = None) -> RawBatch:
    """One batch's tensors, as the task reads them; `texts`: the text features to use instead of the items'
    captions (see text_files)."""
    entries = [read_entry(cache, item.latents) for item in items]

    def stack(name: str, dt: torch.dtype, need: str | None = None) -> torch.Tensor | None:
        tensors = [e.get(name) for e in entries]
        if any(t is None for t in tensors):
            if need is not None:
                raise _stale(cache, need)
            return None
        return torch.stack(tensors).to(device=device, dtype=dt)

    video = stack(store.VIDEO, dtype, "video latents") if task.video.present else None
    audio = stack(store.AUDIO, dtype) if task.audio.present else None
    if task.audio.present and not task.video.present and audio is None:
        raise _stale(cache, "audio latents")
    video_weight = audio_weight = None
    if video is not None and any(store.VIDEO_LOSS_WEIGHT in e for e in entries):  # no mask: weight 1 everywhere
        video_weight = torch.stack([e.get(store.VIDEO_LOSS_WEIGHT, torch.ones(e[store.VIDEO].shape[1:]))
                                    for e in entries]).to(device=device, dtype=torch.float32)
    if audio is not None and any(store.AUDIO_LOSS_WEIGHT in e for e in entries):
        audio_weight = torch.stack([e.get(store.AUDIO_LOSS_WEIGHT, torch.ones(e[store.AUDIO].shape[1]))
                                    for e in entries]).to(device=device, dtype=torch.float32)
    reference_video = (stack(store.REFERENCE_VIDEO, dtype, "reference video latents")
                       if task.video.generated and task.video.find("reference") else None)
    reference_audio = (stack(store.REFERENCE_AUDIO, dtype, "reference audio latents")
                       if task.audio.generated and task.audio.find("reference") else None)
    video_mask = (stack(store.VIDEO_CONDITION_MASK, torch.float32, "video masks")
                  if task.video.generated and task.video.find("mask") else None)
    audio_mask = (stack(store.AUDIO_CONDITION_MASK, torch.float32, "audio masks")
                  if task.audio.generated and task.audio.find("mask") else None)
    return RawBatch(
        video=video,
        audio=audio,
        text=pad_batch([read_text(cache, rel) for rel in (texts or [item.text for item in items])]),
        fps=float(items[0].fps),
        loss_weight=(torch.tensor([float(i.loss_weight) for i in items], dtype=torch.float32, device=device)
                     if any(i.loss_weight != 1 for i in items) else None),
        video_weight=video_weight,
        audio_weight=audio_weight,
        reference_video=reference_video,
        reference_audio=reference_audio,
        video_condition_mask=video_mask,
        audio_condition_mask=audio_mask,
    )
