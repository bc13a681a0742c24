"""LoRA tools: inspect any LTX-2.x LoRA layout, check it against a base, convert, verify, merge, and attach it for
sampling.

The file format itself lives in `ltx_lora.files.lora_file` (one reader, one writer, the key names of every layout),
below everything that reads or writes LoRA files, the identification of model files included; each module here
does one job on its canonical form. The facts they rely on, with sources, are in docs/lora-formats.md.
"""
