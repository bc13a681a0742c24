"""Untrained LTX-2.x components built from a config with ltx-core's own classes, for what needs a model's shape
but not its weights: the sizes of a config (`ltx_lora.ltx.sizes`) and random-weight models for tests and benches
(`ltx_lora.fixtures.models`, which may not import ltx-core itself)."""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from ltx_core.model.audio_vae import (
    AudioDecoderConfigurator,
    AudioEncoderConfigurator,
    VocoderConfigurator,
)
from ltx_core.model.transformer.model_configurator import LTXModelConfigurator
from ltx_core.model.upsampler.model_configurator import LatentUpsamplerConfigurator
from ltx_core.model.video_vae import VideoDecoderConfigurator, VideoEncoderConfigurator
from torch import nn

from ltx_lora.ltx.text import TextConnectorsConfigurator, text_projection_configurator

Component = Literal["transformer", "video_encoder", "video_decoder", "audio_encoder", "audio_decoder", "vocoder",
                    "text_projection", "text_connectors", "upsampler"]

_CONFIGURATORS: dict[str, type] = {
    "transformer": LTXModelConfigurator,
    "video_encoder": VideoEncoderConfigurator, "video_decoder": VideoDecoderConfigurator,
    "audio_encoder": AudioEncoderConfigurator, "audio_decoder": AudioDecoderConfigurator,
    "vocoder": VocoderConfigurator,
    "text_connectors": TextConnectorsConfigurator,  # the video + audio connectors, as load_text_connectors gives
    "upsampler": LatentUpsamplerConfigurator,  # takes the upscaler file's flat config
}
COMPONENTS: tuple[str, ...] = (*_CONFIGURATORS, "text_projection")


def build_component(component: Component, config: dict[str, Any], device: Literal["meta", "cpu"] = "meta", *,
                    text_hidden_size: int | None = None, text_hidden_states: int | None = None) -> nn.Module:
    """`component` of the model `config` describes (the full config of a unified checkpoint: `{"transformer": ...,
    "vae": ...}`; the flat config for "upsampler").

    device "meta": no storage (shapes only; `to_empty` gives it memory). "cpu": ltx-core's default initialisation,
    with its computed buffers (filters, mel bases) filled in. "text_projection" needs the text encoder's hidden
    width and number of hidden states."""
    if component == "text_projection":
        if text_hidden_size is None or text_hidden_states is None:
            raise TypeError("text_projection needs text_hidden_size and text_hidden_states")
        configurator = text_projection_configurator(text_hidden_size, text_hidden_states)
    else:
        configurator = _CONFIGURATORS[component]
    config = copy.deepcopy(config)  # ltx-core's configurators may change the dict they are given
    if device == "meta":
        with torch.device("meta"):
            return configurator.from_config(config)
    module = configurator.from_config(config)
    # Some parts come out on meta even outside a meta context (ltx-core's LTX-2.0 caption projection, our text
    # projection): give them storage. Their values are undefined, as after `to_empty`.
    for sub in module.modules():
        for key, p in list(sub._parameters.items()):
            if p is not None and p.is_meta:
                sub._parameters[key] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype), requires_grad=p.requires_grad)
    return module
