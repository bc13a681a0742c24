"""lora.variant lokr / loha on the tiny fixture: each trains, resumes exactly, exports in the layout ComfyUI applies,
and the weight change ComfyUI's formula gives from the exported file equals the training-time change (peft's own
`get_delta_weight`, what its merge adds) and what `ltx-lora lora merge` fuses. Also 8-bit AdamW (bitsandbytes, the
lowvram extra) with state that really is 8-bit, resumed exactly.

`comfy_delta` re-expresses ComfyUI's loader (comfy/weight_adapter/lokr.py and loha.py, `calculate_weight`) in our
words, independently of `files.lora_file`:
- LoKr: w1 = lokr_w1, or lokr_w1_a @ lokr_w1_b; w2 likewise; change = kron(w1, w2) * s, where s = alpha / dim if
  the file has `<module>.alpha` and a factor is split (dim = lokr_w2_b.shape[0] if w2 is split, else
  lokr_w1_b.shape[0]), else s = 1.
- LoHa: change = (hada_w1_a @ hada_w1_b) * (hada_w2_a @ hada_w2_b) * s, s = alpha / hada_w1_b.shape[0] with an
  alpha, else 1.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import assert_user_error, run_cli
from safetensors.torch import load_file
from test_train import prepared  # noqa: F401 - the session's preprocessed tiny dataset

from ltx_lora.config import LoraConfig
from ltx_lora.files import lora_file
from ltx_lora.lora.check import check
from ltx_lora.lora.convert import convert
from ltx_lora.lora.inspect import inspect_lora
from ltx_lora.ltx import loader
from ltx_lora.train.checkpointer import load_training_state
from ltx_lora.train.lora import (
    factorize_lycoris,
    inject_lora,
    loha_delta_activations,
    lokr_delta_activations,
    lora_parameters,
)


def comfy_delta(sd: dict[str, torch.Tensor], module: str) -> torch.Tensor:
    """ComfyUI's weight change for one module of a LoKr / LoHa state dict (see the module docstring)."""
    t = {k[len(module) + 1:]: v.float() for k, v in sd.items() if k.startswith(module + ".")}
    alpha = float(t["alpha"]) if "alpha" in t else None
    if "hada_w1_a" in t:
        s = alpha / t["hada_w1_b"].shape[0] if alpha is not None else 1.0
        return (t["hada_w1_a"] @ t["hada_w1_b"]) * (t["hada_w2_a"] @ t["hada_w2_b"]) * s
    dim = None
    w = {}
    for i in ("1", "2"):
        if f"lokr_w{i}" in t:
            w[i] = t[f"lokr_w{i}"]
        else:
            w[i] = t[f"lokr_w{i}_a"] @ t[f"lokr_w{i}_b"]
            dim = t[f"lokr_w{i}_b"].shape[0]
    s = alpha / dim if alpha is not None and dim is not None else 1.0
    return torch.kron(w["1"], w["2"]) * s


def _tensors(tree: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a (nested) optimizer state dict by its path."""
    out = {}
    for k, v in (tree["state"] if "state" in tree and not prefix else tree).items():
        if isinstance(v, dict):
            out.update(_tensors(v, f"{prefix}{k}/"))
        elif isinstance(v, torch.Tensor):
            out[f"{prefix}{k}"] = v
    return out


def _modules(sd: dict[str, torch.Tensor]) -> set[str]:
    return {k.rsplit(".", 1)[0] for k in sd if k.rsplit(".", 1)[1].startswith(("lokr_", "hada_"))}


def _config(prepared, tmp_path, name: str, lora: dict, **train) -> Path:  # noqa: F811 - pytest fixture
    _, base = prepared
    cfg = {**base, "output_dir": str(tmp_path / name), "lora": lora,
           "train": {**base["train"], "steps": 2, "scheduler": "constant", **train},
           "checkpoints": {"every": 1, "keep_last": 3}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# (variant, rank, optimizer): LoKr at rank 2 splits w2 of the 32-wide video layers (r < 8 / 2 would be 4: split) and
# keeps it whole on the 16-wide audio ones, so both ComfyUI scale rules are exercised; LoHa at rank 128 gives
# hada_w1_a / hada_w2_a of 32 x 128 = 4096 elements, the smallest that bitsandbytes keeps in 8 bits. LoKr trains
# with Adafactor (its factored moments, a step count and an RMS per matrix, resumed exactly too).
CASES = [("lokr", 2, "adafactor"), ("loha", 128, "adamw8bit")]


@pytest.mark.parametrize("variant, rank, optimizer", CASES)
def test_variant_trains_resumes_exactly_and_exports_what_comfyui_applies(prepared, tmp_path, tiny_checkpoint,  # noqa: F811
                                                                          variant, rank, optimizer):
    if optimizer == "adamw8bit":
        pytest.importorskip("bitsandbytes", reason="the lowvram extra (bitsandbytes) is not installed")
    lora = {"variant": variant, "rank": rank, "alpha": rank / 2}
    cfg = _config(prepared, tmp_path, "run", lora, optimizer=optimizer)
    res = run_cli("train", cfg)
    assert res.code == 0, res.err
    assert f"M {variant} parameters" in res.err, res.err
    run = tmp_path / "run"
    exported = load_file(str(run / "lora.safetensors"))
    assert not any(k.endswith((".alpha", "lora_A.weight")) for k in exported)  # the scale is folded in
    modules = _modules(exported)
    assert modules and all(m.startswith("diffusion_model.transformer_blocks.") for m in modules)
    if variant == "lokr":  # both layouts: split w2 (video, 32 wide) and whole w2 (audio, 16 wide)
        assert any(k.endswith(".lokr_w2_a") for k in exported) and any(k.endswith(".lokr_w2") for k in exported)

    # Exact resume: a copy cut back to its step-1 checkpoint trains on to the same files, bit for bit.
    cut = tmp_path / "cut"
    shutil.copytree(run, cut)
    shutil.rmtree(cut / "checkpoints" / "step_000002")
    (cut / "lora.safetensors").unlink()
    data = yaml.safe_load(cfg.read_text())
    data["output_dir"] = str(cut)
    cut_cfg = tmp_path / "cut.yaml"
    cut_cfg.write_text(yaml.safe_dump(data))
    res = run_cli("train", cut_cfg, "--resume")
    assert res.code == 0 and "resumed from" in res.err, res.err
    again = load_file(str(cut / "lora.safetensors"))
    assert again.keys() == exported.keys() and all(torch.equal(again[k], exported[k]) for k in exported)

    # lora.init_from: a run started from the exported file, at a learning rate too small to move any weight
    # (Adam's first step moves each by about the learning rate), exports the same file: the folded scale is undone.
    start = _config(prepared, tmp_path, "start", {**lora, "init_from": str(run / "lora.safetensors")}, steps=1,
                    learning_rate=1e-30)
    res = run_cli("train", start)
    assert res.code == 0 and "starting from lora.init_from" in res.err, res.err
    started = load_file(str(tmp_path / "start" / "lora.safetensors"))
    assert started.keys() == exported.keys() and all(torch.equal(started[k], exported[k]) for k in exported)

    state = load_training_state(run / "checkpoints" / "step_000002")
    saved = _tensors(state.optimizer)
    resumed = _tensors(load_training_state(cut / "checkpoints" / "step_000002").optimizer)
    assert saved.keys() == resumed.keys() and all(torch.equal(v, resumed[k]) for k, v in saved.items())
    if optimizer == "adamw8bit":  # the 8-bit path ran: moments stored as uint8 codes
        assert any(v.dtype == torch.uint8 for v in saved.values()), sorted(saved)
    if optimizer == "adafactor":  # factored second moments, no first moment
        assert any("exp_avg_sq_row" in k for k in saved), sorted(saved)
        assert not any(k.endswith("/exp_avg") for k in saved), sorted(saved)

    # The training-time change: peft's own get_delta_weight on the trained (fp32) parameters.
    dev = tiny_checkpoint("dev")
    model = loader.load_transformer(dev, "cpu", torch.float32)
    inject_lora(model, LoraConfig(**lora), seed=0)
    with torch.no_grad():
        for name, p in lora_parameters(model).items():
            p.copy_(state.lora[name])
    layers = dict(model.named_modules())
    base = load_file(str(dev))
    merged_path = tmp_path / "merged.safetensors"
    res = run_cli("lora", "merge", run / "lora.safetensors", "--base", dev, "-o", merged_path)
    assert res.code == 0, res.err
    merged = load_file(str(merged_path))
    for module in modules:
        path = module.removeprefix("diffusion_model.")
        trained = layers[path].get_delta_weight("default").float()
        assert trained.norm() > 0, module  # the adapter moved
        comfy = comfy_delta(exported, module)
        assert (comfy - trained).norm() / trained.norm() < 0.01, module  # bf16 rounding of the export only
        key = f"model.{module}.weight"
        fused = merged[key].float() - base[key].float()
        # the merged checkpoint is bf16: its change is the delta up to bf16 rounding of W + delta
        assert (fused - comfy).abs().max() <= base[key].float().abs().max() * 2 ** -7 + 1e-6, module

    # The LoRA tools understand the file.
    report = inspect_lora(run / "lora.safetensors")
    assert report.kinds == {variant: len(modules)} and report.modules == len(modules)
    checked = check(run / "lora.safetensors", dev)
    assert checked.clean, checked.findings
    assert checked.counts("comfyui") == {"applied": len(modules)}
    assert checked.counts("ltx_core") == {"ignored": len(modules)}  # its fusion reads lora_A/lora_B only
    assert any("LyCORIS" in n for n in checked.notes)


def _lycoris_file(tmp_path, tiny_checkpoint, variant: str, rank: int):
    """A peft model with random (non-zero) LoKr / LoHa parameters and its export."""
    from ltx_lora.train.lora import export_adapter

    dev = tiny_checkpoint("dev")
    model = loader.load_transformer(dev, "cpu", torch.float32)
    cfg = LoraConfig(variant=variant, rank=rank, alpha=3.0)
    inject_lora(model, cfg, seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in lora_parameters(model).values():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    path = tmp_path / f"{variant}.safetensors"
    lora_file.write_lora_tensors(path, export_adapter(model, cfg, dtype=torch.float32))
    return dev, model, path


@pytest.mark.parametrize("variant", ["lokr", "loha"])
def test_alpha_convert_and_validation_hooks_follow_comfyuis_rules(tiny_checkpoint, tmp_path, variant):
    """Files of other trainers store `.alpha`: the reader applies ComfyUI's rule (LoKr: only where a factor is
    split); convert keeps or folds it and refuses layouts without LoKr / LoHa names; attach (validation samples of
    a LoKr / LoHa file) adds exactly the change."""
    from ltx_lora.lora.attach import attach_lora, read_lora_file

    dev, model, path = _lycoris_file(tmp_path, tiny_checkpoint, variant, rank=2)
    sd = load_file(str(path))
    modules = _modules(sd)
    with_alpha = dict(sd)
    for m in modules:
        with_alpha[f"{m}.alpha"] = torch.tensor(5.0)
    alpha_path = tmp_path / "alpha.safetensors"
    lora_file.write_lora_tensors(alpha_path, with_alpha)
    read = lora_file.load_weights(lora_file.read_lora(alpha_path))
    for m in modules:
        assert torch.allclose(read[m].delta(), comfy_delta(with_alpha, m), rtol=1e-5, atol=1e-6), m
    scales = {read[m].scale for m in modules}
    assert scales == ({5 / 2, 1.0} if variant == "lokr" else {5 / 2})  # LoKr: unsplit audio factors ignore alpha

    kohya = convert(alpha_path, "kohya", tmp_path / "kohya.safetensors").path
    back = convert(kohya, "comfyui", tmp_path / "back.safetensors", fold_alpha=True).path
    folded = load_file(str(back))
    assert not any(k.endswith(".alpha") for k in folded)
    for m in modules:
        assert torch.allclose(comfy_delta(folded, m), comfy_delta(with_alpha, m), rtol=1e-5, atol=1e-6), m
    assert any(k.startswith("lora_unet_") for k in load_file(str(kohya)))
    res = run_cli("lora", "convert", alpha_path, "--to", "diffusers", "-o", tmp_path / "d.safetensors")
    assert_user_error(res, f"{variant} modules", "comfyui or kohya")

    from ltx_lora.lora.verify import verify

    report = verify(path, dev, device="cpu")
    by = {c.consumer: c for c in report.consumers}
    assert report.has_effect and by["ComfyUI"].has_effect and by["ComfyUI"].applied == len(modules)
    assert by["ltx-core"].applied == 0 and by["diffusers"].applied == 0

    x = torch.randn(1, 5, 32)
    stem = next(m for m in sorted(modules) if m.endswith(".attn1.to_q"))  # the video branch (width 32)
    layer = dict(model.named_modules())[stem.removeprefix("diffusion_model.")].base_layer
    plain = layer(x)
    holder = torch.nn.ModuleDict({"q": layer})
    with attach_lora(holder, {"q": read_lora_file(path)[stem.removeprefix("diffusion_model.")]}, 1.0):
        hooked = holder["q"](x)
    assert torch.allclose(hooked - plain, x @ comfy_delta(sd, stem).T, rtol=1e-4, atol=1e-5)


def test_lora_options_bench_runs_at_tiny_size(tmp_path):
    """bench/lora_options.py (the GPU bench of these options) runs end to end on CPU with --tiny."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import lora_options

    out = tmp_path / "bench.jsonl"
    rows = lora_options.main(["--tiny", "--res", "64x64x9", "--options", "lokr,ema,adafactor,loraplus", "--steps", "1",
                              "--warmup", "0", "--graphs", "--out", str(out)])
    assert [r.get("option") for r in rows[1:]] == ["lokr", "ema", "adafactor", "loraplus"], rows
    assert all("median_s" in r for r in rows[1:]), rows
    assert all(r["graphs"] == {"off": "not on a GPU"} for r in rows[1:]), rows  # --graphs asked; none on the CPU
    assert len(out.read_text().splitlines()) == 5


@pytest.mark.parametrize("variant, rank, factor, blocks", [
    ("lora", 4, -1, None), ("lokr", 2, -1, None), ("lokr", 8, -1, None), ("lokr", 2, 2, None), ("loha", 4, -1, None),
    ("lora", 4, -1, "1"), ("loha", 4, -1, [1])])
def test_memory_plan_counts_the_parameters_peft_creates(tiny_checkpoint, variant, rank, factor, blocks):
    """The plan's adapter size (runtime/memory.py) is what peft injects, for each variant, both LoKr layouts, a
    lora.lokr_factor, and lora.blocks (the adapters in block 1 only, the layers lora.blocks' one rule names)."""
    from ltx_lora.config import parse_config
    from ltx_lora.ltx.sizes import transformer_size
    from ltx_lora.runtime.memory import workload_for_config

    dev = tiny_checkpoint("dev")
    extra_cfg = {"lokr_factor": factor} if variant == "lokr" else {}
    cfg = parse_config({"lora": {"variant": variant, "rank": rank, "feed_forward": True, "blocks": blocks,
                                 **extra_cfg}})
    size = transformer_size(loader.read_checkpoint_config(dev))
    work = workload_for_config(cfg, size)
    model = loader.load_transformer(dev, "cpu", torch.float32)
    made = sum(p.numel() for p in inject_lora(model, cfg.lora, seed=0))
    assert work.adapter_parameters(rank) == made
    adapted = {n for n, m in model.named_modules() if hasattr(m, "base_layer")}  # peft's adapter layers
    assert adapted == {n for n, _ in model.named_modules() if cfg.lora.adapts(n)}, sorted(adapted)[:4]
    if blocks is not None:
        assert adapted and all(n.startswith("transformer_blocks.1.") for n in adapted)


def _saved_bytes(variant: str, rank: int, factor: int, res: tuple[int, int, int]) -> tuple[int, object]:
    """Bytes autograd saves (unique storages, the adapters' fp32 parameters left out) in one forward of the tiny
    transformer with adapter `variant` on attention and feed-forward, in bf16 under bf16 autocast as the training
    step runs it, without gradient checkpointing (every block's saved tensors alive); and the memory plan's
    Workload for the same bucket (its text: TOKENIZER_LENGTH tokens, as training pads it)."""
    from ltx_lora.config import parse_config
    from ltx_lora.fixtures.models import TINY_LTX23_CONFIG, build_transformer_from_config
    from ltx_lora.ltx.modality import predict_velocity
    from ltx_lora.ltx.sizes import transformer_size
    from ltx_lora.ltx.text import TOKENIZER_LENGTH
    from ltx_lora.runtime.memory import workload_for_config
    from ltx_lora.task import TaskConfig
    from ltx_lora.train.objective import LatentBatch, prepare_inputs
    from ltx_lora.train.timesteps import SigmaSampler

    w, h, f = res
    extra = {"lokr_factor": factor} if variant == "lokr" else {}
    cfg = parse_config({"lora": {"variant": variant, "rank": rank, "feed_forward": True, **extra},
                        "data": {"buckets": f"{w}x{h}x{f}"}, "train": {"gradient_checkpointing": False}})
    t = TINY_LTX23_CONFIG["transformer"]
    work = workload_for_config(cfg, transformer_size(TINY_LTX23_CONFIG))
    g = torch.Generator().manual_seed(0)
    batch = LatentBatch(video=torch.randn(1, 128, (f - 1) // 8 + 1, h // 32, w // 32, generator=g),
                        audio=torch.randn(1, 8, round(f / cfg.train.fps * 25), 16, generator=g),
                        video_context=torch.randn(1, TOKENIZER_LENGTH, t["cross_attention_dim"], generator=g),
                        audio_context=torch.randn(1, TOKENIZER_LENGTH, t["audio_cross_attention_dim"], generator=g),
                        context_mask=None, fps=cfg.train.fps)
    inputs = prepare_inputs(batch, SigmaSampler("uniform"), torch.Generator().manual_seed(1), task=TaskConfig(),
                            dtype=torch.bfloat16)
    assert (inputs.video.latent.shape[1], inputs.audio.latent.shape[1]) == (work.video_tokens, work.audio_tokens)
    # The first block's input needs a gradient as every later block's does (the plan counts those blocks).
    for m in (inputs.video, inputs.audio):
        m.latent.requires_grad_(True)
    model = build_transformer_from_config(TINY_LTX23_CONFIG, dtype=torch.bfloat16)
    params = {p.untyped_storage().data_ptr() for p in inject_lora(model, cfg.lora, seed=0)}
    model.train()
    saved: dict[int, int] = {}

    def pack(x: torch.Tensor) -> torch.Tensor:
        storage = x.untyped_storage()
        if storage.data_ptr() not in params:  # the trainable parameters are counted as such, not as activations
            saved[storage.data_ptr()] = storage.nbytes()
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x), torch.autocast("cpu", dtype=torch.bfloat16):
        out = predict_velocity(model, inputs.video, inputs.audio)  # kept: its graph keeps the saved tensors alive
    assert out[0].requires_grad
    return sum(saved.values()), work


@pytest.mark.parametrize("variant, rank, factor", [("lokr", 4, -1), ("lokr", 2, 2), ("loha", 2, -1),
                                                   ("loha", 4, -1)])
def test_memory_plan_counts_what_autograd_keeps_of_lycoris_changes(variant, rank, factor):
    """The plan's LoKr / LoHa activation term (`Workload.adapter_block_bytes`: one block's, every block's without
    checkpointing) is what autograd really saves beyond plain LoRA's at the same rank, counted with saved-tensor
    hooks on the tiny transformer: LoKr's tokens x (in_m * out_k) contraction (factor -1 and 2, w2 whole and split),
    LoHa's tokens x r^2 product (rank 2: every layer factorised) and, at rank 4, its built change where r^2 * (in +
    out) >= in * out (the attention layers) beside factorised feed-forward layers; the text cross-attentions' keys
    and values, whose input carries no gradient, keep less. Counted and planned agree exactly here (torch 2.11, CPU
    autocast); tolerance 1%. The whole fp32 weight change the plan counted before (peft built it) is 0.11-2.0x the
    difference counted here."""
    from ltx_lora.fixtures.models import TINY_LTX23_CONFIG
    from ltx_lora.ltx.sizes import transformer_size
    from ltx_lora.runtime.memory import GIB, estimate

    res = (512, 512, 17)  # 768 video tokens, 18 audio, 1,024 text
    lora, plain_work = _saved_bytes("lora", rank, factor, res)
    ours, work = _saved_bytes(variant, rank, factor, res)
    planned = work.adapter_block_bytes() * work.blocks
    assert plain_work.adapter_block_bytes() == 0
    assert planned == pytest.approx(ours - lora, rel=0.01), (planned, ours - lora)
    # The estimate adds it (and backward's gradients of one layer's, the largest), to the activations only.
    size = transformer_size(TINY_LTX23_CONFIG)
    parts, plain = estimate(size, work, "none", 0), estimate(size, plain_work, "none", 0)
    largest = max(work.adapter_layer_bytes(i, o, t, g) for (i, o), (t, g) in zip(work.target_shapes,
                                                                                  work.target_inputs, strict=True))
    assert parts["activations"] - plain["activations"] == pytest.approx((planned + largest) / GIB)


def _factorised_against_peft(peft_cfg, peft_class, ours, prefix: str, shape: tuple[int, int]) -> None:
    """A one-layer model with `peft_cfg`'s adapter (random factors, rank dropout 0.3), factorised: `ours` against
    peft's own `_get_delta_activations` in float64 (outputs, input and factor gradients, eval and training with the
    same seed), and rank dropout really dropping rows (others with another seed)."""
    from peft import inject_adapter_in_model

    out_f, in_f = shape
    model = torch.nn.Sequential(torch.nn.Linear(in_f, out_f)).double()
    inject_adapter_in_model(peft_cfg, model)
    assert factorize_lycoris(model) == 1
    layer = model[0]
    assert isinstance(layer, peft_class) and type(layer) is not peft_class
    g = torch.Generator().manual_seed(0)
    params = [p for n, p in layer.named_parameters() if prefix in n]
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    x = torch.randn(2, 7, in_f, generator=g, dtype=torch.float64, requires_grad=True)

    def run(fn, training: bool, seed: int = 0):
        layer.train(training)
        torch.manual_seed(seed)
        y = fn(layer, "default", x)
        return y.detach(), torch.autograd.grad((y * y.detach().cos()).sum(), [x, *params])

    for training in (False, True):
        (y_ref, g_ref), (y, g_ours) = run(peft_class._get_delta_activations, training), run(ours, training)
        assert y.shape == y_ref.shape == (2, 7, out_f)
        assert torch.allclose(y, y_ref, rtol=1e-10, atol=1e-9), (training, (y - y_ref).abs().max())
        for a, b in zip(g_ours, g_ref, strict=True):
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-9), training
    y_train, _ = run(ours, True)
    assert 0 < (y_train.abs().sum(dim=(0, 1)) == 0).sum() < out_f  # rank dropout dropped rows, peft's rows
    assert not torch.equal(y_train, run(ours, True, seed=1)[0])  # another seed, other rows


@pytest.mark.parametrize("shape, rank, factor", [((64, 48), 2, -1), ((32, 32), 8, -1), ((48, 64), 1, 4),
                                                 ((256, 128), 4, -1)])
def test_factorised_lokr_is_the_kron_product_without_building_it(shape, rank, factor):
    """`lokr_delta_activations` (what training runs) against peft's own path (the whole kron(w1, w2) built, then a
    matmul), split and whole factors."""
    from peft import LoKrConfig
    from peft.tuners.lokr.layer import Linear as PeftLoKr

    cfg = LoKrConfig(r=rank, alpha=3.0, rank_dropout=0.3, target_modules=["0"], decompose_factor=factor)
    _factorised_against_peft(cfg, PeftLoKr, lokr_delta_activations, "lokr_", shape)


@pytest.mark.parametrize("shape, rank", [((64, 48), 2), ((32, 32), 8), ((256, 128), 4)])
def test_factorised_loha_is_the_hadamard_product_without_building_it(shape, rank):
    """`loha_delta_activations` against peft's LoHa path (the out x in change built, then a matmul): the rank r * r
    product where it is cheaper ((64, 48) at rank 2, (256, 128) at rank 4) and the built change where it is not."""
    from peft import LoHaConfig
    from peft.tuners.loha.layer import Linear as PeftLoHa

    cfg = LoHaConfig(r=rank, alpha=3.0, rank_dropout=0.3, target_modules=["0"])
    _factorised_against_peft(cfg, PeftLoHa, loha_delta_activations, "hada_", shape)
