"""Caption backends: a local Gemma 3 folder, a local Qwen2.5-Omni folder, or an OpenAI-compatible endpoint.

- Gemma 3 (`gemma-3-12b-it`, the folder users already have as LTX-2.3's text encoder) sees images: it gets the
  sampled frames as a list of images, in order. It does not hear the clip.
- Qwen2.5-Omni sees video and hears audio: the frames go in as one video (with their real frame rate, so its
  time-aligned positions are right) and the soundtrack as 16 kHz audio interleaved with it (`use_audio_in_video`);
  a sound file (an audio-only dataset row) goes in as audio alone. Only the "thinker" (the part that writes text)
  is loaded; the speech-generating talker is not. It is the one backend that captions sound-only rows.
- An endpoint is any server that speaks OpenAI's chat-completions API (vLLM, llama.cpp, LM Studio, a cloud API);
  frames are sent as base64 JPEG `image_url` parts. Plain urllib: no client library needed.

Local models load from local folders only (`local_files_only`): nothing is downloaded at run time.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from ltx_lora.data.caption import Captioner, MediaSample
from ltx_lora.errors import UserError
from ltx_lora.ltx.text import quiet_slow_processor_notice
from ltx_lora.runtime.device import parse_device

QWEN_SYSTEM_PROMPT = ("You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of "
                      "perceiving auditory and visual inputs, as well as generating text and speech.")
GEMMA_TYPES = ("gemma3",)
QWEN_OMNI_TYPES = ("qwen2_5_omni", "qwen2_5_omni_thinker")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_device(device: str):
    return parse_device(device)


def model_kind(folder: Path | str) -> str:
    """'gemma' or 'qwen-omni' from the folder's config.json; anything else is a UserError saying what it is."""
    raw = str(folder)
    folder = Path(folder).expanduser()
    if not folder.exists():
        if raw.startswith(("http://", "https://", "hf://")) or (_REPO_ID.match(raw) and not raw.startswith(".")):
            raise UserError(f"--model {raw} looks like a Hugging Face address; models load from local folders only: "
                            f"download it (e.g. `huggingface-cli download {raw} --local-dir models/NAME`) and pass "
                            "that folder.")
        raise UserError(f"--model {raw} does not exist; give the local Gemma 3 (gemma-3-12b-it) or Qwen2.5-Omni "
                        "folder.")
    if not folder.is_dir():
        raise UserError(f"--model {raw} is a file; give the model's folder (the one holding config.json).")
    config = folder / "config.json"
    if not config.is_file():
        raise UserError(f"{folder} has no config.json, so it is not a Hugging Face model folder; give the "
                        "gemma-3-12b-it or Qwen2.5-Omni folder.")
    try:
        model_type = json.loads(config.read_text()).get("model_type", "")
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
        raise UserError(f"{config} is not valid JSON; the model folder is damaged, download it again.") from None
    if model_type in GEMMA_TYPES:
        return "gemma"
    if model_type in QWEN_OMNI_TYPES:
        return "qwen-omni"
    if model_type == "gemma3_text":
        raise UserError(f"{folder} is a text-only Gemma 3 (no vision tower), which cannot see clips; use the "
                        "gemma-3-12b-it folder (the one LTX-2.3 uses as text encoder) or a Qwen2.5-Omni folder.")
    raise UserError(f"{folder} holds a '{model_type or 'unknown'}' model; captioning needs a Gemma 3 "
                    "(gemma-3-12b-it) or Qwen2.5-Omni folder, or an OpenAI-compatible server via --endpoint.")


def _load_error(folder: Path, what: str, e: Exception) -> UserError:
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return UserError(f"{folder} could not be loaded as {what} ({reason}); check that the download is complete.")


def _to_device(inputs, device, dtype):
    """Move a processor's BatchFeature to the model: integer tensors keep their dtype, float ones take the model's."""
    import torch

    out = {}
    for k, v in inputs.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, dtype=dtype if v.is_floating_point() else None)
        out[k] = v
    return out


class GemmaCaptioner:
    """Gemma 3 with its vision tower: the sampled frames as images."""

    name = "Gemma 3"
    hears_audio = False

    def __init__(self, folder: Path, device, max_new_tokens: int = 512):
        import torch
        from transformers import AutoProcessor, Gemma3ForConditionalGeneration

        self.device, self.max_new_tokens = device, max_new_tokens
        self.dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        try:
            self.processor = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
            self.model = Gemma3ForConditionalGeneration.from_pretrained(
                str(folder), local_files_only=True, dtype=self.dtype).to(device).eval()
        except (OSError, ValueError, KeyError) as e:
            raise _load_error(folder, "Gemma 3 with its vision tower", e) from None

    def caption(self, sample: MediaSample, instruction: str) -> str:
        import torch

        content = [*({"type": "image"} for _ in sample.frames), {"type": "text", "text": instruction}]
        text = self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                                  tokenize=False)
        inputs = _to_device(self.processor(text=text, images=sample.frames, return_tensors="pt"), self.device,
                            self.dtype)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      top_p=None, top_k=None)
        return self.processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


class QwenOmniCaptioner:
    """Qwen2.5-Omni's thinker: the frames as one video, the soundtrack interleaved with it."""

    name = "Qwen2.5-Omni"
    hears_audio = True

    def __init__(self, folder: Path, device, max_new_tokens: int = 512):
        import torch
        from transformers import (
            Qwen2_5OmniConfig,
            Qwen2_5OmniProcessor,
            Qwen2_5OmniThinkerConfig,
            Qwen2_5OmniThinkerForConditionalGeneration,
        )

        self.device, self.max_new_tokens = device, max_new_tokens
        self.dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        try:
            model_type = json.loads((folder / "config.json").read_text()).get("model_type")
            if model_type == "qwen2_5_omni":  # the full release: take the thinker's part of the config
                config = Qwen2_5OmniConfig.from_pretrained(str(folder), local_files_only=True).thinker_config
            else:
                config = Qwen2_5OmniThinkerConfig.from_pretrained(str(folder), local_files_only=True)
            self.processor = Qwen2_5OmniProcessor.from_pretrained(str(folder), local_files_only=True)
            # Weights are stored under `thinker.*`; transformers strips that prefix for the thinker class and leaves
            # the talker / token2wav weights unloaded.
            self.model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
                str(folder), config=config, local_files_only=True, dtype=self.dtype).to(device).eval()
        except ImportError as e:
            raise UserError(f"The Qwen2.5-Omni processor needs a package that is missing ({e}); install "
                            "torchvision of your torch release (pip install torchvision).") from None
        except (OSError, ValueError, KeyError) as e:
            raise _load_error(folder, "Qwen2.5-Omni", e) from None

    def caption(self, sample: MediaSample, instruction: str) -> str:
        import numpy as np
        import torch

        media = {"type": "audio"} if sample.is_sound else {"type": "image"} if sample.is_still else {"type": "video"}
        messages = [{"role": "system", "content": [{"type": "text", "text": QWEN_SYSTEM_PROMPT}]},
                    {"role": "user", "content": [media, {"type": "text", "text": instruction}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        with_audio = sample.audio is not None and not sample.is_still and not sample.is_sound  # interleaved
        kwargs: dict = {}
        if sample.is_sound:  # the sound on its own: no video to interleave it with
            kwargs["audio"] = [sample.audio]
        elif sample.is_still:
            kwargs["images"] = sample.frames
        else:
            kwargs["videos"] = [np.stack([np.asarray(f) for f in sample.frames])]
            kwargs["fps"] = sample.frame_rate
        if with_audio:
            kwargs["audio"] = [sample.audio]
        inputs = self.processor(text=[text], use_audio_in_video=with_audio, return_tensors="pt", padding=True,
                                **kwargs)
        inputs = _to_device(inputs, self.device, self.dtype)
        with torch.inference_mode():
            out = self.model.generate(**inputs, use_audio_in_video=with_audio, max_new_tokens=self.max_new_tokens,
                                      do_sample=False)
        return self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]


class EndpointCaptioner:
    """An OpenAI-compatible chat-completions server; frames go as base64 JPEG images."""

    name = "endpoint"
    hears_audio = False

    def __init__(self, url: str, api_model: str, api_key_env: str = "OPENAI_API_KEY", max_new_tokens: int = 512,
                 timeout_s: float = 600.0):
        if not url.startswith(("http://", "https://")):
            raise UserError(f"--endpoint {url} is not an http(s) URL; give the server's base URL, e.g. "
                            "http://127.0.0.1:8000/v1.")
        url = url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.api_model, self.api_key_env = api_model, api_key_env
        self.api_key = os.environ.get(api_key_env, "")
        self.max_new_tokens, self.timeout_s = max_new_tokens, timeout_s

    @staticmethod
    def image_part(frame) -> dict:
        buf = io.BytesIO()
        frame.save(buf, format="JPEG", quality=90)
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        return {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{data}"}}

    def request_body(self, sample: MediaSample, instruction: str) -> dict:
        content = [*(self.image_part(f) for f in sample.frames), {"type": "text", "text": instruction}]
        return {"model": self.api_model, "messages": [{"role": "user", "content": content}],
                "max_tokens": self.max_new_tokens, "temperature": 0.0}

    def caption(self, sample: MediaSample, instruction: str) -> str:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=json.dumps(self.request_body(sample, instruction)).encode(),
                                     headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                data = json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            detail = " ".join(e.read().decode("utf-8", "replace").split())[:200]
            if e.code in (401, 403):
                key = f"${self.api_key_env} is set" if self.api_key else f"${self.api_key_env} is not set"
                raise UserError(f"The endpoint {self.url} refused the request (HTTP {e.code}: {detail}); {key}: "
                                "put the right API key there, or name another variable with --api-key-env.") from None
            if e.code == 404:
                raise UserError(f"The endpoint {self.url} answered 404 ({detail}): check --endpoint (the base URL, "
                                f"usually ending in /v1) and that it serves --api-model {self.api_model}.") from None
            raise RuntimeError(f"HTTP {e.code}: {detail}") from None
        except urllib.error.URLError as e:
            raise UserError(f"Cannot reach the captioning endpoint {self.url} ({e.reason}); start the server or fix "
                            "--endpoint.") from None
        except json.JSONDecodeError:
            raise RuntimeError("the endpoint's answer is not JSON") from None
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise RuntimeError(f"unexpected answer from the endpoint: {json.dumps(data)[:200]}") from None
        if isinstance(content, list):  # some servers answer with content parts
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        return content or ""


def load_captioner(*, model: Path | None = None, endpoint: str | None = None, api_model: str | None = None,
                   api_key_env: str = "OPENAI_API_KEY", device: str = "auto", max_new_tokens: int = 512) -> Captioner:
    """The backend the options name: exactly one of a local model folder or an endpoint."""
    if (model is None) == (endpoint is None):
        raise UserError("Give either --model FOLDER (a local Gemma 3 or Qwen2.5-Omni folder) or --endpoint URL "
                        "(an OpenAI-compatible server), not both or neither.")
    if endpoint is not None:
        if not api_model:
            raise UserError("--endpoint needs --api-model NAME: the model name the server serves.")
        return EndpointCaptioner(endpoint, api_model, api_key_env, max_new_tokens)
    kind = model_kind(model)
    folder = Path(model).expanduser()
    dev = resolve_device(device)
    from transformers.utils import logging as hf_logging

    # transformers' loading chatter (shard progress bars, processor notices) would break up our progress display
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    quiet_slow_processor_notice()  # also when something turns transformers' verbosity up again
    if kind == "gemma":
        return GemmaCaptioner(folder, dev, max_new_tokens)
    return QwenOmniCaptioner(folder, dev, max_new_tokens)
