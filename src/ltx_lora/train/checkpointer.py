"""Training checkpoints (not the base model file, not gradient checkpointing): the exported LoRA plus a
training-state file, both safetensors, written atomically.

Layout: `RUN/checkpoints/step_000250/{RUN_step_000250.safetensors, state.safetensors}`: the LoRA file is named by
run folder and step, so two checkpoints (of one run or of two) never share a file name (`validate --lora a --lora b`
names its columns after the files). The final export keeps its stable name, `RUN/lora.safetensors` (trainer.py).
Checkpoints of older versions hold `lora.safetensors` and still count as complete. A checkpoint is written into a
`.tmp` sibling folder, flushed to disk, then renamed into place: a kill at any moment leaves either the complete
new checkpoint or none, and never touches the previous one. The state file holds the raw fp32 LoRA parameters,
the optimizer state, the RNG states, the data position, the step and (train.ema on) the EMA of the LoRA, next to
its export `<run>_step_000250_ema.safetensors`; everything non-tensor is JSON in the
safetensors header, so nothing is ever unpickled.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from ltx_lora.errors import UserError
from ltx_lora.files import lora_file
from ltx_lora.files.atomic import fsync_dir, fsync_file
from ltx_lora.files.safetensors_header import NotSafetensors, open_safetensors, read_header

STEP_PREFIX = "step_"
_STEP_FOLDER = re.compile(re.escape(STEP_PREFIX) + r"(\d+)")
LEGACY_LORA_NAME = "lora.safetensors"  # the checkpoint LoRA's name before it carried run and step
EMA_SUFFIX = "_ema"  # the EMA LoRA beside a checkpoint's LoRA: <run>_step_000250_ema.safetensors


def checkpoint_lora_name(run_dir: Path, step: int) -> str:
    """`<run folder>_step_000250.safetensors`, the LoRA file of checkpoint `step`."""
    return f"{Path(run_dir).resolve().name or 'lora'}_{STEP_PREFIX}{step:06d}.safetensors"


def checkpoint_ema_lora_name(run_dir: Path, step: int) -> str:
    """`<run folder>_step_000250_ema.safetensors`, the EMA LoRA of checkpoint `step` (train.ema on)."""
    return checkpoint_lora_name(run_dir, step).removesuffix(".safetensors") + f"{EMA_SUFFIX}.safetensors"


def checkpoint_lora(checkpoint: Path) -> Path | None:
    """The LoRA file of a checkpoint folder: `*_step_000250.safetensors` (whatever the run folder is called now: it
    may have been renamed since), or an older version's `lora.safetensors`; None if there is none."""
    named = sorted(p for p in checkpoint.glob(f"*_{checkpoint.name}.safetensors") if p.is_file())
    if named:
        return named[0]
    legacy = checkpoint / LEGACY_LORA_NAME
    return legacy if legacy.is_file() else None


@dataclass
class TrainingState:
    step: int  # optimizer steps completed
    lora: dict[str, torch.Tensor]
    optimizer: dict  # torch optimizer state_dict
    rng: dict[str, torch.Tensor]  # name -> generator state (uint8)
    data_position: dict  # JSON-able sampler position
    meta: dict  # JSON-able: config fingerprint, mode, rank ...
    ema: dict[str, torch.Tensor] = field(default_factory=dict)  # the EMA of the LoRA (fp32), when train.ema is on


def _save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    # Written in place: the whole .tmp folder is what is renamed atomically, so the files need no temp names.
    # safetensors refuses tensors that share memory (bitsandbytes gives every parameter the same quantisation
    # maps): each is stored as its own copy.
    out, seen = {}, set()
    for k, v in tensors.items():
        v = v.detach().cpu().contiguous()
        if v.numel() and v.untyped_storage().data_ptr() in seen:
            v = v.clone()
        seen.add(v.untyped_storage().data_ptr())
        out[k] = v
    save_file(out, str(path), metadata=metadata)
    fsync_file(path)


NESTED = "/"  # joins the keys of a nested state dict (bitsandbytes keeps its 8-bit state in one per parameter)


def _flatten_optimizer(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}

    def walk(prefix: str, state: dict) -> None:
        for k, v in state.items():
            if isinstance(v, dict):
                walk(f"{prefix}{k}{NESTED}", v)
            elif isinstance(v, torch.Tensor):
                tensors[f"optim.{prefix}{k}"] = v
            else:
                scalars[f"{prefix}{k}"] = v

    for idx, state in sd["state"].items():
        walk(f"{idx}.", state)
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], info: dict) -> dict:
    state: dict[int, dict] = {}

    def put(idx: str, name: str, v) -> None:
        *parents, leaf = name.split(NESTED)
        node = state.setdefault(int(idx), {})
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = v

    for key, v in tensors.items():
        _, idx, name = key.split(".", 2)
        put(idx, name, v)
    for key, v in info["scalars"].items():
        idx, name = key.split(".", 1)
        put(idx, name, v)
    return {"state": state, "param_groups": info["param_groups"]}


def save_training_checkpoint(run_dir: Path, state: TrainingState, lora_tensors: dict[str, torch.Tensor],
                             lora_meta: dict[str, str], keep_last: int | None,
                             ema_lora: tuple[dict[str, torch.Tensor], dict[str, str]] | None = None) -> Path:
    """Write checkpoint `state.step`; `ema_lora`: the EMA LoRA's tensors and metadata, written beside the LoRA."""
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{STEP_PREFIX}{state.step:06d}"
    tmp = root / f".{final.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    lora_file.write_lora_tensors(tmp / checkpoint_lora_name(run_dir, state.step), lora_tensors, lora_meta)
    if ema_lora is not None:
        lora_file.write_lora_tensors(tmp / checkpoint_ema_lora_name(run_dir, state.step), *ema_lora)
    opt_tensors, opt_info = _flatten_optimizer(state.optimizer)
    tensors = {**{f"lora.{k}": v for k, v in state.lora.items()}, **opt_tensors,
               **{f"rng.{k}": v for k, v in state.rng.items()}, **{f"ema.{k}": v for k, v in state.ema.items()}}
    header = {"step": str(state.step), "optimizer": json.dumps(opt_info),
              "data_position": json.dumps(state.data_position), "meta": json.dumps(state.meta),
              "format": "ltx-lora-training-state-1"}
    _save(tensors, tmp / "state.safetensors", header)
    fsync_dir(tmp)
    if final.exists():  # a re-run of the same step (after resume) replaces it
        shutil.rmtree(final)
    tmp.rename(final)
    fsync_dir(root)
    _prune(root, keep_last)
    return final


def checkpoint_step(folder: Path) -> int | None:
    """The step a checkpoint folder is named for (`step_000250` -> 250); None for any other name (a stray
    `step_abc/` or `step_final/` of the user's is not a checkpoint and is left alone)."""
    m = _STEP_FOLDER.fullmatch(folder.name)
    return int(m.group(1)) if m else None


def _complete_checkpoints(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and checkpoint_step(p) is not None
             and (p / "state.safetensors").is_file() and checkpoint_lora(p) is not None]
    return sorted(found, key=checkpoint_step)


def training_checkpoints(run_dir: Path) -> list[Path]:
    """The complete checkpoint folders of a run, oldest first (complete: both files are there; whether they read
    is for `load_training_state` to say)."""
    return _complete_checkpoints(run_dir / "checkpoints")


def _prune(root: Path, keep_last: int | None) -> None:
    """Remove all but the newest `keep_last` complete checkpoints (None keeps every one) and stale temp folders."""
    for old in _complete_checkpoints(root)[:-keep_last] if keep_last else []:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".*.tmp"):  # left by a killed writer
        shutil.rmtree(stale, ignore_errors=True)


def latest_training_checkpoint(run_dir: Path) -> Path | None:
    found = _complete_checkpoints(run_dir / "checkpoints")
    return found[-1] if found else None


class DamagedCheckpoint(UserError):
    """A training checkpoint whose state cannot be read or is not what ltx-lora writes. `reason`: what is wrong,
    without the advice (the trainer words its own note when it skips the checkpoint)."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"training state {path} is damaged ({reason}): delete that checkpoint folder to resume from "
                         "the one before it.")
        self.reason = reason


def load_training_state(checkpoint: Path) -> TrainingState:
    path = checkpoint / "state.safetensors"
    try:
        read_header(path)
        with open_safetensors(path, "training state", "delete that checkpoint folder") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is no dict
    except NotSafetensors as e:
        raise DamagedCheckpoint(path, str(e)) from None
    except UserError:  # the header is sound but a tensor is not (e.g. a dtype torch cannot hold)
        raise DamagedCheckpoint(path, "its tensors cannot be read") from None
    if header.get("format") != "ltx-lora-training-state-1":
        raise DamagedCheckpoint(path, "it is not an ltx-lora training state")
    lora = {k[5:]: v for k, v in tensors.items() if k.startswith("lora.")}
    rng = {k[4:]: v for k, v in tensors.items() if k.startswith("rng.")}
    ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
    try:  # every non-tensor part is JSON we wrote: anything else is a damaged (or edited) file
        opt = _unflatten_optimizer({k: v for k, v in tensors.items() if k.startswith("optim.")},
                                   json.loads(header["optimizer"]))
        state = TrainingState(step=int(header["step"]), lora=lora, optimizer=opt, rng=rng,
                              data_position=json.loads(header["data_position"]), meta=json.loads(header["meta"]),
                              ema=ema)
        sound = (state.step >= 0 and isinstance(state.meta, dict) and isinstance(state.data_position, dict)
                 and isinstance(state.meta.get("batch_size"), int) and isinstance(state.meta.get("world_size", 1), int)
                 and isinstance(opt["param_groups"], list) and bool(lora)
                 and all(rng.get(k) is not None and rng[k].dtype == torch.uint8 for k in ("sampler", "torch_cpu")))
    except (KeyError, ValueError, TypeError, AttributeError, RecursionError) as e:
        raise DamagedCheckpoint(path, f"{type(e).__name__}: {str(e)[:120]}") from None
    if not sound:
        raise DamagedCheckpoint(path, "its step, settings, data position, LoRA or random-generator states are not "
                                "what ltx-lora writes")
    named = checkpoint_step(checkpoint)
    if named is not None and named != state.step:  # a renamed folder: resuming would count steps it never ran
        raise DamagedCheckpoint(path, f"its folder is named for step {named} but it holds step {state.step}; "
                                f"rename it back to {STEP_PREFIX}{state.step:06d}")
    return state
