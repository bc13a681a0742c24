"""Time ltx-lora's LoRA training step against the official trainer's step, same run, same GPU.

Builds the full-size LTX-2.3 transformer (22B config, random bf16 weights: timing and memory do not depend on the
values) and times:
  ref   the step as the official trainer builds it (peft get_peft_model, bf16 autocast, whole-block gradient
        checkpointing, masked MSE, AdamW) -- re-implemented after ../shared/bench/ref_step.py
  ours  ltx-lora's step: the real objective (sigma sampling, first-frame conditioning, audio), LoRA injected in
        place, bf16 autocast, fused AdamW, gradient clipping
  ours_compiled  the same with every transformer block torch.compile'd
at each resolution given. Prints one JSON line per (variant, resolution) and writes them to --out.

Model FLOPs (analytic, per step): forward linears 2*T*(params touched) + attention 4*T*T_kv*D per attention,
backward 2x forward for activations (frozen base: no weight gradients except LoRA), plus one extra forward
for full recompute under checkpointing. MFU = model FLOPs / time / measured bf16 matmul ceiling.

python bench/train_step.py [--res 960x544x49,768x512x121,512x512x49] [--steps 10] [--warmup 3] [--variants ref,ours]
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ltx_lora.config import LoraConfig, TrainConfig  # noqa: E402
from ltx_lora.ltx.models import build_transformer_from_config, ltx23_22b_config  # noqa: E402
from ltx_lora.ltx.modality import Modality, audio_positions, video_positions  # noqa: E402
from ltx_lora.train.lora import inject_lora  # noqa: E402
from ltx_lora.train.objective import LatentBatch, compute_loss, prepare_inputs  # noqa: E402
from ltx_lora.train.optim import build_optimizer  # noqa: E402
from ltx_lora.train.timesteps import SigmaSampler  # noqa: E402

TEXT_LEN = 1024


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


def make_batch(res: tuple[int, int, int], device, dtype, tcfg: dict) -> tuple[LatentBatch, int]:
    w, h, f = res
    lf, lh, lw = (f - 1) // 8 + 1, h // 32, w // 32
    ta = round(f / 24.0 * 25)
    g = torch.Generator(device).manual_seed(0)
    video = torch.randn(1, 128, lf, lh, lw, generator=g, device=device, dtype=dtype)
    audio = torch.randn(1, 8, ta, 16, generator=g, device=device, dtype=dtype)
    vctx = torch.randn(1, TEXT_LEN, tcfg["cross_attention_dim"], generator=g, device=device, dtype=dtype)
    actx = torch.randn(1, TEXT_LEN, tcfg["audio_cross_attention_dim"], generator=g, device=device, dtype=dtype)
    mask = torch.ones(1, TEXT_LEN, device=device, dtype=torch.int64)
    return LatentBatch(video=video, audio=audio, video_context=vctx, audio_context=actx, context_mask=mask,
                       fps=24.0), ta


def run_variant(variant: str, res, args, cfg: dict, matmul_tflops: float) -> dict:
    device, dtype = torch.device("cuda"), torch.bfloat16
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model = build_transformer_from_config(cfg, device=device, dtype=dtype)
    tcfg = cfg["transformer"]
    batch, ta = make_batch(res, device, dtype, tcfg)
    gen = torch.Generator(device).manual_seed(1)
    sampler = SigmaSampler()
    if variant == "ref":
        from peft import LoraConfig as PeftLora, get_peft_model

        model.requires_grad_(False)
        model = get_peft_model(model, PeftLora(r=args.rank, lora_alpha=args.rank,
                                               target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
        base = model.get_base_model()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4)
    else:
        base = model
        params = inject_lora(model, LoraConfig(rank=args.rank), seed=0)
        opt = build_optimizer(params, TrainConfig())
        if variant == "ours_compiled":  # every block compiled (one graph reused by all 48)
            # ltx-core's block reads its index (a Python int) in the perturbation check; left static, every
            # block would be a new graph and dynamo gives up after 8.
            torch._dynamo.config.allow_unspec_int_on_nn_module = True
            for block in model.transformer_blocks:
                block.compile()
    base.set_gradient_checkpointing(True)
    base.train()
    times = []
    loss = None
    for step in range(args.warmup + args.steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        inputs = prepare_inputs(batch, sampler, gen, train_audio=True, first_frame_p=0.1, dtype=dtype)
        with torch.autocast("cuda", dtype=dtype):  # both: bf16 LoRA matmuls over fp32 master weights
            vp, ap = model(video=inputs.video, audio=inputs.audio, perturbations=None)
        loss = compute_loss(vp, ap, inputs).total
        loss.backward()
        if variant != "ref":
            torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    vt = ((res[2] - 1) // 8 + 1) * (res[1] // 32) * (res[0] // 32)
    flops = model_flops(tcfg, vt, ta, TEXT_LEN, recompute=True)
    out = {"variant": variant, "res": "x".join(map(str, res)), "audio_tokens": ta, "video_tokens": vt,
           "median_s": round(med, 4), "min_s": round(times[0], 4), "steps_timed": len(times),
           "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
           "model_tflop_per_step": round(flops / 1e12, 1), "achieved_tflops": round(flops / med / 1e12, 1),
           "mfu_vs_matmul_ceiling": round(flops / med / 1e12 / matmul_tflops, 3), "loss": float(loss)}
    del model, opt, params, base
    gc.collect()
    torch.cuda.empty_cache()
    return out


def matmul_ceiling() -> float:
    x = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    y = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        x @ y
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(30):
        x @ y
    torch.cuda.synchronize()
    return 30 * 2 * 8192**3 / (time.perf_counter() - t0) / 1e12


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--res", default="960x544x49")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--variants", default="ref,ours")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    cfg = ltx23_22b_config()
    ceiling = matmul_ceiling()
    header = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": torch.cuda.get_device_name(), "torch": torch.__version__, "python": platform.python_version(),
              "bf16_matmul_tflops": round(ceiling, 1), "rank": args.rank, "text_len": TEXT_LEN}
    print(json.dumps(header), flush=True)
    rows = [header]
    for res_s in args.res.split(","):
        res = tuple(int(x) for x in res_s.split("x"))
        got = {}
        for v in args.variants.split(","):
            try:
                row = run_variant(v, res, args, cfg, ceiling)
            except torch.OutOfMemoryError as e:
                row = {"variant": v, "res": res_s, "error": "OOM", "detail": str(e)[:160]}
                gc.collect()
                torch.cuda.empty_cache()
            got[v] = row
            rows.append(row)
            print(json.dumps(row), flush=True)
        if "median_s" in got.get("ref", {}) and "median_s" in got.get("ours", {}):
            ratio = {"res": res_s, "ratio_ref_over_ours": round(got["ref"]["median_s"] / got["ours"]["median_s"], 3)}
            rows.append(ratio)
            print(json.dumps(ratio), flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(json.dumps(r) for r in rows) + "\n")


if __name__ == "__main__":
    main()
