"""Low-VRAM tiers: ltx-lora's training step under a per-process GPU memory cap of 48, 32 and 24 GiB, beside the
uncapped step, in one run on one GPU.

Each variant runs in its own subprocess (a fresh CUDA allocator and cap) that:
  1. caps the caching allocator with `torch.cuda.set_per_process_memory_fraction(cap / total)` (the CUDA
     context is outside the cap);
  2. asks the memory plan (ltx_lora.runtime.memory.choose_plan, the function `ltx-lora train` uses) for the plan at
     that budget, the full-size LTX-2.3 22B transformer and the bucket;
  3. builds that transformer and its text connectors with random weights as the plan says (bf16 or 1-byte base
     quantized block by block on the GPU, swapped blocks in pinned host memory, connectors on host if planned);
  4. trains as `ltx-lora train` does: LoRA injected in place, block swap attached, SDPA attention, every block
     torch.compile'd (`--compile auto`: on a GPU; a compile failure falls back to eager and is recorded), connectors
     run without gradients every step, the shared step (train/step.py: sigma sampling, first-frame conditioning,
     audio, bf16 autocast), gradient clipping, AdamW;
  5. prints one JSON line: the plan, its expected peak, the measured peak (allocated and reserved), median and
     min s/step after warm-up, host-to-device block loads per step.
The parent adds the ratio of each variant's median to the uncapped one and checks the issue's targets
(every tier trains; 32 GiB within 1.5x, 24 GiB within 3x of uncapped), and writes all lines to --out.

Int8 backends at the 32 GiB tier (no block swap; `--int8-backends`): `ours` (ltx_lora QuantizedLinear, per-channel
int8 dequantised per matmul), `torchao` (Int8WeightOnlyConfig) and `quanto` (optimum-quanto qint8, as the official
trainer), each with peft LoRA on top; a backend whose package is missing gives an error row. `fp8` runs the
32 GiB tier with the FP8 base instead.

GPU:  python bench/memory_tiers.py --tiers uncapped,32,24   (at most three variants per command: see bench/README.md)
CPU:  python bench/memory_tiers.py --tiny   (tiny model, no cap; tiers force the formats so every path runs)
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

TEXT_LEN = 1024
GIB = 2**30
TARGETS = {"32": 1.5, "24": 3.0}  # max ratio of median s/step to the uncapped one
TINY_FORCED = {"48": ("none", 0), "32": ("int8", 0), "24": ("int8", 1)}  # --tiny: (quantization, blocks swapped)


def _child(args: argparse.Namespace) -> dict:
    import torch

    from ltx_lora.bucket_spec import latent_tokens
    from ltx_lora.config import LoraConfig, TrainConfig
    from ltx_lora.files.text_features import PaddedText
    from ltx_lora.fixtures.models import (
        build_text_connectors_from_config,
        build_transformer_from_config,
        tiny_ltx23_config,
    )
    from ltx_lora.ltx.fast import (
        attention_mask_or_none,
        can_compile,
        compile_blocks,
        set_recomputed_blocks,
        uncompile_blocks,
        use_sdpa_attention,
    )
    from ltx_lora.ltx.sizes import ltx23_22b_config, transformer_size
    from ltx_lora.ltx.text import run_text_connectors
    from ltx_lora.runtime.memory import Workload, choose_plan, device_budget
    from ltx_lora.runtime.placement import HostOffload, attach_block_swap
    from ltx_lora.task import TaskConfig
    from ltx_lora.train.graphed import StepGraphs, can_graph
    from ltx_lora.train.lora import inject_lora
    from ltx_lora.train.objective import LatentBatch
    from ltx_lora.train.optim import build_optimizer
    from ltx_lora.train.step import forward_backward
    from ltx_lora.train.timesteps import SigmaSampler

    cuda = torch.cuda.is_available() and not args.tiny
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    dtype = torch.bfloat16
    tier = args.child
    cap = None if tier == "uncapped" else float(tier)
    if cuda and cap is not None:
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(cap * GIB / total, device)
    cfg = tiny_ltx23_config() if args.tiny else ltx23_22b_config()
    size = transformer_size(cfg)
    w, h, f = (int(x) for x in args.res.split("x"))
    audio_frames = round(f / 24.0 * 25)
    work = Workload(video_tokens=latent_tokens(w, h, f), audio_tokens=audio_frames, rank=args.rank,
                    lora_per_rank=size.lora_elements_per_rank(LoraConfig().targets), optimizer="adamw")
    backend = args.backend
    quant, swap = "auto", "auto"
    if backend in ("ours", "torchao", "quanto"):
        quant, swap = "int8", 0
    elif backend == "bf16":  # the bf16 base forced at this cap: does it fit where the plan chose otherwise?
        quant, swap = "none", 0
    elif backend == "fp8":
        quant, swap = "fp8", 0
    if args.tiny and tier in TINY_FORCED and backend == "plan":
        quant, swap = TINY_FORCED[tier]
    if cap is not None:
        budget, source = cap, f"per-process cap {cap:g} GiB"
    else:
        budget, source = device_budget(device)
    plan = choose_plan(None if args.tiny else budget, source, size, work, quant, swap)
    row = {"tier": tier, "backend": backend, "cap_gib": cap, "plan": plan.describe(),
           "quantization": plan.quantization, "blocks_swapped": len(plan.swapped_blocks), "rank": plan.rank,
           "text_connectors_on_host": plan.text_connectors_on_host, "expected_peak_gib": plan.expected_peak_gib}
    print(plan.describe(), file=sys.stderr, flush=True)

    t_build = time.perf_counter()
    base_quant = plan.quantization if backend not in ("torchao", "quanto") else "none"
    host = frozenset(plan.swapped_blocks)
    if backend in ("torchao", "quanto"):  # bf16 blocks parked on the host, then quantized one by one on the GPU
        host = frozenset(range(size.blocks))
    model = build_transformer_from_config(cfg, device=device, dtype=dtype, quantization=base_quant, host_blocks=host)
    if backend in ("torchao", "quanto"):
        _quantize_other(model, backend, device)
    connectors = build_text_connectors_from_config(cfg, device="cpu" if plan.text_connectors_on_host else device,
                                                   dtype=dtype)
    params = inject_lora(model, LoraConfig(rank=plan.rank), seed=0)
    swapper = attach_block_swap(model, list(plan.swapped_blocks), device)
    offload = HostOffload(connectors, device) if plan.text_connectors_on_host else None
    opt = build_optimizer(params, TrainConfig())
    model.set_gradient_checkpointing(True)
    set_recomputed_blocks(model, plan.blocks - plan.kept_blocks if plan.kept_blocks else None)
    row["kept_blocks"] = plan.kept_blocks
    use_sdpa_attention(model)
    compiled = args.compile == "on" or (args.compile == "auto" and can_compile(device)[0])
    if compiled:
        compile_blocks(model)
    model.train()
    row["build_s"] = round(time.perf_counter() - t_build, 1)
    graphs = None
    if args.graphs != "off" and cuda:  # as `ltx-lora train` (train.cuda_graphs): one process
        why = can_graph(model, device, distributed=False)
        graphs = StepGraphs(model, params, dtype, swap=swapper) if not why else None
        row["graphs_off"] = why

    g = torch.Generator(device).manual_seed(0)
    lf, lh, lw = (f - 1) // 8 + 1, h // 32, w // 32
    video = torch.randn(1, 128, lf, lh, lw, generator=g, device=device, dtype=dtype)
    audio = torch.randn(1, 8, audio_frames, 16, generator=g, device=device, dtype=dtype)
    text_len = 256 if args.tiny else TEXT_LEN
    text = PaddedText(video=torch.randn(text_len, size.video_dim, generator=g, device=device, dtype=dtype),
                      audio=torch.randn(text_len, size.audio_dim, generator=g, device=device, dtype=dtype),
                      mask=torch.ones(text_len, dtype=torch.int64, device=device))
    sampler = SigmaSampler()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, loss, loads = [], None, []
    for step in range(args.warmup + args.steps):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loads0 = swapper.loads if swapper else 0
        with torch.no_grad(), (offload.on_device() if offload else _null()):
            vctx, actx, mask = run_text_connectors(connectors, text)
        batch = LatentBatch(video=video, audio=audio, video_context=vctx, audio_context=actx,
                            context_mask=attention_mask_or_none(mask), fps=24.0)
        state = g.get_state()
        try:
            loss = forward_backward(model, batch, sampler, g, task=TaskConfig(), dtype=dtype,
                                    graphs=graphs).total
        except torch.OutOfMemoryError:
            raise
        except Exception as e:  # noqa: BLE001 - as the trainer: a compile failure falls back to eager
            if not compiled or step:
                raise
            row["compile_error"] = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"
            uncompile_blocks(model)
            compiled = False
            opt.zero_grad(set_to_none=True)
            g.set_state(state)
            loss = forward_backward(model, batch, sampler, g, task=TaskConfig(), dtype=dtype).total
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
            loads.append((swapper.loads if swapper else 0) - loads0)
    times.sort()
    row.update(compiled=compiled, median_s=round(times[len(times) // 2], 4), min_s=round(times[0], 4),
               steps_timed=len(times),
               loss=loss.item(), block_loads_per_step=max(loads) if loads else 0)
    if graphs is not None:
        row.update(graph_captures=graphs.captures, graph_replays=graphs.replays, graphs_failed=graphs.failed)
    if cuda:
        row.update(peak_allocated_gib=round(torch.cuda.max_memory_allocated() / GIB, 2),
                   peak_reserved_gib=round(torch.cuda.max_memory_reserved() / GIB, 2))
    return row


def _null():
    import contextlib

    return contextlib.nullcontext()


def _quantize_other(model, backend: str, device) -> None:
    """int8 weight-only through torchao or optimum-quanto on the same 28 linears per block as ours, block by block
    (each bf16 block comes from the host, is quantized on the GPU and stays there)."""
    import torch

    from ltx_lora.ltx.quantize import QUANTIZED_SUFFIXES

    for block in model.transformer_blocks:
        block.to(device)
        if backend == "torchao":
            from torchao.quantization import Int8WeightOnlyConfig, quantize_

            quantize_(block, Int8WeightOnlyConfig(),
                      filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and fqn in QUANTIZED_SUFFIXES)
        else:
            from optimum.quanto import freeze, qint8, quantize

            quantize(block, weights=qint8, include=list(QUANTIZED_SUFFIXES))
            freeze(block)
        torch.cuda.empty_cache()


def _run_child(tier: str, backend: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", tier, "--backend", backend, "--res", args.res, "--rank",
           str(args.rank), "--steps", str(args.steps), "--warmup", str(args.warmup), "--compile", args.compile]
    cmd += ["--tiny"] if args.tiny else []
    cmd += ["--graphs", args.graphs]
    t0 = time.perf_counter()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"tier": tier, "backend": backend, "error": f"timeout after {args.timeout} s"}
    sys.stderr.write(res.stderr[-3000:])
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        tail = res.stderr.strip().splitlines()
        err = next((ln for ln in reversed(tail) if "Error" in ln or "error" in ln), tail[-1] if tail else "?")
        return {"tier": tier, "backend": backend, "error": err[:300], "wall_s": round(time.perf_counter() - t0, 1)}
    row = json.loads(lines[-1])
    row["wall_s"] = round(time.perf_counter() - t0, 1)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiers", default="uncapped,48,32,24", help="uncapped and/or caps in GiB")
    ap.add_argument("--int8-backends", default="", help="extra 32 GiB runs: ours,torchao,quanto,fp8")
    ap.add_argument("--res", default="960x544x49")
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--timeout", type=int, default=280, help="seconds per variant")
    ap.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                    help="torch.compile the blocks as `ltx-lora train` does (auto: on a GPU)")
    ap.add_argument("--graphs", default="auto", choices=["auto", "on", "off"],
                    help="the step as CUDA graphs as train.cuda_graphs (auto and on: where `ltx-lora train` uses "
                         "them, block swap included), or never (off)")
    ap.add_argument("--bf16-tiers", default="", help="extra runs at these caps with the bf16 base forced, e.g. 48")
    ap.add_argument("--tiny", action="store_true", help="tiny model on CPU (checks the code paths, no timings)")
    ap.add_argument("--out", default="")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--backend", default="plan", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.tiny:
        args.res = "64x64x9" if args.res == "960x544x49" else args.res
    if args.child:
        print(json.dumps(_child(args)), flush=True)
        return

    import torch

    cuda = torch.cuda.is_available() and not args.tiny
    header = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": torch.cuda.get_device_name() if cuda else "cpu (--tiny)", "torch": torch.__version__,
              "python": platform.python_version(), "res": args.res, "rank": args.rank, "steps": args.steps,
              "warmup": args.warmup, "compile": args.compile, "text_len": TEXT_LEN if not args.tiny else 256}
    for mod in ("torchao", "optimum.quanto", "bitsandbytes", "peft"):
        try:
            header[mod] = getattr(__import__(mod, fromlist=["_"]), "__version__", "present")
        except Exception:  # noqa: BLE001
            header[mod] = None
    print(json.dumps(header), flush=True)
    rows = [header]
    runs = [(t, "plan") for t in args.tiers.split(",") if t]
    runs += [("32", b) for b in args.int8_backends.split(",") if b]
    runs += [(t, "bf16") for t in args.bf16_tiers.split(",") if t]
    for tier, backend in runs:
        row = _run_child(tier, backend, args)
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = next((r for r in rows[1:] if r.get("tier") == "uncapped" and "median_s" in r), None)
    summary: dict = {"summary": True, "every_tier_trains": all("median_s" in r for r in rows[1:])}
    if base and not args.tiny:  # tiny CPU timings say nothing about the targets
        for r in rows[1:]:
            if "median_s" in r and r is not base:
                r["ratio_to_uncapped"] = round(r["median_s"] / base["median_s"], 3)
                if r["backend"] == "plan" and r["tier"] in TARGETS:
                    summary[f"target_{r['tier']}gib_within_{TARGETS[r['tier']]}x"] = \
                        r["ratio_to_uncapped"] <= TARGETS[r["tier"]]
    rows.append(summary)
    print(json.dumps(summary), flush=True)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        tmp.replace(out)


if __name__ == "__main__":
    main()
