"""ltx-lora: LoRA training for Lightricks' LTX-2.3 audio-video transformer."""

__version__ = "0.1.0"
