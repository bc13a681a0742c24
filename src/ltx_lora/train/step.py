"""One micro-batch of the training step: noise, predict, loss, backward. Shared by the trainer and the bench, so the
bench times exactly what users run."""

from __future__ import annotations

import torch

from ltx_lora.ltx.modality import predict_velocity
from ltx_lora.task import TaskConfig
from ltx_lora.train.graphed import StepGraphs
from ltx_lora.train.objective import LatentBatch, LossParts, compute_loss, prepare_inputs
from ltx_lora.train.timesteps import SigmaSampler


class NonFiniteLoss(RuntimeError):
    """The loss is NaN or infinite; backward was not run."""

    def __init__(self, value: float | str):
        super().__init__(f"loss is {value}")
        self.value = value


def forward_backward(transformer: torch.nn.Module, batch: LatentBatch, sampler: SigmaSampler,
                     generator: torch.Generator, *, task: TaskConfig, dtype: torch.dtype,
                     audio_loss_weight: float = 1.0, loss_scale: float = 1.0, rows: tuple[int, int] | None = None,
                     all_finite=lambda finite: finite, graphs: StepGraphs | None = None) -> LossParts:
    """Accumulate this micro-batch's LoRA gradients (scaled by `loss_scale`, e.g. 1/accumulation).

    Several processes: `rows` places this batch in the global batch (see prepare_inputs), and `all_finite` makes
    every rank agree before backward, so that all stop together when any loss is not finite.

    `graphs` (one process on a GPU): forward, loss and backward run as a replayed CUDA graph (train/graphed.py);
    backward has then already run when the loss is found not finite, which only matters in that training stops."""
    inputs = prepare_inputs(batch, sampler, generator, task=task, dtype=dtype, rows=rows)
    if graphs is not None and not graphs.failed:
        loss = graphs(inputs, batch.loss_weight, audio_loss_weight, loss_scale)
        if not bool(torch.isfinite(loss.total)):
            raise NonFiniteLoss(loss.total.item())
        return loss
    # bf16 autocast: the frozen base is bf16 already; it keeps the fp32 LoRA matmuls in bf16 too (peft would
    # otherwise cast every activation to the LoRA weights' fp32), as the official trainer runs them.
    device_type = batch.video_context.device.type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        video_pred, audio_pred = predict_velocity(transformer, inputs.video, inputs.audio)
    loss = compute_loss(video_pred, audio_pred, inputs, audio_loss_weight, batch.loss_weight)
    finite = bool(torch.isfinite(loss.total))
    if not all_finite(finite):
        raise NonFiniteLoss(loss.total.item() if not finite else "non-finite on another GPU")
    (loss.total * loss_scale).backward()
    return loss
