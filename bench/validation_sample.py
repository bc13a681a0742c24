"""Time one validation sample as ltx-lora makes it: full-size LTX-2.3 transformer (22B config, random bf16 weights:
timing and memory do not depend on the values), full-size VAE decoder, audio decoder and vocoder, at 960x544x49
with audio, 30 steps of CFG + STG (+ modality guidance), as `ltx-lora validate` / in-loop validation runs it:

  sampling   ltx_lora.ltx.sampling.sample_latents: the transformer passes of every step (cond, negative, STG,
             modality-isolated: 4 per step with the defaults), bf16 autocast
  decode     video VAE decode (tiled as the pipelines tile above 512 px) + audio decoder + vocoder (48 kHz)
  media      mp4 (H.264 + AAC) and contact sheet, as written into samples/

Variants, all in one process on one model (one JSON line each, key "variant"):

  sequential_eager  the passes one at a time at batch 1, eager blocks (the sampler before batching: the "before")
  batched_eager     a step's passes as one batch of one forward, eager blocks
  batched_compiled  the same with the blocks compiled (ltx_lora.ltx.fast.sampling_blocks: inductor on a GPU,
                    aot_eager with --tiny), as validation.compile samples

Each variant first samples 2 steps untimed (CUDA warm-up; for the compiled variant this is where the blocks compile:
`seconds_compile` is that warm-up's time minus the eager batched warm-up's), then the timed sample at --steps;
`compiled_graphs_timed` counts the graphs dynamo compiled during the timed sample (0: no recompile across steps),
`max_abs_diff` is the largest difference of the latents from the first variant's. Appends each line to --out as
its variant finishes (default bench/results/DATE_DEVICE_validation_sample_RES.jsonl on a GPU). `--tiny` runs every
variant on the tiny test config on CPU (a check that the bench works, not a measurement; tests/test_sampler.py
runs it).

python bench/validation_sample.py [--res 960x544x49] [--steps 30] [--cfg 4.0 --stg 1.0 --modality 3.0]
    [--variants sequential_eager,batched_eager,batched_compiled]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import platform
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import torch
from torch._dynamo.utils import counters

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ltx_lora.fixtures.models import (
    build_decoders_from_config,
    build_transformer_from_config,
    ltx23_release_decoders_config,
    tiny_ltx23_config,
)
from ltx_lora.ltx.fast import sampling_blocks, use_sdpa_attention
from ltx_lora.ltx.sampling import (
    Guidance,
    Prompt,
    SampleRequest,
    decode_audio,
    decode_video,
    sample_latents,
    sigma_schedule,
)
from ltx_lora.ltx.sizes import ltx23_22b_config
from ltx_lora.sample.media import write_contact_sheet, write_mp4

TEXT_LEN = 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prompt(tcfg: dict, device, dtype, seed: int) -> Prompt:
    g = torch.Generator(device).manual_seed(seed)
    return Prompt(torch.randn(1, TEXT_LEN, tcfg["cross_attention_dim"], generator=g, device=device, dtype=dtype),
                  torch.randn(1, TEXT_LEN, tcfg["audio_cross_attention_dim"], generator=g, device=device, dtype=dtype),
                  torch.ones(1, TEXT_LEN, device=device, dtype=torch.int64))


VARIANTS = ("sequential_eager", "batched_eager", "batched_compiled")


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--res", default=None, help="WxHxF (default 960x544x49; 64x64x17 with --tiny)")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default 30; 3 with --tiny)")
    ap.add_argument("--cfg", type=float, default=4.0)
    ap.add_argument("--audio-cfg", type=float, default=7.0)
    ap.add_argument("--stg", type=float, default=1.0)
    ap.add_argument("--stg-block", type=int, default=29)
    ap.add_argument("--modality", type=float, default=3.0, help="modality guidance scale (1.0 = off: 3 passes)")
    ap.add_argument("--rescale", type=float, default=0.7)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of " + ", ".join(VARIANTS))
    ap.add_argument("--tiny", action="store_true", help="tiny config on CPU: checks the bench runs")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    args.res = args.res or ("64x64x17" if args.tiny else "960x544x49")
    args.steps = args.steps or (3 if args.tiny else 30)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        ap.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")

    if args.tiny:
        device, dtype = torch.device("cpu"), torch.float32
        cfg = tiny_ltx23_config()
        cfg["transformer"]["num_layers"] = 3  # blocks before and after the STG block (2): their graph is shared
        stg_block = min(args.stg_block, cfg["transformer"]["num_layers"] - 1)
    else:
        device, dtype = torch.device("cuda"), torch.bfloat16
        cfg = ltx23_22b_config()
        cfg.update({k: v for k, v in ltx23_release_decoders_config().items() if k != "transformer"})
        stg_block = args.stg_block
    w, h, f = (int(x) for x in args.res.split("x"))
    t_build = time.perf_counter()
    transformer = build_transformer_from_config(cfg, device=device, dtype=dtype).eval()
    use_sdpa_attention(transformer)  # as validation samples (the trainer and `validate` set it)
    decoders = build_decoders_from_config(cfg, device=device, dtype=dtype)
    sync(device)
    build_s = time.perf_counter() - t_build
    tcfg = cfg["transformer"]
    pos, neg = prompt(tcfg, device, dtype, 1), prompt(tcfg, device, dtype, 2)

    def request(steps: int) -> SampleRequest:
        v = Guidance(args.cfg, args.stg, [stg_block], args.rescale, args.modality)
        a = Guidance(args.audio_cfg, args.stg, [stg_block], args.rescale, args.modality)
        return SampleRequest(width=w, height=h, frames=f, fps=24.0, seed=42, sigmas=sigma_schedule(steps),
                             video_guidance=v, audio_guidance=a, with_audio=True)

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)
    backend = "inductor" if device.type == "cuda" else "aot_eager"
    out = args.out
    if not out and not args.tiny:
        name = torch.cuda.get_device_name(device).lower().replace("nvidia ", "").split()[0]
        day = datetime.datetime.now(datetime.UTC).date().isoformat()
        out = str(Path(__file__).parent / "results" / f"{day}_{name}_validation_sample_{args.res}.jsonl")
    rows: list[dict] = []
    first: tuple[torch.Tensor, torch.Tensor] | None = None
    warmups: dict[str, float] = {}
    for variant in variants:
        batched, compiled = variant != "sequential_eager", variant == "batched_compiled"
        with sampling_blocks(transformer, compiled, backend=backend):
            def sample(steps: int, on_step=None):
                with autocast:
                    return sample_latents(transformer, request(steps), pos, neg, device=device, dtype=dtype,
                                          on_step=on_step, batched=batched)

            counters.clear()
            t_warm = time.perf_counter()
            sample(2)  # warm-up: CUDA context, kernels, allocator; the compiled variant compiles here
            sync(device)
            warmups[variant] = time.perf_counter() - t_warm
            graphs_warmup = counters["stats"]["unique_graphs"]
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            step_times: list[float] = []
            last = [time.perf_counter()]

            def on_step(_: int) -> None:
                sync(device)
                now = time.perf_counter()
                step_times.append(now - last[0])
                last[0] = now

            t0 = last[0] = time.perf_counter()
            video_lat, audio_lat = sample(args.steps, on_step)
            sync(device)
            t1 = time.perf_counter()
            graphs_timed = counters["stats"]["unique_graphs"] - graphs_warmup
        peak = round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None
        frames = decode_video(decoders["video"], video_lat, seed=42)
        sync(device)
        t2 = time.perf_counter()
        wave, rate = decode_audio(decoders["audio"], decoders["vocoder"], audio_lat)
        sync(device)
        t3 = time.perf_counter()
        media = importlib.util.find_spec("av") is not None  # PyAV writes the mp4; a bare GPU image may lack it
        with tempfile.TemporaryDirectory() as tmp:
            if media:
                write_mp4(Path(tmp) / "p0.mp4", frames, 24.0, wave.clamp(-1, 1), rate)
            write_contact_sheet(Path(tmp) / "p0.png", frames, wave, fps=24.0)
        t4 = time.perf_counter()
        if first is None:
            first = (video_lat, audio_lat)
        diff = max((a.float() - b.float()).abs().max().item() for a, b in zip(first, (video_lat, audio_lat),
                                                                              strict=True))
        passes = 1 + (args.cfg != 1.0 or args.audio_cfg != 1.0) + (args.stg != 0.0) + (args.modality != 1.0)
        vtok = ((f - 1) // 8 + 1) * (h // 32) * (w // 32)
        eager_warmup = warmups.get("batched_eager")
        row = {
            "bench": "validation_sample", "variant": variant,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "tiny": args.tiny, "torch": torch.__version__, "ltx_core": version("ltx-core"),
            "python": platform.python_version(), "res": args.res, "video_tokens": vtok,
            "audio_tokens": int(audio_lat.shape[2]), "steps": args.steps, "passes_per_step": passes,
            "forwards_per_step": 1 if batched else passes,
            "guidance": {"cfg": args.cfg, "audio_cfg": args.audio_cfg, "stg": args.stg, "stg_blocks": [stg_block],
                         "modality": args.modality, "rescale": args.rescale},
            "seconds_total": round(t4 - t0, 2), "seconds_sampling": round(t1 - t0, 2),
            "seconds_per_step_median": round(sorted(step_times)[len(step_times) // 2], 3),
            "mp4_written": media, "seconds_decode_video": round(t2 - t1, 2), "seconds_decode_audio": round(t3 - t2, 2),
            "seconds_media": round(t4 - t3, 2), "audio_seconds": round(wave.shape[-1] / rate, 3), "sample_rate": rate,
            "peak_gib": peak, "seconds_warmup": round(warmups[variant], 2),
            "seconds_compile": (round(warmups[variant] - eager_warmup, 1) if compiled and eager_warmup is not None
                                else None),
            "compiled_graphs": graphs_warmup if compiled else 0, "compiled_graphs_timed": graphs_timed,
            "max_abs_diff": diff, "build_seconds": round(build_s, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        if out:  # line by line: a run stopped early keeps the variants it finished
            with open(out, "a") as fh:
                fh.write(json.dumps(row) + "\n")
    return rows


if __name__ == "__main__":
    main()
