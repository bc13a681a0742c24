"""Atomic file writes: a reader sees the old file or the new one, never half of one, and once a call returns the
new file survives a crash (the file and its folder are fsynced).

Every write goes to a temp file in the target's folder (same file system, so the rename is atomic) with a name
no other writer uses (pid + random, created with O_EXCL), then `os.replace` puts it in place. On any failure the
temp file is removed and the old file is untouched.

- `atomic_write(path, data)`: bytes or text (UTF-8, newlines as given).
- `with atomic_path(path) as tmp:`: for writers that want a path (safetensors' `save_file`, mp4 muxers).
- `atomic_save_safetensors(tensors, path, metadata)`: torch tensors to a safetensors file.
- `fsync_file`, `fsync_dir`: for protocols of their own (train/checkpointer.py renames whole folders).
- `stale_temp_files(folder)`: the temp files a killed writer left behind (ours only), for a cleaner to remove.

Bottom layer: stdlib only at import time (safetensors and torch are imported inside the function that needs them).
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def fsync_file(path: str | Path) -> None:
    """Flush a written file's data to disk."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries to disk, so a rename or a new file in it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_temp(path: Path, suffix: str) -> tuple[int, Path]:
    """A new, empty temp file next to `path` (created with O_EXCL: the name is ours alone). Mode 0o666 minus the
    umask, as `open()` gives, so the final file has the usual permissions (tempfile.mkstemp would make it 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{suffix}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


# `_create_temp`'s names: .<final name>.<pid>.<8 hex>.tmp<suffix>
_TEMP_NAME = re.compile(r"^\..+\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp[^/]*$")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def stale_temp_files(folder: str | Path, older_than_s: float = 24 * 3600) -> list[Path]:
    """Temp files of ours (the names `_create_temp` gives) in `folder` left by a writer that was killed: its PID
    no longer runs, or the file is older than `older_than_s` (a PID since reused). Other files are never listed.
    Callers remove them only where no other process can be writing (under the folder's lock, files/lock.py)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    now, out = time.time(), []
    for p in folder.iterdir():
        m = _TEMP_NAME.match(p.name)
        if m and p.is_file() and (not _running(int(m["pid"])) or now - p.stat().st_mtime > older_than_s):
            out.append(p)
    return sorted(out)


def _commit(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write `data` (str is encoded as UTF-8, newlines untouched) to `path` atomically; create the folder if needed."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    fd, tmp = _create_temp(path, "")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        _commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path next to `path` for a writer that opens files itself; when the block ends without an
    exception the temp file is fsynced and renamed to `path`, otherwise it is removed. The temp file exists (empty)
    when the block starts. `suffix` ends the temp name, for writers that pick a format from the extension."""
    path = Path(path)
    fd, tmp = _create_temp(path, suffix)
    os.close(fd)
    try:
        yield tmp
        fsync_file(tmp)
        _commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_save_safetensors(tensors: Mapping[str, torch.Tensor], path: str | Path,
                            metadata: Mapping[str, str] | None = None) -> Path:
    """Save torch tensors (moved to the CPU, made contiguous) as a safetensors file, atomically."""
    from safetensors.torch import save_file  # lazily: this module imports only the stdlib

    path = Path(path)
    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(cpu, str(tmp), metadata=dict(metadata) if metadata is not None else None)
    return path
