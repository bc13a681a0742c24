"""`ltx-lora lora verify`: apply the LoRA to the base transformer and measure how much it changes the output.

The base is built once with ltx-core; then, for each module group and for all groups together, the LoRA is
attached as `validate --lora` attaches it (forward hooks adding strength * alpha/rank * B(A(x)), LoKr / LoHa their
change; `lora.attach`), one fixed random video + audio sample is run through the transformer, and the hooks come
off. No weight is rewritten or copied and no layer's whole weight change is kept: for the 22B model those would be
tens of GB beside the base on the GPU (1,152 attention layers; their changes alone ~38 GB in float32). A LoRA whose
keys do not reach the transformer changes nothing: that is the zero-effect failure, reported as such.

Our reader accepts every layout, but the tools people load the file with do not: `lora check`'s per-module findings
say which modules ComfyUI, ltx-core and diffusers would apply, and the report measures the effect for each of
them (the modules that consumer applies, at the strength it applies: ltx-core and diffusers ignore `.alpha`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ltx_lora.errors import UserError
from ltx_lora.files import lora_file
from ltx_lora.lora.attach import attach_lora
from ltx_lora.lora.check import APPLIED, IGNORED, require_base, check
from ltx_lora.ltx import loader, probe
from ltx_lora.runtime.device import parse_device

# Relative output change below this is numerical noise, not an effect.
NO_EFFECT = 1e-6


@dataclass
class GroupEffect:
    group: str
    modules: int
    video_change: float  # ||out - out_base|| / ||out_base||
    audio_change: float


# (report label, ModuleCheck attribute, applies the file's alpha/rank)
CONSUMERS = (("ComfyUI", "comfyui", True), ("ltx-core", "ltx_core", False), ("diffusers", "diffusers", False))
OURS = "ltx-lora"


@dataclass
class ConsumerEffect:
    consumer: str
    modules: int  # modules in the file
    applied: int  # of them, how many this consumer applies (text-side ones included)
    ignored: int
    mismatched: int
    effect: GroupEffect | None  # the transformer output change with what this consumer applies; None: applies none

    @property
    def has_effect(self) -> bool:
        return self.effect is not None and max(self.effect.video_change, self.effect.audio_change) > NO_EFFECT


@dataclass
class VerifyReport:
    lora: str
    base: str
    device: str
    strength: float
    applied: int
    not_in_transformer: list[str] = field(default_factory=list)  # text side: not part of the transformer
    unmatched: list[str] = field(default_factory=list)  # no layer of that name / shape
    groups: list[GroupEffect] = field(default_factory=list)
    total: GroupEffect | None = None
    consumers: list[ConsumerEffect] = field(default_factory=list)  # ComfyUI, ltx-core, diffusers, then ltx-lora

    @property
    def has_effect(self) -> bool:
        return self.total is not None and max(self.total.video_change, self.total.audio_change) > NO_EFFECT

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["has_effect"] = self.has_effect
        for c, e in zip(d["consumers"], self.consumers):
            c["has_effect"] = e.has_effect
        return d


def _pick_device(device: str, base_bytes: int) -> torch.device:
    dev = parse_device(device)  # auto: the GPU when there is one (full-size bases need it; tiny ones run anywhere)
    if device != "auto" and dev.type == "cpu" and base_bytes > 8e9:
        raise UserError(f"the base has {base_bytes / 1e9:.0f} GB of weights: verifying it on the CPU would take hours "
                        "and that much RAM; run on a GPU (--device cuda).")
    return dev


def _rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x - ref).norm() / ref.norm().clamp(min=1e-12))


@torch.no_grad()
def verify(lora_path: str | Path, base_path: str | Path, strength: float = 1.0, device: str = "auto",
           on_progress=None) -> VerifyReport:
    lora = lora_file.read_lora(lora_path)
    _, base = require_base(Path(base_path).expanduser())
    per_module = check(lora_path, base_path).modules  # header-only: what each consumer would apply
    base_bytes = sum(i.numel for i in base.tensors.values()) * 2
    dev = _pick_device(device, base_bytes)
    dtype = torch.float32 if dev.type == "cpu" else torch.bfloat16
    transformer = loader.load_transformer(base.path, dev, dtype)
    cfg = loader.read_checkpoint_config(base.path)["transformer"]
    report = VerifyReport(str(lora.path), str(base.path), str(dev), strength, 0)

    pairs = lora_file.load_weights(lora)
    modules = dict(transformer.named_modules())
    by_group: dict[str, dict[str, lora_file.LoraPair | lora_file.LycorisWeights]] = {}  # group -> {layer path: pair}
    measured: dict[str, str] = {}  # stem -> the layer path it adapts
    for m in lora.modules.values():
        path = lora_file.ltx_core_path(m.stem)
        if path is None:
            report.not_in_transformer.append(m.down_key)
            continue
        layer = modules.get(path)
        weight = getattr(layer, "weight", None)
        if weight is None or tuple(weight.shape) != (m.out_features, m.in_features):
            report.unmatched.append(m.down_key)
            continue
        by_group.setdefault(lora_file.module_group(m.stem), {})[path] = pairs[m.stem]
        measured[m.stem] = path
    report.applied = sum(len(v) for v in by_group.values())

    inputs = probe.probe_inputs(cfg, dev, dtype)
    v0, a0 = probe.forward(transformer, inputs)

    def effect(name: str, items: dict[str, lora_file.LoraPair | lora_file.LycorisWeights]) -> GroupEffect:
        if not items:  # nothing reaches the transformer: its output as it was
            return GroupEffect(name, 0, 0.0, 0.0)
        with attach_lora(transformer, items, strength, str(lora.path)):
            v, a = probe.forward(transformer, inputs)
        return GroupEffect(name, len(items), _rel(v, v0), _rel(a, a0))

    steps = [g for g in lora_file.GROUPS if g in by_group]
    for i, g in enumerate(steps):
        report.groups.append(effect(g, by_group[g]))
        if on_progress:
            on_progress(i + 1, len(steps) + 1)
    report.total = effect("all", {path: pair for g in steps for path, pair in by_group[g].items()})
    if on_progress:
        on_progress(len(steps) + 1, len(steps) + 1)
    total = len(per_module)
    for label, attr, honours_alpha in CONSUMERS:
        statuses = [getattr(mc, attr) for mc in per_module]
        stems = [mc.stem for mc in per_module if getattr(mc, attr) == APPLIED and mc.stem in measured]
        # ltx-core and diffusers ignore `.alpha`: the module at scale 1
        items = {measured[s]: pairs[s] if honours_alpha else replace(pairs[s], scale=1.0) for s in stems}
        same = honours_alpha or all(pairs[s].scale == 1.0 for s in stems)
        if not items:
            eff = None
        elif same and len(items) == report.applied:
            eff = GroupEffect(label, len(items), report.total.video_change, report.total.audio_change)
        else:
            eff = effect(label, items)
        report.consumers.append(ConsumerEffect(label, total, statuses.count(APPLIED), statuses.count(IGNORED),
                                               total - statuses.count(APPLIED) - statuses.count(IGNORED), eff))
    report.consumers.append(ConsumerEffect(OURS, total, report.applied, total - report.applied, 0, report.total))
    return report


def _consumer_line(c: ConsumerEffect) -> str:
    if c.applied == 0:
        what = f"ignores all {c.modules} modules" if c.ignored == c.modules else \
            f"applies none of the {c.modules} modules ({c.mismatched} of the wrong shape)"
        return f"{c.consumer}: {what} (no effect)"
    what = f"applies all {c.modules} modules" if c.applied == c.modules else \
        f"applies {c.applied} of {c.modules} modules"
    if c.effect is None:
        return f"{c.consumer}: {what}, none of them in the transformer (not measured here)"
    if not c.has_effect:
        return f"{c.consumer}: {what}: no effect on the transformer's output"
    return (f"{c.consumer}: {what}: changes the output by {c.effect.video_change:.2%} (video), "
            f"{c.effect.audio_change:.2%} (audio)")


def report_lines(r: VerifyReport) -> list[str]:
    lines = [f"{Path(r.lora).name} on {Path(r.base).name}, strength {r.strength:g}, on {r.device}: "
             f"{r.applied} modules applied to the transformer", "",
             f"  {'group':<22} {'modules':>7} {'video change':>13} {'audio change':>13}"]
    for g in r.groups + ([r.total] if r.total else []):
        lines.append(f"  {g.group:<22} {g.modules:>7} {g.video_change:>12.2%} {g.audio_change:>13.2%}")
    if r.not_in_transformer:
        lines.append(f"\n{len(r.not_in_transformer)} modules adapt the text connectors / Gemma projection, which are "
                     "not part of the transformer: not measured here.")
    if r.unmatched:
        lines.append(f"{len(r.unmatched)} modules match no transformer layer of that name and shape (e.g. "
                     f"{r.unmatched[0]}): they have no effect (see `ltx-lora lora check`).")
    lines.append("")
    if r.consumers:
        lines.append("Per consumer (which modules each tool applies: see `ltx-lora lora check`)")
        lines += [f"  {_consumer_line(c)}" for c in r.consumers]
        lines.append("")
    lines.append("The LoRA changes the transformer's output (ltx-lora reads every layout; see above for the other "
                 "tools)." if r.has_effect else
                 "NO EFFECT: the LoRA does not change the transformer's output on this base.")
    return lines
