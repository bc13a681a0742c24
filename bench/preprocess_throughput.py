"""Preprocessing throughput on one GPU: the three parts of `ltx-lora preprocess`, timed separately.

Per clip at 960x544x49 with 2 s of audio: the ltx-core video VAE encoder (the LTX-2.3 release config's sizes: 128
base channels, res_x stacks 4/6/4/2/2 between the 2x space / time / all / all compressions), the ltx-core audio VAE
encoder (release sizes: 128 channels x (1, 2, 4), 2 residual blocks, 16 kHz mel front end), and the Gemma 3 12B
language model over the 1,024-token padded prompt with every hidden state (random weights, built on the GPU from
the google/gemma-3-12b-it text config; the feature projection after it is a single small matmul and is left out).
For each part: clips/s (median of --repeats after a warm-up), GPU busy share (CUDA-event time / wall time) and peak
memory. One JSON line per part to --out.

python bench/preprocess_throughput.py [--repeats 5] [--out bench/results/DATE_DEVICE_preprocess_960x544x49.jsonl]
python bench/preprocess_throughput.py --tiny     # CPU smoke run (tiny sizes; not a measurement)
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ltx_lora.fixtures.models import init_random_, ltx23_release_decoders_config, tiny_ltx23_config
from ltx_lora.ltx.components import build_component
from ltx_lora.ltx.vae import encode_audio, encode_video

# The LTX-2.3 release's video encoder (the `vae` section of the checkpoint's config): 128 base channels, res_x stacks
# 4/6/4/2/2 between the 2x space / time / all / all compressions, the last one keeping 1024 channels (multiplier 1).
# (The LTX-Video 0.9 encoder has 4/6/6/2/2 and doubles to 2048 at the end: the first H100 run used that one.)
RELEASE_ENCODER_BLOCKS = [["res_x", {"num_layers": 4}], ["compress_space_res", {"multiplier": 2}],
                          ["res_x", {"num_layers": 6}], ["compress_time_res", {"multiplier": 2}],
                          ["res_x", {"num_layers": 4}], ["compress_all_res", {"multiplier": 2}],
                          ["res_x", {"num_layers": 2}], ["compress_all_res", {"multiplier": 1}],
                          ["res_x", {"num_layers": 2}]]
GEMMA3_12B_TEXT = dict(hidden_size=3840, intermediate_size=15360, num_hidden_layers=48, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=256, vocab_size=262208, sliding_window=1024,
                       max_position_embeddings=131072)


def timed(fn, device: torch.device, repeats: int) -> dict:
    fn()  # warm-up
    walls, gpu = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            end.record()
            torch.cuda.synchronize()
            gpu.append(start.elapsed_time(end) / 1e3)
        walls.append(time.perf_counter() - t0)
    walls.sort()
    med = walls[len(walls) // 2]
    out = {"median_s_per_clip": round(med, 4), "clips_per_s": round(1 / med, 3)}
    if gpu:
        # Event time spans the first to the last kernel; busy share would need a profiler, this is its upper bound.
        out["gpu_span_share"] = round(sorted(gpu)[len(gpu) // 2] / med, 3)
        out["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def video_part(cfg: dict, device, res, repeats: int) -> dict:
    encoder = init_random_(build_component("video_encoder", cfg, "cpu"), torch.Generator().manual_seed(0))
    encoder = encoder.to(device=device, dtype=torch.bfloat16).eval()
    w, h, f = res
    frames = torch.rand(1, 3, f, h, w, device=device) * 2 - 1
    return timed(lambda: encode_video(encoder, frames), device, repeats)


def audio_part(cfg: dict, device, seconds: float, repeats: int) -> dict:
    encoder = init_random_(build_component("audio_encoder", cfg, "cpu"), torch.Generator().manual_seed(1))
    encoder = encoder.to(device=device, dtype=torch.float32).eval()
    wave = torch.randn(1, 2, int(seconds * 16000), device=device) * 0.1
    return timed(lambda: encode_audio(encoder, wave, 16000), device, repeats)


def text_part(device, tiny: bool, tokens: int, repeats: int) -> dict:
    from transformers import Gemma3TextConfig
    from transformers.models.gemma3.modeling_gemma3 import Gemma3ForCausalLM

    sizes = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=32, vocab_size=1000) if tiny else GEMMA3_12B_TEXT
    config = Gemma3TextConfig(**sizes, torch_dtype="bfloat16")
    with torch.device("meta"):
        model = Gemma3ForCausalLM(config)
    model = model.to(torch.bfloat16).to_empty(device=device).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
        model.model.rotary_emb.__init__(config=config, device=device)  # buffers (inv_freq) from the config
        if hasattr(model.model, "rotary_emb_local"):
            model.model.rotary_emb_local.__init__(config=copy.deepcopy(config), device=device)
    ids = torch.randint(0, sizes["vocab_size"], (1, tokens), device=device)
    mask = torch.ones_like(ids)

    @torch.no_grad()
    def run():
        return model.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states

    return timed(run, device, repeats)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--res", default="960x544x49")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--text-tokens", type=int, default=1024)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    cfg = tiny_ltx23_config()
    res = tuple(int(x) for x in args.res.split("x"))
    if args.tiny:
        res, tokens = (64, 64, 9), 128
    else:
        cfg["vae"]["encoder_blocks"] = RELEASE_ENCODER_BLOCKS
        # the audio VAE's encoder and decoder share ddconfig: 128 channels x (1, 2, 4), 2 residual blocks per level
        cfg["audio_vae"] = ltx23_release_decoders_config()["audio_vae"]
        tokens = args.text_tokens
    seconds = (res[2] - 1) / 24.0 + 1 / 24.0
    from importlib.metadata import version

    rows = [{"bench": "preprocess_throughput", "date": datetime.datetime.now(datetime.UTC).isoformat(
        timespec="seconds"), "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "ltx_core": version("ltx-core"), "transformers": version("transformers"),
        "python": platform.python_version(), "res": "x".join(map(str, res)), "audio_seconds": round(seconds, 3),
        "text_tokens": tokens, "tiny": args.tiny}]
    print(json.dumps(rows[0]), flush=True)
    for name, part in (("video_vae_encode", lambda: video_part(cfg, device, res, args.repeats)),
                       ("audio_vae_encode", lambda: audio_part(cfg, device, seconds, args.repeats)),
                       ("gemma3_12b_text", lambda: text_part(device, args.tiny, tokens, args.repeats))):
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        try:
            row = {"part": name, **part()}
        except torch.OutOfMemoryError as e:
            row = {"part": name, "error": "OOM", "detail": str(e)[:160]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    parts = [r for r in rows[1:] if "median_s_per_clip" in r]
    if len(parts) == 3:
        total = sum(r["median_s_per_clip"] for r in parts)
        rows.append({"all_parts_s_per_clip": round(total, 4), "clips_per_s": round(1 / total, 3)})
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n".join(json.dumps(r) for r in rows) + "\n")


if __name__ == "__main__":
    main()
