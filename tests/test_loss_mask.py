"""Masked loss: dataset columns `loss_mask` / `audio_loss_ranges`, their latent-grid weights, the weighted objective
(with the real tiny transformer), and one scan -> preprocess -> train run with a mask image."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from conftest import assert_user_error, run_cli
from PIL import Image
from safetensors import safe_open
from test_objective import _batch, model  # noqa: F401  (the fixture: tiny transformer with a LoRA)

from ltx_lora.data.dataset_file import read_dataset
from ltx_lora.data.loss_mask import audio_weights, pixel_to_latent
from ltx_lora.errors import UserError
from ltx_lora.ltx.modality import predict_velocity
from ltx_lora.task import FirstFrameCondition, ModalityTask, TaskConfig
from ltx_lora.train.objective import compute_loss, prepare_inputs
from ltx_lora.train.timesteps import SigmaSampler

I2V_HALF = TaskConfig(video=ModalityTask(conditions=[FirstFrameCondition(probability=0.5)]))


def _inputs(batch, seed=0):
    return prepare_inputs(batch, SigmaSampler(), torch.Generator().manual_seed(seed), task=I2V_HALF,
                          dtype=torch.float32)


def _loss_and_grads(m, inputs):
    m.zero_grad()
    loss = compute_loss(*predict_velocity(m, inputs.video, inputs.audio), inputs)
    loss.total.backward()
    return loss, {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}


def test_all_ones_weights_give_exactly_todays_loss_and_gradients(model):  # noqa: F811
    m, t = model
    plain = _batch(t)
    ones = _batch(t)
    b, _, f, h, w = ones.video.shape
    ones.video_loss_weight = torch.ones(b, f, h, w)
    for seed in range(2):
        ref, ref_grads = _loss_and_grads(m, _inputs(plain, seed))
        got, grads = _loss_and_grads(m, _inputs(ones, seed))
        assert torch.equal(got.total, ref.total) and torch.equal(got.video, ref.video)
        assert ref_grads.keys() == grads.keys() and all(torch.equal(grads[n], ref_grads[n]) for n in ref_grads)


def test_masked_out_region_does_not_count_and_the_loss_keeps_its_scale(model):  # noqa: F811
    m, t = model
    batch = _batch(t)
    b, _, f, h, w = batch.video.shape
    weight = torch.ones(b, f, h, w)
    weight[:, :, :, 0] = 0.0  # the left latent column of every frame is masked out
    batch.video_loss_weight = weight
    batch.audio_loss_weight = torch.ones(b, batch.audio.shape[2])
    batch.audio_loss_weight[:, 4:] = 0.0
    inputs = _inputs(batch)
    with torch.no_grad():
        vp, ap = predict_velocity(m, inputs.video, inputs.audio)
        before = compute_loss(vp, ap, inputs)
        out = inputs.video_loss_weight == 0  # [B, T] tokens of the masked-out column
        assert out.any() and (~out).any()
        inputs.video_target[out] += 100.0
        inputs.audio_target[:, 4:] -= 50.0
        after = compute_loss(vp, ap, inputs)
        assert torch.equal(before.total, after.total)
        inputs.video_target[~out & inputs.video_loss_mask] += 1.0  # a change where it counts does show
        assert compute_loss(vp, ap, inputs).video.ne(before.video).all()
        # normalised by the weights' sum: a constant error gives the same loss whatever share is masked
        inputs.video_target = vp.float() - 2.0
        inputs.audio_target = ap.float() - 3.0
        scaled = compute_loss(vp, ap, inputs)
        assert torch.allclose(scaled.video, torch.full((b,), 4.0)) and torch.allclose(scaled.audio, torch.full((b,), 9.0))


def test_pixel_mask_is_average_pooled_to_the_latent_grid():
    mask = torch.zeros(17, 64, 96)  # 17 frames -> latent frames {0}, {1..8}, {9..16}; 2x3 cells of 32x32
    mask[0, :32, :32] = 1.0
    mask[1:5, 32:, 64:] = 1.0  # half of the second latent frame's frames, one cell
    mask[9:17, :16, 32:64] = 1.0  # all frames of the third, the top half of one cell
    mask[9:17, 40, 70] = 1.0  # one pixel of 1024 in another cell
    got = pixel_to_latent(mask)
    want = torch.zeros(3, 2, 3)
    want[0, 0, 0] = 1.0
    want[1, 1, 2] = 0.5
    want[2, 0, 1] = 0.5
    want[2, 1, 2] = 1 / 1024
    assert got.shape == (3, 2, 3) and torch.allclose(got, want)
    assert pixel_to_latent(torch.ones(1, 32, 64)).shape == (1, 1, 2)  # a still: one latent frame
    with pytest.raises(ValueError, match="latent grid"):
        pixel_to_latent(torch.ones(8, 32, 32))


def test_audio_ranges_become_per_latent_step_weights():
    w = audio_weights([[0.0, 0.1], [0.3, 0.42], [0.4, 0.5]], steps=15)
    want = torch.zeros(15)
    want[:2] = 1.0  # 0 .. 0.08 s
    want[2] = 0.5  # 0.08 .. 0.12 s: half inside
    want[7:12] = 1.0  # 0.28 .. 0.48: 0.28..0.32 is half inside
    want[7] = 0.5
    want[12] = 0.5  # 0.48 .. 0.52
    assert torch.allclose(w, want, atol=1e-6), w


@pytest.mark.parametrize("cell, says", [
    ('[[1, 0.5]]', "does not run forward"), ('"soon"', "not a JSON list"), ('[[0, "x"]]', "not two numbers"),
    ('[1, 2]', "pairs"),
])
def test_bad_audio_ranges_are_one_sentence_naming_the_row(tmp_path, cell, says):
    path = tmp_path / "d.jsonl"
    path.write_text('{"caption": "a", "video": "a.mp4"}\n'
                    f'{{"caption": "b", "video": "b.mp4", "audio_loss_ranges": {cell}}}\n')
    with pytest.raises(UserError, match=f"row 2.*{says}"):
        read_dataset(path)


def test_mask_columns_read_from_csv(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('caption,video,loss_mask,audio_loss_ranges\na,a.mp4,m.png,"[[0, 1.5]]"\nb,b.mp4,,\n')
    a, b = read_dataset(path).entries
    assert a.fields == {"loss_mask": "m.png", "audio_loss_ranges": [[0.0, 1.5]]} and b.fields == {}


BUCKETS = "64x64x9;96x64x9;64x96x9;64x64x1"


def test_mask_image_goes_through_scan_preprocess_and_training(tmp_path, tiny_checkpoint, tiny_gemma, synthetic_clips):
    pixels = np.full((64, 96), 255, dtype=np.uint8)
    pixels[:, :32] = 0  # the left third of the 96x64 clip does not count
    (tmp_path / "in").mkdir()
    Image.fromarray(pixels, mode="L").save(tmp_path / "in" / "mask.png")
    rows = [
        {"caption": "a red disc", "video": str(synthetic_clips / "walk_96x64_24fps.mp4"), "loss_mask": "mask.png",
         "audio_loss_ranges": [[0, 0.2]]},
        {"caption": "a square", "video": str(synthetic_clips / "orbit_64x96_25fps.mp4"), "loss_mask": "mask.png"},
        {"caption": "a ball", "video": str(synthetic_clips / "bounce_128x128_30fps.mp4"), "loss_mask": "gone.png"},
    ]
    (tmp_path / "in" / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = run_cli("dataset", "scan", tmp_path / "in" / "in.jsonl", "-o", tmp_path / "dataset.jsonl",
                  "--buckets", BUCKETS)
    assert res.code == 0, res.err
    assert "not the clip's aspect ratio" in res.out and "gone.png does not exist" in res.out, res.out
    scanned = read_dataset(tmp_path / "dataset.jsonl").entries
    assert len(scanned) == 1 and scanned[0].fields["loss_mask"] == "in/mask.png"  # relative to the new file
    assert scanned[0].fields["audio_loss_ranges"] == [[0.0, 0.2]]

    cfg = {"output_dir": str(tmp_path / "run"),
           "model": {"checkpoint": str(tiny_checkpoint("dev")), "text_encoder": str(tiny_gemma)},
           "data": {"dataset": str(tmp_path / "dataset.jsonl"), "buckets": BUCKETS,
                    "cache_dir": str(tmp_path / "cache")},
           "train": {"steps": 1, "mixed_precision": "fp32"},
           "validation": {"prompts": [], "every": None}, "logging": {"tensorboard": False}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    res = run_cli("preprocess", tmp_path / "c.yaml")
    assert res.code == 0, res.err
    assert "used 1 clip" in res.out, res.out
    [entry] = (tmp_path / "cache" / "latents").glob("*.safetensors")
    with safe_open(str(entry), "pt") as f:
        video_w, audio_w = f.get_tensor("video_loss_weight"), f.get_tensor("audio_loss_weight")
        assert video_w.shape == f.get_tensor("video").shape[1:] == (2, 2, 3)
        steps = f.get_tensor("audio").shape[1]
    want = torch.ones(2, 2, 3)
    want[:, :, 0] = 0.0
    assert torch.allclose(video_w, want, atol=1e-6), video_w
    assert audio_w.shape == (steps,) and audio_w[:5].eq(1).all() and audio_w[5:].eq(0).all(), audio_w
    res = run_cli("train", tmp_path / "c.yaml")
    assert res.code == 0, res.err
    assert (tmp_path / "run" / "lora.safetensors").is_file()


def test_a_loss_mask_that_is_not_a_path_is_refused(tmp_path, cli):
    (tmp_path / "d.jsonl").write_text('{"caption": "a", "video": "a.mp4", "loss_mask": 3}\n')
    assert_user_error(cli("dataset", "scan", tmp_path / "d.jsonl", "-o", tmp_path / "o.jsonl"),
                      "row 1", "loss_mask")
