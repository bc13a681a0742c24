"""The two kinds of failure a command can end with.

`UserError` is bad input or configuration: the message is one sentence that says what is wrong and what to do,
and the CLI exits with status 2 without a traceback. Anything else is our failure (exit 1).

Some faults of the user's machine arrive as OS errors from deep inside a library (a full disk inside safetensors'
writer, an output path that is a folder or lies under a file): `environment_sentence` turns those into the same
kind of sentence, so the CLI's one error boundary can say them (exit 2) instead of a crash.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


class UserError(Exception):
    """Bad input: one clear sentence for the user, exit status 2."""

    exit_code = 2


# How a full disk is spelled where no errno survives: safetensors' Rust writer ("IoError(Os { code: 28, kind:
# StorageFull, message: \"No space left on device\" })"), torch's writer, quota messages.
_DISK_FULL_WORDS = ("no space left on device", "storagefull", "disk quota exceeded", "quotaexceeded")
DISK_FULL_ADVICE = ("free disk space, then run the same command again (`ltx-lora train CONFIG --resume` continues "
                    "from the last checkpoint, which is intact; a re-run of `ltx-lora preprocess` keeps what it "
                    "encoded)")


def _chain(e: BaseException) -> list[BaseException]:
    """`e` and the exceptions it was raised from or during, outermost first (no cycles)."""
    seen: list[BaseException] = []
    while e is not None and e not in seen:
        seen.append(e)
        e = e.__cause__ or e.__context__
    return seen


def is_disk_full(e: BaseException) -> bool:
    """Whether `e` (or what it wraps) is a full disk or an exceeded quota, by errno or by message."""
    for x in _chain(e):
        if isinstance(x, OSError) and x.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(w in str(x).lower() for w in _DISK_FULL_WORDS):
            return True
    return False


def _first_non_folder(path: Path) -> Path | None:
    """The nearest existing ancestor of `path` (or `path` itself) that is not a folder: why a folder cannot be made."""
    for p in (path, *path.parents):
        if os.path.lexists(p):
            return None if p.is_dir() else p
    return None


def environment_sentence(e: BaseException) -> str | None:
    """One sentence for an OS-level fault the user can fix (full disk, a path that is a folder or under a file, no
    permission, a read-only disk, a name too long), or None when `e` is none of those (then it is our failure)."""
    if is_disk_full(e):
        where = next((x.filename for x in _chain(e) if isinstance(x, OSError) and x.filename), None)
        return f"the disk is full{f' (writing {where})' if where else ''}: {DISK_FULL_ADVICE}."
    if not isinstance(e, OSError) or e.filename is None:
        return None
    # A rename names both ends: the target (filename2) is the user's path, the first a temp name of ours.
    name = os.fsdecode(e.filename2 if e.filename2 is not None else e.filename)
    path = Path(name)
    if e.errno == errno.EISDIR:
        return f"{path} is a folder, but a file is to be written there: give a file path, or move that folder away."
    if e.errno in (errno.ENOTDIR, errno.EEXIST):
        blocker = _first_non_folder(path)
        if blocker is not None and blocker != path:
            return (f"{path} cannot be created because {blocker} is a file, not a folder: choose another path, or "
                    f"move that file away.")
        if blocker == path:
            return f"{path} is a file, but a folder is needed there: choose another path, or move that file away."
        return None
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied on {path}: choose a path you may write (or read), or fix its permissions."
    if e.errno == errno.EROFS:
        return f"{path} is on a read-only file system: choose a path on a writable disk."
    if e.errno == errno.ENAMETOOLONG:
        return f"the path {path.name[:60]}... is longer than the file system allows: choose a shorter name."
    if e.errno == errno.ELOOP:
        return f"{path} is a loop of symbolic links: point it at a real file or folder."
    return None
