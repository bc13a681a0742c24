"""Step time and peak memory of the training options users compare trainers by, next to plain LoRA, same run.

Builds the full-size LTX-2.3 transformer (22B config, random bf16 weights: timing and memory do not depend on the
values) once per option and times our training step (`train/step.py`, blocks compiled on a GPU, whole-block
gradient checkpointing, gradient clipping) at one resolution:
  lora       plain LoRA, fused AdamW (the baseline)
  lokr       lora.variant lokr (peft LoKr's factors; train/lora.py applies kron(w1, w2) as two contractions)
  loha       lora.variant loha (peft LoHa's factors; applied as a rank r * r product where that is cheaper)
  ema        plain LoRA plus the EMA of the LoRA weights (train.ema, decay 0.999, on the GPU)
  ema_host   the same with train.ema.on_host
  adamw8bit  plain LoRA with bitsandbytes' 8-bit AdamW (the lowvram extra)
  adafactor  plain LoRA with transformers' Adafactor (factored second moments, no momentum)
  loraplus   plain LoRA with LoRA+ (train.loraplus_lr_ratio 4: lora_B in a second optimizer group)
(DoRA is not offered: ComfyUI does not apply it as peft trains it, see config.UNSUPPORTED_VARIANTS.)
Each row also carries the memory plan's estimate for that option (`runtime/memory.py`, without the text
connectors, which this bench does not load), to calibrate it against the measured peak (LoKr's / LoHa's activation
term, `Workload.adapter_activation_bytes`, is derived and waits for this bench's measurement).

Output: one JSON line per option (median/min s/step, peak GiB, trainable parameters, plan estimate) after a
header line; `--out` writes them to a JSONL file (bench/results/DATE_DEVICE_lora_options_RES.jsonl).
`--tiny` runs the script on CPU at tiny size (a smoke test; tests/test_lora_variants.py runs it).
`--graphs` replays the step as CUDA graphs where the trainer would (`train.cuda_graphs: auto`, train/graphed.py):
the eager step is host-bound (bench/README.md, #16), so an option that adds small operations per adapted layer
(LoKr, LoHa) pays for them in host time eagerly, and mostly not under graphs, which is how training runs them.

python bench/lora_options.py [--res 960x544x49] [--options lora,lokr,loha,ema,adamw8bit] [--steps 10]
                             [--warmup 3] [--rank 32] [--graphs] [--out bench/results/FILE.jsonl] [--tiny]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import train_step  # noqa: E402 - make_batch, one_step, sync: the same step and inputs as bench/train_step.py

from ltx_lora.config import parse_config  # noqa: E402
from ltx_lora.fixtures.models import build_transformer_from_config  # noqa: E402
from ltx_lora.ltx.fast import attention_mask_or_none, compile_blocks, use_sdpa_attention  # noqa: E402
from ltx_lora.ltx.sizes import ltx23_22b_config, transformer_size  # noqa: E402
from ltx_lora.runtime.memory import estimate, workload_for_config  # noqa: E402
from ltx_lora.train.ema import LoraEma  # noqa: E402
from ltx_lora.train.graphed import StepGraphs, can_graph  # noqa: E402
from ltx_lora.train.lora import inject_lora, lora_parameters  # noqa: E402
from ltx_lora.train.objective import LatentBatch  # noqa: E402
from ltx_lora.train.optim import build_optimizer  # noqa: E402

DEVICE = train_step.DEVICE
OPTIONS = {  # option -> the config sections it sets
    "lora": {},
    "lokr": {"lora": {"variant": "lokr"}},
    "loha": {"lora": {"variant": "loha"}},
    "ema": {"train": {"ema": {"decay": 0.999}}},
    "ema_host": {"train": {"ema": {"decay": 0.999, "on_host": True}}},
    "adamw8bit": {"train": {"optimizer": "adamw8bit"}},
    "adafactor": {"train": {"optimizer": "adafactor"}},
    "loraplus": {"train": {"loraplus_lr_ratio": 4.0}},
}


def option_config(option: str, res: str, rank: int):
    sections = OPTIONS[option]
    return parse_config({"lora": {"rank": rank, **sections.get("lora", {})}, "data": {"buckets": res},
                         "train": {**sections.get("train", {})}})


def run_option(option: str, res: tuple[int, int, int], args, model_cfg: dict) -> dict:
    cfg = option_config(option, "x".join(map(str, res)), args.rank)
    if DEVICE.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = build_transformer_from_config(model_cfg, device=DEVICE, dtype=torch.bfloat16)
    batch, _ = train_step.make_batch(res, DEVICE, torch.bfloat16, model_cfg["transformer"])
    batch = LatentBatch(**{**batch.__dict__, "context_mask": attention_mask_or_none(batch.context_mask)})
    inject_lora(model, cfg.lora, seed=0)
    use_sdpa_attention(model)
    if DEVICE.type == "cuda":
        compile_blocks(model)
    model.set_gradient_checkpointing(True)
    model.train()
    named = lora_parameters(model)
    params = list(named.values())
    opt = build_optimizer(named, cfg.train)
    ema = (LoraEma(named, cfg.train.ema.decay, on_host=cfg.train.ema.on_host, start_step=cfg.train.ema.start_step)
           if cfg.train.ema.enabled else None)
    gen = torch.Generator(DEVICE).manual_seed(1)
    why = can_graph(model, DEVICE, distributed=False, dropout=cfg.lora.dropout) if args.graphs else "not asked"
    graphs = None if why else StepGraphs(model, params, torch.bfloat16)
    times, loss = [], None
    for step in range(args.warmup + args.steps):
        train_step.sync()
        t0 = time.perf_counter()
        loss = train_step.one_step(model, params, opt, True, batch, gen, graphs)
        if ema is not None:
            ema.update(step + 1)
        train_step.sync()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    size = transformer_size(model_cfg)
    parts = estimate(size, workload_for_config(cfg, size), "none", 0)
    out = {"option": option, "res": "x".join(map(str, res)), "rank": args.rank,
           "trainable_params": sum(p.numel() for p in params),
           "median_s": round(times[len(times) // 2], 4), "min_s": round(times[0], 4), "steps_timed": len(times),
           "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if DEVICE.type == "cuda" else None,
           "plan_estimate_gib": round(sum(v for k, v in parts.items() if k != "text connectors"), 2),
           "plan_parts_gib": {k: round(v, 2) for k, v in parts.items()}, "loss": float(loss.detach()),
           "graphs": ({"captures": graphs.captures, "replays": graphs.replays, "failed": graphs.failed}
                      if graphs is not None else {"off": why})}
    if graphs is not None:
        graphs.release()
    del model, opt, params, named, ema, graphs
    gc.collect()
    if DEVICE.type == "cuda":
        torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--res", default="960x544x49")
    ap.add_argument("--options", default="lora,lokr,loha,ema,adamw8bit")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--graphs", action="store_true", help="replay the step as CUDA graphs where training would")
    ap.add_argument("--out", default="")
    ap.add_argument("--tiny", action="store_true", help="tiny model and text on CPU (a smoke run of this script)")
    args = ap.parse_args(argv)
    if args.tiny:
        from ltx_lora.fixtures.models import tiny_ltx23_config

        model_cfg, train_step.TEXT_LEN = tiny_ltx23_config(), 128
    else:
        model_cfg = ltx23_22b_config()
    from importlib.metadata import PackageNotFoundError, version

    def maybe(pkg: str) -> str | None:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return None

    header = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu", "torch": torch.__version__,
              "python": platform.python_version(), "ltx_core": version("ltx-core"), "peft": version("peft"),
              "bitsandbytes": maybe("bitsandbytes"), "tiny": args.tiny, "text_len": train_step.TEXT_LEN}
    print(json.dumps(header), flush=True)
    rows = [header]
    res = tuple(int(x) for x in args.res.split("x"))
    for option in args.options.split(","):
        if option not in OPTIONS:
            raise SystemExit(f"unknown option {option!r}; choose from {', '.join(OPTIONS)}")
        try:
            row = run_option(option, res, args, model_cfg)
        except torch.OutOfMemoryError as e:
            row = {"option": option, "res": args.res, "error": "OOM", "detail": str(e)[:160]}
        except Exception as e:  # noqa: BLE001 - one option failing (e.g. bitsandbytes missing) is a result too
            row = {"option": option, "res": args.res, "error": type(e).__name__, "detail": str(e)[:300]}
        gc.collect()
        if DEVICE.type == "cuda":
            torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return rows


if __name__ == "__main__":
    main()
