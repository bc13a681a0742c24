"""`ltx-lora lora inspect | check | convert | verify | merge` on tiny checkpoints and LoRA variants made here.

Variants: the fixture user LoRA (ComfyUI layout, rank 4, alpha 8), the same converted to diffusers / peft by the
real converter, a kohya file (lora_unet_*, lora_down/up, .alpha), one with text-connector keys, LTX-2.0 LoRAs
(the fixture's 19B-named file, and one adapting the 2.0-only caption projection), one whose shapes do not fit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import assert_user_error, run_cli
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ltx_lora.errors import UserError
from ltx_lora.files import lora_file
from ltx_lora.files.safetensors_header import read_header
from ltx_lora.lora.check import APPLIED, IGNORED, MISMATCH, check
from ltx_lora.lora.convert import convert
from ltx_lora.lora.inspect import inspect_lora
from ltx_lora.lora.merge import merge
from ltx_lora.lora.verify import verify


def _pairs(path: Path) -> dict[str, torch.Tensor]:
    """{stem: strength-scaled delta B @ A * alpha/rank} of any layout: what the LoRA means."""
    lora = lora_file.read_lora(path)
    return {s: (u.float() * lora.modules[s].scale) @ d.float() for s, (d, u) in lora_file.load_pairs(lora).items()}


def _strong_lora(base: Path, stems: list[str], rank: int, alpha: float | None, seed: int = 1) -> dict:
    """A ComfyUI-layout LoRA on `stems` with deltas large enough to dominate bf16 rounding."""
    header = read_header(base)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for stem in stems:
        n_out, n_in = header.tensors[lora_file.base_weight_key(stem)].shape
        out[f"{stem}.lora_A.weight"] = (torch.randn(rank, n_in, generator=g) / n_in**0.5).to(torch.bfloat16)
        out[f"{stem}.lora_B.weight"] = (0.3 * torch.randn(n_out, rank, generator=g)).to(torch.bfloat16)
        if alpha is not None:
            out[f"{stem}.alpha"] = torch.tensor(float(alpha), dtype=torch.bfloat16)
    return out


@pytest.fixture(scope="session")
def variants(tiny_checkpoint, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lora-variants")
    dev = tiny_checkpoint("dev")
    user = tiny_checkpoint("user-lora")  # comfyui, rank 4, alpha 8 (alpha != rank)
    v = {"user": user, "ltx2": tiny_checkpoint("ltx2-lora")}
    v["diffusers"] = convert(user, "diffusers", root / "user_diffusers.safetensors").path
    v["peft"] = convert(user, "peft", root / "user_peft.safetensors").path
    sd = load_file(user)
    kohya = {}
    for key, t in sd.items():
        raw, role, _ = lora_file._split_key(key)
        name = lora_file.to_kohya(raw)
        kohya[name + {"down": ".lora_down.weight", "up": ".lora_up.weight", "alpha": ".alpha"}[role]] = t
    save_file(kohya, root / "user_kohya.safetensors")
    v["kohya"] = root / "user_kohya.safetensors"
    header = read_header(dev)
    blocks = [s for s in (k.removeprefix("model.").removesuffix(".weight") for k in header.tensors)
              if ".transformer_blocks.0." in s and s.endswith(("attn1.to_q", "attn1.to_v"))]
    connector = ["diffusion_model.video_embeddings_connector.transformer_1d_blocks.0.attn1.to_q",
                 "text_embedding_projection.video_aggregate_embed"]
    save_file(_strong_lora(dev, blocks + connector, 2, None), root / "with_connectors.safetensors")
    v["connectors"] = root / "with_connectors.safetensors"
    # LTX-2.0 LoRA adapting its caption projection, which 2.3 does not have (shapes from the 2.0 fixture).
    ltx2 = load_file(v["ltx2"])
    g = torch.Generator().manual_seed(3)
    for name, (n_out, n_in) in {"caption_projection.linear_1": (32, 64), "caption_projection.linear_2": (32, 32)}.items():
        ltx2[f"diffusion_model.{name}.lora_A.weight"] = torch.randn(8, n_in, generator=g).to(torch.bfloat16)
        ltx2[f"diffusion_model.{name}.lora_B.weight"] = torch.randn(n_out, 8, generator=g).to(torch.bfloat16)
    save_file(ltx2, root / "ltx-2-19b-lora-with-caption.safetensors")
    v["ltx2_caption"] = root / "ltx-2-19b-lora-with-caption.safetensors"
    # Made for a wider model: every in_features doubled.
    wide = {k: (torch.cat([t, t], dim=1) if k.endswith("lora_A.weight") else t) for k, t in sd.items()}
    save_file(wide, root / "wider_model_lora.safetensors")
    v["wide"] = root / "wider_model_lora.safetensors"
    # Strong attention + feed-forward LoRA with alpha != rank, for numeric comparisons.
    stems = [s for s in (k.removeprefix("model.").removesuffix(".weight") for k in header.tensors)
             if ".transformer_blocks." in s and s.endswith(("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj",
                                                            "ff.net.2")) and "connector" not in s]
    save_file(_strong_lora(dev, stems, 4, 2.0), root / "strong.safetensors")
    v["strong"] = root / "strong.safetensors"
    return v


# --- formats / inspect ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, fmt, naming", [
    ("user", "comfyui", "lora_A/lora_B"), ("diffusers", "diffusers", "lora_A/lora_B"), ("peft", "peft", "lora_A/lora_B"),
    ("kohya", "kohya", "lora_down/lora_up"),
])
def test_every_layout_parses_to_the_same_modules(variants, name, fmt, naming):
    lora = lora_file.read_lora(variants[name])
    assert (lora.format, lora.naming, lora.stray_keys) == (fmt, naming, [])
    reference = _pairs(variants["user"])
    deltas = _pairs(variants[name])
    assert set(deltas) == set(reference) and len(reference) == 48
    for stem, delta in reference.items():  # same strength everywhere: diffusers / peft have alpha folded into B
        torch.testing.assert_close(deltas[stem], delta, rtol=1e-2, atol=1e-4)


def test_diffusers_names_cover_the_modules_that_differ():
    pairs = {
        "diffusion_model.patchify_proj": "transformer.proj_in",
        "diffusion_model.audio_patchify_proj": "transformer.audio_proj_in",
        "diffusion_model.adaln_single.linear": "transformer.time_embed.linear",
        "diffusion_model.audio_adaln_single.emb.timestep_embedder.linear_1":
            "transformer.audio_time_embed.emb.timestep_embedder.linear_1",
        "diffusion_model.prompt_adaln_single.linear": "transformer.prompt_adaln.linear",
        "diffusion_model.av_ca_a2v_gate_adaln_single.linear": "transformer.av_cross_attn_video_a2v_gate.linear",
        "diffusion_model.transformer_blocks.3.audio_to_video_attn.to_out.0":
            "transformer.transformer_blocks.3.audio_to_video_attn.to_out.0",
        "diffusion_model.transformer_blocks.0.ff.net.0.proj": "transformer.transformer_blocks.0.ff.net.0.proj",
        "diffusion_model.video_embeddings_connector.transformer_1d_blocks.1.attn1.to_k":
            "connectors.video_connector.transformer_blocks.1.attn1.to_k",
        "text_embedding_projection.audio_aggregate_embed": "connectors.audio_text_proj_in",
        "text_embedding_projection.aggregate_embed": "connectors.text_proj_in",
    }
    for stem, diffusers_name in pairs.items():
        assert lora_file.to_diffusers(stem) == diffusers_name
        assert lora_file.from_diffusers(diffusers_name) == stem
        assert lora_file.from_kohya(lora_file.to_kohya(stem).removeprefix("lora_unet_")) == stem \
            if stem.startswith("diffusion_model.") else True


def test_inspect_reports_layout_rank_alpha_groups_and_version(variants):
    user = inspect_lora(variants["user"])
    assert (user.format, user.ranks, user.alphas, user.scales) == ("comfyui", {4: 48}, {"8": 48}, {"2": 48})
    assert list(user.groups) == ["video attention", "audio attention", "cross-modal attention"]
    assert user.groups["cross-modal attention"]["targets"] == [
        "audio_to_video_attn.to_k", "audio_to_video_attn.to_out.0", "audio_to_video_attn.to_q",
        "audio_to_video_attn.to_v", "video_to_audio_attn.to_k", "video_to_audio_attn.to_out.0",
        "video_to_audio_attn.to_q", "video_to_audio_attn.to_v"]
    diff = inspect_lora(variants["diffusers"])
    assert diff.alphas == {"none": 48} and diff.folded_alpha == 8.0 and diff.metadata["rank"] == "4"
    assert any("convert" in a for a in diff.advice)
    ltx2 = inspect_lora(variants["ltx2_caption"])
    assert ltx2.family == "2.0" and "other transformer" in ltx2.groups
    conn = inspect_lora(variants["connectors"])
    assert conn.groups["text connectors"]["modules"] == 2
    strong = inspect_lora(variants["strong"])
    assert {"video feed-forward", "audio feed-forward"} <= set(strong.groups)


def test_inspect_cli_json_and_bad_input(variants, tmp_path):
    res = run_cli("lora", "inspect", variants["kohya"], "--json")
    assert res.code == 0, res.err
    data = json.loads(res.out)
    assert (data["format"], data["naming"], data["modules"]) == ("kohya", "lora_down/lora_up", 48)
    from ltx_lora.lora.inspect import report_lines

    text = "\n".join(report_lines(inspect_lora(variants["user"])))
    assert "alpha/rank: x2" in text and "cross-modal attention" in text
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"not a safetensors file at all")
    assert_user_error(run_cli("lora", "inspect", bogus), "not a safetensors file")
    nolora = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, nolora)
    with pytest.raises(UserError, match="no LoRA weights"):
        inspect_lora(nolora)


# --- check --------------------------------------------------------------------------------------------------------


def test_check_clean_lora_and_every_comfyui_spelling(variants, tiny_checkpoint):
    dev = tiny_checkpoint("dev")
    for name in ("user", "kohya"):
        report = check(variants[name], dev)
        assert report.clean, report.findings
        assert {m.comfyui for m in report.modules} == {APPLIED}
    kohya = check(variants["kohya"], dev)
    assert {m.ltx_core for m in kohya.modules} == {IGNORED}  # ltx-core reads lora_A/lora_B under diffusion_model only
    user = check(variants["user"], dev)
    assert {m.ltx_core for m in user.modules} == {APPLIED}
    assert any("x2" in n for n in user.notes) and any("refuses" in n for n in user.notes)


def test_check_diffusers_layout_is_the_zero_effect_failure(variants, tiny_checkpoint):
    report = check(variants["diffusers"], tiny_checkpoint("dev"))
    assert not report.clean
    assert {m.comfyui for m in report.modules} == {IGNORED} and {m.diffusers for m in report.modules} == {APPLIED}
    assert "NO effect" in report.findings[0] and "lora convert" in report.findings[0]
    peft = check(variants["peft"], tiny_checkpoint("dev"))
    assert {m.comfyui for m in peft.modules} == {IGNORED}


def test_check_connectors_shapes_and_old_lora(variants, tiny_checkpoint):
    dev = tiny_checkpoint("dev")
    conn = check(variants["connectors"], dev)
    by_stem = {m.stem: m for m in conn.modules}
    video_conn = by_stem["diffusion_model.video_embeddings_connector.transformer_1d_blocks.0.attn1.to_q"]
    projection = by_stem["text_embedding_projection.video_aggregate_embed"]
    assert (video_conn.comfyui, video_conn.ltx_core, video_conn.diffusers) == (APPLIED, IGNORED, IGNORED)
    assert (projection.comfyui, projection.ltx_core, projection.diffusers) == (IGNORED, IGNORED, APPLIED)
    assert any("text connectors" in f for f in conn.findings)
    wide = check(variants["wide"], dev)
    assert {m.comfyui for m in wide.modules} == {MISMATCH} and "do not fit" in wide.findings[0]
    old = check(variants["ltx2_caption"], dev)
    assert old.lora_family == "2.0"
    assert any("2 of" in f and "silently ignored" in f for f in old.findings)
    assert any("retrain" in f and "0.2-0.4" in f for f in old.findings)
    plain_old = check(variants["ltx2"], dev)  # attention-only 2.0 LoRA: fits, but the version advice stands
    assert {m.comfyui for m in plain_old.modules} == {APPLIED} and "retrain" in plain_old.findings[0]


def test_check_cli_exit_codes(variants, tiny_checkpoint):
    dev = tiny_checkpoint("dev")
    res = run_cli("lora", "check", variants["diffusers"], "--base", dev)
    assert res.code == 1 and "silently ignored" in res.out and "0/48" in res.out, res.out
    assert_user_error(run_cli("lora", "check", variants["user"], "--base", variants["ltx2"]), "is a lora")
    data = check(variants["connectors"], dev).to_dict()
    assert data["clean"] is False and data["summary"]["comfyui"] == {"applied": 5, "ignored": 1}
    assert check(variants["user"], dev).clean
    with pytest.raises(UserError, match="not a file"):
        check(Path("/nonexistent.safetensors"), dev)


# --- convert ------------------------------------------------------------------------------------------------------


def test_convert_round_trips_and_alpha(variants, tmp_path):
    user = variants["user"]
    back = convert(variants["diffusers"], "comfyui", tmp_path / "back.safetensors").path
    keys = set(load_file(back))
    assert keys == {k for k in load_file(user) if not k.endswith(".alpha")}  # alpha already folded by diffusers
    for stem, delta in _pairs(user).items():
        torch.testing.assert_close(_pairs(back)[stem], delta, rtol=1e-2, atol=1e-4)
    kept = convert(variants["kohya"], "comfyui", tmp_path / "kept.safetensors").path
    assert load_file(kept).keys() == load_file(user).keys()  # .alpha preserved
    assert lora_file.read_lora(kept).modules["diffusion_model.transformer_blocks.0.attn1.to_q"].alpha == 8.0
    folded = convert(user, "comfyui", tmp_path / "folded.safetensors", fold_alpha=True).path
    with safe_open(str(folded), "pt") as f:
        assert not any(k.endswith(".alpha") for k in f.keys()) and f.metadata()["alpha"] == "8"
    conn = convert(variants["connectors"], "diffusers", tmp_path / "conn.safetensors").path
    assert "connectors.video_connector.transformer_blocks.0.attn1.to_q.lora_A.weight" in load_file(conn)
    assert "connectors.video_text_proj_in.lora_B.weight" in load_file(conn)
    peft = load_file(variants["peft"])
    assert "base_model.model.transformer_blocks.0.attn1.to_q.lora_A.weight" in peft


def test_convert_cli(variants, tmp_path):
    out = tmp_path / "x.safetensors"
    res = run_cli("lora", "convert", variants["user"], "--to", "diffusers", "-o", out)
    assert res.code == 0 and "comfyui -> diffusers" in res.out and out.is_file(), res.err
    assert "alpha folded into lora_B" in res.out
    plain = tmp_path / "plain.safetensors"  # no .alpha tensors in it: nothing "kept", nothing "folded"
    res = run_cli("lora", "convert", out, "--to", "comfyui", "-o", plain)
    assert res.code == 0 and "no .alpha tensors" in res.out and "kept" not in res.out, res.out
    with pytest.raises(UserError, match="exists"):
        convert(variants["user"], "diffusers", out)
    with pytest.raises(UserError, match="unknown target"):
        convert(variants["user"], "onnx", tmp_path / "y.safetensors")


# --- verify + merge -----------------------------------------------------------------------------------------------


def test_verify_measures_the_effect_per_group(variants, tiny_checkpoint):
    dev = tiny_checkpoint("dev")
    report = verify(variants["strong"], dev, device="cpu")
    assert report.has_effect and report.applied == 2 * 28
    groups = {g.group: g for g in report.groups}
    assert set(groups) == {"video attention", "audio attention", "cross-modal attention", "video feed-forward",
                           "audio feed-forward"}
    assert groups["video feed-forward"].video_change > 1e-3 and groups["audio feed-forward"].audio_change > 1e-3
    # Twice the strength, about twice the change (the change is small and close to linear).
    double = verify(variants["strong"], dev, strength=2.0, device="cpu")
    assert double.total.video_change == pytest.approx(2 * report.total.video_change, rel=0.2)
    none = verify(variants["ltx2_caption"], dev, device="cpu")
    assert none.unmatched and none.applied == 48  # the attention part still applies
    from ltx_lora.lora.verify import report_lines

    conn = verify(variants["connectors"], dev, device="cpu")
    assert conn.has_effect and len(conn.not_in_transformer) == 2
    assert "text connectors" in "\n".join(report_lines(conn))


def test_verify_reports_no_effect(variants, tiny_checkpoint, tmp_path):
    only_caption = {k: v for k, v in load_file(variants["ltx2_caption"]).items() if "caption_projection" in k}
    save_file(only_caption, tmp_path / "caption_only.safetensors")
    res = run_cli("lora", "verify", tmp_path / "caption_only.safetensors", "--base", tiny_checkpoint("dev"),
                  "--device", "cpu")
    assert res.code == 1 and "NO EFFECT" in res.out, res.out


def test_merge_equals_ltx_core_fusion_and_loads(variants, tiny_checkpoint, tmp_path):
    from ltx_lora.files.model_files import identify
    from ltx_lora.ltx import loader, probe

    dev = tiny_checkpoint("dev")
    folded = convert(variants["strong"], "comfyui", tmp_path / "folded.safetensors", fold_alpha=True).path
    res = run_cli("lora", "merge", variants["strong"], "--base", dev, "-o", tmp_path / "merged.safetensors",
                  "--strength", "0.5")
    assert res.code == 0 and "56 weights fused" in res.out, res.err
    merged = tmp_path / "merged.safetensors"
    assert identify(merged).kind == "ltx-2.3-dev"
    assert read_header(merged).metadata["config"] == read_header(dev).metadata["config"]
    cfg = loader.read_checkpoint_config(dev)["transformer"]
    x = probe.probe_inputs(cfg, "cpu", torch.float32)
    ours = probe.forward(loader.load_transformer(merged, "cpu", torch.bfloat16).float(), x)
    # ltx-core's own fusion of the alpha-folded file (it ignores .alpha) at the same strength; in bf16, because with
    # LoRAs its builder leaves the weights it does not touch in the stored dtype whatever dtype is asked for.
    theirs = probe.forward(loader.load_transformer(dev, "cpu", torch.bfloat16, loras=((folded, 0.5),)).float(), x)
    base = probe.forward(loader.load_transformer(dev, "cpu", torch.bfloat16).float(), x)
    for o, t, b in zip(ours, theirs, base):
        assert (t - b).norm() / b.norm() > 0.02  # the LoRA matters
        assert (o - t).norm() / (t - b).norm() < 0.05  # and both fusions agree (bf16 storage of the merged file)
    with pytest.raises(UserError, match="lora check"):
        merge(variants["wide"], dev, tmp_path / "w.safetensors")


def test_merge_fp8_base_requantises_and_refuses_unscaled(variants, tiny_checkpoint, tmp_path):
    from ltx_lora.ltx import loader, probe

    fp8 = tiny_checkpoint("dev-fp8")
    out = merge(variants["strong"], fp8, tmp_path / "merged-fp8.safetensors").path
    h = read_header(out)
    key = "model.diffusion_model.transformer_blocks.0.attn1.to_q"
    assert h.tensors[key + ".weight"].dtype == "F8_E4M3" and key + ".input_scale" in h.tensors
    with safe_open(str(out), "pt") as f, safe_open(str(fp8), "pt") as g:
        assert not torch.equal(f.get_tensor(key + ".weight_scale"), g.get_tensor(key + ".weight_scale"))
    cfg = loader.read_checkpoint_config(fp8)["transformer"]
    x = probe.probe_inputs(cfg, "cpu", torch.float32)
    merged = probe.forward(loader.load_transformer(out, "cpu", torch.float32), x)
    base = probe.forward(loader.load_transformer(fp8, "cpu", torch.float32), x)
    bf16_merged = tmp_path / "bf16-merged.safetensors"
    merge(variants["strong"], tiny_checkpoint("dev"), bf16_merged)
    # The FP8 fixture is the Dev weights quantised: FP8 merge ~ bf16 merge, far closer than to the un-merged base.
    reference = probe.forward(loader.load_transformer(bf16_merged, "cpu", torch.float32), x)
    for m, r, b in zip(merged, reference, base):
        assert (m - r).norm() < 0.5 * (r - b).norm()
    sd = load_file(fp8)
    save_file({k: v for k, v in sd.items() if not k.endswith("_scale")}, tmp_path / "ltx-2.3-22b-dev-fp8-noscale.safetensors",
              metadata=read_header(fp8).metadata)
    with pytest.raises(UserError, match="without weight_scale"):
        merge(variants["strong"], tmp_path / "ltx-2.3-22b-dev-fp8-noscale.safetensors", tmp_path / "n.safetensors")


# --- attach (sampling hooks: `ltx-lora validate --lora`) --------------------------------------------------------------


def test_attach_reads_every_layout_convert_writes(variants, tiny_checkpoint, tmp_path):
    """Converted to kohya (by the CLI) and diffusers, the same LoRA attaches with the same effect on the transformer's
    output: kohya keeps `.alpha` (x2), diffusers folds it into lora_B."""
    from ltx_lora.lora.attach import attach_lora, read_lora_file
    from ltx_lora.ltx import loader, probe

    dev, user = tiny_checkpoint("dev"), variants["user"]
    kohya = tmp_path / "user_kohya.safetensors"
    res = run_cli("lora", "convert", user, "--to", "kohya", "-o", kohya)
    assert res.code == 0 and "comfyui -> kohya" in res.out, res.err
    assert lora_file.read_lora(kohya).format == "kohya" and any(k.endswith(".alpha") for k in load_file(kohya))
    diffusers = convert(user, "diffusers", tmp_path / "user_diffusers.safetensors").path
    t = loader.load_transformer(dev, "cpu", torch.float32)
    x = probe.probe_inputs(loader.read_checkpoint_config(dev)["transformer"], "cpu", torch.float32)
    base = probe.forward(t, x)

    def attached(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
        with attach_lora(t, read_lora_file(path), 1.0, str(path)):
            return probe.forward(t, x)

    comfy = attached(user)
    assert (comfy[0] - base[0]).norm() / base[0].norm() > 1e-3  # the LoRA matters
    for path in (kohya, diffusers):
        for ours, ref in zip(attached(path), comfy):
            torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(probe.forward(t, x), base))  # hooks off: the base again
    # Text-side modules are not part of the transformer: skipped while most modules attach, and named otherwise.
    with attach_lora(t, read_lora_file(variants["connectors"]), 1.0) as lora:
        assert len(lora.handles) == 4
    text_only = {k: v for k, v in load_file(variants["connectors"]).items() if "text_embedding" in k}
    save_file(text_only, tmp_path / "text_only.safetensors")
    with pytest.raises(UserError, match="not part of the transformer"):
        attach_lora(t, read_lora_file(tmp_path / "text_only.safetensors"), 1.0)
    with pytest.raises(UserError, match="no name in the kohya layout"):
        convert(variants["connectors"], "kohya", tmp_path / "conn_kohya.safetensors")


def test_verify_says_per_consumer_what_the_file_does(variants, tiny_checkpoint, tmp_path):
    # A diffusers-layout file: our reader applies it, ComfyUI ignores every module (what `lora check` says).
    dev = tiny_checkpoint("dev")
    out = tmp_path / "user_diffusers.safetensors"
    assert run_cli("lora", "convert", variants["user"], "--to", "diffusers", "-o", out).code == 0
    res = run_cli("lora", "verify", out, "--base", dev, "--device", "cpu")
    assert res.code == 0, res.out + res.err
    assert "ComfyUI: ignores all 48 modules (no effect)" in res.out, res.out
    assert "ltx-core: ignores all 48 modules (no effect)" in res.out
    assert "diffusers: applies all 48 modules: changes the output by" in res.out
    assert "ltx-lora: applies all 48 modules: changes the output by" in res.out
    data = json.loads(run_cli("lora", "verify", out, "--base", dev, "--device", "cpu", "--json").out)
    by = {c["consumer"]: c for c in data["consumers"]}
    assert by["ComfyUI"]["applied"] == 0 and not by["ComfyUI"]["has_effect"] and by["diffusers"]["has_effect"]
    # The ComfyUI-layout original with alpha != rank: ComfyUI applies x2, ltx-core x1 (about half the change).
    report = verify(variants["user"], dev, device="cpu")
    by = {c.consumer: c for c in report.consumers}
    assert by["ComfyUI"].effect.video_change == pytest.approx(report.total.video_change)
    assert by["ltx-core"].effect.video_change == pytest.approx(report.total.video_change / 2, rel=0.2)


def test_our_lora_names_its_version_and_check_and_merge_hold_it_to_it(variants, tiny_checkpoint, tmp_path):
    """Our exports carry base_model and model_version (runtime/run.py::lora_metadata): inspect reads either, check
    fails the file against an LTX-2.0 base, and merge refuses to fuse it there."""
    from ltx_lora.files.model_files import identify

    tensors = load_file(variants["user"])
    ours = tmp_path / "my_run_lora.safetensors"  # nothing in the name says the version
    save_file(tensors, ours, metadata={"base_model": "LTX-2.3 22B Dev", "model_version": "2.3.0"})
    named_only = tmp_path / "older_export.safetensors"
    save_file(tensors, named_only, metadata={"base_model": "LTX-2.3 22B Dev"})
    assert (identify(ours).family, identify(ours).details["family_from"]) == ("2.3", "model_version metadata")
    assert (identify(named_only).family, identify(named_only).details["family_from"]) == ("2.3", "base_model metadata")
    old_base = tiny_checkpoint("ltx2-19b")
    report = check(ours, old_base)
    assert not report.clean and any("LTX-2.3" in f and "LTX-2.0" in f for f in report.findings), report.findings
    out = tmp_path / "merged.safetensors"
    assert_user_error(run_cli("lora", "merge", ours, "--base", old_base, "-o", out), "LTX-2.3", "LTX-2.0")
    assert not out.exists()
    assert check(ours, tiny_checkpoint("dev")).clean


# --- IC-LoRA export metadata ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("task, expected", [
    ({"video": {"conditions": [{"type": "reference", "downscale": 2, "temporal_scale": 2}]},
      "audio": {"role": "off"}}, (2, 2, "video")),
    ("v2v_ic", (1, 1, "video")),
    ("av2av_ic", (1, 1, "video,audio")),
    ("a2a_ic", (None, None, "audio")),
    ("t2av", None),
])
def test_ic_lora_metadata_is_what_ic_lora_loaders_read(task, expected, tiny_checkpoint, tmp_path):
    """An exported IC-LoRA carries the reference settings in the header keys and spellings that ltx-pipelines'
    IC-LoRA pipeline and ComfyUI's IC-LoRA nodes read (their reading re-expressed below); `lora inspect` shows
    them; a LoRA without a reference has none of them."""
    from ltx_lora.config import parse_config
    from ltx_lora.lora.inspect import report_lines
    from ltx_lora.runtime.run import resolve_run

    run = resolve_run(parse_config({"model": {"checkpoint": str(tiny_checkpoint("dev"))}, "task": task}))
    meta = run.lora_metadata(250, {})
    path = tmp_path / "lora.safetensors"
    save_file(load_file(str(tiny_checkpoint("user-lora"))), str(path), metadata=meta)
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()

    def pipelines(key: str) -> int:  # ltx_pipelines.iclora_utils: int(metadata.get(key, 1))
        return int(header.get(key, 1))

    def comfyui_core() -> int:  # comfy_extras/nodes_lt.py GetICLoRAParameters
        return max(1, round(float(header.get("reference_downscale_factor", 1))))

    def comfyui_ltxvideo() -> float:  # ComfyUI-LTXVideo LTXICLoRALoaderModelOnly (1.0 when missing)
        try:
            return float(header["reference_downscale_factor"])
        except (KeyError, ValueError, TypeError):
            return 1.0

    report = inspect_lora(path)
    if expected is None:
        assert not [k for k in header if k.startswith("reference_")] and report.kind != "ic-lora"
        assert "IC-LoRA" not in "\n".join(report_lines(report))
        return
    down, temporal, modalities = expected
    assert header["reference_modalities"] == modalities and report.kind == "ic-lora"
    if down is None:  # an audio reference: nothing for the video readers, who default to 1
        assert "reference_downscale_factor" not in header and pipelines("reference_downscale_factor") == 1
    else:
        assert pipelines("reference_downscale_factor") == down == comfyui_core() == comfyui_ltxvideo()
        assert pipelines("reference_temporal_scale_factor") == temporal
        assert header["reference_spatial_scale_factor"] == str(down)  # the official trainer's second spelling
    if isinstance(task, dict):  # the command, once
        res = run_cli("lora", "inspect", path)
        assert res.code == 0, res.err
        text = res.out
    else:
        text = "\n".join(report_lines(report))
    line = next(ln for ln in text.splitlines() if ln.startswith("IC-LoRA"))
    if down is not None:
        assert f"reference_downscale_factor {down}" in line
    assert ("reference audio" in line) == ("audio" in modalities)
    assert ("1/2 of its frame groups (reference_temporal_scale_factor 2)" in line) == (temporal == 2)


def test_urls_given_as_lora_or_base_get_the_download_sentence_as_typed(tmp_path):
    """Path options see the string as typed: a URL keeps its `//` in the sentence (a Path() would make it
    https:/...) and the reference is named for what it is, before any file is opened."""
    url = "https://huggingface.co/Lightricks/LTX-2.3/blob/main/ltx-2.3-22b-dev.safetensors"
    lora = tmp_path / "missing.safetensors"
    for args, label in ((["lora", "check", lora, "--base", url], "--base"),
                        (["lora", "verify", lora, "--base", url], "--base"),
                        (["lora", "merge", lora, "--base", url, "-o", tmp_path / "m.safetensors"], "--base"),
                        (["lora", "inspect", "https://example.com/x.safetensors"], "FILE"),
                        (["validate", tmp_path / "c.yaml", "--lora", "https://example.com/x.safetensors"], "--lora")):
        res = run_cli(*args)
        assert_user_error(res, label)
        assert "https://" in res.err and "https:/" not in res.err.replace("https://", ""), res.err  # never collapsed


# --- mix ------------------------------------------------------------------------------------------------------------


def test_mix_takes_each_streams_layers_from_its_file_with_its_strength(variants, tiny_checkpoint, tmp_path):
    """`lora mix --video A --audio B`: the video stream's layers (attn1, attn2, ff, audio_to_video_attn) apply A's
    change, the audio stream's (audio_*, video_to_audio_attn) B's, each at its file's strength (A stores alpha 2 at
    rank 4; B is a kohya file); the result is a clean ComfyUI LoRA for the base, and a file without one stream's
    layers is refused."""
    dev = tiny_checkpoint("dev")
    a = variants["strong"]
    stems = list(lora_file.read_lora(a).modules)
    b = tmp_path / "b_kohya.safetensors"
    convert_b = tmp_path / "b.safetensors"
    save_file(_strong_lora(dev, stems, 2, None, seed=7), convert_b)
    convert(convert_b, "kohya", b)
    out = tmp_path / "mixed.safetensors"
    res = run_cli("lora", "mix", "--video", a, "--audio", b, "-o", out)
    assert res.code == 0, res.err
    streams = {s: lora_file.module_stream(s) for s in stems}
    assert {"video", "audio"} <= set(streams.values()) and None not in streams.values()
    n_video = sum(v == "video" for v in streams.values())
    assert f"{n_video} video layers from {a.name}, {len(stems) - n_video} audio layers from {b.name}" in res.out
    mixed, want_a, want_b = _pairs(out), _pairs(a), _pairs(b)
    assert set(mixed) == set(stems)
    for stem, delta in mixed.items():
        want = want_a[stem] if streams[stem] == "video" else want_b[stem]
        assert torch.allclose(delta, want, rtol=1e-2, atol=1e-3), stem
    assert check(out, dev).clean
    with safe_open(str(out), "pt") as f:
        assert json.loads(f.metadata()["ltx_lora_mixed_from"]) == {"video": a.name, "audio": b.name}
    video_only = {k: v for k, v in load_file(str(a)).items() if lora_file.module_stream(k.rsplit(".", 2)[0]) == "video"}
    save_file(video_only, tmp_path / "video_only.safetensors")
    assert_user_error(run_cli("lora", "mix", "--video", a, "--audio", tmp_path / "video_only.safetensors",
                              "-o", tmp_path / "x.safetensors"), "adapts no layer of the audio stream")
    assert_user_error(run_cli("lora", "mix", "--video", a, "--audio", b, "-o", out), "exists")
    damaged = load_file(str(a))
    damaged[next(k for k in damaged if "audio_attn1" in k and k.endswith("lora_B.weight"))][0, 0] = float("inf")
    save_file(damaged, tmp_path / "inf.safetensors")
    assert_user_error(run_cli("lora", "mix", "--video", a, "--audio", tmp_path / "inf.safetensors",
                              "-o", tmp_path / "y.safetensors"), "NaN or infinite values")


# --- resize ---------------------------------------------------------------------------------------------------------


def test_resize_keeps_each_layers_closest_change_of_the_lower_rank(variants, tiny_checkpoint, tmp_path):
    """`lora resize --rank 2` of a rank-4 LoRA with alpha 2: every layer's change is the best rank-2 approximation
    of the file's (scale included; Eckart-Young: its error is the dropped singular values), the reported share
    kept is the singular values' (overall = over all layers), the file is smaller and clean for the base."""
    dev, src = tiny_checkpoint("dev"), variants["strong"]
    out = tmp_path / "small.safetensors"
    res = run_cli("lora", "resize", src, "--rank", "2", "-o", out)
    assert res.code == 0, res.err
    before, after = _pairs(src), _pairs(out)
    assert set(after) == set(before)
    kept_total = whole_total = 0.0
    for stem, delta in before.items():
        s = torch.linalg.svdvals(delta.double())
        u, _, vh = torch.linalg.svd(delta.double())
        best = (u[:, :2] * s[:2]) @ vh[:2]
        assert (after[stem].double() - best).norm() <= 1e-2 * best.norm(), stem  # bf16 factors: ~2^-8 rounding
        kept_total, whole_total = kept_total + float((s[:2] ** 2).sum()), whole_total + float((s ** 2).sum())
    assert f"kept {(kept_total / whole_total) ** 0.5:.1%} of the change" in res.out, res.out
    assert "at rank 2 (was 4)" in res.out and out.stat().st_size < src.stat().st_size
    assert {m.rank for m in lora_file.read_lora(out).modules.values()} == {2}
    assert check(out, dev).clean
    assert_user_error(run_cli("lora", "resize", src, "--rank", "4", "-o", tmp_path / "x.safetensors"),
                      "nothing to cut")
    damaged = load_file(str(src))
    damaged[next(k for k in damaged if k.endswith("lora_A.weight"))][0, 0] = float("nan")
    save_file(damaged, tmp_path / "nan.safetensors", metadata=lora_file.read_lora(src).metadata)
    assert_user_error(run_cli("lora", "resize", tmp_path / "nan.safetensors", "--rank", "2", "-o",
                              tmp_path / "z.safetensors"), "NaN or infinite values")
    assert not (tmp_path / "z.safetensors").exists()


# --- post-hoc EMA -------------------------------------------------------------------------------------------------


def test_ema_averages_checkpoints_oldest_first_by_their_step(tmp_path):
    """`lora ema` = musubi-tuner's post-hoc EMA re-expressed: ordered by each file's training step (written here in
    another order, so modification times disagree), the first file the start, each later one blended in with the
    decay moving linearly from --beta to --beta2, every tensor on its own; a file storing alpha (kohya layout, alpha
    = rank / 2) is averaged with its strength folded in."""
    stems = ["transformer_blocks.0.attn1.to_q", "transformer_blocks.0.audio_attn1.to_k"]
    g = torch.Generator().manual_seed(0)
    files, expected = {}, None
    for step in (300, 100, 200):  # written newest first
        pairs = {s: (torch.randn(4, 32, generator=g), torch.randn(32, 4, generator=g)) for s in stems}
        files[step] = (tmp_path / f"lora_{step}.safetensors", pairs)
        if step == 200:  # kohya layout with alpha 2 at rank 4: strength 0.5
            tensors = {}
            for s, (down, up) in pairs.items():
                name = "lora_unet_" + s.replace(".", "_")
                tensors |= {f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up,
                            f"{name}.alpha": torch.tensor(2.0)}
            pairs = {s: (down, up * 0.5) for s, (down, up) in pairs.items()}
            files[step] = (files[step][0], pairs)
        else:
            tensors = {f"diffusion_model.{s}.lora_{ab}.weight": t for s, (down, up) in pairs.items()
                       for ab, t in (("A", down), ("B", up))}
        save_file(tensors, str(files[step][0]), metadata={"step": str(step)})
    for step, b in ((100, None), (200, 0.9), (300, 0.5)):  # decays: 0.9 at the second file, 0.5 at the last
        pairs = files[step][1]
        expected = pairs if b is None else {s: tuple(e * b + t * (1 - b) for e, t in zip(expected[s], pairs[s]))
                                             for s in stems}
    out = tmp_path / "ema.safetensors"
    res = run_cli("lora", "ema", *[files[s][0] for s in (300, 100, 200)], "--beta", "0.9", "--beta2", "0.5", "-o", out)
    assert res.code == 0, res.err
    assert "lora_100.safetensors (step 100), lora_200.safetensors (step 200), lora_300.safetensors (step 300)" in \
        res.out and "decay 0.9 -> 0.5" in res.out, res.out
    got = load_file(str(out))
    for s in stems:
        down, up = expected[s]
        assert torch.allclose(got[f"diffusion_model.{s}.lora_A.weight"], down, atol=1e-6), s
        assert torch.allclose(got[f"diffusion_model.{s}.lora_B.weight"], up, atol=1e-6), s
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert meta["step"] == "300" and json.loads(meta["ltx_lora_post_hoc_ema"])["beta2"] == 0.5
    # refusals: one file, a decay outside [0, 1], another run's layers, an output that is an input
    assert_user_error(run_cli("lora", "ema", files[100][0], "-o", tmp_path / "x.safetensors"), "two or more")
    assert_user_error(run_cli("lora", "ema", files[100][0], files[200][0], "--beta", "1.5", "-o",
                              tmp_path / "x.safetensors"), "between 0 and 1")
    other = tmp_path / "other.safetensors"
    save_file({"diffusion_model.transformer_blocks.1.attn1.to_q.lora_A.weight": torch.zeros(4, 32),
               "diffusion_model.transformer_blocks.1.attn1.to_q.lora_B.weight": torch.zeros(32, 4)}, str(other),
              metadata={"step": "400"})
    assert_user_error(run_cli("lora", "ema", files[100][0], other, "-o", tmp_path / "x.safetensors"),
                      "adapt other layers")
    assert_user_error(run_cli("lora", "ema", files[100][0], files[200][0], "-o", files[100][0]),
                      "would overwrite an input")
    twin = tmp_path / "copy_of_100.safetensors"
    twin.write_bytes(files[100][0].read_bytes())
    assert_user_error(run_cli("lora", "ema", files[100][0], twin, "-o", tmp_path / "x.safetensors"),
                      "both record step 100")
    assert not (tmp_path / "x.safetensors").exists()
