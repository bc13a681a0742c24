"""Hostile input: whatever a user hands ltx-lora, a command ends with exit 0 or with one sentence and exit 2
(never a crash with exit 1, never a traceback, never a hang), and every file that existed before is byte-identical
after, except what the command is meant to write.

Inputs, generated with hypothesis and written by hand: media files and their names, configs (ours and the official
trainer's), dataset files, preprocessing caches, training checkpoints, safetensors headers and LoRAs. Most run the
CLI in this process (`run_here`: the real `ltx_lora.cli.main`, its error boundary included) because a subprocess
costs 3 s of imports; the cases where the process is the point (a FIFO, markup in the error printer) go through
the real CLI (`run_cli`).

CI runs a small sample of every generator (the `sample` variants, derandomised). The full set is marked `hostile`
and is deselected by default: `pytest -m hostile tests/test_hostile.py` (the counts of inputs tried are printed at
the end of the module).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import shutil
import signal
import struct
import sys
import tempfile
import typing
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CliResult, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_train import BUCKETS, prepared  # noqa: F401 - the session's preprocessed tiny dataset

from ltx_lora.data.probe import MEDIA_EXTENSIONS
from ltx_lora.errors import UserError
from ltx_lora.files.safetensors_header import DTYPE_BITS, NotSafetensors, open_safetensors, read_header

TRIED: Counter = Counter()  # inputs tried per generator (printed at the end of the module)
FAILED_NOTHING = "every input of this generator ended in exit 0 or one sentence"


# --- running a command and judging how it ended -------------------------------------------------------------------


class Hang(Exception):
    """A command ran past its time limit (raised from SIGALRM inside the command)."""


def run_here(*args, timeout: int = 120) -> CliResult:
    """`ltx-lora ARGS` in this process: the real entry point and error boundary, stdout and stderr captured. A
    command that runs past `timeout` seconds is interrupted (the boundary then reports it: the test fails)."""
    from ltx_lora import cli

    out, err = io.StringIO(), io.StringIO()

    def alarm(*_):
        raise Hang(f"ran past {timeout} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    argv, debug = sys.argv, os.environ.pop("LTX_LORA_DEBUG", None)
    sys.argv = ["ltx-lora", *map(str, args)]
    code: object = 0
    signal.alarm(timeout)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main()
            except SystemExit as e:
                code = e.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        sys.argv = argv
        if debug is not None:
            os.environ["LTX_LORA_DEBUG"] = debug
    return CliResult(code if isinstance(code, int) else (0 if code is None else 1), out.getvalue(), err.getvalue())


def assert_ended_well(res: CliResult, allowed: tuple[int, ...] = (0, 2), *needles: str) -> None:
    """Exit status in `allowed`; no traceback, no crash line; a refusal (2) is one sentence on one line."""
    both = res.out + res.err
    assert res.code in allowed, (res.code, both[-3000:])
    assert "Traceback" not in both, both[-3000:]
    assert "failed:" not in res.err, res.err[-3000:]
    if res.code == 2:
        errors = [line for line in res.err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, res.err[-3000:]
        sentence = errors[0].removeprefix("error: ")
        assert sentence.strip() and sentence.rstrip().endswith((".", ")", "`")), sentence
        assert len(sentence) < 2000, sentence
    for n in needles:
        assert n.lower() in both.lower(), (n, both[-3000:])


def snapshot(*roots: Path) -> dict[str, str]:
    """{path: sha256} of every regular file under `roots` (FIFOs and other special files are left out)."""
    out = {}
    for root in roots:
        paths = [root] if root.is_file() else root.rglob("*")
        for p in paths:
            if p.is_file() and not p.is_symlink():
                out[os.fsdecode(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@contextlib.contextmanager
def files_kept(*roots: Path, writes: tuple[Path, ...] = ()):
    """Around a command: every file under `roots` is still there with the same bytes afterwards, except under
    `writes` (what the command makes)."""
    before = snapshot(*roots)
    yield
    assert_kept(before, snapshot(*[r for r in roots if r.exists()]), *writes)


def assert_kept(before: dict[str, str], after: dict[str, str], *writes: Path) -> None:
    """Every file of `before` is in `after` with the same bytes, except under `writes` (what the command makes)."""
    allowed = [os.fsdecode(w) for w in writes]
    for path, digest in before.items():
        if any(path == a or path.startswith(a.rstrip("/") + "/") for a in allowed):
            continue
        assert after.get(path) == digest, f"{path} was {'changed' if path in after else 'deleted'}"


def budget(sample: int, full: int):
    """Run a generator test twice: a derandomised sample in CI, and the full set under `-m hostile`."""
    return pytest.mark.parametrize("examples", [pytest.param(sample, id="sample"),
                                                pytest.param(full, id="full", marks=pytest.mark.hostile)])


def examples_settings(examples: int):
    return settings(max_examples=examples, deadline=None, database=None, derandomize=examples < 50,
                    suppress_health_check=list(HealthCheck), print_blob=True)


@pytest.fixture(scope="module", autouse=True)
def _report_counts(request):
    yield
    if TRIED:
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        line = "hostile inputs tried: " + ", ".join(f"{k} {v}" for k, v in sorted(TRIED.items())) + \
            f" (total {sum(TRIED.values())})"
        if reporter:
            reporter.write_line(line)
        if os.environ.get("HOSTILE_COUNTS"):
            Path(os.environ["HOSTILE_COUNTS"]).write_text(json.dumps(dict(TRIED)))


# --- shared inputs --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):  # noqa: F811 - the fixture imported above
    """A 2-step run with a checkpoint at every step (read-only: tests damage copies)."""
    root, base = prepared
    run = tmp_path_factory.mktemp("hostile-run")
    cfg = {**base, "output_dir": str(run / "run"), "train": {**base["train"], "steps": 2}}
    path = run / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = run_here("train", path)
    assert res.code == 0, res.err
    return run / "run", cfg


def write_cfg(folder: Path, cfg: dict, name: str = "c.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def with_keys(cfg: dict, **changes) -> dict:
    """A copy of `cfg` with "section.key" (or "key") set."""
    out = json.loads(json.dumps(cfg))
    for dotted, value in changes.items():
        *path, key = dotted.replace("__", ".").split(".")
        where = out
        for part in path:  # a section inside a section (train.ema, train.output_preservation) may be null: made one
            where[part] = where[part] if isinstance(where.get(part), dict) else {}
            where = where[part]
        where[key] = value
    return out


def st_file(path: Path, header: dict | bytes, data: bytes = b"", length: int | None = None) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


# --- safetensors headers ----------------------------------------------------------------------------------------

_ODD = st.one_of(st.integers(-5, 5), st.integers(2**62, 2**65), st.floats(allow_nan=True), st.text(max_size=3),
                 st.none(), st.booleans(), st.lists(st.integers(0, 3), max_size=2))


@st.composite
def headers(draw) -> tuple[bytes, bytes]:
    """(header JSON, data): a sound layout of 0-3 tensors, then (usually) one damage to it."""
    tensors, offset, data = {}, 0, b""
    for i in range(draw(st.integers(0, 3))):
        dtype = draw(st.sampled_from(sorted(DTYPE_BITS)))
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        bits = math.prod(shape) * DTYPE_BITS[dtype]
        if bits % 8:
            shape, bits = [8], 8 * DTYPE_BITS[dtype]
        n = bits // 8
        tensors[f"t{i}"] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset, data = offset + n, data + bytes(draw(st.binary(min_size=n, max_size=n)))
    doc: dict = dict(tensors)
    if draw(st.booleans()):
        doc["__metadata__"] = {"config": json.dumps({"transformer": {}}), "step": "1"}
    damage = draw(st.sampled_from(["none", "dtype", "shape", "offsets", "entry", "metadata", "truncate", "extend",
                                   "deep", "bytes"]))
    names = list(tensors)
    if damage == "dtype" and names:
        doc[draw(st.sampled_from(names))]["dtype"] = draw(st.one_of(st.text(max_size=6), _ODD))
    elif damage == "shape" and names:
        doc[draw(st.sampled_from(names))]["shape"] = draw(st.one_of(_ODD, st.lists(_ODD, max_size=4)))
    elif damage == "offsets" and names:
        doc[draw(st.sampled_from(names))]["data_offsets"] = draw(st.one_of(_ODD, st.lists(_ODD, max_size=3)))
    elif damage == "entry":
        doc[draw(st.text(max_size=8))] = draw(st.one_of(_ODD, st.dictionaries(st.text(max_size=5), _ODD, max_size=3)))
    elif damage == "metadata":
        doc["__metadata__"] = draw(st.one_of(_ODD, st.dictionaries(st.text(max_size=5), _ODD, max_size=3)))
    elif damage == "truncate" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "extend":
        data += draw(st.binary(min_size=1, max_size=16))
    raw = json.dumps(doc).encode()
    if damage == "deep":
        raw = b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}"
    elif damage == "bytes":
        raw = draw(st.binary(min_size=2, max_size=64))
    return raw, data


def _library_opens(path: Path) -> bool:
    try:
        with safe_open(str(path), framework="pt") as f:
            list(f.keys())
    except Exception:  # noqa: BLE001 - any refusal of the library's counts
        return False
    return True


@budget(sample=40, full=600)
def test_safetensors_headers_are_checked_like_the_library_and_never_crash(examples, tmp_path):
    """Our header reader accepts exactly the files the safetensors library opens, every tensor of an accepted file
    reads through `open_safetensors` (or is one UserError), and `inspect` / `lora inspect` end well on all."""

    @examples_settings(examples)
    @given(headers())
    def check(header_and_data):
        raw, data = header_and_data
        TRIED["safetensors headers"] += 1
        with tempfile.TemporaryDirectory(dir=tmp_path) as d:
            path = st_file(Path(d) / "x.safetensors", raw, data)
            try:
                read_header(path)
                ours = True
            except NotSafetensors:
                ours = False
            assert ours == _library_opens(path), raw[:300]
            if ours:
                try:
                    with open_safetensors(path, "file", "fix it") as f:
                        for k in f.keys():  # noqa: SIM118 - safe_open is no dict
                            f.get_tensor(k)
                except UserError:
                    pass  # e.g. an F6 dtype torch cannot hold: one sentence
            with files_kept(Path(d)):
                for args in (("inspect", path), ("lora", "inspect", path)):
                    assert_ended_well(run_here(*args))

    check()


# --- LoRA files -------------------------------------------------------------------------------------------------

_LORA_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "I8": torch.int8}


@st.composite
def loras(draw, targets: list[tuple[str, int, int]]) -> dict[str, torch.Tensor]:
    """A LoRA state dict for some of `targets` (stem, out, in), with odd ranks, shapes, alphas, dtypes and values."""
    out = {}
    for stem, n_out, n_in in draw(st.lists(st.sampled_from(targets), min_size=1, max_size=3, unique=True)):
        rank = draw(st.integers(1, 4))
        dtype = _LORA_DTYPES[draw(st.sampled_from(sorted(_LORA_DTYPES)))]
        shapes = draw(st.sampled_from(["good", "vector", "scalar", "3d", "mismatch", "transposed", "no_up"]))
        down, up = [rank, n_in], [n_out, rank]
        if shapes == "vector":
            down, up = [n_in], [n_out]
        elif shapes == "scalar":
            down, up = [], []
        elif shapes == "3d":
            down = [rank, n_in, 1]
        elif shapes == "mismatch":
            up = [n_out, rank + 1]
        elif shapes == "transposed":
            down, up = [n_in, rank], [rank, n_out]
        fill = draw(st.sampled_from([0.01, float("nan"), float("inf"), 0.0]))
        layout = draw(st.sampled_from(["comfy", "peft", "kohya"]))
        prefix = {"comfy": f"diffusion_model.{stem}", "peft": f"base_model.model.{stem}",
                  "kohya": "lora_unet_" + stem.replace(".", "_")}[layout]
        a, b = ((".lora_A.weight", ".lora_B.weight") if layout != "kohya" else (".lora_down.weight", ".lora_up.weight"))
        out[prefix + a] = torch.full(down, fill).to(dtype)
        if shapes != "no_up":
            out[prefix + b] = torch.full(up, fill).to(dtype)
        alpha = draw(st.sampled_from(["none", "scalar", "vector", "nan"]))
        if alpha != "none":
            value = float("nan") if alpha == "nan" else float(rank)
            out[prefix + ".alpha"] = torch.full([2] if alpha == "vector" else [], value)
    return out


@pytest.fixture(scope="module")
def tiny_targets(tiny_checkpoint) -> list[tuple[str, int, int]]:
    header = read_header(tiny_checkpoint("dev"))
    prefix = "model.diffusion_model."
    return [(k[len(prefix):-len(".weight")], *v.shape) for k, v in sorted(header.tensors.items())
            if k.startswith(prefix + "transformer_blocks.0.") and k.endswith(".weight") and len(v.shape) == 2][:12]


@budget(sample=8, full=200)
def test_odd_loras_end_well_in_every_lora_tool(examples, tmp_path, tiny_checkpoint, tiny_targets):
    base = tiny_checkpoint("dev")

    @examples_settings(examples)
    @given(loras(tiny_targets), st.sampled_from(["inspect", "check", "convert", "merge", "mix", "resize", "ema"]))
    def check(tensors, tool):
        TRIED["LoRA files"] += 1
        with tempfile.TemporaryDirectory(dir=tmp_path) as d:
            lora, twin = Path(d) / "odd.safetensors", Path(d) / "odd_copy.safetensors"
            save_file(tensors, str(lora))
            save_file(tensors, str(twin))
            out = Path(d) / "out.safetensors"
            with files_kept(Path(d), base, writes=(out,)):
                args = {"inspect": ("lora", "inspect", lora), "check": ("lora", "check", lora, "--base", base),
                        "convert": ("lora", "convert", lora, "--to", "kohya", "-o", out),
                        "merge": ("lora", "merge", lora, "--base", base, "-o", out),
                        "mix": ("lora", "mix", "--video", lora, "--audio", lora, "-o", out),
                        "resize": ("lora", "resize", lora, "--rank", "1", "-o", out),
                        "ema": ("lora", "ema", lora, twin, "-o", out)}[tool]
                # `lora check` exits 1 for findings (its documented contract), with its report, not a crash.
                assert_ended_well(run_here(*args), (0, 1, 2) if tool == "check" else (0, 2))

    check()


# --- configs ----------------------------------------------------------------------------------------------------

_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=12),
                     st.sampled_from(["[/]", "[bold]x", "~", "..", "/dev/null", "-1", ".nan", "1e400"]))
_DOCS = st.recursive(_SCALARS, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                      st.dictionaries(st.text(max_size=8), kids, max_size=3)),
                     max_leaves=12)


def _schema_keys() -> list[str]:
    from ltx_lora.config import Config

    def section(annotation):  # a section's class, also of one that is off when absent (X | None)
        return next((a for a in (annotation, *typing.get_args(annotation)) if hasattr(a, "model_fields")), None)

    keys = []
    for name, field in Config.model_fields.items():
        sub = getattr(field.annotation, "model_fields", None) and field.annotation
        for k, f in (sub.model_fields.items() if sub else []):
            inner = section(f.annotation)
            keys += [f"{name}.{k}"] + ([f"{name}.{k}.{kk}" for kk in inner.model_fields] if inner else [])
        keys += [] if sub else [name]
    return keys


@st.composite
def configs(draw, base: dict) -> bytes:
    """Config file bytes: random bytes, a random YAML document, a deep one, or the valid base config with one to
    three keys of the schema set to random values."""
    kind = draw(st.sampled_from(["bytes", "document", "deep", "keys", "keys", "keys"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "document":
        return yaml.safe_dump(draw(_DOCS), allow_unicode=True).encode("utf-8", "surrogatepass")
    if kind == "deep":
        opener = draw(st.sampled_from([b"[", b"{a: "]))
        return b"x: " + opener * 3000 + b"1" + (b"]" if opener == b"[" else b"}") * 3000
    changes = {k: draw(_DOCS) for k in draw(st.lists(st.sampled_from(_schema_keys()), min_size=1, max_size=3))}
    return yaml.safe_dump(with_keys(base, **changes), allow_unicode=True).encode("utf-8", "surrogatepass")


def _doctor_ended_well(res: CliResult) -> None:
    """doctor exits 1 when a check FAILs (its contract), with FAIL lines; never a crash."""
    assert_ended_well(res, (0, 1, 2))
    if res.code == 1:
        assert "FAIL" in res.out, res.out[-2000:]


@budget(sample=15, full=300)
def test_hostile_configs_end_well(examples, tmp_path, prepared):  # noqa: F811
    _, base = prepared

    @examples_settings(examples)
    @given(configs(base))
    def check(raw):
        TRIED["configs"] += 1
        with tempfile.TemporaryDirectory(dir=tmp_path) as d:
            path = Path(d) / "c.yaml"
            path.write_bytes(raw)
            with files_kept(Path(d)):
                _doctor_ended_well(run_here("doctor", "--config", path))

    check()


_OFFICIAL_KEYS = {
    "model": ["model_path", "text_encoder_path", "training_mode", "load_checkpoint"],
    "lora": ["rank", "alpha", "dropout", "target_modules"],
    "training_strategy": ["name", "with_audio", "first_frame_conditioning_p", "video", "audio"],
    "optimization": ["learning_rate", "steps", "batch_size", "gradient_accumulation_steps", "max_grad_norm",
                     "optimizer_type", "scheduler_type", "enable_gradient_checkpointing"],
    "acceleration": ["mixed_precision_mode", "quantization", "load_text_encoder_in_8bit"],
    "data": ["preprocessed_data_root"],
    "validation": ["prompts", "samples", "negative_prompt", "video_dims", "seed", "inference_steps", "interval",
                   "stg_blocks", "frame_rate", "guidance_scale", "video_cfg_scale", "generate_audio"],
    "checkpoints": ["interval", "keep_last_n", "precision"],
    "flow_matching": ["timestep_sampling_mode", "timestep_sampling_params"],
    "wandb": ["enabled", "project"], "hub": ["push_to_hub"],
}


@st.composite
def official_configs(draw, base: dict) -> dict:
    """An official-trainer config: real sections and keys, random values (of any type) for some of them."""
    doc: dict = {"model": {"model_path": base["model"]["checkpoint"]},
                 "optimization": {"learning_rate": 1e-4, "steps": 10}, "output_dir": "out"}
    for section in draw(st.lists(st.sampled_from(sorted(_OFFICIAL_KEYS)), min_size=1, max_size=4, unique=True)):
        if draw(st.integers(0, 5)) == 0:
            doc[section] = draw(_SCALARS)  # a section that is not a mapping
            continue
        keys = draw(st.lists(st.sampled_from(_OFFICIAL_KEYS[section]), max_size=4, unique=True))
        doc.setdefault(section, {})
        if isinstance(doc[section], dict):
            doc[section].update({k: draw(_DOCS) for k in keys})
    for key in draw(st.lists(st.sampled_from(["seed", "output_dir"]), max_size=2, unique=True)):
        doc[key] = draw(_DOCS)
    return doc


@budget(sample=10, full=200)
def test_hostile_official_configs_end_well(examples, tmp_path, prepared):  # noqa: F811
    _, base = prepared

    @examples_settings(examples)
    @given(official_configs(base))
    def check(doc):
        TRIED["official configs"] += 1
        with tempfile.TemporaryDirectory(dir=tmp_path) as d:
            path = write_cfg(Path(d), doc)
            with files_kept(Path(d)):
                _doctor_ended_well(run_here("doctor", "--config", path))

    check()


# --- dataset files ----------------------------------------------------------------------------------------------

_COLUMNS = ["caption", "video", "media_path", "loss_weight", "repeats", "loss_mask", "audio_loss_ranges", "fps", "width",
            "frames", "bucket", "problems", "content_hash", "odd column [/]"]


@st.composite
def dataset_files(draw, clips: list[Path]) -> tuple[str, bytes]:
    """(suffix, bytes) of a dataset file: rows of real and odd values, or random bytes."""
    suffix = draw(st.sampled_from([".jsonl", ".json", ".csv"]))
    if draw(st.integers(0, 6)) == 0:
        return suffix, draw(st.binary(max_size=120))
    values = st.one_of(_SCALARS, st.sampled_from([str(c) for c in clips]), st.just("missing.mp4"),
                       st.lists(st.lists(st.floats(), max_size=3), max_size=2))
    rows = []
    for _ in range(draw(st.integers(0, 4))):
        row = {"caption": draw(st.text(max_size=20)), "video": draw(st.sampled_from([str(c) for c in clips]))}
        for col in draw(st.lists(st.sampled_from(_COLUMNS), max_size=4, unique=True)):
            row[col] = draw(values)
        rows.append(row)
    if suffix == ".jsonl":
        text = "\n".join(json.dumps(r) for r in rows)
    elif suffix == ".json":
        text = json.dumps(rows)
    else:
        buf = io.StringIO()
        columns = list(dict.fromkeys(k for r in rows for k in r)) or ["caption", "video"]
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (json.dumps(v) if isinstance(v, list) else v) for k, v in r.items()})
        text = buf.getvalue()
    return suffix, text.encode("utf-8", "surrogatepass")


@budget(sample=5, full=120)
def test_hostile_dataset_files_end_well_in_scan(examples, tmp_path, synthetic_clips):
    clips = sorted(p for p in synthetic_clips.iterdir() if p.is_file() and p.suffix != ".txt")

    @examples_settings(examples)
    @given(dataset_files(clips))
    def check(file):
        TRIED["dataset files (scan)"] += 1
        suffix, raw = file
        with tempfile.TemporaryDirectory(dir=tmp_path) as d:
            dataset = Path(d) / f"d{suffix}"
            dataset.write_bytes(raw)
            out = Path(d) / "out.jsonl"
            with files_kept(Path(d), synthetic_clips, writes=(out, Path(d) / "out_report.html")):
                assert_ended_well(run_here("dataset", "scan", dataset, "-o", out, "--buckets", BUCKETS))

    check()


@budget(sample=1, full=15)
def test_hostile_dataset_files_end_well_in_preprocess(examples, tmp_path, prepared, synthetic_clips):  # noqa: F811
    root, base = prepared
    clips = sorted(p for p in synthetic_clips.iterdir() if p.is_file() and p.suffix != ".txt")

    @examples_settings(examples)
    @given(dataset_files(clips))
    def check(file):
        TRIED["dataset files (preprocess)"] += 1
        suffix, raw = file
        with tempfile.TemporaryDirectory(dir=tmp_path) as d:
            dataset, cache = Path(d) / f"d{suffix}", Path(d) / "cache"
            dataset.write_bytes(raw)
            shutil.copytree(root / "cache", cache)
            cfg = write_cfg(Path(d), with_keys(base, data__dataset=str(dataset), data__cache_dir=str(cache)))
            with files_kept(Path(d), synthetic_clips, writes=(cache,)):
                # What preprocess keeps or removes in its cache is tests/test_preprocess.py's; here: the inputs.
                assert_ended_well(run_here("preprocess", cfg))

    check()


# --- media files and their names --------------------------------------------------------------------------------

_NAMES = st.one_of(st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=["Cs"]), min_size=1,
                           max_size=20),
                   st.sampled_from(["[/]x", "a b", "-rf", "Ω clip", "x" * 200, "[bold]y[/bold]", "..x"]))


@st.composite
def media_folders(draw, clips: list[Path]) -> list[tuple[str | bytes, bytes]]:
    """(name, bytes) files for a folder: real clips under odd names, damaged copies, random bytes, empty files,
    names that are not UTF-8."""
    files = []
    for _ in range(draw(st.integers(1, 4))):
        src = draw(st.sampled_from(clips)).read_bytes()
        ext = draw(st.sampled_from([".mp4", ".png", ".jpg", ".wav", ".mov", ".webm"]))
        damage = draw(st.sampled_from(["none", "truncate", "flip", "random", "empty"]))
        data = {"none": src, "truncate": src[: draw(st.integers(0, len(src)))], "random": draw(st.binary(max_size=300)),
                "empty": b""}.get(damage)
        if data is None:  # flip: one byte changed
            i = draw(st.integers(0, len(src) - 1))
            data = src[:i] + bytes([src[i] ^ 0xFF]) + src[i + 1:]
        name: str | bytes = draw(_NAMES).replace("/", "_").strip(". ") or "clip"
        if draw(st.integers(0, 8)) == 0:
            name = b"bad\xff\xfe" + name.encode()[:20]  # not UTF-8
        files.append((name + ext if isinstance(name, str) else name + ext.encode(), data))
    return files


@budget(sample=3, full=60)
def test_hostile_media_folders_end_well_in_scan(examples, tmp_path, synthetic_clips):
    clips = sorted(p for p in synthetic_clips.iterdir() if p.is_file() and p.suffix != ".txt")

    @examples_settings(examples)
    @given(media_folders(clips))
    def check(files):
        TRIED["media folders"] += 1
        with tempfile.TemporaryDirectory(dir=tmp_path) as d:
            folder = Path(d) / "clips"
            folder.mkdir()
            for name, data in files:
                path = os.path.join(os.fsencode(folder), name if isinstance(name, bytes) else os.fsencode(name))
                with open(path, "wb") as f:
                    f.write(data)
            with files_kept(folder):
                out = Path(d) / "out.jsonl"
                res = run_here("dataset", "scan", folder, "-o", out, "--buckets", BUCKETS)
                assert_ended_well(res)
                media = [p for p in folder.iterdir() if not p.name.startswith(".") and p.suffix.lower() in MEDIA_EXTENSIONS]
                if res.code == 0:  # every media file is accounted for: used, waiting for a caption, or skipped
                    assert f"Scanned {len(media)} media file" in res.out, res.out

    check()


# --- preprocessing caches ---------------------------------------------------------------------------------------


@st.composite
def cache_damage(draw) -> tuple[str, int, object]:
    """(what, which file, detail): how one file of a cache is damaged."""
    what = draw(st.sampled_from(["truncate", "flip", "manifest", "manifest-key", "delete", "garbage", "fifo"]))
    return what, draw(st.integers(0, 10_000)), draw(st.one_of(_DOCS, st.integers(0, 10_000)))


def _damage_cache(cache: Path, damage: tuple[str, int, object]) -> None:
    what, which, detail = damage
    files = sorted(p for p in cache.rglob("*.safetensors"))
    target = files[which % len(files)]
    manifest = cache / "manifest.json"
    if what == "truncate":
        data = target.read_bytes()
        target.write_bytes(data[: (hash(str(detail)) % len(data))])
    elif what == "flip":
        data = bytearray(target.read_bytes())
        data[which % len(data)] ^= 0xFF
        target.write_bytes(bytes(data))
    elif what == "manifest":
        manifest.write_text(json.dumps(detail))
    elif what == "manifest-key":
        doc = json.loads(manifest.read_text())
        if doc["items"] and which % 2:
            key = sorted(doc["items"][0])[which % len(doc["items"][0])]
            doc["items"][0][key] = detail
        else:
            doc[sorted(doc)[which % len(doc)]] = detail
        manifest.write_text(json.dumps(doc))
    elif what == "delete":
        target.unlink()
    elif what == "garbage":
        target.write_bytes(b"garbage" * (1 + which % 50))
    else:
        target.unlink()
        os.mkfifo(target)


@budget(sample=2, full=40)
def test_damaged_caches_end_well_in_train(examples, tmp_path, prepared):  # noqa: F811
    """A damaged cache is named in one sentence (also when found after the model has loaded); training never
    writes into the cache."""
    root, base = prepared

    @examples_settings(examples)
    @given(cache_damage())
    def check(damage):
        TRIED["caches"] += 1
        with tempfile.TemporaryDirectory(dir=tmp_path) as d:
            cache = Path(d) / "cache"
            shutil.copytree(root / "cache", cache)
            _damage_cache(cache, damage)
            cfg = write_cfg(Path(d), with_keys(base, data__cache_dir=str(cache), output_dir=str(Path(d) / "out")))
            with files_kept(cache, Path(base["model"]["checkpoint"])):
                assert_ended_well(run_here("train", cfg, "--max-steps", "1"))

    check()


# --- training checkpoints ---------------------------------------------------------------------------------------


@st.composite
def checkpoint_damage(draw) -> tuple[str, int, object]:
    what = draw(st.sampled_from(["truncate", "flip", "metadata", "stray", "no-lora", "garbage"]))
    return what, draw(st.integers(0, 10_000)), draw(st.one_of(_DOCS, st.integers(0, 10_000)))


def _damage_run(run: Path, damage: tuple[str, int, object]) -> Path | None:
    """Damage the run's checkpoints; returns the checkpoint folder damaged (None for a stray folder)."""
    what, which, detail = damage
    steps = sorted((run / "checkpoints").glob("step_*"))
    ckpt = steps[which % len(steps)]
    state = ckpt / "state.safetensors"
    if what == "truncate":
        data = state.read_bytes()
        state.write_bytes(data[: hash(str(detail)) % len(data)])
    elif what == "flip":
        data = bytearray(state.read_bytes())
        data[which % len(data)] ^= 0xFF
        state.write_bytes(bytes(data))
    elif what == "metadata":
        with safe_open(str(state), "pt") as f:
            meta = f.metadata()
        key = sorted(meta)[which % len(meta)]
        meta[key] = detail if isinstance(detail, str) else json.dumps(detail)
        save_file(load_file(str(state)), str(state), metadata=meta)
    elif what == "stray":
        name = ["step_abc", "step_", "step_-1", "step_1e3", "step_000001.bak", "notes"][which % 6]
        shutil.copytree(ckpt, run / "checkpoints" / name)
        return None
    elif what == "no-lora":
        for lora in ckpt.glob("*.safetensors"):
            if lora.name != "state.safetensors":
                lora.unlink()
    else:
        state.write_bytes(b"garbage" * (1 + which % 50))
    return ckpt


@budget(sample=2, full=40)
def test_damaged_checkpoints_are_skipped_or_named(examples, tmp_path, trained, prepared):  # noqa: F811
    """--resume skips a damaged checkpoint with a note naming it (or refuses in one sentence); the checkpoints it
    does not retrain, and the user's stray folders, stay byte-identical."""
    run, cfg = trained

    @examples_settings(examples)
    @given(checkpoint_damage())
    def check(damage):
        TRIED["training checkpoints"] += 1
        with tempfile.TemporaryDirectory(dir=tmp_path) as d:
            copy = Path(d) / "run"
            shutil.copytree(run, copy)
            damaged = _damage_run(copy, damage)
            path = write_cfg(Path(d), with_keys(cfg, output_dir=str(copy)))
            keep = [p for p in (copy / "checkpoints").iterdir() if p.name != "step_000002" and p != damaged]
            with files_kept(*keep):
                res = run_here("train", path, "--resume", "--max-steps", "3")
                assert_ended_well(res)
                if damaged is not None and res.code == 0 and "skipped the damaged checkpoint" in res.err:
                    assert str(damaged) in res.err

    check()


# --- explicit cases: one per kind the hostile review found ---------------------------------------------------------


def _official(tmp: Path, text: str) -> list:
    return ["train", _raw(tmp, text.encode())]


def _raw(tmp: Path, data: bytes, name: str = "c.yaml") -> Path:
    (tmp / name).write_bytes(data)
    return tmp / name


def _tensor_header(tmp: Path, entries: dict, data_len: int, name: str = "x.safetensors") -> Path:
    return st_file(tmp / name, entries, b"\0" * data_len)


def _lora_header(shape_a, shape_b, alpha_shape=None) -> tuple[dict, int]:
    doc, off = {}, 0
    parts = [("lora_A", shape_a), ("lora_B", shape_b)] + ([("alpha", alpha_shape)] if alpha_shape is not None else [])
    for key, shape in parts:
        n = 4 * math.prod(shape)
        name = f"diffusion_model.transformer_blocks.0.attn1.to_q.{key}" + (".weight" if key != "alpha" else "")
        doc[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + n]}
        off += n
    return doc, off


EXPLICIT = {
    # configs
    "config not UTF-8": (lambda t, e: ["train", _raw(t, b"output_dir: \xff\xfe\n")], "not UTF-8"),
    "config binary": (lambda t, e: ["train", _raw(t, bytes(range(256)) * 2)], "not UTF-8"),
    "config with NUL": (lambda t, e: ["train", _raw(t, b"output_dir: a\x00b\n")], "NUL"),
    "YAML 10,000 deep": (lambda t, e: ["train", _raw(t, b"[" * 10000 + b"]" * 10000)], "too deeply"),
    "seed 2**70": (lambda t, e: ["train", write_cfg(t, with_keys(e["cfg"], train__seed=2**70))], "train.seed"),
    "learning_rate .nan": (lambda t, e: ["train", write_cfg(t, with_keys(e["cfg"], train__learning_rate=math.nan))],
                           "finite"),
    "validation.cfg .inf": (lambda t, e: ["train", write_cfg(t, with_keys(e["cfg"], validation__cfg=math.inf))],
                            "finite"),
    "official: lora is a number": (lambda t, e: _official(t, "optimization: {steps: 3}\nlora: 3\n"), "'lora'"),
    "official: prompts is a number": (lambda t, e: _official(t, "optimization: {steps: 3}\nvalidation: {prompts: 5}\n"),
                                      "wrong type"),
    "official: probability is text": (lambda t, e: _official(
        t, "training_strategy: {name: flexible, video: {conditions: [{type: first_frame, probability: abc}]}}\n"),
        "wrong type"),
    "official: strategy is a list": (lambda t, e: _official(t, "training_strategy: [1]\n"), "training_strategy"),
    "unknown key with markup": (lambda t, e: ["train", _raw(t, b"lora:\n  rnak[/]: 3\n")], "rnak[/]"),
    # dataset files
    "dataset JSON 10,000 deep": (lambda t, e: ["dataset", "scan", _raw(t, b"[" * 10000 + b"]" * 10000, "d.json")],
                                 "too deeply"),
    "dataset JSONL line deep": (lambda t, e: ["dataset", "scan", _raw(t, b"[" * 10000 + b"]" * 10000, "d.jsonl")],
                                "too deeply"),
    "dataset CSV inf width": (lambda t, e: ["dataset", "scan", _raw(t, b"caption,video,width\nx,a.mp4,inf\n", "d.csv")],
                              "finite"),
    "dataset NaN loss_weight": (lambda t, e: ["dataset", "scan", _raw(t, b'{"caption": "x", "video": "a.mp4", '
                                                                         b'"loss_weight": NaN}\n', "d.jsonl")],
                                "loss_weight"),
    "dataset not UTF-8": (lambda t, e: ["dataset", "scan", _raw(t, b'{"caption": "\xff", "video": "a.mp4"}\n',
                                                                 "d.jsonl")], "not UTF-8"),
    # numbers and devices on the command line
    "--target-fps nan": (lambda t, e: ["dataset", "scan", e["clips"], "-o", t / "o.jsonl", "--target-fps", "nan"],
                         "finite"),
    "--strength inf": (lambda t, e: ["lora", "verify", e["lora"], "--base", e["ckpt"], "--strength", "inf"], "finite"),
    "--device tpu": (lambda t, e: ["lora", "verify", e["lora"], "--base", e["ckpt"], "--device", "tpu"],
                     "--device tpu"),
    # outputs that are folders or under a file
    "scan -o a folder": (lambda t, e: ["dataset", "scan", e["clips"], "-o", _mkdir(t / "o.jsonl"), "--buckets",
                                       BUCKETS], "is a folder"),
    "scan -o under a file": (lambda t, e: ["dataset", "scan", e["clips"], "-o", _file(t / "f") / "o.jsonl", "--buckets",
                                           BUCKETS], "is a file"),
    "convert -o a folder": (lambda t, e: ["lora", "convert", e["lora"], "--to", "kohya", "-o", _mkdir(t / "o"),
                                          "--force"], "is a folder"),
    "merge -o under a file": (lambda t, e: ["lora", "merge", e["lora"], "--base", e["ckpt"], "-o",
                                            _file(t / "f") / "m.safetensors"], "is a file"),
    "init under a file": (lambda t, e: ["init", _file(t / "f") / "c.yaml"], "is a file"),
    "output_dir is a file": (lambda t, e: ["train", write_cfg(t, with_keys(e["cfg"], output_dir=str(_file(t / "f"))))],
                             "is a file"),
    # safetensors headers and LoRAs
    "header: shape of text": (lambda t, e: ["inspect", _tensor_header(
        t, {"a": {"dtype": "F32", "shape": ["x"], "data_offsets": [0, 4]}}, 4)], "shape"),
    "header: unknown dtype": (lambda t, e: ["lora", "inspect", _tensor_header(
        t, {"a.lora_A.weight": {"dtype": "Q9", "shape": [1], "data_offsets": [0, 4]}}, 4)], "dtype"),
    "header: offsets past the end": (lambda t, e: ["inspect", _tensor_header(
        t, {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 400]}}, 4)], "bytes"),
    "LoRA of vectors": (lambda t, e: ["inspect", _tensor_header(t, *_lora_header([2], [2]))], "shape"),
    "LoRA of 0-D tensors": (lambda t, e: ["lora", "inspect", _tensor_header(t, *_lora_header([], []))], "LoRA pair"),
    "LoRA alpha vector": (lambda t, e: ["lora", "inspect", _tensor_header(t, *_lora_header([1, 4], [4, 1], [2]))],
                          "alpha"),
    "--base a pickle": (lambda t, e: ["lora", "check", e["lora"], "--base", _raw(t, b"PK\x03\x04junk", "b.ckpt")],
                        "pickle"),
    "--base a damaged safetensors": (lambda t, e: ["lora", "merge", e["lora"], "--base", _raw(t, b"\x10" + b"\0" * 30,
                                                                                               "b.safetensors"),
                                                   "-o", t / "m.safetensors"], "checkpoint"),
}


def _mkdir(p: Path) -> Path:
    p.mkdir()
    return p


def _file(p: Path) -> Path:
    p.write_text("a file")
    return p


@pytest.fixture(scope="module")
def explicit_env(prepared, synthetic_clips, trained):  # noqa: F811
    run, _ = trained
    _, base = prepared
    return {"cfg": base, "clips": synthetic_clips, "lora": run / "lora.safetensors",
            "ckpt": Path(base["model"]["checkpoint"])}


@pytest.mark.parametrize("case", sorted(EXPLICIT))
def test_explicit_hostile_input_gets_one_sentence(case, tmp_path, explicit_env):
    TRIED["explicit cases"] += 1
    make, needle = EXPLICIT[case]
    args = make(tmp_path, explicit_env)
    with files_kept(tmp_path, explicit_env["lora"], explicit_env["ckpt"]):
        res = run_here(*args)
        assert res.code == 2, (res.code, res.err[-2000:])
        assert_ended_well(res, (2,), needle)


def test_markup_in_user_text_is_printed_as_written(tmp_path):
    """`[/]` closes a rich tag: in a path, key or value it once crashed the error printer with a traceback. The
    real CLI once, the rest in this process."""
    cfg = _raw(tmp_path, b"lora:\n  rnak[/]: 3\n", "odd[bold].yaml")
    assert_ended_well(run_cli("train", cfg), (2,), "rnak[/]", "odd[bold].yaml")
    assert_ended_well(run_here("inspect", tmp_path / "[red]missing[_red].safetensors"), (2,), "[red]missing[_red]")
    assert_ended_well(run_here("dataset", "scan", tmp_path / "[x]"), (2,), "[x]")


def test_a_fifo_as_a_path_is_named_not_waited_on(tmp_path, prepared):  # noqa: F811
    """A FIFO blocks open() until a writer comes: every command that reads a user path checks it first. The real
    CLI once (with a time limit), the rest in this process (where SIGALRM would interrupt a blocked open)."""
    _, base = prepared
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    cfg = write_cfg(tmp_path, with_keys(base, model__checkpoint=str(fifo), output_dir=str(tmp_path / "out")))
    assert_ended_well(run_cli("train", cfg, timeout=120), (2,), "not a regular file")
    for args in (("inspect", fifo), ("lora", "inspect", fifo), ("preprocess", cfg), ("validate", cfg, "--lora", fifo),
                 ("lora", "check", fifo, "--base", base["model"]["checkpoint"]), ("train", fifo)):
        assert_ended_well(run_here(*args, timeout=60), (2,), fifo.name)
    res = run_here("doctor", "--config", cfg, timeout=60)
    assert res.code == 1 and "not a regular file" in res.out, res.out  # doctor: a FAIL line, as for any bad path


def test_a_stray_step_folder_is_ignored_and_a_damaged_checkpoint_skipped_with_its_name(tmp_path, trained):
    """Also: a run folder and config whose paths hold spaces and brackets."""
    run, cfg = trained
    copy = tmp_path / "my runs [v2]" / "run one"
    shutil.copytree(run, copy)
    (copy / "checkpoints" / "step_abc").mkdir()
    shutil.copytree(copy / "checkpoints" / "step_000001", copy / "checkpoints" / "step_final")
    state = copy / "checkpoints" / "step_000002" / "state.safetensors"
    state.write_bytes(state.read_bytes()[:1000])
    with files_kept(copy / "checkpoints" / "step_000001", copy / "checkpoints" / "step_final"):
        path = write_cfg(copy.parent, with_keys(cfg, output_dir=str(copy)), "my config.yaml")
        res = run_here("train", path, "--resume", "--max-steps", "3")
        assert_ended_well(res, (0,), "skipped the damaged checkpoint", str(state.parent), "resumed from")
        assert "step_000001 at step 1" in res.err
    assert (copy / "checkpoints" / "step_abc").is_dir() and (copy / "checkpoints" / "step_000003").is_dir()
    # every checkpoint damaged: one sentence, nothing trained
    for step in ("step_000001", "step_000002", "step_000003"):
        (copy / "checkpoints" / step / "state.safetensors").write_bytes(b"garbage")
    res = run_here("train", path, "--resume", "--max-steps", "4")
    assert_ended_well(res, (2,), "none of the 3 checkpoints")


def test_a_damaged_latents_file_found_after_the_model_loaded_is_named(tmp_path, prepared):  # noqa: F811
    """The manifest is sound, so training starts and loads the model; the first batch meets the damaged file."""
    root, base = prepared
    cache = tmp_path / "cache"
    shutil.copytree(root / "cache", cache)
    for f in (cache / "latents").glob("*.safetensors"):
        f.write_bytes(f.read_bytes()[:-100])
    cfg = write_cfg(tmp_path, with_keys(base, data__cache_dir=str(cache), output_dir=str(tmp_path / "out")))
    res = run_here("train", cfg, "--max-steps", "1")
    assert_ended_well(res, (2,), "cached latents file", "is damaged", "ltx-lora preprocess")
    # preprocess re-encodes what is damaged (it does not trust a file because it exists), then training works
    assert_ended_well(run_here("preprocess", cfg), (0,))
    assert_ended_well(run_here("train", cfg, "--max-steps", "1"), (0,))


def test_a_non_utf8_file_name_is_skipped_with_its_reason_not_the_whole_scan(tmp_path, synthetic_clips):
    folder = tmp_path / "clips"
    shutil.copytree(synthetic_clips, folder)
    clip = next(folder.glob("*.mp4"))
    os.rename(clip, os.path.join(os.fsencode(folder), b"caf\xe9.mp4"))  # Latin-1, as old cameras and zips write
    res = run_here("dataset", "scan", folder, "-o", tmp_path / "d.jsonl", "--buckets", BUCKETS)
    assert_ended_well(res, (0,), "not valid UTF-8", "caf\ufffd.mp4")
    assert "1 skipped" in res.out and (tmp_path / "d.jsonl").is_file()


def _full_disk_writer(monkeypatch):
    """safetensors' writer on a full disk: part of the file is written, then the library raises its own error with
    the OS's words (as issue 20 recorded it: `SafetensorError: Error while serializing: IoError(Os { code: 28, kind:
    StorageFull, message: "No space left on device" })`), not an OSError. /dev/full would be the real thing, but
    not every sandbox fails writes to it."""
    from safetensors import SafetensorError

    def to_full_disk(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 64)
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No '
                              'space left on device" })')

    monkeypatch.setattr("safetensors.torch.save_file", to_full_disk)
    monkeypatch.setattr("ltx_lora.train.checkpointer.save_file", to_full_disk)


def test_a_full_disk_says_free_disk_space_then_resume(tmp_path, monkeypatch, trained):
    run, cfg = trained
    _full_disk_writer(monkeypatch)
    out = tmp_path / "out.safetensors"
    res = run_here("lora", "convert", run / "lora.safetensors", "--to", "kohya", "-o", out)
    assert_ended_well(res, (2,), "disk is full", "free disk space")
    assert not out.exists() and not list(tmp_path.iterdir())  # no partial file, no temp file left
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    with files_kept(copy / "checkpoints"):
        res = run_here("train", write_cfg(tmp_path, with_keys(cfg, output_dir=str(copy))), "--resume", "--max-steps", "3")
        assert res.code != 0 and "Traceback" not in res.err and "failed:" not in res.err, res.err[-2000:]
        assert "free disk space, then resume with --resume" in res.err, res.err[-2000:]
