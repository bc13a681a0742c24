"""The 16 configs ltx-trainer 1.2.0 ships (packages/ltx-trainer/configs/*.yaml), rebuilt here from their settings
(their files are not ours to commit), translate to the same task, conditions, probabilities, guidance and
checkpoint settings, and every one of their keys is either mapped or named in the note."""

from __future__ import annotations

import copy

import pytest
import yaml

from ltx_lora.config import load_config, parse_config
from ltx_lora.official_config import UNKNOWN, official_keys, translate
from ltx_lora.runtime.run import resolve_sampling
from ltx_lora.task import TASK_PRESETS, resolve_task, task_name

SHORT = ["to_k", "to_q", "to_v", "to_out.0"]
ATTN12 = [f"attn{i}.{p}" for i in (1, 2) for p in SHORT]
AUDIO = [f"audio_attn{i}.{p}" for i in (1, 2) for p in SHORT] + ["audio_ff.net.0.proj", "audio_ff.net.2"]

# What every shipped config holds alike.
COMMON = {
    "model": {"model_path": "path/to/ltx-2-model.safetensors", "text_encoder_path": "path/to/gemma-text-encoder",
              "training_mode": "lora", "load_checkpoint": None},
    "lora": {"rank": 32, "alpha": 32, "dropout": 0.0, "target_modules": SHORT},
    "optimization": {"learning_rate": "1e-4", "steps": 2000, "batch_size": 1, "gradient_accumulation_steps": 1,
                     "max_grad_norm": 1.0, "optimizer_type": "adamw", "scheduler_type": "linear",
                     "scheduler_params": {}, "enable_gradient_checkpointing": True},
    "acceleration": {"mixed_precision_mode": "bf16", "quantization": None, "load_text_encoder_in_8bit": False,
                     "offload_optimizer_during_validation": False},
    "data": {"preprocessed_data_root": "/path/to/preprocessed/data", "num_dataloader_workers": 2},
    "validation": {"negative_prompt": "blurry, out of focus,\n overexposed", "video_dims": [960, 544, 89],
                   "frame_rate": 24.0, "seed": 42, "inference_steps": 30, "interval": 100, "video_cfg_scale": 3.0,
                   "audio_cfg_scale": 7.0, "video_stg_scale": 1.0, "audio_stg_scale": 1.0, "stg_blocks": [28],
                   "guidance_rescale": 0.7, "video_modality_guidance_scale": 3.0,
                   "audio_modality_guidance_scale": 3.0, "generate_audio": True, "skip_initial_validation": False},
    "checkpoints": {"interval": 250, "keep_last_n": -1, "precision": "bfloat16"},
    "flow_matching": {"timestep_sampling_mode": "shifted_logit_normal", "timestep_sampling_params": {}},
    "hub": {"push_to_hub": False, "hub_model_id": None},
    "wandb": {"enabled": False, "project": "ltx-2-trainer", "entity": None, "tags": ["ltx2", "lora"],
              "log_validation_videos": True},
    "seed": 42,
}


def _modality(generated: bool, latents: str, *conditions: dict) -> dict:
    block = {"is_generated": generated, "latents_dir": latents}
    if conditions:
        block["conditions"] = list(conditions)
    return block


V = lambda *c: _modality(True, "latents", *c)  # noqa: E731
A = lambda *c: _modality(True, "audio_latents", *c)  # noqa: E731
AUDIO_TASK = {"lora": {"target_modules": AUDIO}, "optimization": {"learning_rate": "2e-4", "steps": 3000},
              "checkpoints": {"keep_last_n": 3},
              "validation": {"audio_modality_guidance_scale": 1.0, "generate_video": False}}
NO_AUDIO = {"validation": {"generate_audio": False, "video_modality_guidance_scale": 1.0}}
IC = {"optimization": {"learning_rate": "2e-4", "steps": 3000}, "checkpoints": {"keep_last_n": 3}}


def _samples(*conditions: list[dict]) -> dict:
    return {"validation": {"samples": [{"prompt": f"prompt {i}", **({"conditions": c} if c else {})}
                                       for i, c in enumerate(conditions)]}}


# name -> (the preset it is, training_strategy without its name, what differs from COMMON)
SHIPPED: dict[str, tuple[str, dict, list[dict]]] = {
    "t2v_lora": ("t2av", {"video": V(), "audio": A()}, [_samples(None, None)]),
    "t2v_lora_low_vram": ("t2av", {"video": V(), "audio": A()}, [_samples(None, None), {
        "lora": {"rank": 16, "alpha": 16}, "optimization": {"optimizer_type": "adamw8bit"},
        "acceleration": {"quantization": "int8-quanto", "load_text_encoder_in_8bit": True,
                         "offload_optimizer_during_validation": True},
        "validation": {"video_dims": [576, 576, 49]}}]),
    "i2v_lora": ("i2v", {"video": V({"type": "first_frame", "probability": 0.5}), "audio": A()},
                 [_samples([{"type": "first_frame", "image_or_video": "/c1.png"}])]),
    "t2a_lora": ("t2a", {"audio": A()}, [AUDIO_TASK, _samples(None)]),
    "a2v_lora": ("a2v", {"video": V(), "audio": _modality(False, "audio_latents")}, [_samples(
        [{"type": "audio_to_video", "audio": "/a.wav"}]), {"validation": {
            "audio_cfg_scale": 1.0, "audio_stg_scale": 0.0, "audio_modality_guidance_scale": 1.0,
            "generate_audio": False, "generate_video": True}}]),
    "v2a_lora": ("v2a", {"video": _modality(False, "latents"), "audio": A()}, [_samples(
        [{"type": "video_to_audio", "video": "/v.mp4"}]), {
            "lora": {"target_modules": AUDIO + [f"video_to_audio_attn.{p}" for p in SHORT]},
            "validation": {"video_cfg_scale": 1.0, "video_stg_scale": 0.0, "video_modality_guidance_scale": 1.0,
                           "generate_video": False}}]),
    "video_extend_lora": ("video_extend", {"video": V({"type": "prefix", "temporal_boundary": 8, "probability": 1.0}),
                                           "audio": A()},
                          [_samples([{"type": "prefix", "video": "/p.mp4", "num_frames": 57}])]),
    "video_suffix_lora": ("video_suffix", {"video": V({"type": "suffix", "temporal_boundary": 8, "probability": 1.0}),
                                           "audio": A()},
                          [_samples([{"type": "suffix", "video": "/s.mp4", "num_frames": 64}])]),
    "video_inpainting_lora": ("video_inpainting", {"video": V({"type": "mask", "mask_dir": "video_masks",
                                                               "probability": 1.0})},
                              [NO_AUDIO, {"lora": {"target_modules": ATTN12}},
                               _samples([{"type": "mask", "video": "/v.mp4", "mask": "/m.mp4"}])]),
    "video_outpainting_lora": ("video_outpainting", {"video": V({"type": "spatial_crop", "spatial_region": [0, 0, 288, 576],
                                                                 "probability": 1.0})},
                               [NO_AUDIO, {"lora": {"target_modules": ATTN12}},
                                _samples([{"type": "spatial_crop", "video": "/v.mp4",
                                           "spatial_region": [0, 0, 288, 576]}])]),
    "audio_extend_lora": ("audio_extend", {"audio": A({"type": "prefix", "temporal_boundary": 8, "probability": 1.0})},
                          [AUDIO_TASK, _samples([{"type": "prefix", "audio": "/a.wav", "duration": 1.0}])]),
    "audio_suffix_lora": ("audio_suffix", {"audio": A({"type": "suffix", "temporal_boundary": 8, "probability": 1.0})},
                          [AUDIO_TASK, _samples([{"type": "suffix", "audio": "/a.wav", "duration": 1.0}])]),
    "audio_inpainting_lora": ("audio_inpainting", {"audio": A({"type": "mask", "mask_dir": "audio_masks",
                                                               "probability": 1.0})},
                              [AUDIO_TASK, _samples([{"type": "mask", "audio": "/a.wav", "mask": "/m.pt"}])]),
    "v2v_ic_lora": ("v2v_ic", {"video": V({"type": "reference", "latents_dir": "reference_latents", "probability": 1.0},
                                          {"type": "first_frame", "probability": 0.2})},
                    [IC, NO_AUDIO, {"lora": {"target_modules": ATTN12 + ["ff.net.0.proj", "ff.net.2"]}},
                     _samples([{"type": "reference", "video": "/r.mp4", "downscale_factor": 1,
                                "temporal_scale_factor": 1, "include_in_output": True}])]),
    "a2a_ic_lora": ("a2a_ic", {"audio": A({"type": "reference", "latents_dir": "reference_audio_latents",
                                           "probability": 1.0})},
                    [AUDIO_TASK, _samples([{"type": "reference", "audio": "/r.wav"}])]),
    "av2av_ic_lora": ("av2av_ic", {"video": V({"type": "reference", "latents_dir": "reference_latents",
                                               "probability": 1.0}),
                                   "audio": A({"type": "reference", "latents_dir": "reference_audio_latents",
                                               "probability": 1.0})},
                      [IC, _samples([{"type": "reference", "video": "/r.mp4", "downscale_factor": 1,
                                      "temporal_scale_factor": 1, "include_in_output": True},
                                     {"type": "reference", "audio": "/r.wav"}])]),
}


def _merge(base: dict, patch: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in patch.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def shipped(name: str) -> dict:
    _, strategy, patches = SHIPPED[name]
    data = _merge(COMMON, {"training_strategy": {"name": "flexible", **strategy}, "output_dir": f"outputs/{name}"})
    for patch in patches:
        data = _merge(data, patch)
    return data


def test_sixteen_configs_and_presets_agree():
    assert len(SHIPPED) == 16
    assert {p for p, _, _ in SHIPPED.values()} == set(TASK_PRESETS) - {"t2v"}  # t2v: ours, video-only clips
    assert {f for _, f, _ in TASK_PRESETS.values() if f} == {f"{n}.yaml" for n in SHIPPED} - {"t2v_lora_low_vram.yaml"}


@pytest.mark.parametrize("name", list(SHIPPED))
def test_shipped_config_translates_to_the_same_training(name):
    data = shipped(name)
    preset = SHIPPED[name][0]
    t = translate(data)
    cfg = parse_config(t.config, source=name)
    # the task: roles, conditions and their probabilities; audio draws its own sigma, as flexible does
    assert resolve_task(cfg.task) == TASK_PRESETS[preset][2] and task_name(cfg.task) == preset
    assert resolve_task(cfg.task).sigma == "independent"
    # guidance of each modality, as the sampler will use it
    v = data["validation"]
    s = resolve_sampling(cfg.validation)
    assert (s.cfg, s.audio_cfg, s.stg_scale, s.audio_stg_scale, s.modality_scale, s.audio_modality_scale) == (
        v["video_cfg_scale"], v["audio_cfg_scale"], v["video_stg_scale"], v["audio_stg_scale"],
        v["video_modality_guidance_scale"], v["audio_modality_guidance_scale"])
    assert (s.guidance_rescale, s.stg_blocks, s.steps, s.seed, s.fps) == (0.7, [28], 30, 42, 24.0)
    assert [s.width, s.height, s.frames] == v["video_dims"] and s.audio == v["generate_audio"]
    assert cfg.validation.every == 100 and len(cfg.validation.prompts) == len(v["samples"])
    # checkpoints: every 250, keep_last_n -1 keeps every one
    keep = data["checkpoints"]["keep_last_n"]
    assert cfg.checkpoints.every == 250 and cfg.checkpoints.keep_last == (None if keep == -1 else keep)
    # the LoRA and the optimisation
    lora = data["lora"]
    assert (cfg.lora.rank, cfg.lora.alpha, cfg.lora.target_modules) == (lora["rank"], lora["alpha"],
                                                                        lora["target_modules"])
    opt = data["optimization"]
    assert (cfg.train.learning_rate, cfg.train.steps, cfg.train.optimizer.value, cfg.train.scheduler.value) == (
        float(opt["learning_rate"]), opt["steps"], opt["optimizer_type"], "linear")
    assert cfg.memory.quantization == ("int8" if data["acceleration"]["quantization"] else "auto")
    # nothing silent: every key maps or is named in the note, and none is unknown to the translator
    assert official_keys(data) <= t.accounted(), official_keys(data) - t.accounted()
    assert not [k for k, why in t.dropped.items() if why == UNKNOWN], t.dropped
    note = t.note(name)
    for key in [*t.dropped, *t.changed, *t.unneeded]:
        assert key in note


def test_the_note_names_what_did_not_carry_over_when_loading(tmp_path, capsys):
    path = tmp_path / "v2v_ic_lora.yaml"
    data = shipped("v2v_ic_lora")
    data["wandb"]["enabled"] = True
    data["optimization"]["scheduler_type"] = "step"
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(path)
    note = " ".join(capsys.readouterr().err.split())
    assert task_name(cfg.task) == "v2v_ic" and cfg.logging.wandb and cfg.train.scheduler.value == "cosine"
    for said in ("data.preprocessed_data_root", "step became cosine", "wandb.tags",
                 "training_strategy.video.conditions[].latents_dir", "not needed by ltx-lora"):
        assert said in note, note


def test_their_load_checkpoint_of_a_lora_file_starts_ours_from_it(tmp_path, capsys):
    """model.load_checkpoint naming a LoRA file becomes lora.init_from (the note says the optimizer starts afresh);
    a folder of checkpoints is named as not carried over, with --resume as ours."""
    data = shipped("t2v_lora")
    data["model"]["load_checkpoint"] = "runs/old/lora_weights_step_02000.safetensors"
    path = tmp_path / "t2v_lora.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(path)
    assert cfg.lora.init_from == str(tmp_path / "runs/old/lora_weights_step_02000.safetensors")
    assert "model.load_checkpoint (lora.init_from" in " ".join(capsys.readouterr().err.split())
    data["model"]["load_checkpoint"] = "runs/old/checkpoints"
    t = translate(data)
    assert "init_from" not in t.config.get("lora", {}) and "--resume" in t.dropped["model.load_checkpoint"]


@pytest.mark.parametrize("theirs, ours", [("bfloat16", "bf16"), ("float32", "fp32")])
def test_their_checkpoint_precision_is_the_precision_of_our_lora_files(theirs, ours):
    data = shipped("t2v_lora")
    data["checkpoints"]["precision"] = theirs
    t = translate(data)
    assert parse_config(t.config).checkpoints.precision == ours and "checkpoints.precision" not in t.changed


def test_their_timestep_sampling_params_are_ours():
    data = shipped("t2v_lora")
    data["flow_matching"] = {"timestep_sampling_mode": "uniform",
                             "timestep_sampling_params": {"min_value": 0.2, "max_value": 0.9}}
    train = parse_config(translate(data).config).train
    assert train.timestep_sampling == "uniform"
    assert (train.timestep_sampling_params.min_value, train.timestep_sampling_params.max_value) == (0.2, 0.9)
    data["flow_matching"] = {"timestep_sampling_mode": "shifted_logit_normal",
                             "timestep_sampling_params": {"std": 0.5, "uniform_prob": 0.2}}
    params = parse_config(translate(data).config).train.timestep_sampling_params
    assert (params.std, params.uniform_prob, params.eps) == (0.5, 0.2, 1e-3)


@pytest.mark.parametrize("kind, params", [("linear", {}), ("linear", {"end_factor": 0.3}), ("cosine", {}),
                                          ("cosine", {"eta_min": 2e-5}), ("polynomial", {}), ("constant", {})])
def test_their_schedule_is_ours_step_for_step(kind, params):
    """The learning rate of every step of a translated official config equals what the official trainer's torch
    scheduler gives (LinearLR 1.0 -> end_factor, 0.1 by default; CosineAnnealingLR to eta_min; PolynomialLR of
    power 1; none for constant), stepped once per optimizer step as its loop does."""
    import torch

    from ltx_lora.train.optim import lr_factor

    data = shipped("t2v_lora")
    data["optimization"].update({"scheduler_type": kind, "scheduler_params": params, "steps": 40,
                                 "learning_rate": 1e-4})
    t = translate(data)
    assert "optimization.scheduler_type" not in t.changed and "optimization.scheduler_params" not in t.dropped
    train = parse_config(t.config).train
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    p = dict(params)
    scheduler = {"linear": lambda: torch.optim.lr_scheduler.LinearLR(
                     opt, start_factor=1.0, end_factor=p.pop("end_factor", 0.1), total_iters=40),
                 "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=40, eta_min=p.pop("eta_min", 0)),
                 "polynomial": lambda: torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=40, power=1.0),
                 "constant": lambda: None}[kind]()
    for step in range(40):
        theirs = opt.param_groups[0]["lr"]
        assert train.learning_rate * lr_factor(step, train) == pytest.approx(theirs, rel=1e-9, abs=1e-15), step
        opt.step()
        if scheduler is not None:
            scheduler.step()


def test_the_older_text_to_video_strategy_shares_the_sigma():
    data = _merge(COMMON, {"training_strategy": {"name": "text_to_video", "first_frame_conditioning_p": 0.1,
                                                 "with_audio": True}})
    t = translate(data)
    task = resolve_task(parse_config(t.config).task)
    assert task.sigma == "shared" and task.audio.generated and task.video.find("first_frame")[0].probability == 0.1
    assert official_keys(data) <= t.accounted()


@pytest.mark.parametrize("name", [n for n in SHIPPED if n != "t2v_lora_low_vram"])
def test_init_task_starts_where_the_official_config_starts(name, tmp_path):
    """`ltx-lora init --task P` writes the task and the recipe of the official config P matches (targets, learning
    rate, steps, kept checkpoints, guidance of each modality); only the guide's video CFG 4.0, STG block 29 and
    validation cadence stay ours."""
    from ltx_lora.config_template import write_config

    preset = SHIPPED[name][0]
    ours = load_config(write_config(tmp_path / "c.yaml", task=preset))  # the CLI's path: test_init_cli_writes_a_task
    theirs = parse_config(translate(shipped(name)).config)
    assert resolve_task(ours.task) == resolve_task(theirs.task) == TASK_PRESETS[preset][2]
    assert ours.lora.effective_alpha == theirs.lora.effective_alpha
    for section, keys in {"lora": ("rank", "target_modules", "dropout"),
                          "train": ("learning_rate", "steps", "optimizer", "scheduler", "min_lr_ratio", "batch_size"),
                          "checkpoints": ("every", "keep_last"),
                          "validation": ("audio", "audio_cfg", "stg_scale", "audio_stg_scale", "modality_scale",
                                         "audio_modality_scale", "guidance_rescale")}.items():
        for key in keys:
            mine, official = getattr(getattr(ours, section), key), getattr(getattr(theirs, section), key)
            if key in ("audio_stg_scale", "audio_modality_scale"):  # null = the video's: compare as resolved
                assert resolve_sampling(ours.validation).__dict__[key] == official, (section, key)
                continue
            assert mine == official, (section, key, mine, official)


def test_init_cli_writes_a_task_and_its_help_lists_every_task(tmp_path):
    from conftest import assert_user_error, run_cli

    res = run_cli("init", "--help")
    text = " ".join(res.out.split())
    for name, (line, _, _) in TASK_PRESETS.items():
        assert f"{name}: {line}" in text, name
    res = run_cli("init", tmp_path / "a.yaml", "--task", "a2a_ic")
    assert res.code == 0 and "task a2a_ic" in res.out, res.err
    assert task_name(load_config(tmp_path / "a.yaml").task) == "a2a_ic"
    assert "# Needs in the dataset: each row's reference_audio." in (tmp_path / "a.yaml").read_text()
    assert_user_error(run_cli("init", tmp_path / "b.yaml", "--task", "v2v"), "unknown task 'v2v'", "v2v_ic")
    assert not (tmp_path / "b.yaml").exists()


# What each shipped config's validation samples give as our prompt inputs, and the sample keys the note names.
SAMPLE_INPUTS: dict[str, tuple[set[str], set[str]]] = {
    "t2v_lora": (set(), set()), "t2v_lora_low_vram": (set(), set()), "t2a_lora": (set(), set()),
    "i2v_lora": ({"image"}, set()), "a2v_lora": ({"audio"}, set()), "v2a_lora": ({"video"}, set()),
    "video_extend_lora": ({"video"}, set()), "video_suffix_lora": ({"video"}, set()),
    "video_inpainting_lora": ({"video", "mask"}, set()), "video_outpainting_lora": ({"video"}, set()),
    "audio_extend_lora": ({"audio"}, {"duration"}), "audio_suffix_lora": ({"audio"}, {"duration"}),
    "audio_inpainting_lora": ({"audio"}, {"mask"}),
    "v2v_ic_lora": ({"reference_video"}, {"include_in_output"}),
    "a2a_ic_lora": ({"reference_audio"}, set()),
    "av2av_ic_lora": ({"reference_video", "reference_audio"}, {"include_in_output"}),
}


@pytest.mark.parametrize("name", list(SHIPPED))
def test_shipped_validation_samples_keep_their_conditioning_inputs(name, tmp_path):
    """`validation.samples[].conditions` become each prompt's inputs; they fit the translated task (the check
    validation runs before loading anything), so the samples are conditioned as the official trainer conditions
    them; what differs (audio prefix 1 s where the task keeps 8 steps, a pickle mask, include_in_output) is named."""
    from ltx_lora.errors import UserError
    from ltx_lora.sample.conditions import check_inputs

    data = shipped(name)
    t = translate(data)
    cfg = parse_config(t.config, source=name)
    given, named = SAMPLE_INPUTS[name]
    samples = cfg.validation_samples()
    assert [s.prompt for s in samples] == [s["prompt"] for s in data["validation"]["samples"]]
    conditioned = [s for s in samples if s.inputs()]
    assert all(set(s.inputs()) == given for s in conditioned) and (len(conditioned) > 0) == bool(given)
    said = {k.rsplit(".", 1)[1] for k in [*t.changed, *t.dropped] if k.startswith("validation.samples[]")}
    assert said == named, (said, t.changed, t.dropped)
    local = []  # the files where the config says they are (here: empty files in tmp_path)
    for s in samples:
        paths = {k: tmp_path / v.lstrip("/") for k, v in s.inputs().items()}
        for p in paths.values():
            p.touch()
        local.append(s.model_copy(update={k: str(p) for k, p in paths.items()}))
    check = (local, resolve_task(cfg.task), resolve_sampling(cfg.validation), None)
    if name == "audio_inpainting_lora":  # the .pt mask is not read: validation asks for a mask file ltx-lora reads
        with pytest.raises(UserError, match="no `mask`"):
            check_inputs(*check)
    else:
        check_inputs(*check)
