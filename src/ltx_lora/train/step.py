"""One micro-batch of the training step: noise, predict, loss, backward. Shared by the trainer and the bench, so the
bench times exactly what users run.

Differential output preservation (`train.output_preservation`, ai-toolkit's `diff_output_preservation`): after the
main loss's backward, the same noisy inputs (latents, sigma, timesteps, conditions: one `prepare_inputs`) are
predicted with the preservation text (each caption with the trigger word replaced by the class word), once with
the LoRA off and no gradient (the base model's prediction, the target) and once with the LoRA on; weight x the
squared difference is back-propagated into the LoRA. What ai-toolkit does (ostris/ai-toolkit of 2026-08-21:
extensions_built_in/sd_trainer/SDTrainer.py `get_prior_prediction` and the preservation block of its training
step; the captions in toolkit/dataloader_mixins.py; names and defaults in toolkit/config_modules.py:
diff_output_preservation false, _multiplier 1.0, _class ""): its prior prediction runs under no_grad with the
network inactive (`network.is_active = False`, the LoRA's multiplier 0) on the same noisy latents, timesteps and
noise as the main loss, with the caption whose trigger word is replaced by the class (`caption.replace(trigger,
class)`, after the trigger was added to the caption); the preservation prediction runs with the network on, on the
same inputs and caption; the loss is `mse_loss(preservation_pred, prior_pred) x diff_output_preservation_multiplier`
(mean over every element), plus for joint audio models the audio's MSE x the multiplier x the audio loss
multiplier, added to the main loss before one backward. Where ltx-lora differs, and why:

- Two backwards instead of one sum: the gradient is the same (backward is linear), but the main graph's activations
  are freed before the preservation forward, so the step's peak memory stays that of one forward and backward.
- The squared difference is the main loss's (`compute_loss`): per modality over the modality's own tokens, the
  tokens a condition gives clean (first frame, prefix, an IC-LoRA reference) and a masked loss's zero-weight
  tokens left out as in the main loss, per-clip loss weights applied, video + audio_loss_weight x audio. Without
  conditions, masks and per-clip weights (the t2v / t2av recipe) that is exactly ai-toolkit's mean over every
  element; the given tokens' outputs are discarded at sampling, so they are not held to anything.
- The trigger word is replaced where it stands as a word (ai-toolkit's `str.replace` also changes a longer word
  containing it); see `data.caption.preservation_caption`.
- A caption dropped by `train.caption_dropout` trains on the empty prompt, which has no trigger word to replace:
  its preservation text is the empty prompt too (ai-toolkit's dropped caption keeps the trigger word, so its
  preservation text is the class word alone).
- Weight 0 runs the two predictions without a gradient: the preservation loss is logged (how far the LoRA moved
  the class's output) and the LoRA trains exactly as without preservation.
- The preservation captions are encoded once by `ltx-lora preprocess` into the text cache (ai-toolkit encodes them
  each step, or caches them with `cache_text_embeddings`).
- ai-toolkit also puts the model in eval mode for the prior prediction; here the adapters are bypassed for it, so
  LoRA dropout (the transformer's only dropout) neither applies nor draws.
- Names: `train.output_preservation: {class_word, weight}`; ai-toolkit's keys are not read (ltx-lora translates
  only the official LTX trainer's configs, which have no such option).

Cost: with gradient checkpointing the main step is about 4 forwards' work (forward, recompute, backward ~2); the
preservation adds 5 (the base forward, and the LoRA pass's forward, recompute and backward): 2.25x, 2.33x without
checkpointing. Measured on the tiny model on 2 CPU cores (2026-12-05, 20 steps each): 105-113 ms/step against 53
(2.0-2.1x), without checkpointing 74-84 against 35-37 (2.1-2.3x); weight 0: 1.7-1.9x; `bench/train_step.py --tiny
--variants ours_eager,ours_eager_dop` (960x544x49): 0.86 s against 0.40 (2.15x). On an H200 (2026-12-05, full size,
eager both): 2.569 s against 1.063 (2.4x), 3.2x the default graphed step (bench/README.md).
Peak memory: the activations as without it, plus every LoRA gradient held through the second backward
(runtime/memory.py; measured +0.81 GiB at rank 32).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ContextManager

import torch

from ltx_lora.ltx.modality import Modality, predict_velocity
from ltx_lora.task import TaskConfig
from ltx_lora.train.graphed import StepGraphs
from ltx_lora.train.lora import adapters_off
from ltx_lora.train.objective import LatentBatch, LossParts, StepInputs, compute_loss, prepare_inputs
from ltx_lora.train.timesteps import SigmaSampler


class NonFiniteLoss(RuntimeError):
    """The loss is NaN or infinite; backward was not run."""

    def __init__(self, value: float | str):
        super().__init__(f"loss is {value}")
        self.value = value


@dataclass
class Preservation:
    """train.output_preservation's text for one micro-batch (each sample's caption with the trigger word replaced by
    the class word) after the text connectors, and the weight of its loss."""

    video_context: torch.Tensor  # [B, L, D]
    audio_context: torch.Tensor | None
    context_mask: torch.Tensor | None
    weight: float


@dataclass
class StepLosses(LossParts):
    """The main loss's parts, and the preservation loss per sample ([B], unweighted by `Preservation.weight`;
    None without output preservation)."""

    preservation: torch.Tensor | None = None


def _autocast(batch: LatentBatch, dtype: torch.dtype):
    # bf16 autocast: the frozen base is bf16 already; it keeps the fp32 LoRA matmuls in bf16 too (peft would
    # otherwise cast every activation to the LoRA weights' fp32), as the official trainer runs them.
    return torch.autocast(batch.video_context.device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)


def forward_backward(transformer: torch.nn.Module, batch: LatentBatch, sampler: SigmaSampler,
                     generator: torch.Generator, *, task: TaskConfig, dtype: torch.dtype,
                     audio_loss_weight: float = 1.0, loss_scale: float = 1.0, rows: tuple[int, int] | None = None,
                     all_finite=lambda finite: finite, graphs: StepGraphs | None = None,
                     preservation: Preservation | None = None,
                     sync: Callable[[bool], ContextManager] | None = None) -> StepLosses:
    """Accumulate this micro-batch's LoRA gradients (scaled by `loss_scale`, e.g. 1/accumulation).

    Several processes: `rows` places this batch in the global batch (see prepare_inputs), and `all_finite` makes
    every rank agree before backward, so that all stop together when any loss is not finite. `sync(last)`: the
    context each forward and its backward run in, `last` for the micro-batch's last backward (with output
    preservation the main loss's backward is not the last: gradients are reduced once, after the preservation's).

    `graphs` (one process on a GPU): forward, loss and backward run as a replayed CUDA graph (train/graphed.py);
    backward has then already run when the loss is found not finite, which only matters in that training stops.
    Not with `preservation` (see the module's docstring for what that adds)."""
    sync = sync or (lambda last: contextlib.nullcontext())
    inputs = prepare_inputs(batch, sampler, generator, task=task, dtype=dtype, rows=rows)
    if graphs is not None and not graphs.failed and preservation is None:
        with sync(True):
            loss = graphs(inputs, batch.loss_weight, audio_loss_weight, loss_scale)
        if not bool(torch.isfinite(loss.total)):
            raise NonFiniteLoss(loss.total.item())
        return StepLosses(loss.total, loss.video, loss.audio)
    # DDP decides in forward whether the backward reduces gradients: each context holds a forward and its backward
    backward_follows = preservation is not None and preservation.weight > 0
    with sync(not backward_follows):
        with _autocast(batch, dtype):
            video_pred, audio_pred = predict_velocity(transformer, inputs.video, inputs.audio)
        loss = compute_loss(video_pred, audio_pred, inputs, audio_loss_weight, batch.loss_weight)
        del video_pred, audio_pred  # the graph is held by loss.total until its backward
        _check_finite(loss.total, all_finite)
        (loss.total * loss_scale).backward()
    out = StepLosses(loss.total.detach(), loss.video, loss.audio)
    if preservation is not None:
        with sync(True):
            out.preservation = preservation_backward(transformer, inputs, preservation, batch, dtype=dtype,
                                                     audio_loss_weight=audio_loss_weight, loss_scale=loss_scale,
                                                     all_finite=all_finite)
    return out


def _check_finite(total: torch.Tensor, all_finite) -> None:
    finite = bool(torch.isfinite(total))
    if not all_finite(finite):
        raise NonFiniteLoss(total.item() if not finite else "non-finite on another GPU")


def _with_text(m: Modality | None, context: torch.Tensor | None, mask: torch.Tensor | None) -> Modality | None:
    return None if m is None else replace(m, context=context, context_mask=mask)


def preservation_backward(transformer: torch.nn.Module, inputs: StepInputs, preservation: Preservation,
                          batch: LatentBatch, *, dtype: torch.dtype, audio_loss_weight: float = 1.0,
                          loss_scale: float = 1.0, all_finite=lambda finite: finite) -> torch.Tensor:
    """The preservation loss of `inputs` (the main loss's noisy inputs) on the preservation text: the base model's
    prediction (LoRA off, no gradient) is the target of the LoRA's; weight x loss_scale x its loss is
    back-propagated (nothing at weight 0). Returns the per-sample losses [B], unweighted, detached."""
    video = _with_text(inputs.video, preservation.video_context, preservation.context_mask)
    audio = _with_text(inputs.audio, preservation.audio_context, preservation.context_mask)
    with torch.no_grad(), adapters_off(transformer), _autocast(batch, dtype):
        base_video, base_audio = predict_velocity(transformer, video, audio)

    def own(pred: torch.Tensor | None, target: torch.Tensor | None) -> torch.Tensor | None:
        # the modality's own tokens (a reference joined in front dropped), as the main loss's targets
        return None if target is None else pred[:, pred.shape[1] - target.shape[1]:].float()

    targets = replace(inputs, video_target=own(base_video, inputs.video_target),
                      audio_target=own(base_audio, inputs.audio_target))
    del base_video, base_audio
    trains = preservation.weight > 0
    with torch.set_grad_enabled(trains and torch.is_grad_enabled()), _autocast(batch, dtype):
        video_pred, audio_pred = predict_velocity(transformer, video, audio)
    loss = compute_loss(video_pred, audio_pred, targets, audio_loss_weight, batch.loss_weight)
    del video_pred, audio_pred
    _check_finite(loss.total, all_finite)
    if trains:
        (loss.total * (preservation.weight * loss_scale)).backward()
    per_sample = loss.video if loss.audio is None else (audio_loss_weight * loss.audio if loss.video is None
                                                        else loss.video + audio_loss_weight * loss.audio)
    return per_sample.detach()
