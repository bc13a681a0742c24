"""Apply a LoRA file to a loaded transformer for sampling, and take it off again, without touching its weights.

Used for the distilled-LoRA preview (on top of the LoRA being trained) and for `ltx-lora validate --lora FILE`
(several files, one after the other, on one loaded base). Each adapted linear gets a forward hook that adds
`strength * scale * B(A(x))` (LoKr / LoHa: their change applied from the factors, `lora_file.kron_linear` /
`hadamard_linear`: held for every layer as whole out x in changes, the 22B model's would take ~18 GB in bf16);
removing the hooks restores the model exactly (bf16 weights are never rewritten, so nothing drifts by rounding).
`scale` is alpha / rank where the file has `.alpha` tensors (as ComfyUI applies them), else 1.0. Files are read
through `files.lora_file`, so every layout `ltx-lora lora check` accepts (comfyui, bare, kohya, diffusers, peft;
lora_A/B or lora_down/up) attaches the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ltx_lora.errors import UserError
from ltx_lora.files import lora_file
from ltx_lora.files.lora_file import LoraPair, LycorisWeights
from ltx_lora.paths import require_regular_file


def read_lora_file(path: str | Path) -> dict[str, LoraPair | LycorisWeights]:
    """Module path -> LoraPair (down, up, alpha/rank) for every module of a LoRA file in any layout.

    Transformer modules are keyed by their ltx-core path (`transformer_blocks.0.attn1.to_q`); text-side modules
    (connectors, Gemma projection) keep their name without `diffusion_model.`: no transformer layer has it, so
    `attach_lora` counts them as missing, as it always has."""
    path = require_regular_file(path, "LoRA file", "pass the path of a .safetensors LoRA")
    lora = lora_file.read_lora(path)
    return {lora_file.ltx_core_path(stem) or stem.removeprefix(lora_file.DIFFUSION): pair
            for stem, pair in lora_file.load_weights(lora).items()}


@dataclass
class AttachedLora:
    """Hooks of one applied LoRA file; `remove()` takes them off."""

    handles: list = field(default_factory=list)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def __enter__(self) -> AttachedLora:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _module_path(name: str) -> str:
    # peft wraps a targeted linear as `<path>` with the original inside as `<path>.base_layer`
    return re.sub(r"\.base_layer$", "", name)


def _lycoris_hook(pair: LycorisWeights, strength: float, device: torch.device, dtype: torch.dtype):
    """The forward hook adding a LoKr / LoHa module's change (see the module docstring)."""
    if pair.kind == lora_file.LOKR:
        w1, w2 = pair.lokr_factors(device)
        w1, w2 = (w1 * (strength * pair.scale)).to(dtype), w2.to(dtype)

        def lokr(mod, inputs, output):
            return output + lora_file.kron_linear(inputs[0].to(dtype), w1, w2).to(output.dtype)

        return lokr
    w1a, w1b, w2a, w2b = pair.loha_factors(device)
    w1a, w1b, w2a, w2b = (w1a * (strength * pair.scale)).to(dtype), w1b.to(dtype), w2a.to(dtype), w2b.to(dtype)

    def loha(mod, inputs, output):
        return output + lora_file.hadamard_linear(inputs[0].to(dtype), w1a, w1b, w2a, w2b).to(output.dtype)

    return loha


def attach_lora(transformer: torch.nn.Module, pairs: dict[str, LoraPair | LycorisWeights], strength: float,
                source: str = "the LoRA") -> AttachedLora:
    """Add the LoRA's output to every matching linear (by hooks); refuse a file that matches no layer."""
    modules = {}
    for name, module in transformer.named_modules():
        path = _module_path(name)
        if path in pairs and path not in modules and (isinstance(module, torch.nn.Linear) or name == path):
            modules[path] = module
    missing = [m for m in pairs if m not in modules]
    # Text connectors and the Gemma projection are not part of the transformer: name them so the refusal is clear.
    text_side = sum(lora_file.is_text_side(m) for m in missing)
    why = (f" ({text_side} of them adapt the text connectors / Gemma projection, which are not part of the "
           "transformer)" if text_side else "")
    if not modules:
        raise UserError(f"{source} adapts no layer of this transformer (e.g. {next(iter(pairs))}){why}; it was made "
                        "for another model or layout: check it with `ltx-lora lora check`.")
    if len(missing) > len(pairs) // 2:
        raise UserError(f"{source} adapts {len(missing)} of its {len(pairs)} layers that this transformer does not "
                        f"have (e.g. {missing[0]}){why}: it was made for another model; check it with "
                        "`ltx-lora lora check`.")
    # Compute in the model's float dtype on its device (quantized or host-swapped weights do not tell either).
    floats = [q for q in transformer.parameters() if q.is_floating_point() and q.element_size() >= 2]
    device = next((q.device for q in floats if q.device.type != "cpu"), torch.device("cpu"))
    dtype = floats[0].dtype if floats else torch.float32
    attached = AttachedLora()
    for path, module in modules.items():
        pair = pairs[path]
        if isinstance(pair, LycorisWeights):
            attached.handles.append(module.register_forward_hook(_lycoris_hook(pair, strength, device, dtype)))
            continue
        down = pair.down.to(device=device, dtype=dtype)
        up = (pair.up.float() * (pair.scale * strength)).to(device=device, dtype=dtype)

        def hook(mod, inputs, output, down=down, up=up):
            x = inputs[0]
            return output + F.linear(F.linear(x.to(down.dtype), down), up).to(output.dtype)

        attached.handles.append(module.register_forward_hook(hook))
    return attached
