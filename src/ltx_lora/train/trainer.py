"""The LoRA training loop, top to bottom: load, adapt, (resume), step, log, checkpoint, export."""

from __future__ import annotations

import contextlib
import gc
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ltx_lora.checkpoints import require_training_base
from ltx_lora.config import Config, TrainingMode
from ltx_lora.data.cache import Manifest, read_manifest
from ltx_lora.data.loader import BatchOrder, load_batch
from ltx_lora.errors import UserError
from ltx_lora.ltx.fast import attention_mask_or_none, can_compile, compile_blocks, uncompile_blocks, use_sdpa_attention
from ltx_lora.ltx.text import run_text_connectors
from ltx_lora.paths import check_model_path
from ltx_lora.train.block_swap import HostOffload, attach_block_swap
from ltx_lora.train.checkpoint import TrainingState, latest_checkpoint, load_state, save_checkpoint
from ltx_lora.train.lora import export_comfy, inject_lora, lora_parameters, target_modules
from ltx_lora.train.memory import Plan, plan_for_config
from ltx_lora.train.metrics import MetricsLogger
from ltx_lora.train.objective import LatentBatch
from ltx_lora.train.optim import build_optimizer, set_lr
from ltx_lora.train.step import NonFiniteLoss, forward_backward
from ltx_lora.train.timesteps import SigmaSampler


class TrainingFailed(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""


# Settings a resumed run must share with the run that wrote the checkpoint.
def resume_fingerprint(cfg: Config) -> dict:
    return {"checkpoint": cfg.model.checkpoint, "mode": cfg.train.mode.value, "rank": cfg.lora.rank,
            "alpha": cfg.lora.effective_alpha, "targets": target_modules(cfg.lora), "seed": cfg.train.seed,
            "batch_size": cfg.train.batch_size, "gradient_accumulation": cfg.train.gradient_accumulation,
            "cache_dir": cfg.data.cache_dir}


@dataclass
class Models:
    transformer: torch.nn.Module
    text_connectors: torch.nn.Module  # frozen; turn cached Gemma features into the two text contexts


def pick_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def load_models(cfg: Config, device: torch.device, dtype: torch.dtype, plan: Plan | None = None) -> Models:
    from ltx_lora.ltx.models import load_transformer
    from ltx_lora.ltx.text import load_text_connectors

    transformer = load_transformer(cfg.model.checkpoint, device=device, dtype=dtype,
                                   quantization=plan.quantization if plan else "none",
                                   host_blocks=frozenset(plan.swapped_blocks) if plan else frozenset())
    on_host = plan is not None and plan.text_connectors_on_host
    connectors = load_text_connectors(cfg.model.checkpoint, device="cpu" if on_host else device, dtype=dtype)
    connectors.requires_grad_(False).eval()
    return Models(transformer, connectors)


def lora_metadata(cfg: Config, step: int, manifest: Manifest) -> dict[str, str]:
    """safetensors header of every exported LoRA: enough to know what it is and what it fits."""
    return {
        "format": "pt", "ltx_lora.version": "1", "base_model": "LTX-2.3 22B Dev",
        "base_checkpoint": Path(cfg.model.checkpoint).name,
        "base_identity": json.dumps(manifest.settings.get("model_identity", {})),
        "rank": str(cfg.lora.rank), "alpha": str(cfg.lora.effective_alpha), "alpha_folded_into_lora_B": "true",
        "target_modules": json.dumps(target_modules(cfg.lora)), "mode": cfg.train.mode.value,
        "trigger_word": cfg.data.trigger_word, "step": str(step),
    }


class Trainer:
    def __init__(self, cfg: Config, resume: bool = False, max_steps: int | None = None, console=None):
        from rich.console import Console

        self.cfg = cfg
        self.resume = resume
        self.total_steps = max_steps or cfg.train.steps
        self.console = console or Console(stderr=True)
        self.run_dir = Path(cfg.output_dir)
        self.cache = Path(cfg.data.cache_dir)
        self.device = pick_device()
        self.dtype = torch.bfloat16 if cfg.train.mixed_precision == "bf16" else torch.float32
        self.train_audio = cfg.train.mode in (TrainingMode.audio_video, TrainingMode.image_to_video)
        self.block_swap = None  # set by run() from the memory plan
        self.connectors_host: HostOffload | None = None

    # -- set-up ------------------------------------------------------------------------------------------------
    def _check_supported(self) -> None:
        """Settings this version cannot honour yet are refused, never silently ignored."""
        # (nothing refused at the moment: every memory setting and in-loop validation are available)

    def _memory_plan(self) -> Plan:
        """Weights format, block swap and rank for this GPU (ltx_lora.train.memory), printed before loading."""
        plan = plan_for_config(self.cfg, self.device)
        self.console.print(plan.describe())
        if plan.rank != self.cfg.lora.rank:
            self.cfg.lora.rank = plan.rank
        return plan

    def _check_cache(self, manifest: Manifest) -> None:
        if not manifest.items:
            raise UserError(f"the preprocessed dataset in {self.cache} is empty: every clip was skipped; see the "
                            "preprocess report, fix or add clips, and run `ltx-lora preprocess` again.")
        made_for = manifest.settings.get("checkpoint")
        if made_for and Path(made_for).name != Path(self.cfg.model.checkpoint).name:
            raise UserError(f"the cache in {self.cache} was made with {made_for}, not {self.cfg.model.checkpoint}; "
                            "run `ltx-lora preprocess` with this config, or set data.cache_dir to another folder.")
        if self.train_audio and not any(i.has_audio for i in manifest.items):
            raise UserError(f"train.mode {self.cfg.train.mode.value} trains audio but no cached clip has audio; "
                            "use mode t2v or preprocess clips with audio.")

    def _restore(self, params: dict[str, torch.nn.Parameter], optimizer, order: BatchOrder,
                 gen: torch.Generator) -> int:
        ckpt = latest_checkpoint(self.run_dir)
        if ckpt is None:
            self.console.print(f"no checkpoint in {self.run_dir}/checkpoints yet: starting from step 0")
            return 0
        state = load_state(ckpt)
        expected = resume_fingerprint(self.cfg)
        for key, value in expected.items():
            if state.meta.get(key) != value:
                raise UserError(f"{ckpt} was trained with {key}={state.meta.get(key)!r} but the config says "
                                f"{value!r}; restore that setting or train into a new output_dir.")
        missing = set(params) ^ set(state.lora)
        if missing:
            raise UserError(f"{ckpt} holds other LoRA layers than this model has ({sorted(missing)[0]} ...); "
                            "resume with the same base checkpoint and LoRA targets.")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(state.lora[name])
        optimizer.load_state_dict(state.optimizer)
        order.restore(state.data_position)
        gen.set_state(state.rng["sampler"])
        torch.set_rng_state(state.rng["torch_cpu"])
        if "torch_cuda" in state.rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(state.rng["torch_cuda"])
        self.console.print(f"resumed from {ckpt} at step {state.step}")
        return state.step

    # -- the loop ----------------------------------------------------------------------------------------------
    def run(self) -> Path:
        cfg = self.cfg
        self._check_supported()
        check_model_path(cfg.model.checkpoint, "checkpoint")  # the base first: a wrong file explains most else
        require_training_base(Path(cfg.model.checkpoint))
        manifest = read_manifest(self.cache)
        self._check_cache(manifest)
        if not self.resume and latest_checkpoint(self.run_dir) is not None:
            raise UserError(f"{self.run_dir} already holds checkpoints; pass --resume to continue that run, or set "
                            "output_dir to a new folder.")
        plan = self._memory_plan()
        models = load_models(cfg, self.device, self.dtype, plan)
        transformer = models.transformer
        trainable = inject_lora(transformer, cfg.lora, seed=cfg.train.seed)
        self.block_swap = attach_block_swap(transformer, list(plan.swapped_blocks), self.device)
        self.connectors_host = HostOffload(models.text_connectors, self.device) if plan.text_connectors_on_host else None
        transformer.set_gradient_checkpointing(cfg.train.gradient_checkpointing)
        use_sdpa_attention(transformer)
        self.compiled = self._compile(transformer)
        transformer.train()
        params = lora_parameters(transformer)
        optimizer = build_optimizer(trainable, cfg.train)
        order = BatchOrder(manifest.items, cfg.train.batch_size, cfg.train.seed, cfg.data.token_budget)
        gen = torch.Generator(self.device).manual_seed(cfg.train.seed)
        sampler = SigmaSampler(cfg.train.timestep_sampling)
        start = self._restore(params, optimizer, order, gen) if self.resume else 0

        n_params = sum(p.numel() for p in trainable)
        self.console.print(f"training {n_params / 1e6:.2f} M LoRA parameters ({len(trainable) // 2} layers, rank "
                           f"{cfg.lora.rank}) on {self.device} for steps {start + 1}..{self.total_steps}, "
                           f"mode {cfg.train.mode.value}, {len(manifest.items)} cached clips")
        metrics = MetricsLogger(self.run_dir, cfg.logging, self.console, total_steps=self.total_steps, start=start)
        validate = self._validator(models)
        if validate and start == 0:
            validate(transformer, 0, optimizer)  # the base model: the baseline every later sample is judged against
        step = start
        try:
            for step in range(start, self.total_steps):
                t0 = time.perf_counter()
                lr = set_lr(optimizer, step, cfg.train)
                step_args = (models, manifest, order, sampler, gen, optimizer, trainable, step)
                if self.compiled and step == start:  # compiling happens here: fall back to eager if it fails
                    video_loss, audio_loss = self._first_compiled_step(*step_args)
                else:
                    video_loss, audio_loss = self._optimizer_step(*step_args)
                done = step + 1
                metrics.log_step(done, video_loss, audio_loss, lr, time.perf_counter() - t0)
                if done % cfg.checkpoints.every == 0 or done == self.total_steps:
                    self._save(done, transformer, params, optimizer, order, gen, manifest)
                if validate and (done % cfg.validation.every == 0 or done == self.total_steps):
                    validate(transformer, done, optimizer)
        finally:
            metrics.close()
        return self._export_final(transformer, manifest, self.total_steps)

    def _validator(self, models: Models):
        """Fixed-prompt samples at step 0, every validation.every steps and at the end (see ltx_lora.sample)."""
        v = self.cfg.validation
        if not (v.every and v.prompts):
            return None
        from ltx_lora.sample.validate import Validator, resolve_settings, step_label

        with self.connectors_host.on_device() if self.connectors_host else contextlib.nullcontext():
            validator = Validator.build(self.cfg, self.run_dir, resolve_settings(v), text_connectors=models.text_connectors,
                                        device=self.device, dtype=self.dtype, console=self.console,
                                        metrics=self.run_dir / "metrics.jsonl")
        return lambda transformer, step, optimizer: validator.run(transformer, step=step, label=step_label(step),
                                                                  optimizer=optimizer)

    def _compile(self, transformer) -> bool:
        setting = self.cfg.train.compile
        if setting == "off":
            return False
        ok, why = can_compile(self.device, asked=setting == "on")
        if not ok:
            if setting == "on":
                self.console.print(f"note: train.compile is on but blocks are not compiled: {why}; running eager.")
            return False
        compile_blocks(transformer)
        return True

    def _first_compiled_step(self, models: Models, manifest: Manifest, order: BatchOrder, sampler: SigmaSampler,
                             gen: torch.Generator, optimizer, trainable, step: int) -> tuple[float, float | None]:
        """The first step compiles the blocks; if that fails, undo the step's draws and run it eager."""
        position, gen_state = order.position(), gen.get_state()
        cpu_rng = torch.get_rng_state()
        try:
            return self._optimizer_step(models, manifest, order, sampler, gen, optimizer, trainable, step)
        except (TrainingFailed, torch.OutOfMemoryError):
            raise
        except Exception as e:  # noqa: BLE001 - any compiler failure: training still runs, only slower
            first_line = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            failure = f"{type(e).__name__}: {first_line}"
        # Retried outside the except block: the failed attempt's traceback keeps torch.utils.checkpoint's
        # saved-tensor hooks of the interrupted block alive until it is released and collected.
        gc.collect()
        self.console.print(f"note: compiling the transformer blocks failed ({failure}); training continues eager "
                           "(slower). Set train.compile: off to skip the attempt.")
        uncompile_blocks(models.transformer)
        self.compiled = False
        optimizer.zero_grad(set_to_none=True)
        order.restore(position)
        gen.set_state(gen_state)
        torch.set_rng_state(cpu_rng)
        return self._optimizer_step(models, manifest, order, sampler, gen, optimizer, trainable, step)

    def _optimizer_step(self, models: Models, manifest: Manifest, order: BatchOrder, sampler: SigmaSampler,
                        gen: torch.Generator, optimizer, trainable, step: int) -> tuple[float, float | None]:
        cfg = self.cfg
        accum = cfg.train.gradient_accumulation
        video_sum, audio_sum = 0.0, None
        for _ in range(accum):
            items = [manifest.items[i] for i in order.next()]
            raw = load_batch(self.cache, items, self.device, self.dtype, with_audio=self.train_audio)
            on_device = self.connectors_host.on_device() if self.connectors_host else contextlib.nullcontext()
            with torch.no_grad(), on_device:  # the text connectors are frozen: run them, keep no graph
                vctx, actx, mask = run_text_connectors(models.text_connectors, raw.text)
            mask = attention_mask_or_none(mask)
            batch = LatentBatch(video=raw.video, audio=raw.audio, video_context=vctx, audio_context=actx,
                                context_mask=mask, fps=raw.fps)
            try:
                loss = forward_backward(models.transformer, batch, sampler, gen, train_audio=self.train_audio,
                                        first_frame_p=cfg.train.first_frame_conditioning_p, dtype=self.dtype,
                                        audio_loss_weight=cfg.train.audio_loss_weight, loss_scale=1 / accum)
            except NonFiniteLoss as e:
                last = latest_checkpoint(self.run_dir)
                raise TrainingFailed(f"the loss became {e.value} at step {step + 1}; training stopped. "
                                     f"The last good checkpoint is {last or 'none (none was saved yet)'}. Lower "
                                     "train.learning_rate or check the cached data, then resume with --resume.") from None
            video_sum += loss.video.mean().item() / accum
            if loss.audio is not None:
                audio_sum = (audio_sum or 0.0) + loss.audio.mean().item() / accum
        if cfg.train.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(trainable, cfg.train.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return video_sum, audio_sum

    # -- saving ------------------------------------------------------------------------------------------------
    def _save(self, step: int, transformer, params, optimizer, order: BatchOrder, gen: torch.Generator,
              manifest: Manifest) -> Path:
        rng = {"sampler": gen.get_state(), "torch_cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["torch_cuda"] = torch.cuda.get_rng_state()
        state = TrainingState(step=step, lora={k: v.detach() for k, v in params.items()},
                              optimizer=optimizer.state_dict(), rng=rng, data_position=order.position(),
                              meta=resume_fingerprint(self.cfg))
        lora = export_comfy(transformer, self.cfg.lora.rank, self.cfg.lora.effective_alpha)
        try:
            path = save_checkpoint(self.run_dir, state, lora, lora_metadata(self.cfg, step, manifest),
                                   self.cfg.checkpoints.keep_last)
        except OSError as e:
            raise TrainingFailed(f"could not write the checkpoint of step {step} into {self.run_dir} ({e.strerror}); "
                                 "free disk space, then resume with --resume (earlier checkpoints are intact).") from None
        self.console.print(f"saved checkpoint {path}")
        return path

    def _export_final(self, transformer, manifest: Manifest, step: int) -> Path:
        from ltx_lora.data.cache import atomic_save

        out = self.run_dir / "lora.safetensors"
        atomic_save(export_comfy(transformer, self.cfg.lora.rank, self.cfg.lora.effective_alpha), out,
                    lora_metadata(self.cfg, step, manifest))
        self.console.print(f"final LoRA: {out} (ComfyUI layout; loads in ComfyUI, ltx-core and diffusers)")
        return out

