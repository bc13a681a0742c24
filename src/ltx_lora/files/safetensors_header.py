"""Read a .safetensors file's header (tensor names, dtypes, shapes, offsets, metadata) without loading any tensor,
and open its tensors only after that header has been checked.

The header is an 8-byte little-endian length followed by that many bytes of JSON; a 46 GB checkpoint's header
is a few hundred kilobytes, so identifying a file costs milliseconds and no memory.

`read_header` checks everything the safetensors library would refuse later (a known dtype, a shape of
non-negative integers, offsets that tile the data exactly, a file as long as its header says, string metadata),
so a damaged or hostile file is one `NotSafetensors` with the reason, never a crash deep in a reader. Every
reader of ours opens tensors through `open_safetensors`, which checks the header first and turns what is still
wrong (a dtype torch cannot hold) into one `UserError` naming the file and what to do.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ltx_lora.errors import UserError
from ltx_lora.paths import require_regular_file

# A real LTX-2.3 header is ~1 MB; the safetensors library refuses headers past 100 MB too.
_MAX_HEADER_BYTES = 100 * 1024 * 1024

# Bits per element of every dtype code the format defines (F4 and F6 pack several elements into bytes).
DTYPE_BITS = {"BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8,
              "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
              "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64}
# Bytes per element for the dtypes whose elements are whole bytes (sizes of model files).
DTYPE_BYTES = {k: v // 8 for k, v in DTYPE_BITS.items() if v % 8 == 0} | {"F4": 1}


class NotSafetensors(ValueError):
    """The file does not start with a valid safetensors header (the message says what is wrong)."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    offsets: tuple[int, int] = (0, 0)  # [begin, end) in the data section, which starts at the header's `data_start`

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class SafetensorsHeader:
    path: Path
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    data_start: int = 0  # byte offset of the data section: 8 + the header's length

    def config(self) -> dict | None:
        """The `config` JSON that LTX unified checkpoints (and upscalers) carry in their metadata, if any."""
        raw = self.metadata.get("config")
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except (json.JSONDecodeError, RecursionError):
            return None
        return value if isinstance(value, dict) else None

    def with_prefix(self, prefix: str) -> dict[str, TensorInfo]:
        return {k: v for k, v in self.tensors.items() if k.startswith(prefix)}


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _tensor(name: str, info: object) -> TensorInfo:
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
        raise NotSafetensors(f"tensor entry {name[:80]!r} has no dtype, shape and data_offsets")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise NotSafetensors(f"tensor {name[:80]!r} has the unknown dtype {repr(dtype)[:20]}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise NotSafetensors(f"tensor {name[:80]!r} has the shape {repr(shape)[:40]}, not a list of sizes >= 0")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) and o >= 0 for o in offsets)
            and offsets[0] <= offsets[1]):
        raise NotSafetensors(f"tensor {name[:80]!r} has the data_offsets {repr(offsets)[:40]}, not [begin, end]")
    bits = math.prod(shape) * DTYPE_BITS[dtype]
    if bits % 8 or offsets[1] - offsets[0] != bits // 8:
        raise NotSafetensors(f"tensor {name[:80]!r} ({dtype} {shape}) has {offsets[1] - offsets[0]} bytes of data "
                             f"where its shape needs {bits / 8:g}")
    return TensorInfo(dtype, tuple(shape), (offsets[0], offsets[1]))


def read_header(path: str | Path) -> SafetensorsHeader:
    """Parse and check the header of `path`; raises NotSafetensors when the bytes are not a valid safetensors file
    (see the module docstring for what is checked), UserError when `path` is not a regular file."""
    path = require_regular_file(path, "safetensors file")
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise NotSafetensors("file is shorter than a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n < 2 or n > min(_MAX_HEADER_BYTES, size - 8):
            raise NotSafetensors("header length is out of range")
        raw = f.read(n)
    if not raw.lstrip().startswith(b"{"):
        raise NotSafetensors("header is not JSON")
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NotSafetensors(f"header is not valid JSON ({e})") from None
    except RecursionError:
        raise NotSafetensors("header nests lists too deeply to be a safetensors header") from None
    if not isinstance(doc, dict):
        raise NotSafetensors("header is not a JSON object")
    try:  # Python's JSON reader takes escaped lone surrogates ("\ud800"), which are no text (the library refuses)
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise NotSafetensors("header holds a name that is not valid Unicode") from None
    header = SafetensorsHeader(path=path, data_start=8 + n)
    meta = doc.pop("__metadata__", None)
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise NotSafetensors("__metadata__ is not a mapping of strings")
    header.metadata = dict(meta or {})
    header.tensors = {name: _tensor(name, info) for name, info in doc.items()}
    # The data section holds exactly the tensors, back to back, in some order (what the library checks too).
    end = 0
    for info in sorted(header.tensors.values(), key=lambda t: t.offsets):
        if info.offsets[0] != end:
            raise NotSafetensors(f"tensor data overlaps or leaves a gap at byte {end} of the data")
        end = info.offsets[1]
    if header.data_start + end > size:  # a truncated download or copy reads fine until the first tensor past the end
        raise NotSafetensors(f"the file is {header.data_start + end - size:,} bytes shorter than its header says "
                             "(an interrupted download or copy?)")
    if header.data_start + end < size:
        raise NotSafetensors(f"the file holds {size - header.data_start - end:,} bytes past the tensor data its "
                             "header places (an extended or concatenated file)")
    return header


@contextmanager
def open_safetensors(path: str | Path, what: str, fix: str, device: str = "cpu") -> Iterator:
    """safetensors' `safe_open` (torch tensors) on a file whose header `read_header` has checked. A damaged file, or
    one that fails while its tensors are read, is one UserError: "`what` PATH is damaged (reason): `fix`."."""
    from safetensors import SafetensorError, safe_open  # lazily: safe_open loads torch

    path = Path(path)
    try:
        read_header(path)
    except NotSafetensors as e:
        raise UserError(f"{what} {path} is damaged ({e}): {fix}.") from None
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            yield f
    except SafetensorError as e:  # raised by safe_open and get_tensor (e.g. a dtype torch cannot hold)
        raise UserError(f"{what} {path} cannot be read ({str(e)[:200]}): {fix}.") from None
