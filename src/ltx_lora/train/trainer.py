"""The LoRA training loop, top to bottom: load, adapt, (resume), step, log, checkpoint, export.

The trainer reads one resolved `Run` (ltx_lora.runtime.run): the config as written plus what was derived from it
(memory plan, LoRA rank and alpha, steps, device, dtype). Validation reaches it as a hook the `train` command
builds (`validation`), so training never imports the sampler.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from rich.console import Console
from safetensors import SafetensorError

from ltx_lora.data.cache import Manifest, made_for_another_model, missing_files, read_manifest, read_text, same_path
from ltx_lora.data.caption import preservation_caption
from ltx_lora.data.loader import (
    BatchOrder,
    caption_dropout_draw,
    check_cache_for_task,
    empty_prompt_file,
    load_batch,
    text_files,
)
from ltx_lora.data.report import report_path_for
from ltx_lora.distributed import env as dist_env
from ltx_lora.distributed import parallel
from ltx_lora.errors import UserError
from ltx_lora.files.atomic import atomic_write
from ltx_lora.files.lora_file import write_lora_tensors
from ltx_lora.files.text_features import pad_batch
from ltx_lora.ltx.fast import (
    attention_mask_or_none,
    can_compile,
    compile_blocks,
    set_recomputed_blocks,
    uncompile_blocks,
    use_sdpa_attention,
)
from ltx_lora.ltx.text import run_text_connectors
from ltx_lora.files.lora_file import LoraFile
from ltx_lora.runtime.inputs import check_base, check_lora_init
from ltx_lora.runtime.models import Models, load_models
from ltx_lora.runtime.placement import HostOffload, attach_block_swap
from ltx_lora.runtime.run import Run, Validate, ValidationFactory
from ltx_lora.task import SpatialCropCondition, task_name
from ltx_lora.train.checkpointer import (
    DamagedCheckpoint,
    TrainingState,
    checkpoint_ema_lora_name,
    checkpoint_lora,
    latest_training_checkpoint,
    load_training_state,
    save_training_checkpoint,
    training_checkpoints,
)
from ltx_lora.train.ema import LoraEma
from ltx_lora.train.graphed import StepGraphs, can_graph
from ltx_lora.train.lora import (
    adapted_module,
    export_adapter,
    initial_adapter,
    inject_lora,
    lora_parameters,
)
from ltx_lora.train.metrics import MetricsLogger, require_logging_packages
from ltx_lora.train.objective import LatentBatch
from ltx_lora.train.optim import build_optimizer, set_lr
from ltx_lora.train.step import NonFiniteLoss, Preservation, forward_backward
from ltx_lora.train.timesteps import SigmaSampler

# Fingerprint keys added later: what a training checkpoint written before them was trained with.
_FINGERPRINT_DEFAULTS = {"variant": "lora", "rslora": False, "lokr_factor": -1, "loraplus_lr_ratio": 1.0,
                         "blocks": None}
# Compared only where the checkpoint records them: written before they were, it may hold any of their values.
_FINGERPRINT_UNRECORDED = ("optimizer",)
PATH_FINGERPRINTS = ("checkpoint", "cache_dir")  # compared as files, not as spellings


class TrainingFailed(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C or SIGTERM: the step under way was finished and saved as a training checkpoint (`checkpoint`)."""

    def __init__(self, step: int, checkpoint: Path, signum: int = signal.SIGINT):
        super().__init__(f"after step {step}: saved the training checkpoint {checkpoint}")
        self.step, self.checkpoint, self.signum = step, checkpoint, signum

    @property
    def exit_status(self) -> int:
        """128 + the signal, as a shell reports a process stopped by it (130 for Ctrl-C, 143 for SIGTERM)."""
        return 128 + self.signum


class StopOnSignal:
    """While training: the first Ctrl-C (SIGINT) or SIGTERM (a cloud machine being stopped, a scheduler's
    preemption, `kill`) asks the loop to stop after the step under way, which is then saved, so a stopped machine
    loses no finished step; a second one stops at once, as those signals do elsewhere. Only the main thread can
    handle signals: elsewhere (a caller's worker thread) they keep their usual meaning."""

    NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}

    def __init__(self, say):
        self.say, self.requested, self._previous = say, None, {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._handle) for signum in self.NAMES}
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested is not None:  # the second: stop at once, as without this handler
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)
            return
        self.requested = signum
        self.say(f"{self.NAMES[signum]}: finishing the step under way and saving a checkpoint (Ctrl-C or SIGTERM "
                 "again stops at once)")

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def seed_global_rngs(seed: int) -> None:
    """Seed the generators a step draws from besides its own (`gen`): LoRA dropout draws from torch's global CPU
    and CUDA generators; Python's `random` is seeded too for anything that may use it. Without this two runs with
    the same train.seed and lora.dropout differed in every tensor. Their states are saved in each checkpoint and
    restored on resume, so resume stays exact. Every rank gets the same seed: the states then stay equal across
    ranks, which is what restoring rank 0's saved state on every rank assumes."""
    torch.manual_seed(seed)  # the CPU generator and every CUDA device's
    random.seed(seed)


@dataclass
class StepLog:
    """One optimizer step's mean losses over the global batch, as logged (None: not trained this step)."""

    video: float | None = None
    audio: float | None = None
    preservation: float | None = None  # train.output_preservation's, before its weight


@dataclass
class Training:
    """What one run's loop works with, built once by `Trainer._build` before the first step."""

    models: Models  # models.transformer: the transformer as trained (wrapped for DDP / FSDP2 with several processes)
    transformer: torch.nn.Module  # the same, unwrapped: LoRA export and validation read it
    manifest: Manifest  # the cached clips this task trains on
    params: dict[str, torch.nn.Parameter]  # the LoRA parameters by name
    trainable: list[torch.nn.Parameter]  # the same, in the optimizer's order
    optimizer: torch.optim.Optimizer
    order: BatchOrder  # which clips each step takes
    gen: torch.Generator  # noise, noise levels and caption dropout
    sampler: SigmaSampler
    ema: LoraEma | None
    validate: Validate | None
    metrics: MetricsLogger | None  # rank 0 only
    start: int  # steps done before this run (resumed)


class Trainer:
    def __init__(self, run: Run, *, resume: bool = False, validation: ValidationFactory | None = None,
                 console=None):
        self.run = run
        self.cfg = run.config
        self.resume = resume
        self.trained = False  # set once a step ran: a finished run resumed trains (and rewrites) nothing
        self.validation = validation
        self.total_steps = run.steps
        self.dist = run.dist
        self.console = dist_env.rank_console(console or Console(stderr=True, markup=False))  # rank 0 speaks for all
        self.run_dir = run.run_dir
        self.cache = run.cache_dir
        self.device = run.device
        self.dtype = run.dtype
        self.task = run.task
        self.block_swap = None  # set by train() from the memory plan
        self.compiled = False  # the transformer blocks are compiled (train.compile), until a failure undoes it
        self.graphs: StepGraphs | None = None  # the step as CUDA graphs (train.cuda_graphs)
        self.connectors_host: HostOffload | None = None
        self.init_lora: tuple[LoraFile, dict[str, torch.Tensor]] | None = None  # lora.init_from and its tensors by
        # adapter parameter name, read and checked before any model loads
        self.empty_prompt: str | None = None  # the cached empty prompt's features, with caption dropout on

    # -- set-up ------------------------------------------------------------------------------------------------
    def _check_cache(self, manifest: Manifest) -> None:
        if not manifest.items:
            report = report_path_for(Path(self.cfg.data.dataset))
            raise UserError(f"the preprocessed dataset in {self.cache} is empty: every clip was skipped; "
                            f"`ltx-lora preprocess` lists each skipped clip with its reason (so does {report}, "
                            "from `ltx-lora dataset scan`), fix or add clips, and run `ltx-lora preprocess` again.")
        made_for = manifest.settings.get("checkpoint")
        dataset = manifest.settings.get("dataset")
        if dataset and not same_path(dataset, self.cfg.data.dataset):
            raise UserError(f"the cache in {self.cache} was last preprocessed for another dataset ({dataset}), not "
                            f"{self.cfg.data.dataset}; run `ltx-lora preprocess` with this config (clips and texts "
                            "already encoded are reused) or set data.cache_dir to another folder.")
        if made_for_another_model(manifest, self.cfg.model.checkpoint):
            raise UserError(f"the cache in {self.cache} was made with another model file ({made_for}) than "
                            f"{self.cfg.model.checkpoint}; "
                            "run `ltx-lora preprocess` with this config, or set data.cache_dir to another folder.")
        self.empty_prompt = (empty_prompt_file(manifest, self.cache) if self.cfg.train.caption_dropout > 0
                             else None)
        self._check_preservation_texts(manifest)
        missing = missing_files(manifest, self.cache)
        if missing:
            raise UserError(f"the cache in {self.cache} lacks {len(missing)} file(s) its manifest lists (e.g. "
                            f"{missing[0]}); run `ltx-lora preprocess` with this config to encode them again.")
        task = self.task
        silent = [i for i in manifest.items if not i.has_audio]
        if task.audio.generated and len(silent) == len(manifest.items):
            raise UserError(f"the task generates audio but no cached clip in {self.cache} has audio; use `task: t2v` "
                            "(video only) or preprocess clips with audio.")
        if task.audio.role == "condition" and len(silent) == len(manifest.items):
            raise UserError(f"the task gives the audio as a condition but no cached clip in {self.cache} has audio; "
                            "preprocess clips with sound, or use another task (e.g. t2v).")

    def _check_preservation_texts(self, manifest: Manifest) -> None:
        """train.output_preservation: every cached caption's preservation caption (the trigger word replaced by the
        class word) is in the cache, made for this trigger word and class word."""
        keep = self.cfg.train.output_preservation
        if keep is None:
            return
        trigger = self.cfg.data.trigger_word
        stale = next((i for i in manifest.items if not i.preservation_text or i.preservation_caption
                      != preservation_caption(i.caption, trigger, keep.class_word)), None)
        if stale is not None:
            raise UserError(f"the cache in {self.cache} has no preservation caption for class word "
                            f"{keep.class_word!r} and trigger word {trigger.strip()!r} (e.g. for {stale.media}); run "
                            "`ltx-lora preprocess` with this config again (only those captions are encoded).")

    def _usable_items(self, manifest: Manifest) -> Manifest:
        """The clips this task can train on. A task that needs every clip's sound (audio given as a condition, or
        audio without generated video) leaves the silent ones out, and says so; one that generates both trains a
        silent clip's video alone."""
        task = self.task
        if not task.audio.present or (task.video.generated and task.audio.generated):
            return manifest
        silent = [i for i in manifest.items if not i.has_audio]
        if silent:
            why = "gives the audio as a condition" if task.audio.role == "condition" else "trains the audio alone"
            self.console.print(f"note: {len(silent)} of {len(manifest.items)} cached clips have no audio and are left "
                               f"out (the task {why}), e.g. {silent[0].media or silent[0].latents}", highlight=False)
        return replace(manifest, items=[i for i in manifest.items if i.has_audio])

    def _note_whole_clip_conditions(self, manifest: Manifest) -> None:
        """A note when a video condition gives the whole of a bucket's clips (e.g. video_extend's 8-frame prefix on
        9-frame clips, first_frame on stills, outpainting's box on a small bucket): when drawn, those samples train
        the video on nothing, as in the official trainer."""
        video = self.task.video
        if not video.generated:
            return
        for bucket in sorted({i.bucket for i in manifest.items if i.has_video}):
            width, height, frames = (int(n) for n in bucket.split("x"))
            latent_frames = (frames - 1) // 8 + 1
            for cond in video.conditions:
                if cond.type in ("first_frame", "prefix", "suffix"):
                    n = 1 if cond.type == "first_frame" else cond.frames
                    if n >= latent_frames:
                        what = f"{n} latent frame(s) cover every frame ({latent_frames})"
                    else:
                        continue
                elif isinstance(cond, SpatialCropCondition):
                    top, left, bottom, right = (v // 32 for v in cond.box)
                    if top <= 0 and left <= 0 and bottom >= height // 32 and right >= width // 32:
                        what = f"box {list(cond.box)} covers the whole {width}x{height} frame"
                    else:
                        continue
                else:
                    continue
                self.console.print(f"note: the {cond.type} condition's {what} of bucket {bucket}: when drawn, those "
                                   "clips give the whole video and train it on nothing.", highlight=False)

    def _resume_state(self) -> tuple[Path, TrainingState] | None:
        """The latest checkpoint that reads, checked against this run's settings before any model is loaded. A
        damaged one (a disk error, an edited file) is skipped with a note naming it; none readable is a UserError."""
        found = training_checkpoints(self.run_dir)
        if not found:
            self.console.print(f"no checkpoint in {self.run_dir}/checkpoints yet: starting from step 0")
            return None
        for saved in reversed(found):
            try:
                state = load_training_state(saved)
                break
            except DamagedCheckpoint as e:
                self.console.print(f"note: skipped the damaged checkpoint {saved} ({e.reason}); resuming from the "
                                   "one before it (training that step again replaces it)")
        else:
            raise UserError(f"none of the {len(found)} checkpoints in {self.run_dir / 'checkpoints'} can be read (the "
                            f"latest: {found[-1].name}); train into a new output_dir, or delete the checkpoints "
                            "folder to start this run over.")
        expected = self.run.resume_fingerprint()
        for key, value in expected.items():
            if key in _FINGERPRINT_UNRECORDED and key not in state.meta:
                continue
            saved_value = state.meta.get(key, _FINGERPRINT_DEFAULTS.get(key))
            if key in PATH_FINGERPRINTS and saved_value and value and same_path(saved_value, value):
                continue  # one file or folder, spelled another way (./x and x, a symlink)
            if saved_value != value:
                raise UserError(f"{saved} was trained with {key}={state.meta.get(key)!r} but the config says "
                                f"{value!r}; restore that setting or train into a new output_dir.")
        # The data order is planned in global batches (batch_size x processes; with a token budget the budget's
        # sizes x processes) and the state is saved whole: another number of GPUs resumes exactly if those agree.
        world, saved_world = self.dist.world_size, state.meta.get("world_size", 1)
        saved_batch = state.meta.get("batch_size")
        budget = self.cfg.data.token_budget is not None
        if (saved_batch * saved_world != self.cfg.train.batch_size * world) or (budget and saved_world != world):
            need = f"--gpus {saved_world}" + ("" if budget else f" with train.batch_size {saved_batch}, or any "
                                              f"GPU count x batch_size = {saved_batch * saved_world}")
            raise UserError(f"{saved} was trained with batch_size {saved_batch} on {saved_world} process(es), this run "
                            f"has {self.cfg.train.batch_size} on {world}: the data order would differ; resume with "
                            f"{need}, or train into a new output_dir.")
        return saved, state

    def _restore(self, resume: tuple[Path, TrainingState] | None, params: dict[str, torch.nn.Parameter], optimizer,
                 order: BatchOrder, gen: torch.Generator, ema: LoraEma | None) -> int:
        if resume is None:
            return 0
        saved, state = resume
        missing = set(params) ^ set(state.lora)
        if missing:
            raise UserError(f"{saved} holds other LoRA layers than this model has ({sorted(missing)[0]} ...); "
                            "resume with the same base checkpoint and LoRA targets.")
        try:  # the state read, but its tensors or positions may still not fit (a damaged or edited file)
            parallel.load_full_lora_(params, state.lora)  # each rank keeps its shard (FSDP) or the whole (DDP)
            parallel.load_full_optimizer_state(optimizer, state.optimizer)
            for group in optimizer.param_groups:  # loading put back the saved groups' settings; the config's apply,
                group["weight_decay"] = self.cfg.train.weight_decay  # as its learning rate does (set_lr)
            if ema is not None and state.ema:
                ema.load_full(state.ema)
            elif ema is not None:  # train.ema turned on for a run saved without it: the average starts here
                ema.reset()
                self.console.print(f"note: {saved} holds no EMA of the LoRA; the EMA starts from its weights at step "
                                   f"{state.step}")
            order.restore(state.data_position)
            gen.set_state(state.rng["sampler"])
            torch.set_rng_state(state.rng["torch_cpu"])
            if "torch_cuda" in state.rng and torch.cuda.is_available():
                torch.cuda.set_rng_state(state.rng["torch_cuda"])
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
            raise UserError(f"the checkpoint {saved} does not fit this run ({type(e).__name__}: {str(e)[:160]}); "
                            "it is damaged: delete that checkpoint folder to resume from the one before it.") from None
        self.console.print(f"resumed from {saved} at step {state.step}")
        return state.step

    # -- the loop ----------------------------------------------------------------------------------------------
    def train(self) -> Path:
        """Train from the cache to `run.steps`, resuming when asked; returns the final LoRA file."""
        manifest, resume = self._check_inputs()
        if resume is not None and resume[1].step == self.total_steps:
            return self._already_complete(*resume)
        t = self._build(manifest, resume)
        try:
            with StopOnSignal(self.console.print) as stop:
                if t.validate and t.start == 0:
                    self._validate(t, 0)  # the base model: the baseline every later sample is judged against
                for step in range(t.start, self.total_steps):
                    done = self._train_step(t, step)
                    last = done == self.total_steps
                    saved = self._save(t, done) if done % self.cfg.checkpoints.every == 0 or last else None
                    if not last and not self.dist.all_agree(stop.requested is None):  # any rank's Ctrl-C / SIGTERM
                        raise TrainingInterrupted(done, saved or self._save(t, done), stop.requested or signal.SIGINT)
                    if t.validate and (done % self.cfg.validation.every == 0 or last):
                        self._validate(t, done)
        finally:
            if t.metrics:
                t.metrics.close()
        return self._export_final(t, self.total_steps)

    def _check_inputs(self) -> tuple[Manifest, tuple[Path, TrainingState] | None]:
        """Everything that can refuse the run, before any model is loaded: the base file, the logging packages, the
        cache against the config and the task, the run folder, and the checkpoint to resume from."""
        check_base(self.run.base)  # a training base, complete on disk (what doctor --config and preprocess check too)
        require_logging_packages(self.cfg.logging)
        manifest = read_manifest(self.cache)
        self._check_cache(manifest)
        manifest = self._usable_items(manifest)
        check_cache_for_task(self.cache, manifest, self.task)
        self._note_whole_clip_conditions(manifest)
        if not self.resume and latest_training_checkpoint(self.run_dir) is not None:
            raise UserError(f"{self.run_dir} already holds checkpoints; pass --resume to continue that run, or set "
                            "output_dir to a new folder.")
        resume = self._resume_state() if self.resume else None
        if resume is not None and resume[1].step > self.total_steps:
            saved, state = resume
            raise UserError(f"{saved} is at step {state.step}, past the {self.total_steps} steps asked for; "
                            f"nothing was changed: resume with --max-steps above {state.step} to train on (the "
                            f"LoRA of step {state.step} is in that folder), or train into a new output_dir.")
        if resume is None and self.cfg.lora.init_from:  # a resumed run continues its checkpoint's weights instead
            self.init_lora = self._read_init_lora()
        return manifest, resume

    def _build(self, manifest: Manifest, resume: tuple[Path, TrainingState] | None) -> Training:
        """The run's components: the model with its LoRA, the optimizer, the data order, the noise draws, the EMA,
        validation and metrics; restored from `resume` when given."""
        cfg, run = self.cfg, self.run
        self.console.print(run.plan.describe())
        if self.dist.is_main:
            run.write_run_files()
        models, transformer = self._build_model(manifest)
        params = lora_parameters(transformer)
        trainable = list(params.values())
        if self.init_lora is not None:
            self._start_from(*self.init_lora, params)
            self.init_lora = None  # its tensors are in the adapters now
        self.graphs = self._step_graphs(transformer, trainable)
        optimizer = build_optimizer(params, cfg.train)
        order = BatchOrder(manifest.items, cfg.train.batch_size, cfg.train.seed, cfg.data.token_budget,
                           world_size=self.dist.world_size)
        gen = torch.Generator(self.device).manual_seed(cfg.train.seed)
        ema = (LoraEma(params, cfg.train.ema.decay, on_host=cfg.train.ema.on_host, start_step=cfg.train.ema.start_step)
               if cfg.train.ema.enabled else None)
        seed_global_rngs(cfg.train.seed)  # then a resume restores the saved states over these
        start = self._restore(resume, params, optimizer, order, gen, ema)
        self._say_what_trains(params, start, manifest)
        validate = self._validator(models)
        metrics = (MetricsLogger(self.run_dir, cfg.logging, self.console, total_steps=self.total_steps, start=start,
                                 config_text=cfg.to_yaml(), run_text=json.dumps(run.resolved(), indent=1))
                   if self.dist.is_main else None)
        return Training(models=models, transformer=transformer, manifest=manifest, params=params,
                        trainable=trainable, optimizer=optimizer, order=order, gen=gen,
                        sampler=SigmaSampler.build(cfg.train), ema=ema, validate=validate,
                        metrics=metrics, start=start)

    def _build_model(self, manifest: Manifest) -> tuple[Models, torch.nn.Module]:
        """The models placed as the memory plan says, the LoRA injected into the transformer, recompute, attention
        and compilation set, and the transformer wrapped for DDP / FSDP2 (in `models.transformer`; the unwrapped
        one is returned beside it)."""
        cfg, plan = self.cfg, self.run.plan
        # FSDP on GPUs: the base is built in host memory and fully_shard moves each GPU only its shard, block by
        # block (the whole base need not fit one GPU).
        from_host = self.dist.active and cfg.distributed.strategy == "fsdp" and self.device.type == "cuda"
        models = load_models(cfg.model.checkpoint, self.device, self.dtype, plan, torch.device("cpu") if from_host else None)
        transformer = models.transformer
        if models.fp8_matmuls:
            self.console.print(models.fp8_matmuls)
        inject_lora(transformer, self.run.lora, seed=cfg.train.seed)
        self.block_swap = attach_block_swap(transformer, list(plan.swapped_blocks), self.device)
        self.connectors_host = HostOffload(models.text_connectors, self.device) if plan.text_connectors_on_host else None
        transformer.set_gradient_checkpointing(cfg.train.gradient_checkpointing)
        # blocks the plan keeps activations of (no recompute): the first blocks - kept recompute, as ltx-core would
        set_recomputed_blocks(transformer, plan.blocks - plan.kept_blocks if plan.kept_blocks else None)
        use_sdpa_attention(transformer)
        self.compiled = self._compile(transformer)
        transformer.train()
        # DDP / FSDP2 with several processes; FSDP2 replaces the parameters by shards, so collect them after.
        # Both modalities in every step, both generated: every LoRA layer gets a gradient. Otherwise some idle (the
        # audio branch in a batch without sound, the video branch of t2a, the last block's layers that only feed
        # a condition modality's output).
        every_layer = (self.task.video.generated and self.task.audio.generated
                       and all(i.has_audio for i in manifest.items))
        models.transformer = parallel.wrap(transformer, cfg.distributed.strategy, self.dist, self.dtype,
                                           some_lora_may_idle=not every_layer)
        return models, transformer

    def _read_init_lora(self) -> tuple[LoraFile, dict[str, torch.Tensor]]:
        """lora.init_from checked against the base and the LoRA trained, and its tensors as the adapters take them."""
        lora = check_lora_init(self.cfg.lora.init_from, self.run.base, self.cfg.lora, self.run.lora)
        init = initial_adapter(lora, self.run.lora)
        bad = next((name for name, value in init.items() if not torch.isfinite(value).all()), None)
        if bad is not None:
            raise UserError(f"lora.init_from {lora.path.name} holds NaN or infinite values ({bad}): the file is "
                            "damaged; start from an earlier checkpoint's LoRA, or from zero (leave it out).")
        return lora, init

    def _start_from(self, lora: LoraFile, init: dict[str, torch.Tensor], params: dict[str, torch.nn.Parameter]) -> None:
        """lora.init_from's weights into the injected adapters (each rank its shard under FSDP); adapted layers the
        file lacks keep their fresh start (no change)."""
        for name, value in init.items():
            have = params.get(name)
            if have is None or tuple(have.shape) != tuple(value.shape):
                what = f"has no {name}" if have is None else f"has {name} as {list(have.shape)}"
                raise UserError(f"lora.init_from {lora.path.name} holds {name} as {list(value.shape)}, this run's LoRA "
                                f"{what}: it was trained with another rank or lora.lokr_factor; set those as it was "
                                "trained.")
        with torch.no_grad():
            parallel.load_full_lora_(params, {**parallel.full_lora(params), **init})
        layers = len({adapted_module(n) for n in init})
        total = len({adapted_module(n) for n in params})
        self.console.print(f"starting from lora.init_from {lora.path} ({layers} of {total} adapted layers; the "
                           f"others from zero)" if layers < total else f"starting from lora.init_from {lora.path}",
                           highlight=False)

    def _say_what_trains(self, params: dict[str, torch.nn.Parameter], start: int, manifest: Manifest) -> None:
        cfg, lora = self.cfg, self.run.lora
        n_params = sum(p.numel() for p in params.values())
        layers = len({adapted_module(n) for n in params})
        repeated = sum(i.repeats for i in manifest.items)
        draws = (f" ({repeated} draws a pass over the data, with the dataset's repeats)"
                 if repeated > len(manifest.items) else "")
        self.console.print(f"training {n_params / 1e6:.2f} M {lora.variant.value} parameters ({layers} layers, "
                           f"rank {lora.rank}) on {self.device} for steps {start + 1}..{self.total_steps}, "
                           f"task {task_name(cfg.task)}, {len(manifest.items)} cached clips{draws}")
        keep = cfg.train.output_preservation
        if keep is not None:
            what = ("only measured (weight 0: logged, no gradient)" if keep.weight == 0
                    else f"weight {keep.weight:g}")
            self.console.print(f"output preservation: each caption also trains with {cfg.data.trigger_word.strip()!r} "
                               f"replaced by {keep.class_word!r} toward the base model's prediction, {what}; a step "
                               "takes about 2.4x the time (two more forwards, one more backward), without CUDA graphs",
                               highlight=False)
        if self.dist.active:
            self.console.print(f"{self.dist.world_size} processes, {cfg.distributed.strategy}: global batch "
                               f"{cfg.train.batch_size} x {self.dist.world_size} x {cfg.train.gradient_accumulation}")

    def _train_step(self, t: Training, step: int) -> int:
        """One optimizer step (and the EMA's), logged; returns the number of steps done."""
        t0 = time.perf_counter()
        lr = set_lr(t.optimizer, step, self.cfg.train)
        if self.compiled and step == t.start:  # compiling happens here: fall back to eager if it fails
            losses = self._first_compiled_step(t, step)
        else:
            losses = self._optimizer_step(t, step)
        done = step + 1
        if t.ema is not None:
            t.ema.update(done)
        self.trained = True
        if t.metrics:
            t.metrics.log_step(done, losses.video, losses.audio, lr, time.perf_counter() - t0,
                               preservation=losses.preservation)
        return done

    def _validate(self, t: Training, done: int) -> None:
        # validation.use_ema: the samples use the EMA weights, swapped in and back (bit for bit) around them
        use_ema = t.ema is not None and self.cfg.validation.use_ema
        if self.graphs is not None:  # the graphs' memory goes to sampling; the next step captures again
            self.graphs.release()
        with t.metrics.paused() if t.metrics else contextlib.nullcontext(), \
                t.ema.swapped_in() if use_ema else contextlib.nullcontext():
            records = t.validate(t.transformer, done, t.optimizer)
        if t.metrics:
            t.metrics.log_validation(done, records)

    def _already_complete(self, saved: Path, state: TrainingState) -> Path:
        """--resume on a run whose last checkpoint is at (or past) the last step: one line, nothing trained or
        rewritten. A kill between that checkpoint and the final export left no final LoRA: the checkpoint's is it
        (the same tensors and metadata), copied into place."""
        out, lora = self.run_dir / "lora.safetensors", checkpoint_lora(saved)
        ema_out, ema_lora = self.run_dir / "lora_ema.safetensors", saved / checkpoint_ema_lora_name(self.run_dir, state.step)
        wrote = ""
        if not out.is_file() and state.step == self.total_steps:
            if self.dist.is_main:
                atomic_write(out, lora.read_bytes())
                if ema_lora.is_file():
                    atomic_write(ema_out, ema_lora.read_bytes())
            self.dist.barrier()
            wrote = f"; wrote the final LoRA {out} from its checkpoint"
        self.console.print(f"{self.run_dir} is already complete at step {state.step}: nothing to train{wrote} "
                           f"(--max-steps N, N > {state.step}, continues it)", highlight=False)
        return out if out.is_file() else lora

    def _validator(self, models: Models) -> Validate | None:
        """Fixed-prompt samples at step 0, every validation.every steps and at the end, through the hook."""
        if self.validation is None or not self.cfg.validation.every:
            return None
        if self.dist.active and self.cfg.distributed.strategy == "fsdp":
            self.console.print("note: in-loop validation is not available with distributed.strategy fsdp yet (no GPU "
                               "holds the whole model); validate the saved checkpoints with `ltx-lora validate`.")
            return None
        if not self.dist.is_main:  # rank 0 samples with its whole copy of the model (DDP); the others wait
            return lambda transformer, step, optimizer: self.dist.barrier()
        with self.connectors_host.on_device() if self.connectors_host else contextlib.nullcontext():
            sample = self.validation(models.text_connectors)

        def validate(transformer, step, optimizer):
            records = sample(transformer, step, optimizer)
            self.dist.barrier()  # the other ranks waited here
            return records

        return validate

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

    def _step_graphs(self, transformer, trainable) -> StepGraphs | None:
        """The step as CUDA graphs (train.cuda_graphs) where one process trains on a GPU."""
        if self.cfg.train.cuda_graphs == "off":
            return None
        why = can_graph(transformer, self.device, distributed=self.dist.active, dropout=self.run.lora.dropout,
                        preservation=self.cfg.train.output_preservation is not None)
        if why:
            if self.device.type == "cuda":
                self.console.print(f"note: the step runs without CUDA graphs: {why}.")
            return None

        def fallback(reason: str) -> None:
            self.console.print(f"note: capturing the training step as a CUDA graph failed ({reason}); training "
                               "continues without graphs (slower). Set train.cuda_graphs: off to skip the attempt.")

        return StepGraphs(transformer, trainable, self.dtype, on_fallback=fallback, swap=self.block_swap)

    def _first_compiled_step(self, t: Training, step: int) -> StepLog:
        """The first step compiles the blocks; if that fails, undo the step's draws and run it eager."""
        position, gen_state = t.order.position(), t.gen.get_state()
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state() if torch.cuda.is_available() else None
        try:
            return self._optimizer_step(t, step)
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
        uncompile_blocks(t.models.transformer)
        self.compiled = False
        t.optimizer.zero_grad(set_to_none=True)
        t.order.restore(position)
        t.gen.set_state(gen_state)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng)
        return self._optimizer_step(t, step)

    def _optimizer_step(self, t: Training, step: int) -> StepLog:
        """gradient_accumulation micro-batches forward and backward, then the optimizer; returns the global batch's
        mean losses (None for a modality this task does not generate, and without output preservation)."""
        log = self._accumulate(t, step)
        if self.cfg.train.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(t.trainable, self.cfg.train.max_grad_norm)
        t.optimizer.step()
        t.optimizer.zero_grad(set_to_none=True)
        return log

    def _accumulate(self, t: Training, step: int) -> StepLog:
        """The LoRA gradients of one optimizer step (its micro-batches summed), and its losses as logged."""
        cfg, accum = self.cfg, self.cfg.train.gradient_accumulation
        keep = cfg.train.output_preservation
        sums: dict[str, float | None] = {"video": None, "audio": None, "preservation": None}
        for micro in range(accum):
            batch_ids = t.order.next()  # the global batch, the same on every rank
            share = self.dist.share(len(batch_ids))
            # A rank left without a sample (a bucket's short last batch) runs one with weight 0: all ranks must
            # take part in every forward and backward. Weights make the gradient the global batch's mean.
            weight = len(batch_ids[share]) * self.dist.world_size / len(batch_ids)
            batch, preservation = self._micro_batch(t, batch_ids, share)
            last = micro == accum - 1
            try:
                loss = forward_backward(t.models.transformer, batch, t.sampler, t.gen, task=self.task,
                                        dtype=self.dtype, audio_loss_weight=cfg.train.audio_loss_weight,
                                        loss_scale=weight / accum,
                                        rows=(share.start if weight else 0, len(batch_ids)),
                                        all_finite=self.dist.all_agree, graphs=self.graphs,
                                        preservation=preservation,
                                        sync=lambda final, last=last: parallel.gradient_sync(
                                            t.models.transformer, enabled=final and last))
            except NonFiniteLoss as e:
                last_saved = latest_training_checkpoint(self.run_dir)
                raise TrainingFailed(f"the loss became {e.value} at step {step + 1}; training stopped. "
                                     f"The last good checkpoint is {last_saved or 'none (none was saved yet)'}. Lower "
                                     "train.learning_rate or check the cached data, then resume with --resume.") from None
            # Logged: the global batch's mean losses (sums over every rank's real samples).
            parts = {"video": loss.video, "audio": loss.audio, "preservation": loss.preservation if keep else None}
            zero = loss.total.new_zeros(())
            totals = self.dist.all_reduce_sum(torch.stack([v.sum() if v is not None else zero
                                                           for v in parts.values()]).float() * (weight > 0)).tolist()
            for (name, value), total in zip(parts.items(), totals):
                if value is not None:
                    sums[name] = (sums[name] or 0.0) + total / len(batch_ids) / accum
        return StepLog(**sums)

    def _micro_batch(self, t: Training, batch_ids: list[int], share: slice) -> tuple[LatentBatch, Preservation | None]:
        """This rank's rows of a global batch from the cache, on the device, its text through the (frozen) text
        connectors; a rank left without a row takes the batch's first (its loss weighs 0). With
        train.output_preservation also the preservation text of each row (the empty prompt where the caption was
        dropped)."""
        items = [t.manifest.items[i] for i in batch_ids[share] or batch_ids[:1]]
        # drawn for the whole global batch (the generator advances alike on every rank), this rank's rows kept
        dropped = caption_dropout_draw(len(batch_ids), self.cfg.train.caption_dropout, t.gen)
        dropped = dropped[share] or dropped[:1]
        raw = load_batch(self.cache, items, self.device, self.dtype, task=self.task,
                         texts=text_files(items, dropped, self.empty_prompt))
        keep = self.cfg.train.output_preservation
        on_device = self.connectors_host.on_device() if self.connectors_host else contextlib.nullcontext()
        with torch.no_grad(), on_device:  # the text connectors are frozen: run them, keep no graph
            vctx, actx, mask = run_text_connectors(t.models.text_connectors, raw.text)
            preservation = None
            if keep is not None:
                texts = [self.empty_prompt if drop else item.preservation_text for item, drop in zip(items, dropped)]
                padded = pad_batch([read_text(self.cache, rel) for rel in texts])
                kv, ka, km = run_text_connectors(t.models.text_connectors, padded)
                preservation = Preservation(kv, ka, attention_mask_or_none(km), keep.weight)
        batch = LatentBatch(video=raw.video, audio=raw.audio, video_context=vctx, audio_context=actx,
                            context_mask=attention_mask_or_none(mask), fps=raw.fps, loss_weight=raw.loss_weight,
                            video_loss_weight=raw.video_weight, audio_loss_weight=raw.audio_weight,
                            reference_video=raw.reference_video, reference_audio=raw.reference_audio,
                            video_condition_mask=raw.video_condition_mask,
                            audio_condition_mask=raw.audio_condition_mask)
        return batch, preservation

    # -- saving ------------------------------------------------------------------------------------------------
    def _save(self, t: Training, step: int) -> Path:
        """A training checkpoint of `step`: the LoRA file (and the EMA's) beside the state resume reads."""
        # Every rank gathers (FSDP shards -> full tensors); rank 0 writes the same files one process would.
        lora_full, optim_full = parallel.full_lora(t.params), parallel.full_optimizer_state(t.optimizer)
        ema_full = t.ema.full() if t.ema is not None else {}
        path, error = self.run_dir / "checkpoints", None
        if self.dist.is_main:
            rng = {"sampler": t.gen.get_state(), "torch_cpu": torch.get_rng_state()}
            if torch.cuda.is_available():
                rng["torch_cuda"] = torch.cuda.get_rng_state()
            state = TrainingState(step=step, lora=lora_full, optimizer=optim_full, rng=rng,
                                  data_position=t.order.position(),
                                  meta={**self.run.resume_fingerprint(), "batch_size": self.cfg.train.batch_size,
                                        "world_size": self.dist.world_size}, ema=ema_full)
            lora = export_adapter(t.transformer, self.run.lora, params=lora_full, dtype=self.run.lora_file_dtype)
            ema_lora = self._ema_lora(t, ema_full, step) if t.ema is not None else None
            try:
                path = save_training_checkpoint(self.run_dir, state, lora, self._lora_metadata(step, t.manifest),
                                                self.cfg.checkpoints.keep_last, ema_lora=ema_lora)
            except (OSError, SafetensorError) as e:  # safetensors' writer wraps a full disk in its own error
                error = getattr(e, "strerror", None) or str(e)
        if not self.dist.all_agree(error is None):  # every rank stops if rank 0 could not write
            raise TrainingFailed(f"could not write the checkpoint of step {step} into {self.run_dir} ({error}); "
                                 "free disk space, then resume with --resume (earlier checkpoints are intact).")
        self.console.print(f"saved checkpoint {path}")
        return path

    def _lora_metadata(self, step: int, manifest: Manifest) -> dict[str, str]:
        return self.run.lora_metadata(step, manifest.settings.get("model_identity", {}))

    def _ema_lora(self, t: Training, ema_full: dict[str, torch.Tensor],
                  step: int) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """The EMA LoRA file's tensors (the same layout and strength as the LoRA's) and metadata (+ ema_decay)."""
        ema_cfg = self.cfg.train.ema
        tensors = export_adapter(t.transformer, self.run.lora, params=ema_full, dtype=self.run.lora_file_dtype)
        meta = {**self._lora_metadata(step, t.manifest), "ema_decay": str(ema_cfg.decay),
                "ema_start_step": str(ema_cfg.start_step)}
        return tensors, meta

    def _export_final(self, t: Training, step: int) -> Path:
        out = self.run_dir / "lora.safetensors"
        full = parallel.full_lora(lora_parameters(t.transformer))  # a collective under FSDP: every rank gathers
        ema_full = t.ema.full() if t.ema is not None else None
        if self.dist.is_main:
            lora = export_adapter(t.transformer, self.run.lora, params=full, dtype=self.run.lora_file_dtype)
            write_lora_tensors(out, lora, self._lora_metadata(step, t.manifest))
            if ema_full is not None:
                write_lora_tensors(self.run_dir / "lora_ema.safetensors", *self._ema_lora(t, ema_full, step))
        self.dist.barrier()  # the file exists when any rank returns
        self.console.print(f"final LoRA: {out} (ComfyUI layout; loads in ComfyUI, ltx-core and diffusers)")
        if ema_full is not None:
            self.console.print(f"EMA of the LoRA (decay {self.cfg.train.ema.decay}): {self.run_dir / 'lora_ema.safetensors'}")
        return out

