"""The task presets' names and one-line descriptions, apart from their definitions (ltx_lora.task) so that
`ltx-lora init --help` lists them without importing pydantic (the CLI's help stays instant).

name -> (one line for `--help`, `init` and docs/tasks.md; the official ltx-trainer config it matches or "").
"""

TASK_LINES: dict[str, tuple[str, str]] = {
    "t2av": ("text to video with its sound (the default: video and audio generated together)", "t2v_lora.yaml"),
    "t2v": ("text to video, no audio (video-only clips; the audio branch is not trained)", ""),
    "i2v": ("image to video with sound: half the samples start from their clean first frame", "i2v_lora.yaml"),
    "t2a": ("text to audio: sound only, no video tokens", "t2a_lora.yaml"),
    "a2v": ("audio to video: the clip's sound is given, the video is generated", "a2v_lora.yaml"),
    "v2a": ("video to audio (Foley): the clip's video is given, its sound is generated", "v2a_lora.yaml"),
    "video_extend": ("continue a video (and its sound): the first 8 latent frames are given", "video_extend_lora.yaml"),
    "video_suffix": ("lead up to a given ending: the last 8 latent frames are given", "video_suffix_lora.yaml"),
    "video_inpainting": ("fill the masked part of each clip (per-clip video_mask, white = kept)",
                         "video_inpainting_lora.yaml"),
    "video_outpainting": ("extend the picture beyond a given box (top-left 288x576 pixels kept)",
                          "video_outpainting_lora.yaml"),
    "audio_extend": ("continue a sound: its first 8 audio latent steps are given", "audio_extend_lora.yaml"),
    "audio_suffix": ("lead up to a given sound ending: the last 8 audio steps are given", "audio_suffix_lora.yaml"),
    "audio_inpainting": ("fill the masked part of a sound (per-clip audio_mask)", "audio_inpainting_lora.yaml"),
    "v2v_ic": ("video-to-video IC-LoRA (control, style): reference_video joined to the sequence", "v2v_ic_lora.yaml"),
    "a2a_ic": ("audio-to-audio IC-LoRA: reference_audio joined to the sequence", "a2a_ic_lora.yaml"),
    "av2av_ic": ("audio-video IC-LoRA: reference_video and reference_audio joined", "av2av_ic_lora.yaml"),
}

DEFAULT_TASK = "t2av"
