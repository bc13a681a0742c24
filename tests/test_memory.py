"""Low-VRAM training: the memory plan, the FP8 / INT8 frozen base, block swap, and their use by train and doctor.

Losses and gradients are compared on the tiny LTX-2.3 fixture through the real ltx-core transformer (CPU)."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import assert_user_error, run_cli
from safetensors import safe_open
from test_train import prepared, write_config  # noqa: F401 - the session's preprocessed tiny dataset

from ltx_lora.config import Config, LoraConfig, parse_config
from ltx_lora.errors import UserError
from ltx_lora.fixtures.models import TINY_LTX23_CONFIG, build_transformer_from_config
from ltx_lora.ltx.fast import set_recomputed_blocks
from ltx_lora.ltx.loader import load_transformer, place_transformer_, read_checkpoint_config
from ltx_lora.ltx.modality import predict_velocity
from ltx_lora.ltx.quantize import QuantizedLinear, dequantize, fp8_matmul_support, quantize_weight
from ltx_lora.ltx.sizes import ltx23_22b_config, transformer_size
from ltx_lora.runtime.memory import (
    FRAGMENTATION,
    Workload,
    choose_plan,
    estimate,
    plan_for_config,
    workload_for_config,
)
from ltx_lora.runtime.placement import BlockSwap, attach_block_swap, spread_blocks
from ltx_lora.task import ModalityTask, ReferenceCondition, TaskConfig
from ltx_lora.train.lora import inject_lora
from ltx_lora.train.objective import LatentBatch, compute_loss, prepare_inputs
from ltx_lora.train.timesteps import SigmaSampler

TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]


# -- the plan (a pure function) -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def size22b():
    return transformer_size(ltx23_22b_config())


@pytest.fixture(scope="module")
def work960(size22b):
    cfg = Config()  # defaults: 960x544x49, audio-video, rank 32, AdamW, checkpointing
    return workload_for_config(cfg, size22b)


def test_workload_of_the_default_bucket(work960, size22b):
    assert (work960.video_tokens, work960.audio_tokens, work960.rank) == (3570, 51, 32)
    assert work960.lora_per_rank * 32 == 213_909_504  # the 22B model's rank-32 attention LoRA (performance anchor)
    assert size22b.blocks == 48 and size22b.quantizable_per_block * 48 > 18e9


def test_workload_counts_what_the_task_puts_in_the_sequence(size22b, work960):
    """960x544x49: 3,570 video tokens, 51 audio steps. A condition stays in the sequence, an off modality leaves it,
    an IC-LoRA reference adds its own tokens (at 480x272x25: 4 x 8 x 15 = 480)."""
    def work(task) -> tuple[int, int]:
        w = workload_for_config(Config(task=task), size22b)
        return w.video_tokens, w.audio_tokens

    assert work("a2v") == work("v2a") == work("i2v") == (3570, 51)
    assert work("t2a") == work("audio_extend") == (0, 51)
    assert work("t2v") == work("video_outpainting") == (3570, 0)
    assert work("v2v_ic") == (2 * 3570, 0) and work("a2a_ic") == (0, 2 * 51) and work("av2av_ic") == (7140, 102)
    small = TaskConfig(video=ModalityTask(conditions=[ReferenceCondition(downscale=2, temporal_scale=2)]))
    assert work(small) == (3570 + 480, 51)
    # fewer tokens, a smaller plan: audio alone fits where audio-video at the same budget needs more
    t2a = workload_for_config(Config(task="t2a"), size22b)
    assert sum(estimate(size22b, t2a, "none", 0).values()) < sum(estimate(size22b, work960, "none", 0).values())


def test_an_ema_kept_on_the_gpu_counts_an_fp32_shadow_of_the_lora(size22b, work960):
    """Measured on H200 (bench/results/2026-12-04_h200_lora_options_960x544x49.jsonl): EMA on the GPU peaked 0.80
    GiB above plain LoRA (41.62 vs 40.82), 213.9M parameters x 4 bytes; kept on the host it costs the GPU nothing."""
    def lora_gib(ema: dict) -> float:
        work = workload_for_config(Config(train={"ema": ema}), size22b)
        return estimate(size22b, work, "none", 0)["LoRA+optimizer"]

    plain = estimate(size22b, work960, "none", 0)["LoRA+optimizer"]
    assert lora_gib({"decay": 0.999}) - plain == pytest.approx(213_909_504 * 4 / 2**30)
    assert lora_gib({"decay": 0.999, "on_host": True}) == plain == lora_gib({})


def test_adafactor_state_is_what_the_plan_counts(four_block_cfg):
    """train.optimizer adafactor on plain LoRA: the plan's optimizer state equals the bytes transformers' Adafactor
    holds after a real step on the tiny transformer (a row and a column of moments and an RMS per matrix); at the
    22B size it is 60x smaller than AdamW's."""
    from ltx_lora.train.optim import build_optimizer

    cfg = Config(train={"optimizer": "adafactor"}, lora={"rank": 4})
    model = build_transformer_from_config(four_block_cfg, dtype=torch.float32)
    params = inject_lora(model, cfg.lora, seed=0)
    opt = build_optimizer(params, cfg.train)
    inputs = prepare_inputs(_batch(four_block_cfg), SigmaSampler("uniform"), torch.Generator().manual_seed(1),
                            task=TaskConfig(), dtype=torch.float32)
    compute_loss(*predict_velocity(model, inputs.video, inputs.audio), inputs).total.backward()
    opt.step()
    held = sum(v.numel() * 4 for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor))
    assert all("exp_avg_sq_row" in st and "exp_avg" not in st for st in opt.state.values())  # factored, no momentum
    work = workload_for_config(cfg, transformer_size(four_block_cfg))
    assert work.optimizer_state_bytes(4) == held
    big = workload_for_config(Config(train={"optimizer": "adafactor"}), transformer_size(ltx23_22b_config()))
    adamw = workload_for_config(Config(), transformer_size(ltx23_22b_config()))
    assert adamw.optimizer_state_bytes(32) / big.optimizer_state_bytes(32) > 60


def test_output_preservation_counts_its_second_backward_holding_every_gradient(size22b, work960):
    """Measured on H200 (bench/results/2026-12-05_h200_output_preservation_960x544x49.jsonl): the step with
    train.output_preservation peaked 0.81 GiB above the plain one (41.63 vs 40.82), 213.9M fp32 gradients."""
    cfg = Config(data={"trigger_word": "sks"}, train={"output_preservation": {"class_word": "a woman"}})
    work = workload_for_config(cfg, size22b)
    extra = estimate(size22b, work, "none", 0)["activations"] - estimate(size22b, work960, "none", 0)["activations"]
    assert extra == pytest.approx(213_909_504 * 4 / 2**30)


def test_plan_picks_the_fastest_fitting_format_per_gpu_size(size22b, work960):
    plans = {gib: choose_plan(gib, "test", size22b, work960) for gib in (80, 48, 32, 24, 8)}
    assert (plans[80].quantization, plans[80].swapped_blocks, plans[80].rank) == ("none", (), 32)
    assert plans[48].quantization in ("none", "int8") and not plans[48].swapped_blocks
    assert (plans[32].quantization, plans[32].swapped_blocks, plans[32].rank) == ("int8", (), 32)
    p24 = plans[24]
    assert p24.quantization == "int8" and 0 < len(p24.swapped_blocks) < 48 and p24.rank == 32
    assert p24.swapped_blocks == tuple(spread_blocks(len(p24.swapped_blocks), 48))  # spread, not the first N
    for gib in (80, 48, 32, 24):  # every chosen plan fits its budget with the fragmentation margin
        assert plans[gib].fits and plans[gib].expected_peak_gib * FRAGMENTATION <= gib
    # With 8 GiB nothing at rank 32 fits: the rank is lowered and said so.
    assert plans[8].rank < 32 and "rank lowered" in plans[8].describe()
    assert plans[8].text_connectors_on_host and not plans[24].text_connectors_on_host
    # Fewer blocks swapped than a smaller budget needs, and a lower peak for every smaller budget.
    assert len(choose_plan(20, "t", size22b, work960).swapped_blocks) > len(p24.swapped_blocks)
    peaks = [plans[g].expected_peak_gib for g in (80, 48, 32, 24, 8)]
    assert peaks == sorted(peaks, reverse=True)


def test_plan_prefers_a_bf16_base_and_keeps_blocks_with_the_room_left(size22b, work960):
    """bf16 wherever it fits: the text connectors go to host memory before the base is quantized (measured to train
    under a 48 GiB cap on an H200: 42.9 GiB allocated). Room left under the budget keeps whole blocks' activations
    (those blocks are not recomputed), without leaving the budget; a swapped or unknown budget keeps none."""
    p48 = choose_plan(48, "t", size22b, work960)
    assert (p48.quantization, p48.text_connectors_on_host, p48.swapped_blocks) == ("none", True, ())
    p80, p141 = choose_plan(80, "t", size22b, work960), choose_plan(141, "t", size22b, work960)
    assert 0 < p80.kept_blocks < 48 and p141.kept_blocks == 48
    assert f"gradient checkpointing on {48 - p80.kept_blocks} of 48 blocks" in p80.describe()
    assert "no recompute" in p141.describe()
    for plan in (p80, p141):
        assert plan.expected_peak_gib * FRAGMENTATION <= plan.budget_gib
        assert plan.parts_gib["activations"] > choose_plan(48, "t", size22b, work960).parts_gib["activations"]
    assert choose_plan(24, "t", size22b, work960).kept_blocks == 0  # swapped blocks are reloaded to recompute
    assert choose_plan(None, "cpu", size22b, work960).kept_blocks == 0


def test_plan_keeps_what_the_config_fixes(size22b, work960):
    assert choose_plan(24, "t", size22b, work960, fp8_checkpoint=True).quantization == "fp8"  # the file, as stored
    # An FP8 file that keeps some linears in bf16 weighs more: more blocks are swapped.
    partial = choose_plan(24, "t", size22b, work960, fp8_checkpoint=True, fp8_coverage=42 / 48)
    assert len(partial.swapped_blocks) > len(choose_plan(24, "t", size22b, work960, fp8_checkpoint=True).swapped_blocks)
    p = choose_plan(80, "t", size22b, work960, quantization="fp8", block_swap=6)
    assert (p.quantization, len(p.swapped_blocks)) == ("fp8", 6)
    big = Workload(3570 * 4, 51 * 4, 32, work960.lora_per_rank)  # batch 4 at 960x544x49
    fixed = {"quantization": "int8", "block_swap": 0}
    assert choose_plan(24, "t", size22b, big, **fixed).expected_peak_gib > \
        choose_plan(24, "t", size22b, work960, **fixed).expected_peak_gib
    assert len(choose_plan(24, "t", size22b, big).swapped_blocks) > len(choose_plan(24, "t", size22b, work960).swapped_blocks)
    tiny = choose_plan(2, "t", size22b, work960)
    assert not tiny.fits and "DOES NOT FIT" in tiny.describe() and "smaller buckets" in tiny.describe()
    nockpt = Workload(3570, 51, 32, work960.lora_per_rank, gradient_checkpointing=False)
    with pytest.raises(UserError, match="gradient_checkpointing"):
        choose_plan(24, "t", size22b, nockpt, block_swap=4)
    assert choose_plan(None, "cpu", size22b, work960).quantization == "none"  # no limit known: nothing forced


def test_fp8_matmuls_plan_an_fp8_base_and_refuse_what_they_cannot_run_on(size22b, work960, tiny_checkpoint):
    """memory.fp8_matmuls on: an FP8 base in every candidate (a bf16 file quantized per tensor), its transient
    memory counted (one transposed FP8 weight and an FP8 activation copy instead of a dequantised fp32 + bf16
    weight); auto: only where the plan keeps an FP8 base anyway and the device has FP8 matmuls."""
    on = choose_plan(80, "t", size22b, work960, fp8_matmuls=True)
    assert (on.quantization, on.fp8_matmuls, on.swapped_blocks) == ("fp8", True, ()) and "FP8 matmuls" in on.describe()
    dequant = estimate(size22b, work960, "fp8", 0)
    fp8 = estimate(size22b, work960, "fp8", 0, fp8_matmuls=True)
    row = (3570 * size22b.video_dim + 51 * size22b.audio_dim) * 2
    assert fp8["weights"] == dequant["weights"] < estimate(size22b, work960, "none", 0)["weights"]
    assert (fp8["activations"] - dequant["activations"]) * 2**30 == pytest.approx(
        2 * row - 5 * size22b.largest_linear)
    assert choose_plan(None, "cpu", size22b, work960, fp8_matmuls=True).quantization == "fp8"
    assert choose_plan(24, "t", size22b, work960, fp8_matmuls=True).quantization == "fp8"  # with blocks swapped
    with pytest.raises(UserError, match="memory.quantization is int8"):
        choose_plan(80, "t", size22b, work960, quantization="int8", fp8_matmuls=True)
    with pytest.raises(UserError, match="memory.quantization is none; set memory.quantization to auto or fp8"):
        parse_config({"memory": {"fp8_matmuls": "on", "quantization": "none"}})
    cpu = torch.device("cpu")
    config = {"model": {"checkpoint": str(tiny_checkpoint("dev-fp8"))}, "memory": {"plan": "24gb"}}
    plan = plan_for_config(parse_config({**config, "memory": {"plan": "24gb", "fp8_matmuls": "on"}}), cpu)
    assert plan.quantization == "fp8" and plan.fp8_matmuls
    auto = plan_for_config(parse_config({**config, "memory": {"quantization": "fp8", "fp8_matmuls": "auto"}}), cpu)
    assert auto.quantization == "fp8" and not auto.fp8_matmuls and "FP8 matmuls off (not on a GPU)" in auto.describe()
    assert not plan_for_config(parse_config(config), cpu).fp8_matmuls  # off by default
    assert fp8_matmul_support(cpu) == "" and "CUDA GPUs only" in fp8_matmul_support(torch.device("meta"))


def test_the_plan_counts_the_text_connectors_from_the_checkpoint_header(tiny_checkpoint):
    """The same count as building them, without importing ltx-core's Gemma package (transformers, torchvision):
    ~1.8 s of every doctor --config and train refusal (train refusal 4.2 -> 1.6 s on the 2-core machine)."""
    from ltx_lora.runtime.base_file import BaseFile

    dev = tiny_checkpoint("dev")
    base = BaseFile.read(dev)
    assert base.text_connector_parameters == transformer_size(base.architecture).text_connectors > 0
    code = ("import sys; from ltx_lora.config import parse_config; from ltx_lora.runtime.memory import plan_for_config; "
            f"plan_for_config(parse_config({{'model': {{'checkpoint': {str(dev)!r}}}}})); "
            "print('gemma imported' if 'ltx_core.text_encoders.gemma' in sys.modules else 'gemma not imported')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")})
    assert out.stdout.strip() == "gemma not imported", out.stdout + out.stderr


def test_forced_tier_sets_the_budget(tiny_checkpoint):
    cfg = parse_config({"model": {"checkpoint": "/nowhere/ltx-2.3-22b-dev.safetensors"}, "memory": {"plan": "24gb"}})
    plan = plan_for_config(cfg, torch.device("cpu"))
    assert plan.budget_gib == 23 and plan.quantization == "int8" and plan.swapped_blocks
    fp8 = parse_config({"model": {"checkpoint": str(tiny_checkpoint("dev-fp8"))}, "memory": {"plan": "24gb"}})
    assert plan_for_config(fp8, torch.device("cpu")).blocks == 2  # sizes come from the file's own config


# -- formats ------------------------------------------------------------------------------------------------------


def test_fp8_checkpoint_loads_as_stored_and_matches_its_bf16_source(tiny_checkpoint):
    fp8_path, dev_path = tiny_checkpoint("dev-fp8"), tiny_checkpoint("dev")
    model = load_transformer(fp8_path, dtype=torch.float32, quantization="fp8")
    ref = load_transformer(dev_path, dtype=torch.float32)
    quantized = {n: m for n, m in model.named_modules() if isinstance(m, QuantizedLinear)}
    assert len(quantized) == 2 * 28 and all(m.fmt == "fp8" for m in quantized.values())
    with safe_open(str(fp8_path), "pt") as f:
        for name, m in quantized.items():
            key = f"model.diffusion_model.{name}"
            assert torch.equal(m.weight, f.get_tensor(key + ".weight").view(torch.uint8))  # the file's bytes
            assert torch.equal(m.weight_scale, f.get_tensor(key + ".weight_scale"))
            w = ref.get_submodule(name).weight
            err = (m.dequantized_weight() - w).abs()
            # e4m3 keeps 3 mantissa bits: half an ulp is 2^-4 relative (2^-10 x scale absolute in the subnormals)
            bound = torch.maximum(w.abs() * 2**-4, m.weight_scale * 2**-10) * 1.001 + 1e-7
            assert (err <= bound).all(), name
            assert err.max() > 0  # really FP8, not a float copy
    # Everything that is not FP8 in the file is exactly the bf16 source (biases, norms, gates, tables).
    got = dict(model.named_parameters())
    for name, p in ref.named_parameters():
        if name.removesuffix(".weight") not in quantized:
            assert torch.equal(got[name], p), name
    # Folding the scales (quantization none) gives the same weights as the FP8 modules dequantise to.
    folded = load_transformer(fp8_path, dtype=torch.float32)
    for name, m in quantized.items():
        assert torch.equal(folded.get_submodule(name).weight, m.dequantized_weight())


def test_int8_and_fp8_weight_roundtrip_error():
    w = torch.randn(64, 48) * torch.linspace(0.1, 3, 64)[:, None]
    for fmt, tol in (("int8", 0.5 / 127), ("fp8", 2**-4)):
        raw, scale = quantize_weight(w, fmt)
        assert raw.element_size() == 1
        rel = ((dequantize(raw, scale, torch.float32) - w).abs().amax(1) / w.abs().amax(1)).max()
        assert 0 < rel <= tol * 1.01, (fmt, rel)


def _batch(cfg: dict) -> LatentBatch:
    g = torch.Generator().manual_seed(0)
    t = cfg["transformer"]
    return LatentBatch(video=torch.randn(1, 128, 2, 2, 3, generator=g), audio=torch.randn(1, 8, 5, 16, generator=g),
                       video_context=torch.randn(1, 16, t["cross_attention_dim"], generator=g),
                       audio_context=torch.randn(1, 16, t["audio_cross_attention_dim"], generator=g),
                       context_mask=torch.ones(1, 16, dtype=torch.int64), fps=24.0)


def _lora_model(model: torch.nn.Module, device=torch.device("cpu"), checkpointing: bool = True, dropout: float = 0.0):
    """`model` on `device` with a LoRA whose B is non-zero (so it matters), in training mode -> (model, params)."""
    model = model.to(device)
    params = inject_lora(model, LoraConfig(rank=4, dropout=dropout), seed=0)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    model.set_gradient_checkpointing(checkpointing)
    model.train()
    return model, params


def _loss_and_grads(model: torch.nn.Module, cfg: dict, swap: list[int] = (), checkpointing: bool = True):
    """One real training forward/backward -> (loss, flat LoRA grads, swap)."""
    model, params = _lora_model(model, checkpointing=checkpointing)
    swapper = attach_block_swap(model, list(swap), torch.device("cpu"))
    inputs = prepare_inputs(_batch(cfg), SigmaSampler("uniform"), torch.Generator().manual_seed(1), task=TaskConfig(),
                            dtype=torch.float32)
    loss = compute_loss(*predict_velocity(model, inputs.video, inputs.audio), inputs).total
    loss.backward()
    return loss.item(), torch.cat([p.grad.flatten() for p in params]), swapper


def test_quantized_bases_give_the_bf16_loss_within_their_tolerance(tiny_checkpoint):
    dev = tiny_checkpoint("dev")
    cfg = read_checkpoint_config(dev)
    loss0, grad0, _ = _loss_and_grads(load_transformer(dev, dtype=torch.float32), cfg)
    cases = [("int8", dev, 1e-3, 0.9995), ("fp8", dev, 1e-2, 0.995), ("fp8", tiny_checkpoint("dev-fp8"), 1e-2, 0.995)]
    for fmt, path, loss_tol, cos_min in cases:
        loss, grad, _ = _loss_and_grads(load_transformer(path, dtype=torch.float32, quantization=fmt), cfg)
        assert loss != loss0  # the weights really are quantized
        assert abs(loss - loss0) / loss0 < loss_tol, (fmt, path.name, loss, loss0)
        assert torch.nn.functional.cosine_similarity(grad, grad0, dim=0) > cos_min, (fmt, path.name)


@pytest.fixture(scope="module")
def four_block_cfg():
    cfg = copy.deepcopy(TINY_LTX23_CONFIG)
    cfg["transformer"]["num_layers"] = 4
    return cfg


@pytest.mark.parametrize("variant", ["lokr", "loha"])
def test_block_swap_streams_lokr_and_loha_blocks_exactly(four_block_cfg, variant):
    """LoKr's and LoHa's factors stay on the device as LoRA's matrices do (attaching refused them as 'a trainable
    base tensor'), and the swapped step gives the plain step's loss and gradients."""
    ref = build_transformer_from_config(four_block_cfg, dtype=torch.float32)
    results = []
    for swap in ([], [1, 3]):
        model = copy.deepcopy(ref)
        params = inject_lora(model, LoraConfig(rank=4, variant=variant), seed=0)
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():  # every factor non-zero, so each one matters
            for p in params:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
        model.set_gradient_checkpointing(True)
        model.train()
        attach_block_swap(model, swap, torch.device("cpu"))
        inputs = prepare_inputs(_batch(four_block_cfg), SigmaSampler("uniform"), torch.Generator().manual_seed(1),
                                task=TaskConfig(), dtype=torch.float32)
        loss = compute_loss(*predict_velocity(model, inputs.video, inputs.audio), inputs).total
        loss.backward()
        results.append((loss.item(), torch.cat([p.grad.flatten() for p in params])))
    assert results[0][0] == results[1][0] and torch.equal(results[0][1], results[1][1])


def test_block_swap_gives_identical_loss_and_grads(four_block_cfg):
    ref = build_transformer_from_config(four_block_cfg, dtype=torch.float32)
    loss0, grad0, _ = _loss_and_grads(copy.deepcopy(ref), four_block_cfg)
    for swap in ([0, 1, 2, 3], [1, 3], [2]):
        loss, grad, swapper = _loss_and_grads(copy.deepcopy(ref), four_block_cfg, swap)
        assert loss == loss0 and torch.equal(grad, grad0), swap
        # Every swapped block's base tensors point into a slot or the NaN buffer, never at a private copy.
        assert isinstance(swapper, BlockSwap) and len(swapper.slots) == min(2, len(swap))
    # Quantized blocks swap the same way (1-byte weights and their scales, a 0-d tensor for FP8, travel too).
    fp8 = build_transformer_from_config(four_block_cfg, dtype=torch.float32, quantization="fp8")
    loss_q, grad_q, _ = _loss_and_grads(copy.deepcopy(fp8), four_block_cfg)
    loss, grad, _ = _loss_and_grads(copy.deepcopy(fp8), four_block_cfg, [0, 1, 3])
    assert loss_q != loss0 and loss == loss_q and torch.equal(grad, grad_q)
    # All four through two slots: forward loads 0..3, backward (recompute, reverse order) reloads 1 and 0 only,
    # so the direction of travel was seen and each prefetch landed before use.
    _, _, swapper = _loss_and_grads(copy.deepcopy(ref), four_block_cfg, [0, 1, 2, 3])
    assert swapper.loads == 6 and swapper.resident() == [0, 1]


def _swap_step(model, cfg: dict, params, seed: int, device=torch.device("cpu"), graphs=None):
    """One forward/backward on `model` (LoRA injected) with inputs drawn from `seed` -> (loss, flat LoRA grads)."""
    for p in params:
        p.grad = None
    batch = _batch(cfg)
    batch = LatentBatch(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.__dict__.items()})
    inputs = prepare_inputs(batch, SigmaSampler("uniform"), torch.Generator(device).manual_seed(seed),
                            task=TaskConfig(), dtype=torch.float32)
    if graphs is not None:
        loss = graphs(inputs, None, 1.0, 1.0).total
    else:
        loss = compute_loss(*predict_velocity(model, inputs.video, inputs.audio), inputs).total
        loss.backward()
    return loss.item(), torch.cat([p.grad.flatten() for p in params]).cpu()


def test_block_swap_residency_is_the_same_after_each_step_and_can_be_put_back(four_block_cfg):
    """What a CUDA graph of the step relies on (train/graphed.py): a step leaves the slots holding what they held
    when it began (block k of the swapped order in slot k % 2), `assume` re-points the blocks without copying, and
    `restore` copies the blocks back where a graph expects them after something else moved them."""
    ref = build_transformer_from_config(four_block_cfg, dtype=torch.float32)
    plain, plain_params = _lora_model(copy.deepcopy(ref))
    model, params = _lora_model(copy.deepcopy(ref))
    swapper = attach_block_swap(model, [0, 1, 2, 3], torch.device("cpu"))
    first = _swap_step(model, four_block_cfg, params, seed=1)
    assert swapper.state() == (0, 1)
    loads = swapper.loads
    second = _swap_step(model, four_block_cfg, params, seed=2)
    assert swapper.state() == (0, 1) and swapper.loads - loads == 4  # 2 and 3 forward, 1 and 0 again in backward
    for (loss, grad), seed in ((first, 1), (second, 2)):
        loss0, grad0 = _swap_step(plain, four_block_cfg, plain_params, seed=seed)
        assert loss == loss0 and torch.equal(grad, grad0)
    for swap, slots in (([2], (2,)), ([1, 3], (1, 3)), ([0, 2, 3], (0, 2))):  # one slot; an even and an odd count
        other, other_params = _lora_model(copy.deepcopy(ref))
        other_swap = attach_block_swap(other, swap, torch.device("cpu"))
        _swap_step(other, four_block_cfg, other_params, seed=1)
        for seed in (2, 3):
            _swap_step(other, four_block_cfg, other_params, seed=seed)
            assert other_swap.state() == slots, (swap, other_swap.state())
    # assume: bookkeeping only. Blocks outside the assumed state point at the poison buffer (NaN when used unhooked).
    swapper.assume((3, None))
    assert swapper.resident() == [3] and swapper.state() == (3, None)
    assert torch.isnan(model.transformer_blocks[0].attn1.to_q.weight).all()
    # restore: real copies; blocks land in the slots asked for and compute as before
    swapper.restore((0, 1))
    assert swapper.state() == (0, 1) and swapper.resident() == [0, 1]
    def in_slot(t: torch.Tensor, slot: int) -> bool:  # the slot's addresses: the ones a graph recorded
        start = swapper.slots[slot].data_ptr()
        return start <= t.data_ptr() < start + swapper.slots[slot].nbytes

    block0 = model.transformer_blocks[0].attn1.to_q.weight
    assert torch.equal(block0, plain.transformer_blocks[0].attn1.to_q.base_layer.weight) and in_slot(block0, 0)
    swapper.restore((1, 0))  # swapped over: each block moves to the other slot
    assert swapper.state() == (1, 0) and in_slot(model.transformer_blocks[0].attn1.to_q.weight, 1)
    loss, grad = _swap_step(model, four_block_cfg, params, seed=2)
    assert loss == second[0] and torch.equal(grad, second[1])


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="the GPU generator (run on the device machine)"))])
def test_lora_dropout_recomputes_the_forward_masks(four_block_cfg, device):
    """Gradient checkpointing with LoRA dropout: the recompute draws the forward's masks, so loss and LoRA gradients
    equal those of the same step without checkpointing. On a GPU this needs the trainer's block loop
    (ltx/fast.py `set_recomputed_blocks`): torch's checkpoint finds no GPU tensor among ltx-core's arguments and
    restored only the CPU generator."""
    ref = build_transformer_from_config(four_block_cfg, dtype=torch.float32)
    results = []
    for checkpointing in (False, True):
        model, params = _lora_model(copy.deepcopy(ref), torch.device(device), checkpointing, dropout=0.5)
        set_recomputed_blocks(model, None)  # every block recomputed, as the trainer sets it
        torch.manual_seed(0)  # the generators dropout draws from
        results.append(_swap_step(model, four_block_cfg, params, seed=1, device=torch.device(device)))
    (loss0, grad0), (loss1, grad1) = results
    assert loss0 == loss1 and torch.allclose(grad0, grad1, rtol=1e-5, atol=1e-7), (grad0 - grad1).abs().max()
    model, params = _lora_model(copy.deepcopy(ref), torch.device(device), dropout=0.5)
    torch.manual_seed(1)  # other masks: another gradient (the dropout is really on)
    assert not torch.allclose(_swap_step(model, four_block_cfg, params, seed=1, device=torch.device(device))[1],
                              grad0, rtol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU (run on the device machine)")
def test_block_swap_is_captured_and_replayed_with_the_step(four_block_cfg):
    """On a GPU: the step with blocks 0, 2, 3 swapped, replayed as a CUDA graph, gives the losses and gradients of
    the eager step without swap for new inputs each step, also after eager work (sampling) moved the slots."""
    from ltx_lora.train.graphed import StepGraphs

    gpu = torch.device("cuda")
    ref = build_transformer_from_config(four_block_cfg, dtype=torch.float32)
    plain, plain_params = _lora_model(copy.deepcopy(ref), gpu)
    model, params = _lora_model(copy.deepcopy(ref))
    # placed as the loader places it: the rest of the model on the GPU, its own tensors (scale-shift tables) too; a
    # host tensor copied during the capture is refused by CUDA (this test's first GPU run, 2026-12-05, H200)
    place_transformer_(model, gpu, {0, 2, 3})
    swapper = attach_block_swap(model, [0, 2, 3], gpu)
    graphs = StepGraphs(model, params, torch.float32, swap=swapper)
    for seed in range(1, 6):
        loss, grad = _swap_step(model, four_block_cfg, params, seed=seed, device=gpu, graphs=graphs)
        loss0, grad0 = _swap_step(plain, four_block_cfg, plain_params, seed=seed, device=gpu)
        assert not graphs.failed, graphs.failed
        assert abs(loss - loss0) <= 1e-5 * abs(loss0), (seed, loss, loss0)
        assert (grad - grad0).norm() <= 1e-4 * grad0.norm(), seed
        if seed == 3:  # eager no-grad work in between moves the slots; the next replay puts them back first
            with torch.no_grad():
                model.eval()
                batch = _batch(four_block_cfg)
                inputs = prepare_inputs(LatentBatch(**{k: v.to(gpu) if isinstance(v, torch.Tensor) else v
                                                       for k, v in batch.__dict__.items()}),
                                        SigmaSampler("uniform"), torch.Generator(gpu).manual_seed(9),
                                        task=TaskConfig(), dtype=torch.float32)
                predict_velocity(model, inputs.video, inputs.audio)
                model.train()
            assert swapper.state() != graphs.graphs[next(iter(graphs.graphs))].swap_start
    assert graphs.captures == 1 and graphs.replays == 4
    # Copies: the eager first step 4 (0, 2, 3, then 0 again in backward), each replay 2 (3 forward, 0 backward),
    # the no-grad forward 1 (3) and the repair before the next replay 1 (0 back into slot 0).
    entry = next(iter(graphs.graphs.values()))
    assert entry.swap_start == entry.swap_end == (0, 2) and entry.swap_loads == 2
    assert swapper.loads == 4 + 4 * 2 + 1 + 1


def test_a_block_used_while_not_resident_is_noticed(four_block_cfg):
    """The hook is what makes swapped blocks usable: without it the block computes on the NaN buffer."""
    model = build_transformer_from_config(four_block_cfg, dtype=torch.float32)
    inject_lora(model, LoraConfig(rank=4), seed=0)
    swapper = attach_block_swap(model, [1, 2], torch.device("cpu"))
    swapper.remove()
    model.train()
    inputs = prepare_inputs(_batch(four_block_cfg), SigmaSampler("uniform"), torch.Generator().manual_seed(1),
                            task=TaskConfig(), dtype=torch.float32)
    video, _ = predict_velocity(model, inputs.video, inputs.audio)
    assert torch.isnan(video).all()


def test_host_offload_brings_the_module_to_the_device_only_inside_the_context():
    from ltx_lora.runtime.placement import HostOffload

    layer = torch.nn.Linear(4, 3).requires_grad_(False)
    x = torch.randn(2, 4)
    want = layer(x)
    with HostOffload(layer, torch.device("cpu")).on_device():
        assert torch.equal(layer(x), want)
    # The device switch itself, seen with the meta device as "the GPU": there only inside the context.
    offload = HostOffload(layer, torch.device("meta"))
    assert layer.weight.device.type == "cpu"
    with offload.on_device():
        assert layer.weight.device.type == "meta" and layer.bias.device.type == "meta"
    assert layer.weight.device.type == "cpu" and torch.equal(layer(x), want)


def test_block_swap_refuses_trainable_base_tensors(four_block_cfg):
    model = build_transformer_from_config(four_block_cfg, dtype=torch.float32)
    model.requires_grad_(True)
    with pytest.raises(ValueError, match="trainable base tensor"):
        attach_block_swap(model, [0], torch.device("cpu"))


def test_adamw8bit_refuses_cleanly_without_bitsandbytes(monkeypatch):
    from ltx_lora.config import TrainConfig
    from ltx_lora.train.optim import build_optimizer

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as on a machine without it: importing it fails
    with pytest.raises(UserError, match=r"needs bitsandbytes, which is not installed: pip install 'ltx-lora\[lowvram\]'"):
        build_optimizer([torch.nn.Parameter(torch.zeros(2))], TrainConfig(optimizer="adamw8bit"))


# -- the CLI ------------------------------------------------------------------------------------------------------


def test_train_with_int8_base_and_block_swap(prepared, tmp_path):  # noqa: F811 - pytest fixture
    cfg = write_config(prepared, tmp_path, task="t2av", steps=2)
    data = yaml.safe_load(cfg.read_text())
    data["memory"] = {"quantization": "int8", "block_swap": 1}
    cfg.write_text(yaml.safe_dump(data))
    res = run_cli("train", cfg)
    assert res.code == 0, res.err
    assert "memory plan: INT8 base, 1 of 2 blocks swapped to host" in res.err
    assert "step 2/2" in res.err
    assert (tmp_path / "run" / "lora.safetensors").is_file()

    data["memory"] = {"block_swap": 1}
    data["train"]["gradient_checkpointing"] = False
    data["output_dir"] = str(tmp_path / "other")
    cfg.write_text(yaml.safe_dump(data))
    assert_user_error(run_cli("train", cfg), "memory.block_swap needs train.gradient_checkpointing")


def test_doctor_prints_the_plan_train_would_use(tmp_path):
    cfg_path = tmp_path / "c.yaml"
    data = {"model": {"checkpoint": str(tmp_path / "ltx-2.3-22b-dev.safetensors")}, "memory": {"plan": "24gb"}}
    cfg_path.write_text(yaml.safe_dump(data))
    res = run_cli("doctor", "--config", cfg_path)
    plan = plan_for_config(parse_config(data), torch.device("cpu"))
    flat = re.sub(r"\s+", " ", res.out)
    want = plan.describe().removeprefix("memory plan: ")
    assert "memory plan" in res.out and re.sub(r"\s+", " ", want) in flat, res.out
    assert "INT8 base" in want and "blocks swapped to host" in want


def test_cpu_plan_claims_no_peak(tmp_path):
    data = {"model": {"checkpoint": str(tmp_path / "ltx-2.3-22b-dev.safetensors")}}
    text = plan_for_config(parse_config(data), torch.device("cpu")).describe()
    assert "expected peak" not in text and "GiB" not in text and "CPU: no device memory limit" in text, text


def test_fp8_matmuls_train_and_resume_exactly(prepared, tmp_path):  # noqa: F811 - the fixture imported above
    """memory.fp8_matmuls: on trains the real loop (here on the CPU: per-tensor scales) and resumes bit for bit: a
    copy of a 2-step run cut back to its step-1 checkpoint (as a kill after it leaves it) resumes to the same LoRA."""
    from rich.console import Console

    from ltx_lora.runtime.run import resolve_run
    from ltx_lora.train.trainer import Trainer

    def config(name: str) -> Config:
        data = yaml.safe_load(write_config(prepared, tmp_path, name=name, task="t2v", steps=2).read_text())
        return parse_config({**data, "memory": {"fp8_matmuls": "on"}})

    log = Console(record=True, width=200)
    Trainer(resolve_run(config("straight")), console=log).train()
    text = log.export_text()
    assert "memory plan: FP8 (FP8 matmuls) base" in text
    assert "FP8 matmuls: 56 linears of the base compute in FP8 (activation scales per tensor)" in text
    plan = yaml.safe_load((tmp_path / "straight" / "run.json").read_text())["memory_plan"]
    assert (plan["quantization"], plan["fp8_matmuls"]) == ("fp8", True)
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    shutil.copytree(straight, cut)
    shutil.rmtree(cut / "checkpoints" / "step_000002")
    (cut / "lora.safetensors").unlink()
    Trainer(resolve_run(config("cut")), resume=True, console=log).train()
    assert "resumed from" in log.export_text()
    with safe_open(str(straight / "lora.safetensors"), "pt") as a, safe_open(str(cut / "lora.safetensors"), "pt") as b:
        assert a.keys() == b.keys() and len(a.keys()) > 0
        for k in a.keys():  # noqa: SIM118 - safe_open is not a mapping
            assert torch.equal(a.get_tensor(k), b.get_tensor(k)), k
        assert b.metadata()["step"] == "2"
