"""Dataset files (official layouts) and `ltx-lora dataset scan` end to end, report checked in real Chromium."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
from browser import APT_HINT, find_chromium, load_page
from conftest import assert_user_error, run_cli

from ltx_lora.data.dataset_file import DatasetEntry, read_dataset, write_dataset
from ltx_lora.errors import UserError
from ltx_lora.fixtures.clips import write_sound

BUCKETS = "96x64x25;64x96x25;128x128x25;96x64x1"

# --- dataset files ------------------------------------------------------------------------------------------------


def test_reads_the_official_layouts(tmp_path):
    (tmp_path / "sets").mkdir()
    (tmp_path / "sets" / "d.json").write_text(json.dumps([
        {"caption": "A cat playing with a ball of yarn", "video": "videos/cat.mp4"},
        {"caption": "A dog running in the park", "video": "/abs/dog.mp4", "audio": "dog.wav"}]))
    (tmp_path / "sets" / "d.jsonl").write_text(
        '{"caption": "cat", "media_path": "videos/cat.mp4", "ref_media_path": "depth/cat.mp4"}\n\n'
        '{"caption": "dog", "media_path": "dog.mp4"}\n')
    (tmp_path / "sets" / "d.csv").write_text(
        '\ufeffcaption,video\n"A cat, playing",videos/cat.mp4\n"A dog ""running""",dog.mp4\n', encoding="utf-8")

    js = read_dataset(tmp_path / "sets" / "d.json")
    assert [e.caption for e in js.entries] == ["A cat playing with a ball of yarn", "A dog running in the park"]
    assert js.resolve(js.entries[0].video) == (tmp_path / "sets" / "videos" / "cat.mp4").resolve()
    assert js.resolve(js.entries[1].video) == Path("/abs/dog.mp4")
    assert js.entries[1].fields == {"audio": "dog.wav"}
    assert js.columns == ["caption", "video", "audio"]

    jl = read_dataset(tmp_path / "sets" / "d.jsonl")  # legacy names map to the current ones
    assert jl.columns == ["caption", "video", "reference_video"]
    assert jl.entries[0].video == "videos/cat.mp4" and jl.entries[0].fields == {"reference_video": "depth/cat.mp4"}

    c = read_dataset(tmp_path / "sets" / "d.csv")
    assert [(e.caption, e.video) for e in c.entries] == [("A cat, playing", "videos/cat.mp4"),
                                                         ('A dog "running"', "dog.mp4")]


@pytest.mark.parametrize("name,content,needles", [
    ("d.jsonl", '{"caption": "x", "path": "a.mp4"}\n', ['d.jsonl', 'no "video" column', '"caption", "path"']),
    ("d.json", '[{"video": "a.mp4", "text": "x"}]', ['d.json', 'no "caption" column', '"video", "text"']),
    ("d.csv", "prompt,file\nx,a.mp4\n", ['d.csv', '"video"', '"prompt", "file"']),
    ("d.csv", "", ["d.csv", "no columns at all"]),
    ("d.jsonl", '{"caption": "x", "video": "a.mp4"}\n{"caption": "y", "video": \n', ["d.jsonl", "line 2"]),
    ("d.json", '{"caption": "x"}', ["d.json", "JSON list of objects"]),
    ("d.json", '[{"caption": "x", "video": ""}]', ["row 1", '"video" path']),
    ("d.txt", "a.mp4", ["d.txt", ".jsonl, .json or .csv"]),
])
def test_bad_dataset_files_name_file_and_columns(tmp_path, name, content, needles):
    (tmp_path / name).write_text(content)
    with pytest.raises(UserError) as e:
        read_dataset(tmp_path / name)
    for n in needles:
        assert n in str(e.value), str(e.value)


@pytest.mark.parametrize("bad", ["0", "1.5", "-2", "many", "inf"])
def test_bad_repeats_names_the_row(tmp_path, bad):
    path = tmp_path / "ds.csv"
    path.write_text(f"caption,video,repeats\na,a.mp4,3\nb,b.mp4,\nc,c.mp4,{bad}\n")
    with pytest.raises(UserError, match=r"ds.csv, row 3, has repeats .*whole number >= 1"):
        read_dataset(path)
    path.write_text("caption,video,repeats\na,a.mp4,3\nb,b.mp4,\nc,c.mp4,2.0\n")
    assert [e.repeats for e in read_dataset(path).entries] == [3, 1, 2]


@pytest.mark.parametrize("bad", ["-1", "heavy", "nan", "inf"])
def test_bad_loss_weight_names_the_row(tmp_path, bad):
    path = tmp_path / "ds.csv"
    path.write_text(f"caption,video,loss_weight\na,a.mp4,2\nb,b.mp4,\nc,c.mp4,{bad}\n")
    with pytest.raises(UserError, match=r"ds.csv, row 3, has loss_weight .*number >= 0"):
        read_dataset(path)
    path.write_text("caption,video,loss_weight\na,a.mp4,2\nb,b.mp4,\nc,c.mp4,0\n")
    assert [e.loss_weight for e in read_dataset(path).entries] == [2.0, 1.0, 0.0]
    jsonl = tmp_path / "ds.jsonl"
    jsonl.write_text('{"caption": "a", "video": "a.mp4", "loss_weight": true}\n')
    with pytest.raises(UserError, match="row 1, has loss_weight True"):
        read_dataset(jsonl)


def test_missing_dataset_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_dataset(tmp_path / "nope.jsonl")


@pytest.mark.parametrize("ext", [".jsonl", ".json", ".csv"])
def test_round_trip_keeps_values_and_types(tmp_path, ext):
    entries = [DatasetEntry("A cat, with \"quotes\"", "clips/cat.mp4",
                            {"audio": "cat.wav", "width": 96, "fps": 23.976, "frames": 48, "bucket": "96x64x25",
                             "problems": ["no audio track", "odd size 97x63"], "audio_sample_rate": None}),
               DatasetEntry("", "dog.png", {"width": 64, "problems": []})]
    path = write_dataset(tmp_path / f"d{ext}", entries)
    back = read_dataset(path)
    assert [e.caption for e in back.entries] == ["A cat, with \"quotes\"", ""]
    first = back.entries[0].fields
    assert first["width"] == 96 and first["fps"] == 23.976 and first["frames"] == 48
    assert first["problems"] == ["no audio track", "odd size 97x63"] and first["audio"] == "cat.wav"
    assert first["audio_sample_rate"] is None and back.entries[1].fields["problems"] == []
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temp file


# --- the scan command ---------------------------------------------------------------------------------------------


def _scan(*args) -> object:
    return run_cli("dataset", "scan", *map(str, args))


def _rows(path: Path) -> dict[str, dict]:
    ds = read_dataset(path)
    return {Path(e.video).name: {"caption": e.caption, "video": e.video, **e.fields} for e in ds.entries}


def test_scan_synthetic_folder(tmp_path, synthetic_clips):
    folder = tmp_path / "clips"
    shutil.copytree(synthetic_clips, folder)
    res = _scan(folder, "-o", folder / "dataset.jsonl", "--buckets", BUCKETS)
    assert res.code == 0, res.err
    # the two clips without a caption have a bucket and a row (for `ltx-lora caption`) but are not used
    assert "Scanned 7 media files" in res.out and "5 used, 2 need a caption, 0 skipped" in res.out, res.out
    assert "Need a caption, not used until they have one (run `ltx-lora caption`" in res.out
    assert re.search(r"^  blink_96x64_30fps_short\.mp4: 96x64x9$", res.out, re.M), res.out
    assert "Wrote" in res.out and "dataset_report.html" in res.out
    rows = _rows(folder / "dataset.jsonl")
    assert set(rows) == {"walk_96x64_24fps.mp4", "orbit_64x96_25fps.mp4", "bounce_128x128_30fps.mp4",
                         "blink_96x64_30fps_short.mp4", "drift_128x96_24fps.mp4", "still_96x64.png",
                         "still_64x96.jpg"}
    walk = rows["walk_96x64_24fps.mp4"]
    assert walk["video"] == "walk_96x64_24fps.mp4"  # relative to the dataset file's folder
    assert rows["drift_128x96_24fps.mp4"]["video"] == "sub/drift_128x96_24fps.mp4"
    assert walk["caption"].startswith("A red disc") and walk["frames"] == 48 and walk["fps"] == 24.0
    assert walk["audio_sample_rate"] == 48000 and walk["bucket"] == "96x64x25" and len(walk["content_hash"]) == 64
    assert rows["orbit_64x96_25fps.mp4"]["bucket"] == "64x96x25"
    assert rows["bounce_128x128_30fps.mp4"]["bucket"] == "128x128x25"
    assert rows["bounce_128x128_30fps.mp4"]["problems"] == ["no audio track"]
    blink = rows["blink_96x64_30fps_short.mp4"]  # 15 frames: shortened rather than made a still
    assert blink["bucket"] == "96x64x9" and blink["caption"] == ""
    assert any("no caption" in p for p in blink["problems"])
    assert any("shortened bucket 96x64x9" in p for p in blink["problems"])
    assert rows["still_96x64.png"]["bucket"] == "96x64x1" and rows["still_96x64.png"]["kind"] == "image"
    portrait_still = rows["still_64x96.jpg"]  # only a landscape 1-frame bucket was listed: heavy crop, noted
    assert portrait_still["bucket"] == "96x64x1"
    assert any("keeps only 44%" in p for p in portrait_still["problems"])
    assert "used file" not in res.out and "(7 entries)" in res.out
    # what the report notes per clip is counted in the terminal too (blink: shortened; the portrait still into a
    # landscape bucket: upscaled 1.5x and cropped)
    assert re.search(r"^Notes \(each clip's in the report\): 1 upscaled more than 1.1x to fill their bucket .*; "
                     r"1 too short for their bucket's frame count .*; 1 cropped to under 60% of the picture", res.out,
                     re.M), res.out
    page = (folder / "dataset_report.html").read_text()
    assert "<b>5</b>used" in page and "<b>2</b>need a caption" in page and "needs a caption</span>" in page


def test_scan_problem_folder_reports_every_case(tmp_path, problem_clips):
    out = tmp_path / "out" / "dataset.jsonl"
    res = _scan(next(iter(problem_clips.values())).parent, "-o", out, "--buckets", "96x64x9;64x96x9;128x128x9")
    assert res.code == 0, res.err  # bad media never stops the scan
    assert f"Scanned {len(problem_clips)} media files" in res.out and "2 used, 5 need a caption, 5 skipped" in res.out
    skipped_lines = {
        "unreadable.mp4": "not a readable media file", "empty.mp4": "empty file (0 bytes)",
        "truncated_no_index.mp4": "index (moov) is missing", "audio_only.mp4": "no video stream",
        "ok_copy.mp4": "duplicate of ok.mp4",
    }
    for name, reason in skipped_lines.items():
        assert re.search(rf"^  {re.escape(name)}: .*{re.escape(reason)}", res.out, re.M), (name, res.out)

    rows = _rows(out)
    assert set(rows) == {"ok.mp4", "truncated.mp4", "variable_fps.mp4", "rotated_phone.mp4", "odd_97x63.mp4",
                         "ten_bit.mp4", "large_3840x2160.mp4"}
    assert Path(rows["ok.mp4"]["video"]).is_absolute()  # media outside the dataset's folder: absolute paths
    expected_notes = {
        "truncated.mp4": "truncated: only", "variable_fps.mp4": "variable frame rate (frames 33 to 100 ms",
        "rotated_phone.mp4": "rotated 90°", "odd_97x63.mp4": "odd size 97x63", "ten_bit.mp4": "10-bit video",
        "large_3840x2160.mp4": "large resolution 3840x2160",
    }
    for name, note in expected_notes.items():
        assert any(note in p for p in rows[name]["problems"]), (name, rows[name]["problems"])
    assert rows["rotated_phone.mp4"]["bucket"] == "64x96x9"  # bucketed by its displayed (portrait) shape
    assert rows["variable_fps.mp4"]["fps_mode"] == "variable"

    page = (out.parent / "dataset_report.html").read_text()
    for name, reason in skipped_lines.items():
        assert name in page and reason in page
    for note in expected_notes.values():
        assert note in page
    assert "<script" not in page and "http://" not in page and "https://" not in page  # self-contained


def test_report_opens_in_real_chromium(tmp_path, problem_clips):
    if find_chromium() is None:
        pytest.skip(f"no Chromium binary to open the report with; install Debian's: {APT_HINT}")
    out = tmp_path / "dataset.jsonl"
    assert _scan(next(iter(problem_clips.values())).parent, "-o", out, "--buckets", "96x64x9").code == 0
    page = load_page(out.parent / "dataset_report.html")
    assert page.title.startswith("Dataset report")
    assert page.errors == []
    # A thumbnail for every file with a picture: 7 with a bucket + the duplicate; none for the 4 unreadable/audio-only.
    assert len(page.images) == 8
    for img in page.images:
        assert img["complete"] and img["naturalWidth"] > 0 and img["naturalHeight"] > 0, img
    rotated = next(i for i in page.images if i["alt"] == "rotated_phone.mp4")
    assert rotated["naturalHeight"] > rotated["naturalWidth"]  # shown upright (portrait), not as stored


def test_scan_existing_dataset_file(tmp_path, synthetic_clips):
    src = tmp_path / "in.jsonl"
    walk, still = synthetic_clips / "walk_96x64_24fps.mp4", synthetic_clips / "still_96x64.png"
    write_sound(tmp_path / "walk.wav", 2.0)  # a file a row names must exist (scan checks it)
    src.write_text(
        json.dumps({"caption": "my own caption", "media_path": str(walk), "audio": "walk.wav", "width": 1,
                    "loss_weight": 0.5}) + "\n"
        + json.dumps({"caption": "", "video": str(still)}) + "\n"
        + json.dumps({"caption": "gone", "video": "missing.mp4"}) + "\n")
    out = tmp_path / "out.csv"
    res = _scan(src, "-o", out, "--buckets", BUCKETS)
    assert res.code == 0, res.err
    assert "2 used, 1 skipped" in res.out and "missing.mp4: file not found" in res.out
    with open(out, newline="") as f:
        rows = {Path(r["video"]).name: r for r in csv.DictReader(f)}
    assert rows["walk_96x64_24fps.mp4"]["caption"] == "my own caption"  # the file's caption wins
    assert rows["walk_96x64_24fps.mp4"]["audio"] == "walk.wav"  # official columns are carried over
    assert rows["walk_96x64_24fps.mp4"]["width"] == "96"  # our probe columns are recomputed
    assert rows["walk_96x64_24fps.mp4"]["loss_weight"] == "0.5"  # so is the loss weight
    assert [e.loss_weight for e in read_dataset(out).entries] == [0.5, 1.0]  # CSV: text back to numbers
    assert rows["still_96x64.png"]["caption"].startswith("A still frame")  # empty caption: side-car used


def test_skip_shorter_and_target_fps(tmp_path, synthetic_clips):
    out = tmp_path / "d.json"
    res = _scan(synthetic_clips, "-o", out, "--buckets", "96x64x25;64x96x25;128x128x25", "--skip-shorter")
    assert res.code == 0, res.err
    assert "blink_96x64_30fps_short.mp4: only 15 frames, and the shortest bucket needs 25" in res.out
    assert "still_96x64.png: a still image (1 frame)" in res.out and "3 too short" in res.out

    res = _scan(synthetic_clips, "-o", out, "--buckets", "96x64x25", "--target-fps", "12")
    assert res.code == 0, res.err
    rows = _rows(out)
    assert rows["walk_96x64_24fps.mp4"]["bucket"] == "96x64x17"  # 48 frames at 24 fps give 24 at 12 fps
    assert "target fps 12" in (tmp_path / "d_report.html").read_text()


def test_scan_user_errors(tmp_path, synthetic_clips):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not media")
    assert_user_error(_scan(empty, "-o", tmp_path / "d.jsonl"), "Found no media files")
    assert_user_error(_scan(tmp_path / "nowhere", "-o", tmp_path / "d.jsonl"), "does not exist")
    assert_user_error(_scan(synthetic_clips, "-o", tmp_path / "d.parquet"), ".jsonl, .json or .csv")
    assert_user_error(_scan(synthetic_clips, "-o", tmp_path / "d.jsonl", "--target-fps", "0"), "--target-fps")
    no_video = tmp_path / "in.jsonl"
    no_video.write_text('{"caption": "x", "file": "a.mp4"}\n')
    assert_user_error(_scan(no_video, "-o", tmp_path / "d.jsonl"), "in.jsonl", 'no "video" column', '"file"')

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.mp4").write_bytes(b"\0" * 100)
    (bad / "b.mp4").write_bytes(b"")
    res = _scan(bad, "-o", bad / "d.jsonl")
    assert_user_error(res, "None of the 2 media files", "d_report.html")
    assert (bad / "d_report.html").is_file() and not (bad / "d.jsonl").exists()


def test_help_is_there():
    res = run_cli("dataset", "scan", "--help")
    assert res.code == 0
    for option in ("--output", "--buckets", "--target-fps", "--skip-shorter"):
        assert option in res.out
