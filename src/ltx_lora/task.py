"""What a LoRA learns: per modality, whether it is generated or given clean, and the conditions it trains with.

This is the official trainer's `flexible` strategy (ltx-trainer 1.2.0, `training_strategies/flexible.py`)
expressed as our typed config; every config Lightricks ships uses it. A task has two modalities:

- `role: generated`: noised, denoised by the model, in the loss. `condition`: given clean (timestep 0, no loss),
  e.g. the audio of audio-to-video. `off`: not in the sequence at all (text-to-audio has no video tokens).
- `conditions` of a generated modality, each applied to a sample with its `probability`:
  intrinsic ones make some of the modality's own tokens clean, timestep 0 and out of the loss (`first_frame`,
  `prefix`, `suffix`, `spatial_crop`, `mask`); `reference` (IC-LoRA) joins another clip's clean latents to the
  sequence, in front of the generated tokens, at timestep 0 and out of the loss, attending both ways.

Each generated modality draws its own sigma, shifted by its own token count (audio's few tokens give a lower
sigma: measured at 960x544x49, median 0.79 for video and 0.60 for audio), as the flexible strategy does;
`sigma: shared` gives audio the video's sigma instead (the older text_to_video strategy's behaviour).

A config's `task:` is either a preset name (`TASK_PRESETS`, the 16 shipped official configs' tasks) or a
mapping; `resolve_task` turns either into the `TaskConfig` everything else reads.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ltx_lora.task_catalog import DEFAULT_TASK as DEFAULT_TASK  # re-exported: config and init read it here
from ltx_lora.task_catalog import TASK_LINES


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


_PROBABILITY = Field(1.0, ge=0.0, le=1.0, description="Probability that a sample trains with this condition.")


class FirstFrameCondition(_Section):
    """Video only: the first latent frame (the first pixel frame) is given clean."""

    type: Literal["first_frame"] = "first_frame"
    probability: float = _PROBABILITY


class PrefixCondition(_Section):
    """The first `frames` temporal units are given clean (video or audio extension)."""

    type: Literal["prefix"] = "prefix"
    frames: int = Field(..., ge=1, description="Video: latent frames (the first is 1 pixel frame, each next one 8); "
                                                "audio: audio latent steps (25 per second).")
    probability: float = _PROBABILITY


class SuffixCondition(_Section):
    """The last `frames` temporal units are given clean (generate what leads up to them)."""

    type: Literal["suffix"] = "suffix"
    frames: int = Field(..., ge=1, description="Video: latent frames (8 pixel frames each); audio: audio latent "
                                                "steps (25 per second).")
    probability: float = _PROBABILITY


class SpatialCropCondition(_Section):
    """Video only: a pixel box of every frame is given clean (outpainting generates the rest)."""

    type: Literal["spatial_crop"] = "spatial_crop"
    box: tuple[int, int, int, int] = Field(..., description="(top, left, bottom, right) in pixels of the bucket's "
                                                            "frame, as the official (y1, x1, y2, x2).")
    probability: float = _PROBABILITY

    @model_validator(mode="after")
    def _ordered(self) -> "SpatialCropCondition":
        top, left, bottom, right = self.box
        if min(self.box) < 0 or bottom <= top or right <= left:
            raise ValueError(f"box {list(self.box)} must be (top, left, bottom, right) with top < bottom and "
                             "left < right, all >= 0")
        return self


class MaskCondition(_Section):
    """Per-clip masks from the dataset file (`video_mask` / `audio_mask` columns): white (> 0.5) is given clean,
    black is generated (inpainting). Distinct from the masked loss (`loss_mask`), which only weights the loss."""

    type: Literal["mask"] = "mask"
    probability: float = _PROBABILITY


class ReferenceCondition(_Section):
    """IC-LoRA: the dataset's `reference_video` / `reference_audio` clip, encoded clean and joined in front of the
    generated tokens (timestep 0, no loss, attending both ways). One draw per batch: the sequence length changes."""

    type: Literal["reference"] = "reference"
    downscale: int = Field(1, ge=1, description="Video: the reference is encoded at 1/downscale of the bucket's width "
                                                "and height (its positions scaled back up, as the official trainer "
                                                "places them); exported as reference_downscale_factor.")
    temporal_scale: int = Field(1, ge=1, description="Video: the reference has 1/temporal_scale of the target's "
                                                     "frame groups (frames - 1 divided by it, plus 1).")
    probability: float = _PROBABILITY


Condition = Annotated[
    Union[FirstFrameCondition, PrefixCondition, SuffixCondition, SpatialCropCondition, MaskCondition,
          ReferenceCondition],
    Field(discriminator="type"),
]

VIDEO_ONLY_CONDITIONS = ("first_frame", "spatial_crop")


class ModalityTask(_Section):
    role: Literal["generated", "condition", "off"] = Field(
        "generated", description="generated (denoised, trained), condition (given clean, no loss) or off (absent).")
    conditions: list[Condition] = Field(
        default_factory=list, description="Conditions of a generated modality: first_frame, prefix, suffix, "
        "spatial_crop, mask, reference; each with a probability.")

    @field_validator("role", mode="before")
    @classmethod
    def _yaml_off(cls, v):
        # YAML 1.1 reads a bare `off` as false: that is what the user meant.
        return "off" if v is False else v

    @property
    def generated(self) -> bool:
        return self.role == "generated"

    @property
    def present(self) -> bool:
        return self.role != "off"

    def find(self, kind: str) -> list[Condition]:
        return [c for c in self.conditions if c.type == kind]


class TaskConfig(_Section):
    video: ModalityTask = Field(default_factory=ModalityTask, description="The video modality.")
    audio: ModalityTask = Field(default_factory=ModalityTask, description="The audio modality.")
    sigma: Literal["independent", "shared"] = Field(
        "independent", description="independent: audio draws its own noise level, shifted by its token count (the "
        "official flexible recipe); shared: audio uses the video's (the older text_to_video strategy).")

    @model_validator(mode="after")
    def _consistent(self) -> "TaskConfig":
        if not (self.video.generated or self.audio.generated):
            raise ValueError("at least one of task.video.role / task.audio.role must be generated")
        for name, m in (("video", self.video), ("audio", self.audio)):
            if m.conditions and not m.generated:
                raise ValueError(f"task.{name} has conditions but its role is {m.role}; conditions apply to a "
                                 "generated modality")
            if len(m.find("reference")) > 1:
                raise ValueError(f"task.{name} lists reference twice; one reference per modality")
        bad = [c.type for c in self.audio.conditions if c.type in VIDEO_ONLY_CONDITIONS]
        if bad:
            raise ValueError(f"task.audio cannot use {bad[0]} (video only); audio takes prefix, suffix, mask, "
                             "reference")
        return self

    @property
    def has_reference(self) -> bool:
        return bool(self.video.find("reference") or self.audio.find("reference"))


def _task(video: str = "generated", audio: str = "generated", v: list | None = None,
          a: list | None = None) -> TaskConfig:
    return TaskConfig(video=ModalityTask(role=video, conditions=v or []),
                      audio=ModalityTask(role=audio, conditions=a or []))


# name -> the task; its one-line description and official config are in ltx_lora.task_catalog.
_TASKS: dict[str, TaskConfig] = {
    "t2av": _task(),
    "t2v": _task(audio="off"),
    "i2v": _task(v=[FirstFrameCondition(probability=0.5)]),
    "t2a": _task(video="off"),
    "a2v": _task(audio="condition"),
    "v2a": _task(video="condition"),
    "video_extend": _task(v=[PrefixCondition(frames=8)]),
    "video_suffix": _task(v=[SuffixCondition(frames=8)]),
    "video_inpainting": _task(audio="off", v=[MaskCondition()]),
    "video_outpainting": _task(audio="off", v=[SpatialCropCondition(box=(0, 0, 288, 576))]),
    "audio_extend": _task(video="off", a=[PrefixCondition(frames=8)]),
    "audio_suffix": _task(video="off", a=[SuffixCondition(frames=8)]),
    "audio_inpainting": _task(video="off", a=[MaskCondition()]),
    "v2v_ic": _task(audio="off", v=[ReferenceCondition(), FirstFrameCondition(probability=0.2)]),
    "a2a_ic": _task(video="off", a=[ReferenceCondition()]),
    "av2av_ic": _task(v=[ReferenceCondition()], a=[ReferenceCondition()]),
}

# name -> (one line for `--help` and `init`, the official config it matches or "", the task).
TASK_PRESETS: dict[str, tuple[str, str, TaskConfig]] = {
    name: (*TASK_LINES[name], task) for name, task in _TASKS.items()}

TaskSetting = Union[Literal[tuple(TASK_PRESETS)], TaskConfig]  # type: ignore[valid-type]


def resolve_task(setting: str | TaskConfig) -> TaskConfig:
    """The TaskConfig a config's `task:` means (a preset's copy, or the mapping as written)."""
    if isinstance(setting, TaskConfig):
        return setting
    return TASK_PRESETS[setting][2].model_copy(deep=True)


def task_name(setting: str | TaskConfig) -> str:
    """A short name for logs and LoRA metadata: the preset's, or the preset a mapping equals, else `custom`."""
    if isinstance(setting, str):
        return setting
    for name, (_, _, preset) in TASK_PRESETS.items():
        if preset == setting:
            return name
    return "custom"
