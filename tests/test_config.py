"""Config schema, init templates, the official-config translation and their one-sentence errors."""

import re
import sys
from pathlib import Path

import pytest
import yaml
from conftest import assert_user_error, run_cli

from ltx_lora.config import Config, load_config, parse_config
from ltx_lora.task import TASK_PRESETS, resolve_task, task_name
from ltx_lora.config_template import PROFILES, render_config
from ltx_lora.errors import UserError


def test_defaults_are_the_guides_first_run_settings():
    c = Config()
    assert (c.lora.rank, c.lora.effective_alpha, c.train.learning_rate, c.train.steps) == (32, 32.0, 1e-4, 2000)
    assert c.train.batch_size == 1 and c.train.mixed_precision == "bf16" and c.train.gradient_checkpointing
    assert c.data.buckets == "960x544x49"
    assert c.lora.target_modules == ["to_k", "to_q", "to_v", "to_out.0"]


@pytest.mark.parametrize("profile", list(PROFILES))
def test_every_profile_renders_a_config_that_round_trips(profile, tmp_path):
    text = render_config(profile, checkpoint="/m/dev.safetensors", text_encoder="/m/gemma")
    assert text.count("# ") > 30  # every key is commented
    p = tmp_path / "c.yaml"
    p.write_text(text)
    cfg = load_config(p)
    assert cfg.memory.plan == profile
    assert cfg.model.checkpoint == "/m/dev.safetensors"
    assert parse_config(yaml.safe_load(cfg.to_yaml())) == cfg


TIERS = ["80gb", "48gb", "32gb", "24gb"]


@pytest.mark.parametrize("tier", TIERS)
def test_a_profile_is_the_tiers_plan(tier):
    """A profile sets memory.plan and leaves the base format and block swap to the plan: the profile's plan is
    exactly the plan for that tier, and README's tier row says what that plan does."""
    from ltx_lora.runtime.memory import plan_for_config

    cfg = parse_config(yaml.safe_load(render_config(tier)))
    assert (cfg.memory.plan, cfg.memory.quantization, cfg.memory.block_swap) == (tier, "auto", "auto")
    plan = plan_for_config(cfg)
    assert plan == plan_for_config(Config(memory={"plan": tier}))
    row = next(line for line in (Path(__file__).parents[1] / "README.md").read_text().splitlines()
               if line.startswith(f"| {tier[:2]} GB |"))
    assert {"none": "bf16", "fp8": "INT8", "int8": "INT8"}[plan.quantization] in row
    if plan.swapped_blocks:
        assert f"swaps {len(plan.swapped_blocks)} of {plan.blocks} blocks" in row, row
    else:
        assert "swap" not in row, row


@pytest.mark.parametrize("profile", list(PROFILES))
def test_profiles_write_nothing_that_needs_a_missing_package(profile, tmp_path, monkeypatch):
    """doctor --config on a fresh profile without bitsandbytes: only the unset model paths FAIL."""
    from ltx_lora.doctor import run_checks

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as on a machine without it: importing it fails
    p = tmp_path / "c.yaml"
    p.write_text(render_config(profile))
    failed = {c.name for c in run_checks(p) if c.status == "FAIL"}
    assert failed <= {"model.checkpoint", "model.text_encoder", "gpu", "bf16"}, failed


@pytest.mark.parametrize("key,value,needs", [
    ("train.optimizer", "adamw8bit", "pip install bitsandbytes"),
    ("memory.text_encoder_8bit", True, "pip install bitsandbytes"),
    ("logging.wandb", True, "pip install wandb"),
])
def test_doctor_fails_a_setting_whose_package_is_missing(key, value, needs, tmp_path, monkeypatch):
    from ltx_lora.doctor import check_config_packages

    section, name = key.split(".")
    cfg = parse_config({section: {name: value}})
    module = needs.split()[-1]
    monkeypatch.setitem(sys.modules, module, None)  # as on a machine without it
    fails = [c for c in check_config_packages(cfg) if c.status == "FAIL"]
    assert len(fails) == 1 and key in fails[0].detail and needs in fails[0].fix, fails
    assert check_config_packages(Config()) == []


def test_doctor_says_bitsandbytes_imports_for_adamw8bit():
    """The lowvram extra installed (as the test environment has it): doctor says it imports, with its version."""
    bnb = pytest.importorskip("bitsandbytes")
    from ltx_lora.doctor import check_config_packages

    (check,) = check_config_packages(parse_config({"train": {"optimizer": "adamw8bit"}}))
    assert check.status == "OK" and f"bitsandbytes {bnb.__version__} imports" in check.detail, check


def test_unknown_key_names_the_closest_valid_one():
    with pytest.raises(UserError, match=r"unknown key 'lora.rnak' \(did you mean 'rank'\?\)"):
        parse_config({"lora": {"rnak": 8}})
    with pytest.raises(UserError, match=r"unknown key 'trian'.*did you mean 'train'"):
        parse_config({"trian": {}})


def test_bad_value_is_one_sentence_naming_the_key():
    with pytest.raises(UserError, match=r"'train.learning_rate' is invalid"):
        parse_config({"train": {"learning_rate": -1}})


@pytest.mark.parametrize("section,key,value", [
    ("lora", "alpha", 0), ("lora", "alpha", -1), ("train", "max_grad_norm", -1), ("data", "token_budget", 0),
    ("data", "target_fps", 0), ("data", "target_fps", -1), ("train", "learning_rate", True),
    ("train", "steps", True), ("train", "seed", False), ("validation", "stg_blocks", [True]),
])
def test_values_that_would_train_silently_wrong_are_refused_naming_the_key(section, key, value):
    with pytest.raises(UserError, match=rf"'{section}.{key}' is invalid"):
        parse_config({section: {key: value}})


def test_null_and_true_stay_where_they_mean_something():
    cfg = parse_config({"train": {"max_grad_norm": None, "gradient_checkpointing": True}, "lora": {"alpha": 0.5}})
    assert cfg.train.max_grad_norm is None and cfg.lora.alpha == 0.5


def test_task_is_a_preset_or_a_mapping_and_the_old_mode_key_says_what_to_write():
    assert resolve_task(parse_config({"task": "i2v"}).task).video.find("first_frame")[0].probability == 0.5
    assert resolve_task(parse_config({}).task) == TASK_PRESETS["t2av"][2]  # default: the official t2v_lora.yaml
    custom = parse_config({"task": {"audio": {"role": "off"}, "video": {"conditions": [
        {"type": "prefix", "frames": 2, "probability": 0.3}]}}}).task
    assert task_name(custom) == "custom" and resolve_task(custom).video.conditions[0].frames == 2
    assert task_name(parse_config({"task": {"audio": {"role": "off"}}}).task) == "t2v"
    with pytest.raises(UserError, match=r"task: i2v.*first_frame"):
        parse_config({"train": {"mode": "i2v", "first_frame_conditioning_p": 0.9}})
    with pytest.raises(UserError, match=r"task"):
        parse_config({"task": {"video": {"role": "condition"}, "audio": {"role": "off"}}})
    with pytest.raises(UserError, match=r"task"):
        parse_config({"task": {"audio": {"conditions": [{"type": "first_frame"}]}}})


OFFICIAL = """
model:
  model_path: /models/ltx-2.3-22b-dev.safetensors
  text_encoder_path: /models/gemma-3-12b-it
  training_mode: lora
lora: {rank: 16, alpha: 16, dropout: 0.0, target_modules: [to_k, to_q, to_v, to_out.0]}
training_strategy:
  name: flexible
  video: {is_generated: true, latents_dir: latents, conditions: [{type: first_frame, probability: 0.5}]}
  audio: {is_generated: true, latents_dir: audio_latents}
optimization: {learning_rate: 2e-4, steps: 500, batch_size: 1, gradient_accumulation_steps: 4,
               max_grad_norm: 1.0, optimizer_type: adamw8bit, scheduler_type: cosine,
               enable_gradient_checkpointing: true}
acceleration: {mixed_precision_mode: bf16, quantization: int8-quanto, load_text_encoder_in_8bit: true}
data: {preprocessed_data_root: /data/pre}
validation:
  samples: [{prompt: a cat}, {prompt: a dog}]
  video_dims: [768, 512, 49]
  inference_steps: 30
  interval: 100
  video_cfg_scale: 3.0
  stg_blocks: [28]
checkpoints: {interval: 250, keep_last_n: -1}
flow_matching: {timestep_sampling_mode: shifted_logit_normal}
seed: 7
output_dir: outputs/x
"""


def test_official_trainer_config_is_translated(tmp_path, capsys):
    p = tmp_path / "official.yaml"
    p.write_text(OFFICIAL)
    cfg = load_config(p)
    assert cfg.model.checkpoint == "/models/ltx-2.3-22b-dev.safetensors"
    assert resolve_task(cfg.task) == TASK_PRESETS["i2v"][2]
    assert (cfg.train.learning_rate, cfg.train.steps, cfg.train.gradient_accumulation) == (2e-4, 500, 4)
    assert cfg.train.optimizer.value == "adamw8bit" and cfg.memory.quantization == "int8"
    assert cfg.validation.prompts == ["a cat", "a dog"] and cfg.validation.resolution == "768x512x49"
    assert cfg.train.seed == 7 and cfg.output_dir == str(tmp_path / "outputs/x")  # from the config's folder
    assert "official LTX trainer config" in capsys.readouterr().err


def test_cli_init_writes_and_refuses_to_overwrite(tmp_path):
    p = tmp_path / "my.yaml"
    res = run_cli("init", p, "--profile", "24gb")
    assert res.code == 0, res.err
    # what to do next, in order, with the paths as they are from here
    assert "Next: set model.checkpoint and model.text_encoder in it to local paths; ltx-lora doctor --config " in res.out
    assert f"dataset scan CLIPS/ -o {tmp_path / 'dataset.jsonl'} --task {p}" in res.out, res.out
    assert res.out.index("doctor") < res.out.index("dataset scan") < res.out.index("preprocess") < res.out.index("train")
    assert load_config(p).memory.plan == "24gb"
    assert_user_error(run_cli("init", p), "already exists", "--force")
    assert_user_error(run_cli("init", tmp_path / "x.yaml", "--profile", "12gb"), "unknown profile")


def test_relative_paths_start_at_the_config_files_folder(tmp_path):
    """A config file's relative paths mean "from this file's folder", from any working directory; `init` writes
    the paths typed on its command line (relative to the working directory) so that they keep meaning that."""
    (tmp_path / "elsewhere").mkdir()
    res = run_cli("init", "configs/my.yaml", "--checkpoint", "models/dev.safetensors", "--text-encoder",
                  "/abs/gemma", cwd=tmp_path)
    assert res.code == 0, res.err
    assert "dataset scan CLIPS/ -o configs/dataset.jsonl --task configs/my.yaml" in res.out and "Next: set" not in res.out
    text = (tmp_path / "configs" / "my.yaml").read_text()
    assert 'checkpoint: "../models/dev.safetensors"' in text and 'text_encoder: "/abs/gemma"' in text
    text = text.replace("reference_image: null", "reference_image: refs/first.png")
    (tmp_path / "configs" / "my.yaml").write_text(text)
    cfg = load_config(tmp_path / "configs" / "my.yaml")
    c = tmp_path / "configs"
    assert cfg.model.checkpoint == str(tmp_path / "models" / "dev.safetensors")
    assert cfg.model.text_encoder == "/abs/gemma"  # absolute: as written
    assert (cfg.data.dataset, cfg.data.cache_dir) == (str(c / "dataset.jsonl"), str(c / ".ltx-lora-cache"))
    assert cfg.output_dir == str(c / "runs" / "my-lora") and cfg.validation.reference_image == str(c / "refs/first.png")
    assert cfg.validation.preview_distilled_lora is None  # unset stays unset
    # a config built in code keeps its paths as given
    assert parse_config({"data": {"dataset": "d.jsonl"}}).data.dataset == "d.jsonl"


HF_DEV = "https://huggingface.co/Lightricks/LTX-2.3/resolve/main/ltx-2.3-22b-dev.safetensors"


def test_a_url_in_a_config_or_init_gets_the_download_sentence_not_a_missing_path(tmp_path):
    """The guide's pitfall: a Hugging Face URL pasted as a model path. Read as a relative path it became
    `CONFIG_FOLDER/https:/huggingface.co/...` and was only said not to exist; it is named as a URL, with the file to
    download, by every command that reads the config, and `init` refuses it instead of writing it mangled."""
    p = tmp_path / "my.yaml"
    assert_user_error(run_cli("init", p, "--checkpoint", HF_DEV), "--checkpoint is a Hugging Face reference",
                      "download ltx-2.3-22b-dev.safetensors from Lightricks/LTX-2.3", "pass --checkpoint models/")
    assert_user_error(run_cli("init", p, "--text-encoder", "https://huggingface.co/google/gemma-3-12b-it"),
                      "--text-encoder is a Hugging Face reference", "huggingface-cli download google/gemma-3-12b-it")
    assert not p.exists()
    assert run_cli("init", p).code == 0
    text = p.read_text()
    p.write_text(text.replace('checkpoint: ""', f'checkpoint: "{HF_DEV}"'))
    for command in (["doctor", "--config", p], ["preprocess", p], ["train", p]):
        res = run_cli(*command)
        assert_user_error(res, f"model.checkpoint is a Hugging Face reference ({HF_DEV})",
                          "set model.checkpoint: models/ltx-2.3-22b-dev.safetensors")
        assert "https:/huggingface" not in res.err.replace("https://", "")
    p.write_text(text.replace('output_dir: "runs/my-lora"', 'output_dir: "s3://bucket/runs"'))
    assert_user_error(run_cli("doctor", "--config", p), "output_dir is a URL (s3://bucket/runs)", "local path")
    p.write_text(text.replace('  prompts:\n', '  prompts:\n    - {prompt: "a fox", image: "https://x.org/a.png"}\n'))
    assert_user_error(run_cli("doctor", "--config", p), "validation.prompts[0].image is a URL")
    # a bare repo id (nothing of that name beside the config) is one too; a Gemma folder yet to be downloaded is not
    p.write_text(text.replace('checkpoint: ""', 'checkpoint: "Lightricks/LTX-2.3"')
                 .replace('text_encoder: ""', 'text_encoder: "models/gemma-3-12b-it-qat-q4_0-unquantized"'))
    assert_user_error(run_cli("doctor", "--config", p),
                      "model.checkpoint is a Hugging Face reference (Lightricks/LTX-2.3)",
                      "huggingface-cli download Lightricks/LTX-2.3 ltx-2.3-22b-dev.safetensors")
    (tmp_path / "Lightricks").mkdir()  # now it names a local path, said not to be a file
    res = run_cli("doctor", "--config", p)
    assert "Hugging Face reference" not in res.out + res.err, res.out
    assert "gemma-3-12b-it-qat-q4_0-unquantized does not exist" in res.out, res.out


def _example_prompt(text: str) -> str:
    """The example mapping `init` writes in the comment above validation.prompts."""
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("# Task ") and "e.g. - {prompt" in ln)
    return line.split("e.g. - ", 1)[1].split("};", 1)[0] + "}"


@pytest.mark.parametrize("task", list(TASK_PRESETS))
def test_init_says_what_a_tasks_validation_prompts_give_and_its_example_is_accepted(task, tmp_path):
    """`init --task a2v` used to write plain prompts that `train` refuses (the task needs each prompt's sound), with
    nothing saying so until training started, after preprocessing. The config now says which inputs a prompt must
    or may give, and its example, once its files exist, passes the check train runs."""
    from ltx_lora.config_template import prompt_inputs
    from ltx_lora.runtime.run import resolve_sampling
    from ltx_lora.sample.validate import check_prompts

    needed, optional = prompt_inputs(TASK_PRESETS[task][2])
    text = render_config(task=task)
    p = tmp_path / "c.yaml"
    p.write_text(text)
    cfg = load_config(p)
    plain = lambda: check_prompts(cfg, resolve_sampling(cfg.validation), resolve_task(cfg.task))  # noqa: E731
    assert "# The prompts below are examples: replace them with 2-3 prompts like your captions" in text
    if not needed and not optional:
        assert "e.g. - {prompt" not in text
        plain()
        return
    if needed:
        with pytest.raises(UserError, match=f"needs `?{needed[0]}"):
            plain()
    else:
        plain()
    example = _example_prompt(text)
    mapping = yaml.safe_load(example)
    assert set(mapping) == {"prompt", *(needed or optional)}, example
    for key in mapping.keys() - {"prompt"}:
        (tmp_path / mapping[key]).parent.mkdir(exist_ok=True)
        (tmp_path / mapping[key]).write_bytes(b"x")
    p.write_text(text.replace("  prompts:\n", f"  prompts:\n    - {example}\n", 1).replace(
        '    - "A red fox', '    # - "A red fox').replace('    - "A close-up', '    # - "A close-up'))
    cfg = load_config(p)
    assert len(cfg.validation.prompts) == 1
    check_prompts(cfg, resolve_sampling(cfg.validation), resolve_task(cfg.task))


def test_doctor_names_a_validation_prompt_the_task_cannot_sample(tmp_path):
    p = tmp_path / "a2v.yaml"
    assert run_cli("init", p, "--task", "a2v").code == 0
    res = run_cli("doctor", "--config", p)
    line = next(ln for ln in res.out.splitlines() if " validation.prompts " in ln)
    assert line.startswith("FAIL") and "validation prompt 1 needs `audio`" in line and res.code == 1, res.out
    (tmp_path / "rain.wav").write_bytes(b"x")
    p.write_text(p.read_text().replace('    - "A red fox', '    - {prompt: "rain on a roof", audio: rain.wav}\n'
                                       '    # - "A red fox').replace('    - "A close-up', '    # - "A close-up'))
    line = next(ln for ln in run_cli("doctor", "--config", p).out.splitlines() if " validation.prompts " in ln)
    assert line.startswith("OK") and "1 prompt the task a2v can sample" in line, line
    p.write_text(p.read_text().replace("audio: rain.wav}", 'audio: "rain\\0.wav"}'))  # a NUL byte: a FAIL, no crash
    res = run_cli("doctor", "--config", p)
    line = next(ln for ln in res.out.splitlines() if " validation.prompts " in ln)
    assert line.startswith("FAIL") and "holds a NUL byte" in line and "Traceback" not in res.err, res.out + res.err


def test_doctor_fails_stg_blocks_the_checkpoint_does_not_have_as_train_refuses_them(tiny_checkpoint, tmp_path):
    """validation.stg_blocks beyond the checkpoint's blocks (29 is the 48-block model's; the tiny one has 2):
    `doctor --config` FAILs them with the sentence `train` refuses them with, and OKs blocks it has."""
    p = tmp_path / "c.yaml"
    assert run_cli("init", p, "--checkpoint", tiny_checkpoint("dev")).code == 0
    line = next(ln for ln in run_cli("doctor", "--config", p).out.splitlines() if " validation.stg_blocks " in ln)
    assert line.startswith("FAIL") and "validation.stg_blocks [29] are not blocks of" in line, line
    p.write_text(p.read_text().replace("stg_blocks:\n    - 29", "stg_blocks:\n    - 1")
                 .replace("  blocks: null", "  blocks: 0-2"))  # lora.blocks likewise
    out = run_cli("doctor", "--config", p).out
    assert " validation.stg_blocks " not in out and any(" validation.prompts " in ln and ln.startswith("OK")
                                                        for ln in out.splitlines()), out
    line = next(ln for ln in out.splitlines() if " lora.blocks " in ln)
    assert line.startswith("FAIL") and "lora.blocks [2] are not blocks of" in line, line


def test_doctor_warns_when_gemmas_weights_exceed_the_gpus_free_memory(tiny_gemma):
    """On a 24 GB card Gemma 3 12B in bf16 (about 24 GB of weights) runs preprocess out of memory after every clip is
    encoded; doctor compares the folder's weight files with the GPU's free memory (given here: no GPU in CI)."""
    from ltx_lora.doctor import check_text_encoder_memory
    from ltx_lora.ltx.text import gemma_weight_files

    cfg = Config(model={"text_encoder": str(tiny_gemma)})
    weights = sum(f.stat().st_size for f in gemma_weight_files(tiny_gemma))
    [short] = check_text_encoder_memory(cfg, weights - 1)
    assert short.status == "WARN" and "exceed the GPU's" in short.detail, short
    assert "memory.text_encoder_8bit: true" in short.fix and "ltx-lora[lowvram]" in short.fix
    [ample] = check_text_encoder_memory(cfg, weights * 2)
    assert ample.status == "OK" and "are under the GPU's" in ample.detail, ample
    assert check_text_encoder_memory(Config(model={"text_encoder": str(tiny_gemma)},
                                            memory={"text_encoder_8bit": True}), 1) == []
    assert check_text_encoder_memory(cfg, None) == []  # no GPU: nothing to compare with
    assert "memory.text_encoder_8bit: true" in render_config("24gb").splitlines()[2]  # init's 24gb profile says so


def test_cli_bad_config_is_exit_2(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  stesp: 10\n")
    assert_user_error(run_cli("doctor", "--config", p), "unknown key 'train.stesp'", "did you mean 'steps'")
    p.write_text("train: [1, 2\n")
    assert_user_error(run_cli("doctor", "--config", p), "not valid YAML")
    assert_user_error(run_cli("doctor", "--config", tmp_path / "none.yaml"), "does not exist")
    p.write_text("train:\n  learning_rate: true\n")  # a number slip: named, not read as 1.0
    assert_user_error(run_cli("doctor", "--config", p), "'train.learning_rate' is invalid", "not true/false")


def test_cli_doctor_reports_each_check():
    res = run_cli("doctor")
    assert res.code == 0, res.out + res.err
    for name in ("python", "torch", "torchaudio", "transformers", "ltx-core", "gpu", "disk"):
        assert name in res.out
    assert "Traceback" not in res.err


def test_doctor_in_a_log_prints_each_check_on_one_whole_line(tiny_checkpoint, tmp_path):
    """Piped at 80 columns (a log), a long checkpoint path is printed whole, on its check's line."""
    dev = tiny_checkpoint("dev")
    cfg = tmp_path / "my.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"checkpoint": str(dev), "text_encoder": str(tmp_path / "no-gemma")}}))
    res = run_cli("doctor", "--config", cfg, env={"COLUMNS": "80"})
    lines = res.out.splitlines()
    assert all(re.match(r"(OK|WARN|FAIL) +\S", line) for line in lines), res.out
    checkpoint = next(line for line in lines if " model.checkpoint " in line)
    assert checkpoint.startswith("OK ") and str(dev) in checkpoint and not checkpoint.endswith(" ")
    assert any(line.startswith("FAIL  model.text_encoder") for line in lines) and res.code == 1


def test_configuration_reference_matches_the_schema():
    from ltx_lora.config_template import render_reference

    doc = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
    assert doc.read_text() == render_reference(), "run: python -m ltx_lora.config_template > docs/configuration.md"


@pytest.mark.parametrize("args", [["train", "--bogus", "x.yaml"], ["train"], ["nosuchcommand"]])
def test_usage_errors_exit_2_without_traceback(args):
    res = run_cli(*args)
    assert res.code == 2 and "Traceback" not in res.err + res.out, res.err
    assert "Try 'ltx-lora" in res.err


def test_bare_command_and_groups_show_help():
    for args in ([], ["dataset"]):
        res = run_cli(*args)
        assert "Usage: ltx-lora" in res.out + res.err and "Traceback" not in res.err + res.out


def test_lora_blocks_read_ranges_and_refuse_what_names_no_block():
    assert parse_config({"lora": {"blocks": "0-3, 40,2"}}).lora.blocks == [0, 1, 2, 3, 40]
    assert parse_config({"lora": {"blocks": [5, 1, 5]}}).lora.blocks == [1, 5]
    for bad, says in (("7-3", "runs backwards"), ("a-b", "not a list of blocks"), ([], "at least one block"),
                      ([-1], "negative"), ("0-99999999999", "beyond any LTX model's"),  # (a MemoryError)
                      ("²", "not a list of blocks")):
        with pytest.raises(UserError, match=says):
            parse_config({"lora": {"blocks": bad}})
    with pytest.raises(UserError, match="names a layer of one block; .* choose blocks with lora.blocks"):
        parse_config({"lora": {"target_modules": ["to_q", "transformer_blocks.3.attn1.to_q"]}})


def test_lora_variants_dora_is_refused_with_the_reason_rslora_is_for_lora_only():
    with pytest.raises(UserError, match="ComfyUI applies a DoRA file"):
        parse_config({"lora": {"variant": "dora"}})
    with pytest.raises(UserError, match="rslora applies to variant lora only"):
        parse_config({"lora": {"variant": "lokr", "rslora": True}})
    with pytest.raises(UserError, match="loraplus_lr_ratio speeds up plain LoRA's lora_B matrices, which lora.variant "
                                        "loha does not have; set it to 1 or lora.variant: lora"):
        parse_config({"lora": {"variant": "loha"}, "train": {"loraplus_lr_ratio": 4}})
    with pytest.raises(UserError, match="adafactor keeps a row and a column of moments per matrix, which "
                                        "distributed.strategy fsdp cannot shard"):
        parse_config({"train": {"optimizer": "adafactor"}, "distributed": {"strategy": "fsdp"}})
    # prodigy raises at its first step on a group at another learning rate (LoRA+'s lora_B)
    with pytest.raises(UserError, match="train.optimizer prodigy cannot"):
        parse_config({"train": {"optimizer": "prodigy", "learning_rate": 1.0, "loraplus_lr_ratio": 4}})
    assert parse_config({"lora": {"variant": "loha"}}).lora.variant.value == "loha"
    cfg = parse_config({"lora": {"variant": "lora", "rslora": True, "rank": 16, "alpha": 8}})
    assert cfg.lora.scale == 8 / 4 and parse_config({"lora": {"rank": 16, "alpha": 8}}).lora.scale == 0.5


def test_task_docs_match_the_presets():
    from ltx_lora.config_template import render_tasks, task_table

    root = Path(__file__).resolve().parents[1]
    assert (root / "docs" / "tasks.md").read_text() == render_tasks(), \
        "run: python -m ltx_lora.config_template tasks > docs/tasks.md"
    readme = (root / "README.md").read_text()
    start = readme.index("<!-- tasks: generated by ltx_lora.config_template.task_table -->\n")
    end = readme.index("<!-- /tasks -->")
    assert readme[start:end].split("\n", 1)[1] == task_table()
