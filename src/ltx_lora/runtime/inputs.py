"""The model files of a config, checked once the same way for `doctor --config`, `preprocess` and `train`.

`doctor --config` once said OK for a truncated checkpoint and a broken Gemma folder that `preprocess` then crashed
on, and `preprocess` encoded a whole dataset with a Distilled checkpoint that `train` refuses. One set of checks,
reading headers only (milliseconds, no weights): the checkpoint is a local safetensors file, an LTX-2.3 Dev training
base, and holds every byte its header places; the Gemma folder is complete (every file and weight shard, each shard
whole), its config loads and its features are as wide as the checkpoint's text projection takes. A LoRA to start
from (lora.init_from) fits the base and the LoRA the run trains.
"""

from __future__ import annotations

from pathlib import Path

from ltx_lora.config import LoraConfig
from ltx_lora.errors import UserError
from ltx_lora.files.lora_file import LOKR, LoraFile, base_weight_key, ltx_core_path, read_lora, target_name
from ltx_lora.files.model_files import IC_LORA, LORA, LTX23_DISTILLED_LORA, check_training_base, identify
from ltx_lora.files.safetensors_header import NotSafetensors, read_header
from ltx_lora.ltx.text import check_gemma_fits, gemma_weight_files
from ltx_lora.paths import GEMMA_REPO, check_model_path
from ltx_lora.runtime.base_file import BaseFile


def _complete(path: Path, what: str) -> None:
    """`path` holds every byte its header places (read_header checks the length, among the rest)."""
    try:
        read_header(path)
    except NotSafetensors as e:
        raise UserError(f"{path} is not a readable safetensors file ({e}): download {what} again.") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}.") from None


def check_base(base: BaseFile) -> BaseFile:
    """A training base (LTX-2.3 Dev, bf16 or FP8) whose file is complete."""
    check_training_base(base.identity)
    _complete(base.path, "the checkpoint")
    return base


def read_base(value: str | Path) -> BaseFile:
    """model.checkpoint read (its header) and checked as `check_base` does."""
    try:
        base = BaseFile.read(value)
    except NotSafetensors as e:
        raise UserError(f"model.checkpoint {value} is not a readable safetensors file ({e}): download it again "
                        "or point it at ltx-2.3-22b-dev.safetensors.") from None
    return check_base(base)


def check_text_encoder(value: str | Path, checkpoint: str | Path | None) -> Path:
    """model.text_encoder: a complete Gemma 3 folder that fits `checkpoint`'s text projection (when given)."""
    folder = check_model_path(value, "text_encoder")
    for shard in gemma_weight_files(folder):
        _complete(shard, f"{shard.name} ({GEMMA_REPO})")
    if checkpoint is not None:
        check_gemma_fits(folder, Path(checkpoint))
    return folder


def check_lora_blocks(base: BaseFile, blocks: list[int] | None) -> None:
    """lora.blocks are blocks of the base (train, validate and doctor --config check it alike)."""
    n = base.blocks
    outside = [b for b in blocks or [] if b >= n]
    if outside:
        raise UserError(f"lora.blocks {outside} are not blocks of {base.path.name} (it has {n}, numbered 0-{n - 1}); "
                        "choose blocks in that range, or leave lora.blocks out to adapt every block.")


def check_lora_init(value: str | Path, base: BaseFile, config_lora: LoraConfig, trained: LoraConfig) -> LoraFile:
    """lora.init_from read from its header and held against the run: a LoRA (not the distilled one, not one of
    LTX-2.0/2.1) of the variant and rank trained, whose every layer is one the config adapts, with that layer's
    width in this checkpoint. `trained`: the LoRA as the memory plan trains it (its rank may be lowered). One
    sentence otherwise. LoKr's factor shapes (peft's split of each width) are held against the injected adapters
    when training starts."""
    path = check_model_path(value, "lora", "lora.init_from")
    ident = identify(path)
    if ident.kind == LTX23_DISTILLED_LORA:
        raise UserError(f"lora.init_from {path.name} is the distilled LoRA, an inference speed-up of Dev, not a LoRA "
                        "to train on: leave lora.init_from out, or point it at a LoRA you trained.")
    if ident.kind not in (LORA, IC_LORA):
        raise UserError(f"lora.init_from {path.name} is not a LoRA ({ident.summary.rstrip('.')}): point it at a LoRA "
                        ".safetensors file, or leave it out to start from zero.")
    if ident.family == "2.0":
        raise UserError(f"lora.init_from {path.name} is an LTX-2.0/2.1 LoRA, whose layers are not 2.3's: start from "
                        "zero (leave lora.init_from out) and retrain on your clips.")
    lora = read_lora(path)
    kinds = sorted(lora.kinds)
    variant = config_lora.variant.value
    if kinds != [variant]:
        raise UserError(f"lora.init_from {path.name} is a {' + '.join(kinds)} file, this config trains lora.variant "
                        f"{variant}: set lora.variant: {kinds[0]}, or start from another file.")
    ranks = sorted({m.rank for m in lora.modules.values() if m.rank is not None and m.kind != LOKR})
    if ranks and ranks != [config_lora.rank]:
        raise UserError(f"lora.init_from {path.name} has rank {', '.join(map(str, ranks))}, the config "
                        f"lora.rank {config_lora.rank}: set lora.rank: {ranks[0]} to continue it.")
    if trained.rank != config_lora.rank:
        raise UserError(f"the memory plan lowers lora.rank from {config_lora.rank} to {trained.rank} to fit, but "
                        f"lora.init_from {path.name} has rank {config_lora.rank}: train where more GPU memory is free, "
                        "or start from zero at the lower rank (leave lora.init_from out).")
    for m in lora.modules.values():
        module_path = ltx_core_path(m.stem)
        if module_path is None:
            raise UserError(f"lora.init_from {path.name} adapts {m.stem}, outside the transformer ltx-lora trains "
                            "(the text connectors): start from a LoRA of the transformer's layers.")
        if not config_lora.adapts(module_path):
            # with lora.blocks the layer's block is what may differ: name it
            blocks = "" if config_lora.blocks is None else f", lora.blocks {config_lora.blocks}"
            layer = target_name(m.stem) if config_lora.blocks is None else module_path
            raise UserError(f"lora.init_from {path.name} adapts {layer}, which this config does not "
                            f"(lora.target_modules {config_lora.target_modules}, lora.feed_forward "
                            f"{str(config_lora.feed_forward).lower()}{blocks}): adapt the same layers the file does.")
        info = base.header.tensors.get(base_weight_key(m.stem))
        if info is None or tuple(info.shape) != (m.out_features, m.in_features):
            found = "is not in" if info is None else f"is {list(info.shape)} in"
            raise UserError(f"lora.init_from {path.name}: its layer {target_name(m.stem)} ({m.out_features} x "
                            f"{m.in_features}) {found} {base.path.name}: start from a LoRA trained on this base.")
    return lora
