"""ltx-lora: LoRA training for Lightricks' LTX-2.3 audio-video transformer."""

import logging

__version__ = "0.1.0"

# bitsandbytes (imported by peft where installed, and for 8-bit AdamW / an 8-bit Gemma) warns on CPUs with
# AVX512-BF16 that the optional `kernels` package for its 4-bit CPU matmul is missing and asks the user to install
# it; ltx-lora runs no 4-bit layers. Set here, where every entry (the CLI, the bench scripts, a program using the
# trainer) passes before bitsandbytes can load.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
