"""Resolution buckets as a config writes them: WIDTHxHEIGHTxFRAMES, their rules, tokens and batch sizes.

The LTX-2 video VAE compresses 32x in space and 8x in time (keeping the first frame on its own), so width and
height must be multiples of 32 and frames of the form 8k+1 (1, 9, 17, ... 49). Pure functions of the spec: the
memory plan, preprocessing and training read the same buckets from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ltx_lora.errors import UserError

SPATIAL_FACTOR = 32
TEMPORAL_FACTOR = 8
_BUCKET_RE = re.compile(r"^\s*(\d+)\s*[x×X]\s*(\d+)\s*[x×X]\s*(\d+)\s*$")
_EXAMPLE = '"960x544x49;512x512x1"'


def latent_tokens(width: int, height: int, frames: int) -> int:
    """Video tokens the transformer sees for this shape: latent frames x latent rows x latent columns."""
    return ((frames - 1) // TEMPORAL_FACTOR + 1) * (height // SPATIAL_FACTOR) * (width // SPATIAL_FACTOR)


@dataclass(frozen=True, order=True)
class Bucket:
    width: int
    height: int
    frames: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}x{self.frames}"

    @property
    def tokens(self) -> int:
        return latent_tokens(self.width, self.height, self.frames)

    @property
    def aspect(self) -> float:
        return self.width / self.height


def is_valid_frame_count(frames: int) -> bool:
    return frames >= 1 and (frames - 1) % TEMPORAL_FACTOR == 0


def largest_frame_count(available: int) -> int:
    """The largest 8k+1 frame count that `available` frames can fill (0 when there are none)."""
    if available < 1:
        return 0
    return (available - 1) // TEMPORAL_FACTOR * TEMPORAL_FACTOR + 1


def nearest_valid(value: int, step: int, offset: int) -> list[int]:
    """Valid values (offset + k*step, at least offset, or step when offset is 0) nearest to `value`: the nearest
    first, then the one on the other side when it exists."""
    smallest = offset if offset > 0 else step
    lower = offset + (value - offset) // step * step if value >= smallest else None
    upper = (lower + step) if lower is not None else smallest
    if lower is None:
        return [upper]
    return [upper, lower] if upper - value < value - lower else [lower, upper]


def _suggest(values: list[int]) -> str:
    return str(values[0]) if len(values) == 1 else f"{values[0]} or {values[1]}"


def parse_buckets(spec: str) -> list[Bucket]:
    """Parse "WxHxF[;WxHxF...]" into buckets (duplicates dropped, order kept).

    A bad entry raises UserError with one sentence that names the nearest valid values.
    """
    parts = [p.strip() for p in str(spec).split(";") if p.strip()]
    if not parts:
        raise UserError(f"No resolution buckets given; pass WIDTHxHEIGHTxFRAMES entries separated by \";\", "
                        f"e.g. {_EXAMPLE}.")
    buckets: list[Bucket] = []
    for part in parts:
        m = _BUCKET_RE.match(part)
        if not m:
            hint = ' (separate buckets with ";", not ",")' if "," in part else ""
            raise UserError(f'Bucket "{part}" is not WIDTHxHEIGHTxFRAMES{hint}; write it like {_EXAMPLE}.')
        w, h, f = (int(g) for g in m.groups())
        faults = []
        for name, v in (("width", w), ("height", h)):
            if v < SPATIAL_FACTOR or v % SPATIAL_FACTOR:
                faults.append(f"{name} {v} is not a multiple of {SPATIAL_FACTOR} "
                              f"(nearest valid: {_suggest(nearest_valid(v, SPATIAL_FACTOR, 0))})")
        if not is_valid_frame_count(f):
            faults.append(f"{f} frames is not 8k+1 (nearest valid: {_suggest(nearest_valid(f, TEMPORAL_FACTOR, 1))})")
        if faults:
            raise UserError(f'Bucket "{part}" is not valid: {" and ".join(faults)}.')
        bucket = Bucket(w, h, f)
        if bucket not in buckets:
            buckets.append(bucket)
    return buckets


def batch_size_for(bucket: Bucket, *, batch_size: int = 1, token_budget: int | None = None) -> int:
    """Clips per batch in this bucket: as many as fit the token budget (at least one), else `batch_size`."""
    if token_budget is None:
        return batch_size
    return max(1, token_budget // bucket.tokens)
