"""The files ltx-lora reads and writes, one module per format: safetensors headers, model files (what a file is),
LoRA files (every layout), cached text features; and the one atomic write they all use. The bottom layer: it
imports nothing of ours above it.
"""
