"""`ltx-lora lora resize`: a LoRA at a lower rank, each layer's change replaced by its closest one of that rank.

For each layer the change the file applies, `scale * up @ down` (out x in), is cut to its `rank` largest singular
values, the closest change of that rank in the Frobenius norm (Eckart-Young), as kohya's resize_lora does. The
singular values come from the two small factors, not the out x in product: with up = Qu Ru and down^T = Qd Rd (QR),
the change is Qu (Ru Rd^T) Qd^T and only the r x r core is decomposed (r the file's rank). The new factors share the
kept singular values' square roots and fold the strength in (ComfyUI layout without `.alpha`, as the trainer
exports). What share of each change is kept (its Frobenius norm) is reported, so the cost of a smaller file is known.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ltx_lora.errors import UserError
from ltx_lora.files import lora_file
from ltx_lora.lora.output import output_path


@dataclass
class ResizeResult:
    path: Path
    rank: int
    ranks_before: list[int]
    kept: dict[str, float] = field(default_factory=dict)  # stem -> share of the change's Frobenius norm kept
    overall: float = 1.0  # over all layers together
    bytes_before: int = 0
    bytes_after: int = 0


def truncated(down: torch.Tensor, up: torch.Tensor, scale: float, rank: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                                      float, float]:
    """(down', up', kept norm^2, whole norm^2) of the best rank-`rank` approximation of `scale * up @ down`."""
    qu, ru = torch.linalg.qr(up.double() * scale)
    qd, rd = torch.linalg.qr(down.double().T)
    u, s, vh = torch.linalg.svd(ru @ rd.T)
    k = min(rank, s.numel())
    root = s[:k].sqrt()
    new_up = (qu @ u[:, :k]) * root
    new_down = root[:, None] * (vh[:k] @ qd.T)
    return new_down, new_up, float((s[:k] ** 2).sum()), float((s ** 2).sum())


def resize(src: str | Path, rank: int, out: str | Path, overwrite: bool = False) -> ResizeResult:
    if rank < 1:
        raise UserError(f"--rank must be 1 or more, not {rank}.")
    lora = lora_file.read_lora(src)
    out = output_path(out, [lora.path], overwrite)
    lycoris = sorted(set(lora.kinds) - {lora_file.LORA})
    if lycoris:
        raise UserError(f"{lora.path.name} holds {' and '.join(lycoris)} modules; resize cuts plain LoRA pairs "
                        "(lora_A/lora_B or lora_down/lora_up) only.")
    ranks = sorted({m.rank for m in lora.modules.values()})
    if ranks[-1] <= rank:
        raise UserError(f"{lora.path.name} has rank {', '.join(map(str, ranks))}, not above {rank}: there is "
                        "nothing to cut; choose a lower --rank.")
    modules, result = {}, ResizeResult(out, rank, ranks, bytes_before=lora.path.stat().st_size)
    kept_total = whole_total = 0.0
    weights = lora_file.load_weights(lora)
    damaged = lora_file.first_damaged(weights)
    if damaged is not None:
        raise UserError(f"{lora.path.name} holds NaN or infinite values ({damaged}): the file is damaged; there is "
                        "no change to cut.")
    for stem, pair in weights.items():
        down, up, kept, whole = truncated(pair.down, pair.up, pair.scale, rank)
        modules[stem] = (down.to(pair.down.dtype), up.to(pair.up.dtype))
        result.kept[stem] = (kept / whole) ** 0.5 if whole > 0 else 1.0
        kept_total, whole_total = kept_total + kept, whole_total + whole
    result.overall = (kept_total / whole_total) ** 0.5 if whole_total > 0 else 1.0
    meta = dict(lora.metadata)
    meta.pop("alpha", None)  # the strength is folded into the new factors
    meta |= {"rank": str(rank), "alpha_folded_into_lora_B": "true",
             "ltx_lora_resized_from": f"{lora.path.name} (rank {', '.join(map(str, ranks))})"}
    lora_file.write_lora(out, modules, layout=lora_file.COMFYUI, metadata=meta)
    result.bytes_after = out.stat().st_size
    return result
