"""`ltx-lora lora mix`: one LoRA from two, the video stream's layers of one file and the audio stream's of another.

Audio usually learns faster than video (the LTX-2.3 training guide; the training report says so when the smoothed
audio loss flattens while the video loss still falls), so the best picture may be in a later checkpoint than the
best sound. Every layer of a transformer block writes into one stream of tokens (`lora_file.STREAMS`): attn1,
attn2, ff and audio_to_video_attn into the video, audio_attn1, audio_attn2, audio_ff and video_to_audio_attn into
the audio. The mix takes each stream's layers from its own file, each with the strength its file asks for folded
in (ComfyUI layout without `.alpha`, as the trainer exports: ComfyUI, ltx-core and diffusers apply it alike).
Layers outside the blocks (a third-party LoRA's patchify projection, say) come from the video file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ltx_lora.errors import UserError
from ltx_lora.files import lora_file
from ltx_lora.files.model_files import identify
from ltx_lora.lora.convert import converted_modules
from ltx_lora.lora.output import output_path

@dataclass
class MixResult:
    path: Path
    layers: dict[str, int]  # stream (or "other") -> layers taken


def mix(video: str | Path, audio: str | Path, out: str | Path, overwrite: bool = False) -> MixResult:
    files = {"video": lora_file.read_lora(video), "audio": lora_file.read_lora(audio)}
    out = output_path(out, [f.path for f in files.values()], overwrite)
    families = {name: identify(f.path).family for name, f in files.items()}
    if None not in families.values() and len(set(families.values())) > 1:
        raise UserError(f"{files['video'].path.name} is an LTX-{families['video']} LoRA and "
                        f"{files['audio'].path.name} an LTX-{families['audio']} one; mix two LoRAs of one model.")
    modules, layers = {}, {"video": 0, "audio": 0, "other": 0}
    for stream, lora in files.items():
        # each module with its file's strength folded in, as `lora convert --fold-alpha` writes it
        folded, _, _, _ = converted_modules(lora, lora_file.COMFYUI, fold_alpha=True)
        mine = {s: m for s, m in folded.items() if lora_file.module_stream(s) == stream
                or (stream == "video" and lora_file.module_stream(s) is None)}
        if not any(lora_file.module_stream(s) == stream for s in mine):
            raise UserError(f"{lora.path.name} adapts no layer of the {stream} stream (it has "
                            f"{', '.join(sorted({lora_file.module_group(s) for s in folded}))}); pass a LoRA "
                            f"trained with {stream} as --{stream}.")
        damaged = lora_file.first_damaged(mine)
        if damaged is not None:
            raise UserError(f"{lora.path.name} holds NaN or infinite values ({damaged}): the file is damaged; mix "
                            "an earlier checkpoint's LoRA instead.")
        for stem, m in mine.items():
            modules[stem] = m
            layers[stream if lora_file.module_stream(stem) else "other"] += 1
    meta = dict(files["video"].metadata)
    meta.pop("alpha", None)  # strengths are folded in; per-file rank and alpha stay in each source's header
    meta |= {"alpha_folded_into_lora_B": "true",
             "ltx_lora_mixed_from": json.dumps({s: f.path.name for s, f in files.items()}),
             **({"audio_step": files["audio"].metadata["step"]} if "step" in files["audio"].metadata else {})}
    lora_file.write_lora(out, modules, layout=lora_file.COMFYUI, metadata=meta)
    return MixResult(out, layers)
