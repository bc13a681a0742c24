"""The base model file of a run, read once: its header, what it is, its architecture and its FP8 layers.

Before this, one `validate` command read and identified the same 46 GB file's header four times (path check,
Distilled check, STG block range, FP8 note) and answered "is the base FP8?" two ways. Every part of a run now
reads these facts from one `BaseFile`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ltx_lora.errors import UserError
from ltx_lora.files.model_files import Identification, identify_header, scaled_fp8_modules
from ltx_lora.files.safetensors_header import NotSafetensors, SafetensorsHeader, read_header
from ltx_lora.ltx.quantize import is_quantizable
from ltx_lora.ltx.text import connector_parameters
from ltx_lora.paths import check_model_path


@dataclass(frozen=True)
class BaseFile:
    path: Path
    header: SafetensorsHeader
    identity: Identification
    fp8_modules: frozenset[str]  # transformer linears stored as FP8 bytes + weight_scale

    @classmethod
    def read(cls, value: str | Path) -> BaseFile:
        """Check the path (local .safetensors file; one sentence on how to get it otherwise) and read its header."""
        path = check_model_path(value, "checkpoint")
        try:
            header = read_header(path)
        except NotSafetensors as e:
            raise UserError(f"model.checkpoint {path} is not a readable safetensors file ({e}): download it again "
                            f"(run `ltx-lora inspect {path}` to see what it is).") from None
        except OSError as e:
            raise UserError(f"cannot read {path}: {e.strerror or e}.") from None
        return cls(path, header, identify_header(path, header), frozenset(scaled_fp8_modules(header)))

    @property
    def is_fp8(self) -> bool:
        """Stored as scaled FP8 (the FP8 Dev release): the memory plan may keep its bytes, step-0 samples may be
        noise (a known FP8 issue the health check explains instead of alarming)."""
        return bool(self.fp8_modules)

    @property
    def model_version(self) -> str | None:
        """The LTX version a LoRA trained on this base is for: the file's `model_version` metadata (the 2.3
        releases carry "2.3.0"), else its identified family as "X.Y.0", else None."""
        version = self.header.metadata.get("model_version")
        if version:
            return str(version)
        return f"{self.identity.family}.0" if self.identity.family else None

    @property
    def architecture(self) -> dict[str, Any]:
        """The model config JSON a unified LTX checkpoint carries in its metadata."""
        config = self.header.config()
        if config is None:
            raise UserError(f"{self.path} has no LTX model config in its metadata, so it is not a unified LTX "
                            f"checkpoint (run `ltx-lora inspect {self.path}` to see what it is).")
        return config

    @property
    def text_connector_parameters(self) -> int | None:
        """The text connectors' parameter count the file stores (None: it stores none, e.g. a transformer-only file)."""
        return connector_parameters(self.header) or None

    @property
    def blocks(self) -> int:
        return int(self.architecture.get("transformer", {}).get("num_layers", 0))

    def fp8_coverage(self, quantizable: int) -> float:
        """Share of the `quantizable` transformer weight elements the file stores as FP8."""
        tensors = self.header.tensors
        covered = sum(tensors[f"model.diffusion_model.{m}.weight"].numel for m in self.fp8_modules
                      if is_quantizable(m))
        return covered / max(1, quantizable)
