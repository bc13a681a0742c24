"""Model paths: local files only, with a precise fix when a path is a Hugging Face reference, missing, or incomplete.

`check_model_path(value, role)` returns the resolved local path or raises `UserError` with one sentence that says
which file(s) of which release to download, where to put them and which config key to set.
`check_gemma_folder(dir)` checks a Gemma 3 folder without loading it and returns a `PathCheck` (OK / WARN / FAIL +
fix), the shape `ltx-lora doctor` prints.
"""

from __future__ import annotations

import json
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ltx_lora.errors import UserError

Status = Literal["OK", "WARN", "FAIL"]
Role = Literal["checkpoint", "text_encoder", "upscaler", "lora"]

# The releases our users download (file names as published in the Hugging Face repos).
LTX_REPO = "Lightricks/LTX-2.3"
LTX_CHECKPOINT = "ltx-2.3-22b-dev.safetensors"  # Dev: the one to train on (not the distilled checkpoint)
LTX_FP8_REPO = "Lightricks/LTX-2.3-fp8"
LTX_UPSCALER = "ltx-2.3-spatial-upscaler-x2-1.1.safetensors"
# The Gemma 3 12B release Lightricks names for LTX-2.3 (LTX-2's MODELS-LTX-2.3.md); google/gemma-3-12b-it and the
# guide's gemma-3-12b-pt have the same architecture and files and load as well, with other weights.
GEMMA_REPO = "google/gemma-3-12b-it-qat-q4_0-unquantized"
GEMMA_12B = {"hidden_size": 3840, "num_hidden_layers": 48}  # what LTX-2.3's text projection was trained on

# What a Gemma folder needs, and why: ltx-core finds the tokenizer by tokenizer.model and the image processor by
# preprocessor_config.json; transformers' fast tokenizer reads tokenizer.json + tokenizer_config.json (+ the
# special-tokens map); config.json gives the architecture; the weights are model*.safetensors.
GEMMA_FILES = ("config.json", "tokenizer.model", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "preprocessor_config.json")
GEMMA_INDEX = "model.safetensors.index.json"

_ROLES: dict[str, dict[str, str | None]] = {
    "checkpoint": {"key": "model.checkpoint", "what": "the LTX-2.3 checkpoint", "kind": "file"},
    "text_encoder": {"key": "model.text_encoder", "what": "the Gemma 3 text-encoder folder", "kind": "dir"},
    "upscaler": {"key": None, "what": "the LTX-2.3 spatial upscaler", "kind": "file"},
    "lora": {"key": None, "what": "the LoRA", "kind": "file"},
}

_HF_URL = re.compile(r"^(?:https?://)?(?:www\.)?(?:huggingface\.co|hf\.co)/(?P<rest>.*)$", re.IGNORECASE)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.safetensors$")


@dataclass
class PathCheck:
    """One line of `ltx-lora doctor`: same fields as doctor's Check."""

    name: str
    status: Status
    detail: str
    fix: str = ""


# ----------------------------------------------------------------------------------------------------------------
# Reading a file the user named


def require_regular_file(path: str | Path, label: str, fix: str = "point it at a file") -> Path:
    """`path` when it is a regular file (symlinks followed), else UserError naming `label`. Every user path is
    checked with this before it is opened: a FIFO, socket or device named as a model or config would block the
    command forever on its first read (`open()` of a FIFO waits for a writer)."""
    p = Path(path).expanduser()
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise UserError(f"{label} {p} does not exist: check the path.") from None
    except ValueError:  # os.stat refuses a NUL byte: no file can be named so
        raise UserError(f"{label} {str(path)!r} holds a NUL byte, which no file name can: {fix}.") from None
    except OSError as e:
        raise UserError(f"{label} {p} cannot be read ({e.strerror or e}): {fix}.") from None
    if stat.S_ISDIR(mode):
        raise UserError(f"{label} {p} is a folder, not a file: {fix}.")
    if not stat.S_ISREG(mode):
        raise UserError(f"{label} {p} is not a regular file (a pipe, socket or device, which could be waited on "
                        f"forever): {fix}.")
    return p


def read_user_text(path: str | Path, label: str, fix: str = "save it as UTF-8 text") -> str:
    """The text of a file the user wrote (config, dataset file): a regular file, UTF-8 (a leading byte-order mark
    is dropped: spreadsheets write one), no NUL bytes; anything else is one UserError naming `label`."""
    p = require_regular_file(path, label)
    data = p.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{label} {p} is not UTF-8 text ({e.reason} at byte {e.start}): {fix}.") from None
    if "\x00" in text:
        raise UserError(f"{label} {p} holds NUL bytes, so it is a binary file, not text: {fix}.")
    return text


# ----------------------------------------------------------------------------------------------------------------
# Hugging Face references


def _parse_hf(value: str) -> tuple[str, str | None] | None:
    """(repo id, file in the repo or None) when `value` points at Hugging Face, else None."""
    v = value.strip()
    m = _HF_URL.match(v)
    if m:
        rest = m.group("rest")
    elif v.lower().startswith("hf://"):
        rest = v[5:]
    else:
        return None
    parts = [p for p in rest.split("?")[0].split("/") if p]
    if parts and parts[0] in ("models", "api"):
        parts = parts[1:]
    if len(parts) < 2:
        return "/".join(parts) or "?", None
    repo, tail = "/".join(parts[:2]), parts[2:]
    if len(tail) >= 2 and tail[0] in ("blob", "resolve", "tree"):
        tail = tail[2:]  # drop blob|resolve|tree/<revision>
    return repo, ("/".join(tail) or None)


def _looks_like_repo_id(value: str, folder: Path | None = None) -> bool:
    """`Owner/Name` that is not a local path: its first component does not exist here (in `folder`, where relative
    paths start: a config file's folder; else the working directory)."""
    v = value.strip()
    root = folder if folder is not None else Path()
    if not _REPO_ID.match(v) or (root / v).exists() or Path(v).suffix in (".safetensors", ".json", ".yaml"):
        return False
    return not (root / v.split("/")[0]).exists()


def _download_sentence(role: str, repo: str, file: str | None, key: str | None) -> str:
    # A config key is set ("set model.checkpoint: PATH"); a CLI option or an unnamed path is passed.
    where = "pass" if not key else (f"pass {key}" if key.startswith("-") else f"set {key}:")
    if role == "text_encoder":
        gemma = repo if "gemma" in repo.lower() else GEMMA_REPO
        folder = f"models/{gemma.split('/')[-1]}"
        return (f"accept the Gemma licence on huggingface.co/{gemma}, download the whole repository into one folder "
                f"(config.json, model-0000N-of-0000M.safetensors with {GEMMA_INDEX}, tokenizer.model, "
                f"tokenizer.json, tokenizer_config.json, special_tokens_map.json, preprocessor_config.json), e.g. "
                f"`huggingface-cli download {gemma} --local-dir {folder}`, and {where} {folder}")
    if role == "checkpoint":
        name = file.split("/")[-1] if file and file.endswith(".safetensors") else LTX_CHECKPOINT
        src = repo if file and file.endswith(".safetensors") else LTX_REPO
        extra = "" if name != LTX_CHECKPOINT else f" (or the FP8 Dev file from {LTX_FP8_REPO} to save memory)"
        return (f"download {name} from {src}{extra}, e.g. `huggingface-cli download {src} {name} --local-dir "
                f"models`, and {where} models/{name}")
    if role == "upscaler":
        name = file.split("/")[-1] if file and file.endswith(".safetensors") else LTX_UPSCALER
        src = repo if file and file.endswith(".safetensors") else LTX_REPO
        return (f"download {name} from {src}, e.g. `huggingface-cli download {src} {name} --local-dir models`, and "
                f"{where} models/{name}")
    # lora
    if file and file.endswith(".safetensors"):
        name = file.split("/")[-1]
        return (f"download {name} from {repo}, e.g. `huggingface-cli download {repo} {file} --local-dir loras`, and "
                f"{where} loras/{file}")
    return (f"download the LoRA's .safetensors file from {repo}, e.g. `huggingface-cli download {repo} "
            f"--include '*.safetensors' --local-dir loras`, and {where} that file's local path")


# ----------------------------------------------------------------------------------------------------------------
# Public checks


def reject_remote(value: str, role: Role, label: str, key: str | None = None) -> None:
    """UserError with the download advice when `value` is a Hugging Face repo id / URL or any URL. Pass the string
    as typed: a Path() around a URL collapses its `//` (https:/huggingface.co)."""
    raw = str(value).strip()
    hf = _parse_hf(raw)
    if hf is None and _looks_like_repo_id(raw):
        hf = (raw, None)
    if hf is not None:
        repo, file = hf
        raise UserError(f"{label} is a Hugging Face reference ({raw}), but ltx-lora reads local files only: "
                        f"{_download_sentence(role, repo, file, key)}.")
    if re.match(r"^[a-z][a-z0-9+.-]*://", raw, re.IGNORECASE):
        raise UserError(f"{label} is a URL ({raw}), but ltx-lora reads local files only: download it and "
                        f"{'set ' + key + ' to' if key else 'pass'} its local path.")


def refuse_repo_id(value: str, folder: Path, key: str, role: Role) -> None:
    """UserError with the download sentence when the config value `value` of the model key `key` is a Hugging Face
    repo id (`Lightricks/LTX-2.3`) and nothing of that name is in `folder`, the config's: read as a path relative
    to it, it would only be said not to exist."""
    raw = str(value).strip()
    if role == "text_encoder" and not raw.lower().startswith("google/"):
        return  # a folder: `models/gemma-3-...` not yet downloaded reads the same; only Google's repos are sure
    if not Path(raw).expanduser().is_absolute() and _looks_like_repo_id(raw, folder):
        raise UserError(f"{key} is a Hugging Face reference ({raw}), but ltx-lora reads local files only: "
                        f"{_download_sentence(role, raw, None, key)}.")


def is_url(value: str) -> bool:
    """Whether `value` is a URL or a Hugging Face address (huggingface.co/..., hf://...), never a local path. A repo
    id (`Owner/Name`) is not one here: it may also name a local folder that is yet to be made."""
    v = str(value).strip()
    return _parse_hf(v) is not None or re.match(r"^[a-z][a-z0-9+.-]*://", v, re.IGNORECASE) is not None


def refuse_url(value: str, key: str, role: Role | None = None) -> None:
    """UserError when the config value `value` of `key` is a URL: with the download sentence for a model file
    (`role`), else the plain one. Called before the value is read as a path, which would collapse its `//`."""
    if not is_url(value):
        return
    if role is not None:
        reject_remote(value, role, key, key)
    raise UserError(f"{key} is a URL ({str(value).strip()}), but ltx-lora reads and writes local paths only: set "
                    f"{key} to a local path (download the file first if it is one to read).")


def check_model_path(value: str | Path, role: Role, key: str | None = None) -> Path:
    """The local path of a model file/folder, or UserError (one sentence) saying exactly how to get one."""
    if role not in _ROLES:
        raise ValueError(f"unknown model path role {role!r}; expected one of {sorted(_ROLES)}")
    spec = _ROLES[role]
    key = key or spec["key"]
    label = key or spec["what"][0].upper() + spec["what"][1:]
    raw = str(value).strip()
    if not raw:
        raise UserError(f"{label} is empty: {_download_sentence(role, LTX_REPO, None, key)}.")

    reject_remote(raw, role, label, key)

    path = Path(raw).expanduser()
    if not path.exists():
        where = "" if path.is_absolute() else f" (relative paths start at {Path.cwd()})"
        raise UserError(f"{label}: {path} does not exist{where}: check the path, or download {spec['what']} first.")
    path = path.resolve()

    if spec["kind"] == "dir":  # the Gemma folder
        if path.is_file():
            raise UserError(f"{label} must be the Gemma 3 folder (config.json, tokenizer.model, "
                            f"model-*.safetensors, ...), not the single file {path.name} (ComfyUI's single-file "
                            f"text encoders do not work here): {_download_sentence(role, GEMMA_REPO, None, key)}.")
        result = check_gemma_folder(path)
        if result.status == "FAIL":
            raise UserError(result.fix)
        return path

    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.safetensors"))
        hint = f" (it holds {', '.join(found[:3])})" if found else ""
        raise UserError(f"{label} must be a .safetensors file, but {path} is a folder{hint}: set it to the file "
                        f"itself.")
    if path.suffix != ".safetensors":
        raise UserError(f"{label} must be a .safetensors file, but {path.name} is not (ltx-lora never unpickles "
                        f".ckpt/.pt/.bin files): use the .safetensors release of {spec['what']}.")
    return require_regular_file(path, label, f"set it to the .safetensors file of {spec['what']}")


def _find_nested_gemma(root: Path) -> Path | None:
    """A Gemma folder one or a few levels down (e.g. a Hugging Face cache snapshot), if the user pointed above it."""
    for cfg in sorted(root.rglob("config.json"))[:50]:
        if cfg.parent != root and (cfg.parent / "tokenizer.model").exists():
            return cfg.parent
    return None


def check_gemma_folder(directory: str | Path, key: str = "model.text_encoder") -> PathCheck:
    """Is this a complete Gemma 3 folder? Lists every missing file (and shards an index names but lacks)."""
    root = Path(directory).expanduser()
    name = key
    if not root.is_dir():
        return PathCheck(name, "FAIL", f"{root} is not a folder",
                         f"{key}: {root} is not a folder: {_download_sentence('text_encoder', GEMMA_REPO, None, key)}.")

    missing = [f for f in GEMMA_FILES if not (root / f).is_file()]
    if "config.json" in missing and "tokenizer.model" in missing:
        nested = _find_nested_gemma(root)
        if nested is not None:
            return PathCheck(name, "FAIL", f"no Gemma files directly in {root}",
                             f"{key}: {root} holds the Gemma files one level down: set {key}: {nested}.")

    index = root / GEMMA_INDEX
    weights_detail = ""
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (ValueError, KeyError, TypeError):
            missing.append(f"a readable {GEMMA_INDEX}")
            shards = []
        absent = [s for s in shards if not (root / s).is_file()]
        missing += [f"{s} (named in {GEMMA_INDEX})" for s in absent]
        if shards and not absent:
            weights_detail = f"{len(shards)} weight shards"
            total = json.loads(index.read_text()).get("metadata", {}).get("total_size")
            have = sum((root / s).stat().st_size for s in shards)
            if isinstance(total, int) and have < total:
                missing.append(f"complete weight shards (only {have / 2**30:.1f} of {total / 2**30:.1f} GiB on "
                               f"disk: an interrupted download?)")
    else:
        shards = sorted(p.name for p in root.glob("model*.safetensors"))
        counts = {int(m.group(2)) for s in shards if (m := _SHARD.search(s))}
        if not shards:
            bins = sorted(p.name for p in root.glob("*.bin"))
            missing.append("the weights (model*.safetensors" + (f"; {bins[0]} is pickle and not read" if bins else "")
                           + ")")
        elif counts:
            n = max(counts)
            present = {s for s in shards if _SHARD.search(s)}
            expected = {f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)}
            missing += sorted(expected - present)
            missing.append(GEMMA_INDEX)
            weights_detail = f"{len(present)} of {n} weight shards"
        else:
            weights_detail = f"weights in {', '.join(shards)}"

    if missing:
        return PathCheck(name, "FAIL", f"incomplete Gemma folder {root}",
                         f"{key}: the Gemma folder {root} lacks {', '.join(missing)}: download the missing files "
                         f"from {GEMMA_REPO} into it (`huggingface-cli download {GEMMA_REPO} --local-dir {root}`).")

    try:
        config = json.loads((root / "config.json").read_text())
    except ValueError:
        return PathCheck(name, "FAIL", f"{root / 'config.json'} is not valid JSON",
                         f"{key}: {root / 'config.json'} is damaged: download it again from {GEMMA_REPO}.")
    if config.get("model_type") != "gemma3":
        return PathCheck(name, "FAIL", f"model_type {config.get('model_type')!r}",
                         f"{key}: {root} holds a {config.get('model_type')!r} model, but LTX-2.3 needs Gemma 3 12B: "
                         f"download {GEMMA_REPO} and set {key} to that folder.")
    text = config.get("text_config", {})
    sizes = {k: text.get(k) for k in GEMMA_12B}
    detail = f"Gemma 3, hidden {sizes['hidden_size']}, {sizes['num_hidden_layers']} layers, {weights_detail}"
    if sizes != GEMMA_12B:
        return PathCheck(name, "WARN", detail,
                         f"this is not Gemma 3 12B (hidden 3840, 48 layers), which LTX-2.3's text projection "
                         f"expects: use {GEMMA_REPO} unless this is a test model.")
    return PathCheck(name, "OK", detail)
