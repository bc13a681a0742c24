"""Validation samples: fixed prompts, seed and settings, sampled at step 0, every N steps and at the end of a run
(`Validator`, called by the trainer), or afterwards for LoRA files (`validate_loras`, the `validate` command).

Per sample: samples/<checkpoint>/p<i>.mp4 (H.264 + AAC), p<i>.png (contact sheet), p<i>.json (prompt, seed,
settings, step, LoRA file, time, health); then report.html is rebuilt. Prompt features come from the preprocessing
cache (Gemma never loads here). During in-loop validation the optimizer state waits in host memory and the VAE
decoders come to the GPU only to decode, so sampling needs no more GPU memory than training did.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch

from ltx_lora.config import Config, ValidationConfig
from ltx_lora.errors import UserError
from ltx_lora.sample.health import Health, check_sample

PREVIEW_STEPS = 8
FINAL_STEPS = 50
DISTILLED_WITH_LORA = ("the Distilled checkpoint already has the distillation baked in; adding the distilled LoRA "
                       "on top gives bad results. Use the Dev checkpoint with the distilled LoRA at strength 0.5-0.6 "
                       "(8 steps, CFG 1.0), or the Distilled checkpoint alone with the LoRA off")


@dataclass
class SampleSettings:
    """Everything that decides what a validation sample looks like (kept in every record)."""

    width: int
    height: int
    frames: int
    fps: float
    steps: int
    seed: int
    cfg: float
    audio_cfg: float
    stg_scale: float
    stg_blocks: list[int]
    guidance_rescale: float
    modality_scale: float
    audio: bool
    negative_prompt: str
    reference_image: str | None = None
    preview: bool = False
    preview_lora: str | None = None
    preview_strength: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_settings(v: ValidationConfig, *, steps: int | None = None, preview_lora: str | None = None
                     ) -> SampleSettings:
    from ltx_lora.data.buckets import parse_buckets

    try:
        bucket = parse_buckets(v.resolution)
    except UserError as e:
        raise UserError(f"validation.resolution: {e}") from None
    if len(bucket) != 1:
        raise UserError(f"validation.resolution must be one WxHxF, e.g. 960x544x49; got {v.resolution!r}.")
    b = bucket[0]
    preview_lora = preview_lora or v.preview_distilled_lora
    common = dict(width=b.width, height=b.height, frames=b.frames, fps=v.fps, seed=v.seed, audio=v.audio,
                  negative_prompt=v.negative_prompt, reference_image=v.reference_image)
    if preview_lora:  # the distilled LoRA turns Dev into an 8-step, guidance-free sampler
        return SampleSettings(**common, steps=PREVIEW_STEPS, cfg=1.0, audio_cfg=1.0, stg_scale=0.0, stg_blocks=[],
                              guidance_rescale=0.0, modality_scale=1.0, preview=True, preview_lora=preview_lora,
                              preview_strength=v.preview_strength)
    return SampleSettings(**common, steps=steps or v.steps, cfg=v.cfg, audio_cfg=v.audio_cfg, stg_scale=v.stg_scale,
                          stg_blocks=list(v.stg_blocks), guidance_rescale=v.guidance_rescale,
                          modality_scale=v.modality_scale)


def check_preview_lora(checkpoint: str, preview_lora: str) -> None:
    """Refuse the distilled LoRA on the Distilled model, and a preview LoRA that is not the distilled LoRA."""
    from ltx_lora.model_files import LTX23_DISTILLED, LTX23_DISTILLED_LORA, identify

    if identify(checkpoint).kind == LTX23_DISTILLED:
        raise UserError(f"refusing the distilled LoRA preview on {Path(checkpoint).name}: {DISTILLED_WITH_LORA}.")
    ident = identify(preview_lora)
    if ident.kind != LTX23_DISTILLED_LORA:
        raise UserError(f"validation.preview_distilled_lora {preview_lora} is not the distilled LoRA ({ident.summary}); "
                        "point it at ltx-2.3-22b-distilled-lora-384.safetensors.")


def _check_stg_blocks(checkpoint: str, blocks: list[int]) -> None:
    from ltx_lora.ltx.loader import read_checkpoint_config

    n = int(read_checkpoint_config(checkpoint).get("transformer", {}).get("num_layers", 0))
    outside = [b for b in blocks if not 0 <= b < n]
    if outside:
        raise UserError(f"validation.stg_blocks {outside} are not blocks of {Path(checkpoint).name} (it has {n}, "
                        f"numbered 0-{n - 1}); use blocks in that range (29 is the guide's choice on LTX-2.3).")


@contextmanager
def optimizer_state_on_host(optimizer, device: torch.device):
    """Move the optimizer state (Adam moments: twice the LoRA size) off the GPU while sampling, then back."""
    moved = []
    if optimizer is not None and device.type == "cuda":
        for state in optimizer.state.values():
            for key, value in state.items():
                if torch.is_tensor(value) and value.device.type == "cuda":
                    moved.append((state, key, value.device))
                    state[key] = value.to("cpu")
        torch.cuda.empty_cache()
    try:
        yield
    finally:
        for state, key, dev in moved:
            state[key] = state[key].to(dev)


@contextmanager
def _eager_blocks(transformer):
    """Sample with eager blocks even when training compiled them: sampling's shapes and STG perturbations would
    each compile new graphs (minutes, once per validation resolution) for a few dozen forwards."""
    saved = [(b, getattr(b, "_compiled_call_impl", None)) for b in transformer.transformer_blocks]
    for block, _ in saved:
        block._compiled_call_impl = None
    try:
        yield
    finally:
        for block, compiled in saved:
            block._compiled_call_impl = compiled


@contextmanager
def _on(module: torch.nn.Module | None, device: torch.device):
    """Bring a CPU-parked module to the device for one use."""
    if module is None or device.type == "cpu":
        yield module
        return
    module.to(device)
    try:
        yield module
    finally:
        module.to("cpu")
        torch.cuda.empty_cache()


def _progress(console):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=True)


@dataclass
class Validator:
    """Built once per run (or per `validate` command); `run()` samples every prompt with the model as it is now."""

    cfg: Config
    root: Path  # run folder (or the validate command's output folder): samples/ and report.html go here
    settings: SampleSettings
    device: torch.device
    dtype: torch.dtype
    console: object
    metrics: Path | None = None
    title: str = ""
    prompts: list = field(default_factory=list)  # ltx_lora.ltx.sampling.Prompt per validation prompt
    negative: object = None
    fp8_base: bool = False
    decoders: dict = field(default_factory=dict)
    first_frame: torch.Tensor | None = None
    preview_pairs: dict | None = None
    baseline_hf: dict[int, float] = field(default_factory=dict)

    @classmethod
    def build(cls, cfg: Config, root: Path, settings: SampleSettings, *, text_connectors, device: torch.device,
              dtype: torch.dtype, console, metrics: Path | None = None, title: str = "") -> Validator:
        from ltx_lora.model_files import LTX23_DEV_FP8, identify

        self = cls(cfg, Path(root), settings, device, dtype, console, metrics, title or Path(cfg.output_dir).name)
        if not cfg.validation.prompts:
            raise UserError("validation.prompts is empty; add 2-3 fixed prompts to the config, run `ltx-lora "
                            "preprocess` (it caches their text features), then validate.")
        _check_stg_blocks(cfg.model.checkpoint, settings.stg_blocks)
        if settings.reference_image and not Path(settings.reference_image).is_file():
            raise UserError(f"validation.reference_image {settings.reference_image} does not exist; give a local "
                            "image file, or null for text-to-video samples.")
        self.fp8_base = identify(cfg.model.checkpoint).kind == LTX23_DEV_FP8
        if settings.preview:
            check_preview_lora(cfg.model.checkpoint, settings.preview_lora)
            from ltx_lora.lora.attach import read_lora_file

            self.preview_pairs = read_lora_file(settings.preview_lora)
        self._load_prompts(text_connectors)
        self._load_decoders()
        if settings.reference_image:
            self._encode_reference()
        self._load_baselines()
        return self

    # -- set-up --------------------------------------------------------------------------------------------------
    def _load_prompts(self, connectors) -> None:
        from ltx_lora.data.cache import read_manifest, read_text
        from ltx_lora.ltx.sampling import Prompt
        from ltx_lora.ltx.text import run_text_connectors
        from ltx_lora.text_features import pad_features

        cache = Path(self.cfg.data.cache_dir)
        manifest = read_manifest(cache)
        made_for = manifest.settings.get("checkpoint")
        if made_for and Path(made_for).name != Path(self.cfg.model.checkpoint).name:
            raise UserError(f"the cache in {cache} was made with {made_for}, not {self.cfg.model.checkpoint}, so its "
                            "prompt features do not fit; run `ltx-lora preprocess` with this config.")
        texts = [*self.cfg.validation.prompts, self.settings.negative_prompt]
        missing = [t for t in texts if t not in manifest.prompts]
        if missing:
            raise UserError(f"the validation prompt {missing[0]!r} has no cached text features in {cache}; run "
                            "`ltx-lora preprocess CONFIG` (it encodes the validation prompts, Gemma is not loaded "
                            "during training), then start again.")
        contexts = []
        with torch.no_grad():
            for text in texts:
                v, a, mask = run_text_connectors(connectors, pad_features(read_text(cache, manifest.prompts[text])))
                contexts.append(Prompt(v.to(self.dtype), None if a is None else a.to(self.dtype), mask))
        self.prompts, self.negative = contexts[:-1], contexts[-1]

    def _load_decoders(self) -> None:
        from ltx_lora.ltx.loader import load_audio_decoder, load_video_decoder, load_vocoder

        ckpt = self.cfg.model.checkpoint
        park = torch.device("cpu")  # parked in host memory; on the GPU only while decoding
        self.decoders["video"] = load_video_decoder(ckpt, device=park, dtype=self.dtype).requires_grad_(False)
        if self.settings.audio:
            self.decoders["audio"] = load_audio_decoder(ckpt, device=park, dtype=torch.float32).requires_grad_(False)
            self.decoders["vocoder"] = load_vocoder(ckpt, device=park, dtype=torch.float32).requires_grad_(False)

    def _encode_reference(self) -> None:
        from ltx_lora.data.decode import read_image
        from ltx_lora.ltx.loader import load_video_encoder
        from ltx_lora.ltx.sampling import encode_first_frame
        from ltx_lora.paths import check_model_path

        path = Path(self.settings.reference_image)
        if not path.is_file():
            raise UserError(f"validation.reference_image {path} does not exist; give a local image file or null.")
        try:
            image = read_image(path, self.settings.width, self.settings.height).frames
        except OSError as e:
            raise UserError(f"validation.reference_image {path} cannot be read as an image ({e}).") from None
        check_model_path(self.cfg.model.checkpoint, "checkpoint")
        encoder = load_video_encoder(self.cfg.model.checkpoint, device=self.device, dtype=self.dtype)
        self.first_frame = encode_first_frame(encoder, image)
        del encoder

    def _load_baselines(self) -> None:
        """High-frequency share of each prompt's step-0 sample (this or an earlier session of the run)."""
        for path in (self.root / "samples").glob("*/*.json"):
            try:
                rec = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if rec.get("step") == 0 and rec["health"]["status"] == "ok" and rec["settings"] == self.settings.to_dict():
                self.baseline_hf[rec["prompt_index"]] = rec["health"]["metrics"]["video"]["high_frequency"]

    # -- sampling ------------------------------------------------------------------------------------------------
    def run(self, transformer, *, step: int | None, label: str, lora_file: str | None = None,
            optimizer=None) -> list[dict]:
        """Sample every prompt with `transformer` as it is; write the files; rebuild the report."""
        from ltx_lora.lora.attach import attach_lora

        was_training = transformer.training
        transformer.eval()
        preview = (attach_lora(transformer, self.preview_pairs, self.settings.preview_strength, "the distilled LoRA")
                   if self.preview_pairs else nullcontext())
        records = []
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        try:
            # Sampling draws from its own seeded generators; fork_rng keeps the training RNG exactly as it was.
            with (torch.random.fork_rng(devices=devices), optimizer_state_on_host(optimizer, self.device),
                  _eager_blocks(transformer), preview):
                for i, prompt in enumerate(self.prompts):
                    records.append(self._one(transformer, i, prompt, step=step, label=label, lora_file=lora_file))
        finally:
            transformer.train(was_training)
        from ltx_lora.sample.report import build_report

        build_report(self.root, title=self.title, config_text=self.cfg.to_yaml(), metrics=self.metrics)
        bad = [r for r in records if r["health"]["status"] != "ok"]
        for r in bad:
            colour = "yellow" if r["health"]["status"] == "explained" else "red"
            self.console.print(f"[{colour}]validation {label} prompt {r['prompt_index']}:[/] "
                               + " ".join(r["health"]["problems"] + r["health"]["notes"]), highlight=False)
        total = sum(r["seconds"] for r in records)
        self.console.print(f"validation {label}: {len(records)} samples in {total:.1f} s "
                           f"({len(records) - len(bad)} healthy) -> {self.root / 'report.html'}", highlight=False)
        return records

    def _one(self, transformer, index: int, prompt, *, step: int | None, label: str, lora_file: str | None) -> dict:
        from ltx_lora.ltx.sampling import (
            Guidance,
            SampleRequest,
            decode_audio,
            decode_video,
            sample_latents,
            sigma_schedule,
        )
        from ltx_lora.sample.media import write_contact_sheet, write_mp4

        s = self.settings
        req = SampleRequest(
            width=s.width, height=s.height, frames=s.frames, fps=s.fps, seed=s.seed,
            sigmas=sigma_schedule(s.steps, distilled=s.preview),
            video_guidance=Guidance(s.cfg, s.stg_scale, s.stg_blocks, s.guidance_rescale, s.modality_scale),
            audio_guidance=Guidance(s.audio_cfg, s.stg_scale, s.stg_blocks, s.guidance_rescale, s.modality_scale),
            with_audio=s.audio and prompt.audio is not None, first_frame=self.first_frame)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.dtype == torch.bfloat16)
        t0 = time.perf_counter()
        with _progress(self.console) as bar:
            task = bar.add_task(f"sampling {label} prompt {index + 1}/{len(self.prompts)}", total=s.steps)
            with autocast:
                video_lat, audio_lat = sample_latents(transformer, req, prompt, self.negative, device=self.device,
                                                      dtype=self.dtype, on_step=lambda n: bar.update(task, completed=n))
        self._sync()
        t1 = time.perf_counter()
        nonfinite = [name for name, t in (("video latents", video_lat), ("audio latents", audio_lat))
                     if t is not None and not torch.isfinite(t).all()]
        with _on(self.decoders["video"], self.device) as dec:
            frames = decode_video(dec, torch.nan_to_num(video_lat), s.seed)
        wave = rate = None
        if audio_lat is not None:
            with _on(self.decoders["audio"], self.device) as adec, _on(self.decoders["vocoder"], self.device) as voc:
                wave, rate = decode_audio(adec, voc, torch.nan_to_num(audio_lat))
            if not torch.isfinite(wave).all():
                nonfinite.append("waveform")
        self._sync()
        t2 = time.perf_counter()
        health: Health = check_sample(frames, wave, nonfinite=nonfinite, step=step,
                                      baseline_hf=self.baseline_hf.get(index), fp8_base=self.fp8_base)
        if step == 0 and health.status == "ok":
            self.baseline_hf[index] = health.metrics["video"]["high_frequency"]
        folder = self.root / "samples" / label
        stem = f"p{index}"
        safe_wave = None if wave is None else torch.nan_to_num(wave)
        write_mp4(folder / f"{stem}.mp4", frames, s.fps, safe_wave, rate)
        write_contact_sheet(folder / f"{stem}.png", frames, safe_wave, fps=s.fps)
        def rel(name: str) -> str:  # links in records and the report are relative to the run folder
            return (Path("samples") / label / name).as_posix()

        record = {
            "prompt": self.cfg.validation.prompts[index], "prompt_index": index, "seed": s.seed, "step": step,
            "label": label, "lora_file": lora_file, "base_checkpoint": Path(self.cfg.model.checkpoint).name,
            "settings": s.to_dict(), "seconds": round(t2 - t0, 3), "seconds_sampling": round(t1 - t0, 3),
            "seconds_decoding": round(t2 - t1, 3), "device": _device_name(self.device),
            "audio_sample_rate": rate, "health": health.to_dict(),
            "files": {"video": rel(f"{stem}.mp4"), "contact_sheet": rel(f"{stem}.png"), "record": rel(f"{stem}.json")},
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        tmp = folder / f".{stem}.{os.getpid()}.json.tmp"
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(folder / f"{stem}.json")
        return record

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def step_label(step: int) -> str:
    return f"step_{step:06d}"


# ---------------------------------------------------------------------------------------------------------------
# `ltx-lora validate CONFIG --lora FILE ...`
# ---------------------------------------------------------------------------------------------------------------


def _lora_step(path: Path) -> int | None:
    from ltx_lora.safetensors_header import read_header

    try:
        step = read_header(path).metadata.get("step")
    except Exception:  # noqa: BLE001 - not our file: no step, read_lora_file says what is wrong
        return None
    return int(step) if step and step.isdigit() else None


def validate_loras(cfg: Config, loras: list[Path], *, out: Path | None, steps: int | None, preview_lora: str | None,
                   base: bool, console) -> Path:
    """Sample the base model (unless base=False) and each LoRA file with the config's validation settings."""
    from ltx_lora.model_files import LTX23_DISTILLED, identify
    from ltx_lora.paths import check_model_path
    from ltx_lora.lora.attach import attach_lora, read_lora_file

    # Every refusal before anything loads.
    check_model_path(cfg.model.checkpoint, "checkpoint")
    settings = resolve_settings(cfg.validation, steps=steps, preview_lora=preview_lora)
    if settings.preview:
        check_preview_lora(cfg.model.checkpoint, settings.preview_lora)
    elif identify(cfg.model.checkpoint).kind == LTX23_DISTILLED:
        raise UserError(f"{Path(cfg.model.checkpoint).name} is the Distilled model; LoRAs are trained on and "
                        "validated with Dev (ltx-2.3-22b-dev.safetensors): set it as model.checkpoint.")
    if not loras and not base:
        raise UserError("nothing to sample: give --lora FILE (one or more), or leave out --no-base.")
    stems = [p.stem for p in loras]
    if len(set(stems)) != len(stems) or (base and "base" in stems):
        raise UserError("two --lora files have the same name (each becomes a column named after its file); rename "
                        "or copy one of them.")
    pairs = {p: read_lora_file(p) for p in loras}

    from ltx_lora.ltx.fast import use_sdpa_attention
    from ltx_lora.runtime.placement import HostOffload, attach_block_swap
    from ltx_lora.runtime.memory import plan_for_config
    from ltx_lora.runtime.device import compute_dtype, pick_device
    from ltx_lora.runtime.models import load_models

    run_dir = Path(cfg.output_dir)
    root = out or run_dir / "validate"
    device = pick_device()
    dtype = compute_dtype(cfg.train.mixed_precision)
    # The training run's memory plan (weights format, swapped blocks): what fitted for training fits for sampling.
    plan = plan_for_config(cfg, device)
    console.print(plan.describe(), highlight=False)
    models = load_models(cfg.model.checkpoint, device, dtype, plan)
    metrics = run_dir / "metrics.jsonl"
    on_host = plan.text_connectors_on_host and device.type == "cuda"
    with HostOffload(models.text_connectors, device).on_device() if on_host else nullcontext():
        validator = Validator.build(cfg, root, settings, text_connectors=models.text_connectors, device=device,
                                    dtype=dtype, console=console, metrics=metrics if metrics.is_file() else None,
                                    title=f"{run_dir.name}: validation of {len(loras)} LoRA file(s)")
    transformer = models.transformer.requires_grad_(False)
    del models
    attach_block_swap(transformer, list(plan.swapped_blocks), device)
    use_sdpa_attention(transformer)
    if base:
        validator.run(transformer, step=0, label="base")
    for path in loras:
        with attach_lora(transformer, pairs[path], 1.0, str(path)):
            validator.run(transformer, step=_lora_step(path), label=path.stem, lora_file=str(path))
    return root / "report.html"
