"""Several-GPU LoRA training: 1 GPU vs DDP vs FSDP2 on the full-size LTX-2.3 transformer, in one torchrun run.

Builds the 22B transformer (random bf16 weights: time and memory do not depend on the values), injects the rank-32
LoRA as `ltx-lora train` does, and times ltx-lora's training step (the real objective with audio and first-frame
conditioning, bf16 autocast, full gradient checkpointing, blocks compiled, clipping, fused AdamW) per variant:

  single  rank 0 alone, the plain model (the other ranks wait): the 1-GPU reference of this very machine
  ddp     every rank, `ltx_lora.distributed.parallel.wrap(..., "ddp")`: whole base per GPU, LoRA grads all-reduced
  fsdp    every rank, `wrap(..., "fsdp")`: FSDP2 fully_shard per block + root, base stays bf16, 1/N per GPU

Each GPU trains one clip per step (960x544x49 + its audio by default), so N GPUs process N clips per step; scaling
efficiency = s/step(single) / s/step(N GPUs) (1.0 = perfect). Peak memory is reported per GPU (max allocated over
the timed steps, weights included). The model is built on each GPU and then wrapped (FSDP2 frees the unsharded
copy); `ltx-lora train` instead builds it in host memory for FSDP so that no GPU ever holds the whole base.

On the 2 x H200 machine (NVLink multicast stays off; the script forces NCCL_NVLS_ENABLE=0 and friends):

    torchrun --standalone --nproc-per-node 2 bench/multi_gpu.py --out bench/results/DATE_h200x2_multi_gpu.jsonl

On CPU with gloo and the tiny model (a check that the bench itself runs): add `--tiny`. If compiling the blocks
fails under a strategy, rerun with `--compile off` (and say so with the results).
"""

from __future__ import annotations

import os
import sys

if "--tiny" in sys.argv:  # the tiny check runs on CPU processes (gloo) even where GPUs exist
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
# NVLink multicast off, always: on the shared H200 hosts a program using it can take the GPUs out of service.
os.environ.update(NCCL_NVLS_ENABLE="0", TORCH_SYMM_MEM_DISABLE_MULTICAST="1", NVSHMEM_DISABLE_NVLS="1")

import argparse
import datetime
import gc
import json
import platform
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference_step import our_model
from train_step import make_batch

from ltx_lora.config import TrainConfig
from ltx_lora.distributed import parallel
from ltx_lora.distributed.env import DistEnv, process_group
from ltx_lora.fixtures.models import build_transformer_from_config, tiny_ltx23_config
from ltx_lora.ltx.fast import attention_mask_or_none
from ltx_lora.ltx.sizes import ltx23_22b_config
from ltx_lora.task import TaskConfig
from ltx_lora.train.lora import lora_parameters
from ltx_lora.train.optim import build_optimizer
from ltx_lora.train.step import forward_backward
from ltx_lora.train.timesteps import SigmaSampler


def _gib(x: int | None) -> float | None:
    return None if x is None else round(x / 2**30, 2)  # None on CPU


def run_variant(variant: str, env: DistEnv, cfg: dict, res, args, device, dtype) -> dict | None:
    """Time one variant; every rank calls it (for `single` only rank 0 works). The result on rank 0."""
    works = env.is_main or variant != "single"
    row = None
    if works:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        # FSDP on GPU builds on the GPU and shards: the bench measures training, not loading.
        model = build_transformer_from_config(cfg, device=device, dtype=dtype, seed=0)
        # the trainer's fast path: LoRA in place, SDPA attention, blocks compiled (GPU, unless --compile off)
        our_model(model, args.rank, compiled=device.type == "cuda" and args.compile == "on")
        solo = DistEnv() if variant == "single" else env
        forward = parallel.wrap(model, "ddp" if variant == "single" else variant, solo, dtype,
                                some_lora_may_idle=False)  # every clip has audio: every LoRA layer trains
        params = list(lora_parameters(model).values())
        opt = build_optimizer(params, TrainConfig())
        batch, audio_tokens = make_batch(res, device, dtype, cfg["transformer"])
        batch.context_mask = attention_mask_or_none(batch.context_mask)  # as the trainer passes it
        gen = torch.Generator(device).manual_seed(1)
        sampler = SigmaSampler()
        weights = torch.cuda.memory_allocated() if device.type == "cuda" else None
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times, loss = [], None
        for step in range(args.warmup + args.steps):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            loss = forward_backward(forward, batch, sampler, gen, task=TaskConfig(), dtype=dtype,
                                    rows=(solo.rank, solo.world_size)).total  # each GPU its own noise
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if step >= args.warmup:
                times.append(time.perf_counter() - t0)
        times.sort()
        peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
        row = {"variant": variant, "gpus": solo.world_size, "res": "x".join(map(str, res)),
               "audio_tokens": audio_tokens, "median_s": round(times[len(times) // 2], 4), "min_s": round(times[0], 4),
               "steps_timed": len(times), "weights_gib": _gib(weights), "peak_gib": _gib(peak), "loss": loss.item()}
        del forward, model, opt, params, batch
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    per_rank = env.gather_json(row)  # everyone meets here (the others waited for `single`)
    if not env.is_main:
        return None
    ranks = [r for r in per_rank if r is not None]
    out = dict(ranks[0])
    out["median_s"] = max(r["median_s"] for r in ranks)  # a step ends when the slowest GPU is done
    out["peak_gib_per_gpu"] = [r["peak_gib"] for r in ranks]
    out["weights_gib_per_gpu"] = [r["weights_gib"] for r in ranks]
    out["clips_per_s"] = round(out["gpus"] / out["median_s"], 4)
    del out["peak_gib"], out["weights_gib"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--res", default="960x544x49", help="WxHxF of the clip each GPU trains per step.")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--variants", default="single,ddp,fsdp")
    ap.add_argument("--compile", choices=("on", "off"), default="on", help="Compile the blocks (GPU), as training does.")
    ap.add_argument("--tiny", action="store_true", help="Tiny model on CPU processes (gloo): checks the bench runs.")
    ap.add_argument("--out", default="", help="JSONL file for the results (rank 0 writes it).")
    args = ap.parse_args()
    if args.tiny:
        args.res = "64x64x9" if args.res == "960x544x49" else args.res
    cfg = tiny_ltx23_config() if args.tiny else ltx23_22b_config()
    res = tuple(int(x) for x in args.res.split("x"))
    with process_group() as env:
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        header = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                  "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                  "gpus": env.world_size, "torch": torch.__version__, "python": platform.python_version(),
                  "nccl": ".".join(map(str, torch.cuda.nccl.version())) if device.type == "cuda" else None,
                  "model": "tiny" if args.tiny else "ltx-2.3-22b (random bf16)", "lora_rank": args.rank,
                  "clips_per_gpu_per_step": 1, "NCCL_NVLS_ENABLE": os.environ["NCCL_NVLS_ENABLE"]}
        rows = [header]
        if env.is_main:
            print(json.dumps(header), flush=True)
        single = None
        for variant in args.variants.split(","):
            row = run_variant(variant, env, cfg, res, args, device, dtype)
            if row is None:
                continue
            if variant == "single":
                single = row
            elif single is not None:
                row["scaling_efficiency"] = round(single["median_s"] / row["median_s"], 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
        if env.is_main and args.out:
            Path(args.out).write_text("\n".join(json.dumps(r) for r in rows) + "\n")


if __name__ == "__main__":
    main()
