"""Differential output preservation (`train.output_preservation`, ai-toolkit's diff_output_preservation) on the tiny
LTX-2.3 fixture: the step's preservation loss and LoRA gradients against ai-toolkit's formula re-expressed here,
weight 0 against the run without it, a short CLI run that logs it and resumes exactly, and the refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import assert_user_error, run_cli
from rich.console import Console
from test_train import lora_tensors, prepared  # noqa: F401 - the session's preprocessed tiny dataset

from ltx_lora.errors import UserError

TRIGGER, CLASS_WORD = "zxq", "a shape"


@pytest.fixture(scope="module")
def dop(prepared, tmp_path_factory):  # noqa: F811 - the fixture imported above
    """The session's cache with data.trigger_word and output preservation: preprocess (in this process) reuses every
    clip's latents and encodes only the captions with the trigger and their preservation captions. Returns (folder,
    config mapping); read-only."""
    from ltx_lora.config import parse_config
    from ltx_lora.data.preprocess import preprocess

    root, base = prepared
    folder = tmp_path_factory.mktemp("dop")
    shutil.copytree(root / "cache", folder / "cache")
    cfg = {**base, "output_dir": str(folder / "unused"),
           "data": {**base["data"], "cache_dir": str(folder / "cache"), "trigger_word": TRIGGER},
           "train": {**base["train"], "output_preservation": {"class_word": CLASS_WORD}}}
    result = preprocess(parse_config(cfg), Console(quiet=True))
    assert result.used == 5 and result.reused == 5  # no clip encoded again
    items = json.loads((folder / "cache" / "manifest.json").read_text())["items"]
    assert all(i["caption"].startswith(TRIGGER + " ") and i["preservation_text"]
               and i["preservation_caption"] == i["caption"].replace(TRIGGER, CLASS_WORD) for i in items), items
    # only the texts with the trigger and their preservation captions were encoded
    assert result.texts_encoded == len({i["caption"] for i in items} | {i["preservation_caption"] for i in items})
    return folder, cfg


def _config(dop, tmp_path: Path, name: str, keep: dict | None = None, **train) -> Path:
    folder, base = dop
    t = {k: v for k, v in {**base["train"], **train}.items() if k != "output_preservation"}
    if keep is not None:
        t["output_preservation"] = keep
    cfg = {**base, "output_dir": str(tmp_path / name), "train": t}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _trainer(path: Path):
    """A real Trainer built up to its first step (model, LoRA, optimizer, data order, generators)."""
    from ltx_lora.config import load_config
    from ltx_lora.runtime.run import resolve_run
    from ltx_lora.train.trainer import Trainer

    trainer = Trainer(resolve_run(load_config(path)), console=Console(quiet=True))
    manifest, resume = trainer._check_inputs()
    return trainer, trainer._build(manifest, resume)


def _nonzero_lora(t) -> None:
    """lora_B drawn at random (it starts at zero, where the LoRA predicts exactly what the base does)."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in t.params.items():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def _to_batch_with_audio(t) -> None:
    """Move the data order to the first batch whose clips have sound (so the audio part is checked too)."""
    while True:
        position = t.order.position()
        if all(t.manifest.items[i].has_audio and t.manifest.items[i].has_video for i in t.order.next()):
            t.order.restore(position)
            return


def test_preservation_loss_and_gradients_are_ai_toolkits_formula(dop, tmp_path):
    """One step in fp32 on CPU: the trainer's preservation loss and LoRA gradients equal ai-toolkit's
    `loss + mse(pred, prior) x multiplier (+ audio mse x multiplier x audio multiplier)`, with its prior predicted
    with the network off (here: every lora_B zeroed, not the trainer's switch) on the same noisy inputs and the
    caption with the trigger replaced (str.replace, as ai-toolkit), all computed here from the same inputs."""
    import torch.nn.functional as F
    from dataclasses import replace

    from ltx_lora.data import cache as store
    from ltx_lora.files.text_features import pad_batch
    from ltx_lora.ltx.fast import attention_mask_or_none
    from ltx_lora.ltx.modality import predict_velocity
    from ltx_lora.ltx.text import run_text_connectors
    from ltx_lora.train.objective import compute_loss, prepare_inputs

    weight, audio_weight = 0.7, 0.5
    trainer, t = _trainer(_config(dop, tmp_path, "fidelity", {"class_word": CLASS_WORD, "weight": weight},
                                  audio_loss_weight=audio_weight))
    _nonzero_lora(t)
    _to_batch_with_audio(t)
    position, gen_state = t.order.position(), t.gen.get_state()
    log = trainer._accumulate(t, 0)
    got = {n: p.grad.clone() for n, p in t.params.items()}
    t.optimizer.zero_grad(set_to_none=True)

    # the same inputs, again: the batch, the text connectors, the noise (the generator's state as before the step)
    t.order.restore(position)
    t.gen.set_state(gen_state)
    ids = t.order.next()
    items = [t.manifest.items[i] for i in ids]
    batch, _ = trainer._micro_batch(t, ids, slice(0, len(ids)))
    encoder = json.loads((Path(dop[0]) / "cache" / "manifest.json").read_text())["settings"]["text_encoder"]
    dop_captions = [i.caption.replace(TRIGGER, CLASS_WORD) for i in items]  # ai-toolkit's replacement
    assert all(c.startswith(CLASS_WORD + " ") and TRIGGER not in c for c in dop_captions), dop_captions
    with torch.no_grad():
        padded = pad_batch([store.read_text(Path(dop[0]) / "cache", store.text_file(c, encoder)) for c in dop_captions])
        dv, da, dm = run_text_connectors(t.models.text_connectors, padded)
    inputs = prepare_inputs(batch, t.sampler, t.gen, task=trainer.task, dtype=torch.float32)
    model = t.models.transformer
    video_pred, audio_pred = predict_velocity(model, inputs.video, inputs.audio)
    main = compute_loss(video_pred, audio_pred, inputs, audio_weight).total
    video = replace(inputs.video, context=dv, context_mask=attention_mask_or_none(dm))
    audio = replace(inputs.audio, context=da, context_mask=attention_mask_or_none(dm))
    b_params = {n: p for n, p in t.params.items() if "lora_B" in n}
    kept = {n: p.detach().clone() for n, p in b_params.items()}
    with torch.no_grad():
        for p in b_params.values():
            p.zero_()
        prior_video, prior_audio = predict_velocity(model, video, audio)
        for n, p in b_params.items():
            p.copy_(kept[n])
    pres_video, pres_audio = predict_velocity(model, video, audio)
    preservation = (F.mse_loss(pres_video, prior_video) * weight
                    + F.mse_loss(pres_audio.float(), prior_audio.float()) * weight * audio_weight)
    (main + preservation).backward()

    assert log.preservation == pytest.approx(preservation.item() / weight, rel=1e-5)
    assert log.preservation > 1e-6  # the LoRA moved the class caption's prediction: something was compared
    for n, p in t.params.items():
        torch.testing.assert_close(got[n], p.grad, msg=n)
    assert any(got[n].abs().max() > 0 for n in b_params)


def test_weight_zero_trains_exactly_as_without_preservation_and_measures_it(dop, tmp_path):
    grads, logs = {}, {}
    for name, keep in (("off", None), ("zero", {"class_word": CLASS_WORD, "weight": 0.0})):
        trainer, t = _trainer(_config(dop, tmp_path, name, keep))
        _nonzero_lora(t)
        _to_batch_with_audio(t)
        logs[name] = trainer._accumulate(t, 0)
        grads[name] = {n: p.grad.clone() for n, p in t.params.items()}
    assert grads["off"].keys() == grads["zero"].keys()
    assert all(torch.equal(grads["off"][n], grads["zero"][n]) for n in grads["off"])
    assert (logs["off"].video, logs["off"].audio) == (logs["zero"].video, logs["zero"].audio)
    assert logs["off"].preservation is None and logs["zero"].preservation > 0


def _records(run: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


def test_a_cli_run_logs_the_preservation_loss_and_resumes_exactly(dop, tmp_path):
    """With lora.dropout on (the preservation's LoRA pass draws its masks too) and a constant schedule (--max-steps
    then changes no learning rate): 2 steps, then --resume to 4, end with the LoRA of 4 straight steps."""
    keep = {"class_word": CLASS_WORD, "weight": 2.0}
    paths = {}
    for name in ("straight", "resumed"):
        paths[name] = _config(dop, tmp_path, name, keep, steps=4, scheduler="constant")
        data = yaml.safe_load(paths[name].read_text())
        data["lora"] = {"dropout": 0.1}
        paths[name].write_text(yaml.safe_dump(data))
    res = run_cli("train", paths["straight"])
    assert res.code == 0, res.err
    said = res.err
    assert "output preservation" in said and "'zxq' replaced by 'a shape'" in said and "2.4x the time" in said, said
    assert "preservation 0.0000" in res.err and "| loss video" in res.err  # step 1: the LoRA starts at zero
    straight = _records(tmp_path / "straight")
    assert sorted(straight) == [1, 2, 3, 4] and straight[1]["loss_preservation"] == 0.0
    assert all(straight[s]["loss_preservation"] > 0 for s in (2, 3, 4)), straight
    assert "preservation loss" in (tmp_path / "straight" / "report.html").read_text()  # its own curve
    meta = _lora_metadata(tmp_path / "straight" / "lora.safetensors")
    assert meta["output_preservation_class_word"] == CLASS_WORD and meta["output_preservation_weight"] == "2.0"
    assert run_cli("train", paths["resumed"], "--max-steps", "2").code == 0
    res = run_cli("train", paths["resumed"], "--resume")
    assert res.code == 0 and "resumed from" in res.err, res.err
    resumed = _records(tmp_path / "resumed")
    assert [resumed[s] | {"s_per_step": 0} for s in (3, 4)] == [straight[s] | {"s_per_step": 0} for s in (3, 4)]
    a, b = lora_tensors(tmp_path / "straight"), lora_tensors(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _lora_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata()


def test_refusals_are_one_sentence_before_anything_is_made(dop, prepared, tmp_path):  # noqa: F811
    from ltx_lora.config import parse_config

    _, base = dop
    bad = {"no trigger word": ({"trigger_word": ""}, {"class_word": "woman"}, "data.trigger_word is empty"),
           "empty class word": ({}, {"class_word": "  "}, "class_word' is invalid"),
           "the trigger in the class word": ({}, {"class_word": "zxq woman"}, "contains the trigger word 'zxq'"),
           "CUDA graphs on": ({}, {"class_word": "woman"}, "cuda_graphs: on cannot capture"),
           "not a mapping": ({}, "woman", "train.output_preservation must be a mapping")}
    for what, (data, keep, says) in bad.items():
        cfg = {**base, "data": {**base["data"], **data},
               "train": {**base["train"], "output_preservation": keep,
                         **({"cuda_graphs": "on"} if what == "CUDA graphs on" else {})}}
        with pytest.raises(UserError, match=says):
            parse_config(cfg)
    # a class word holding the trigger only inside a word of its own is fine (trigger "man", class "woman")
    ok = {**base, "data": {**base["data"], "trigger_word": "man"},
          "train": {**base["train"], "output_preservation": {"class_word": "woman"}}}
    assert parse_config(ok).train.output_preservation.class_word == "woman"
    # through the CLI: exit 2, the sentence, no run folder
    path = _config(dop, tmp_path, "refused", {"class_word": "woman"})
    data = yaml.safe_load(path.read_text())
    data["data"]["trigger_word"] = ""
    path.write_text(yaml.safe_dump(data))
    assert_user_error(run_cli("train", path), "train.output_preservation", "data.trigger_word is empty")
    assert not (tmp_path / "refused").exists()
    # a cache made without the preservation captions (the session's, without the trigger word): preprocess again
    stale = _config(dop, tmp_path, "stale", {"class_word": CLASS_WORD})
    data = yaml.safe_load(stale.read_text())
    data["data"]["cache_dir"] = prepared[1]["data"]["cache_dir"]
    stale.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError, match=r"no preservation caption for class word 'a shape'.*ltx-lora preprocess"):
        _trainer(stale)


def test_preprocess_notes_captions_whose_trigger_is_inside_another_word(dop, tmp_path):
    """preprocess puts data.trigger_word in front of a caption unless the caption starts with it: with trigger "A",
    "An orange bar ..." keeps no word "A" to replace, so its preservation caption is the caption itself."""
    import io

    from ltx_lora.config import parse_config
    from ltx_lora.data.preprocess import preprocess

    folder, base = dop
    shutil.copytree(folder / "cache", tmp_path / "cache")
    cfg = {**base, "data": {**base["data"], "cache_dir": str(tmp_path / "cache"), "trigger_word": "A"}}
    out = io.StringIO()
    preprocess(parse_config(cfg), Console(file=out, width=300))
    said = " ".join(out.getvalue().split())
    assert "note: 1 of 5 captions hold the trigger word 'A' only inside another word (e.g. 'An orange bar" in said, said
