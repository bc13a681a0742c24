"""One writer per folder: a training run's output_dir, a preprocessing cache.

Two `train` processes on one output_dir once left a checkpoint pairing one's LoRA with the other's training state.
The lock is the file `FOLDER/.ltx-lora.lock`, held with `flock` for as long as the process runs, and holding JSON
that names the holder (command, PID, host, start time) for the sentence a second process prints. The kernel drops a
flock when its process ends however it ends (SIGKILL included), so a lock left by a killed run is stale by
construction and taken over with a note; no PID guessing. Where the file system has no flock (some network or
FUSE mounts) the PID is checked instead: a holder on this host whose PID is gone (or now names a process started at
another time) is stale; one on another host cannot be checked and is refused, naming the file to delete.

The file is not deleted (deleting a flocked file lets two processes lock two different files): a released lock
is an empty file; only a folder the lock itself made, left empty (a command refused before it wrote anything),
is removed again. Stdlib only.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ltx_lora.errors import UserError

LOCK_NAME = ".ltx-lora.lock"


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), which tells a reused PID from the holder."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22 of proc(5); the name before ')' may hold spaces


def _running(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    now = _process_start(pid)
    return started is None or now is None or now == started


def _describe(holder: dict) -> str:
    return (f"`ltx-lora {holder.get('command', '?')}` (PID {holder.get('pid', '?')} on host "
            f"{holder.get('host', '?')}, started {holder.get('started', '?')})")


def _read(fd: int) -> dict | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while chunk := os.read(fd, 65536):
        raw += chunk
    if not raw.strip():
        return None  # released (or never held)
    try:
        holder = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {}  # damaged: no holder to name
    return holder if isinstance(holder, dict) else {}


@contextmanager
def folder_lock(folder: str | Path, command: str, what: str,
                say: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Hold `FOLDER/.ltx-lora.lock` for the block (`command`: the ltx-lora command, for the holder's description;
    `what`: the folder's role in the refusal, e.g. "run folder"). A live holder: UserError naming it. A stale lock
    (its holder is gone): taken over, `say` gets one line."""
    folder = Path(folder)
    made_folder = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            flocked = True
        except BlockingIOError:
            holder = _read(fd) or {}
            raise UserError(f"{folder} is in use by {_describe(holder)}: one {what} takes one writer at a time; "
                            "wait for that process to end or stop it.") from None
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            flocked = False  # no flock here: judge the holder by its PID
        holder = _read(fd)
        if holder is not None and not flocked:
            same_host = holder.get("host") == socket.gethostname()
            pid = holder.get("pid")
            if not (same_host and isinstance(pid, int) and not _running(pid, holder.get("proc_start"))):
                where = "" if same_host else f"; if it is no longer running on {holder.get('host')}, delete {path}"
                raise UserError(f"{folder} is in use by {_describe(holder)}: one {what} takes one writer at a "
                                f"time; wait for that process to end or stop it{where}.")
        if holder is not None and say is not None:
            say(f"note: {folder} was locked by {_describe(holder)}, which is no longer running (killed?); "
                "the lock is now this process's")
        me = {"command": command, "pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              "proc_start": _process_start(os.getpid())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        os.fsync(fd)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)  # released: an empty lock file (never deleted, see the module docstring) ...
            if made_folder and [p.name for p in folder.iterdir()] == [LOCK_NAME]:
                with contextlib.suppress(OSError):  # ... unless the folder was made for it and nothing else was
                    path.unlink()  # written there: a command refused before writing leaves no trace
                    folder.rmdir()
    finally:
        os.close(fd)  # drops the flock
