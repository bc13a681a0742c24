"""LoRA on the frozen transformer (peft), and its export in ComfyUI's native layout.

Injection keeps the base module names (no `base_model.model.` wrapper), so exported keys are the ltx-core
module paths. Export: `diffusion_model.<module>.lora_A.weight` (r x in), `.lora_B.weight` (out x r) with
the scale (alpha/rank, or alpha/sqrt(rank) with `lora.rslora`) folded into lora_B and no `.alpha` tensors. Every consumer then applies the trained strength: ComfyUI
(scale 1 without `.alpha`), ltx-core's fusion (ignores alpha) and diffusers' LTX-2 loader (which refuses files
with `.alpha` tensors). docs/lora-formats.md has the sources; the key names come from `files.lora_file`.
"""

from __future__ import annotations

import re

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import inject_adapter_in_model

from ltx_lora.config import LoraConfig
from ltx_lora.errors import UserError
from ltx_lora.files import lora_file

ADAPTER = "default"
# Name prefixes of the trainable tensors of peft's tuners: lora_A/lora_B (and DoRA's lora_magnitude_vector), LoKr's
# lokr_w1/lokr_w2(_a/_b), LoHa's hada_w1_a/... A parameter is trainable when one of its path parts starts so.
TRAINABLE_PREFIXES = ("lora_", "lokr_", "hada_")
_PARAM = re.compile(rf"^(?P<module>.+)\.lora_(?P<ab>[AB])\.{ADAPTER}\.weight$")


def inject_lora(transformer: torch.nn.Module, cfg: LoraConfig, seed: int) -> list[torch.nn.Parameter]:
    """Freeze the base, add LoRA adapters in place, return the trainable parameters (fp32)."""
    transformer.requires_grad_(False)
    peft_cfg = PeftLoraConfig(r=cfg.rank, lora_alpha=cfg.effective_alpha, lora_dropout=cfg.dropout,
                              target_modules=cfg.targets, use_rslora=cfg.rslora)
    fork = torch.random.fork_rng(devices=[])
    with fork:  # LoRA A init draws from the global RNG: make it a function of the seed only
        torch.manual_seed(seed)
        try:
            inject_adapter_in_model(peft_cfg, transformer, adapter_name=ADAPTER)
        except ValueError as e:
            raise UserError(f"lora.target_modules {cfg.target_modules} match no layer of the transformer ({e}); "
                            "use names like to_q, to_k, to_v, to_out.0, ff.net.0.proj.") from None
    params = []
    for name, p in transformer.named_parameters():
        if is_adapter_parameter(name):
            p.data = p.data.float()  # LoRA weights and their optimizer state stay fp32
            p.requires_grad_(True)
            params.append(p)
    return params


def is_adapter_parameter(name: str) -> bool:
    """Whether a parameter (full name) belongs to an injected adapter rather than to the frozen base."""
    return any(part.startswith(TRAINABLE_PREFIXES) for part in name.split("."))


def lora_parameters(transformer: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Trainable LoRA parameters by their full name (stable order: the module order)."""
    return {n: p for n, p in transformer.named_parameters() if is_adapter_parameter(n)}


def export_comfy(transformer: torch.nn.Module, rank: int, alpha: float,
                 dtype: torch.dtype = torch.bfloat16, params: dict[str, torch.Tensor] | None = None, *,
                 rslora: bool = False) -> dict[str, torch.Tensor]:
    """The LoRA as ComfyUI / ltx-core / diffusers load it, with the trained strength baked in. `params`: the full
    LoRA tensors by name when the transformer's own are shards (FSDP). Keys by `lora_file.lora_tensors`; write the
    result with `lora_file.write_lora_tensors`. `rslora`: the adapters scale by alpha / sqrt(rank) (peft's
    use_rslora), which is what gets folded into lora_B then."""
    scale = alpha / (rank ** 0.5 if rslora else rank)
    halves: dict[str, dict[str, torch.Tensor]] = {}
    for name, p in (lora_parameters(transformer) if params is None else params).items():
        m = _PARAM.match(name)
        if m is None:
            continue
        w = p.detach().float()
        if m["ab"] == "B":
            w = w * scale
        halves.setdefault(m["module"], {})[m["ab"]] = w.to(dtype).cpu().contiguous()
    modules = {lora_file.stem_of_ltx_core_path(module): (ab["A"], ab["B"]) for module, ab in halves.items()}
    return lora_file.lora_tensors(modules, layout=lora_file.COMFYUI)
