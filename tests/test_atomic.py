"""ltx_lora.files.atomic: a failed write leaves the old file as it was and no temp file behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ltx_lora.files import atomic
from ltx_lora.files.atomic import atomic_path, atomic_save_safetensors, atomic_write


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_atomic_write_bytes_and_text(tmp_path):
    target = tmp_path / "sub" / "a.txt"  # the folder is created
    atomic_write(target, "héllo\r\n")
    assert target.read_bytes() == "héllo\r\n".encode()  # UTF-8, newlines untouched
    atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert _leftovers(target.parent) == []


def test_failed_replace_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "a.json"
    target.write_text("old")

    def boom(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write(target, "new")
    with pytest.raises(OSError, match="disk on fire"), atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_writer_failing_midway_keeps_old_file(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half of the new")
        raise RuntimeError("serialiser died")
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_data_that_cannot_be_serialised(tmp_path):
    torch = pytest.importorskip("torch")
    target = tmp_path / "t.safetensors"
    atomic_save_safetensors({"x": torch.zeros(2)}, target, {"v": "1"})
    old = target.read_bytes()

    class Broken:  # fails while the tensors are being prepared for writing
        def detach(self):
            raise ValueError("cannot serialise")

    with pytest.raises(ValueError):
        atomic_save_safetensors({"x": Broken()}, target)
    with pytest.raises(TypeError):
        atomic_write(target, object())  # neither bytes nor str
    assert target.read_bytes() == old
    assert _leftovers(tmp_path) == []

    from safetensors import safe_open
    with safe_open(str(target), framework="pt") as f:
        assert f.metadata() == {"v": "1"}


def test_temp_names_are_unique_and_in_the_same_folder(tmp_path):
    target = tmp_path / "a.mp4"
    with atomic_path(target, suffix=".mp4") as t1, atomic_path(target, suffix=".mp4") as t2:
        assert t1 != t2
        assert t1.parent == t2.parent == tmp_path
        assert t1.name.startswith(".a.mp4.") and t1.name.endswith(".tmp.mp4")
        assert t1.exists() and t2.exists()
        t1.write_text("1")
        t2.write_text("2")
    assert target.read_text() == "1"  # the last to finish (the outer block) wins, whole
    assert _leftovers(tmp_path) == []


def test_permissions_follow_the_umask(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write(target, "x")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_imports_only_the_standard_library():
    code = "import sys, ltx_lora.files.atomic; print(any(m in sys.modules for m in ('torch', 'safetensors', 'numpy')))"
    src = Path(atomic.__file__).parents[1]  # this checkout's sources, not an installed copy
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "False"
