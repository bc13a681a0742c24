"""Each validation prompt's conditioning inputs, as the task uses them: checked before anything loads, encoded once
per run (the VAE encoders load only when some prompt has an input), and written as previews for the report.

Which input feeds which condition follows from the task (`ltx_lora.task`), with the task's own settings, so a
sample is conditioned the way the LoRA was trained:

| input | task | sampled as |
|---|---|---|
| `image` (or `validation.reference_image`) | video generated | the first latent frame, clean |
| `video` | video `condition` (v2a) | the whole video, clean at sigma 0 throughout |
| `video` | video `prefix` / `suffix` | its first / last N latent frames kept at the start / end |
| `video` | video `spatial_crop` | the task's pixel box kept on every frame |
| `video` + `mask` | video `mask` | white (> 0.5 on the latent grid, reduced as training reduces a `video_mask`) kept |
| `reference_video` | video `reference` | encoded at 1/downscale size (and 1/temporal_scale frame groups), appended |
| `audio` | audio `condition` (a2v) | the whole sound, clean at sigma 0 throughout |
| `audio` (+ `mask`) | audio `prefix` / `suffix` / `mask` | as for video, on the 25-per-second audio steps |
| `reference_audio` | audio `reference` | appended on its own audio grid |

A video input spans the sample from its start: its first F frames at the validation size and rate (F of the
validation resolution; a prefix needs only its own frames); a sound, the sample's duration (padded with silence).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ltx_lora.config import ValidationSample
from ltx_lora.data.condition_mask import audio_mask_to_latent, video_mask_to_latent
from ltx_lora.data.decode import AUDIO_RATE, read_audio, read_clip, read_image
from ltx_lora.data.probe import IMAGE_EXTENSIONS
from ltx_lora.errors import UserError
from ltx_lora.ltx.sampling import LatentAt, Masked, Reference, audio_steps
from ltx_lora.ltx.vae import encode_audio, encode_video
from ltx_lora.runtime.run import SampleSettings
from ltx_lora.sample.media import write_audio_sheet, write_mp4, write_poster, write_wav
from ltx_lora.task import TaskConfig

SPATIAL, TEMPORAL = 32, 8  # the video VAE's compression


@dataclass
class PromptInputs:
    """What one prompt is sampled with (latents on the CPU) and the previews the report shows beside it."""

    first_frame: torch.Tensor | None = None
    video_given: torch.Tensor | None = None
    audio_given: torch.Tensor | None = None
    video_conditions: list = field(default_factory=list)
    audio_conditions: list = field(default_factory=list)
    shown: list[dict] = field(default_factory=list)  # {"name", "source", "kind", "file", ["poster"]}

    @property
    def video_inputs(self) -> bool:
        return self.first_frame is not None or self.video_given is not None or bool(self.video_conditions)


def _where(index: int) -> str:
    return f"validation prompt {index + 1}"


def check_inputs(samples: list[ValidationSample], task: TaskConfig, settings: SampleSettings,
                 reference_image: str | None) -> None:
    """Refuse, before anything loads, a prompt whose inputs do not fit the task: an input no condition uses, an
    input the task needs and the prompt lacks, a file that does not exist, a reference that cannot be sized."""
    video, audio = task.video, task.audio
    for i, s in enumerate(samples):
        where = _where(i)
        given = s.inputs()
        for name, path in given.items():
            if not Path(path).expanduser().is_file():
                raise UserError(f"{where}: {name} {path} does not exist; give a local file.")
        if not video.present:
            extra = [k for k in ("image", "video", "reference_video") if k in given]
            if extra:
                raise UserError(f"{where} gives {extra[0]} but the task has no video (task.video.role: off); "
                                "remove it.")
        if not audio.present:
            extra = [k for k in ("audio", "reference_audio") if k in given]
            if extra:
                raise UserError(f"{where} gives {extra[0]} but the task has no audio (task.audio.role: off); "
                                "remove it.")
        if video.role == "condition" and not s.video:
            raise UserError(f"{where} needs `video`: the task gives the video and generates its sound (v2a); "
                            "write the prompt as a mapping {prompt: ..., video: clip.mp4}.")
        if audio.role == "condition" and not s.audio:
            raise UserError(f"{where} needs `audio`: the task gives the sound and generates the video (a2v); "
                            "write the prompt as a mapping {prompt: ..., audio: sound.wav}.")
        if s.image and video.role != "generated":
            raise UserError(f"{where} gives an image (first frame) but the task does not generate video; remove it.")
        for name, m in (("video", video), ("audio", audio)):
            if m.generated and getattr(s, name):
                if not any(m.find(k) for k in ("prefix", "suffix", "spatial_crop", "mask")):
                    raise UserError(f"{where} gives {name} but no condition of task.{name} uses it (prefix, suffix, "
                                    f"spatial_crop or mask take a given {name}); remove it or change the task.")
                if m.find("mask") and not s.mask and not any(m.find(k) for k in ("prefix", "suffix", "spatial_crop")):
                    raise UserError(f"{where} gives {name} for inpainting but no `mask`; add a mask file (white = "
                                    "kept).")
            ref = m.find("reference") if m.generated else []
            ref_input = getattr(s, f"reference_{name}")
            if ref_input and not ref:
                raise UserError(f"{where} gives reference_{name} but task.{name} has no reference condition; "
                                "remove it or use an IC-LoRA task.")
            if ref and not ref_input and ref[0].probability >= 1:
                raise UserError(f"{where} needs reference_{name}: the task always joins a reference {name} "
                                f"(IC-LoRA); add reference_{name} to the prompt's mapping.")
        if s.mask and not any(m.generated and m.find("mask") and getattr(s, n) for n, m
                              in (("video", video), ("audio", audio))):
            raise UserError(f"{where} gives a mask but no inpainting condition (task mask with the prompt's video "
                            "or audio) uses it; remove it.")
        if ref := video.find("reference"):
            d, ts = ref[0].downscale, ref[0].temporal_scale
            if settings.width % (SPATIAL * d) or settings.height % (SPATIAL * d):
                raise UserError(f"validation.resolution {settings.width}x{settings.height} divided by the reference "
                                f"downscale {d} is not a multiple of 32; use a resolution divisible by {SPATIAL * d}.")
            if (settings.frames - 1) % (TEMPORAL * ts):
                raise UserError(f"validation.resolution has {settings.frames} frames: with the reference's "
                                f"temporal_scale {ts}, frames - 1 must be a multiple of {TEMPORAL * ts}.")
    if reference_image and not video.generated:
        raise UserError("validation.reference_image is set but the task does not generate video; set it to null.")


# --- reading and encoding ---------------------------------------------------------------------------------------


def _video_frames(path: str, s: SampleSettings, count: int, width: int, height: int, what: str) -> torch.Tensor:
    """[3, count, H, W] in [-1, 1] from the start of a video (an image: its one frame, repeated)."""
    p = Path(path)
    try:
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            return read_image(p, width, height).frames.expand(-1, count, -1, -1)
        return read_clip(p, width, height, count, target_fps=s.fps, with_audio=False).frames
    except (OSError, ValueError) as e:
        raise UserError(f"{what} {path} cannot give {count} frames of {width}x{height} at {s.fps:g} fps ({e}); "
                        "give a longer clip, or a shorter validation.resolution.") from None


def _sound(path: str, s: SampleSettings, what: str) -> torch.Tensor:
    """[2, N] at 16 kHz: the sample's duration from the start (shorter sounds padded with silence)."""
    try:
        wave = read_audio(Path(path), 0.0, s.frames / s.fps)
    except (OSError, ValueError) as e:
        raise UserError(f"{what} {path} cannot be read as audio ({e}).") from None
    if wave is None:
        raise UserError(f"{what} {path} has no audio track; give an audio file or a video with sound.")
    return wave


def box_mask(box: tuple[int, int, int, int], latent_frames: int, height: int, width: int) -> torch.Tensor:
    """The pixel box (top, left, bottom, right) on the latent grid [F', H', W'], 1 inside (cells by floor division,
    as the official trainer maps it)."""
    top, left, bottom, right = (v // SPATIAL for v in box)
    mask = torch.zeros(latent_frames, height, width)
    mask[:, min(top, height):min(bottom, height), min(left, width):min(right, width)] = 1
    return mask


class InputEncoder:
    """Encodes the prompts' inputs with the run's VAE encoders, loaded by the caller and passed in."""

    def __init__(self, task: TaskConfig, settings: SampleSettings, video_encoder, audio_encoder, previews: Path):
        self.task, self.s = task, settings
        self.video_encoder, self.audio_encoder = video_encoder, audio_encoder
        self.previews = previews

    def _encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        return encode_video(self.video_encoder, frames.unsqueeze(0)).float().cpu()

    def _encode_audio(self, wave: torch.Tensor) -> torch.Tensor:
        p = next(self.audio_encoder.parameters())
        return encode_audio(self.audio_encoder, wave.unsqueeze(0).to(p.device), AUDIO_RATE).float().cpu()

    def encode(self, index: int, sample: ValidationSample, reference_image: str | None) -> PromptInputs:
        s, task = self.s, self.task
        out = PromptInputs()
        latent_frames = (s.frames - 1) // TEMPORAL + 1
        steps = audio_steps(s.frames, s.fps)
        image = sample.image or (reference_image if task.video.generated else None)
        if image:
            frames = _video_frames(image, s, 1, s.width, s.height, "the first frame")
            out.first_frame = self._encode_video(frames)
            self._show_image(out, index, "image", image, frames)
        if sample.video:
            v = task.video
            prefix, suffix = v.find("prefix"), v.find("suffix")
            only_prefix = v.generated and prefix and not (suffix or v.find("spatial_crop") or v.find("mask"))
            n = min(prefix[0].frames, latent_frames) if prefix else 0
            count = (n - 1) * TEMPORAL + 1 if only_prefix else s.frames
            frames = _video_frames(sample.video, s, count, s.width, s.height, "video")
            latent = self._encode_video(frames)
            self._show_video(out, index, "video", sample.video, frames)
            if v.role == "condition":
                out.video_given = latent
            else:
                if prefix:
                    out.video_conditions.append(LatentAt(latent[:, :, :n], 0))
                if suffix:
                    k = min(suffix[0].frames, latent_frames)
                    out.video_conditions.append(LatentAt(latent[:, :, -k:], latent_frames - k))
                if crop := v.find("spatial_crop"):
                    mask = box_mask(crop[0].box, latent_frames, s.height // SPATIAL, s.width // SPATIAL)
                    out.video_conditions.append(Masked(latent, mask))
                if v.find("mask") and sample.mask:
                    pixels = (_video_frames(sample.mask, s, s.frames, s.width, s.height, "mask") + 1).mean(0) / 2
                    out.video_conditions.append(Masked(latent, video_mask_to_latent(pixels, latent_frames)))
                    self._show_video(out, index, "mask", sample.mask, pixels.unsqueeze(0).expand(3, -1, -1, -1) * 2 - 1)
        if sample.reference_video:
            ref = task.video.find("reference")[0]
            d, ts = ref.downscale, ref.temporal_scale
            frames = _video_frames(sample.reference_video, s, s.frames, s.width // d, s.height // d,
                                   "reference_video")
            frames = frames[:, [0, *range(1, s.frames, ts)]]
            out.video_conditions.append(Reference(self._encode_video(frames), d, ts))
            self._show_video(out, index, "reference_video", sample.reference_video, frames)
        if sample.audio:
            a = task.audio
            wave = _sound(sample.audio, s, "audio")
            latent = self._encode_audio(wave)[:, :, :steps]
            self._show_audio(out, index, "audio", sample.audio, wave)
            if a.role == "condition":
                out.audio_given = latent
            else:
                if prefix := a.find("prefix"):
                    out.audio_conditions.append(LatentAt(latent[:, :, :prefix[0].frames], 0))
                if suffix := a.find("suffix"):
                    k = min(suffix[0].frames, latent.shape[2])
                    out.audio_conditions.append(LatentAt(latent[:, :, -k:], latent.shape[2] - k))
                if a.find("mask") and sample.mask and not task.video.find("mask"):
                    mask = audio_mask_to_latent(_sound(sample.mask, s, "mask"), latent.shape[2])
                    out.audio_conditions.append(Masked(latent, mask))
        if sample.reference_audio:
            wave = _sound(sample.reference_audio, s, "reference_audio")
            out.audio_conditions.append(Reference(self._encode_audio(wave)[:, :, :steps]))
            self._show_audio(out, index, "reference_audio", sample.reference_audio, wave)
        return out

    # -- previews: what the model was given, at the size it was given ----------------------------------------------
    def _file(self, index: int, name: str, ext: str) -> Path:
        return self.previews / f"p{index}_{name}{ext}"

    def _show_image(self, out: PromptInputs, index: int, name: str, source: str, frames: torch.Tensor) -> None:
        path = write_poster(self._file(index, name, ".png"), _uint8(frames))
        out.shown.append({"name": name, "source": source, "kind": "image", "file": path})

    def _show_video(self, out: PromptInputs, index: int, name: str, source: str, frames: torch.Tensor) -> None:
        pixels = _uint8(frames)
        video = write_mp4(self._file(index, name, ".mp4"), pixels, self.s.fps)
        poster = write_poster(self._file(index, name, ".poster.png"), pixels)
        out.shown.append({"name": name, "source": source, "kind": "video", "file": video, "poster": poster})

    def _show_audio(self, out: PromptInputs, index: int, name: str, source: str, wave: torch.Tensor) -> None:
        wav = write_wav(self._file(index, name, ".wav"), wave, AUDIO_RATE)
        sheet = write_audio_sheet(self._file(index, name, ".png"), wave, AUDIO_RATE)
        out.shown.append({"name": name, "source": source, "kind": "audio", "file": wav, "poster": sheet})


def _uint8(frames: torch.Tensor) -> torch.Tensor:
    """[3, F, H, W] in [-1, 1] -> [F, H, W, 3] uint8."""
    return ((frames.permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)

