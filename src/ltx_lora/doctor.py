"""`ltx-lora doctor`: is this machine (and this config) ready to train? One line per check: OK / WARN / FAIL + fix."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from ltx_lora.config import Config, load_config
from ltx_lora.errors import UserError

Status = Literal["OK", "WARN", "FAIL"]

# The guide's hardware table: (minimum GiB of GPU memory, tier name, what it means). What training does on this
# GPU is the memory plan (ltx_lora.runtime.memory), shown on its own line.
TIERS = [
    (70.0, "80gb", "comfortable"),
    (44.0, "48gb", "workable"),
    (30.0, "32gb", "tight"),
    (22.0, "24gb", "experimental"),
]


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


def tier_for_gib(gib: float) -> tuple[str, str] | None:
    for minimum, name, meaning in TIERS:
        if gib >= minimum:
            return name, meaning
    return None


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def check_python() -> Check:
    v = sys.version_info
    ok = v >= (3, 11)
    return Check("python", "OK" if ok else "FAIL", f"{v.major}.{v.minor}.{v.micro}",
                 "" if ok else "install Python 3.11 or newer")


def check_torch() -> list[Check]:
    out: list[Check] = []
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - report, do not crash the doctor
        return [Check("torch", "FAIL", f"cannot import: {e}", "run `bash dev.sh install`")]
    out.append(Check("torch", "OK", torch.__version__))
    ta = _version("torchaudio")
    try:
        import torchaudio  # noqa: F401 - its compiled part only loads beside the torch it was built for

        same = ta is not None and ta.split("+")[0] == torch.__version__.split("+")[0]
        out.append(Check("torchaudio", "OK" if same else "WARN", ta or "?",
                         "" if same else f"install torchaudio of the same release as torch ({torch.__version__})"))
    except Exception as e:  # noqa: BLE001
        out.append(Check("torchaudio", "FAIL", f"does not load: {str(e).splitlines()[0]}",
                         f"install torchaudio=={torch.__version__.split('+')[0]} (it must match torch)"))
    tf = _version("transformers")
    if tf is None:
        out.append(Check("transformers", "FAIL", "missing", "pip install 'transformers>=4.52,<5'"))
    else:
        major = int(tf.split(".")[0])
        out.append(Check("transformers", "OK" if major < 5 else "FAIL", tf,
                         "" if major < 5 else "ltx-core's Gemma path breaks on transformers 5: "
                                              "pip install 'transformers>=4.52,<5'"))
    lc = _version("ltx-core")
    out.append(Check("ltx-core", "OK" if lc == "1.0.0" else "FAIL" if lc is None else "WARN", lc or "missing",
                     "" if lc == "1.0.0" else "pip install ltx-core==1.0.0"))
    return out


def check_gpu() -> list[Check]:
    import torch

    if not torch.cuda.is_available():
        return [Check("gpu", "WARN", "no CUDA GPU visible",
                      "training the 22B model needs an NVIDIA GPU with 24 GB or more; the demo runs on CPU")]
    out = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        free, total = torch.cuda.mem_get_info(i)
        gib_total, gib_free = total / 2**30, free / 2**30
        tier = tier_for_gib(gib_free)
        status: Status = "OK" if tier else "FAIL"
        detail = f"cuda:{i} {props.name}, {gib_total:.0f} GiB ({gib_free:.0f} free), compute {props.major}.{props.minor}"
        if tier:
            detail += f"; memory tier {tier[0]} ({tier[1]})"
        out.append(Check("gpu", status, detail, "" if tier else "less than 22 GiB free: free the GPU or use a bigger one"))
    bf16 = torch.cuda.is_bf16_supported()
    out.append(Check("bf16", "OK" if bf16 else "FAIL", "supported" if bf16 else "not supported",
                     "" if bf16 else "bf16 needs an Ampere (RTX 30xx / A100) or newer GPU"))
    return out


def check_triton() -> Check:
    try:
        import triton

        return Check("triton", "OK", triton.__version__)
    except Exception:  # noqa: BLE001
        return Check("triton", "WARN", "not importable",
                     "torch.compile and FP8 kernels fall back to slower eager code (Linux + CUDA needed)")


def check_media() -> Check:
    try:
        import av

        missing = [c for c in ("libx264", "aac") if c not in av.codecs_available]
        if missing:
            return Check("video codecs", "WARN", f"PyAV {av.__version__} lacks {', '.join(missing)}",
                         "validation videos need H.264 + AAC; reinstall PyAV from PyPI (its wheels bundle them)")
        return Check("video codecs", "OK", f"PyAV {av.__version__} with H.264 + AAC")
    except Exception as e:  # noqa: BLE001
        return Check("video codecs", "FAIL", f"PyAV does not load: {e}", "pip install av")


def check_disk(path: Path, need_gib: float = 20.0) -> Check:
    path = path if path.exists() else Path.cwd()
    free = shutil.disk_usage(path).free / 2**30
    status: Status = "OK" if free >= need_gib else "WARN"
    return Check("disk", status, f"{free:.0f} GiB free at {path}",
                 "" if status == "OK" else f"keep at least {need_gib:.0f} GiB free for caches and checkpoints")


def run_checks(config_path: Path | None) -> list[Check]:
    checks: list[Check] = [check_python(), *check_torch()]
    steps: list[Callable[[], Check | list[Check]]] = [check_gpu, check_triton, check_media]
    for step in steps:
        try:
            result = step()
        except Exception as e:  # noqa: BLE001 - one broken probe must not hide the others
            result = Check(step.__name__.removeprefix("check_"), "FAIL", f"check crashed: {e}")
        checks += result if isinstance(result, list) else [result]
    out_dir = Path(".")
    cfg = None
    if config_path is not None:
        cfg = load_config(config_path)
        out_dir = Path(cfg.output_dir).parent
        checks += check_config_paths(cfg)
        checks += check_text_encoder_memory(cfg, _gpu_free_bytes())
        checks += check_config_packages(cfg)
        checks += check_validation_prompts(cfg)
    checks.append(check_memory_plan(cfg))
    checks.append(check_disk(out_dir))
    return checks


def check_config_paths(cfg) -> list[Check]:
    """Every model file of the config, by the checks `preprocess` and `train` run before they start
    (ltx_lora.runtime.inputs: one set of checks, headers only), so an OK here is an OK there."""
    # Imported here: the checks need torch, whose import the checks above report on instead of crashing.
    from ltx_lora.runtime.inputs import check_lora_blocks, check_lora_init, check_text_encoder, read_base

    out: list[Check] = []
    base = None
    for role, value in (("checkpoint", cfg.model.checkpoint), ("text_encoder", cfg.model.text_encoder)):
        if not value:
            out.append(Check(f"model.{role}", "FAIL", "not set", f"set model.{role} in the config to a local path"))
            continue
        try:
            if role == "checkpoint":
                base = read_base(value)
                out.append(Check(f"model.{role}", "OK", f"{value}: {base.identity.summary}"))
            else:
                check_text_encoder(value, base.path if base is not None else None)
                out.append(Check(f"model.{role}", "OK", value))
        except UserError as e:
            out.append(Check(f"model.{role}", "FAIL", value, str(e)))
    if cfg.lora.blocks is not None and base is not None:  # as train checks it
        try:
            check_lora_blocks(base, cfg.lora.blocks)
            out.append(Check("lora.blocks", "OK", f"{len(cfg.lora.blocks)} of {base.blocks} blocks"))
        except UserError as e:
            out.append(Check("lora.blocks", "FAIL", str(cfg.lora.blocks), str(e)))
    if cfg.lora.init_from and base is not None:  # as train checks it (at the config's rank: no plan made here)
        try:
            check_lora_init(cfg.lora.init_from, base, cfg.lora, cfg.lora)
            out.append(Check("lora.init_from", "OK", cfg.lora.init_from))
        except UserError as e:
            out.append(Check("lora.init_from", "FAIL", cfg.lora.init_from, str(e)))
    return out


def _gpu_free_bytes() -> int | None:
    import torch

    try:
        return torch.cuda.mem_get_info(0)[0] if torch.cuda.is_available() else None
    except RuntimeError:  # a GPU that cannot be queried: check_gpu says so
        return None


def check_text_encoder_memory(cfg: Config, free_bytes: int | None) -> list[Check]:
    """Whether Gemma can encode the captions on this GPU. `preprocess` loads it in bf16 after every clip is encoded;
    its weight files (bf16, as Google ships them) are a lower bound of what that puts on the GPU (the text projection
    and activations come on top), so weights above the free memory mean it runs out of memory there, and Gemma 3 12B
    (about 24 GB) does on a 24 GB card. None without a GPU, with 8-bit Gemma, or without the folder (checked above)."""
    from ltx_lora.ltx.text import gemma_weight_files

    folder = Path(cfg.model.text_encoder).expanduser() if cfg.model.text_encoder else None
    if free_bytes is None or cfg.memory.text_encoder_8bit or folder is None or not folder.is_dir():
        return []
    try:
        files = [f for f in gemma_weight_files(folder) if f.is_file()]
        weights, free = sum(f.stat().st_size for f in files) / 2**30, free_bytes / 2**30
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # a damaged folder: model.text_encoder's line
        return []
    if not files:  # an incomplete folder: model.text_encoder's line says what is missing
        return []
    if weights < free:
        return [Check("text encoder memory", "OK", f"Gemma's weights ({weights:.1f} GiB in bf16) are under the GPU's "
                      f"{free:.1f} GiB free (preprocess needs some more for the text projection and activations)")]
    return [Check("text encoder memory", "WARN", f"Gemma's weights alone ({weights:.1f} GiB in bf16) exceed the "
                  f"GPU's {free:.1f} GiB free: preprocess would run out of memory encoding the captions",
                  "set memory.text_encoder_8bit: true (about half the memory; pip install 'ltx-lora[lowvram]'), or "
                  "preprocess on a GPU with more memory")]


# Settings that need a package ltx-lora does not install: (key, is it set, module, install command).
OPTIONAL_PACKAGES = [
    ("train.optimizer", lambda cfg: cfg.train.optimizer.value == "adamw8bit", "bitsandbytes",
     "pip install bitsandbytes (or pip install 'ltx-lora[lowvram]')", "train.optimizer: adamw"),
    ("memory.text_encoder_8bit", lambda cfg: cfg.memory.text_encoder_8bit, "bitsandbytes",
     "pip install bitsandbytes (or pip install 'ltx-lora[lowvram]')", "memory.text_encoder_8bit: false"),
    ("logging.wandb", lambda cfg: cfg.logging.wandb, "wandb", "pip install wandb (or pip install 'ltx-lora[wandb]')",
     "logging.wandb: false"),
]


def check_config_packages(cfg: Config) -> list[Check]:
    """For each setting of the config that needs an optional package: OK with its version when it imports, else a
    FAIL saying how to install it (none when no such setting is used). The package is really imported: an installed
    bitsandbytes whose native library does not load is no use either."""
    out: list[Check] = []
    for key, used, module, install, off in OPTIONAL_PACKAGES:
        if not used(cfg):
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError:
            out.append(Check(key, "FAIL", f"{key} needs {module}, which is not installed", f"{install}, or set {off}"))
        except Exception as e:  # noqa: BLE001 - an installed package that fails to import: say how
            out.append(Check(key, "FAIL", f"{key} needs {module}, which is installed but cannot be imported "
                             f"({type(e).__name__}: {e})", f"reinstall it ({install}), or set {off}"))
        else:
            out.append(Check(key, "OK", f"{module} {getattr(mod, '__version__', '')} imports".replace("  ", " ")))
    return out


def check_validation_prompts(cfg: Config) -> list[Check]:
    """validation.prompts against the config's task, by the check `train` and `validate` run before anything loads
    (the inputs each prompt must give, their files): an audio-to-video task's plain prompts FAIL here, before
    preprocessing, not when training starts. None without prompts (no validation)."""
    if not cfg.validation.prompts:
        return []
    # Imported here: the checks need torch, whose import the checks above report on instead of crashing.
    from ltx_lora.runtime.base_file import BaseFile
    from ltx_lora.runtime.run import resolve_sampling
    from ltx_lora.sample.validate import check_prompts, check_stg_blocks
    from ltx_lora.task import resolve_task, task_name

    settings = resolve_sampling(cfg.validation)
    try:
        check_prompts(cfg, settings, resolve_task(cfg.task))
    except UserError as e:
        return [Check("validation.prompts", "FAIL", str(e))]
    try:  # the STG blocks against the checkpoint's (model.checkpoint's own line says when it cannot be read)
        base = BaseFile.read(cfg.model.checkpoint) if cfg.model.checkpoint else None
    except UserError:
        base = None
    if base is not None:
        try:
            check_stg_blocks(base, settings.stg_blocks)
        except UserError as e:
            return [Check("validation.stg_blocks", "FAIL", str(e))]
    n = len(cfg.validation.prompts)
    return [Check("validation.prompts", "OK", f"{n} prompt{'' if n == 1 else 's'} the task "
                  f"{task_name(cfg.task)} can sample")]


def check_memory_plan(cfg=None) -> Check:
    """The memory plan `ltx-lora train` would use with this config (or the defaults) on this machine."""
    # Imported here: the plan needs torch, whose import the checks above report on instead of crashing.
    from ltx_lora.runtime.memory import plan_for_config

    try:
        plan = plan_for_config(cfg or Config())
    except UserError as e:
        return Check("memory plan", "FAIL", str(e))
    detail = plan.describe().removeprefix("memory plan: ").replace("\n  note: ", "; note: ")
    if cfg is None:
        detail += " (default config: pass --config for yours)"
    return Check("memory plan", "OK" if plan.fits else "WARN", detail,
                 "" if plan.fits else "use smaller buckets or a GPU with more memory")
