"""`ltx-lora caption`: real Gemma 3 / Qwen2.5-Omni code on tiny random models, and a local OpenAI-style server.

Captions from random models are gibberish; what these tests prove is the pipeline: frames (and sound) reach the
real model code, captions land where `dataset scan` / `preprocess` read them, existing ones are kept, the trigger
word is prefixed, undecodable clips are reported, and a killed run continues.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import SRC, assert_user_error, run_cli
from PIL import Image

from ltx_lora.data.caption import caption_source, clean_caption, instruction_for, with_trigger
from ltx_lora.errors import UserError

MEDIA = ("walk_96x64_24fps.mp4", "bounce_128x128_30fps.mp4", "still_96x64.png")  # with sound, silent, still


def _clips(folder: Path, synthetic_clips: Path, names=MEDIA, bad: bool = True) -> Path:
    """A fresh folder with some synthetic media (no captions) plus an undecodable and an empty 'clip'."""
    folder.mkdir(parents=True)
    for name in names:
        shutil.copyfile(synthetic_clips / name, folder / Path(name).name)
    if bad:
        (folder / "broken.mp4").write_bytes(os.urandom(5000))
        (folder / "empty.mov").write_bytes(b"")
    return folder


@pytest.fixture(scope="module")
def gemma_captioner(tiny_gemma):
    from ltx_lora.data.caption_backends import load_captioner

    return load_captioner(model=tiny_gemma, device="cpu", max_new_tokens=8)


@pytest.fixture(scope="module")
def tiny_qwen_omni(tmp_path_factory) -> Path:
    from ltx_lora.fixtures.qwen_omni import write_tiny_qwen_omni

    return write_tiny_qwen_omni(tmp_path_factory.mktemp("qwen") / "Qwen2.5-Omni-7B")


# --- pure parts -------------------------------------------------------------------------------------------------


def test_clean_caption_and_trigger():
    assert clean_caption("The video shows a red fox running.\n\nIt jumps.") == "A red fox running. It jumps."
    assert clean_caption('<think>hmm</think>{"caption": "In this clip, a dog barks."}') == "A dog barks."
    assert clean_caption("reasoning...</think>\nCaption: Waves crash.") == "Waves crash."
    assert with_trigger("A fox.", "zxq") == "zxq A fox." and with_trigger("zxq A fox.", "zxq") == "zxq A fox."
    assert with_trigger("A fox.", "") == "A fox."
    hears = instruction_for("ltx", still=False, hears_audio=True, has_audio=True)
    deaf = instruction_for("ltx", still=False, hears_audio=False, has_audio=True)
    assert "speech" in hears and "speech" not in deaf and "camera" in deaf
    assert "camera movement" not in instruction_for("ltx", still=True, hears_audio=True, has_audio=False)
    assert len(instruction_for("plain", still=False, hears_audio=False, has_audio=False)) < len(deaf)
    with pytest.raises(UserError, match="style 'fancy'"):
        instruction_for("fancy", still=False, hears_audio=False, has_audio=False)


def test_sample_media_frames_upright_shrunk_and_bad_files_named(problem_clips):
    from ltx_lora.data.caption import MediaError, sample_media

    rotated = sample_media(problem_clips["rotated"], 4)
    assert len(rotated.frames) == 4 and rotated.frames[0].size == (64, 96)  # shown upright, as players show it
    assert rotated.audio is not None and rotated.audio.ndim == 1 and rotated.frame_rate == pytest.approx(4.0, 0.1)
    assert max(sample_media(problem_clips["large"], 2).frames[0].size) == 768
    assert sample_media(problem_clips["rotated"], 2, with_audio=False).audio is None
    for case, needle in (("audio_only", "no video stream"), ("truncated_no_index", "index"), ("empty", "empty")):
        with pytest.raises(MediaError, match=needle):
            sample_media(problem_clips[case], 4)


# --- Gemma 3 (the text-encoder folder) ------------------------------------------------------------------------


def test_gemma_captions_folder_keeps_existing_prefixes_trigger_reports_bad(tmp_path, synthetic_clips,
                                                                          gemma_captioner):
    folder = _clips(tmp_path / "clips", synthetic_clips)
    (folder / "bounce_128x128_30fps.txt").write_text("My own caption.\n")
    seen = []

    generate = gemma_captioner.model.generate

    def watch(**kw):  # the real generate, recording what reached it
        seen.append(kw["pixel_values"].shape[0])
        return generate(**kw)

    gemma_captioner.model.generate = watch
    try:
        result = caption_source(folder, gemma_captioner, trigger="zxq", num_frames=3)
    finally:
        gemma_captioner.model.generate = generate
    assert sorted(result.captioned) == ["still_96x64.png", "walk_96x64_24fps.mp4"]
    assert result.kept == ["bounce_128x128_30fps.mp4"]
    failed = dict(result.failed)
    assert set(failed) == {"broken.mp4", "empty.mov"} and "empty" in failed["empty.mov"]
    assert sorted(seen) == [1, 3]  # a still is one image, a clip its 3 sampled frames
    assert (folder / "bounce_128x128_30fps.txt").read_text() == "My own caption.\n"
    for name in ("walk_96x64_24fps", "still_96x64"):
        text = (folder / f"{name}.txt").read_text()
        assert text.startswith("zxq ") and len(text.strip()) > 4 and text.count("\n") == 1
    assert not (folder / "broken.txt").exists() and not list(folder.glob(".*.tmp"))

    # `dataset scan` reads the new side-cars
    from ltx_lora.data.scan import collect

    caps = {p.name: c for p, c, _, _ in collect(folder)}
    assert caps["walk_96x64_24fps.mp4"].startswith("zxq ") and caps["bounce_128x128_30fps.mp4"] == "My own caption."

    again = caption_source(folder, gemma_captioner, num_frames=3)
    assert not again.captioned and len(again.kept) == 3 and len(again.failed) == 2
    over = caption_source(folder, gemma_captioner, num_frames=2, overwrite=True, style="plain")
    assert len(over.captioned) == 3 and not over.kept
    assert (folder / "bounce_128x128_30fps.txt").read_text() != "My own caption.\n"
    assert not (folder / "walk_96x64_24fps.txt").read_text().startswith("zxq ")  # no trigger asked this time


def test_dataset_file_caption_column(tmp_path, synthetic_clips, gemma_captioner):
    from ltx_lora.data.dataset_file import DatasetEntry, read_dataset, write_dataset

    folder = _clips(tmp_path / "clips", synthetic_clips, bad=False)
    (folder / "still_96x64.txt").write_text("A side-car caption.")
    ds = tmp_path / "data" / "ds.csv"
    write_dataset(ds, [DatasetEntry("", "../clips/walk_96x64_24fps.mp4",
                                    {"audio": "x.wav", "problems": ["no caption (add a side-car .txt)", "tiny"]}),
                       DatasetEntry("Kept as is.", "../clips/bounce_128x128_30fps.mp4", {"audio": ""}),
                       DatasetEntry("", str(folder / "still_96x64.png"), {"audio": ""})])
    result = caption_source(ds, gemma_captioner, trigger="zxq", num_frames=2)
    assert result.captioned == ["../clips/walk_96x64_24fps.mp4"] and len(result.kept) == 2
    rows = read_dataset(ds).entries
    assert rows[0].caption.startswith("zxq ") and rows[0].fields["audio"] == "x.wav"
    assert rows[0].fields["problems"] == ["tiny"]  # the stale "no caption" note is gone
    assert rows[1].caption == "Kept as is."
    assert rows[2].caption == "A side-car caption."  # copied into the column, which is what preprocess reads
    assert not (folder / "walk_96x64_24fps.txt").exists()  # dataset captions go to the column only


# --- Qwen2.5-Omni (sees video, hears audio) ---------------------------------------------------------------------


def test_qwen_omni_sees_video_and_hears_audio(tmp_path, synthetic_clips, tiny_qwen_omni):
    from ltx_lora.data.caption_backends import load_captioner

    captioner = load_captioner(model=tiny_qwen_omni, device="cpu", max_new_tokens=6)
    folder = _clips(tmp_path / "clips", synthetic_clips)
    calls = []
    generate = captioner.model.generate

    def watch(**kw):
        calls.append({k for k, v in kw.items() if v is not None and v is not False})
        return generate(**kw)

    captioner.model.generate = watch
    result = caption_source(folder, captioner, num_frames=4)
    assert sorted(result.captioned) == ["bounce_128x128_30fps.mp4", "still_96x64.png", "walk_96x64_24fps.mp4"], result.failed
    assert {m for m, _ in result.failed} == {"broken.mp4", "empty.mov"}
    by_kind = sorted(calls, key=len)
    # still: an image; silent clip: video only; clip with sound: video + audio interleaved (use_audio_in_video)
    assert "pixel_values" in by_kind[0] and "pixel_values_videos" not in by_kind[0]
    assert "pixel_values_videos" in by_kind[1] and "input_features" not in by_kind[1]
    assert {"pixel_values_videos", "input_features", "use_audio_in_video"} <= by_kind[2]
    assert all((folder / Path(m).with_suffix(".txt")).read_text().strip() for m in result.captioned)


def test_sound_only_rows_are_heard_by_qwen_omni_and_refused_by_a_captioner_that_cannot_hear(tmp_path, tiny_qwen_omni,
                                                                                               tiny_gemma):
    """An audio-only dataset (rows with `audio` and no `video`, as `dataset scan --task t2a` writes them): Qwen2.5-Omni
    gets each sound alone (audio features, no pixels) with the sound instruction and the caption lands in the row;
    Gemma (sees, does not hear) fails each such row with the reason and the model to use."""
    from ltx_lora.data.caption_backends import load_captioner
    from ltx_lora.fixtures.clips import write_sound

    write_sound(tmp_path / "sounds" / "whistle.wav", 1.5, seed=1)
    write_sound(tmp_path / "sounds" / "hum.flac", 1.0, seed=2)
    dataset = tmp_path / "dataset.jsonl"
    dataset.write_text("".join(json.dumps({"audio": f"sounds/{name}", "caption": ""}) + "\n"
                               for name in ("whistle.wav", "hum.flac")))
    gemma = load_captioner(model=tiny_gemma, device="cpu", max_new_tokens=4)
    refused = caption_source(dataset, gemma)
    assert not refused.captioned and [m for m, _ in refused.failed] == ["sounds/whistle.wav", "sounds/hum.flac"]
    assert all("does not hear" in why and "Qwen2.5-Omni" in why for _, why in refused.failed), refused.failed

    captioner = load_captioner(model=tiny_qwen_omni, device="cpu", max_new_tokens=6)
    calls, prompts = [], []
    generate, caption = captioner.model.generate, captioner.caption

    def watch(**kw):
        calls.append({k for k, v in kw.items() if v is not None and v is not False})
        return generate(**kw)

    def watch_caption(sample, instruction):
        prompts.append(instruction)
        return caption(sample, instruction)

    captioner.model.generate, captioner.caption = watch, watch_caption
    result = caption_source(dataset, captioner)
    assert result.captioned == ["sounds/whistle.wav", "sounds/hum.flac"] and not result.failed, result.failed
    assert all("input_features" in c and "pixel_values" not in c and "pixel_values_videos" not in c
               and "use_audio_in_video" not in c for c in calls), calls
    assert all("sound recording" in p for p in prompts)
    rows = [json.loads(line) for line in dataset.read_text().splitlines()]
    assert all(r["caption"].strip() and r["audio"].startswith("sounds/") and "video" not in r for r in rows), rows


def test_wrong_model_folders_are_one_sentence(tmp_path, tiny_gemma):
    from ltx_lora.data.caption_backends import load_captioner

    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama"}))
    text_only = tmp_path / "gemma-3-1b"
    text_only.mkdir()
    (text_only / "config.json").write_text(json.dumps({"model_type": "gemma3_text"}))
    cases = {llama: "'llama' model", text_only: "text-only", tmp_path / "nope": "does not exist",
             Path("Qwen/Qwen2.5-Omni-7B"): "Hugging Face", tmp_path: "no config.json"}
    for path, needle in cases.items():
        with pytest.raises(UserError, match=needle):
            load_captioner(model=path, device="cpu")
    broken = tmp_path / "broken-gemma"
    shutil.copytree(tiny_gemma, broken, ignore=shutil.ignore_patterns("*.safetensors", "*.index.json"))
    with pytest.raises(UserError, match="could not be loaded as Gemma 3"):
        load_captioner(model=broken, device="cpu")
    with pytest.raises(UserError, match="--api-model"):
        load_captioner(endpoint="http://127.0.0.1:9/v1")
    with pytest.raises(UserError, match="either --model"):
        load_captioner()


def test_cli_bad_input_exits_2(tmp_path, synthetic_clips):
    folder = _clips(tmp_path / "clips", synthetic_clips, names=MEDIA[:1], bad=False)
    assert_user_error(run_cli("caption", folder, "--model", "google/gemma-3-12b-it"), "Hugging Face")
    assert_user_error(run_cli("caption", tmp_path / "missing", "--endpoint", "http://127.0.0.1:9/v1",
                              "--api-model", "m"), "does not exist")
    # nothing listens on port 9: one sentence, not a traceback per clip
    assert_user_error(run_cli("caption", folder, "--endpoint", "http://127.0.0.1:9/v1", "--api-model", "m"),
                      "Cannot reach the captioning endpoint")


# --- OpenAI-compatible endpoint: request format, and a killed run that continues -------------------------------


class _Server:
    """A local chat-completions server that records each request; it can hold requests until released."""

    def __init__(self, hold_from: int | None = None):
        self.requests: list[dict] = []
        self.hold_from, self.release = hold_from, threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                if outer.hold_from is not None and len(outer.requests) >= outer.hold_from:
                    outer.release.wait(60)
                n = len(outer.requests)
                answer = {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {
                    "role": "assistant", "content": f"The video shows a red disc gliding, take {n}."}}]}
                data = json.dumps(answer).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client was killed meanwhile

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def test_endpoint_request_format(tmp_path, synthetic_clips):
    from ltx_lora.data.caption_backends import load_captioner

    folder = _clips(tmp_path / "clips", synthetic_clips)
    server = _Server()
    os.environ["LTX_LORA_TEST_KEY"] = "sekrit"
    try:
        captioner = load_captioner(endpoint=server.url, api_model="my-vlm", api_key_env="LTX_LORA_TEST_KEY")
        result = caption_source(folder, captioner, trigger="zxq", num_frames=3)
    finally:
        os.environ.pop("LTX_LORA_TEST_KEY")
        server.close()
    assert len(result.captioned) == 3 and len(result.failed) == 2
    assert len(server.requests) == 3  # undecodable clips never reach the model
    image_counts = []
    for req in server.requests:
        assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sekrit"
        body = req["body"]
        assert body["model"] == "my-vlm" and body["max_tokens"] > 0
        [message] = body["messages"]
        assert message["role"] == "user"
        images = [p for p in message["content"] if p["type"] == "image_url"]
        texts = [p["text"] for p in message["content"] if p["type"] == "text"]
        assert len(texts) == 1 and "caption" in texts[0]
        for part in images:
            url = part["image_url"]["url"]
            assert url.startswith("data:image/jpeg;base64,")
            img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
            assert img.format == "JPEG" and img.size in {(96, 64), (128, 128)}
        image_counts.append(len(images))
    assert sorted(image_counts) == [1, 3, 3]
    captions = sorted((folder / f"{Path(n).stem}.txt").read_text() for n in MEDIA)
    assert all(c.startswith("zxq A red disc gliding, take ") for c in captions), captions


def test_killed_run_continues(tmp_path, synthetic_clips):
    folder = _clips(tmp_path / "clips", synthetic_clips)
    server = _Server(hold_from=2)  # answers the first request, holds the second: the run is killed meanwhile
    args = ["caption", str(folder), "--api-model", "m", "--frames", "2", "--endpoint"]
    log = tmp_path / "log.txt"
    with open(log, "wb") as out:  # a file, not a pipe: nobody reads a pipe while we wait, and a full one blocks
        proc = subprocess.Popen([sys.executable, "-m", "ltx_lora", *args, server.url], stdout=out, stderr=out,
                                env={**os.environ, "PYTHONPATH": str(SRC)})
    try:
        deadline = time.time() + 120
        while len(server.requests) < 2:
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-2000:]
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        server.close()
    done = sorted(p.name for p in folder.glob("*.txt"))
    assert len(done) == 1 and not list(folder.glob(".*.tmp"))  # the finished caption is there, nothing half-written
    first = (folder / done[0]).read_text()

    server = _Server()
    try:
        res = run_cli(*args, server.url)
    finally:
        server.close()
    assert res.code == 0, res.err
    assert "2 captioned, 1 kept (already captioned), 2 failed" in res.out, res.out
    assert "failed broken.mp4:" in res.out and "failed empty.mov: empty file" in res.out
    assert len(server.requests) == 2 and (folder / done[0]).read_text() == first
    assert len(list(folder.glob("*.txt"))) == 3
