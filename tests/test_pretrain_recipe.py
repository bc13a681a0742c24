"""The demo pretraining recipe's parts that decide what the pretrained model can do (`ltx_lora.fixtures.pretrain`),
checked without training: the run itself is a GPU job (see the module's docstring)."""

import torch

from ltx_lora.fixtures import pretrain
from ltx_lora.ltx.components import build_component
from ltx_lora.ltx.sampling import sigma_schedule


def test_transformer_trains_most_where_the_sampler_steps():
    # The 20-step schedule spends most steps above sigma 0.85; the earlier recipe (shift 1) trained there rarely.
    schedule = sigma_schedule(20)[:-1]
    assert (schedule > 0.85).float().mean() > 0.5
    high = {shift: (pretrain.training_sigmas(20_000, torch.Generator().manual_seed(0), shift) > 0.85).float().mean()
            for shift in (1.0, pretrain.SAMPLER_SHIFT)}
    assert high[1.0] < 0.15 and high[pretrain.SAMPLER_SHIFT] > 0.25
    low = (pretrain.training_sigmas(20_000, torch.Generator().manual_seed(0)) < 0.3).float().mean()
    assert low > 0.1  # the last steps (and the x0 jump from 0.1) stay trained


def test_vocoder_keeps_channels_to_its_last_activation():
    # The tiny config's vocoder narrows to 1 channel at the waveform rate: the H200-trained one parked it at the flat
    # point of its SnakeBeta and put out the same sound for every mel.
    cfg = pretrain.demo_config()
    vocoder = build_component("vocoder", cfg, "meta").vocoder
    assert vocoder.conv_post.in_channels >= 4
    tiny = build_component("vocoder", pretrain.tiny_ltx23_config(), "meta").vocoder
    assert tiny.conv_post.in_channels == 1


def test_vocoder_loss_ranks_silence_last():
    # The earlier loss scored silence better than the noise a vocoder starts from, and the vocoder fell silent.
    aenc = build_component("audio_encoder", pretrain.demo_config(), "meta")  # only its mel settings are used
    x = pretrain.tone_batch([330.0], 0.25, "cpu")
    noise = 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    losses = [pretrain._vocoder_loss(aenc, y, x).item() for y in (
        x, 0.1 * x, noise, pretrain.tone_batch([1320.0], 0.25, "cpu"), torch.zeros_like(x))]
    assert abs(losses[0]) < 1e-4 and losses == sorted(losses), losses
