"""Read a .safetensors file's header (tensor names, dtypes, shapes, metadata) without loading any tensor.

The header is an 8-byte little-endian length followed by that many bytes of JSON; a 46 GB checkpoint's header
is a few hundred kilobytes, so identifying a file costs milliseconds and no memory.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

# A real LTX-2.3 header is ~1 MB; anything past this is not a header we should trust.
_MAX_HEADER_BYTES = 100 * 1024 * 1024

# Bytes per element for the safetensors dtype codes.
DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
               "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1, "F8_E8M0": 1, "F4": 1}


class NotSafetensors(ValueError):
    """The file does not start with a valid safetensors header."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class SafetensorsHeader:
    path: Path
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    def config(self) -> dict | None:
        """The `config` JSON that LTX unified checkpoints (and upscalers) carry in their metadata, if any."""
        raw = self.metadata.get("config")
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None

    def with_prefix(self, prefix: str) -> dict[str, TensorInfo]:
        return {k: v for k, v in self.tensors.items() if k.startswith(prefix)}


def read_header(path: str | Path) -> SafetensorsHeader:
    """Parse the header of `path`; raises NotSafetensors when the bytes are not a safetensors header."""
    path = Path(path)
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
    if not isinstance(doc, dict):
        raise NotSafetensors("header is not a JSON object")
    header = SafetensorsHeader(path=path)
    meta = doc.pop("__metadata__", None) or {}
    header.metadata = {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}
    for name, info in doc.items():
        if not isinstance(info, dict) or "dtype" not in info or "shape" not in info:
            raise NotSafetensors(f"tensor entry {name!r} has no dtype/shape")
        header.tensors[name] = TensorInfo(str(info["dtype"]), tuple(int(d) for d in info["shape"]))
    return header


def missing_bytes(path: str | Path) -> int:
    """How many bytes `path` lacks for the tensor data its header places (0 when complete): a truncated download or
    copy reads fine until the first tensor past the end. Raises NotSafetensors like `read_header`."""
    path = Path(path)
    size = path.stat().st_size
    read_header(path)  # the same checks first
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        doc = json.loads(f.read(n))
    ends = [info["data_offsets"][1] for name, info in doc.items()
            if name != "__metadata__" and isinstance(info, dict) and isinstance(info.get("data_offsets"), list)
            and len(info["data_offsets"]) == 2 and isinstance(info["data_offsets"][1], int)]
    return max(0, 8 + n + max(ends, default=0) - size)
