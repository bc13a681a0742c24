"""One run, resolved once before anything loads: what every part of training and validation reads.

`Config` stays what the user wrote (a CLI override is applied once, as a copy). What follows from it on this
machine is decided here, once: the base file's facts (its header read once), the memory plan, the LoRA rank and
alpha actually trained (the plan may lower the rank to fit), the steps, device and dtype, and the validation
sampling settings. The resume fingerprint, the LoRA metadata, injection, export and validation read the `Run`,
never a config rewritten along the way; the run folder records both: `config.yaml` (as written) and `run.json`
(as resolved).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ltx_lora.bucket_spec import parse_buckets
from ltx_lora.config import Config, LoraConfig, ValidationConfig
from ltx_lora.distributed.env import DistEnv
from ltx_lora.errors import UserError
from ltx_lora.files.atomic import atomic_write
from ltx_lora.runtime.base_file import BaseFile
from ltx_lora.runtime.device import compute_dtype, pick_device
from ltx_lora.runtime.inputs import check_lora_blocks
from ltx_lora.runtime.memory import Plan, plan_for_config, plan_for_processes
from ltx_lora.task import TaskConfig, resolve_task, task_name

# The validation hook between the `train` command and the trainer (train/ never imports sample/): the factory
# gets the frozen text connectors once and returns a function that samples every validation prompt with the
# transformer as it is at a step.
Validate = Callable[[torch.nn.Module, int, "torch.optim.Optimizer | None"], "list[dict] | None"]  # the samples' records
ValidationFactory = Callable[[torch.nn.Module], Validate]

PREVIEW_STEPS = 8  # the distilled LoRA's sampler: 8 steps, no guidance
FINAL_STEPS = 50  # `validate --final`


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
    audio_stg_scale: float
    audio_modality_scale: float
    audio: bool
    negative_prompt: str
    reference_image: str | None = None
    preview: bool = False
    preview_lora: str | None = None
    preview_strength: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_sampling(v: ValidationConfig, *, steps: int | None = None, preview_lora: str | None = None
                     ) -> SampleSettings:
    """The validation section as sampler settings; `steps` / `preview_lora` are the validate command's options."""
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
                              guidance_rescale=0.0, modality_scale=1.0, audio_stg_scale=0.0,
                              audio_modality_scale=1.0, preview=True, preview_lora=preview_lora,
                              preview_strength=v.preview_strength)
    return SampleSettings(**common, steps=steps or v.steps, cfg=v.cfg, audio_cfg=v.audio_cfg, stg_scale=v.stg_scale,
                          stg_blocks=list(v.stg_blocks), guidance_rescale=v.guidance_rescale,
                          modality_scale=v.modality_scale,
                          audio_stg_scale=v.stg_scale if v.audio_stg_scale is None else v.audio_stg_scale,
                          audio_modality_scale=(v.modality_scale if v.audio_modality_scale is None
                                                else v.audio_modality_scale))


@dataclass(frozen=True)
class Run:
    config: Config  # as the user wrote it
    base: BaseFile
    plan: Plan
    lora: LoraConfig  # as trained: the plan's rank, alpha written out (the config's, or equal to that rank)
    steps: int  # the last step of the run (train.steps, or --max-steps)
    device: torch.device
    dtype: torch.dtype
    sampling: SampleSettings | None  # None: the config has no validation prompts
    dist: DistEnv = field(default_factory=DistEnv)

    @property
    def run_dir(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def cache_dir(self) -> Path:
        return Path(self.config.data.cache_dir)

    @property
    def lora_file_dtype(self) -> torch.dtype:
        """What the LoRA files of this run are written in (checkpoints.precision)."""
        return torch.float32 if self.config.checkpoints.precision == "fp32" else torch.bfloat16

    @property
    def task(self) -> TaskConfig:
        """The task as trained: the config's preset expanded, or its mapping."""
        return resolve_task(self.config.task)

    def resume_fingerprint(self) -> dict:
        """Settings a resumed run must share with the run that wrote the training checkpoint (the batch is
        checked apart: another GPU count may resume when the global batch agrees)."""
        cfg = self.config
        return {"checkpoint": cfg.model.checkpoint, "task": self.task.model_dump(mode="json"), "rank": self.lora.rank,
                "alpha": self.lora.effective_alpha, "targets": self.lora.targets, "seed": cfg.train.seed,
                "variant": self.lora.variant.value, "rslora": self.lora.rslora, "lokr_factor": self.lora.lokr_factor,
                "gradient_accumulation": cfg.train.gradient_accumulation, "token_budget": cfg.data.token_budget,
                "cache_dir": cfg.data.cache_dir, "loraplus_lr_ratio": cfg.train.loraplus_lr_ratio,
                "blocks": self.lora.blocks, "optimizer": cfg.train.optimizer.value}

    def lora_metadata(self, step: int, base_identity: dict) -> dict[str, str]:
        """safetensors header of every exported LoRA: enough to know what it is and what it fits."""
        cfg = self.config
        return {
            "format": "pt", "ltx_lora.version": "1", "base_model": "LTX-2.3 22B Dev",
            "base_checkpoint": Path(cfg.model.checkpoint).name, "base_identity": json.dumps(base_identity),
            **({"model_version": self.base.model_version} if self.base.model_version else {}),
            "rank": str(self.lora.rank), "alpha": str(self.lora.effective_alpha), "alpha_folded_into_lora_B": "true",
            "lora_variant": self.lora.variant.value, "rslora": str(self.lora.rslora).lower(),
            "target_modules": json.dumps(self.lora.targets), "task": task_name(cfg.task),
            **({"blocks": json.dumps(self.lora.blocks)} if self.lora.blocks is not None else {}),
            "trigger_word": cfg.data.trigger_word, "step": str(step), **reference_metadata(self.task),
            **({"init_from": Path(cfg.lora.init_from).name} if cfg.lora.init_from else {}),
            **({"loraplus_lr_ratio": str(cfg.train.loraplus_lr_ratio)} if cfg.train.loraplus_lr_ratio != 1.0 else {}),
            **({"output_preservation_class_word": keep.class_word, "output_preservation_weight": str(keep.weight)}
               if (keep := cfg.train.output_preservation) else {}),
        }

    def resolved(self) -> dict:
        """What run.json records: the settings this run actually uses, beside config.yaml as written."""
        return {
            "base": {"path": str(self.base.path), "kind": self.base.identity.kind, "fp8": self.base.is_fp8},
            "memory_plan": {"quantization": self.plan.quantization, "fp8_matmuls": self.plan.fp8_matmuls,
                            "swapped_blocks": list(self.plan.swapped_blocks),
                            "text_connectors_on_host": self.plan.text_connectors_on_host,
                            "expected_peak_gib": self.plan.expected_peak_gib, "budget_gib": self.plan.budget_gib,
                            "budget_from": self.plan.budget_from, "notes": list(self.plan.notes)},
            "lora": {"variant": self.lora.variant.value, "rslora": self.lora.rslora, "scale": self.lora.scale,
                     "lokr_factor": self.lora.lokr_factor,
                     "rank": self.lora.rank, "alpha": self.lora.effective_alpha, "dropout": self.lora.dropout,
                     "targets": self.lora.targets, "init_from": self.config.lora.init_from},
            "steps": self.steps, "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
            "processes": self.dist.world_size,
            "sampling": self.sampling.to_dict() if self.sampling else None,
        }

    def write_run_files(self) -> None:
        """config.yaml (the config as written) and run.json (as resolved) in the run folder."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.run_dir / "config.yaml", self.config.to_yaml())
        atomic_write(self.run_dir / "run.json", json.dumps(self.resolved(), indent=1) + "\n")


def reference_metadata(task: TaskConfig) -> dict[str, str]:
    """What IC-LoRA loaders read from a LoRA's header, for a task with a reference (nothing otherwise).

    - `reference_downscale_factor`: the reference is encoded at 1/N of the output's width and height. ltx-pipelines'
      IC-LoRA pipeline reads it with `int(...)` (default 1), ComfyUI's Get IC-LoRA Parameters node with
      `max(1, round(float(...)))`, ComfyUI-LTXVideo's IC-LoRA loader with `float(...)`: an integer string fits all.
    - `reference_temporal_scale_factor`: 1/N of the frame groups (ltx-pipelines reads it with `int(...)`).
    - `reference_spatial_scale_factor`: the official trainer writes it beside the downscale factor (same value).
    - `reference_modalities`: ours, which modalities take a reference (video, audio); a LoRA with any
      `reference_*` key is an IC-LoRA to `ltx-lora lora inspect`, an audio-only reference included.
    The official trainer writes the factors only when they differ from 1; we write them always, so the file says
    what it was trained with (the readers default to 1 when absent, so "1" reads the same).
    """
    out: dict[str, str] = {}
    video_ref = task.video.find("reference")
    if video_ref:
        d, t = video_ref[0].downscale, video_ref[0].temporal_scale
        out |= {"reference_downscale_factor": str(d), "reference_spatial_scale_factor": str(d),
                "reference_temporal_scale_factor": str(t)}
    modalities = [name for name, m in (("video", task.video), ("audio", task.audio)) if m.find("reference")]
    if modalities:
        out["reference_modalities"] = ",".join(modalities)
    return out


def resolve_run(cfg: Config, *, max_steps: int | None = None, dist: DistEnv | None = None,
                device: torch.device | None = None, budget: tuple[float, str] | None = None,
                sampling_steps: int | None = None, preview_lora: str | None = None) -> Run:
    """Everything derived from `cfg` on this machine, before any model loads. `max_steps` (train --max-steps) and
    `sampling_steps` / `preview_lora` (validate's options) are applied here, once; `budget`: plan for this
    memory budget (GiB, where it comes from) instead of the config's tier or the GPU's free memory."""
    dist = dist or DistEnv()
    if max_steps is not None:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": max_steps})})
    base = BaseFile.read(cfg.model.checkpoint)  # the base first: a wrong file explains most else
    check_lora_blocks(base, cfg.lora.blocks)
    device = device or pick_device()
    if dist.active:  # every GPU the same plan; under FSDP a bf16 base sharded over them
        plan = plan_for_processes(cfg, device, dist, base=base)
    else:
        plan = plan_for_config(cfg, device, base=base, budget=budget)
    # A lowered rank keeps the config's alpha, or (alpha unset) scale 1 at the rank trained.
    lora = cfg.lora.model_copy(update={"rank": plan.rank, "alpha": cfg.lora.alpha if cfg.lora.alpha is not None
                                       else float(plan.rank)})
    v = cfg.validation
    sampling = resolve_sampling(v, steps=sampling_steps, preview_lora=preview_lora) if v.prompts else None
    return Run(cfg, base, plan, lora, cfg.train.steps, device, compute_dtype(cfg.train.mixed_precision), sampling,
               dist)
