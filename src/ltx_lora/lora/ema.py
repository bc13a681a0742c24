"""`ltx-lora lora ema`: one LoRA from several checkpoints of one run, averaged as an exponential moving average.

musubi-tuner's post-hoc EMA (`lora_post_hoc_ema.py`), re-expressed: the files are ordered oldest first, the first
is the start, and each later one is blended in with decay beta (`average * beta + file * (1 - beta)`), tensor by
tensor (each factor on its own, as there); with `beta2` the decay moves linearly from beta at the second file to
beta2 at the last. It gives a run trained without `train.ema` the smoother LoRA an EMA gives, from the checkpoints'
LoRA files it kept.

Where ltx-lora differs: the order is the training step each file records (every ltx-lora export does), and the
files' modification times (musubi-tuner's order) only where a file has none: a copy does not reorder them. Each
module's strength is folded into its factors first (ComfyUI layout without `.alpha`, as the trainer exports), so
files that store another alpha still average to what each applies; musubi-tuner refuses differing alphas instead.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ltx_lora.errors import UserError
from ltx_lora.files import lora_file
from ltx_lora.lora.convert import converted_modules
from ltx_lora.lora.output import output_path


@dataclass
class EmaResult:
    path: Path
    order: list[tuple[str, str]]  # (file name, what ordered it: "step N" or "modified ...") oldest first
    betas: list[float]  # the decay each file after the first was blended in with
    layers: int


def decays(files: int, beta: float, beta2: float | None) -> list[float]:
    """The decay of each file after the first: beta, moving linearly to beta2 at the last (musubi-tuner's rule)."""
    n = files - 1
    end = beta if beta2 is None else beta2
    return [beta + (end - beta) * (i / (n - 1)) if n > 1 else beta for i in range(n)]


def _factors(module) -> dict[str, torch.Tensor]:
    if isinstance(module, lora_file.LycorisWeights):
        return dict(module.tensors)
    down, up = module
    return {"down": down, "up": up}


def _rebuild(like, factors: dict[str, torch.Tensor]):
    if isinstance(like, lora_file.LycorisWeights):
        return lora_file.LycorisWeights(like.kind, factors)
    return factors["down"], factors["up"]


def post_hoc_ema(paths: list[str | Path], out: str | Path, beta: float = 0.95, beta2: float | None = None,
                 overwrite: bool = False) -> EmaResult:
    if len(paths) < 2:
        raise UserError("lora ema averages several checkpoints of one run; pass two or more LoRA files.")
    for name, value in (("--beta", beta), ("--beta2", beta2)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise UserError(f"{name} is {value}; a decay is between 0 and 1 (0.95 keeps 5% of each newer file).")
    loras = [lora_file.read_lora(p) for p in paths]
    if len({f.path.resolve() for f in loras}) < len(loras):
        raise UserError("a file is passed twice; pass each checkpoint's LoRA once.")
    out = output_path(out, [f.path for f in loras], overwrite)

    def when(f: lora_file.LoraFile) -> tuple[int, float, str]:
        step = f.metadata.get("step", "")
        if step.isdigit():
            return 0, int(step), f"step {int(step)}"
        mtime = f.path.stat().st_mtime
        return 1, mtime, "modified " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime))

    order = sorted(((when(f), f) for f in loras), key=lambda wf: wf[0][:2])
    if len({w[0] for w, _ in order}) > 1:
        raise UserError("some files record their training step and some do not, so their order is unknown; pass "
                        "the LoRA files of one run's checkpoints.")
    same = next(((a, b) for a, b in zip(order, order[1:]) if a[0][0] == 0 and a[0][1] == b[0][1]), None)
    if same is not None:  # a copy, or another run's file: the average would count one step twice
        raise UserError(f"{same[0][1].path.name} and {same[1][1].path.name} both record {same[0][0][2]}; pass one "
                        "file per checkpoint of one run.")
    keyed = [f for _, f in order]
    average: dict[str, dict[str, torch.Tensor]] = {}
    first: dict[str, object] = {}
    betas = decays(len(keyed), beta, beta2)
    for i, lora in enumerate(keyed):
        modules, _, _, _ = converted_modules(lora, lora_file.COMFYUI, fold_alpha=True)
        damaged = lora_file.first_damaged(modules)
        if damaged is not None:
            raise UserError(f"{lora.path.name} holds NaN or infinite values ({damaged}): the file is damaged; leave "
                            "it out.")
        if i == 0:
            first = modules
            average = {stem: {k: t.float() for k, t in _factors(m).items()} for stem, m in modules.items()}
            continue
        if modules.keys() != average.keys():
            odd = sorted(modules.keys() ^ average.keys())[0]
            raise UserError(f"{lora.path.name} and {keyed[0].path.name} adapt other layers ({odd}); pass the LoRA "
                            "files of one run's checkpoints.")
        b = betas[i - 1]
        for stem, m in modules.items():
            for k, t in _factors(m).items():
                if k not in average[stem] or t.shape != average[stem][k].shape:
                    raise UserError(f"{lora.path.name} and {keyed[0].path.name} differ in {stem} (another rank or "
                                    "variant); pass the LoRA files of one run's checkpoints.")
                average[stem][k] = average[stem][k] * b + t.float() * (1.0 - b)
    newest = keyed[-1]
    modules = {stem: _rebuild(first[stem], {k: v.to(t.dtype) for (k, v), t in
                                             zip(f.items(), _factors(first[stem]).values(), strict=True)})
               for stem, f in average.items()}
    meta = dict(newest.metadata)
    meta.pop("alpha", None)  # every module's strength is folded in
    meta |= {"alpha_folded_into_lora_B": "true",
             "ltx_lora_post_hoc_ema": json.dumps({"files": [f.path.name for f in keyed], "beta": beta,
                                                  "beta2": beta2 if beta2 is not None else beta})}
    lora_file.write_lora(out, modules, layout=lora_file.COMFYUI, metadata=meta)
    return EmaResult(out, [(f.path.name, w[2]) for w, f in order], betas, len(modules))
