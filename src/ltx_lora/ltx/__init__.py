"""The adapter: every ltx-core call of ltx-lora lives in this package."""
