"""The text path of LTX-2.3 through ltx-core: Gemma 3 -> feature extractor (cached) -> text connectors (per step).

This is the only module that imports ltx-core's text-encoder code, and the only text-embedding path.

- `load_prompt_encoder(gemma_dir, checkpoint)` builds Gemma (weights from the Gemma folder) and the checkpoint's
  `text_embedding_projection` (the feature extractor, `load_text_projection`) with ltx-core's key maps, module
  ops and classes, through the same build-and-check as every model (`ltx_lora.ltx.loader.build`).
  `PromptEncoder.encode_prompts(prompts)` returns one `TextFeatures` per prompt: the feature
  extractor's output trimmed to the prompt's real tokens. This is what preprocessing caches, as the official trainer
  does (its process_captions.py saves `feature_extractor(hidden_states, mask)` and runs the connectors in training).
- `load_text_connectors(checkpoint)` builds only the frozen video/audio connectors; `run_text_connectors` turns
  padded features into the transformer's context, one prompt at a time (ltx-core 1.0.0's connectors fail on a
  batch of more than one prompt).

Why our own configurators: ltx-core's `GemmaTextEncoderConfigurator` and feature extractor hard-code Gemma-3-12B
(hidden 3840, 48 layers + embeddings = 49 stacked states). We build the same ltx-core / transformers classes with
the sizes read from the Gemma folder's config.json (for the real folder these are exactly the hard-coded ones), so
the tiny test Gemma runs through the real code path.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ltx_lora.errors import UserError
from ltx_lora.files.safetensors_header import SafetensorsHeader, open_safetensors
from ltx_lora.files.text_features import PaddedText, TextFeatures, pad_batch, pad_features
from ltx_lora.paths import GEMMA_REPO
from ltx_lora.ltx.loader import build

__all__ = [
    "TOKENIZER_LENGTH",
    "PaddedText",
    "PromptEncoder",
    "TextFeatures",
    "check_8bit",
    "check_gemma_fits",
    "gemma_weight_files",
    "load_prompt_encoder",
    "load_text_connectors",
    "load_text_projection",
    "pad_batch",
    "pad_features",
    "quiet_slow_processor_notice",
    "run_text_connectors",
]

log = logging.getLogger(__name__)

TOKENIZER_LENGTH = 1024  # ltx-core's Gemma tokenizer pads/truncates every prompt to this many tokens

_PROJECTION_PREFIX = "text_embedding_projection."
_VIDEO_CONNECTOR_PREFIX = "model.diffusion_model.video_embeddings_connector."
_AUDIO_CONNECTOR_PREFIX = "model.diffusion_model.audio_embeddings_connector."


def connector_parameters(header: SafetensorsHeader) -> int:
    """Parameters of the video and audio text connectors a unified checkpoint stores (0 if none): what the memory
    plan needs of them, read from the header instead of built (building them imports ltx-core's Gemma package, and
    with it transformers and torchvision: ~1.8 s of every doctor and refusal)."""
    return sum(t.numel for k, t in header.tensors.items()
               if k.startswith((_VIDEO_CONNECTOR_PREFIX, _AUDIO_CONNECTOR_PREFIX)))


class _SlowProcessorNotice(logging.Filter):
    """Drops transformers' "Using a slow image processor as `use_fast` is unset ..." notice: Gemma's folder ships
    the slow processor, ltx-core loads it as saved (we only use its tokenizer for text), and the notice asks the
    user to change code they cannot change."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "slow image processor" not in record.getMessage()


_SLOW_NOTICE = _SlowProcessorNotice()


def quiet_slow_processor_notice() -> None:
    """Keep that one notice out of the user's console (every other transformers message stays). Idempotent."""
    for name in ("transformers.models.auto.image_processing_auto", "transformers.processing_utils"):
        logger = logging.getLogger(name)
        if _SLOW_NOTICE not in logger.filters:
            logger.addFilter(_SLOW_NOTICE)


# ----------------------------------------------------------------------------------------------------------------
# Building blocks


def gemma_weight_files(gemma_dir: Path) -> list[Path]:
    """The Gemma weight shards: those named by model.safetensors.index.json, else every model*.safetensors."""
    index = gemma_dir / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [gemma_dir / n for n in names]
    return sorted(gemma_dir.glob("model*.safetensors"))


def _gemma_config(gemma_dir: Path):
    from transformers import Gemma3Config

    return Gemma3Config.from_pretrained(str(gemma_dir), local_files_only=True)


def _gemma_configurator(gemma_config) -> type:
    """ltx-core's GemmaTextEncoderConfigurator, but with the folder's sizes instead of the hard-coded 12B ones."""
    from ltx_core.text_encoders.gemma import GemmaTextEncoder, GemmaTextEncoderConfigurator
    from transformers import Gemma3ForConditionalGeneration

    class FolderGemmaConfigurator(GemmaTextEncoderConfigurator):
        @classmethod
        def from_config(cls, config: dict) -> GemmaTextEncoder:
            with torch.device("meta"):
                return GemmaTextEncoder(model=Gemma3ForConditionalGeneration(gemma_config))

    return FolderGemmaConfigurator


def text_projection_configurator(hidden_size: int, num_states: int) -> type:
    """Builds ltx-core's feature extractor for the checkpoint's transformer config, sized for this Gemma.

    ltx-core's own factory picks the variant (V2 = LTX-2.3: per-token RMS norm, separate video/audio projections)
    and rejects configs it does not know; we let it do that on the meta device, then re-create the same class with
    input width hidden_size x num_states.
    """
    from ltx_core.model.model_protocol import ModelConfigurator
    from ltx_core.text_encoders.gemma.encoders.encoder_configurator import _create_feature_extractor
    from ltx_core.text_encoders.gemma.feature_extractor import FeatureExtractorV1, FeatureExtractorV2

    class FeatureExtractorConfigurator(ModelConfigurator):
        @classmethod
        def from_config(cls, config: dict) -> torch.nn.Module:
            with torch.device("meta"):
                reference = _create_feature_extractor(config.get("transformer", {}))
                flat = hidden_size * num_states
                if isinstance(reference, FeatureExtractorV2):
                    audio = reference.audio_aggregate_embed
                    return FeatureExtractorV2(
                        video_aggregate_embed=torch.nn.Linear(flat, reference.video_aggregate_embed.out_features),
                        embedding_dim=hidden_size,
                        audio_aggregate_embed=None if audio is None else torch.nn.Linear(flat, audio.out_features))
                assert isinstance(reference, FeatureExtractorV1)
                return FeatureExtractorV1(torch.nn.Linear(flat, hidden_size, bias=False), is_av=reference.is_av)

    return FeatureExtractorConfigurator


class TextConnectorsConfigurator:
    """ltx-core's EmbeddingsProcessor with only the two connectors (the projection is not needed in training)."""

    @classmethod
    def from_config(cls, config: dict):
        from ltx_core.text_encoders.gemma import EmbeddingsProcessor
        from ltx_core.text_encoders.gemma.embeddings_connector import (
            AudioEmbeddings1DConnectorConfigurator,
            Embeddings1DConnectorConfigurator,
        )

        return EmbeddingsProcessor(video_connector=Embeddings1DConnectorConfigurator.from_config(config),
                                   audio_connector=AudioEmbeddings1DConnectorConfigurator.from_config(config))


def _projection_key_ops():
    from ltx_core.loader.sd_ops import SDOps

    return SDOps("LTX_LORA_TEXT_PROJECTION").with_matching(prefix=_PROJECTION_PREFIX).with_replacement(
        _PROJECTION_PREFIX, "")


def _connector_key_ops():
    from ltx_core.loader.sd_ops import SDOps

    return (SDOps("LTX_LORA_TEXT_CONNECTORS")
            .with_matching(prefix=_VIDEO_CONNECTOR_PREFIX).with_replacement(_VIDEO_CONNECTOR_PREFIX, "video_connector.")
            .with_matching(prefix=_AUDIO_CONNECTOR_PREFIX)
            .with_replacement(_AUDIO_CONNECTOR_PREFIX, "audio_connector."))


def _check_projection_width(checkpoint: Path, gemma_dir: Path, width: int) -> None:
    """The projection's input width is hidden_size x (layers + 1) of the Gemma it was trained with."""
    with open_safetensors(checkpoint, "model.checkpoint", "download it again") as f:
        names = f.keys()  # safe_open is no dict: keys() is its only listing
        keys = [k for k in names if k.startswith(_PROJECTION_PREFIX) and k.endswith("aggregate_embed.weight")]
        if not keys:
            raise UserError(f"{checkpoint} has no text projection ({_PROJECTION_PREFIX}*): use the full LTX-2.3 "
                            f"checkpoint (ltx-2.3-22b-dev.safetensors), not a transformer-only file.")
        expected = f.get_slice(keys[0]).get_shape()[1]
    if expected != width:
        raise UserError(f"The text projection in {checkpoint.name} takes Gemma features of width {expected}, but the "
                        f"Gemma in {gemma_dir} gives {width}: use the Gemma 3 12B folder ({GEMMA_REPO}).")


def check_gemma_fits(gemma_dir: Path, checkpoint: Path) -> None:
    """The Gemma folder's config loads and its features are as wide as the checkpoint's text projection takes:
    what `load_prompt_encoder` needs before any weight is read (paths and files checked already)."""
    try:
        text_cfg = _gemma_config(gemma_dir).text_config
        hidden, layers = text_cfg.hidden_size, text_cfg.num_hidden_layers
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (hidden, layers)):
            raise ValueError(f"hidden_size {hidden!r} and num_hidden_layers {layers!r} must be positive integers")
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds for one damaged config.json
        detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(f"the Gemma config in {gemma_dir} cannot be used ({detail}): download config.json again "
                        f"from {GEMMA_REPO}.") from None
    _check_projection_width(checkpoint, gemma_dir, hidden * (layers + 1))


def check_8bit(device: torch.device | str) -> None:
    """Refuse 8-bit Gemma where it cannot run, before any work starts: it needs a CUDA GPU and bitsandbytes."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        raise UserError("Loading Gemma in 8-bit needs a CUDA GPU (bitsandbytes int8 runs only there): run on a GPU, "
                        "or set memory.text_encoder_8bit: false.")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError("Loading Gemma in 8-bit needs the bitsandbytes package: install it with "
                        "`pip install bitsandbytes`, or set memory.text_encoder_8bit: false.")


def _quantize_linears_8bit(module: torch.nn.Module, device: torch.device) -> int:
    """Swap every nn.Linear of Gemma's language model for bitsandbytes' LLM.int8() layer, then move to the GPU.

    bitsandbytes quantizes an Int8Params weight when it is moved to CUDA; fp16 input is what its quantizer expects.
    """
    import bitsandbytes as bnb

    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear:
                continue
            q = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=child.bias is not None,
                                    has_fp16_weights=False, threshold=6.0)
            q.weight = bnb.nn.Int8Params(child.weight.data.to(torch.float16), requires_grad=False,
                                         has_fp16_weights=False)
            if child.bias is not None:
                q.bias = torch.nn.Parameter(child.bias.data.to(torch.float16), requires_grad=False)
            setattr(parent, name, q)
            count += 1
    module.to(device)
    return count


# ----------------------------------------------------------------------------------------------------------------
# Prompt encoding (preprocessing)


@dataclass
class PromptEncoder:
    """Gemma + the checkpoint's feature extractor, ready to encode captions into cacheable `TextFeatures`."""

    text_encoder: torch.nn.Module  # ltx_core GemmaTextEncoder (holds Gemma, tokenizer, processor)
    feature_extractor: torch.nn.Module  # ltx_core FeatureExtractorV2 (LTX-2.3) or V1
    device: torch.device

    @property
    def tokenizer(self):
        """The Hugging Face tokenizer inside ltx-core's wrapper."""
        return self.text_encoder.tokenizer.tokenizer

    @property
    def padding_side(self) -> str:
        """Read from the tokenizer ltx-core configured (it sets left padding), as the official code passes it on."""
        return self.tokenizer.padding_side

    @torch.inference_mode()
    def encode_prompts(self, prompts: list[str]) -> list[TextFeatures]:
        """Gemma features of each prompt after the feature extractor, trimmed to the prompt's real tokens."""
        # ltx-core's tokenizer wrapper encodes one text at a time; so does the official trainer.
        return [self._encode_one(p) for p in prompts]

    def _encode_one(self, prompt: str) -> TextFeatures:
        hidden_states, mask = self.text_encoder.encode(prompt)  # (num_states x [1, L, H]), [1, L]
        side = self.padding_side
        video, audio = self.feature_extractor(hidden_states, mask, side)
        m = mask[0].to(torch.bool)
        n = int(m.sum())
        length = int(m.shape[0])
        real = slice(length - n, length) if side == "left" else slice(0, n)
        if n == 0 or not bool(m[real].all()):
            raise RuntimeError(f"tokenizer mask is not {side}-padded as its padding_side says; cannot trim")
        if n < length:  # every padded row is the same (the projection of zeros): keep the first one
            first_pad = int((~m).nonzero()[0, 0])
            video_pad, audio_pad = video[0, first_pad], None if audio is None else audio[0, first_pad]
        else:
            video_pad, audio_pad = self._pad_rows(hidden_states)
        # ltx-core's tokenizer strips the text and truncates silently; count the tokens to flag cut prompts.
        n_text = len(self.tokenizer(prompt.strip(), add_special_tokens=True, verbose=False).input_ids)
        return TextFeatures(video=video[0, real].cpu(), audio=None if audio is None else audio[0, real].cpu(),
                            video_pad=video_pad.cpu(), audio_pad=None if audio_pad is None else audio_pad.cpu(),
                            padded_length=length, padding_side=side, truncated=n_text > length)

    def _pad_rows(self, hidden_states) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A prompt that fills every position shows no padded row: compute it from one all-padding token."""
        zero = [h[:, :1] * 0 for h in hidden_states]
        video, audio = self.feature_extractor(zero, torch.zeros(1, 1, dtype=torch.int64, device=self.device),
                                              self.padding_side)
        return video[0, 0], None if audio is None else audio[0, 0]


def load_prompt_encoder(gemma_dir: str | Path, checkpoint: str | Path, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.bfloat16, load_in_8bit: bool = False) -> PromptEncoder:
    """Load Gemma 3 from its folder and the text projection from the LTX checkpoint (paths must be checked first)."""
    from ltx_core.text_encoders.gemma import GEMMA_LLM_KEY_OPS, GEMMA_MODEL_OPS, module_ops_from_gemma_root

    gemma_dir, checkpoint, device = Path(gemma_dir), Path(checkpoint), torch.device(device)
    if load_in_8bit:
        check_8bit(device)
    quiet_slow_processor_notice()  # ltx-core loads Gemma's image processor as saved (slow)
    gemma_config = _gemma_config(gemma_dir)
    text_cfg = gemma_config.text_config
    _check_projection_width(checkpoint, gemma_dir, text_cfg.hidden_size * (text_cfg.num_hidden_layers + 1))
    shards = gemma_weight_files(gemma_dir)
    build_device = torch.device("cpu") if load_in_8bit else device  # int8 conversion happens on the move to CUDA
    text_encoder = build(_gemma_configurator(gemma_config), shards, GEMMA_LLM_KEY_OPS, "Gemma text encoder",
                         device=build_device, dtype=dtype, source=gemma_dir,
                         module_ops=(GEMMA_MODEL_OPS, *module_ops_from_gemma_root(str(gemma_dir))))
    text_encoder.requires_grad_(False)
    if load_in_8bit:
        n = _quantize_linears_8bit(text_encoder.model.model.language_model, device)
        text_encoder.model.to(device)
        log.info("Gemma: %d linear layers in 8-bit", n)
    feature_extractor = load_text_projection(checkpoint, text_cfg.hidden_size, text_cfg.num_hidden_layers + 1,
                                             device=device, dtype=dtype)
    return PromptEncoder(text_encoder=text_encoder, feature_extractor=feature_extractor, device=device)


def load_text_projection(checkpoint: str | Path, hidden_size: int, num_states: int, *,
                         device: str | torch.device = "cpu", dtype: torch.dtype = torch.bfloat16) -> torch.nn.Module:
    """The checkpoint's Gemma feature projection (`text_embedding_projection.*`, an ltx-core FeatureExtractorV2 for
    LTX-2.3 or V1 for LTX-2.0) for a text encoder `hidden_size` wide giving `num_states` hidden states
    (3840 x 49 for Gemma 3 12B)."""
    return build(text_projection_configurator(hidden_size, num_states), Path(checkpoint), _projection_key_ops(),
                 "text projection", device=device, dtype=dtype).requires_grad_(False)


# ----------------------------------------------------------------------------------------------------------------
# Text connectors (every training step and validation)


def load_text_connectors(checkpoint: str | Path, *, device: str | torch.device = "cpu",
                         dtype: torch.dtype = torch.bfloat16) -> torch.nn.Module:
    """The frozen video + audio text connectors of the checkpoint (an ltx-core EmbeddingsProcessor without
    feature extractor)."""
    return build(TextConnectorsConfigurator, Path(checkpoint), _connector_key_ops(), "text connectors",
                 device=device, dtype=dtype).requires_grad_(False)


def run_text_connectors(connectors: torch.nn.Module, padded: PaddedText,
                        ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Padded features [B, L, D] -> (video context [B, L, Dv], audio context [B, L, Da] or None, mask [B, L]).

    One prompt per connector call: ltx-core 1.0.0's register substitution indexes with a squeezed mask and raises
    IndexError for B > 1. Padded rows' values do not matter (they are replaced by learnable registers); the padded
    length does (registers are tiled to it), so pad to the length inference uses (1,024).
    """
    from ltx_core.text_encoders.gemma import convert_to_additive_mask

    video, audio, mask = padded.video, padded.audio, padded.mask
    if video.ndim == 2:  # one prompt
        video, audio, mask = video[None], None if audio is None else audio[None], mask[None]
    p = next(connectors.parameters())
    video = video.to(p.device, p.dtype)
    audio = None if audio is None else audio.to(p.device, p.dtype)
    outs = []
    for i in range(video.shape[0]):
        additive = convert_to_additive_mask(mask[i:i + 1].to(p.device), p.dtype)
        outs.append(connectors.create_embeddings(video[i:i + 1], None if audio is None else audio[i:i + 1], additive))
    v = torch.cat([o[0] for o in outs])
    a = None if outs[0][1] is None else torch.cat([o[1] for o in outs])
    return v, a, torch.cat([o[2] for o in outs])
