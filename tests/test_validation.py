"""Validation samples and the training report on the tiny LTX-2.3 fixture: in-loop validation end to end on CPU,
the `validate` command (LoRA files, fast preview, refusals), decoded media, health checks on fabricated bad
samples, the report's loss notes, and the report page in a real headless Chromium."""

from __future__ import annotations

import json
import math
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import yaml
from conftest import BUCKETS, assert_user_error, run_cli
from PIL import Image

PROMPTS = ["a red ball bouncing on a wooden floor", "waves rolling onto a beach at dusk"]
# Tiny and quick, but every guidance pass runs: CFG, STG (block 1 of the 2-block model) and modality guidance.
VALIDATION = {"prompts": PROMPTS, "every": 2, "resolution": "64x64x9", "steps": 2, "stg_blocks": [1]}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_checkpoint, tiny_gemma, scanned_dataset):
    """The session's scanned clips preprocessed once (validation prompts and negative prompt cached with them)."""
    root = tmp_path_factory.mktemp("val")
    cfg = {"output_dir": str(root / "run"),
           "model": {"checkpoint": str(tiny_checkpoint("dev")), "text_encoder": str(tiny_gemma)},
           "data": {"dataset": str(scanned_dataset), "buckets": BUCKETS, "cache_dir": str(root / "cache")},
           "train": {"steps": 2, "learning_rate": 1e-3, "mixed_precision": "fp32"},
           "checkpoints": {"every": 2}, "validation": VALIDATION, "logging": {"tensorboard": False}}
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = run_cli("preprocess", path)
    assert res.code == 0, res.err
    return root, cfg


@pytest.fixture(scope="module")
def trained(prepared):
    """A 2-step run validated at step 0 and step 2, logged to TensorBoard. No Gemma anywhere: prompt features come
    from the cache."""
    root, cfg = prepared
    no_gemma = {**cfg, "model": {**cfg["model"], "text_encoder": str(root / "no-gemma-here")},
                "logging": {"tensorboard": True}}
    (root / "train.yaml").write_text(yaml.safe_dump(no_gemma))
    res = run_cli("train", root / "train.yaml")
    assert res.code == 0, res.err
    return root / "run", res


def write(root: Path, name: str, cfg: dict, **validation) -> Path:
    cfg = {**cfg, "validation": {**cfg["validation"], **validation}}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def decode(mp4: Path) -> dict:
    """Decode every frame and audio sample back with PyAV."""
    with av.open(str(mp4)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        info = {"vcodec": v.codec_context.name, "acodec": a.codec_context.name, "rate": a.codec_context.sample_rate,
                "channels": a.codec_context.channels, "size": (v.codec_context.width, v.codec_context.height)}
        frames, audio = [], []
        for frame in c.decode(v, a):
            if isinstance(frame, av.VideoFrame):
                frames.append(frame.to_ndarray(format="rgb24"))
            else:
                audio.append(frame.to_ndarray())
    info["frames"] = np.stack(frames)
    info["audio"] = np.concatenate(audio, axis=-1)
    return info


# --- in-loop validation -----------------------------------------------------------------------------------------


def test_training_validates_at_step_0_and_every_n_steps(trained):
    run, res = trained
    assert "validation step_000000: 2 samples" in res.err and "validation step_000002: 2 samples" in res.err
    assert all(line.strip() for line in res.err.splitlines()), res.err  # a log: no empty lines left by the bars
    for label, step in (("step_000000", 0), ("step_000002", 2)):
        for i, prompt in enumerate(PROMPTS):
            stem = run / "samples" / label / f"p{i}"
            rec = json.loads(stem.with_suffix(".json").read_text())
            assert rec["prompt"] == prompt and rec["step"] == step and rec["seed"] == 42 and rec["lora_file"] is None
            s = rec["settings"]
            assert (s["cfg"], s["stg_scale"], s["stg_blocks"], s["steps"], s["audio"]) == (4.0, 1.0, [1], 2, True)
            assert (s["width"], s["height"], s["frames"]) == (64, 64, 9)
            assert rec["seconds"] > 0 and rec["seconds"] >= rec["seconds_sampling"]
            assert rec["health"]["status"] in ("ok", "bad")  # random weights: judged, whatever it shows
            media = decode(stem.with_suffix(".mp4"))
            assert (media["vcodec"], media["acodec"]) == ("h264", "aac")
            assert media["frames"].shape == (9, 64, 64, 3)
            assert (media["rate"], media["channels"]) == (48000, 2)  # the LTX-2.3 vocoder's output
            seconds = media["audio"].shape[-1] / media["rate"]
            assert 0.3 < seconds < 0.45, seconds  # 9 frames at 24 fps = 0.375 s of sound
            sheet = np.asarray(Image.open(stem.with_suffix(".png")))
            assert sheet.shape[0] > 64 and sheet.std() > 0
    assert (run / "report.html").is_file() and (run / "lora.safetensors").is_file()


def test_validation_does_not_change_training(prepared, trained, tmp_path):
    """Sampling uses its own generators and puts the model back in training mode: the LoRA is bit-identical."""
    _, cfg = prepared
    res = run_cli("train", write(tmp_path, "noval", {**cfg, "output_dir": str(tmp_path / "noval")}, every=None,
                                 prompts=[]))
    assert res.code == 0, res.err
    assert "validation step_" not in res.err
    # no validation prompts: still a report, with the loss curves and no sample grid
    page = (tmp_path / "noval" / "report.html").read_text()
    assert "video loss" in page and "audio loss" in page and "<svg" in page and "<video" not in page
    from safetensors.torch import load_file

    a, b = load_file(str(trained[0] / "lora.safetensors")), load_file(str(tmp_path / "noval" / "lora.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_report_opens_in_chromium_with_playable_videos(trained):
    from browser import APT_HINT, find_chromium, load_page

    if find_chromium() is None:
        pytest.skip(f"no Chromium: {APT_HINT}")
    page = load_page(trained[0] / "report.html")
    assert page.errors == []
    assert len(page.videos) == 4, page.videos  # 2 prompts x (step 0, step 2)
    for v in page.videos:
        assert v["error"] is None and v["readyState"] >= 1 and v["duration"] > 0.3 and v["width"] == 64, v
    assert page.videos[0]["src"].endswith("samples/step_000000/p0.mp4")  # step 0 is the first column
    assert len(page.images) == 4 and all(i["naturalWidth"] > 0 for i in page.images), page.images
    html = (trained[0] / "report.html").read_text()
    assert "video loss" in html and "audio loss" in html and "<svg" in html and "stg_blocks" in html
    assert 'src="samples/' in html and str(trained[0]) + "/samples" not in html  # relative links only


def _attr_values(page: str, tag: str, attr: str) -> list[str]:
    import re

    return [m.group(1) for t in re.findall(rf"<{tag}\b[^>]*>", page) for m in [re.search(rf'{attr}="([^"]*)"', t)]
            if m]


def test_report_videos_have_posters_and_the_grid_scrolls(trained):
    import re

    run = trained[0]
    page = (run / "report.html").read_text()
    videos = re.findall(r"<video\b[^>]*>", page)
    posters = _attr_values(page, "video", "poster")
    assert len(videos) == 4 and len(posters) == 4, videos  # every video shows a picture before it plays
    for poster in posters:
        assert not poster.startswith("/") and (run / poster).is_file(), poster
        assert np.asarray(Image.open(run / poster)).std() > 0
    # many checkpoint columns: the grid scrolls sideways inside its own box instead of widening the page
    assert re.search(r"\.gridwrap\{[^}]*overflow-x:auto", page) and "<div class='gridwrap'><table class='grid'>" in page


def test_tensorboard_gets_each_validation_sample_and_the_health_table(trained):
    import io

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trained[0] / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    for i in range(len(PROMPTS)):
        videos = events.Images(f"validation/p{i}/video")  # the sample's video, animated (no sound)
        assert [e.step for e in videos] == [0, 2]
        for e in videos:
            with Image.open(io.BytesIO(e.encoded_image_string)) as gif:
                assert gif.format == "GIF" and gif.n_frames == 9 and gif.size == (64, 64) == (e.width, e.height)
        sheets = events.Images(f"validation/p{i}/frames")  # frames and waveform
        assert [e.step for e in sheets] == [0, 2]
        with Image.open(io.BytesIO(sheets[0].encoded_image_string)) as png:
            assert png.size == Image.open(trained[0] / "samples/step_000000" / f"p{i}.png").size
    health = events.Tensors("validation/health/text_summary")
    assert [e.step for e in health] == [0, 2] and b"| prompt | health |" in health[0].tensor_proto.string_val[0]
    assert PROMPTS[0][:20].encode() in health[0].tensor_proto.string_val[0]


# --- the validate command ---------------------------------------------------------------------------------------


def test_a_second_validate_into_the_same_folder_shows_only_its_own_columns(prepared, trained, tmp_path):
    """Two validate commands, one output folder, different options: each report shows what its command sampled."""
    _, cfg = prepared
    one = write(tmp_path, "one", cfg, prompts=PROMPTS[:1])
    lora = trained[0] / "lora.safetensors"
    other = tmp_path / "other.safetensors"
    other.write_bytes(lora.read_bytes())
    out = tmp_path / "out"
    res = run_cli("validate", one, "--lora", lora, "--steps", "3", "--out", out)
    assert res.code == 0, res.err
    first = (out / "report.html").read_text()
    assert "samples/base/p0.mp4" in first and "samples/lora/p0.mp4" in first and ", 3 steps," in first
    res = run_cli("validate", one, "--no-base", "--lora", other, "--steps", "2", "--out", out)
    assert res.code == 0, res.err
    page = (out / "report.html").read_text()
    assert _attr_values(page, "source", "src") == ["samples/other/p0.mp4"]  # not base, not the first command's lora
    assert ", 2 steps," in page and ", 3 steps," not in page
    assert "validation of 1 LoRA file" in page and "base model" not in page.split("<h2>Loss")[0]
    json_steps = {json.loads(p.read_text())["settings"]["steps"] for p in (out / "samples/other").glob("*.json")}
    assert json_steps == {2}




def test_validate_command_samples_a_lora_file_in_fast_preview(prepared, trained, tiny_checkpoint, synthetic_clips,
                                                              tmp_path):
    _, cfg = prepared
    # image-to-video: the first frame comes from a reference image
    one = write(tmp_path, "one", cfg, prompts=PROMPTS[:1], reference_image=str(synthetic_clips / "still_96x64.png"))
    lora = trained[0] / "lora.safetensors"
    res = run_cli("validate", one, "--no-base", "--lora", lora, "--preview-lora", tiny_checkpoint("distilled-lora-384"),
                  "--out", tmp_path / "out")
    assert res.code == 0, res.err
    rec = json.loads((tmp_path / "out/samples/lora/p0.json").read_text())
    assert rec["step"] == 2 and rec["lora_file"] == str(lora)  # the step comes from the LoRA's metadata
    s = rec["settings"]  # Dev + distilled LoRA: 8 steps, no guidance, strength 0.55
    assert s["preview"] and (s["steps"], s["cfg"], s["stg_scale"], s["preview_strength"]) == (8, 1.0, 0.0, 0.55)
    assert s["reference_image"].endswith("still_96x64.png")
    assert decode(tmp_path / "out/samples/lora/p0.mp4")["frames"].shape == (9, 64, 64, 3)
    assert not (tmp_path / "out/samples/base").exists() and (tmp_path / "out/report.html").is_file()


def test_two_checkpoints_of_one_run_validate_side_by_side(prepared, tmp_path):
    """Checkpoint LoRA files are named by run and step (`<run>_step_000001.safetensors`): two checkpoints of one
    run are two columns of `validate` (they were both `lora.safetensors`, refused as two files of one name)."""
    _, cfg = prepared
    run = tmp_path / "steps"
    path = write(tmp_path, "steps", {**cfg, "output_dir": str(run), "checkpoints": {"every": 1}}, every=None,
                 prompts=PROMPTS[:1])
    res = run_cli("train", path)
    assert res.code == 0, res.err
    ckpt = [run / "checkpoints" / f"step_00000{s}" / f"steps_step_00000{s}.safetensors" for s in (1, 2)]
    assert all(p.is_file() for p in ckpt) and (run / "lora.safetensors").is_file()  # the final keeps its name
    res = run_cli("validate", path, "--no-base", "--lora", ckpt[0], "--lora", ckpt[1], "--steps", "2",
                  "--out", tmp_path / "out")
    assert res.code == 0, res.err
    for s, lora in zip((1, 2), ckpt):
        rec = json.loads((tmp_path / "out" / "samples" / lora.stem / "p0.json").read_text())
        assert rec["step"] == s and rec["lora_file"] == str(lora)


def test_a_lora_file_applies_through_hooks_and_comes_off_exactly(tiny_checkpoint):
    from ltx_lora.lora.attach import attach_lora, read_lora_file
    from ltx_lora.ltx.loader import load_transformer

    t = load_transformer(tiny_checkpoint("dev"), dtype=torch.float32)
    lin = t.transformer_blocks[1].audio_attn1.to_q
    x = torch.randn(2, 5, lin.in_features, generator=torch.Generator().manual_seed(0))
    before = lin(x)
    pairs = read_lora_file(tiny_checkpoint("user-lora"))
    pair = pairs["transformer_blocks.1.audio_attn1.to_q"]
    assert pair.scale == 2.0  # alpha 8 / rank 4, applied as ComfyUI applies it
    with attach_lora(t, pairs, 0.5):
        during = lin(x)
    expected = before + 0.5 * pair.scale * (x @ pair.down.float().T @ pair.up.float().T)
    assert torch.allclose(during, expected, atol=1e-5)
    assert torch.equal(lin(x), before)  # off again, weights untouched


def test_sampler_keeps_the_reference_frame_and_sizes_the_audio(tiny_checkpoint):
    """One sample through ltx-core's parts with every guidance pass: the conditioned first latent frame comes out
    exactly as given, the rest is denoised, and the audio latent covers the clip's duration (25 frames/s)."""
    from ltx_lora.ltx.loader import load_transformer
    from ltx_lora.ltx.sampling import Guidance, Prompt, SampleRequest, sample_latents, sigma_schedule

    t = load_transformer(tiny_checkpoint("dev"), dtype=torch.float32)
    g = torch.Generator().manual_seed(0)

    def prompt() -> Prompt:
        return Prompt(torch.randn(1, 256, 32, generator=g), torch.randn(1, 256, 16, generator=g),
                      torch.ones(1, 256, dtype=torch.int64))

    first = torch.randn(1, 128, 1, 2, 3, generator=g)
    guide = Guidance(cfg=4.0, stg=1.0, stg_blocks=[1], rescale=0.7, modality=3.0)
    req = SampleRequest(width=96, height=64, frames=17, fps=24.0, seed=3, sigmas=sigma_schedule(3),
                        video_guidance=guide, audio_guidance=guide, first_frame=first)
    pos, neg = prompt(), prompt()
    video, audio = sample_latents(t, req, pos, neg, device=torch.device("cpu"), dtype=torch.float32)
    assert video.shape == (1, 128, 3, 2, 3) and torch.isfinite(video).all()
    assert torch.equal(video[:, :, :1], first)
    assert audio.shape == (1, 8, round(17 / 24 * 25), 16)
    again, _ = sample_latents(t, req, pos, neg, device=torch.device("cpu"), dtype=torch.float32)
    assert torch.equal(again, video)  # same prompt, seed and settings: the same sample, checkpoint after checkpoint


def test_the_cache_follows_the_model_file_content_not_its_name(prepared, trained, tiny_checkpoint, tmp_path):
    """A renamed copy of the model file keeps its cache (train and validate use it, preprocess re-encodes nothing);
    another model file (the FP8 variant) is still refused."""
    import shutil

    root, cfg = prepared
    shutil.copytree(cfg["data"]["cache_dir"], tmp_path / "cache")  # the module's cache stays as it is
    renamed = tmp_path / "my model (copy).safetensors"
    shutil.copyfile(tiny_checkpoint("dev"), renamed)
    moved = {**cfg, "output_dir": str(tmp_path / "run"), "data": {**cfg["data"], "cache_dir": str(tmp_path / "cache")},
             "model": {"checkpoint": str(renamed), "text_encoder": str(root / "no-gemma-here")},
             "train": {**cfg["train"], "steps": 1}, "checkpoints": {"every": 1}}
    config = write(tmp_path, "renamed", moved, prompts=PROMPTS[:1], every=1)
    res = run_cli("train", config)
    assert res.code == 0, res.err
    assert "validation step_000001: 1 samples" in res.err
    res = run_cli("validate", config, "--no-base", "--lora", trained[0] / "lora.safetensors", "--steps", "2",
                  "--out", tmp_path / "val")
    assert res.code == 0, res.err
    res = run_cli("preprocess", config)  # Gemma is not there: every text is cached too
    assert res.code == 0, res.err
    assert "already cached" in res.out and "used 0 clips" not in res.out
    used = res.out.split("used ")[1].split(" clips")[0]
    assert f"({used} already cached)" in res.out, res.out
    other = {**moved, "output_dir": str(tmp_path / "other"),
             "model": {**moved["model"], "checkpoint": str(tiny_checkpoint("dev-fp8"))}}
    config = write(tmp_path, "other", other, prompts=PROMPTS[:1], every=1)
    assert_user_error(run_cli("train", config), "was made with another model file")
    assert_user_error(run_cli("validate", config, "--no-base", "--lora", trained[0] / "lora.safetensors", "--steps",
                              "2", "--out", tmp_path / "val2"), "was made with another model file")


def test_distilled_model_with_distilled_lora_is_refused(prepared, tiny_checkpoint, tmp_path):
    _, cfg = prepared
    distilled = {**cfg, "model": {**cfg["model"], "checkpoint": str(tiny_checkpoint("distilled"))}}
    res = run_cli("validate", write(tmp_path, "d", distilled), "--preview-lora", tiny_checkpoint("distilled-lora-384"))
    assert_user_error(res, "distillation baked in", "strength 0.5-0.6")


def test_bad_validation_settings_are_refused(prepared, tiny_checkpoint, tmp_path):
    from rich.console import Console

    from ltx_lora.config import parse_config
    from ltx_lora.errors import UserError
    from ltx_lora.runtime.run import resolve_run
    from ltx_lora.sample.validate import validate_loras

    _, cfg = prepared

    def refused(*needles: str, loras=(), preview=None, **validation) -> None:
        c = parse_config({**cfg, "validation": {**cfg["validation"], **validation}})
        with pytest.raises(UserError) as e:
            validate_loras(resolve_run(c, preview_lora=preview), [Path(p) for p in loras], out=tmp_path / "out",
                           base=True, console=Console(quiet=True))
        assert all(n in str(e.value) for n in needles), str(e.value)

    refused("stg_blocks [29]", "it has 2", stg_blocks=[29])
    refused("no cached text features", "ltx-lora preprocess", prompts=["never preprocessed"])
    refused("does not exist", loras=[tmp_path / "nope.safetensors"])
    refused("not the distilled LoRA", preview=str(tiny_checkpoint("user-lora")))
    refused("must be one WxHxF", resolution="64x64x9;96x64x9")
    assert not (tmp_path / "out").exists()


# --- health checks on fabricated samples ------------------------------------------------------------------------


def _good_sample(frames: int = 9, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Real-looking content: the synthetic-clip renderer (gradient, moving disc and square) and its tone."""
    import random

    from ltx_lora.fixtures.clips import _render_frame, _style, _tone

    style = _style(random.Random(0))
    video = np.stack([_render_frame(size, size, i / 24, style) for i in range(frames)])
    wave = _tone(48000, 2, 18000, 0, style)
    return torch.from_numpy(video), torch.from_numpy(wave)


def test_health_passes_real_looking_content():
    from ltx_lora.sample.health import check_sample

    video, wave = _good_sample()
    h = check_sample(video, wave, nonfinite=[], step=100)
    assert h.status == "ok", h.problems
    assert h.metrics["video"]["high_frequency"] < 0.25


@pytest.mark.parametrize("case, needle", [
    ("noise", "noise"), ("black", "black"), ("flat", "flat colour"), ("nan", "NaN/inf"),
    ("silent", "silent"), ("clipped", "clips"), ("drift", "turned to noise"),
])
def test_health_catches_fabricated_bad_samples(case, needle):
    from ltx_lora.sample.health import check_sample

    video, wave = _good_sample()
    g = torch.Generator().manual_seed(0)
    nonfinite, baseline = [], None
    if case == "noise":
        video = torch.randint(0, 256, video.shape, generator=g, dtype=torch.uint8)
    elif case == "black":
        video = torch.full_like(video, 2)
    elif case == "flat":
        video = torch.full_like(video, 128)
    elif case == "nan":
        nonfinite = ["video latents"]
    elif case == "silent":
        wave = wave * 0
    elif case == "clipped":
        wave = (wave * 10).clamp(-1, 1)
    elif case == "drift":  # mild noise on top of the picture: fine alone, far above its step-0 baseline
        video = (video.float() + 30 * torch.randn(video.shape, generator=g)).clamp(0, 255).to(torch.uint8)
        baseline = check_sample(*_good_sample(), nonfinite=[], step=0).metrics["video"]["high_frequency"]
        assert check_sample(video, wave, nonfinite=[], step=5).status == "ok"  # only the baseline tells
    h = check_sample(video, wave, nonfinite=nonfinite, step=5, baseline_hf=baseline)
    assert h.status == "bad" and any(needle in p for p in h.problems), h.problems


def test_bad_step0_sample_of_an_fp8_base_is_explained_not_alarmed():
    from ltx_lora.sample.health import check_sample

    noise = torch.randint(0, 256, (9, 64, 64, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    first = check_sample(noise, None, nonfinite=[], step=0, fp8_base=True)
    assert first.status == "explained" and "FP8" in first.notes[0] and "#165" in first.notes[0]
    assert check_sample(noise, None, nonfinite=[], step=0, fp8_base=False).status == "bad"
    assert check_sample(noise, None, nonfinite=[], step=250, fp8_base=True).status == "bad"


# --- report pieces ----------------------------------------------------------------------------------------------


def _metrics(path: Path, video, audio) -> Path:
    path.write_text("".join(json.dumps({"step": i + 1, "loss_video": v, "loss_audio": a}) + "\n"
                            for i, (v, a) in enumerate(zip(video, audio))))
    return path


def test_plateau_notes_name_the_modality_that_stopped(tmp_path):
    from ltx_lora.sample.report import plateau_note, read_losses

    n = 200
    falling = [1.0 * math.exp(-i / 60) + 0.1 for i in range(n)]
    flat = [0.3 + 0.001 * math.sin(i) for i in range(n)]
    note = plateau_note(read_losses(_metrics(tmp_path / "a.jsonl", falling, flat)))
    assert note and note.startswith("Audio has plateaued")
    # in words what the two curves do, over which steps
    assert "audio loss is flat" in note and "video loss still falls" in note and "steps 101-150" in note
    assert "steps 151-200" in note and "ltx-lora lora mix --video LATER.safetensors --audio EARLIER" in note
    note = plateau_note(read_losses(_metrics(tmp_path / "b.jsonl", flat, falling)))
    assert note and note.startswith("Video has plateaued")
    assert "video loss is flat" in note and "audio loss still falls" in note
    assert plateau_note(read_losses(_metrics(tmp_path / "c.jsonl", falling, falling))) is None
    assert plateau_note(read_losses(_metrics(tmp_path / "d.jsonl", falling[:10], flat[:10]))) is None


def test_loss_plots_have_axis_titles_a_legend_and_one_style_at_any_length(tmp_path):
    import re

    from ltx_lora.sample.report import build_report, svg_plot

    few = svg_plot([(i, 1.0 / (i + 1)) for i in range(10)], "video loss", "#5fa8ff")
    many = svg_plot([(i, 1.0 / (i + 1)) for i in range(500)], "video loss", "#5fa8ff")
    for svg in (few, many):
        assert ">step</text>" in svg and ">loss</text>" in svg  # axis titles
        assert "raw" in svg and "smoothed" in svg and "class='legend'" in svg  # legend naming both marks

    def style(svg: str) -> set:
        marks = re.sub(r"<g class='legend'>.*?</g>", "", svg)
        return set(re.findall(r'<circle [^>]*?( r="[^"]*"[^>]*opacity="[^"]*")', marks))

    assert style(few) == style(many) and len(style(few)) == 1  # one look, whatever the number of points
    page = build_report(tmp_path, title="t", config_text="x: 1",
                        metrics=_metrics(tmp_path / "m.jsonl", [1.0, 0.5, 0.4], [0.3, 0.2, 0.1])).read_text()
    assert page.count(">step</text>") == 2 and page.count("smoothed") >= 2


def test_a_step_logged_twice_after_resume_keeps_its_last_value(tmp_path):
    from ltx_lora.sample.report import read_losses

    p = tmp_path / "m.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in [
        {"step": 1, "loss_video": 5.0, "loss_audio": None}, {"step": 2, "loss_video": 4.0, "loss_audio": 1.0},
        {"step": 2, "loss_video": 3.0, "loss_audio": 0.5}, {"step": 3, "loss_video": 2.0, "loss_audio": 0.4}]) + "\n{")
    losses = read_losses(p)
    assert losses["video"] == [(1, 5.0), (2, 3.0), (3, 2.0)] and losses["audio"] == [(2, 0.5), (3, 0.4)]


def fabricate_samples(root: Path, steps: list[int], prompts: list[str]) -> list[dict]:
    """Sample records and their media for `steps` x `prompts`, written by the real writers (no model involved)."""
    from ltx_lora.runtime.run import SampleSettings
    from ltx_lora.sample.health import Health
    from ltx_lora.sample.media import write_contact_sheet, write_mp4, write_poster
    from ltx_lora.sample.validate import step_label

    settings = SampleSettings(width=96, height=64, frames=9, fps=24.0, steps=2, seed=42, cfg=4.0, audio_cfg=7.0,
                              stg_scale=1.0, stg_blocks=[1], guidance_rescale=0.0, modality_scale=1.0, audio_stg_scale=1.0,
                              audio_modality_scale=1.0, audio=True,
                              negative_prompt="")
    ramp = torch.linspace(0, 255, 96).round().to(torch.uint8)
    records = []
    for step in steps:
        label = step_label(step)
        folder = root / "samples" / label
        for i, prompt in enumerate(prompts):
            frames = torch.zeros(9, 64, 96, 3, dtype=torch.uint8)
            frames[..., 0] = ramp.roll(8 * step)  # a picture per cell, moving over time below
            frames[..., 1] = (40 * (i + 1) + 20 * torch.arange(9)).clamp(max=255).to(torch.uint8)[:, None, None]
            wave = 0.3 * torch.sin(torch.linspace(0, 200 * (i + 1), 6000))[None]
            write_mp4(folder / f"p{i}.mp4", frames, 24.0, wave, 16000)
            write_contact_sheet(folder / f"p{i}.png", frames, wave, fps=24.0)
            write_poster(folder / f"p{i}.poster.png", frames)
            rel = f"samples/{label}/p{i}"
            rec = {"prompt": prompt, "prompt_index": i, "seed": 42, "step": step, "label": label, "lora_file": None,
                   "settings": settings.to_dict(), "seconds": 1.5, "health": Health("ok").to_dict(),
                   "files": {"video": f"{rel}.mp4", "contact_sheet": f"{rel}.png", "poster": f"{rel}.poster.png",
                             "record": f"{rel}.json"}, "created": f"2025-01-01T00:00:{step:02d}+00:00"}
            (folder / f"p{i}.json").write_text(json.dumps(rec))
            records.append(rec)
    return records


# What the report shows in a 1280 px wide window: every <video>'s poster loaded, the loss plots' texts, the widths.
_LAYOUT = {
    "posters": """Promise.all(Array.from(document.querySelectorAll('video')).map(v => new Promise(done => {
        const img = new Image();
        img.onload = () => done({poster: v.getAttribute('poster'), w: img.naturalWidth, h: img.naturalHeight});
        img.onerror = () => done({poster: v.getAttribute('poster'), w: 0, h: 0});
        img.src = v.poster; })))""",
    "plots": """Array.from(document.querySelectorAll('svg')).map(s => Array.from(s.querySelectorAll('text.at'))
        .map(t => ({text: t.textContent, width: t.getBBox().width, height: t.getBBox().height})))""",
    "page": """({scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
        grid: (g => ({scrollWidth: g.scrollWidth, clientWidth: g.clientWidth,
                      right: g.getBoundingClientRect().right}))(document.querySelector('.gridwrap')),
        columns: document.querySelectorAll('table.grid tr:first-child th').length - 1})""",
}


def test_report_with_6_checkpoints_shows_posters_titled_axes_and_no_overflow_in_chromium(tmp_path):
    """The issue's done-criterion, in a real browser: posters, titled axes, and no page overflow at 1280 px."""
    from browser import APT_HINT, find_chromium, load_page

    from ltx_lora.sample.report import build_report

    if find_chromium() is None:
        pytest.skip(f"no Chromium: {APT_HINT}")
    fabricate_samples(tmp_path, [0, 100, 200, 300, 400, 500], PROMPTS)
    n = 500
    metrics = _metrics(tmp_path / "metrics.jsonl", [1.0 * math.exp(-i / 150) + 0.1 for i in range(n)],
                       [0.5 * math.exp(-i / 50) + 0.2 for i in range(n)])
    report = build_report(tmp_path, title="six checkpoints", config_text="x: 1", metrics=metrics)
    shot = tmp_path / "report.png"
    page = load_page(report, width=1280, evaluate=_LAYOUT, screenshot=shot)
    assert page.errors == []
    layout = page.values["page"]
    assert layout["columns"] == 6 and layout["innerWidth"] == 1280, layout
    # every video shows its own first frame before it plays
    assert len(page.videos) == 12 and all(v["error"] is None and v["readyState"] >= 1 for v in page.videos)
    posters = page.values["posters"]
    assert len(posters) == 12 and all(p["w"] == 96 and p["h"] == 64 for p in posters), posters
    assert len({p["poster"] for p in posters}) == 12
    # both loss plots have their axis titles drawn
    plots = page.values["plots"]
    assert len(plots) == 2, plots
    for texts in plots:
        assert sorted(t["text"] for t in texts) == ["loss", "step"] and all(t["width"] > 0 for t in texts), texts
    # the page does not widen: the grid scrolls sideways inside its own box
    assert layout["scrollWidth"] <= layout["innerWidth"], layout
    grid = layout["grid"]
    assert grid["scrollWidth"] > grid["clientWidth"] and grid["right"] <= layout["innerWidth"], grid
    with Image.open(shot) as img:
        assert 1200 < img.width <= 1280 and img.height > 900  # the whole page (less the scrollbar), for a person


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_optimizer_state_waits_on_the_host_while_sampling():
    from ltx_lora.sample.validate import optimizer_state_on_host

    device = torch.device("cuda")
    p = torch.nn.Parameter(torch.randn(4096, 1024, device=device))
    opt = torch.optim.AdamW([p])
    p.grad = torch.randn_like(p)
    opt.step()
    before = {k: v.clone() for k, v in opt.state[p].items() if torch.is_tensor(v)}
    used = torch.cuda.memory_allocated(device)
    with optimizer_state_on_host(opt, device):
        assert all(v.device.type == "cpu" for v in opt.state[p].values() if torch.is_tensor(v))
        assert torch.cuda.memory_allocated(device) <= used - 2 * p.numel() * 4
    assert all(torch.equal(opt.state[p][k], v) and opt.state[p][k].device == v.device for k, v in before.items())


def test_trigger_in_validation_prompts_is_encoded_and_sampled_expanded(tmp_path, tiny_checkpoint, tiny_gemma,
                                                                       synthetic_clips):
    assert run_cli("dataset", "scan", synthetic_clips, "-o", tmp_path / "ds.jsonl", "--buckets", "64x64x9").code == 0
    cfg = {"output_dir": str(tmp_path / "run"),
           "model": {"checkpoint": str(tiny_checkpoint("dev")), "text_encoder": str(tiny_gemma)},
           "data": {"dataset": str(tmp_path / "ds.jsonl"), "buckets": "64x64x9", "cache_dir": str(tmp_path / "cache"),
                    "trigger_word": "zxq_style"},
           "train": {}, "logging": {"tensorboard": False},
           "validation": {"prompts": ["a [trigger] ball bouncing"], "resolution": "64x64x9", "steps": 2,
                          "stg_blocks": [1]}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = run_cli("preprocess", path)
    assert res.code == 0, res.out + res.err
    prompts = json.loads((tmp_path / "cache/manifest.json").read_text())["prompts"]
    assert "a zxq_style ball bouncing" in prompts and not any("[trigger]" in p for p in prompts)
    res = run_cli("validate", path, "--out", tmp_path / "out")
    assert res.code == 0, res.out + res.err
    rec = json.loads((tmp_path / "out/samples/base/p0.json").read_text())
    assert rec["prompt"] == "a zxq_style ball bouncing"
    assert "i2v" not in res.out + res.err
    cfg["task"] = "i2v"  # a first-frame task without a reference image: one note says the samples are text-to-video
    path.write_text(yaml.safe_dump(cfg))
    res = run_cli("validate", path, "--out", tmp_path / "out-i2v")
    assert res.code == 0, res.out + res.err
    assert "validation samples are text-to-video" in " ".join((res.out + res.err).split()), res.out + res.err
    cfg["data"]["trigger_word"] = ""
    path.write_text(yaml.safe_dump(cfg))
    assert_user_error(run_cli("preprocess", path), "[trigger]", "trigger_word")


# --- conditioning inputs of validation prompts -------------------------------------------------------------------


def test_sampler_keeps_every_kind_of_condition_and_a_given_modality(tiny_checkpoint):
    """Through ltx-core's parts: a prefix, a suffix and a masked box come out exactly as given; a reference changes
    the sample but not its shape; a given sound (a2v) or video (v2a) comes back as given, the other modality
    sampled; a sound-only sample has no video; audio prefix and reference likewise."""
    from ltx_lora.ltx.loader import load_transformer
    from ltx_lora.ltx.sampling import (
        Guidance,
        LatentAt,
        Masked,
        Prompt,
        Reference,
        SampleRequest,
        sample_latents,
        sigma_schedule,
    )

    t = load_transformer(tiny_checkpoint("dev"), dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    pos = Prompt(torch.randn(1, 256, 32, generator=g), torch.randn(1, 256, 16, generator=g),
                 torch.ones(1, 256, dtype=torch.int64))
    neg = Prompt(torch.randn(1, 256, 32, generator=g), torch.randn(1, 256, 16, generator=g),
                 torch.ones(1, 256, dtype=torch.int64))
    guide = Guidance(cfg=2.0)  # one guidance pass keeps it quick; every pass runs in the test above
    cpu = torch.device("cpu")

    def run(**kw):
        req = SampleRequest(width=64, height=64, frames=17, fps=24.0, seed=3, sigmas=sigma_schedule(2),
                            video_guidance=guide, audio_guidance=guide, **kw)
        return sample_latents(t, req, pos, neg, device=cpu, dtype=torch.float32)

    video = torch.randn(1, 128, 3, 2, 2, generator=g)  # 17 frames -> 3 latent frames of 2x2
    top = torch.zeros(3, 2, 2)
    top[:, 0, :] = 1  # the top row of cells is given
    v, a = run(video_conditions=[LatentAt(video[:, :, :1], 0), LatentAt(video[:, :, -1:], 2), Masked(video, top)])
    assert torch.equal(v[:, :, 0], video[:, :, 0]) and torch.equal(v[:, :, 2], video[:, :, 2])  # prefix, suffix
    assert torch.equal(v[:, :, 1, 0], video[:, :, 1, 0]) and not torch.equal(v[:, :, 1, 1], video[:, :, 1, 1])
    assert a.shape == (1, 8, 18, 16)
    plain, _ = run()
    ref = torch.randn(1, 128, 2, 1, 1, generator=g)  # downscale 2, temporal scale 2: 9 frames of 32x32
    v, _ = run(video_conditions=[Reference(ref, downscale=2, temporal_scale=2)])
    assert v.shape == plain.shape and not torch.equal(v, plain)  # the reference is seen, not returned

    sound = torch.randn(1, 8, 18, 16, generator=g)
    v, a = run(audio_given=sound)  # a2v: the sound is clean throughout and comes back as given
    assert torch.equal(a, sound) and v.shape == plain.shape and not torch.equal(v, plain)
    v, a = run(video_given=video, with_video=False)  # v2a
    assert torch.equal(v, video) and a.shape == (1, 8, 18, 16)
    v, a = run(with_video=False, audio_conditions=[LatentAt(sound[:, :, :5], 0), Reference(sound[:, :, :10])])
    assert v is None and torch.equal(a[:, :, :5], sound[:, :, :5]) and not torch.equal(a[:, :, 5:], sound[:, :, 5:])


IC_TASK = {"video": {"conditions": [{"type": "reference", "downscale": 2}, {"type": "first_frame", "probability": 0.2}]},
           "audio": {"conditions": [{"type": "reference"}]}}


@pytest.fixture(scope="module")
def conditioned(prepared, synthetic_clips, tmp_path_factory):
    """`validate` (base model, 2 steps) of two tasks whose prompts carry inputs: an audio-video IC-LoRA task (a
    first image, a reference clip at half size, a reference sound) and audio extension (a sound to continue, and a
    text-only prompt beside it): sound-only samples."""
    _, cfg = prepared
    root = tmp_path_factory.mktemp("conditioned")
    quick = {"stg_scale": 0.0, "modality_scale": 1.0}
    clip = str(synthetic_clips / "walk_96x64_24fps.mp4")
    ic = {**cfg, "task": IC_TASK}
    ic_path = write(root, "ic", ic, **quick, prompts=[{"prompt": PROMPTS[0], "image": "still_96x64.png",
                                                        "reference_video": clip, "reference_audio": clip}])
    text = ic_path.read_text().replace("image: still_96x64.png", f"image: {synthetic_clips / 'still_96x64.png'}")
    ic_path.write_text(text)
    res_ic = run_cli("validate", ic_path, "--out", root / "ic-out")
    extend = write(root, "extend", {**cfg, "task": "audio_extend"}, **quick,
                   prompts=[{"prompt": PROMPTS[0], "audio": clip}, PROMPTS[1]])
    res_extend = run_cli("validate", extend, "--out", root / "extend-out")
    return root, res_ic, res_extend


def test_validation_prompts_carry_their_inputs_into_samples_and_records(conditioned, synthetic_clips):
    root, res_ic, res_extend = conditioned
    assert res_ic.code == 0, res_ic.err
    assert res_extend.code == 0, res_extend.err
    rec = json.loads((root / "ic-out/samples/base/p0.json").read_text())
    shown = {i["name"]: i for i in rec["inputs"]}
    assert set(shown) == {"image", "reference_video", "reference_audio"}
    assert shown["reference_video"]["source"] == str(synthetic_clips / "walk_96x64_24fps.mp4")
    with av.open(str(root / "ic-out" / shown["reference_video"]["file"])) as c:  # the clip as the model got it
        s = c.streams.video[0]
        assert (s.codec_context.width, s.codec_context.height, s.frames) == (32, 32, 9)  # half size (downscale 2)
    assert Image.open(root / "ic-out" / shown["image"]["file"]).size == (64, 64)
    assert (root / "ic-out" / shown["reference_audio"]["file"]).suffix == ".wav"
    media = decode(root / "ic-out/samples/base/p0.mp4")
    assert media["frames"].shape == (9, 64, 64, 3) and media["rate"] == 48000
    # audio extension: sound-only samples, a WAV and its picture; the text-only prompt has no inputs
    for i in (0, 1):
        rec = json.loads((root / f"extend-out/samples/base/p{i}.json").read_text())
        assert set(rec["files"]) == {"audio", "contact_sheet", "record"} and "video" not in rec["health"]["metrics"]
        with av.open(str(root / "extend-out" / rec["files"]["audio"])) as c:
            a = c.streams.audio[0]
            assert a.codec_context.sample_rate == 48000 and 0.3 < float(c.duration / 1e6) < 0.45
        assert [x["name"] for x in rec["inputs"]] == (["audio"] if i == 0 else [])
    assert not list((root / "extend-out/samples/base").glob("*.mp4"))


# Every <audio> once its metadata loaded or failed, and where each prompt's inputs sit.
_INPUTS_PROBE = {
    "audios": """Promise.all(Array.from(document.querySelectorAll('audio')).map(a => new Promise(done => {
        const out = () => done({src: a.getAttribute('src'), readyState: a.readyState, error: a.error && a.error.code,
                                duration: a.duration});
        if (a.readyState >= 1 || a.error) return out();
        a.addEventListener('loadedmetadata', out, {once: true}); a.addEventListener('error', out, {once: true});
        setTimeout(out, 20000); })))""",
    "inputs": """Array.from(document.querySelectorAll('td.prompt .input')).map(d => ({
        label: d.querySelector('.meta').textContent, inPromptCell: !!d.closest('td.prompt'),
        right: d.getBoundingClientRect().right,
        sample: (c => c ? c.getBoundingClientRect().left : null)(d.closest('tr').querySelector('td:not(.prompt)'))}))""",
}


def test_report_shows_each_prompts_inputs_beside_its_samples_in_chromium(conditioned):
    """In a real browser: the first image, the reference clip and the reference sound sit in the prompt's row,
    left of its samples, and load; a sound-only sample plays as audio with its waveform and spectrogram."""
    from browser import APT_HINT, find_chromium, load_page

    if find_chromium() is None:
        pytest.skip(f"no Chromium: {APT_HINT}")
    root = conditioned[0]
    page = load_page(root / "ic-out/report.html", width=1280, evaluate=_INPUTS_PROBE)
    assert page.errors == []
    inputs = page.values["inputs"]
    assert [i["label"].split(":")[0] for i in inputs] == ["first frame", "reference video", "reference sound"]
    assert all(i["inPromptCell"] and i["right"] <= i["sample"] for i in inputs), inputs  # beside, to the left
    assert len(page.videos) == 2 and all(v["error"] is None and v["readyState"] >= 1 for v in page.videos)
    assert {v["width"] for v in page.videos} == {64, 32}  # the sample and the half-size reference
    assert all(i["naturalWidth"] > 0 for i in page.images) and len(page.images) >= 3, page.images
    audios = page.values["audios"]
    assert len(audios) == 1 and audios[0]["error"] is None and audios[0]["duration"] > 0.3, audios
    page = load_page(root / "extend-out/report.html", width=1280, evaluate=_INPUTS_PROBE)
    assert page.errors == [] and page.videos == []
    audios = page.values["audios"]  # the given sound and the two sound-only samples
    assert len(audios) == 3 and all(a["error"] is None and 0.3 < a["duration"] < 0.45 for a in audios), audios
    sheets = [i for i in page.images if i["alt"].startswith("waveform and spectrogram")]
    assert len(sheets) == 2 and all(i["naturalWidth"] == 480 for i in sheets), page.images


def test_prompt_inputs_that_do_not_fit_the_task_are_refused_before_anything_loads(prepared, synthetic_clips,
                                                                                   tmp_path):
    from ltx_lora.config import parse_config
    from ltx_lora.errors import UserError
    from ltx_lora.runtime.run import resolve_run
    from ltx_lora.sample.validate import check_validation

    _, cfg = prepared
    clip = str(synthetic_clips / "walk_96x64_24fps.mp4")

    def refused(task, prompts, *needles: str, **validation) -> None:
        c = parse_config({**cfg, "task": task, "validation": {**cfg["validation"], "prompts": prompts, **validation}})
        with pytest.raises(UserError) as e:
            check_validation(resolve_run(c))
        assert all(n in str(e.value) for n in needles), str(e.value)

    refused("a2v", ["a cat"], "validation prompt 1 needs `audio`", "a2v")
    refused("v2a", [{"prompt": "a cat", "audio": clip}], "needs `video`", "v2a")
    refused("t2v", [{"prompt": "a cat", "audio": clip}], "gives audio", "no audio")
    refused("t2a", [{"prompt": "a cat", "image": clip}], "gives image", "no video")
    refused("t2av", ["a dog", {"prompt": "a cat", "reference_video": clip}], "validation prompt 2",
            "no reference condition")
    refused("v2v_ic", ["a cat"], "needs reference_video")
    refused("t2av", [{"prompt": "a cat", "video": clip}], "no condition of task.video uses it")
    refused("video_inpainting", [{"prompt": "a cat", "video": clip}], "no `mask`")
    refused("i2v", [{"prompt": "a cat", "image": str(tmp_path / "nope.png")}], "does not exist")
    refused("t2a", ["a cat"], "nothing to sample", audio=False)
    refused({"video": {"conditions": [{"type": "reference", "downscale": 3}]}, "audio": {"role": "off"}},
            [{"prompt": "a cat", "reference_video": clip}], "downscale 3", "multiple of 32")


def test_prompt_inputs_become_the_conditions_the_task_trains_with(tiny_checkpoint, synthetic_clips, tmp_path):
    """The inputs' wiring, with the tiny VAE encoders: an inpainting mask (white top half) keeps the top row of
    latent cells, as training reduces a video_mask; the task's crop box keeps its cells; a prefix keeps the first
    latent frames; a sound mask (loud first half) keeps the first audio steps; v2a gives the whole video."""
    from ltx_lora.config import ValidationSample
    from ltx_lora.ltx.loader import load_audio_encoder, load_video_encoder
    from ltx_lora.ltx.sampling import LatentAt, Masked
    from ltx_lora.runtime.run import SampleSettings
    from ltx_lora.sample.conditions import InputEncoder
    from ltx_lora.sample.media import write_wav
    from ltx_lora.task import TASK_PRESETS, TaskConfig

    settings = SampleSettings(width=64, height=64, frames=17, fps=24.0, steps=2, seed=42, cfg=1.0, audio_cfg=1.0,
                              stg_scale=0.0, audio_stg_scale=0.0, stg_blocks=[], guidance_rescale=0.0,
                              modality_scale=1.0, audio_modality_scale=1.0, audio=True, negative_prompt="")
    ckpt = tiny_checkpoint("dev")
    video_enc = load_video_encoder(ckpt, dtype=torch.float32)
    audio_enc = load_audio_encoder(ckpt, dtype=torch.float32)
    clip = str(synthetic_clips / "walk_96x64_24fps.mp4")
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[:32] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    loud = torch.zeros(1, 16000)
    loud[:, :8000] = 0.9
    write_wav(tmp_path / "mask.wav", loud, 16000)

    def encode(task: TaskConfig, **inputs):
        enc = InputEncoder(task, settings, video_enc, audio_enc, tmp_path / "inputs")
        return enc.encode(0, ValidationSample(prompt="p", **inputs), None)

    inpaint = encode(TASK_PRESETS["video_inpainting"][2], video=clip, mask=str(tmp_path / "mask.png"))
    (item,) = inpaint.video_conditions
    assert isinstance(item, Masked) and item.latent.shape == (1, 128, 3, 2, 2)
    assert item.mask[:, 0].eq(1).all() and item.mask[:, 1].eq(0).all()
    assert [s["name"] for s in inpaint.shown] == ["video", "mask"]
    crop = TaskConfig.model_validate({"video": {"conditions": [{"type": "spatial_crop", "box": [0, 32, 64, 64]}]},
                                      "audio": {"role": "off"}})
    (item,) = encode(crop, video=clip).video_conditions
    assert item.mask[:, :, 1].eq(1).all() and item.mask[:, :, 0].eq(0).all()  # the right column of cells
    (prefix,) = encode(TASK_PRESETS["video_extend"][2], video=clip).video_conditions
    assert isinstance(prefix, LatentAt) and prefix.index == 0 and prefix.latent.shape[2] == 3  # 8 > 3: all of it
    sound = encode(TASK_PRESETS["audio_inpainting"][2], audio=clip, mask=str(tmp_path / "mask.wav"))
    (item,) = sound.audio_conditions
    steps = item.mask.shape[0]
    assert item.latent.shape[2] == steps and item.mask[: steps // 2 - 1].eq(1).all() and item.mask[-2:].eq(0).all()
    v2a = encode(TASK_PRESETS["v2a"][2], video=clip)
    assert v2a.video_given.shape == (1, 128, 3, 2, 2) and not v2a.video_conditions
