"""LoRA (or LoKr / LoHa: `lora.variant`) on the frozen transformer (peft), and its export in ComfyUI's native layout.

Injection keeps the base module names (no `base_model.model.` wrapper), so exported keys are the ltx-core
module paths. Export: `diffusion_model.<module>.lora_A.weight` (r x in), `.lora_B.weight` (out x r) with
the scale (alpha/rank, or alpha/sqrt(rank) with `lora.rslora`) folded into lora_B and no `.alpha` tensors. Every
consumer then applies the trained strength: ComfyUI (scale 1 without `.alpha`), ltx-core's fusion (ignores alpha)
and diffusers' LTX-2 loader (which refuses files with `.alpha` tensors). docs/lora-formats.md has the sources; the
key names come from `files.lora_file`.

LoKr and LoHa (peft's LoKrConfig / LoHaConfig, LyCORIS' parametrisations) export as ComfyUI's weight adapters
read them (`comfy/weight_adapter/lokr.py`, `loha.py`): `<module>.lokr_w1`, `.lokr_w2` (or `.lokr_w2_a/_b` where
peft splits w2) and `.hada_w1_a/_b`, `.hada_w2_a/_b`. peft scales both by alpha / rank; ComfyUI scales LoHa by
alpha / rank too, but LoKr by alpha / rank only where a factor is split (x1 otherwise). So, as for LoRA, the scale
is folded into one factor (`lokr_w1`, `hada_w1_b`) and no `.alpha` is written: ComfyUI applies exactly the trained
change, kron(w1, w2) or (w1_a @ w1_b) * (w2_a @ w2_b). ltx-core's fusion and diffusers read lora_A/lora_B only.
"""

from __future__ import annotations

import contextlib
import functools
import re

import torch

from ltx_lora.config import LoraConfig, LoraVariant
from ltx_lora.errors import UserError
from ltx_lora.files import lora_file

ADAPTER = "default"
# A parameter is trainable when one of its path parts starts with lora_file.ADAPTER_PREFIXES (lora_A/lora_B, LoKr's
# lokr_w1/lokr_w2(_a/_b), LoHa's hada_w1_a/...).
_PARAM = re.compile(rf"^(?P<module>.+)\.lora_(?P<ab>[AB])\.{ADAPTER}\.weight$")
_LYCORIS_PARAM = re.compile(rf"^(?P<module>.+)\.(?P<name>(?:lokr|hada)_\w+)\.{ADAPTER}$")


def peft_config(cfg: LoraConfig):
    """peft's config of the adapter `cfg` asks for. LoKr / LoHa have no input dropout: `lora.dropout` becomes their
    rank dropout (rows of the weight change dropped while training).

    peft is imported here, not at the top: it imports transformers and bitsandbytes (which imports torch._dynamo),
    about 3 s of a `train` start (measured: `import ltx_lora.train.trainer` 10.5 CPU-s with it at the top, on the
    2-core test machine), and a refused config need not pay for it before its one sentence."""
    from peft import LoHaConfig, LoKrConfig
    from peft import LoraConfig as PeftLoraConfig

    common = {"r": cfg.rank, "alpha": cfg.effective_alpha, "rank_dropout": cfg.dropout,
              "target_modules": cfg.peft_targets}
    if cfg.variant == LoraVariant.lokr:
        return LoKrConfig(**common, decompose_factor=cfg.lokr_factor)
    if cfg.variant == LoraVariant.loha:
        return LoHaConfig(**common)
    return PeftLoraConfig(r=cfg.rank, lora_alpha=cfg.effective_alpha, lora_dropout=cfg.dropout,
                          target_modules=cfg.peft_targets, use_rslora=cfg.rslora)


def inject_lora(transformer: torch.nn.Module, cfg: LoraConfig, seed: int) -> list[torch.nn.Parameter]:
    """Freeze the base, add LoRA (LoKr, LoHa) adapters in place, return the trainable parameters (fp32)."""
    from peft import inject_adapter_in_model  # imported on use: see peft_config

    transformer.requires_grad_(False)
    peft_cfg = peft_config(cfg)
    fork = torch.random.fork_rng(devices=[])
    with fork:  # LoRA A init draws from the global RNG: make it a function of the seed only
        torch.manual_seed(seed)
        try:
            inject_adapter_in_model(peft_cfg, transformer, adapter_name=ADAPTER)
        except ValueError as e:
            raise UserError(f"lora.target_modules {cfg.target_modules} match no layer of the transformer ({e}); "
                            "use names like to_q, to_k, to_v, to_out.0, ff.net.0.proj.") from None
    if cfg.variant in (LoraVariant.lokr, LoraVariant.loha):
        factorize_lycoris(transformer)
    params = []
    for name, p in transformer.named_parameters():
        if lora_file.is_adapter_parameter(name):
            p.data = p.data.float()  # LoRA weights and their optimizer state stay fp32
            p.requires_grad_(True)
            params.append(p)
    return params


def lokr_delta_activations(layer: torch.nn.Module, adapter: str, x: torch.Tensor) -> torch.Tensor:
    """x @ (kron(w1, w2) * scale)^T of a peft LoKr Linear, without building the Kronecker product
    (`lora_file.kron_linear`).

    peft builds the layer's whole weight change (out x in) on every call and multiplies the input with it: a full
    extra matmul per adapted layer in forward, in the recompute and twice in backward (input and weight gradients),
    which made LoKr's step 3.2x plain LoRA's (4.64 vs 1.47 s, H200, bench/README.md). Rank dropout drops the same
    output rows as peft's (one draw of `out` uniform numbers from the global generator, as its `get_delta_weight`
    makes)."""
    w1 = layer.lokr_w1[adapter] if adapter in layer.lokr_w1 else layer.lokr_w1_a[adapter] @ layer.lokr_w1_b[adapter]
    w2 = layer.lokr_w2[adapter] if adapter in layer.lokr_w2 else layer.lokr_w2_a[adapter] @ layer.lokr_w2_b[adapter]
    y = lora_file.kron_linear(layer._cast_input_dtype(x, w1.dtype), w1, w2) * layer.scaling[adapter]
    rank_dropout = layer.rank_dropout[adapter]
    if layer.training and rank_dropout:
        drop = (torch.rand(y.shape[-1]) > rank_dropout).float()
        if layer.rank_dropout_scale[adapter]:
            drop /= drop.mean()
        y = y * drop.to(y.device, y.dtype)
    return y


def loha_delta_activations(layer: torch.nn.Module, adapter: str, x: torch.Tensor) -> torch.Tensor:
    """x @ ((w1a @ w1b) * (w2a @ w2b) * scale)^T of a peft LoHa Linear as a rank r * r product where that is cheaper
    (`lora_file.hadamard_linear`; peft builds the out x in change and multiplies with it, as for LoKr above). Rank
    dropout as peft's LoHa: the same draw, the kept rows rescaled by the mean."""
    w1a, w1b = layer.hada_w1_a[adapter], layer.hada_w1_b[adapter]
    w2a, w2b = layer.hada_w2_a[adapter], layer.hada_w2_b[adapter]
    y = lora_file.hadamard_linear(layer._cast_input_dtype(x, w1a.dtype), w1a, w1b, w2a, w2b) * layer.scaling[adapter]
    rank_dropout = layer.rank_dropout[adapter]
    if layer.training and rank_dropout:
        drop = (torch.rand(y.shape[-1]) > rank_dropout).to(w1a.dtype)
        drop /= drop.mean()
        y = y * drop.to(y.device, y.dtype)
    return y


@functools.cache
def _factorized_linears() -> dict[type, type]:
    """peft's LoKr and LoHa Linear classes -> the same with their change computed factorised (made on first use:
    peft is imported lazily, see `peft_config`)."""
    from peft.tuners.loha.layer import Linear as LoHaLinear
    from peft.tuners.lokr.layer import Linear as LoKrLinear

    class FactorizedLoKrLinear(LoKrLinear):
        def _get_delta_activations(self, adapter_name: str, input: torch.Tensor, *args, **kwargs) -> torch.Tensor:
            return lokr_delta_activations(self, adapter_name, input)

    class FactorizedLoHaLinear(LoHaLinear):
        def _get_delta_activations(self, adapter_name: str, input: torch.Tensor, *args, **kwargs) -> torch.Tensor:
            if adapter_name in self.hada_t1:  # CP-decomposed (convolutions only): peft's own path
                return super()._get_delta_activations(adapter_name, input, *args, **kwargs)
            return loha_delta_activations(self, adapter_name, input)

    return {LoKrLinear: FactorizedLoKrLinear, LoHaLinear: FactorizedLoHaLinear}


def factorize_lycoris(transformer: torch.nn.Module) -> int:
    """Make every peft LoKr / LoHa Linear of `transformer` compute its change from the factors
    (`lokr_delta_activations`, `loha_delta_activations`): the same parameters, exports and results; returns how many
    layers."""
    classes = _factorized_linears()
    n = 0
    for module in transformer.modules():
        factorized = classes.get(type(module))
        if factorized is not None:
            module.__class__ = factorized
            n += 1
    return n


@contextlib.contextmanager
def adapters_off(transformer: torch.nn.Module):
    """The transformer computes as the frozen base inside (every injected adapter bypassed: no LoRA matmul, no
    dropout draw), and as trained again after. peft's own switch (`enable_adapters`) also takes the adapters'
    requires_grad off and puts it back on; inside there is no gradient anyway (train.output_preservation's base
    prediction runs under no_grad)."""
    from peft.tuners.tuners_utils import BaseTunerLayer  # imported on use: see peft_config

    layers = [m for m in transformer.modules() if isinstance(m, BaseTunerLayer)]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)


def adapted_module(name: str) -> str:
    """The module path an adapter parameter (full name) belongs to: `...attn1.to_q` of `...attn1.to_q.lora_A...`."""
    parts = name.split(".")
    return ".".join(parts[:next(i for i, part in enumerate(parts) if part.startswith(lora_file.ADAPTER_PREFIXES))])


def lora_parameters(transformer: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Trainable LoRA parameters by their full name (stable order: the module order)."""
    return {n: p for n, p in transformer.named_parameters() if lora_file.is_adapter_parameter(n)}


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


def export_lycoris(kind: str, params: dict[str, torch.Tensor], scale: float,
                   dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """LoKr / LoHa parameters (full tensors by peft name) as ComfyUI loads them, the peft scale folded into one
    factor (see the module docstring)."""
    tensors: dict[str, dict[str, torch.Tensor]] = {}
    for name, p in params.items():
        m = _LYCORIS_PARAM.match(name)
        if m is not None:
            tensors.setdefault(m["module"], {})[m["name"]] = p.detach().float().cpu()
    modules = {}
    for module, t in tensors.items():
        folded = lora_file.LycorisWeights(kind, t, scale).folded()
        modules[lora_file.stem_of_ltx_core_path(module)] = lora_file.LycorisWeights(
            kind, {n: v.to(dtype).contiguous() for n, v in folded.tensors.items()})
    return lora_file.lora_tensors(modules, layout=lora_file.COMFYUI)


def export_adapter(transformer: torch.nn.Module, cfg: LoraConfig, params: dict[str, torch.Tensor] | None = None,
                   dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """The exported file's tensors for the variant `cfg` trains (`export_comfy` or `export_lycoris`). `params`: the
    full adapter tensors by name when the transformer's own are shards (FSDP), or the EMA's."""
    params = lora_parameters(transformer) if params is None else params
    if cfg.variant in (LoraVariant.lokr, LoraVariant.loha):
        return export_lycoris(cfg.variant.value, params, cfg.scale, dtype)
    return export_comfy(transformer, cfg.rank, cfg.effective_alpha, dtype, params, rslora=cfg.rslora)


def initial_adapter(lora: lora_file.LoraFile, cfg: LoraConfig) -> dict[str, torch.Tensor]:
    """lora.init_from's tensors (fp32) by the adapter parameter names `inject_lora` creates, so that the run's
    scale (`cfg.scale`) times them is the change the file applies: `export_adapter` of the result writes the file's
    tensors again. The file's own strength (alpha / rank where it stores an alpha, else 1) over the run's goes into
    the factor the export folds the scale into (lora_B, `lokr_w1[_b]`, `hada_w1_b`)."""
    out: dict[str, torch.Tensor] = {}
    for stem, w in lora_file.load_weights(lora).items():
        module = lora_file.ltx_core_path(stem)
        ratio = w.scale / cfg.scale
        if isinstance(w, lora_file.LoraPair):
            out[f"{module}.lora_A.{ADAPTER}.weight"] = w.down.float()
            out[f"{module}.lora_B.{ADAPTER}.weight"] = w.up.float() * ratio
        else:
            folded = lora_file.LycorisWeights(w.kind, {n: t.float() for n, t in w.tensors.items()}, ratio).folded()
            out |= {f"{module}.{name}.{ADAPTER}": t for name, t in folded.tensors.items()}
    return out
