"""Time ltx-lora's LoRA training step against the official trainer's step, same run, same GPU.

Builds the full-size LTX-2.3 transformer (22B config, random bf16 weights: timing and memory do not depend on the
values) and times, per resolution:
  ref           the step as the official trainer builds it (bench/reference_step.py: peft get_peft_model,
                ltx-core's default attention with the text mask, bf16 autocast, whole-block checkpointing, AdamW)
  ref_compiled  the same with each block torch.compile'd (what a user can switch on in the official trainer)
  ours_eager    our step (train/step.py: what `ltx-lora train` runs) without compiling
  ours          our default GPU path: blocks compiled as one graph each (ltx/fast.py), fused AdamW, clipping
  ours_nockpt   ours without activation checkpointing (memory permitting)
  ours_fp8      ours with FP8 matmuls for the frozen base (memory.fp8_matmuls: on): its 28 linears per block
                quantized to FP8 per tensor at load, forward and input gradient through torch._scaled_mm with
                activation / gradient scales per token row (per tensor on the CPU), as `ltx-lora train` runs it
  ours_fp8_tensor  the same with per-tensor activation scales on the GPU too (speed vs numerics of the scales)
  ours_fp8_exact   ours_fp8 with its forward matmuls without Hopper's fast accumulation (set_fp8_matmuls fast_accum)
  ours_fp8_bf16bwd ours_fp8 with the input gradient in bf16 from the dequantised FP8 weight (fp8_input_grad off);
                the FP8 options combine: ours_fp8_exact_bf16bwd, ours_fp8_tensor_exact
  ours_fp8w     the FP8 base dequantised per matmul (memory.quantization: fp8 alone: saves memory, not time)
  ..._rN        (any ours variant) only the first N of 48 blocks recomputed in backward, e.g. ours_r36, ours_fp8_r32
  ..._bN        (any ours variant, after _rN) N clips per step, e.g. ours_b2, ours_fp8_r32_b2
  ..._dop       (any ours variant, last) with train.output_preservation: the preservation's LoRA-off forward and
                LoRA forward + backward on a second random text after the step's own (train/step.py), without
                CUDA graphs as the trainer runs it, e.g. ours_nograph vs ours_nograph_dop, ours_eager_dop
Each variant builds its own model in turn (the GPU holds one 22B model at a time); peak memory is counted from the
end of the build (an FP8 variant builds its bf16 random weights first and quantizes them in place).

--check compares, on identical weights, LoRA values and inputs, the loss and LoRA gradients of ref and ours
(relative error of all gradients together; the target is < 2e-2, bf16 tolerance), and with an FP8 variant asked
for, of ref and ours_fp8 (on a GPU its replayed CUDA graph; target < FP8_GRAD_TOLERANCE: e4m3 keeps 3 mantissa
bits, so each operand carries up to 2^-4 relative rounding error; 7.3% on the tiny model, per-tensor scales).
--check-variants picks the rows compared with ref instead (each builds its own model: ~1 min at 22B), to take the
FP8 error apart; every FP8 row is also compared with fp8w (weights held equal: its matmuls' error alone) and ours:
  ours            the bf16 step (on a GPU also its replayed graph: ours_graphed)
  fp8w            the FP8 base, bf16 matmuls from the dequantised weights: the weight quantization's error alone
  fp8             FP8 matmuls as ours_fp8 runs them (forward with fast accumulation, input gradient in FP8)
  fp8_exact_fwd   the forward without fast accumulation
  fp8_bf16_bwd    the input gradient in bf16 from the dequantised weight (g @ dequant(W))
  fp8_tensor      per-tensor activation / gradient scales (the GPU's default is per row)
the FP8 options combine as in the variant names (fp8_exact_fwd_bf16_bwd: only the forward's activations rounded
to e4m3); on a GPU every row but ours is the compiled step replayed as a CUDA graph.
--tiny runs every variant on the CPU at tiny size (blocks traced by aot_eager instead of inductor, which takes
minutes to compile on a CPU), as a smoke test.
--profile adds phase times (forward / backward / optimizer), the GPU-busy share of one step, its top kernels
and host-side ops.

Model FLOPs (analytic, per step): forward linears 2*T*(params touched) + attention 4*T*T_kv*D per attention,
backward 2x forward for activations (frozen base: no weight gradients except LoRA), plus one extra forward
for full recompute under checkpointing. MFU = model FLOPs / time / measured bf16 matmul ceiling.

python bench/train_step.py [--res 960x544x49,768x512x121,512x512x49] [--steps 10] [--warmup 3]
                           [--variants ref,ours] [--check [--check-variants ours,fp8w,fp8,...]] [--profile]
                           [--out bench/results/FILE.jsonl]
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import platform
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from reference_step import fp8_setup, lora_gradients, our_model, reference_model, relative_error  # noqa: E402

from ltx_lora.config import TrainConfig  # noqa: E402
from ltx_lora.fixtures.models import build_transformer_from_config  # noqa: E402
from ltx_lora.ltx.fast import attention_mask_or_none, set_recomputed_blocks  # noqa: E402
from ltx_lora.ltx.sizes import ltx23_22b_config  # noqa: E402
from ltx_lora.task import TaskConfig  # noqa: E402
from ltx_lora.train.objective import LatentBatch  # noqa: E402
from ltx_lora.train.optim import build_optimizer  # noqa: E402
from ltx_lora.train.graphed import StepGraphs  # noqa: E402
from ltx_lora.train.step import Preservation, forward_backward  # noqa: E402
from ltx_lora.train.timesteps import SigmaSampler  # noqa: E402

TEXT_LEN = 1024
FP8_GRAD_TOLERANCE = 0.1  # LoRA-gradient relative error of the FP8 step vs the bf16 reference (see the docstring)
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def model_flops(tcfg: dict, video_tokens: int, audio_tokens: int, text: int, recompute: bool) -> float:
    d, da = tcfg["num_attention_heads"] * tcfg["attention_head_dim"], tcfg["audio_num_attention_heads"] * tcfg["audio_attention_head_dim"]
    layers = tcfg["num_layers"]
    t, ta = video_tokens, audio_tokens
    lin = (t * (4 * d * d + 2 * d * d + 2 * d * 4 * d) + text * 2 * d * d  # video self, cross(q,o + kv on text), ff
           + ta * (4 * da * da + 2 * da * da + 2 * da * 4 * da) + text * 2 * da * da  # audio
           + t * 2 * d * da + ta * 2 * da * da + ta * 2 * d * da + t * 2 * da * d)  # a<->v cross-attention (approx.)
    att = 4 * d * t * (t + text) + 4 * da * ta * (ta + text) + 4 * da * (t * ta * 2)
    fwd = layers * (2 * lin + att)
    return fwd * (3 + (1 if recompute else 0))


def make_batch(res: tuple[int, int, int], device, dtype, tcfg: dict, batch: int = 1,
               seed: int = 0) -> tuple[LatentBatch, int]:
    w, h, f = res
    lf, lh, lw = (f - 1) // 8 + 1, h // 32, w // 32
    ta = round(f / 24.0 * 25)
    g = torch.Generator(device).manual_seed(seed)
    video = torch.randn(batch, 128, lf, lh, lw, generator=g, device=device, dtype=dtype)
    audio = torch.randn(batch, 8, ta, 16, generator=g, device=device, dtype=dtype)
    vctx = torch.randn(batch, TEXT_LEN, tcfg["cross_attention_dim"], generator=g, device=device, dtype=dtype)
    actx = torch.randn(batch, TEXT_LEN, tcfg["audio_cross_attention_dim"], generator=g, device=device, dtype=dtype)
    mask = torch.ones(batch, TEXT_LEN, device=device, dtype=torch.int64)
    return LatentBatch(video=video, audio=audio, video_context=vctx, audio_context=actx, context_mask=mask,
                       fps=24.0), ta


def split_clips(variant: str) -> tuple[str, int]:
    """(variant without its _bN, N clips per step: 1 without)."""
    m = re.search(r"_b(\d+)$", variant)
    return (variant[:m.start()], int(m.group(1))) if m else (variant, 1)


def recomputed_blocks(variant: str) -> int | None:
    """N of a variant ending in _rN (blocks recomputed in backward), else None."""
    m = re.search(r"_r(\d+)$", variant)
    return int(m.group(1)) if m else None


def build_variant(variant: str, model: torch.nn.Module, rank: int):
    """(module to call, its LoRA parameters, optimizer, clip?, step graphs or None) for a variant, on `model` in place.

    ours: compiled blocks + the step as CUDA graphs (what `ltx-lora train` runs on one GPU); ours_nograph: the same
    without graphs; ours_rN: ours with only the first N of 48 blocks recomputed in backward (selective
    checkpointing); ours_nockpt: no recompute at all; ours_fp8 / ours_fp8_tensor: FP8 matmuls (row / tensor
    scales), ours_fp8_exact / ours_fp8_bf16bwd: their numerics options (reference_step.fp8_setup); ours_fp8w: FP8
    weights dequantised per matmul."""
    if variant.startswith("ref"):
        wrapped, base = reference_model(model, rank)
        if variant == "ref_compiled":
            for block in base.transformer_blocks:
                block.compile()
        params = [p for p in wrapped.parameters() if p.requires_grad]
        return wrapped, params, torch.optim.AdamW(params, lr=1e-4), False, None
    recompute = recomputed_blocks(variant)
    variant = re.sub(r"_r\d+$", "", variant)
    compiled = variant != "ours_eager" and ("inductor" if DEVICE.type == "cuda" else "aot_eager")
    params = our_model(model, rank, compiled=compiled, fp8=fp8_setup(variant, DEVICE))
    if variant == "ours_nockpt":  # what recomputation costs (and whether the memory allows skipping it)
        model.set_gradient_checkpointing(False)
    if recompute is not None:
        set_recomputed_blocks(model, recompute)
    graphs = None
    if DEVICE.type == "cuda" and variant not in ("ours_nograph", "ours_eager"):
        graphs = StepGraphs(model, params, torch.bfloat16, on_fallback=lambda why: print("graphs off:", why))
    return model, params, build_optimizer(params, TrainConfig()), True, graphs


def one_step(module, params, opt, clip: bool, batch: LatentBatch, gen: torch.Generator, graphs=None,
             preservation: Preservation | None = None) -> torch.Tensor:
    loss = forward_backward(module, batch, SigmaSampler(), gen, task=TaskConfig(),
                            dtype=torch.bfloat16, graphs=graphs, preservation=preservation)
    if clip:
        torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.total


def gpu_busy_share(module, params, opt, clip, batch, gen, graphs=None) -> dict:
    """Kernel time / wall time of one step, the top kernels, and the top host-side ops (where idle time comes from)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        one_step(module, params, opt, clip, batch, gen, graphs)
        sync()
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    kernels = [e for e in events if e.device_type == DeviceType.CUDA]
    host = [e for e in events if e.device_type == DeviceType.CPU]
    kernel_s = sum(e.self_device_time_total for e in kernels) / 1e6
    top = sorted(kernels, key=lambda e: e.self_device_time_total, reverse=True)[:15]
    top_host = sorted(host, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    cats: dict[str, list[float]] = {}
    for e in kernels:  # where the GPU time goes: [ms, launches] per kind of kernel
        k = e.key.lower()
        kind = ("gemm" if any(x in k for x in ("nvjet", "gemm", "cutlass", "xmma")) else
                "attention" if any(x in k for x in ("sdpa", "flash", "fmha", "attention")) else
                "triton (fused)" if k.startswith("triton_") else "other")
        c = cats.setdefault(kind, [0.0, 0])
        c[0] += e.self_device_time_total / 1e3
        c[1] += e.count
    return {"wall_s": round(wall, 4), "gpu_kernel_s": round(kernel_s, 4), "gpu_busy_share": round(kernel_s / wall, 3),
            "kernel_launches": sum(e.count for e in kernels),
            "gpu_ms_by_kind": {k: [round(v[0], 1), v[1]] for k, v in sorted(cats.items())},
            "top_kernels_ms": [[e.key[:70], round(e.self_device_time_total / 1e3, 1), e.count] for e in top],
            "top_host_ops_ms": [[e.key[:70], round(e.self_cpu_time_total / 1e3, 1), e.count] for e in top_host]}


def phase_times(module, params, opt, clip, batch, gen, repeats: int = 3) -> dict:
    """Median seconds of forward, backward and optimizer phases (synchronised)."""
    from ltx_lora.ltx.modality import predict_velocity
    from ltx_lora.train.objective import compute_loss, prepare_inputs

    fwd, bwd, opt_t = [], [], []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        inputs = prepare_inputs(batch, SigmaSampler(), gen, task=TaskConfig(), dtype=torch.bfloat16)
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            vp, ap = predict_velocity(module, inputs.video, inputs.audio)
        loss = compute_loss(vp, ap, inputs).total
        sync()
        t1 = time.perf_counter()
        loss.backward()
        sync()
        t2 = time.perf_counter()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        t3 = time.perf_counter()
        fwd.append(t1 - t0), bwd.append(t2 - t1), opt_t.append(t3 - t2)
    med = lambda xs: round(sorted(xs)[len(xs) // 2], 4)  # noqa: E731
    return {"forward_s": med(fwd), "backward_s": med(bwd), "optimizer_s": med(opt_t)}


def run_variant(variant: str, res, args, cfg: dict, matmul_tflops: float) -> dict:
    device = DEVICE
    if DEVICE.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = build_transformer_from_config(cfg, device=device, dtype=torch.bfloat16)
    tcfg = cfg["transformer"]
    dop = variant.endswith("_dop")  # train.output_preservation
    variant_model, clips = split_clips(variant.removesuffix("_dop"))  # ours_b2: batch of 2 clips
    batch, ta = make_batch(res, device, torch.bfloat16, tcfg, clips)
    if not variant.startswith("ref"):  # the trainer drops the all-ones mask the connectors produce
        batch = LatentBatch(**{**batch.__dict__, "context_mask": attention_mask_or_none(batch.context_mask)})
    module, params, opt, clip, graphs = build_variant(variant_model, model, args.rank)
    preservation = None
    if dop:  # a second text (the caption with the class word) of the same layout
        other, _ = make_batch(res, device, torch.bfloat16, tcfg, clips, seed=1)
        preservation = Preservation(other.video_context, other.audio_context,
                                    attention_mask_or_none(other.context_mask), 1.0)
        graphs = None  # the trainer runs output preservation without CUDA graphs
    if DEVICE.type == "cuda":  # the training peak, not the build's (an FP8 variant builds bf16 weights first)
        torch.cuda.reset_peak_memory_stats()
    from torch._dynamo.utils import counters

    counters.clear()
    gen = torch.Generator(device).manual_seed(1)
    times, loss, first_step_s = [], None, 0.0
    t_first = time.perf_counter()
    for step in range(args.warmup + args.steps):
        sync()
        t0 = time.perf_counter()
        loss = one_step(module, params, opt, clip, batch, gen, graphs, preservation)
        sync()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
        if step == 0:
            first_step_s = time.perf_counter() - t_first
    times.sort()
    med = times[len(times) // 2]
    vt = ((res[2] - 1) // 8 + 1) * (res[1] // 32) * (res[0] // 32)
    recomputed = 0 if variant_model == "ours_nockpt" else recomputed_blocks(variant_model)
    blocks = tcfg["num_layers"]  # 48 at full size, fewer with --tiny
    recomputed = blocks if recomputed is None else min(recomputed, blocks)
    flops = clips * (model_flops(tcfg, vt, ta, TEXT_LEN, recompute=False) * (1 + recomputed / blocks / 3))
    if dop:  # the step's work again, plus the LoRA-off forward (a third of a step without recompute)
        flops = 2 * flops + clips * model_flops(tcfg, vt, ta, TEXT_LEN, recompute=False) / 3
    out = {"variant": variant, "res": "x".join(map(str, res)), "audio_tokens": ta, "video_tokens": vt,
           "clips_per_step": clips, "recomputed_blocks": recomputed,
           "median_s": round(med, 4), "clips_per_s": round(clips / med, 3), "min_s": round(times[0], 4), "steps_timed": len(times),
           "first_step_s": round(first_step_s, 1),
           "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if DEVICE.type == "cuda" else None,
           "model_tflop_per_step": round(flops / 1e12, 1), "achieved_tflops": round(flops / med / 1e12, 1),
           "mfu_vs_matmul_ceiling": round(flops / med / 1e12 / matmul_tflops, 3), "loss": float(loss.detach()),
           "graph_breaks": sum(counters["graph_break"].values())}
    if graphs is not None:
        out["graphs"] = {"captures": graphs.captures, "replays": graphs.replays, "failed": graphs.failed}
    if DEVICE.type == "cuda":
        out["reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    if args.profile:
        if graphs is None:
            out["phases"] = phase_times(module, params, opt, clip, batch, gen)
        out["profile"] = gpu_busy_share(module, params, opt, clip, batch, gen, graphs)
    del model, module, opt, params, graphs
    gc.collect()
    torch.cuda.empty_cache()
    return out


def check_rows(args) -> list[str]:
    """The rows --check compares with ref (see the module docstring): --check-variants, else what --variants asks
    for: ours, and fp8 when an FP8-matmul variant is timed. ours and fp8w first (the others are compared with them)."""
    if args.check_variants:
        rows = list(dict.fromkeys(r.strip() for r in args.check_variants.split(",") if r.strip()))
    else:
        timed = [re.sub(r"_r\d+$", "", split_clips(v.removesuffix("_dop"))[0]) for v in variants_of(args)]
        fp8 = any((fp8_setup(v, DEVICE) or {}).get("granularity") for v in timed)
        rows = ["ours", "fp8"] if fp8 else ["ours"]
    for r in rows:
        try:
            known = r == "ours" or fp8_setup(f"ours_{r}", DEVICE) is not None
        except ValueError as e:
            raise SystemExit(f"--check-variants: {e}") from None
        if not known:
            raise SystemExit(f"--check-variants: {r!r} is not a row; rows are ours, fp8w, fp8, and fp8 followed by "
                             "any of _exact_fwd, _bf16_bwd, _tensor")
    return sorted(rows, key=lambda r: (r != "ours", r != "fp8w"))


def check_numerics(res, args, cfg: dict) -> dict:
    """ref vs each check row (check_rows) on identical weights, LoRA values and inputs: loss and LoRA-gradient
    relative error; every FP8 row also against fp8w (its matmuls' error alone) and ours (the bf16 step)."""
    device = DEVICE
    batch, _ = make_batch(res, device, torch.bfloat16, cfg["transformer"])
    gpu = DEVICE.type == "cuda"
    rows, graphed = check_rows(args), "_graphed" if gpu else ""
    variants = {"ref": None}  # variant -> its check row
    for r in rows:  # on a GPU an FP8 row is the compiled step replayed as a CUDA graph, as `ltx-lora train` runs it
        if r == "ours":
            variants.update({"ours": r, "ours_graphed": r} if gpu else {"ours": r})
        else:
            variants[f"ours_{r}{graphed}"] = r
    results = {}
    for variant, r in variants.items():
        model = build_transformer_from_config(cfg, device=device, dtype=torch.bfloat16)
        results[variant] = lora_gradients(variant, model, batch, args.rank, compiled=variant != "ref" and gpu)
        del model
        gc.collect()
        torch.cuda.empty_cache()
        if r is not None:  # progress, so a run cut short still tells what it measured
            loss, grads = results[variant]
            apart = [f"{relative_error(grads, results[v][1]):.2%} from {v}"
                     for v in ("ref", "ours", f"ours_fp8w{graphed}") if v in results and v != variant]
            print(f"check {variant}: loss {loss:.6g} ({abs(loss / results['ref'][0] - 1):.3%} from ref), LoRA "
                  f"gradients {', '.join(apart)}", file=sys.stderr, flush=True)
    ref_loss, ref_grads = results["ref"]
    row = {"check": "numerics", "res": "x".join(map(str, res)), "ref_loss": ref_loss, "rows": rows}
    ours = results.get("ours")
    if ours is not None:
        loss, grads = ours
        err = relative_error(grads, ref_grads)
        row.update(ours_loss=loss, loss_rel_diff=abs(loss - ref_loss) / abs(ref_loss), grad_rel_error=err,
                   passed=err < 2e-2)
    if "ours_graphed" in results:  # the replayed graph against the reference and against our eager-launched step
        g_loss, g_grads = results["ours_graphed"]
        g_err = relative_error(g_grads, ref_grads)
        row.update(graphed_loss=g_loss, graphed_grad_rel_error=g_err, passed=row["passed"] and g_err < 2e-2,
                   graphed_vs_ours_grad_rel_error=relative_error(g_grads, ours[1]))
    fp8w = next((results[v] for v, r in variants.items() if r == "fp8w"), None)
    for variant, r in variants.items():
        if r in (None, "ours"):
            continue
        f_loss, f_grads = results[variant]
        f_err = relative_error(f_grads, ref_grads)
        row.update({f"{r}_variant": variant, f"{r}_setup": fp8_setup(variant, DEVICE), f"{r}_loss": f_loss,
                    f"{r}_loss_rel_diff": abs(f_loss - ref_loss) / abs(ref_loss), f"{r}_grad_rel_error": f_err})
        if fp8w is not None and r != "fp8w":  # weights held equal: the error of the FP8 matmuls alone
            row[f"{r}_vs_fp8w_grad_rel_error"] = relative_error(f_grads, fp8w[1])
        if ours is not None:
            row[f"{r}_vs_ours_grad_rel_error"] = relative_error(f_grads, ours[1])
        row[f"{r}_passed"] = f_err < FP8_GRAD_TOLERANCE
    if len(rows) > (ours is not None):
        row["fp8_tolerance"] = FP8_GRAD_TOLERANCE
    return row


def variants_of(args) -> list[str]:
    """The timed variants (--variants; empty: none, a --check run alone)."""
    return [v.strip() for v in args.variants.split(",") if v.strip()]


def matmul_ceiling(fp8: bool = False) -> float:
    """TFLOP/s of an 8192^3 matmul: bf16 torch.mm, or (fp8) e4m3 torch._scaled_mm with per-tensor scales."""
    x = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    y = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    if fp8:
        x8, one = x.to(torch.float8_e4m3fn), torch.ones((), device="cuda")
        y8 = y.to(torch.float8_e4m3fn).t().contiguous().t()  # column-major, as _scaled_mm wants
        mm = lambda: torch._scaled_mm(x8, y8, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)  # noqa: E731
    else:
        mm = lambda: x @ y  # noqa: E731
    for _ in range(3):
        mm()
    sync()
    t0 = time.perf_counter()
    for _ in range(30):
        mm()
    sync()
    return 30 * 2 * 8192**3 / (time.perf_counter() - t0) / 1e12


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--res", default="960x544x49")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--variants", default="ref,ours", help="timed variants (empty: none)")
    ap.add_argument("--out", default="")
    ap.add_argument("--tiny", action="store_true", help="tiny model and text (a CPU smoke run of this script)")
    ap.add_argument("--check", action="store_true", help="compare loss and LoRA gradients of ref and ours")
    ap.add_argument("--check-variants", default="",
                    help="the rows --check compares with ref, e.g. fp8w,fp8,fp8_exact_fwd,fp8_bf16_bwd (default: ours, "
                         "and fp8 when an FP8 variant is timed)")
    ap.add_argument("--profile", action="store_true", help="GPU-busy share and top kernels of our step")
    args = ap.parse_args()
    global TEXT_LEN
    if args.tiny:
        from ltx_lora.fixtures.models import tiny_ltx23_config

        cfg, TEXT_LEN = tiny_ltx23_config(), 128
    else:
        cfg = ltx23_22b_config()
    ceiling = matmul_ceiling() if DEVICE.type == "cuda" else 1.0
    from importlib.metadata import version

    import ltx_core  # noqa: F401 - its version is part of the record

    header = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu", "torch": torch.__version__, "python": platform.python_version(),
              "ltx_core": version("ltx-core"), "peft": version("peft"),
              "bf16_matmul_tflops": round(ceiling, 1), "rank": args.rank, "text_len": TEXT_LEN}
    if DEVICE.type == "cuda" and "fp8" in args.variants:
        header["fp8_matmul_tflops"] = round(matmul_ceiling(fp8=True), 1)
    for v in variants_of(args):  # a misspelt FP8 option fails now, not after minutes of building models
        try:
            fp8_setup(re.sub(r"_r\d+$", "", split_clips(v)[0]), DEVICE)
        except ValueError as e:
            raise SystemExit(f"--variants: {e}") from None
    if args.check:
        check_rows(args)
    out = Path(args.out) if args.out else None
    if out is not None:
        out.write_text("")

    def emit(row: dict) -> None:  # each row as it comes (a run cut short keeps what it measured)
        print(json.dumps(row), flush=True)
        if out is not None:
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")

    emit(header)
    for res_s in args.res.split(","):
        res = tuple(int(x) for x in res_s.split("x"))
        got = {}
        if args.check:
            emit(check_numerics(res, args, cfg))
        for v in variants_of(args):
            try:
                row = run_variant(v, res, args, cfg, ceiling)
            except torch.OutOfMemoryError as e:
                row = {"variant": v, "res": res_s, "error": "OOM", "detail": str(e)[:160]}
                gc.collect()
                torch.cuda.empty_cache()
            got[v] = row
            emit(row)
        if "median_s" in got.get("ref", {}):
            ratio = {"res": res_s, **{f"ratio_ref_over_{v}": round(got["ref"]["median_s"] / got[v]["median_s"], 3)
                                      for v in got if v != "ref" and "median_s" in got[v]}}
            if len(ratio) > 1:
                emit(ratio)


if __name__ == "__main__":
    main()
