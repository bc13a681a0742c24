"""Training pieces that need no model: sigma sampling, schedules, batch order, checkpoints, cache padding."""

import itertools
import json
from collections import Counter

import pytest
import torch
from rich.console import Console

from ltx_lora.bucket_spec import batch_size_for, parse_buckets
from ltx_lora.config import LoggingConfig, TrainConfig, parse_config
from ltx_lora.data.cache import CacheItem, Manifest
from ltx_lora.data.loader import BatchOrder, caption_dropout_draw, empty_prompt_file, text_files
from ltx_lora.errors import UserError
from ltx_lora.train.checkpointer import (
    DamagedCheckpoint,
    TrainingState,
    checkpoint_lora,
    latest_training_checkpoint,
    load_training_state,
    save_training_checkpoint,
)
from ltx_lora.train.ema import LoraEma
from ltx_lora.train.metrics import MetricsLogger, wandb_run_id
from ltx_lora.train.optim import lr_factor, set_lr
from ltx_lora.train.timesteps import SigmaSampler, logit_normal_shift


def test_shift_follows_the_official_line():
    assert logit_normal_shift(1024) == pytest.approx(0.95)
    assert logit_normal_shift(4096) == pytest.approx(2.05)
    assert logit_normal_shift(8192) > 2.05  # extrapolated


def test_shifted_logit_normal_moves_towards_noise_with_more_tokens():
    s = SigmaSampler()
    lo = s.sample(20000, 256, torch.Generator().manual_seed(0), torch.device("cpu"))
    hi = s.sample(20000, 8192, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert lo.min() >= 0 and hi.max() <= 1
    assert hi.median() > lo.median() + 0.1
    # about 10% uniform draws keep the low-noise end trained even at high token counts
    assert (hi < 0.3).float().mean() > 0.02


def test_sampling_is_a_function_of_the_generator_state():
    s = SigmaSampler()
    g = torch.Generator().manual_seed(5)
    a = s.sample(8, 3570, g, torch.device("cpu"))
    state = g.get_state()
    b = s.sample(8, 3570, g, torch.device("cpu"))
    g.set_state(state)
    assert torch.equal(b, s.sample(8, 3570, g, torch.device("cpu")))
    assert not torch.equal(a, b)


def _official_shifted_logit_normal(batch, tokens, gen, std, eps, uniform_prob):
    """ltx-trainer's ShiftedLogitNormalTimestepSampler.sample (timestep_samplers.py), re-expressed with an explicit
    generator in place of torch's global one (the same draws in the same order: randn, rand, rand)."""
    mu = 0.95 + (2.05 - 0.95) / (4096 - 1024) * (tokens - 1024)
    logit = torch.sigmoid(torch.randn((batch,), generator=gen) * std + mu)
    hi, lo = torch.sigmoid(torch.tensor(mu + 3.0902 * std)), torch.sigmoid(torch.tensor(mu + -2.5758 * std))
    raw = (logit - lo) / (hi - lo)
    stretched = torch.clamp(torch.where(raw >= eps, raw, 2 * eps - raw), 0, 1)
    uniform = (1 - eps) * torch.rand((batch,), generator=gen) + eps
    prob = torch.rand((batch,), generator=gen)
    return torch.where(prob > uniform_prob, stretched, uniform)


@pytest.mark.parametrize("params", [{}, {"std": 0.6, "eps": 0.02, "uniform_prob": 0.3}])
def test_shifted_logit_normal_is_the_official_sampler_with_its_parameters(params):
    official = {"std": 1.0, "eps": 1e-3, "uniform_prob": 0.1, **params}
    cfg = TrainConfig(timestep_sampling_params=params)
    ours = SigmaSampler.build(cfg).sample(4096, 3570, torch.Generator().manual_seed(11), torch.device("cpu"))
    theirs = _official_shifted_logit_normal(4096, 3570, torch.Generator().manual_seed(11), **official)
    assert torch.equal(ours, theirs)


def test_uniform_between_min_and_max_is_the_official_sampler():
    cfg = TrainConfig(timestep_sampling="uniform", timestep_sampling_params={"min_value": 0.25, "max_value": 0.75})
    ours = SigmaSampler.build(cfg).sample(4096, 10, torch.Generator().manual_seed(3), torch.device("cpu"))
    theirs = torch.rand(4096, generator=torch.Generator().manual_seed(3)) * (0.75 - 0.25) + 0.25  # UniformTimestepSampler
    assert torch.equal(ours, theirs) and 0.25 <= ours.min() and ours.max() <= 0.75


def test_timestep_parameters_of_the_other_sampler_are_refused():
    with pytest.raises(UserError, match=r"timestep_sampling_params.min_value does not apply to timestep_sampling "
                                        r"shifted_logit_normal"):
        parse_config({"train": {"timestep_sampling_params": {"min_value": 0.5}}})
    with pytest.raises(UserError, match=r"min_value \(0.8\) must be below max_value \(0.5\)"):
        parse_config({"train": {"timestep_sampling": "uniform",
                                "timestep_sampling_params": {"min_value": 0.8, "max_value": 0.5}}})


def test_uniform_sampler_range():
    x = SigmaSampler("uniform").sample(5000, 10, torch.Generator().manual_seed(1), torch.device("cpu"))
    assert 0 <= x.min() and x.max() <= 1 and abs(x.mean().item() - 0.5) < 0.03


@pytest.mark.parametrize("sched,mid,end", [("constant", 1.0, 1.0), ("linear", 0.5, 0.0), ("cosine", 0.5, 0.0)])
def test_schedules_after_warmup(sched, mid, end):
    cfg = TrainConfig(steps=110, warmup_steps=10, scheduler=sched)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(60, cfg) == pytest.approx(mid, abs=1e-6)
    assert lr_factor(110, cfg) == pytest.approx(end, abs=1e-6)



@pytest.mark.parametrize("sched", ["constant", "linear", "cosine"])
@pytest.mark.parametrize("warmup", [0, 4])
def test_schedule_peaks_at_warmup_ends_at_the_floor_and_resumes_alike(sched, warmup):
    cfg = TrainConfig(steps=20, warmup_steps=warmup, scheduler=sched, min_lr_ratio=0.1, learning_rate=2e-4)
    lrs = [lr_factor(s, cfg) for s in range(cfg.steps)]
    if warmup:
        assert lrs[:warmup] == pytest.approx([(s + 1) / warmup for s in range(warmup)])  # peak exactly at step 4
    assert lrs[warmup] == pytest.approx(1.0) and max(lrs) == pytest.approx(1.0)
    after = lrs[warmup:]
    assert all(a >= b for a, b in itertools.pairwise(after))  # never rises after warm-up
    floor = 1.0 if sched == "constant" else 0.1
    assert lr_factor(cfg.steps, cfg) == pytest.approx(floor) and min(after) >= floor - 1e-12
    # The sequence a resumed run sets (fresh optimizer, config read again) is the uninterrupted one, bit for bit.
    def sequence(start: int, cfg: TrainConfig) -> list[float]:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.learning_rate)
        return [set_lr(opt, s, cfg) for s in range(start, cfg.steps)]
    straight = sequence(0, cfg)
    assert sequence(0, cfg)[:7] + sequence(7, TrainConfig(**cfg.model_dump())) == straight
    assert straight == [cfg.learning_rate * f for f in lrs]


def test_default_schedule_is_unchanged():
    cfg = TrainConfig(steps=10)
    assert (cfg.scheduler.value, cfg.warmup_steps, cfg.min_lr_ratio) == ("linear", 0, 0.0)
    assert [lr_factor(s, cfg) for s in range(10)] == pytest.approx([1 - s / 10 for s in range(10)])

def test_caption_dropout_selects_the_empty_prompt_from_the_saved_generator(tmp_path):
    items = [CacheItem(f"l{i}", f"text/c{i}.safetensors", "64x64x9", 24.0, True) for i in range(4)]
    gen = torch.Generator().manual_seed(5)
    before = gen.get_state()
    assert caption_dropout_draw(4, 0.0, gen) == [False] * 4
    assert torch.equal(gen.get_state(), before)  # 0: nothing drawn, the noise that follows is as without dropout
    assert text_files(items, caption_dropout_draw(4, 0.0, gen), "text/empty.safetensors") == [i.text for i in items]
    assert text_files(items, caption_dropout_draw(4, 1.0, gen), "text/empty.safetensors") == ["text/empty.safetensors"] * 4
    # from the same generator state the same samples are dropped (a resumed run restores that state)
    gen.manual_seed(9)
    state = gen.get_state()
    first = caption_dropout_draw(1000, 0.3, gen)
    gen.set_state(state)
    assert caption_dropout_draw(1000, 0.3, gen) == first and 200 < sum(first) < 400
    # a cache from before caption dropout: one sentence, run preprocess again
    with pytest.raises(UserError, match=r"caption_dropout needs the empty prompt.*run `ltx-lora preprocess`"):
        empty_prompt_file(Manifest(settings={}, prompts={"a ball": "text/x.safetensors"}), tmp_path)
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "e.safetensors").write_bytes(b"")
    assert empty_prompt_file(Manifest(settings={}, prompts={"": "text/e.safetensors"}), tmp_path) == "text/e.safetensors"


def _items():
    items = [CacheItem(f"l{i}", f"t{i}", "64x64x9", 24.0, True) for i in range(7)]
    items += [CacheItem(f"s{i}", f"u{i}", "64x64x1", 24.0, False) for i in range(5)]
    return items


def test_batches_never_mix_buckets_and_use_per_bucket_sizes():
    items = _items()
    order = BatchOrder(items, batch_size=1, seed=3, token_budget=8)
    clip, still = parse_buckets("64x64x9;64x64x1")
    assert batch_size_for(clip, token_budget=8) == 1 and batch_size_for(still, token_budget=8) == 2
    seen = []
    for batch in order.epoch_batches(0):
        assert len({items[i].bucket for i in batch}) == 1
        seen += batch
    assert sorted(seen) == list(range(len(items)))  # every item once per epoch
    assert order.epoch_batches(0) != order.epoch_batches(1)


def test_batch_order_resumes_exactly():
    full = BatchOrder(_items(), 2, seed=9)
    expected = [full.next() for _ in range(17)]
    first = BatchOrder(_items(), 2, seed=9)
    got = [first.next() for _ in range(6)]
    second = BatchOrder(_items(), 2, seed=9)
    second.restore(json.loads(json.dumps(first.position())))
    got += [second.next() for _ in range(11)]
    assert got == expected


def test_repeats_draw_a_clip_that_many_times_a_pass_and_resume_exactly():
    """The dataset's repeats column: each clip is drawn `repeats` times in every pass over the data, batches still
    of one shape, and a resumed order takes the same batches."""
    items = _items()
    items[0].repeats, items[3].repeats, items[8].repeats = 3, 2, 4
    order = BatchOrder(items, batch_size=2, seed=5)
    for epoch in (0, 1):
        seen = Counter()
        for batch in order.epoch_batches(epoch):
            assert len({items[i].bucket for i in batch}) == 1
            seen.update(batch)
        assert seen == {i: item.repeats for i, item in enumerate(items)}
    full = BatchOrder(items, 2, seed=5)
    expected = [full.next() for _ in range(23)]
    first = BatchOrder(items, 2, seed=5)
    got = [first.next() for _ in range(9)]
    second = BatchOrder(items, 2, seed=5)
    second.restore(first.position())
    assert got + [second.next() for _ in range(14)] == expected


def _state(step, params):
    opt = torch.optim.AdamW(params, lr=1e-3)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    return TrainingState(step=step, lora={"a": params[0].detach()}, optimizer=opt.state_dict(),
                         rng={"sampler": torch.Generator().manual_seed(1).get_state(),
                              "torch_cpu": torch.get_rng_state()},
                         data_position={"epoch": 1, "index": 2}, meta={"rank": 4, "batch_size": 1})


def test_checkpoint_round_trip_without_pickle(tmp_path):
    params = [torch.nn.Parameter(torch.randn(3, 2))]
    state = _state(7, params)
    path = save_training_checkpoint(tmp_path, state, {"x": torch.zeros(1)}, {"step": "7"}, keep_last=2)
    back = load_training_state(path)
    assert back.step == 7 and back.meta == {"rank": 4, "batch_size": 1} and back.data_position == {"epoch": 1, "index": 2}
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.randn(3, 2))], lr=1e-3)
    opt.load_state_dict(back.optimizer)
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], state.optimizer["state"][0]["exp_avg"])


def test_keep_last_and_partial_writes_are_ignored(tmp_path):
    params = [torch.nn.Parameter(torch.randn(2))]
    for step in (1, 2, 3):
        save_training_checkpoint(tmp_path, _state(step, params), {"x": torch.zeros(1)}, {}, keep_last=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_000002", "step_000003"]
    # a writer killed mid-way leaves only a hidden .tmp folder, which is never taken as a checkpoint
    (tmp_path / "checkpoints" / ".step_000004.tmp").mkdir()
    (tmp_path / "checkpoints" / ".step_000004.tmp" / "state.safetensors").write_bytes(b"partial")
    assert latest_training_checkpoint(tmp_path).name == "step_000003"


def test_checkpoint_lora_is_named_by_run_and_step_and_older_names_still_resume(tmp_path):
    params = [torch.nn.Parameter(torch.randn(2))]
    run = tmp_path / "my-run"
    path = save_training_checkpoint(run, _state(250, params), {"x": torch.zeros(1)}, {}, keep_last=2)
    assert sorted(p.name for p in path.iterdir()) == ["my-run_step_000250.safetensors", "state.safetensors"]
    assert checkpoint_lora(path) == path / "my-run_step_000250.safetensors"
    renamed = run.rename(tmp_path / "renamed")  # a run folder moved since: its checkpoints still count
    assert latest_training_checkpoint(renamed).name == "step_000250"
    ckpt = renamed / "checkpoints" / "step_000250"
    (ckpt / "my-run_step_000250.safetensors").rename(ckpt / "lora.safetensors")  # written by an older version
    assert checkpoint_lora(ckpt) == ckpt / "lora.safetensors" and latest_training_checkpoint(renamed) == ckpt
    (ckpt / "lora.safetensors").unlink()
    assert checkpoint_lora(ckpt) is None and latest_training_checkpoint(renamed) is None


def test_damaged_state_is_one_sentence(tmp_path):
    params = [torch.nn.Parameter(torch.randn(2))]
    path = save_training_checkpoint(tmp_path, _state(1, params), {"x": torch.zeros(1)}, {}, keep_last=2)
    (path / "state.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="is damaged.*delete that checkpoint folder"):
        load_training_state(path)


def test_a_checkpoint_folder_renamed_to_another_step_is_not_resumed_as_that_step(tmp_path):
    params = [torch.nn.Parameter(torch.randn(2))]
    path = save_training_checkpoint(tmp_path, _state(100, params), {"x": torch.zeros(1)}, {}, keep_last=2)
    moved = path.rename(path.with_name("step_000300"))
    with pytest.raises(DamagedCheckpoint, match="named for step 300 but it holds step 100.*rename it back to "
                                                "step_000100"):
        load_training_state(moved)
    assert load_training_state(moved.rename(path)).step == 100


def test_metrics_drop_the_steps_past_the_resume_point(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss_video": 1.0}) + "\n" for s in (1, 2, 3, 4)) + '{"step": 5, "lo')
    logger = MetricsLogger(tmp_path, LoggingConfig(tensorboard=False), Console(quiet=True), total_steps=4, start=2)
    logger.log_step(3, 0.5, None, 1e-3, 0.1)
    logger.close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]


def test_tensorboard_drops_the_steps_past_the_resume_point(tmp_path):
    """A killed run logged steps 1-4 after its checkpoint at step 2; the resumed run logs 3-4 again: TensorBoard's
    reader shows each step once, with the resumed run's values."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = MetricsLogger(tmp_path, LoggingConfig(), Console(quiet=True), total_steps=4, start=0)
    for step in (1, 2, 3, 4):
        first.log_step(step, 1.0, None, 1e-3, 0.1)
    first.close()
    resumed = MetricsLogger(tmp_path, LoggingConfig(), Console(quiet=True), total_steps=4, start=2)
    for step in (3, 4):
        resumed.log_step(step, 0.5, None, 1e-3, 0.1)
    resumed.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss/video")] == [(1, 1.0), (2, 1.0), (3, 0.5), (4, 0.5)]


def test_a_resumed_run_logs_to_the_w_and_b_run_of_its_first_start(tmp_path):
    first = wandb_run_id(tmp_path, resuming=False)
    assert first.isalnum() and (tmp_path / "wandb_id").read_text().strip() == first
    assert wandb_run_id(tmp_path, resuming=True) == first  # --resume: the same W&B run
    again = wandb_run_id(tmp_path, resuming=False)  # trained again from step 0: a new W&B run
    assert again != first and wandb_run_id(tmp_path, resuming=True) == again
    (tmp_path / "wandb_id").write_text("../../x\n")  # not an id: a new one rather than a path or odd name
    assert wandb_run_id(tmp_path, resuming=True) not in ("../../x", again)


def test_ema_equals_its_closed_form_and_swaps_back_bit_for_bit(tmp_path):
    d, k, start = 0.9, 5, 2
    w = {"b.lora_A.weight": torch.nn.Parameter(torch.zeros(3, 4)), "b.lora_B.weight": torch.nn.Parameter(torch.ones(4, 3))}
    ema = LoraEma(w, d, on_host=True, start_step=start)
    seen = []
    for step in range(1, start + k + 1):
        with torch.no_grad():
            for p in w.values():
                p.add_(torch.randn_like(p))
        seen.append({n: p.detach().clone() for n, p in w.items()})
        ema.update(step)
    # up to start_step the average is the weights; then ema_k = d^k w_start + sum_i (1 - d) d^(k-i) w_(start+i)
    for n in w:
        closed = d ** k * seen[start - 1][n] + sum((1 - d) * d ** (k - i) * seen[start - 1 + i][n] for i in range(1, k + 1))
        torch.testing.assert_close(ema.averages[n], closed, rtol=1e-6, atol=1e-6)
        assert ema.averages[n].dtype == torch.float32 and ema.averages[n].device.type == "cpu"
    raw = {n: p.detach().clone() for n, p in w.items()}
    with ema.swapped_in():
        assert all(torch.equal(p, ema.averages[n]) for n, p in w.items())
    assert all(torch.equal(p, raw[n]) for n, p in w.items())
    # saved and loaded (as a training state holds it): the same tensors, bit for bit
    full = ema.full()
    other = LoraEma(w, d)
    other.load_full(full)
    assert all(torch.equal(other.averages[n], full[n]) for n in w)
    rng = {"sampler": torch.Generator().get_state(), "torch_cpu": torch.get_rng_state()}  # what the trainer saves
    state = TrainingState(step=7, lora=raw, optimizer={"state": {}, "param_groups": []}, rng=rng, data_position={},
                          meta={"batch_size": 1}, ema=full)
    saved = save_training_checkpoint(tmp_path, state, {}, {}, keep_last=1)
    assert all(torch.equal(load_training_state(saved).ema[n], full[n]) for n in w)
