"""Run inside the interop environment (diffusers 0.42.1 + transformers 5 first on PYTHONPATH): load our LoRA files
with diffusers' own LTX-2 LoRA loader into a tiny LTX2VideoTransformer3DModel and compare its output with the same
model whose weights carry the training-time adapters' deltas.

argv: tiny checkpoint, expected deltas (.safetensors, diffusers module name -> alpha/r * B @ A), LoRA files...
Prints one JSON object: per LoRA file the relative output change and the relative error against the deltas.
"""

import json
import sys

import torch
from diffusers import LTX2VideoTransformer3DModel
from diffusers.loaders.lora_pipeline import LTX2LoraLoaderMixin
from diffusers.loaders.single_file_utils import convert_ltx2_transformer_to_diffusers
from safetensors import safe_open
from safetensors.torch import load_file

base_path, deltas_path, *lora_paths = sys.argv[1:]
with safe_open(base_path, "pt") as f:
    t = json.loads(f.metadata()["config"])["transformer"]
# The LTX-2.3 settings of scripts/convert_ltx2_to_diffusers.py ("2.3"), at the tiny fixture's sizes.
model = LTX2VideoTransformer3DModel(
    num_attention_heads=t["num_attention_heads"], attention_head_dim=t["attention_head_dim"],
    cross_attention_dim=t["cross_attention_dim"], audio_num_attention_heads=t["audio_num_attention_heads"],
    audio_attention_head_dim=t["audio_attention_head_dim"], audio_cross_attention_dim=t["audio_cross_attention_dim"],
    num_layers=t["num_layers"], caption_channels=t["caption_channels"], gated_attn=True, cross_attn_mod=True,
    audio_gated_attn=True, audio_cross_attn_mod=True, rope_type="split", use_prompt_embeddings=False,
).float().eval()
sd = {k: v.float() for k, v in load_file(base_path).items() if k.startswith("model.diffusion_model.")
      and "embeddings_connector" not in k}
converted = convert_ltx2_transformer_to_diffusers(sd)
# diffusers' single-file converter predates LTX-2.3's prompt AdaLN; its conversion script renames it like this.
converted = {k.replace("audio_prompt_adaln_single", "audio_prompt_adaln").replace("prompt_adaln_single", "prompt_adaln"):
             v for k, v in converted.items()}
model.load_state_dict(converted, strict=True)

g = torch.Generator().manual_seed(0)
frames, height, width, audio_frames, text = 2, 2, 3, 8, 16
inputs = dict(
    hidden_states=torch.randn(1, frames * height * width, 128, generator=g),
    audio_hidden_states=torch.randn(1, audio_frames, 128, generator=g),
    encoder_hidden_states=torch.randn(1, text, t["cross_attention_dim"], generator=g),
    audio_encoder_hidden_states=torch.randn(1, text, t["audio_cross_attention_dim"], generator=g),
    timestep=torch.tensor([600.0]), sigma=torch.tensor([0.6]), audio_sigma=torch.tensor([0.6]),
    encoder_attention_mask=torch.ones(1, text, dtype=torch.bool),
    num_frames=frames, height=height, width=width, audio_num_frames=audio_frames, fps=24.0, return_dict=False,
)


@torch.no_grad()
def run():
    video, audio = model(**inputs)[:2]
    return video.clone(), audio.clone()


class Pipe(LTX2LoraLoaderMixin):  # the loader mixin LTX2Pipeline uses; the pipeline itself needs Gemma etc.
    hf_device_map = None  # what DiffusionPipeline provides and the loader reads (no offloading here)

    def __init__(self, transformer):
        self.transformer = transformer
        self.components = {"transformer": transformer}


base = run()
expected_deltas = load_file(deltas_path)
modules = dict(model.named_modules())
with torch.no_grad():
    saved = {}
    for name, delta in expected_deltas.items():
        w = modules[name.removeprefix("transformer.")].weight
        saved[name] = w.clone()
        w += delta
    expected = run()
    for name, w in saved.items():
        modules[name.removeprefix("transformer.")].weight.copy_(w)

result = {"base_matches": [float((a - b).abs().max()) for a, b in zip(run(), base)]}
for path in lora_paths:
    pipe = Pipe(model)
    try:
        pipe.load_lora_weights(path, adapter_name="x")
    except ValueError as e:
        result[path] = {"refused": str(e)}
        continue
    out = run()
    model.delete_adapters(["x"])
    result[path] = {
        "change": [float((o - b).norm() / b.norm()) for o, b in zip(out, base)],
        "error": [float((o - e).norm() / (e - b).norm()) for o, e, b in zip(out, expected, base)],
    }
print(json.dumps(result))
