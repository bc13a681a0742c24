"""The fast training path computes what the official step computes, and falls back instead of crashing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from reference_step import lora_gradients, relative_error  # noqa: E402

from ltx_lora.fixtures.models import build_transformer_from_config, tiny_ltx23_config  # noqa: E402
from ltx_lora.train.objective import LatentBatch  # noqa: E402


def tiny_batch(cfg: dict) -> LatentBatch:
    t = cfg["transformer"]
    g = torch.Generator().manual_seed(3)
    bf16 = torch.bfloat16
    return LatentBatch(video=torch.randn(1, 128, 3, 2, 3, generator=g, dtype=bf16),
                       audio=torch.randn(1, 8, 13, 16, generator=g, dtype=bf16),
                       video_context=torch.randn(1, 128, t["cross_attention_dim"], generator=g, dtype=bf16),
                       audio_context=torch.randn(1, 128, t["audio_cross_attention_dim"], generator=g, dtype=bf16),
                       context_mask=torch.ones(1, 128, dtype=torch.int64), fps=24.0)


@pytest.fixture(scope="module")
def reference():
    cfg = tiny_ltx23_config()
    batch = tiny_batch(cfg)
    loss, grads = lora_gradients("ref", build_transformer_from_config(cfg, seed=5), batch, rank=8)
    return cfg, batch, loss, grads


def test_fast_step_matches_the_official_step(reference):
    cfg, batch, ref_loss, ref_grads = reference
    loss, grads = lora_gradients("ours", build_transformer_from_config(cfg, seed=5), batch, rank=8)
    assert len(grads) == len(ref_grads) > 0
    assert loss == pytest.approx(ref_loss, rel=1e-2)
    assert relative_error(grads, ref_grads) < 2e-2


def test_compiled_blocks_match_the_official_step(reference):
    """The blocks traced whole (dynamo + AOT autograd, the graphs inductor compiles on a GPU; its kernels are
    checked by the GPU bench) compute the same gradients: nothing is lost or graph-broken in tracing."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    cfg, batch, ref_loss, ref_grads = reference
    torch._dynamo.reset()
    counters.clear()
    loss, grads = lora_gradients("ours", build_transformer_from_config(cfg, seed=5), batch, rank=8,
                                 compiled="aot_eager")
    assert not counters["graph_break"], f"graph breaks: {dict(counters['graph_break'])}"
    assert loss == pytest.approx(ref_loss, rel=1e-2)
    assert relative_error(grads, ref_grads) < 2e-2


def test_fp8_matmuls_step_is_close_to_the_official_step(reference):
    """memory.fp8_matmuls: the base quantized to FP8 and every base linear's forward and input gradient computed from
    e4m3 operands (per-tensor scales: what the CPU runs; the GPU's per-row scales are checked against the official
    step by bench/train_step.py --check). e4m3 keeps 3 mantissa bits, so each operand of each matmul carries up to
    2^-4 relative rounding error: measured here 0.04% on the loss and 7.3% on the LoRA gradients (bf16 path: 0).
    Bounds: 5e-3 on the loss, 0.1 on the gradients (the bench's FP8 gate), and more than the bf16 step's tolerance
    (2e-2), so a step that silently stayed bf16 fails."""
    cfg, batch, ref_loss, ref_grads = reference
    loss, grads = lora_gradients("ours_fp8", build_transformer_from_config(cfg, seed=5), batch, rank=8)
    assert grads.keys() == ref_grads.keys()
    assert loss == pytest.approx(ref_loss, rel=5e-3) and loss != ref_loss
    assert 2e-2 < relative_error(grads, ref_grads) < 0.1


def _fast_accum_arg(op, args, kwargs) -> bool:
    """use_fast_accum of an aten._scaled_mm call, its arguments normalised by the op's schema."""
    values = {a.name: a.default_value for a in op._schema.arguments}
    values.update(zip(values, args), **(kwargs or {}))
    return bool(values["use_fast_accum"])


def _scaled_mm_fast_accum_flags(fn) -> list[bool]:
    """use_fast_accum of every aten._scaled_mm call `fn` makes eagerly (what reaches the kernel)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    flags = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket is torch.ops.aten._scaled_mm:
                flags.append(_fast_accum_arg(func, args, kwargs))
            return func(*args, **(kwargs or {}))

    with Record():
        fn()
    return flags


def test_fp8_linear_traces_whole_and_matches_eager():
    """A LoRA-wrapped FP8-matmul linear under bf16 autocast, compiled with fullgraph=True (any graph break raises)
    through AOT autograd (the graphs inductor compiles on a GPU): forward and input gradient equal to eager, bit for
    bit, in each FP8 matmul mode, switched between calls: dynamo's guards see the switch (the FP8 check rows of
    bench/train_step.py compile one model per mode in one process) and each graph compiled passes the kernel the
    fast-accumulation flag asked for. Inside a block it is the only new code: the block around it is traced whole by
    test_compiled_blocks_match_the_official_step (tracing a whole FP8 block takes ~35 s on 2 CPU cores; the GPU
    bench reports graph breaks of the real blocks)."""
    from torch import nn

    from ltx_lora.config import LoraConfig
    from ltx_lora.ltx.quantize import QuantizedLinear, set_fp8_matmuls
    from ltx_lora.train.lora import inject_lora

    torch.manual_seed(0)
    model = nn.Sequential(QuantizedLinear.from_linear(nn.Linear(64, 128), "fp8"), nn.GELU())
    assert set_fp8_matmuls(model, "tensor") == 1
    inject_lora(model, LoraConfig(rank=4, target_modules=["0"]), seed=0)
    with torch.no_grad():
        model[0].lora_B["default"].weight.normal_()

    def step(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x).float().square().mean()

    from torch._dynamo.backends.common import aot_autograd
    from torch._dynamo.backends.debugging import boxed_nop

    compiled_flags = []  # use_fast_accum of the _scaled_mm calls in each graph compiled: forward, then backward

    def recording(gm: torch.fx.GraphModule, example_inputs):
        compiled_flags.extend(_fast_accum_arg(n.target, n.args, n.kwargs) for n in gm.graph.nodes
                              if getattr(n.target, "overloadpacket", None) is torch.ops.aten._scaled_mm)
        return boxed_nop(gm, example_inputs)

    compiled = torch.compile(step, backend=aot_autograd(fw_compiler=recording, bw_compiler=recording),
                             fullgraph=True)
    x = torch.randn(2, 8, 64, dtype=torch.bfloat16)
    dxs = {}
    for fast_accum, fp8_input_grad in ((True, True), (False, False), (True, False)):  # a switch must recompile
        set_fp8_matmuls(model, "tensor", fast_accum=fast_accum, fp8_input_grad=fp8_input_grad)
        expected = [fast_accum] + [False] * fp8_input_grad
        results = []
        for fn in (step, compiled):
            xi = x.clone().requires_grad_(True)
            compiled_flags.clear()
            if fn is step:
                assert _scaled_mm_fast_accum_flags(lambda: fn(xi).backward()) == expected
            else:
                fn(xi).backward()
                assert compiled_flags == expected, (fast_accum, fp8_input_grad)
            results.append((xi.grad, model[0].lora_A["default"].weight.grad.clone()))
            model.zero_grad()
        (eager_dx, eager_da), (dx, da) = results
        assert torch.equal(dx, eager_dx) and torch.equal(da, eager_da)
        assert dx.abs().sum() > 0
        dxs[fast_accum, fp8_input_grad] = dx
    assert not torch.equal(dxs[True, True], dxs[True, False])


def test_fp8_scales_bound_the_rounding_error_per_tensor_and_per_row():
    """The activation / gradient quantization of FP8 matmuls, both granularities (the GPU's per-row one included):
    every value within half an e4m3 ulp (2^-4 relative) of its input, or the subnormal step for the smallest; a row
    of small values keeps its precision only with per-row scales."""
    from ltx_lora.ltx.quantize import _to_fp8

    x = torch.randn(6, 32, dtype=torch.bfloat16) * torch.logspace(-4, 2, 6)[:, None].bfloat16()
    errors = {}
    for granularity, scale_shape in (("tensor", ()), ("row", (6, 1))):
        q, scale = _to_fp8(x, granularity)
        assert q.dtype == torch.float8_e4m3fn and scale.dtype == torch.float32 and scale.shape == scale_shape
        err = (q.float() * scale - x.float()).abs()
        assert (err <= torch.maximum(x.float().abs() * 2**-4, scale * 2**-10) * 1.001).all(), granularity
        errors[granularity] = (err[0] / x[0].float().abs()).max()
    assert errors["row"] <= 2**-4 < errors["tensor"]


FP8_DEVICES = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available()
                                       and torch.cuda.get_device_capability() >= (8, 9) else [])


@pytest.mark.parametrize("device", FP8_DEVICES, ids=str)
def test_fp8_matmul_modes_compute_their_formulas(device):
    """Each FP8 matmul mode of set_fp8_matmuls against its float64 formula, bf16 operands as in training (on the
    CPU; on an FP8 GPU too, with its per-row scales): forward (x8 * sx) @ (W8 * sw)^T + b with and without fast
    accumulation; input gradient (g8 * sg) @ (W8 * sw) in FP8, or g @ dequant(W) unrounded with fp8_input_grad off,
    which must be several times closer to the exact g @ W than the FP8 one. Within bf16 rounding of each formula,
    ~2% from the wrong one (e4m3 rounding of an operand), so a mode wired to the other path fails. The flag the
    kernel gets is recorded too: fast accumulation in forward only, as asked."""
    from ltx_lora.ltx.quantize import QuantizedLinear, _to_fp8, fp8_granularity, set_fp8_matmuls

    torch.manual_seed(0)
    granularity = fp8_granularity(device)
    layer = QuantizedLinear.from_linear(torch.nn.Linear(256, 128), "fp8", device=device)
    w = layer.dequantized_weight(torch.float64)
    b = layer.bias.double()
    x = torch.randn(64, 256, dtype=torch.bfloat16, device=device) * torch.logspace(-1, 1, 256, device=device).bfloat16()
    g = torch.randn(64, 128, dtype=torch.bfloat16, device=device)

    def fp8_round(t):  # the operand as the FP8 matmul sees it, in float64
        q, scale = _to_fp8(t, granularity)
        return q.double() * scale.double()

    def rel(a, ref):
        return float((a.detach().double() - ref).norm() / ref.norm())

    exact_y, exact_dx = x.double() @ w.T + b, g.double() @ w
    fp8_y, fp8_dx = fp8_round(x) @ w.T + b, fp8_round(g) @ w
    assert rel(fp8_y, exact_y) > 1e-2 and rel(fp8_dx, exact_dx) > 1e-2  # the formulas themselves are apart
    dx = {}
    for fast_accum in (True, False):
        for fp8_input_grad in (True, False):
            assert set_fp8_matmuls(layer, granularity, fast_accum=fast_accum, fp8_input_grad=fp8_input_grad) == 1
            xi = x.clone().requires_grad_(True)
            y = layer(xi)
            forward_flags = _scaled_mm_fast_accum_flags(lambda: layer(xi))
            backward_flags = _scaled_mm_fast_accum_flags(lambda: y.backward(g))
            mode = (fast_accum, fp8_input_grad)
            assert forward_flags == [fast_accum], mode
            assert backward_flags == ([False] if fp8_input_grad else []), mode
            assert y.dtype == xi.grad.dtype == torch.bfloat16
            assert rel(y, fp8_y) < 4e-3, mode
            assert rel(xi.grad, fp8_dx if fp8_input_grad else exact_dx) < 4e-3, mode
            dx[mode] = rel(xi.grad, exact_dx)
    for fast_accum in (True, False):
        assert dx[fast_accum, False] < dx[fast_accum, True] / 4


def test_train_step_check_takes_the_fp8_error_apart(tmp_path):
    """bench/train_step.py --check --check-variants (the GPU run that decomposes the FP8 step's error) runs on the
    CPU at tiny size: one row per variant against ref and, weights held equal, against fp8w; the bf16 input gradient
    brings the FP8 step closer to the fp8w step (tiny model, per-tensor scales: 4.6% vs 5.2%, seeded)."""
    import json
    import os
    import subprocess
    import sys

    out = tmp_path / "check.jsonl"
    script = Path(__file__).resolve().parents[1] / "bench" / "train_step.py"
    subprocess.run([sys.executable, str(script), "--tiny", "--check", "--check-variants", "fp8,fp8w,fp8_bf16_bwd",
                    "--variants", "", "--res", "64x64x9", "--out", str(out)],
                   check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    header, row = (json.loads(line) for line in out.read_text().splitlines())
    assert header["device"] == "cpu" and row["check"] == "numerics"
    assert row["rows"] == ["fp8w", "fp8", "fp8_bf16_bwd"] and "ours_loss" not in row
    assert row["fp8w_setup"]["granularity"] is None and row["fp8_bf16_bwd_setup"]["fp8_input_grad"] is False
    assert 0 < row["fp8w_grad_rel_error"] < row["fp8_grad_rel_error"] < row["fp8_tolerance"]
    assert 0 < row["fp8_bf16_bwd_vs_fp8w_grad_rel_error"] < row["fp8_vs_fp8w_grad_rel_error"]
    assert "fp8w_vs_fp8w_grad_rel_error" not in row


def test_recomputing_fewer_blocks_changes_no_gradient(reference):
    """Selective checkpointing (the plan's kept blocks) trades memory for time only: every block recomputed, one,
    or none give the same loss and LoRA gradients, bit for bit."""
    from ltx_lora.ltx.fast import set_recomputed_blocks

    cfg, batch, _, _ = reference
    results = []
    for recompute in (None, 1, 0):
        model = build_transformer_from_config(cfg, seed=5)
        set_recomputed_blocks(model, recompute)
        results.append(lora_gradients("ours", model, batch, rank=8))
    (loss0, grads0), rest = results[0], results[1:]
    for loss, grads in rest:
        assert loss == loss0 and grads.keys() == grads0.keys()
        assert all(torch.equal(grads[k], grads0[k]) for k in grads0)


def test_step_graph_inputs_round_trip_and_key_on_shape(reference):
    """The CUDA-graph step (GPU only; replay checked against the official step by bench/train_step.py --check):
    its static inputs rebuild the same objects, a new shape is a new graph, and it says why it cannot run here."""
    from ltx_lora.task import resolve_task
    from ltx_lora.train.graphed import _flatten, _unflatten, can_graph
    from ltx_lora.train.objective import prepare_inputs
    from ltx_lora.train.timesteps import SigmaSampler

    cfg, batch, _, _ = reference

    def inputs_of(b):
        return prepare_inputs(b, SigmaSampler(), torch.Generator().manual_seed(0), task=resolve_task("i2v"),
                              dtype=torch.bfloat16)

    inputs = inputs_of(batch)
    flat: list[torch.Tensor] = []
    spec = _flatten((inputs, None, 0.5), flat)
    hash(spec)
    back, weight, scale = _unflatten(spec, iter(flat))
    assert back.video.latent is inputs.video.latent and back.audio.positions is inputs.audio.positions
    assert back.video_target is inputs.video_target and weight is None and scale == 0.5
    assert _flatten((inputs_of(batch), None, 0.5), []) == spec  # same shapes: the same graph is replayed
    shorter = LatentBatch(**{**batch.__dict__, "video": batch.video[:, :, :2]})
    assert _flatten((inputs_of(shorter), None, 0.5), []) != spec  # another bucket: another graph

    model = build_transformer_from_config(cfg, seed=5).requires_grad_(False)  # frozen, as the trainer's base
    model.transformer_blocks[0].attn1.to_q.weight.requires_grad_(True)  # trained inside the blocks: fine
    assert can_graph(model, torch.device("cpu"), distributed=False) == "not on a GPU"
    gpu = torch.device("cuda")
    assert can_graph(model, gpu, distributed=False) == ""
    assert "several processes" in can_graph(model, gpu, distributed=True)
    assert "lora.dropout" in can_graph(model, gpu, distributed=False, dropout=0.1)
    model.patchify_proj.weight.requires_grad_(True)
    assert "outside the transformer blocks" in can_graph(model, gpu, distributed=False)
