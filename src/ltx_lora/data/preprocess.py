"""`ltx-lora preprocess`: clips -> cached video/audio latents, captions and prompts -> cached text features.

A cache entry's name is a hash of the media content, its bucket and frame rate, the model file's content (size and
header hash, not its name: a renamed or copied model file keeps its cache) and the cache format, so a re-run skips what is done, redoes what changed, and a killed run resumes where it stopped (each
entry is written atomically). Gemma loads once, only when some text is not cached yet, and never during training.
Bad clips never stop the run: each is skipped with its reason, and the run ends with used / skipped counts.

Under torchrun each process encodes its share of what is missing into the shared cache folder; after a barrier
rank 0 writes the manifest. Entry names do not depend on the number of processes, so any later run, with any
number of GPUs, finds the same cache.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ltx_lora.bucket_spec import parse_buckets
from ltx_lora.config import Config
from ltx_lora.data import cache as store
from ltx_lora.data.caption import preservation_caption
from ltx_lora.data.condition_mask import audio_mask_to_latent, video_mask_to_latent
from ltx_lora.data.dataset_file import AUDIO_LOSS_RANGES, LOSS_MASK, read_dataset
from ltx_lora.data.decode import AUDIO_RATE, read_audio, read_clip, read_image, silence
from ltx_lora.data.loader import EMPTY_PROMPT
from ltx_lora.data.loss_mask import audio_weights, pixel_to_latent, read_pixel_mask
from ltx_lora.data.probe import IMAGE_EXTENSIONS, probe
from ltx_lora.data.report import report_path_for
from ltx_lora.data.usable import (
    CAPTION_FIX,
    NEEDS_CAPTION,
    NO_CAPTION,
    USED,
    Candidate,
    Verdict,
    judge_clips,
    reference_bucket,
    reference_frame_indices,
    row_caption,
)
from ltx_lora.distributed import env as dist_env
from ltx_lora.errors import UserError
from ltx_lora.ltx.loader import load_audio_encoder, load_video_encoder
from ltx_lora.files.atomic import stale_temp_files
from ltx_lora.ltx.text import check_8bit, gemma_weight_files, load_prompt_encoder
from ltx_lora.ltx.vae import encode_audio, encode_video
from ltx_lora.paths import check_model_path
from ltx_lora.progress import progress
from ltx_lora.runtime.device import pick_device
from ltx_lora.runtime.inputs import check_text_encoder, read_base
from ltx_lora.task import TaskConfig, resolve_task


@dataclass
class PlannedClip:
    media: Path
    caption: str
    bucket: str  # WxHxF
    width: int
    height: int
    frames: int
    fps: float
    content_hash: str
    is_still: bool
    loss_weight: float = 1.0
    repeats: int = 1
    source_width: int = 0  # the clip's displayed size: a loss mask follows its resize/crop plan
    source_height: int = 0
    loss_mask: Path | None = None
    loss_mask_hash: str = ""
    audio_ranges: list[list[float]] | None = None
    has_video: bool = True  # False for tasks without video: nothing of the picture is decoded or encoded
    sources: dict[str, Path] = field(default_factory=dict)  # the paired files the task reads, by column
    source_hashes: dict[str, str] = field(default_factory=dict)  # their content, for the entry's key


@dataclass
class PreprocessResult:
    used: int = 0
    reused: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (media, reason)
    moved: list[tuple[str, str, str]] = field(default_factory=list)  # (media, bucket scanned, bucket now)
    texts_encoded: int = 0
    seconds: float = 0.0
    unused: list[str] = field(default_factory=list)  # cache entries this config does not use (kept unless pruned)
    pruned: bool = False  # --prune: `unused` were removed
    stale_temps: list[str] = field(default_factory=list)  # temp files of killed writers, removed


def _caption(text: str, trigger: str) -> str:
    text = " ".join(text.split())
    return f"{trigger} {text}".strip() if trigger and not text.startswith(trigger) else text


@dataclass
class ClipPlan:
    """What preprocessing will encode, what it skips (media, reason), and the clips whose bucket differs from the
    one the dataset file was scanned into (media, bucket in the file, bucket now)."""

    planned: list[PlannedClip]
    skipped: list[tuple[str, str]]
    moved: list[tuple[str, str, str]] = field(default_factory=list)
    dataset: Path | None = None
    silent: list[str] = field(default_factory=list)  # videos without sound whose generated audio trains on silence


def plan_clips(cfg: Config) -> ClipPlan:
    """Probe every dataset entry and judge it by the rule `dataset scan` reports (`usable.judge_clips`): each used
    clip gets a bucket, the rest are skipped with a reason. None usable raises a UserError saying why."""
    dataset = read_dataset(cfg.data.dataset)
    if not dataset.entries:
        raise UserError(f"{dataset.path} lists no clips (no rows); write it with `ltx-lora dataset scan CLIPS/ -o "
                        f"{dataset.path}`.")
    buckets = parse_buckets(cfg.data.buckets)
    task = resolve_task(cfg.task)
    clips = []
    for entry in dataset.entries:
        media = dataset.resolve(entry.video)
        paths = entry.paths(dataset)
        mask = paths.pop(LOSS_MASK, None)
        clips.append(Candidate(media, probe(media), row_caption(entry.caption, media)[0], mask, paths))
    skip_silent = task.audio.present and cfg.data.missing_audio == "skip"
    verdicts = judge_clips(clips, buckets, target_fps=cfg.data.target_fps, skip_without_audio=skip_silent,
                           task=task, audio_fps=cfg.train.fps)
    plan = ClipPlan([], [], dataset=dataset.path)
    for entry, clip, v in zip(dataset.entries, clips, verdicts):
        scanned = entry.fields.get("bucket")
        if v.bucket is not None and scanned and str(scanned) != str(v.bucket):
            plan.moved.append((entry.video, str(scanned), str(v.bucket)))
        if v.status == NEEDS_CAPTION:
            plan.skipped.append((str(clip.path), NO_CAPTION))
            continue
        if v.status != USED:
            plan.skipped.append((str(clip.path), v.skip_reason))
            continue
        b = v.bucket
        still = clip.info.kind == "image"
        if task.audio.generated and not still and "audio" not in v.sources and clip.info.audio is None:
            plan.silent.append(str(clip.path))  # data.missing_audio: silence (skip left it out above)
        width, height = (clip.info.width or b.width, clip.info.height or b.height)
        plan.planned.append(PlannedClip(media=clip.path, caption=_caption(clip.caption, cfg.data.trigger_word),
                                        bucket=str(b), width=b.width, height=b.height, frames=b.frames,
                                        fps=float(v.fps or cfg.train.fps), content_hash=clip.info.content_hash,
                                        is_still=still, loss_weight=entry.loss_weight, repeats=entry.repeats,
                                        source_width=width, source_height=height,
                                        loss_mask=clip.loss_mask if task.video.present else None,
                                        loss_mask_hash=(probe(clip.loss_mask).content_hash
                                                        if clip.loss_mask and task.video.present else ""),
                                        audio_ranges=entry.fields.get(AUDIO_LOSS_RANGES),
                                        has_video=task.video.present, sources=v.sources,
                                        source_hashes={c: probe(f).content_hash for c, f in v.sources.items()}))
    if not plan.planned:
        raise UserError(nothing_usable(dataset.path, verdicts))
    return plan


def nothing_usable(dataset: Path, verdicts: list[Verdict]) -> str:
    """One sentence: none of the dataset's clips can be trained on, and why (counted by reason)."""
    reasons = Counter("no caption" if v.status == NEEDS_CAPTION else v.skip_group for v in verdicts)
    why = ", ".join(f"{n} {group}" for group, n in reasons.most_common())
    fix = f"; {CAPTION_FIX}" if reasons.get("no caption") else ""
    return (f"None of the {len(verdicts)} clips in {dataset} can be used ({why}){fix}; the dataset report "
            f"({report_path_for(dataset).name} beside it, from `ltx-lora dataset scan`) gives each clip's reason.")


def silent_lines(plan: ClipPlan) -> list[str]:
    """A note when videos without a sound track train a task that generates audio: with data.missing_audio: silence
    (the default) the LoRA learns silence for them, which a video creator's music-less clips would not mean."""
    if not plan.silent:
        return []
    n, total = len(plan.silent), len(plan.planned)
    return [f"note: {n} of {total} clips have no sound track (e.g. {plan.silent[0]}); the task generates audio, so "
            "the LoRA is trained to make silence for them (data.missing_audio: silence). For video-only clips use "
            "`task: t2v`; to train only on the clips with sound set data.missing_audio: skip."]


def moved_lines(plan: ClipPlan, buckets: str, max_listed: int = 20) -> list[str]:
    """A note when the config's buckets place clips differently from the scan the dataset file came from."""
    if not plan.moved:
        return []
    n = len(plan.moved)
    head = (f"data.buckets \"{buckets}\" differ from the buckets {plan.dataset} was scanned with: {n} "
            f"clip{'s' if n != 1 else ''} moved (rescan with `ltx-lora dataset scan {plan.dataset} -o "
            f"{plan.dataset} --buckets \"{buckets}\"` to review the new placement):")
    lines = [head]
    lines += [f"  {media}: {old} -> {new}" for media, old, new in plan.moved[:max_listed]]
    if n > max_listed:
        lines.append(f"  ... and {n - max_listed} more")
    return lines


def _entry_key(clip: PlannedClip, identity: dict, with_audio: bool, task: TaskConfig) -> str:
    parts = [clip.content_hash, clip.bucket, clip.fps, with_audio, store.model_content(identity), store.FORMAT]
    if clip.loss_mask or clip.audio_ranges:  # only then: caches made before masked loss stay valid
        parts.append({"loss_mask": clip.loss_mask_hash, "audio_ranges": clip.audio_ranges})
    if clip.sources or not clip.has_video:  # only then: caches made before conditions stay valid
        parts.append({"sources": clip.source_hashes, "video": clip.has_video,
                      "reference": [(c.downscale, c.temporal_scale) for c in task.video.find("reference")]})
    spec = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(spec.encode()).hexdigest()[:32]


def _loss_weights(clip: PlannedClip, fps: float, grid: torch.Size | None, audio: torch.Tensor | None) -> dict:
    """The clip's masked-loss weights on the latent grid (see ltx_lora.data.loss_mask); {} without any."""
    out = {}
    if clip.loss_mask is not None and grid is not None:
        bucket = parse_buckets(clip.bucket)[0]
        pixels = read_pixel_mask(clip.loss_mask, clip.source_width, clip.source_height, bucket, fps)
        latent = pixel_to_latent(pixels)
        if tuple(latent.shape) != tuple(grid):
            raise ValueError(f"its loss mask maps to a latent grid {tuple(latent.shape)}, not the clip's {tuple(grid)}")
        out[store.VIDEO_LOSS_WEIGHT] = latent
    if clip.audio_ranges and audio is not None:
        out[store.AUDIO_LOSS_WEIGHT] = audio_weights(clip.audio_ranges, audio.shape[1])
    return out


def _sound(path: Path, seconds: float) -> tuple[torch.Tensor, bool]:
    """(waveform at AUDIO_RATE covering `seconds` from the start, whether it is silence for want of sound)."""
    wave = read_audio(path, 0.0, seconds)
    return (silence(seconds), True) if wave is None else (wave, False)


def _read_frames(path: Path, width: int, height: int, frames: int, target_fps: float | None,
                 still: bool) -> torch.Tensor:
    """[3, F, H, W] in [-1, 1]: a still (or a video's first frame for a still's reference), else F frames."""
    if still and path.suffix.lower() in IMAGE_EXTENSIONS:
        return read_image(path, width, height).frames
    return read_clip(path, width, height, frames, target_fps, with_audio=False).frames


def _encode_clip(clip: PlannedClip, key: str, cfg: Config, task: TaskConfig, enc: dict, device) -> None:
    """Decode and encode one clip and what the task pairs with it; written as one cache entry."""
    cache = Path(cfg.data.cache_dir)
    with_audio = task.audio.present and not clip.is_still
    own_sound = with_audio and clip.has_video and "audio" not in clip.sources
    video = decoded = None
    rate = clip.fps
    if clip.has_video:
        if clip.is_still:
            decoded = read_image(clip.media, clip.width, clip.height)
        else:
            decoded = read_clip(clip.media, clip.width, clip.height, clip.frames, cfg.data.target_fps,
                                with_audio=own_sound)
            rate = decoded.fps
        video = encode_video(enc["video"], decoded.frames.unsqueeze(0).to(device))[0].float()
    seconds = clip.frames / rate
    audio, silent = None, False
    if with_audio:
        if own_sound:
            wave, silent = (decoded.audio, False) if decoded.audio is not None else (silence(seconds), True)
        else:
            wave, silent = _sound(clip.sources.get("audio", clip.media), seconds)
        audio = encode_audio(enc["audio"], wave.unsqueeze(0).to(device), AUDIO_RATE)[0].float()
    extra = _loss_weights(clip, rate, None if video is None else video.shape[1:], audio)
    bucket = parse_buckets(clip.bucket)[0]
    for cond in task.video.find("reference") if task.video.generated else []:
        ref = reference_bucket(bucket, cond)
        frames = _read_frames(clip.sources["reference_video"], ref.width, ref.height, bucket.frames,
                              cfg.data.target_fps, clip.is_still)
        frames = frames[:, reference_frame_indices(bucket.frames, cond.temporal_scale)]
        extra[store.REFERENCE_VIDEO] = encode_video(enc["video"], frames.unsqueeze(0).to(device))[0]
    if task.audio.generated and task.audio.find("reference") and not clip.is_still:
        wave, _ = _sound(clip.sources["reference_audio"], seconds)
        extra[store.REFERENCE_AUDIO] = encode_audio(enc["audio"], wave.unsqueeze(0).to(device), AUDIO_RATE)[0]
    if video is not None and "video_mask" in clip.sources:
        pixels = read_pixel_mask(clip.sources["video_mask"], clip.source_width, clip.source_height, bucket, rate)
        extra[store.VIDEO_CONDITION_MASK] = video_mask_to_latent(pixels, video.shape[1])
    if audio is not None and "audio_mask" in clip.sources:
        wave, _ = _sound(clip.sources["audio_mask"], seconds)
        extra[store.AUDIO_CONDITION_MASK] = audio_mask_to_latent(wave, audio.shape[1])
    _require_finite([video, audio, *extra.values()], cfg.model.checkpoint)
    store.write_latents(cache, key, video, audio,
                        {"media": str(clip.media), "bucket": clip.bucket, "fps": clip.fps, "silent_audio": silent,
                         **{c: str(p) for c, p in clip.sources.items()}}, weights=extra)


def _progress(console):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return progress(console, TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=False)


def preprocess(cfg: Config, console, *, prune: bool = False) -> PreprocessResult:
    """Encode what the cache lacks for this config and write its manifest. Entries other configs (datasets, models,
    settings) made stay: one cache serves them all (every entry's name is a hash of what it was made from); only
    `prune` removes the entries this config does not use, and the result lists them either way."""
    t0 = time.perf_counter()
    dist = dist_env.current()
    console = dist_env.rank_console(console)
    cache = Path(cfg.data.cache_dir)
    # The model files, checked as doctor --config and train check them, before anything is encoded.
    base = read_base(cfg.model.checkpoint)
    identity = store.model_identity(base.path)
    encoder: str | None = None  # the text encoder's identity: None without the Gemma folder (see _encode_texts)
    if cfg.model.text_encoder and Path(cfg.model.text_encoder).expanduser().exists():
        gemma = check_text_encoder(cfg.model.text_encoder, base.path)
        encoder = store.text_encoder_key(identity, gemma / "config.json", gemma_weight_files(gemma),
                                         cfg.memory.text_encoder_8bit)
    task = resolve_task(cfg.task)
    with_audio = task.audio.present
    device = pick_device()
    if cfg.memory.text_encoder_8bit:  # refuse now, not after every clip has been encoded
        check_8bit(device)
    plan = plan_clips(cfg)
    with dist_env.locked(dist, cache, "preprocess", "cache", say=console.print):  # one writer per cache
        result = _preprocess_locked(cfg, console, plan, cache, identity, encoder, task, with_audio, device, prune)
    result.seconds = time.perf_counter() - t0
    return result


def _preprocess_locked(cfg: Config, console, plan: ClipPlan, cache: Path, identity: dict, encoder: str | None,
                       task: TaskConfig, with_audio: bool, device: torch.device, prune: bool) -> PreprocessResult:
    dist = dist_env.current()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    result = PreprocessResult()
    if dist.is_main:  # under the lock no other preprocess writes here, and this run's ranks have not started
        stale = [p for sub in ("", *store.ENTRY_FOLDERS) for p in stale_temp_files(cache / sub)]
        for p in stale:
            p.unlink(missing_ok=True)
        result.stale_temps = [str(p.relative_to(cache)) for p in stale]
    dist.barrier()
    planned, result.skipped, result.moved = plan.planned, plan.skipped, plan.moved
    for line in moved_lines(plan, cfg.data.buckets) + silent_lines(plan):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    items: list[store.CacheItem] = []
    todo = [(c, _entry_key(c, identity, with_audio, task)) for c in planned]
    missing = [(c, k) for c, k in todo if not store.intact(cache / f"latents/{k}.safetensors")]
    result.reused = len(todo) - len(missing)
    mine = list(enumerate(missing))[dist.rank::dist.world_size]  # this process's share (all of it with one)
    needs_video = task.video.present or bool(task.video.find("reference"))
    enc = {"video": load_video_encoder(cfg.model.checkpoint, device=device, dtype=dtype)
           if mine and needs_video else None,
           "audio": load_audio_encoder(cfg.model.checkpoint, device=device, dtype=torch.float32)
           if mine and with_audio else None}
    failed: list[tuple[int, str, str]] = []  # (position in `missing`, media, reason)
    with _progress(console) as bar:
        share = f" (GPU 1 of {dist.world_size}; each encodes its share)" if dist.active else ""
        clips_task = bar.add_task(f"encoding clips{share}", total=len(mine))
        for n, (clip, key) in mine:
            try:
                _encode_clip(clip, key, cfg, task, enc, device)
            except (ValueError, OSError, RuntimeError) as e:
                failed.append((n, str(clip.media), f"could not be encoded: {e}"))
            bar.advance(clips_task)
    del enc
    dist.barrier()  # every share is on disk; the reasons of every rank's failures, in the single-process order
    result.skipped += [(m, why) for _, m, why in sorted(f for part in dist.gather_json(failed) for f in part)]
    for clip, key in todo:
        if store.intact(cache / f"latents/{key}.safetensors"):
            rel = f"latents/{key}.safetensors"
            shapes = store.entry_shapes(cache, rel)
            items.append(store.CacheItem(latents=rel, text="", bucket=clip.bucket,
                                         fps=clip.fps, has_audio=store.AUDIO in shapes,
                                         media=str(clip.media), caption=clip.caption,
                                         loss_weight=clip.loss_weight, repeats=clip.repeats,
                                         has_video=store.VIDEO in shapes,
                                         audio_steps=shapes.get(store.AUDIO, (0, 0))[1],
                                         has_reference=(store.REFERENCE_VIDEO in shapes
                                                        or store.REFERENCE_AUDIO in shapes),
                                         has_mask=(store.VIDEO_CONDITION_MASK in shapes
                                                   or store.AUDIO_CONDITION_MASK in shapes)))
    result.used = len(items)
    if not items:  # every usable clip failed to encode: no empty cache for training to trip over
        why = "; ".join(f"{Path(m).name}: {r}" for m, r in result.skipped[-3:])
        raise UserError(f"None of the {len(planned)} usable clips of {cfg.data.dataset} could be encoded ({why}).")

    # train.output_preservation: each caption with the trigger word replaced by the class word, encoded beside it
    keep = cfg.train.output_preservation
    for item in items:
        item.preservation_caption = (preservation_caption(item.caption, cfg.data.trigger_word, keep.class_word)
                                     if keep else "")
    unchanged = [i for i in items if keep and i.preservation_caption == i.caption]
    if unchanged and dist.is_main:  # e.g. "zxqs ..." with trigger zxq: not prepended (it starts so), not a word
        console.print(f"note: {len(unchanged)} of {len(items)} captions hold the trigger word "
                      f"{cfg.data.trigger_word.strip()!r} only inside another word (e.g. {unchanged[0].caption!r}): "
                      "output preservation holds their prediction to the base model's, against what they train; "
                      "put the trigger word in front of them as a word of its own.", highlight=False, markup=False,
                      soft_wrap=True)
    # The empty prompt is always cached (a few rows): train.caption_dropout can be turned on without a re-run.
    texts = list(dict.fromkeys([i.caption for i in items] + [i.preservation_caption for i in items if keep]
                               + cfg.validation_prompts() + [cfg.validation.negative_prompt, EMPTY_PROMPT]))
    if encoder is None:  # no Gemma folder here: the texts the cache already holds for this model can still serve
        encoder, known = _known_texts(cache, cfg.model.checkpoint)
    else:
        known = {}
    text_files = _encode_texts(cfg, cache, texts, device, console, result, encoder, known)
    for item in items:
        item.text = text_files[item.caption]
        item.preservation_text = text_files[item.preservation_caption] if keep else ""
    manifest = store.Manifest(settings={"checkpoint": cfg.model.checkpoint, "model_identity": identity,
                                        "text_encoder": encoder, "dataset": str(plan.dataset),
                                        "buckets": cfg.data.buckets, "target_fps": cfg.data.target_fps,
                                        "with_audio": with_audio, "with_video": task.video.present},
                              items=items, prompts={p: text_files[p] for p in texts})
    result.unused, result.pruned = store.unused_entries(cache, manifest), prune
    if dist.is_main:  # written last, once, after every share is done
        store.write_manifest(cache, manifest)
        if prune:  # asked for: what this config does not use (the caller lists it)
            for rel in result.unused:
                (cache / rel).unlink(missing_ok=True)
    dist.barrier()
    return result


def _require_finite(latents: list[torch.Tensor | None], checkpoint: str) -> None:
    """Latents with NaN/inf come from the model, not the clip (the VAE's weights): stop, no cache of noise."""
    if not all(bool(torch.isfinite(t).all()) for t in latents if t is not None):
        raise UserError(f"the VAE of {checkpoint} encodes clips to NaN/inf values, so its weights are damaged: "
                        "download the checkpoint again (nothing was written to the cache).")


def _known_texts(cache: Path, checkpoint: str) -> tuple[str | None, dict[str, str]]:
    """The text encoder identity and text -> features file of the cache's manifest, if it was made with this
    model (by content): what a run without the Gemma folder may reuse."""
    try:
        old = store.read_manifest(cache)
    except (UserError, ValueError, KeyError, TypeError):
        return None, {}
    if store.made_for_another_model(old, checkpoint) or not old.settings.get("text_encoder"):
        return None, {}
    return old.settings["text_encoder"], {**{i.caption: i.text for i in old.items}, **old.prompts,
                                          **{i.preservation_caption: i.preservation_text for i in old.items
                                             if i.preservation_text}}


def _gemma_memory_sentence(cfg: Config, device) -> str:
    """What to do when Gemma does not fit the GPU (the clips encoded so far stay in the cache)."""
    free = f" ({torch.cuda.mem_get_info(device)[0] / 2**30:.1f} GiB free)" if device.type == "cuda" else ""
    fix = ("free GPU memory (other processes) and run it again" if cfg.memory.text_encoder_8bit else
           "set memory.text_encoder_8bit: true (8-bit Gemma, about half the memory; needs bitsandbytes) and run "
           "`ltx-lora preprocess` again")
    return (f"the text encoder {cfg.model.text_encoder} does not fit in the GPU's memory{free}: {fix}; the clips "
            "encoded so far are kept.")


def _encode_texts(cfg: Config, cache: Path, texts: list[str], device, console, result: PreprocessResult,
                  encoder_key: str | None, known: dict[str, str]) -> dict[str, str]:
    """Features of every text, encoded where the cache lacks them (`known`: files to use without a Gemma folder)."""
    if encoder_key is not None and not known:
        files = {t: store.text_file(t, encoder_key) for t in texts}
    else:
        files = {t: known[t] for t in texts if t in known}
    todo = [t for t in texts if t not in files or not store.intact(cache / files[t])]
    if not todo:
        return files
    if not cfg.model.text_encoder:
        raise UserError("model.text_encoder is not set; point it at the local Gemma 3 folder to encode captions.")
    check_model_path(cfg.model.text_encoder, "text_encoder")  # without the folder: the sentence on how to get it
    dist = dist_env.current()
    mine = todo[dist.rank::dist.world_size]
    if mine:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        try:
            encoder = load_prompt_encoder(cfg.model.text_encoder, cfg.model.checkpoint, device=device, dtype=dtype,
                                          load_in_8bit=cfg.memory.text_encoder_8bit)
        except torch.OutOfMemoryError:  # Gemma 3 12B is ~24 GB in bf16: a 24 GB card cannot hold it
            raise UserError(_gemma_memory_sentence(cfg, device)) from None
        with _progress(console) as bar:
            task = bar.add_task("encoding captions", total=len(mine))
            for text in mine:
                features = encoder.encode_prompts([text])[0]
                parts = [t for t in (features.video, features.audio, features.video_pad, features.audio_pad)
                         if t is not None]
                if not all(bool(torch.isfinite(t).all()) for t in parts):
                    raise UserError(f"the text encoder ({cfg.model.text_encoder} with the projection of "
                                    f"{cfg.model.checkpoint}) gives NaN/inf features, so its weights are damaged: "
                                    "download them again.")
                store.write_text(cache, text, features, encoder_key)
                bar.advance(task)
    dist.barrier()  # every text is on disk
    result.texts_encoded = len(todo)
    return files
