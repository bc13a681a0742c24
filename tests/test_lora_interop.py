"""Our exported LoRA, loaded by its consumers' own code, gives what our training-time (peft) model computes.

- ltx-core: its LoRA fusion (`SingleGPUModelBuilder.lora`, `fuse_loras.apply_loras`) of our export vs the peft model.
- diffusers: `LTX2LoraLoaderMixin.load_lora_weights` (what LTX2Pipeline uses) on a tiny LTX2VideoTransformer3DModel
  whose weights are the tiny checkpoint converted by diffusers' own converter. It runs in a subprocess with the
  interop environment (diffusers 0.42.1 + transformers 5, built by `bash dev.sh interop`) first on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ltx_lora.config import LoraConfig
from ltx_lora.files import lora_file
from ltx_lora.files.atomic import atomic_save_safetensors
from ltx_lora.lora.convert import convert
from ltx_lora.ltx import loader, probe
from ltx_lora.train.lora import export_comfy, inject_lora, lora_parameters

ROOT = Path(__file__).resolve().parents[1]
RANK, ALPHA = 4, 8.0  # alpha != rank: the strength must survive the export


@pytest.fixture(scope="module")
def trained(tiny_checkpoint, tmp_path_factory):
    """A transformer with peft adapters as training leaves it (random, non-zero B), and its export."""
    dev = tiny_checkpoint("dev")
    model = loader.load_transformer(dev, "cpu", torch.bfloat16)
    inject_lora(model, LoraConfig(rank=RANK, alpha=ALPHA, feed_forward=True), seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in lora_parameters(model).items():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if ".lora_B." in name else 1 / p.shape[1] ** 0.5))
    root = tmp_path_factory.mktemp("interop")
    export = root / "trained_comfyui.safetensors"
    atomic_save_safetensors(export_comfy(model, RANK, ALPHA), export, {"rank": str(RANK), "alpha": str(ALPHA),
                                                             "alpha_folded_into_lora_B": "true"})
    return dev, model, export, root


def test_ltx_core_fusion_of_our_export_equals_the_peft_model(trained):
    dev, model, export, _ = trained
    cfg = loader.read_checkpoint_config(dev)["transformer"]
    x = probe.probe_inputs(cfg, "cpu", torch.float32)
    peft_out = probe.forward(model.float(), x)
    fused = probe.forward(loader.load_transformer(dev, "cpu", torch.bfloat16, loras=((export, 1.0),)).float(), x)
    base = probe.forward(loader.load_transformer(dev, "cpu", torch.bfloat16).float(), x)
    for p, f, b in zip(peft_out, fused, base):
        assert (p - b).norm() / b.norm() > 0.02  # the adapters matter
        assert (f - p).norm() / (p - b).norm() < 0.03  # ltx-core applies exactly them (bf16 rounding only)


def _interop_env() -> Path:
    """The interop site-packages folder, built by dev.sh the first time (a stamp keeps re-runs instant)."""
    venv = Path(os.environ.get("LTX_LORA_VENV", ROOT / ".venv"))
    target = venv / "interop"
    if not (target / ".ltx-lora-interop").is_file():
        env = {**os.environ, "LTX_LORA_VENV": str(venv)}
        if not (venv / "bin" / "python").exists():  # running from another environment: install with this python
            pytest.fail(f"no interop environment at {target}: run `bash dev.sh interop` (needs {venv}/bin/python)")
        subprocess.run(["bash", str(ROOT / "dev.sh"), "interop"], check=True, env=env, cwd=ROOT, timeout=900)
    return target


def test_diffusers_loader_applies_our_exports_like_the_peft_model(trained):
    dev, model, export, root = trained
    # What the training-time adapters add to each weight, under diffusers' module names.
    deltas = {}
    modules = dict(model.named_modules())
    for name, m in modules.items():
        if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {}):
            delta = (m.lora_B["default"].weight.float() @ m.lora_A["default"].weight.float()) * m.scaling["default"]
            deltas[lora_file.to_diffusers("diffusion_model." + name)] = delta.contiguous()
    assert len(deltas) == 2 * 28
    save_file(deltas, root / "deltas.safetensors")
    diffusers_file = convert(export, "diffusers", root / "trained_diffusers.safetensors").path
    with_alpha = convert(lora_file.read_lora(export).path, "comfyui", root / "with_alpha.safetensors").path
    # The same LoRA with .alpha tensors, as older exports wrote them: diffusers refuses such files.
    from safetensors.torch import load_file
    sd = load_file(with_alpha)
    sd.update({k.replace(".lora_A.weight", ".alpha"): torch.tensor(float(RANK)) for k in list(sd)
               if k.endswith(".lora_A.weight")})
    save_file(sd, root / "with_alpha.safetensors")

    target = _interop_env()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "interop" / "diffusers_ltx2_lora.py"), str(dev),
                           str(root / "deltas.safetensors"), str(export), str(diffusers_file), str(with_alpha)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert max(result["base_matches"]) == 0.0  # removing the adapter gives the base back
    for path in (export, diffusers_file):
        r = result[str(path)]
        assert min(r["change"]) > 0.02, r  # the LoRA changes video and audio output
        assert max(r["error"]) < 0.01, r  # and equals the training-time adapters' effect
    assert "lora" in result[str(with_alpha)]["refused"]


def test_rslora_export_carries_the_alpha_over_sqrt_rank_scale(tiny_checkpoint, tmp_path):
    """lora.rslora: peft scales by alpha / sqrt(rank); the export folds that scale into lora_B, so ltx-core's fusion
    (which ignores alpha) reproduces the training-time model."""
    dev = tiny_checkpoint("dev")
    model = loader.load_transformer(dev, "cpu", torch.bfloat16)
    inject_lora(model, LoraConfig(rank=RANK, alpha=ALPHA, rslora=True), seed=0)
    assert all(m.scaling["default"] == ALPHA / RANK ** 0.5 for m in model.modules() if hasattr(m, "scaling"))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in lora_parameters(model).items():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if ".lora_B." in name else 1 / p.shape[1] ** 0.5))
    export = tmp_path / "rslora.safetensors"
    atomic_save_safetensors(export_comfy(model, RANK, ALPHA, rslora=True), export)
    x = probe.probe_inputs(loader.read_checkpoint_config(dev)["transformer"], "cpu", torch.float32)
    peft_out = probe.forward(model.float(), x)
    fused = probe.forward(loader.load_transformer(dev, "cpu", torch.bfloat16, loras=((export, 1.0),)).float(), x)
    base = probe.forward(loader.load_transformer(dev, "cpu", torch.bfloat16).float(), x)
    for p, f, b in zip(peft_out, fused, base):
        assert (p - b).norm() / b.norm() > 0.02
        assert (f - p).norm() / (p - b).norm() < 0.03
