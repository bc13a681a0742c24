"""LoRA tools: read any LTX-2.x LoRA layout, check it against a base, convert, verify and merge it.

`formats` parses a file into one canonical form (ltx-core module paths) and holds the rename tables; the other
modules each do one job on that form. The facts they rely on, with sources, are in docs/lora-formats.md.
"""
