"""Validation samples: fixed prompts, seed and settings, sampled at step 0, every N steps and at the end of a run
(`Validator`, called by the trainer), or afterwards for LoRA files (`validate_loras`, the `validate` command).

Per sample: samples/<checkpoint>/p<i>.mp4 (H.264 + AAC), p<i>.png (contact sheet), p<i>.poster.png (first frame),
p<i>.json (prompt, seed, settings, step, LoRA file, time, health); then report.html is rebuilt: in a run folder from
every record of the run (its checkpoints accumulate, across resumes too), for the `validate` command from what that
command sampled only. Prompt features come from the preprocessing
cache (Gemma never loads here). During in-loop validation the optimizer state waits in host memory and the VAE
decoders come to the GPU only to decode, so sampling needs no more GPU memory than training did.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from ltx_lora.config import Config
from ltx_lora.data.cache import made_for_another_model, read_manifest, read_text
from ltx_lora.errors import UserError
from ltx_lora.files.atomic import atomic_write
from ltx_lora.files.model_files import LTX23_DISTILLED, LTX23_DISTILLED_LORA, identify
from ltx_lora.files.safetensors_header import read_header
from ltx_lora.files.text_features import pad_features
from ltx_lora.lora.attach import attach_lora, read_lora_file
from ltx_lora.ltx.fast import blocks_compiled, can_compile, sampling_blocks, use_sdpa_attention
from ltx_lora.ltx.loader import (
    load_audio_decoder,
    load_audio_encoder,
    load_video_decoder,
    load_video_encoder,
    load_vocoder,
)
from ltx_lora.ltx.sampling import (
    Guidance,
    Prompt,
    SampleRequest,
    decode_audio,
    decode_video,
    sample_latents,
    sigma_schedule,
)
from ltx_lora.ltx.text import run_text_connectors
from ltx_lora.paths import require_regular_file
from ltx_lora.progress import progress
from ltx_lora.runtime.base_file import BaseFile
from ltx_lora.runtime.models import load_models
from ltx_lora.runtime.placement import HostOffload, attach_block_swap
from ltx_lora.runtime.run import Run, SampleSettings, Validate, ValidationFactory
from ltx_lora.sample.conditions import InputEncoder, PromptInputs, check_inputs
from ltx_lora.sample.health import Health, check_sample
from ltx_lora.sample.media import write_audio_sheet, write_contact_sheet, write_mp4, write_poster, write_wav
from ltx_lora.sample.report import build_report
from ltx_lora.task import TaskConfig

DISTILLED_WITH_LORA = ("the Distilled checkpoint already has the distillation baked in; adding the distilled LoRA "
                       "on top gives bad results. Use the Dev checkpoint with the distilled LoRA at strength 0.5-0.6 "
                       "(8 steps, CFG 1.0), or the Distilled checkpoint alone with the LoRA off")


def check_preview_lora(base: BaseFile, preview_lora: str) -> None:
    """Refuse the distilled LoRA on the Distilled model, and a preview LoRA that is not the distilled LoRA."""
    if base.identity.kind == LTX23_DISTILLED:
        raise UserError(f"refusing the distilled LoRA preview on {base.path.name}: {DISTILLED_WITH_LORA}.")
    ident = identify(preview_lora)
    if ident.kind != LTX23_DISTILLED_LORA:
        raise UserError(f"validation.preview_distilled_lora {preview_lora} is not the distilled LoRA ({ident.summary}); "
                        "point it at ltx-2.3-22b-distilled-lora-384.safetensors.")


def check_stg_blocks(base: BaseFile, blocks: list[int]) -> None:
    """validation.stg_blocks are blocks of the base (also run by `ltx-lora doctor --config`)."""
    n = base.blocks
    outside = [b for b in blocks if not 0 <= b < n]
    if outside:
        raise UserError(f"validation.stg_blocks {outside} are not blocks of {base.path.name} (it has {n}, "
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
    """The denoising steps: a live bar on a terminal; in a log a line now and then, none at the end (the sample's
    own line follows)."""
    return progress(console, TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), final_line=False)


@dataclass
class Validator:
    """Built once per run (or per `validate` command); `sample()` samples every prompt with the model as it is now."""

    run: Run
    root: Path  # run folder (or the validate command's output folder): samples/ and report.html go here
    console: object
    metrics: Path | None = None
    title: str = ""
    prompts: list = field(default_factory=list)  # ltx_lora.ltx.sampling.Prompt per validation prompt
    negative: object = None
    decoders: dict = field(default_factory=dict)
    inputs: list[PromptInputs] = field(default_factory=list)  # each prompt's conditioning inputs, encoded
    preview_pairs: dict | None = None
    baseline_hf: dict[int, float] = field(default_factory=dict)
    # None: the report shows every record under root/samples (a training run). A list (the validate command): the
    # report shows these records only, the ones this command sampled, not older samples of other settings in root.
    session: list[dict] | None = None
    compile_failed: bool = False  # sampling with compiled blocks failed once: eager from then on
    one_pass_at_a_time: bool = False  # the batched passes ran out of GPU memory once: one at a time from then on
    # validation.compile auto: None follows the transformer (in-loop: compiled where training compiled its blocks);
    # the validate command sets it from train.compile.
    auto_compiles: bool | None = None

    @property
    def cfg(self) -> Config:
        return self.run.config

    @property
    def settings(self) -> SampleSettings:
        return self.run.sampling

    @property
    def device(self) -> torch.device:
        return self.run.device

    @property
    def dtype(self) -> torch.dtype:
        return self.run.dtype

    @classmethod
    def build(cls, run: Run, root: Path, *, text_connectors, console, metrics: Path | None = None,
              title: str = "") -> Validator:
        self = cls(run, Path(root), console, metrics, title or run.run_dir.name)
        settings = run.sampling
        if settings is None:
            raise UserError("validation.prompts is empty; add 2-3 fixed prompts to the config, run `ltx-lora "
                            "preprocess` (it caches their text features), then validate.")
        check_validation(run)
        samples = run.config.validation_samples()
        if run.task.video.find("first_frame") and not settings.reference_image and not any(s.image for s in samples):
            console.print("note: the task trains with a first-frame condition but neither validation.reference_image "
                          "nor a prompt's image is set: the validation samples are text-to-video.", highlight=False,
                          markup=False)
        if settings.preview:
            check_preview_lora(run.base, settings.preview_lora)

            self.preview_pairs = read_lora_file(settings.preview_lora)
        self._load_prompts(text_connectors)
        self._load_decoders()
        self._encode_inputs(samples)
        self._load_baselines()
        return self

    # -- set-up --------------------------------------------------------------------------------------------------
    def _load_prompts(self, connectors) -> None:
        cache = Path(self.cfg.data.cache_dir)
        manifest = read_manifest(cache)
        made_for = manifest.settings.get("checkpoint")
        if made_for_another_model(manifest, self.cfg.model.checkpoint):
            raise UserError(f"the cache in {cache} was made with another model file ({made_for}) than "
                            f"{self.cfg.model.checkpoint}, so its "
                            "prompt features do not fit; run `ltx-lora preprocess` with this config.")
        texts = [*self.cfg.validation_prompts(), self.settings.negative_prompt]
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
        ckpt = self.cfg.model.checkpoint
        park = torch.device("cpu")  # parked in host memory; on the GPU only while decoding
        task = self.run.task
        if task.video.present:
            self.decoders["video"] = load_video_decoder(ckpt, device=park, dtype=self.dtype).requires_grad_(False)
        if task.audio.role == "condition" or (task.audio.generated and self.settings.audio):
            self.decoders["audio"] = load_audio_decoder(ckpt, device=park, dtype=torch.float32).requires_grad_(False)
            self.decoders["vocoder"] = load_vocoder(ckpt, device=park, dtype=torch.float32).requires_grad_(False)

    def _encode_inputs(self, samples) -> None:
        """Each prompt's inputs, encoded once (the encoders load only when a prompt has an input, and go again)."""
        ref_image = self.settings.reference_image
        wants_video = bool(ref_image) or any(s.image or s.video or s.reference_video for s in samples)
        wants_audio = any(s.audio or s.reference_audio for s in samples)
        if not (wants_video or wants_audio):
            self.inputs = [PromptInputs() for _ in samples]
            return
        ckpt = self.cfg.model.checkpoint
        video_encoder = load_video_encoder(ckpt, device=self.device, dtype=self.dtype) if wants_video else None
        audio_encoder = load_audio_encoder(ckpt, device=self.device, dtype=torch.float32) if wants_audio else None
        encoder = InputEncoder(self.run.task, self.settings, video_encoder, audio_encoder, self.root / "inputs")
        with torch.no_grad():
            self.inputs = [encoder.encode(i, s, ref_image) for i, s in enumerate(samples)]
        del video_encoder, audio_encoder, encoder
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _load_baselines(self) -> None:
        """High-frequency share of each prompt's step-0 sample (this or an earlier session of the run)."""
        for path in (self.root / "samples").glob("*/*.json"):
            try:
                rec = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            same_base = rec.get("base_checkpoint") == Path(self.cfg.model.checkpoint).name
            if (rec.get("step") == 0 and rec["health"]["status"] == "ok" and same_base
                    and rec["settings"] == self.settings.to_dict() and "video" in rec["health"]["metrics"]):
                self.baseline_hf[rec["prompt_index"]] = rec["health"]["metrics"]["video"]["high_frequency"]

    # -- sampling ------------------------------------------------------------------------------------------------
    def sample(self, transformer, *, step: int | None, label: str, lora_file: str | None = None,
            optimizer=None) -> list[dict]:
        """Sample every prompt with `transformer` as it is; write the files; rebuild the report."""

        was_training = transformer.training
        transformer.eval()
        preview = (attach_lora(transformer, self.preview_pairs, self.settings.preview_strength, "the distilled LoRA")
                   if self.preview_pairs else nullcontext())
        records = []
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        try:
            # Sampling draws from its own seeded generators; fork_rng keeps the training RNG exactly as it was.
            with torch.random.fork_rng(devices=devices), optimizer_state_on_host(optimizer, self.device), preview:
                for i, prompt in enumerate(self.prompts):
                    records.append(self._one(transformer, i, prompt, step=step, label=label, lora_file=lora_file))
        finally:
            transformer.train(was_training)

        if self.session is not None:
            self.session += records
        build_report(self.root, title=self.title, config_text=self.cfg.to_yaml(), metrics=self.metrics,
                     records=self.session)
        bad = [r for r in records if r["health"]["status"] != "ok"]
        for r in bad:
            colour = "yellow" if r["health"]["status"] == "explained" else "red"
            self.console.print(Text.assemble((f"validation {label} prompt {r['prompt_index']}:", colour), " ",
                                             " ".join(r["health"]["problems"] + r["health"]["notes"])), highlight=False)
        total = sum(r["seconds"] for r in records)
        self.console.print(f"validation {label}: {len(records)} samples in {total:.1f} s "
                           f"({len(records) - len(bad)} healthy) -> {self.root / 'report.html'}", highlight=False)
        return records

    def _one(self, transformer, index: int, prompt, *, step: int | None, label: str, lora_file: str | None) -> dict:
        s, task = self.settings, self.run.task
        given = self.inputs[index] if index < len(self.inputs) else PromptInputs()
        req = SampleRequest(
            width=s.width, height=s.height, frames=s.frames, fps=s.fps, seed=s.seed,
            sigmas=sigma_schedule(s.steps, distilled=s.preview),
            video_guidance=Guidance(s.cfg, s.stg_scale, s.stg_blocks, s.guidance_rescale, s.modality_scale),
            audio_guidance=Guidance(s.audio_cfg, s.audio_stg_scale, s.stg_blocks, s.guidance_rescale,
                                    s.audio_modality_scale),
            with_video=task.video.generated, with_audio=task.audio.generated and s.audio and prompt.audio is not None,
            first_frame=given.first_frame, video_given=given.video_given, audio_given=given.audio_given,
            video_conditions=given.video_conditions, audio_conditions=given.audio_conditions)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.dtype == torch.bfloat16)
        t0 = time.perf_counter()
        with _progress(self.console) as bar:
            steps_task = bar.add_task(f"sampling {label} prompt {index + 1}/{len(self.prompts)}", total=s.steps)
            with autocast:
                video_lat, audio_lat = self._latents(transformer, req, prompt,
                                                     on_step=lambda n: bar.update(steps_task, completed=n))
        self._sync()
        t1 = time.perf_counter()
        nonfinite = [name for name, t in (("video latents", video_lat), ("audio latents", audio_lat))
                     if t is not None and not torch.isfinite(t).all()]
        frames = wave = rate = None
        if video_lat is not None:
            with _on(self.decoders["video"], self.device) as dec:
                frames = decode_video(dec, torch.nan_to_num(video_lat), s.seed)
        if audio_lat is not None:
            with _on(self.decoders["audio"], self.device) as adec, _on(self.decoders["vocoder"], self.device) as voc:
                wave, rate = decode_audio(adec, voc, torch.nan_to_num(audio_lat))
            if not torch.isfinite(wave).all():
                nonfinite.append("waveform")
        self._sync()
        t2 = time.perf_counter()
        health: Health = check_sample(frames, wave, nonfinite=nonfinite, step=step,
                                      baseline_hf=self.baseline_hf.get(index), fp8_base=self.run.base.is_fp8)
        if step == 0 and health.status == "ok" and "video" in health.metrics:
            self.baseline_hf[index] = health.metrics["video"]["high_frequency"]
        self.console.print(f"validation {label} prompt {index + 1}/{len(self.prompts)}: sampled in {t1 - t0:.1f} s, "
                           f"decoded in {t2 - t1:.1f} s, health {health.status}", highlight=False, markup=False)
        folder = self.root / "samples" / label
        stem = f"p{index}"
        safe_wave = None if wave is None else torch.nan_to_num(wave)

        def rel(path: Path | str) -> str:  # links in records and the report are relative to the run folder
            return Path(path).relative_to(self.root).as_posix() if Path(path).is_absolute() else \
                (Path("samples") / label / path).as_posix()

        if frames is not None:
            write_mp4(folder / f"{stem}.mp4", frames, s.fps, safe_wave, rate)
            write_contact_sheet(folder / f"{stem}.png", frames, safe_wave, fps=s.fps)
            write_poster(folder / f"{stem}.poster.png", frames)
            files = {"video": rel(f"{stem}.mp4"), "contact_sheet": rel(f"{stem}.png"),
                     "poster": rel(f"{stem}.poster.png")}
        else:  # sound only: a WAV and its waveform over its spectrogram
            write_wav(folder / f"{stem}.wav", safe_wave, rate)
            write_audio_sheet(folder / f"{stem}.png", safe_wave, rate)
            files = {"audio": rel(f"{stem}.wav"), "contact_sheet": rel(f"{stem}.png")}
        files["record"] = rel(f"{stem}.json")
        inputs = [{**item, "file": rel(item["file"]), **({"poster": rel(item["poster"])} if "poster" in item else {})}
                  for item in given.shown]
        record = {
            "prompt": self.cfg.validation_prompts()[index], "prompt_index": index, "seed": s.seed, "step": step,
            "label": label, "lora_file": lora_file, "base_checkpoint": Path(self.cfg.model.checkpoint).name,
            "settings": s.to_dict(), "seconds": round(t2 - t0, 3), "seconds_sampling": round(t1 - t0, 3),
            "seconds_decoding": round(t2 - t1, 3), "device": _device_name(self.device),
            "audio_sample_rate": rate, "health": health.to_dict(), "files": files, "inputs": inputs,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        atomic_write(folder / f"{stem}.json", json.dumps(record, indent=1))
        return record

    def compiles(self, transformer) -> bool:
        """Whether this sample runs compiled blocks (validation.compile): auto where training compiled them on a GPU
        (for the validate command: where train.compile would), on always, off never."""
        setting = self.cfg.validation.compile
        if setting == "off" or self.compile_failed:
            return False
        if setting == "on":
            return True
        if self.auto_compiles is not None:
            return self.auto_compiles
        return self.device.type == "cuda" and blocks_compiled(transformer)

    def _latents(self, transformer, req: SampleRequest, prompt, on_step):
        """sample_latents with the blocks as validation.compile says and a step's passes batched. Two fallbacks,
        each kept for the rest of the run, each sampling the prompt again (it draws from its own seeded generator:
        the same sample): a compile failure samples with eager blocks; running out of GPU memory with the passes
        batched (up to 4x one pass's activations) samples them one at a time."""
        while True:
            compiled = self.compiles(transformer)
            with sampling_blocks(transformer, compiled):
                try:
                    return sample_latents(transformer, req, prompt, self.negative, device=self.device,
                                          dtype=self.dtype, on_step=on_step, batched=not self.one_pass_at_a_time)
                except UserError:
                    raise
                except torch.OutOfMemoryError:
                    if self.one_pass_at_a_time:
                        raise
                    failure = None
                except Exception as e:  # any compiler failure: sampling still runs, only slower
                    if not compiled:
                        raise
                    failure = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"
            # Outside the except blocks: the failed attempt's frames (and their tensors) are released by now.
            if failure is None:
                self.one_pass_at_a_time = True
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                self.console.print("note: the GPU ran out of memory sampling a step's guidance passes as one batch; "
                                   "validation runs them one at a time from now on (slower).", highlight=False,
                                   markup=False)
            else:
                self.compile_failed = True
                self.console.print(f"note: sampling with compiled blocks failed ({failure}); validation samples "
                                   "eager from now on (slower). Set validation.compile: off to skip the attempt.",
                                   highlight=False, markup=False)

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

    try:
        step = read_header(path).metadata.get("step")
    except Exception:  # noqa: BLE001 - not our file: no step, read_lora_file says what is wrong
        return None
    return int(step) if step and step.isdigit() else None


def check_validation(run: Run) -> None:
    """Refuse validation settings that cannot sample, before any model loads."""
    check_stg_blocks(run.base, run.sampling.stg_blocks)
    check_prompts(run.config, run.sampling, run.task)


def check_prompts(config: Config, settings: SampleSettings, task: TaskConfig) -> None:
    """The part of `check_validation` the config alone decides (the prompts' inputs against the task, their files):
    also run by `ltx-lora doctor --config`, so a prompt the task cannot sample is named before preprocessing."""
    if settings.reference_image:
        require_regular_file(settings.reference_image, "validation.reference_image",
                             "give a local image file, or null for text-to-video samples")
    if not task.video.generated and task.audio.generated and not settings.audio:
        raise UserError("validation.audio is false but the task generates only sound: there would be nothing to "
                        "sample; set validation.audio: true.")
    check_inputs(config.validation_samples(), task, settings, settings.reference_image)


def training_validation(run: Run, console) -> ValidationFactory | None:
    """The validation hook `ltx-lora train` hands the trainer: given the frozen text connectors, a function that
    samples every prompt with the transformer as it is at a step (None when the config has no prompts)."""
    if run.sampling is None:
        return None
    check_validation(run)

    def build(text_connectors) -> Validate:
        validator = Validator.build(run, run.run_dir, text_connectors=text_connectors, console=console,
                                    metrics=run.run_dir / "metrics.jsonl")
        return lambda transformer, step, optimizer: validator.sample(transformer, step=step, label=step_label(step),
                                                                  optimizer=optimizer)

    return build


def write_training_report(run: Run) -> Path:
    """OUTPUT_DIR/report.html once training ends (or stops), validation on or off: the samples the run has and its
    loss curves up to the last logged step."""
    return build_report(run.run_dir, title=run.run_dir.name, config_text=run.config.to_yaml(),
                        metrics=run.run_dir / "metrics.jsonl")


def _what(loras: list[Path], base: bool) -> str:
    files = f"{len(loras)} LoRA file{'' if len(loras) == 1 else 's'}" if loras else ""
    return " and ".join([*(["the base model"] if base else []), *([files] if files else [])])


def validate_loras(run: Run, loras: list[Path], *, out: Path | None, base: bool, console) -> Path:
    """Sample the base model (unless base=False) and each LoRA file with the run's validation settings."""
    # Every refusal before anything loads.
    if run.sampling is None:
        raise UserError("validation.prompts is empty; add 2-3 fixed prompts to the config, run `ltx-lora "
                        "preprocess` (it caches their text features), then validate.")
    check_validation(run)
    if run.sampling.preview:
        check_preview_lora(run.base, run.sampling.preview_lora)
    elif run.base.identity.kind == LTX23_DISTILLED:
        raise UserError(f"{run.base.path.name} is the Distilled model; LoRAs are trained on and validated with Dev "
                        "(ltx-2.3-22b-dev.safetensors): set it as model.checkpoint.")
    if not loras and not base:
        raise UserError("nothing to sample: give --lora FILE (one or more), or leave out --no-base.")
    stems = [p.stem for p in loras]
    if len(set(stems)) != len(stems) or (base and "base" in stems):
        raise UserError("two --lora files have the same name (each becomes a column named after its file); rename "
                        "or copy one of them.")
    pairs = {p: read_lora_file(p) for p in loras}

    root = out or run.run_dir / "validate"
    # The training run's memory plan (weights format, swapped blocks): what fitted for training fits for sampling.
    plan, device = run.plan, run.device
    console.print(plan.describe(), highlight=False)
    models = load_models(run.config.model.checkpoint, device, run.dtype, plan)
    metrics = run.run_dir / "metrics.jsonl"
    on_host = plan.text_connectors_on_host and device.type == "cuda"
    with HostOffload(models.text_connectors, device).on_device() if on_host else nullcontext():
        validator = Validator.build(run, root, text_connectors=models.text_connectors, console=console,
                                    metrics=metrics if metrics.is_file() else None,
                                    title=f"{run.run_dir.name}: validation of {_what(loras, base)}")
    validator.session = []  # this command's report shows what it samples, not earlier validate runs in root
    transformer = models.transformer.requires_grad_(False)
    del models
    attach_block_swap(transformer, list(plan.swapped_blocks), device)
    use_sdpa_attention(transformer)
    # validation.compile auto: compiled where training would compile its blocks (train.compile, on a GPU)
    validator.auto_compiles = (run.config.train.compile != "off" and device.type == "cuda"
                               and can_compile(device)[0])
    if base:
        validator.sample(transformer, step=0, label="base")
    for path in loras:
        with attach_lora(transformer, pairs[path], 1.0, str(path)):
            validator.sample(transformer, step=_lora_step(path), label=path.stem, lora_file=str(path))
    return root / "report.html"
