"""Apply a LoRA file to a loaded transformer for sampling, and take it off again, without touching its weights.

Used for the distilled-LoRA preview (on top of the LoRA being trained) and for `ltx-lora validate --lora FILE`
(several files, one after the other, on one loaded base). Each adapted linear gets a forward hook that adds
`strength * scale * B(A(x))`; removing the hooks restores the model exactly (bf16 weights are never rewritten,
so nothing drifts by rounding). `scale` is alpha / rank where the file has `.alpha` tensors (as ComfyUI applies
them), else 1.0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ltx_lora.errors import UserError

_DOWN = (".lora_A.weight", ".lora_down.weight")
_UP = {".lora_A.weight": ".lora_B.weight", ".lora_down.weight": ".lora_up.weight"}
_PREFIXES = ("diffusion_model.", "model.diffusion_model.")


@dataclass
class LoraPair:
    down: torch.Tensor  # [r, in]
    up: torch.Tensor  # [out, r]
    scale: float


def read_lora_file(path: str | Path) -> dict[str, LoraPair]:
    """ltx-core module path -> (A, B, alpha/rank) for every adapted linear of a ComfyUI-layout LoRA file."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise UserError(f"LoRA file {path} does not exist; pass the path of a .safetensors LoRA.")
    try:
        sd = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises several kinds for a file that is not one
        raise UserError(f"{path} is not a readable .safetensors file ({e}); run `ltx-lora inspect {path}`.") from None
    pairs: dict[str, LoraPair] = {}
    for key, down in sd.items():
        suffix = next((s for s in _DOWN if key.endswith(s)), None)
        if suffix is None:
            continue
        base = key.removesuffix(suffix)
        up = sd.get(base + _UP[suffix])
        if up is None:
            continue
        module = next((base.removeprefix(p) for p in _PREFIXES if base.startswith(p)), base)
        alpha = sd.get(base + ".alpha")
        rank = down.shape[0]
        pairs[module] = LoraPair(down, up, float(alpha.float()) / rank if alpha is not None else 1.0)
    if not pairs:
        raise UserError(f"{path} holds no LoRA weights (no lora_A/lora_B pairs); run `ltx-lora inspect {path}`.")
    return pairs


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


def attach_lora(transformer: torch.nn.Module, pairs: dict[str, LoraPair], strength: float,
                source: str = "the LoRA") -> AttachedLora:
    """Add the LoRA's output to every matching linear (by hooks); refuse a file that matches no layer."""
    modules = {}
    for name, module in transformer.named_modules():
        path = _module_path(name)
        if path in pairs and path not in modules and (isinstance(module, torch.nn.Linear) or name == path):
            modules[path] = module
    missing = [m for m in pairs if m not in modules]
    if not modules:
        raise UserError(f"{source} adapts no layer of this transformer (e.g. {next(iter(pairs))}); it was made for "
                        "another model or layout: check it with `ltx-lora inspect`.")
    if len(missing) > len(pairs) // 2:
        raise UserError(f"{source} adapts {len(missing)} of its {len(pairs)} layers that this transformer does not "
                        f"have (e.g. {missing[0]}): it was made for another model; check it with `ltx-lora inspect`.")
    # Compute in the model's float dtype on its device (quantized or host-swapped weights do not tell either).
    floats = [q for q in transformer.parameters() if q.is_floating_point() and q.element_size() >= 2]
    device = next((q.device for q in floats if q.device.type != "cpu"), torch.device("cpu"))
    dtype = floats[0].dtype if floats else torch.float32
    attached = AttachedLora()
    for path, module in modules.items():
        pair = pairs[path]
        down = pair.down.to(device=device, dtype=dtype)
        up = (pair.up.float() * (pair.scale * strength)).to(device=device, dtype=dtype)

        def hook(mod, inputs, output, down=down, up=up):
            x = inputs[0]
            return output + F.linear(F.linear(x.to(down.dtype), down), up).to(output.dtype)

        attached.handles.append(module.register_forward_hook(hook))
    return attached
