"""The training configuration: one YAML file that maps one-to-one onto these typed classes.

Defaults are the settings the LTX-2.3 LoRA guide recommends for a first run (rank 32, alpha = rank, lr 1e-4,
2000 steps, batch 1, bf16, gradient checkpointing, bucket 960x544x49, attention targets). Unknown keys are
errors with a did-you-mean hint; every error is one sentence naming the key.

Relative paths in a config file start at the file's folder (`load_config` makes them absolute once, at load), so a
config works from any working directory; a config built in code (`parse_config`) keeps its paths as given.
"""

from __future__ import annotations

import difflib
import os
import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from ltx_lora.errors import UserError
from ltx_lora.official_config import looks_official, translate_official
from ltx_lora.paths import read_user_text, refuse_repo_id, refuse_url
from ltx_lora.task import DEFAULT_TASK, TASK_PRESETS, TaskConfig, TaskSetting


class Section(BaseModel):
    # allow_inf_nan=False: YAML spells NaN and infinity (.nan, .inf), and no number of ours means anything with them.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_enum_values=False, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # YAML's true/false would pass as 1/0 for a number (pydantic's lax mode): `learning_rate: true` is a slip.
        annotation = cls.model_fields[info.field_name].annotation
        items = value if isinstance(value, list) else [value]
        if any(isinstance(v, bool) for v in items) and not _takes_bool(annotation):
            raise ValueError("must be a number or text, not true/false")
        return value


def _takes_bool(annotation: Any) -> bool:
    """Whether a field's type admits a bool anywhere (bool itself, Optional[bool], Literal[True], ...)."""
    if annotation is bool:
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True  # a section: its own fields say
    return any(arg is True or arg is False or _takes_bool(arg) for arg in get_args(annotation))


# Seeds reach torch.Generator.manual_seed (at most 2**64 - 1) after mixing (the data order adds the epoch to
# seed x 1,000,003): 32 bits keep every use in range and are more seeds than any run needs.
MAX_SEED = 2**32 - 1


class ModelConfig(Section):
    checkpoint: str = Field("", description="Local path of the LTX-2.3 Dev checkpoint (.safetensors, bf16 or FP8).")
    text_encoder: str = Field("", description="Local folder of the Gemma 3 12B text encoder (used by preprocess only).")


class DataConfig(Section):
    dataset: str = Field("dataset.jsonl", description="Dataset file (jsonl/json/csv) written by `ltx-lora dataset scan`. Masked loss: a row's optional `loss_mask` (grayscale video or image, white = trained, black = ignored) and `audio_loss_ranges` ([[start_s, end_s], ...] whose audio counts) weight its loss; see the README. Per row, optional `loss_weight` (a number >= 0 multiplying its loss) and `repeats` (a whole number >= 1: draws in each pass over the data). The task's conditions read the official columns `reference_video` (legacy `ref_media_path`), `reference_audio`, `video_mask`, `audio_mask`, and `audio` (a sound file; a row with `audio` and no `video` is sound-only).")
    buckets: str = Field("960x544x49", description="Resolution buckets WxHxF separated by ';' (F = 8k+1, W and H multiples of 32).")
    cache_dir: str = Field(".ltx-lora-cache", description="Where preprocessing writes latents and text features.")
    target_fps: float | None = Field(None, gt=0, description="Resample clips to this frame rate (audio stays in sync); null keeps each clip's rate.")
    missing_audio: Literal["silence", "skip"] = Field(
        "silence", description="Clips without an audio track when audio is trained: silence (the LoRA learns to "
        "make silence for them; for video-only clips use `task: t2v`), or skip (leave them out).")
    trigger_word: str = Field("", description="Prepended to every caption (e.g. a rare token naming your subject); "
                              "`[trigger]` in validation.prompts stands for it.")
    token_budget: int | None = Field(
        None, ge=1, description="Per-bucket batch size from a token budget (video tokens per batch); null = batch_size everywhere.")


FEED_FORWARD_TARGETS = ["ff.net.0.proj", "ff.net.2", "audio_ff.net.0.proj", "audio_ff.net.2"]


class LoraVariant(str, Enum):
    lora = "lora"
    dora = "dora"
    lokr = "lokr"
    loha = "loha"


# Variants named in the config but not trained: why, in one sentence each (see train/lora.py). DoRA: peft's
# DoRA scales each output row of W + s*B@A to its trained magnitude; ComfyUI's `weight_decompose` (comfy/weight_adapter/
# base.py) normalises each input column for a (1, in) `dora_scale`, and for an (out, 1) one divides each row by the
# *base* weight's norm (an open ComfyUI pull request, #15458, would change that to the adapted weight's): no file
# applies in ComfyUI as trained, today and after that change alike.
UNSUPPORTED_VARIANTS = {
    "dora": "lora.variant dora is not supported: ComfyUI applies a DoRA file's magnitudes per input column, or per "
            "output row divided by the base weight's norm instead of the adapted one's, so no file it loads "
            "reproduces what peft's DoRA trains; use lora, lokr or loha.",
}


MAX_BLOCKS = 10_000  # far above any LTX model's transformer blocks (LTX-2.3 22B: 48); lora.blocks' ranges stop here


class LoraConfig(Section):
    variant: LoraVariant = Field(LoraVariant.lora, description="Adapter kind: lora (plain low-rank B @ A), lokr "
                                 "(Kronecker product kron(w1, w2), LyCORIS LoKr) or loha (Hadamard product of two "
                                 "low-rank pairs, LyCORIS LoHa); all export in the layout ComfyUI applies. dora is "
                                 "refused with the reason (ComfyUI does not apply it as trained).")
    rslora: bool = Field(False, description="Rank-stabilised LoRA: scale alpha / sqrt(rank) instead of alpha / rank "
                                            "(peft's use_rslora; variant lora only); the export folds the scale in "
                                            "as always.")
    rank: int = Field(32, ge=1, le=1024, description="LoRA rank. 32 to start, 64+ for multi-concept LoRAs.")
    alpha: float | None = Field(None, gt=0, description="LoRA alpha; null means equal to rank (scale 1.0).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA path (lokr / loha: rank dropout, "
                           "rows of the weight change dropped while training).")
    target_modules: list[str] = Field(
        default_factory=lambda: ["to_k", "to_q", "to_v", "to_out.0"],
        description="Module name patterns; short names match every branch (video, audio, cross-modal attention).")
    feed_forward: bool = Field(False, description="Also adapt the feed-forward layers (more capacity, more memory).")
    blocks: list[int] | None = Field(None, description="Which transformer blocks get the adapters, e.g. \"0-23\", "
                                     "\"0-7,40-47\" or [0, 1, 2] (LTX-2.3 22B has blocks 0-47); null = every block. "
                                     "Fewer blocks: fewer parameters, less memory, a narrower effect (musubi-tuner's "
                                     "include/exclude patterns and ai-toolkit's only_if_contains choose blocks by "
                                     "name).")
    init_from: str | None = Field(None, description="A LoRA file (.safetensors; ComfyUI, diffusers, kohya or peft "
                                  "layout) the LoRA starts from instead of zero: continue a finished LoRA on new "
                                  "clips or settings (the optimizer starts afresh; --resume continues one run "
                                  "exactly). Same variant and rank, layers the config adapts; those it lacks start "
                                  "from zero.")
    lokr_factor: int = Field(-1, ge=-1, description="lokr only: the width of the smaller Kronecker factor (peft's "
                             "decompose_factor; e.g. 16 gives 16x16 and 256x256 factors on a 4096 layer); -1 splits "
                             "each width near its square root (64x64 and 64x64), where rank >= 32 keeps both factors "
                             "whole and a lower rank splits the second into two rank-r matrices.")

    @field_validator("variant")
    @classmethod
    def _supported_variant(cls, v: LoraVariant) -> LoraVariant:
        if v.value in UNSUPPORTED_VARIANTS:
            raise ValueError(UNSUPPORTED_VARIANTS[v.value])
        return v

    @field_validator("lokr_factor")
    @classmethod
    def _factor(cls, v: int) -> int:
        if v == 0:
            raise ValueError("lora.lokr_factor must be -1 (near the square root) or a width >= 1.")
        return v

    @field_validator("target_modules")
    @classmethod
    def _names_inside_a_block(cls, v: list[str]) -> list[str]:
        # A path naming a block would adapt that block's layer in peft while the memory plan, which counts layers
        # by their name inside a block, counted it in every block or none.
        whole = [t for t in v if re.match(r"(.*\.)?transformer_blocks\.\d+\.", t)]
        if whole:
            raise ValueError(f"{whole[0]!r} names a layer of one block; name layers as inside a block (to_q, "
                             "attn1.to_q, ff.net.0.proj) and choose blocks with lora.blocks (e.g. \"0-23\")")
        return v

    @field_validator("blocks", mode="before")
    @classmethod
    def _block_list(cls, v: Any) -> Any:
        """"0-23,40" (ranges and numbers, commas between) -> [0, ..., 23, 40]; a list stays a list."""
        if not isinstance(v, str):
            return v
        out: list[int] = []
        for part in v.replace(" ", "").split(","):
            lo, dash, hi = part.partition("-")
            if not re.fullmatch(r"[0-9]+", lo) or (dash and not re.fullmatch(r"[0-9]+", hi)):
                raise ValueError(f"{v!r} is not a list of blocks; write ranges and numbers like \"0-23,40\"")
            first, last = int(lo), int(hi) if dash else int(lo)
            if last < first:
                raise ValueError(f"the range {part} runs backwards; write it low-high, e.g. {last}-{first}")
            if last >= MAX_BLOCKS:  # before the range is listed: "0-99999999999" would fill the memory
                raise ValueError(f"block {last} is beyond any LTX model's (LTX-2.3 22B has blocks 0-47)")
            out.extend(range(first, last + 1))
        return out

    @field_validator("blocks")
    @classmethod
    def _blocks_are_indices(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("must name at least one block, or be null (every block)")
        if min(v) < 0:
            raise ValueError(f"block {min(v)} is negative; blocks are numbered from 0")
        return sorted(set(v))

    @model_validator(mode="after")
    def _rslora_is_for_lora(self) -> LoraConfig:
        if self.rslora and self.variant != LoraVariant.lora:
            raise ValueError(f"lora.rslora applies to variant lora only (peft's {self.variant.value} scales by "
                             "alpha / rank); set lora.rslora: false or lora.variant: lora.")
        return self

    @property
    def effective_alpha(self) -> float:
        return float(self.rank if self.alpha is None else self.alpha)

    @property
    def scale(self) -> float:
        """What the adapter's product is multiplied by: alpha / rank, or alpha / sqrt(rank) with rslora."""
        return self.effective_alpha / (self.rank ** 0.5 if self.rslora else self.rank)

    @property
    def targets(self) -> list[str]:
        """The module patterns the LoRA adapts: `target_modules`, plus the feed-forward layers when asked."""
        return list(dict.fromkeys(self.target_modules + (FEED_FORWARD_TARGETS if self.feed_forward else [])))

    def adapts(self, module_path: str) -> bool:
        """Whether the LoRA adapts the transformer's module `module_path` ("transformer_blocks.3.attn1.to_q"): a
        target name is the whole path or its tail after a dot (peft's rule for a list), in one of `blocks`. The one
        rule peft is given (`peft_targets`) and the memory plan and lora.init_from's check read."""
        if not any(module_path == t or module_path.endswith("." + t) for t in self.targets):
            return False
        if self.blocks is None:
            return True
        m = re.match(r"transformer_blocks\.(\d+)\.", module_path)
        return m is not None and int(m.group(1)) in self.blocks

    @property
    def peft_targets(self) -> list[str] | str:
        """peft's target_modules: the names (a list: peft's suffix rule), or with `blocks` one regex it matches
        whole against each module path (its layers_to_transform depends on the peft release's pattern): a block's
        prefix (looked ahead), then the suffix rule, so a target given as a whole path matches as in `adapts`."""
        if self.blocks is None:
            return self.targets
        names = "|".join(re.escape(t) for t in self.targets)
        return rf"(?=transformer_blocks\.({'|'.join(map(str, self.blocks))})\.)(?:.*\.)?({names})"


class Optimizer(str, Enum):
    adamw = "adamw"
    adamw8bit = "adamw8bit"
    prodigy = "prodigy"
    adafactor = "adafactor"


class Scheduler(str, Enum):
    constant = "constant"
    linear = "linear"
    cosine = "cosine"


class EmaConfig(Section):
    decay: float | None = Field(
        None, ge=0, lt=1, description="Exponential moving average of the LoRA weights: after each optimizer step "
        "ema = decay * ema + (1 - decay) * weights (0.999 is usual; null or 0 = off). Exported beside the LoRA as "
        "lora_ema.safetensors (and in each checkpoint), kept in the training state.")
    on_host: bool = Field(False, description="Keep the EMA copy (fp32) in host memory instead of on the GPU.")
    start_step: int = Field(0, ge=0, description="The EMA follows the weights exactly up to this step and averages "
                                                 "from the next one on (skips the early, fast-changing weights).")

    @property
    def enabled(self) -> bool:
        return bool(self.decay)


class TimestepParams(Section):
    """The noise-level sampler's parameters, as the official flow_matching.timestep_sampling_params (same names and
    defaults): std, eps and uniform_prob shape shifted_logit_normal; min_value and max_value bound uniform."""

    std: float = Field(1.0, gt=0, description="shifted_logit_normal: spread of the normal before the sigmoid (larger "
                                              "= more weight at both ends).")
    eps: float = Field(1e-3, ge=0, lt=0.5, description="shifted_logit_normal: noise levels below it are reflected "
                                                       "above it, and uniform draws start at it.")
    uniform_prob: float = Field(0.1, ge=0, le=1, description="shifted_logit_normal: share of draws taken uniformly "
                                                             "instead (keeps every noise level trained).")
    min_value: float = Field(0.0, ge=0, lt=1, description="uniform: the lowest noise level drawn (e.g. 0.5 trains "
                                                          "composition and motion, not fine detail).")
    max_value: float = Field(1.0, gt=0, le=1, description="uniform: the highest noise level drawn (e.g. 0.5 trains "
                                                          "fine detail and texture, not composition).")

    @model_validator(mode="after")
    def _range(self) -> TimestepParams:
        if self.min_value >= self.max_value:
            raise ValueError(f"train.timestep_sampling_params.min_value ({self.min_value}) must be below max_value "
                             f"({self.max_value}).")
        return self


class OutputPreservationConfig(Section):
    """Differential output preservation (ai-toolkit's diff_output_preservation): keeps what the base model makes for
    the plain class (e.g. "a woman") while the LoRA learns the subject the trigger word names ("zxq a woman")."""

    class_word: str = Field(..., description="What data.trigger_word is replaced by in each caption for the "
                            "preservation prediction: the class the trained subject belongs to (e.g. \"woman\" for "
                            "a trigger naming one woman), whose look should stay the base model's. Must not contain "
                            "the trigger word.")
    weight: float = Field(1.0, ge=0, description="Multiplies the preservation loss before it is added to the "
                          "training loss (ai-toolkit's diff_output_preservation_multiplier, also 1.0 there); 0 only "
                          "measures it (logged as loss_preservation, no gradient).")

    @field_validator("class_word")
    @classmethod
    def _class_word(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must name the class the trigger word's subject belongs to (e.g. \"woman\"), not be "
                             "empty")
        return v


class TrainConfig(Section):
    steps: int = Field(2000, ge=1, description="Optimizer steps in total.")
    batch_size: int = Field(1, ge=1, description="Clips per step per GPU.")
    gradient_accumulation: int = Field(1, ge=1, description="Micro-batches summed into one optimizer step.")
    learning_rate: float = Field(1e-4, gt=0, description="Peak learning rate (1.0 is usual for prodigy).")
    loraplus_lr_ratio: float = Field(1.0, gt=0, description="LoRA+ (kohya's and musubi-tuner's loraplus_lr_ratio): "
                                     "the lora_B (up) matrices train at learning_rate x this, the lora_A (down) ones "
                                     "at learning_rate, which learns faster at the same stability; 1 = off. The "
                                     "paper suggests 16, musubi-tuner to start near 4. Plain LoRA only; not with "
                                     "prodigy (one step size for every parameter).")
    optimizer: Optimizer = Field(Optimizer.adamw, description="adamw (fused), adamw8bit (bitsandbytes' 8-bit "
                                 "AdamW: 2 bytes of state per LoRA parameter instead of 8; pip install "
                                 "'ltx-lora[lowvram]'), prodigy, or adafactor (transformers' Adafactor at the "
                                 "scheduled learning rate: factored second moments, about 0.13 bytes of state per "
                                 "LoRA parameter at rank 32, no first moment; not with distributed.strategy fsdp).")
    weight_decay: float = Field(0.0, ge=0, description="The optimizer's decoupled weight decay on the LoRA weights "
                                "(0 = none).")
    scheduler: Scheduler = Field(
        Scheduler.linear, description="Learning-rate schedule after warm-up: linear (default; straight "
                                      "from the peak down to min_lr_ratio x the peak over the remaining steps), "
                                      "cosine (half a cosine over the same span) or constant (the peak throughout).")
    warmup_steps: int = Field(0, ge=0, description="Steps of linear warm-up: step 1 runs at 1/warmup_steps of the "
                                                   "peak, step warmup_steps at the peak; 0 = none.")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="Floor of linear and cosine as a fraction of "
                                "learning_rate (0 = decay to zero; the official recipe's linear schedule ends at 0.1, "
                                "which `ltx-lora init` writes).")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip the gradient norm; null disables clipping.")
    seed: int = Field(42, ge=0, le=MAX_SEED, description="Seed of training's random draws (batch order, noise "
                      "levels, noise); each checkpoint saves their state, so a resumed run draws the same.")
    mixed_precision: Literal["bf16", "fp32"] = Field(
        "bf16", description="Compute dtype of training and its validation samples: bf16 (Ampere GPUs and newer) or "
                            "fp32 (slow; for the CPU demo).")
    gradient_checkpointing: bool = Field(True, description="Recompute activations in backward (needed below 80 GB).")
    compile: Literal["auto", "on", "off"] = Field(
        "auto", description="torch.compile each transformer block: auto = on a GPU with triton; falls back to eager "
                            "with one log line if compiling fails.")
    cuda_graphs: Literal["auto", "on", "off"] = Field(
        "auto", description="Replay each step's forward and backward as a CUDA graph (captured once per bucket "
                            "shape, block swap's host-to-device copies with it) with one process on a GPU and no "
                            "lora.dropout or output_preservation; auto and on differ only in that on refuses "
                            "output_preservation; a capture failure falls back to the plain step with one log line. "
                            "Removes the host's launch overhead: 1.67 -> 0.83 s/step with 18 blocks swapped at 24 "
                            "GiB (bench/README.md).")
    timestep_sampling: Literal["shifted_logit_normal", "uniform"] = Field(
        "shifted_logit_normal", description="How each sample's noise level is drawn: shifted_logit_normal (the "
        "official recipe's: centred higher for more tokens) or uniform; see timestep_sampling_params.")
    timestep_sampling_params: TimestepParams = Field(default_factory=TimestepParams,
                                                     description="The sampler's parameters (official defaults).")
    audio_loss_weight: float = Field(1.0, ge=0, description="Weight of the audio loss when video and audio are both "
                                     "generated (1.0 = the official recipe's plain sum). Audio usually converges "
                                     "first: report.html notes when its loss flattens while the video's still falls; "
                                     "lower this if the sound over-trains.")
    caption_dropout: float = Field(
        0.0, ge=0, le=1, description="Probability that a sample trains on the empty prompt instead of its caption "
                                     "(0 = never; 0.05-0.1 is usual). The empty prompt's features are cached by "
                                     "`ltx-lora preprocess`.")
    fps: float = Field(24.0, gt=0, description="Frame rate assumed for positions when a clip has none recorded.")
    ema: EmaConfig = Field(default_factory=EmaConfig, description="EMA of the LoRA weights (off by default).")
    output_preservation: OutputPreservationConfig | None = Field(
        None, description="Differential output preservation (ai-toolkit's diff_output_preservation; off when absent), "
        "e.g. {class_word: \"woman\", weight: 1.0}: each step also predicts the clip's caption with "
        "data.trigger_word replaced by class_word, once with the LoRA off and once with it on, and adds weight x "
        "the squared difference to the loss, so the LoRA keeps the base model's output for the plain class and "
        "changes only the trigger's. Needs data.trigger_word; preprocess encodes those captions. A step takes about "
        "2.4x the time of the same step without it (two more forwards, one more backward) and runs without CUDA "
        "graphs (train.cuda_graphs: auto runs eager, on is refused): about 3.2x the default step on an H200. Peak "
        "memory grows by the LoRA's gradients (0.8 GiB at rank 32; the memory plan counts it). A "
        "validation prompt naming the class without [trigger] shows what it keeps.")

    @model_validator(mode="after")
    def _timestep_params_fit_the_sampler(self) -> TrainConfig:
        kind = self.timestep_sampling
        mine = {"uniform": {"min_value", "max_value"}}.get(kind, {"std", "eps", "uniform_prob"})
        params = self.timestep_sampling_params
        # a value of the other sampler's, changed from its default (a config written whole holds every default)
        other = sorted(n for n, f in TimestepParams.model_fields.items() if n not in mine and getattr(params, n) != f.default)
        if other:
            raise ValueError(f"train.timestep_sampling_params.{other[0]} does not apply to timestep_sampling {kind} "
                             f"(it takes {', '.join(sorted(mine))}); remove it or change timestep_sampling.")
        return self

    @model_validator(mode="after")
    def _loraplus_has_group_rates(self) -> TrainConfig:
        # prodigy estimates one step size for all parameters and raises on a group with another learning rate
        if self.loraplus_lr_ratio != 1.0 and self.optimizer == Optimizer.prodigy:
            raise ValueError("train.loraplus_lr_ratio trains lora_B at another learning rate than lora_A, which "
                             "train.optimizer prodigy cannot (it estimates one step size for every parameter); set "
                             "the ratio to 1 or use adamw, adamw8bit or adafactor")
        return self

    @field_validator("output_preservation", mode="before")
    @classmethod
    def _preservation_is_a_mapping(cls, v: Any) -> Any:
        if v is not None and not isinstance(v, (dict, OutputPreservationConfig)):
            raise ValueError("train.output_preservation must be a mapping like {class_word: \"woman\", weight: 1.0}, "
                             "or left out (off)")
        return v

    @model_validator(mode="after")
    def _preservation_runs_eager(self) -> TrainConfig:
        # The preservation passes (one with the LoRA off) are not part of the captured step (train/graphed.py).
        if self.output_preservation is not None and self.cuda_graphs == "on":
            raise ValueError("train.cuda_graphs: on cannot capture train.output_preservation's extra passes (the "
                             "LoRA switched off for one of them); set cuda_graphs to auto (runs eager) or off.")
        return self


def fp8_matmuls_refusal(quantization: str) -> str:
    """Why FP8 matmuls cannot run with this `memory.quantization` ('' when they can: they need an FP8 base)."""
    if quantization in ("auto", "fp8"):
        return ""
    return (f"memory.fp8_matmuls: on computes with an FP8 base, but memory.quantization is {quantization}; set "
            "memory.quantization to auto or fp8, or fp8_matmuls to off.")


class MemoryConfig(Section):
    plan: Literal["auto", "80gb", "48gb", "32gb", "24gb"] = Field(
        "auto", description="Memory budget of the plan: auto = the GPU's free memory at start; a tier = that many GB "
                            "(the plan is printed before training and by `ltx-lora doctor --config`).")
    quantization: Literal["auto", "none", "int8", "fp8"] = Field(
        "auto", description="Weights format of the frozen base: auto (the plan picks: bf16 when it fits, else FP8 for "
                            "an FP8 checkpoint, else INT8), none (bf16), int8 or fp8 (1 byte per weight; the LoRA "
                            "stays fp32).")
    fp8_matmuls: Literal["off", "auto", "on"] = Field(
        "off", description="Matmuls of the frozen base in FP8 (torch._scaled_mm, ~1.9x the bf16 matmul rate on "
                           "Hopper): the base is kept in FP8 (an FP8 checkpoint as stored, a bf16 one quantized per "
                           "tensor at load) and its 28 linears per block compute the forward and the input gradient "
                           "from FP8 activations and gradients scaled per token row (per tensor on the CPU); the "
                           "LoRA is unchanged. "
                           "Faster, slightly less exact (loss and LoRA-gradient error in bench/README.md). on: needs a "
                           "GPU of compute capability 8.9+ (Ada, Hopper, Blackwell) and memory.quantization auto or "
                           "fp8; auto: on where the plan keeps an FP8 base anyway and the GPU has FP8; off: bf16 "
                           "matmuls.")
    text_encoder_8bit: bool = Field(False, description="Load Gemma in 8-bit for preprocessing (bitsandbytes).")
    block_swap: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        "auto", description="Transformer blocks kept in pinned host memory and streamed to the GPU before use "
                            "(needs gradient checkpointing); auto = as few as the plan needs, 0 = none.")

    @model_validator(mode="after")
    def _fp8_matmuls_need_fp8_weights(self) -> MemoryConfig:
        if self.fp8_matmuls == "on" and (why := fp8_matmuls_refusal(self.quantization)):
            raise ValueError(why)
        return self


class CheckpointConfig(Section):
    every: int = Field(250, ge=1, description="Save the LoRA and the training state every N steps.")
    keep_last: int | None = Field(3, ge=1, description="How many checkpoints to keep (the final LoRA is always "
                                  "kept); null keeps every one (the official keep_last_n: -1).")
    precision: Literal["bf16", "fp32"] = Field(
        "bf16", description="Data type of the LoRA files written (every checkpoint's and the final one): bf16 (half "
        "the size, what ComfyUI applies them in) or fp32 (the trained weights unrounded, e.g. to merge or continue "
        "them; the official checkpoints.precision: float32). Training states are fp32 either way.")


class ValidationSample(Section):
    """One validation prompt with the inputs it is conditioned on (paths start at the config file's folder). Which
    inputs a sample needs follows from the task: every condition of the task whose input the sample gives is
    applied, with the task's settings (prefix length, box, reference downscale), clean for the whole sampling."""

    prompt: str = Field(..., description="The prompt (`[trigger]` is replaced by data.trigger_word).")
    image: str | None = Field(None, description="First frame (an image, or a video's first frame) of a task that "
                              "generates video; overrides validation.reference_image for this prompt.")
    video: str | None = Field(None, description="The given video, resized and centre-cropped to the validation "
                              "size: v2a (the whole video is given), video extension (its first "
                              "frames are kept: the task's prefix), suffix (its last frames end the sample), "
                              "inpainting (with `mask`) and outpainting (the task's box is kept).")
    audio: str | None = Field(None, description="The given sound (an audio file or a video's track): a2v (the "
                              "whole sound is given), audio extension / suffix (its first / last steps are kept), "
                              "audio inpainting (with `mask`).")
    mask: str | None = Field(None, description="Inpainting: white (> 0.5) is kept from `video` / `audio`, black is "
                             "generated; an image or video for video, an audio file (its loudness) for audio.")
    reference_video: str | None = Field(None, description="IC-LoRA: the reference clip, encoded at the task's "
                                        "reference downscale and joined to the sequence.")
    reference_audio: str | None = Field(None, description="IC-LoRA: the reference sound (or a video's track).")

    INPUTS: ClassVar[tuple[str, ...]] = ("image", "video", "audio", "mask", "reference_video", "reference_audio")

    def inputs(self) -> dict[str, str]:
        """The conditioning inputs given, by name."""
        return {k: getattr(self, k) for k in self.INPUTS if getattr(self, k)}


class ValidationConfig(Section):
    prompts: list[str | ValidationSample] = Field(
        default_factory=list, description="2-3 fixed prompts, the same for every checkpoint. `[trigger]` is replaced "
        "by data.trigger_word; a prompt without it is used as written (the trigger is not prepended as it is to "
        "captions). A prompt with conditioning inputs is a mapping {prompt, image, video, audio, mask, "
        "reference_video, reference_audio} (which ones follow from the task: see docs/tasks.md).")
    negative_prompt: str = Field("worst quality, inconsistent motion, blurry, jittery, distorted",
                                 description="Negative prompt for classifier-free guidance (cached by preprocess).")
    every: int | None = Field(250, ge=1, description="Validate every N steps (and at step 0 and the end); null disables.")
    seed: int = Field(42, ge=0, le=MAX_SEED, description="Noise seed of every sample (the same at every checkpoint).")
    resolution: str = Field("960x544x49", description="WxHxF of validation samples.")
    fps: float = Field(24.0, gt=0, description="Frame rate of the samples (positions, audio length and the mp4).")
    steps: int = Field(30, ge=2, description="Denoising steps (50 for a final check; at least 2: LTX-2's schedule "
                                             "starts at sigma 0.1 with one).")
    cfg: float = Field(4.0, ge=0, description="Classifier-free guidance scale of the video.")
    audio_cfg: float = Field(7.0, ge=0, description="Classifier-free guidance scale of the audio (Lightricks' inference default).")
    stg_scale: float = Field(1.0, ge=0, description="Spatio-temporal guidance scale of the video.")
    audio_stg_scale: float | None = Field(None, ge=0, description="Spatio-temporal guidance scale of the audio; null = "
                                                                 "stg_scale.")
    stg_blocks: list[int] = Field(default_factory=lambda: [29], description="Blocks perturbed by STG.")
    guidance_rescale: float = Field(
        0.7, ge=0, le=1, description="Rescale the guided prediction toward the prompt's std (Lightricks' default 0.7; 0 = off).")
    modality_scale: float = Field(
        3.0, ge=0, description="Audio-video cross-modal guidance scale of the video (Lightricks' default 3.0; 1.0 = off; "
                               "with audio_modality_scale also 1.0 it saves one pass per step).")
    audio_modality_scale: float | None = Field(None, ge=0, description="Cross-modal guidance scale of the audio; "
                                                                       "null = modality_scale.")
    audio: bool = Field(True, description="Generate and decode audio with the video (LTX-2.3 is an audio-video model).")
    reference_image: str | None = Field(None, description="First frame for image-to-video validation.")
    use_ema: bool = Field(False, description="In-loop samples use the EMA weights (train.ema.decay must be set); "
                                             "training goes on with the raw weights.")
    preview_distilled_lora: str | None = Field(
        None, description="ltx-2.3-22b-distilled-lora-384.safetensors: samples become fast previews (Dev + this LoRA, "
                          "8 steps, CFG 1.0, no STG).")
    preview_strength: float = Field(
        0.55, ge=0, le=1, description="Strength of the distilled LoRA in previews (0.5-0.6; 1.0 burns the output).")
    compile: Literal["auto", "on", "off"] = Field(
        "auto", description="Sample with torch.compile'd transformer blocks: auto = where the blocks are compiled for "
        "training (train.compile on a GPU; for `ltx-lora validate`, where train.compile would compile them); on = "
        "always, CPU included; off = eager. Compiling costs two block graphs (one more per further STG block) at the "
        "first validation; later steps and validations reuse them. A compile failure falls back to eager with one "
        "log line.")


class DistributedConfig(Section):
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="With several GPUs (`--gpus N` or torchrun): ddp keeps the whole bf16 base on every GPU "
        "(fastest when it fits); fsdp shards the frozen base and the LoRA across GPUs per transformer block (FSDP2), "
        "for GPUs too small for the whole base. Ignored with one GPU.")


class LoggingConfig(Section):
    tensorboard: bool = Field(
        True, description="TensorBoard logs in OUTPUT_DIR/tensorboard: losses, learning rate, the config and, after "
        "each validation, every prompt's sample (animated, without sound; `validation/pN/video`), its frames and "
        "waveform (`validation/pN/frames`) and the health checks (text).")
    wandb: bool = Field(False, description="Also log to Weights & Biases (needs wandb: pip install "
                                           "'ltx-lora[wandb]', and `wandb login`).")
    wandb_project: str = Field("ltx-lora", description="The Weights & Biases project runs are logged to.")


TRIGGER = "[trigger]"


def trigger_as_word(trigger_word: str) -> re.Pattern:
    """`trigger_word` as a whole word (not inside another word: "man" is not in "woman"): what
    train.output_preservation replaces in captions (data/caption.py) and refuses in its class word."""
    return re.compile(rf"(?<!\w){re.escape(trigger_word.strip())}(?!\w)")


def expand_trigger(prompt: str, trigger_word: str) -> str:
    """A validation prompt as encoded and sampled: `[trigger]` replaced by data.trigger_word (nothing else added)."""
    return " ".join(prompt.replace(TRIGGER, trigger_word.strip()).split()) if TRIGGER in prompt else prompt


class Config(Section):
    """A whole training run."""

    output_dir: str = Field("runs/my-lora", description="Run folder: checkpoints, samples, logs and report.")
    task: TaskSetting = Field(
        DEFAULT_TASK, description="What the LoRA learns: a preset name (" + ", ".join(TASK_PRESETS) + "; "
        "`ltx-lora init --task NAME` writes it out) or a mapping of video/audio roles and conditions (see "
        "docs/tasks.md).")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The base model files (local paths only).")
    data: DataConfig = Field(default_factory=DataConfig, description="The dataset, its buckets and the preprocessing cache.")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="The LoRA adapter that is trained.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Objective, optimizer and schedule.")
    memory: MemoryConfig = Field(default_factory=MemoryConfig, description="How the 22B base fits your GPU.")
    checkpoints: CheckpointConfig = Field(default_factory=CheckpointConfig, description="Saving and resuming.")
    validation: ValidationConfig = Field(default_factory=ValidationConfig, description="Fixed-prompt samples at step 0 and every N steps.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Where metrics go.")
    distributed: DistributedConfig = Field(
        default_factory=DistributedConfig, description="Several GPUs: how the model is spread (global batch = "
        "train.batch_size x GPUs x train.gradient_accumulation).")

    def validation_samples(self) -> list[ValidationSample]:
        """validation.prompts as samples (a plain string is a sample without inputs), prompts as written."""
        return [ValidationSample(prompt=p) if isinstance(p, str) else p for p in self.validation.prompts]

    def validation_prompts(self) -> list[str]:
        """validation.prompts' texts as encoded by preprocess and looked up by validation: `[trigger]` expanded."""
        texts = [s.prompt for s in self.validation_samples()]
        if not self.data.trigger_word.strip() and any(TRIGGER in p for p in texts):
            raise UserError(f"validation.prompts uses {TRIGGER} but data.trigger_word is empty; set the trigger word "
                            "or write it into the prompt.")
        return [expand_trigger(p, self.data.trigger_word) for p in texts]

    @field_validator("output_dir")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    @model_validator(mode="after")
    def _loraplus_is_for_lora(self) -> "Config":
        if self.train.loraplus_lr_ratio != 1.0 and self.lora.variant != LoraVariant.lora:
            raise ValueError(f"train.loraplus_lr_ratio speeds up plain LoRA's lora_B matrices, which lora.variant "
                             f"{self.lora.variant.value} does not have; set it to 1 or lora.variant: lora")
        return self

    @model_validator(mode="after")
    def _adafactor_is_not_sharded(self) -> "Config":
        # Its factored moments (a row and a column per matrix) do not shard as the parameters do under FSDP2.
        if self.train.optimizer == Optimizer.adafactor and self.distributed.strategy == "fsdp":
            raise ValueError("train.optimizer adafactor keeps a row and a column of moments per matrix, which "
                             "distributed.strategy fsdp cannot shard as it shards the LoRA; use ddp (the LoRA is "
                             "small enough to copy) or another optimizer")
        return self

    @model_validator(mode="after")
    def _ema_for_validation(self) -> "Config":
        if self.validation.use_ema and not self.train.ema.enabled:
            raise ValueError("validation.use_ema needs train.ema.decay (e.g. 0.999); set it or use_ema: false")
        return self

    @model_validator(mode="after")
    def _preservation_needs_the_trigger(self) -> "Config":
        keep = self.train.output_preservation
        if keep is None:
            return self
        trigger = self.data.trigger_word.strip()
        if not trigger:
            raise ValueError("train.output_preservation replaces data.trigger_word in each caption by its class_word, "
                             "but data.trigger_word is empty; set the trigger word or remove output_preservation.")
        if trigger_as_word(trigger).search(keep.class_word):
            raise ValueError(f"train.output_preservation.class_word {keep.class_word!r} contains the trigger word "
                             f"{trigger!r}, so the preservation captions would still name the trained subject; use "
                             "the plain class (e.g. \"woman\").")
        return self

    # -- YAML in/out -------------------------------------------------------------------------------------------
    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _did_you_mean(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """Suggest the closest valid key for an unknown one at `loc`."""
    cls: Any = model
    for part in loc[:-1]:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        section = _section_of(field.annotation) if field is not None else None
        if section is None:
            return ""
        cls = section
    close = difflib.get_close_matches(str(loc[-1]), list(cls.model_fields), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else f" (valid keys: {', '.join(cls.model_fields)})"


def _is_section(model: type[BaseModel], loc: tuple[Any, ...]) -> bool:
    """Whether `loc` names `model` itself or one of its sections (a mapping of keys), not a single key."""
    cls: Any = model
    for part in loc:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        cls = _section_of(field.annotation) if field is not None else None
        if cls is None:
            return False
    return True


def _section_of(annotation: Any) -> type[BaseModel] | None:
    """The section class a field holds (itself, or the section of an optional one like train.output_preservation)."""
    for a in (annotation, *get_args(annotation)):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


# pydantic names the branch of a union in an error's location; a validation prompt is a string or a mapping.
_UNION_TAGS = ("str", "ValidationSample")


def _first_error(e: ValidationError) -> dict:
    """The error to report: for a validation prompt written as a mapping, the mapping's error, not that it is not
    a string."""
    errors = e.errors()
    for err in errors:
        if "ValidationSample" in err["loc"]:
            return err
    return errors[0]


def parse_config(data: Any, source: str = "config") -> Config:
    """Validate a mapping into a Config; the first problem becomes one UserError sentence."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{source} must be a YAML mapping of sections (model:, data:, lora:, train:, ...).")
    _refuse_legacy_mode(data, source)
    _check_task(data.get("task", DEFAULT_TASK), source)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        _raise_first(e, source, Config)


def _check_task(task: Any, source: str) -> None:
    """`task:` is a preset name or a mapping: say which one went wrong (pydantic would report both branches)."""
    if isinstance(task, str):
        if task not in TASK_PRESETS:
            close = difflib.get_close_matches(task, list(TASK_PRESETS), n=1, cutoff=0.5)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UserError(f"{source}: unknown task '{task}'{hint}; use one of {', '.join(TASK_PRESETS)} or a "
                            "mapping of video/audio roles and conditions (docs/tasks.md).")
    elif isinstance(task, dict):
        try:
            TaskConfig.model_validate(task)
        except ValidationError as e:
            _raise_first(e, source, TaskConfig, prefix=("task",))
    else:
        raise UserError(f"{source}: 'task' must be a task name (e.g. t2av) or a mapping of video/audio roles and "
                        f"conditions; got {task!r}.")


def _raise_first(e: ValidationError, source: str, model: type[BaseModel], prefix: tuple = ()) -> None:
    """The first problem of a validation as one UserError sentence naming the key (`prefix`: where `model` sits
    in the config)."""
    err = _first_error(e)
    loc = tuple(p for p in err["loc"] if p not in _UNION_TAGS)
    if err["type"] == "value_error" and _is_section(model, loc):
        # a whole section's (or the config's) own check: its sentence names the keys; the section's values would
        # only repeat what was written
        raise UserError(f"{source}: {str(err['ctx']['error']).rstrip('.')}.") from None
    key = ".".join(str(p) for p in prefix + loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        hint = (_did_you_mean(ValidationSample, loc[-1:]) if "ValidationSample" in err["loc"]
                else _did_you_mean(model, loc))
        raise UserError(f"{source}: unknown key '{key}'{hint}.") from None
    msg = err["msg"].rstrip(".")
    raise UserError(f"{source}: '{key}' is invalid: {msg}; got {err.get('input')!r}.") from None


# train.mode (before tasks) -> the task preset that trains the same thing.
_LEGACY_MODES = {"t2v": "t2v", "av": "t2av", "i2v": "i2v"}


def _refuse_legacy_mode(data: dict, source: str) -> None:
    """`train.mode` / `train.first_frame_conditioning_p` were replaced by `task:`; say exactly what to write rather
    than guess (the old modes also drew a first frame with p 0.1, which no official preset does)."""
    train = data.get("train")
    if not isinstance(train, dict) or not ({"mode", "first_frame_conditioning_p"} & set(train)):
        return
    mode = train.get("mode", "av")
    preset = _LEGACY_MODES.get(str(mode), "t2av")
    raise UserError(f"{source}: train.mode and train.first_frame_conditioning_p were replaced by the top-level "
                    f"`task:`; write `task: {preset}` instead of train.mode {mode}, and for a first-frame "
                    "condition add `{type: first_frame, probability: P}` to task.video.conditions (see "
                    "docs/tasks.md).")


# Every path a config holds, as (section or None for the top level, key).
PATH_KEYS: tuple[tuple[str | None, str], ...] = (
    ("model", "checkpoint"), ("model", "text_encoder"), ("data", "dataset"), ("data", "cache_dir"),
    (None, "output_dir"), ("validation", "reference_image"), ("validation", "preview_distilled_lora"),
    ("lora", "init_from"),
)


# The model files among PATH_KEYS: a URL there gets the sentence on which file to download from where.
_MODEL_ROLES = {("model", "checkpoint"): "checkpoint", ("model", "text_encoder"): "text_encoder",
                ("validation", "preview_distilled_lora"): "lora", ("lora", "init_from"): "lora"}


def resolve_paths(cfg: Config, folder: Path) -> Config:
    """Make each relative path of `cfg` (see PATH_KEYS, and the inputs of validation prompts) start at `folder`, the
    config file's: that is what a relative path in a config file means. Absolute paths, `~` paths and unset ones
    ("" or null) stay as written. A URL is refused here, before it reads as a relative path
    (`folder/https:/huggingface.co/...`, which would only be said not to exist)."""
    folder = Path(os.path.abspath(folder))
    for section, key in PATH_KEYS:
        owner = getattr(cfg, section) if section else cfg
        value = getattr(owner, key)
        role = _MODEL_ROLES.get((section, key))
        if value:
            refuse_url(value, f"{section}.{key}" if section else key, role)
        if value and role is not None:
            refuse_repo_id(value, folder, f"{section}.{key}", role)
        if not value or Path(value).expanduser().is_absolute():
            continue
        owner = owner.model_copy(update={key: os.path.normpath(folder / value)})  # str for str: nothing to check
        cfg = cfg.model_copy(update={section: owner}) if section else owner
    for i, p in enumerate(cfg.validation.prompts):
        for k, v in ({} if isinstance(p, str) else p.inputs()).items():
            refuse_url(v, f"validation.prompts[{i}].{k}")
    prompts = [p if isinstance(p, str) else p.model_copy(update={k: _under(folder, v) for k, v in p.inputs().items()})
               for p in cfg.validation.prompts]
    if prompts != cfg.validation.prompts:
        cfg = cfg.model_copy(update={"validation": cfg.validation.model_copy(update={"prompts": prompts})})
    return cfg


def _under(folder: Path, value: str) -> str:
    return value if Path(value).expanduser().is_absolute() else os.path.normpath(folder / value)


def load_config(path: str | Path) -> Config:
    """Read a YAML config (ours, or the official LTX trainer's, translated with a note); relative paths in it start
    at its folder (`resolve_paths`), wherever the command runs."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"config file {path} does not exist; create one with `ltx-lora init {path}`.")
    text = read_user_text(path, "config file", fix="a config is UTF-8 YAML text (`ltx-lora init` writes one)")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path} is not valid YAML{where}: {getattr(e, 'problem', e)}.") from None
    except RecursionError:
        raise UserError(f"{path} nests lists or mappings too deeply to be a config; a config is a mapping of "
                        "sections (model:, data:, lora:, train:, ...), see `ltx-lora init`.") from None
    if looks_official(data):
        data = translate_official(data, source=str(path))
    return resolve_paths(parse_config(data, source=str(path)), path.parent)
