"""The one adapter to ltx-core: every ltx-core import in ltx-lora lives in this package."""
