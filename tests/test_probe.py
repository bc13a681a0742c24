"""probe(): facts about good clips, and every bad case reported (never raised)."""

from __future__ import annotations

import hashlib
import os

import pytest
from PIL import Image

from ltx_lora.data.probe import content_hash, probe
from ltx_lora.fixtures.clips import PROBLEM_CASES, SYNTHETIC_CLIPS, SYNTHETIC_STILLS


@pytest.mark.parametrize("spec", SYNTHETIC_CLIPS, ids=lambda s: s.name)
def test_good_clips(synthetic_clips, spec):
    info = probe(synthetic_clips / spec.name)
    assert info.error is None and info.usable
    assert (info.kind, info.codec, info.width, info.height) == ("video", "h264", spec.width, spec.height)
    assert info.fps == spec.fps and info.fps_mode == "constant"
    assert info.frame_count == round(spec.seconds * spec.fps)
    assert info.duration == pytest.approx(spec.seconds, abs=1e-6)
    assert (info.pix_fmt, info.bit_depth, info.rotation) == ("yuv420p", 8, 0)
    assert len(info.content_hash) == 64
    if spec.audio:
        assert (info.audio.sample_rate, info.audio.channels, info.audio.codec) == (*spec.audio, "aac")
        # AAC pads to whole 1024-sample frames, so the audio may run a frame longer than the picture.
        assert info.audio.duration == pytest.approx(spec.seconds, abs=0.07)
        assert info.problems == []
    else:
        assert info.audio is None
        assert info.problems == ["no audio track"]


@pytest.mark.parametrize("name,w,h", [(n, w, h) for n, w, h, _ in SYNTHETIC_STILLS])
def test_stills(synthetic_clips, name, w, h):
    info = probe(synthetic_clips / name)
    assert info.usable and info.kind == "image"
    assert (info.width, info.height, info.frame_count, info.bit_depth) == (w, h, 1, 8)
    assert info.fps is None and info.audio is None and info.problems == []


def _has(texts: list[str], needle: str) -> bool:
    return any(needle in t for t in texts)


# case -> (usable?, text expected in the error (unusable) or in one of the problems (usable))
EXPECTED = {
    "ok": (True, None),
    "duplicate": (True, None),  # a duplicate is a scan-level finding: see test_duplicate_has_the_same_hash
    "unreadable": (False, "not a readable media file"),
    "empty": (False, "empty file (0 bytes)"),
    "truncated": (True, "truncated: only"),
    "truncated_no_index": (False, "index (moov) is missing"),
    "audio_only": (False, "no video stream"),
    "variable_fps": (True, "variable frame rate"),
    "rotated": (True, "rotated 90°: stored as 96x64, shown as 64x96"),
    "odd_size": (True, "odd size 97x63"),
    "ten_bit": (True, "10-bit video (yuv420p10le)"),
    "large": (True, "large resolution 3840x2160"),
}


def test_every_problem_case_has_an_expectation(problem_clips):
    assert set(problem_clips) == set(PROBLEM_CASES) == set(EXPECTED)


@pytest.mark.parametrize("case", PROBLEM_CASES)
def test_problem_cases(problem_clips, case):
    info = probe(problem_clips[case])  # must not raise
    usable, needle = EXPECTED[case]
    assert info.usable is usable, info
    if needle is None:
        assert info.problems == [], info.problems
    elif usable:
        assert _has(info.problems, needle), info.problems
    else:
        assert needle in info.error, info.error


def test_problem_details(problem_clips):
    truncated = probe(problem_clips["truncated"])
    assert 0 < truncated.frame_count < 48  # 2 s at 24 fps, cut in half

    vfr = probe(problem_clips["variable_fps"])
    assert vfr.fps_mode == "variable" and vfr.frame_count == 24
    assert _has(vfr.problems, "33 to 100 ms apart")

    rotated = probe(problem_clips["rotated"])
    assert (rotated.rotation, rotated.width, rotated.height) == (90, 64, 96)
    assert (rotated.coded_width, rotated.coded_height) == (96, 64)

    ten = probe(problem_clips["ten_bit"])
    assert (ten.pix_fmt, ten.bit_depth) == ("yuv420p10le", 10)

    audio_only = probe(problem_clips["audio_only"])
    assert audio_only.kind == "audio" and audio_only.audio.sample_rate == 16000

    assert probe(problem_clips["empty"]).content_hash is None


def test_duplicate_has_the_same_hash(problem_clips):
    a, b = probe(problem_clips["ok"]), probe(problem_clips["duplicate"])
    assert a.path != b.path and a.content_hash == b.content_hash
    assert probe(problem_clips["rotated"]).content_hash != a.content_hash


def test_never_raises_on_missing_or_odd_paths(tmp_path):
    assert probe(tmp_path / "nope.mp4").error == "file not found"
    assert probe(tmp_path).error == "a folder, not a media file"
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(500))
    info = probe(fake)
    assert not info.usable and "cannot be read as an image" in info.error
    cut = tmp_path / "cut.png"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(tmp_path / "full.png")
    cut.write_bytes((tmp_path / "full.png").read_bytes()[:60])
    assert not probe(cut).usable


def test_exif_rotated_still(tmp_path):
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.new("RGB", (96, 64), (0, 128, 255)).save(path, exif=exif)
    info = probe(path)
    assert info.usable and (info.width, info.height, info.rotation) == (64, 96, 270)
    assert _has(info.problems, "EXIF orientation 6")


def test_content_hash_scheme(tmp_path):
    mib = 1 << 20
    small = tmp_path / "small.bin"
    small.write_bytes(b"abc")
    assert content_hash(small) == hashlib.sha256((3).to_bytes(8, "little") + b"abc").hexdigest()

    data = bytearray(os.urandom(5 * mib))
    big = tmp_path / "big.bin"
    big.write_bytes(data)
    size = len(data)
    mid = size // 2 - mib // 2
    expected = hashlib.sha256(size.to_bytes(8, "little") + data[:mib] + data[mid : mid + mib] + data[-mib:])
    assert content_hash(big) == expected.hexdigest()

    # A change inside a sampled window changes the hash; one between windows does not (the documented trade).
    data[mid + 10] ^= 0xFF
    big.write_bytes(data)
    assert content_hash(big) != expected.hexdigest()
    data[mid + 10] ^= 0xFF
    data[mib + 100] ^= 0xFF
    big.write_bytes(data)
    assert content_hash(big) == expected.hexdigest()

