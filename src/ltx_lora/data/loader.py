"""Batches from the preprocessing cache, in an order that resumes exactly.

Items are grouped by bucket (and frame rate) and every batch comes from one group (shapes must match); each bucket has its own
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
from ltx_lora.data.cache import CacheItem, Manifest, read_latents, read_loss_weights, read_text
from ltx_lora.errors import UserError
from ltx_lora.files.text_features import PaddedText, pad_batch

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


@dataclass
class BatchOrder:
    items: list[CacheItem]
    batch_size: int
    seed: int
    token_budget: int | None = None
    epoch: int = 0
    index: int = 0
    world_size: int = 1  # batches are global: world_size x the per-process size

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        by_bucket: dict[str, list[int]] = {}
        for i in torch.randperm(len(self.items), generator=gen).tolist():
            # fps is part of the group: positions and the audio length depend on it
            by_bucket.setdefault((self.items[i].bucket, self.items[i].fps), []).append(i)
        batches = []
        for bucket, fps in sorted(by_bucket):
            idx = by_bucket[(bucket, fps)]
            size = batch_size_for(parse_buckets(bucket)[0], batch_size=self.batch_size,
                                  token_budget=self.token_budget) * self.world_size
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
    """Tensors of one batch as cached (text still before the connectors)."""

    video: torch.Tensor
    audio: torch.Tensor | None
    text: PaddedText  # [B, L, D] features in the tokenizer's padded layout, mask [B, L]
    fps: float
    loss_weight: torch.Tensor | None = None  # [B] float32 per-clip loss weights; None = all 1
    video_weight: torch.Tensor | None = None  # [B, F', H', W'] masked-loss weights; None: no item has a mask
    audio_weight: torch.Tensor | None = None  # [B, T]; None: no item has audio_loss_ranges (or no audio)


def load_batch(cache: Path, items: list[CacheItem], device: torch.device, dtype: torch.dtype,
               with_audio: bool, texts: list[str] | None = None) -> RawBatch:
    """One batch's tensors; `texts`: the text features to use instead of the items' captions (see text_files)."""
    latents = [read_latents(cache, item.latents) for item in items]
    audios = [a for _, a in latents]
    use_audio = with_audio and all(a is not None for a in audios)
    weights = [read_loss_weights(cache, item.latents) for item in items]
    video_weight = audio_weight = None
    if any(v is not None for v, _ in weights):  # items without a mask weigh 1 everywhere
        video_weight = torch.stack([v if v is not None else torch.ones(lat.shape[1:]) for (v, _), (lat, _) in
                                    zip(weights, latents)]).to(device=device, dtype=torch.float32)
    if use_audio and any(a is not None for _, a in weights):
        audio_weight = torch.stack([a if a is not None else torch.ones(aud.shape[1]) for (_, a), aud in
                                    zip(weights, audios)]).to(device=device, dtype=torch.float32)
    return RawBatch(
        video=torch.stack([v for v, _ in latents]).to(device=device, dtype=dtype),
        audio=torch.stack(audios).to(device=device, dtype=dtype) if use_audio else None,
        text=pad_batch([read_text(cache, rel) for rel in (texts or [item.text for item in items])]),
        fps=float(items[0].fps),
        loss_weight=(torch.tensor([float(i.loss_weight) for i in items], dtype=torch.float32, device=device)
                     if any(i.loss_weight != 1 for i in items) else None),
        video_weight=video_weight,
        audio_weight=audio_weight,
    )
