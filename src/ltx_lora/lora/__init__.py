"""LoRA tools: read any LTX-2.x LoRA layout, check it against a base, convert, verify and merge it.

`formats` owns the file format: it parses a file into one canonical form (ltx-core module paths), holds the rename
tables and key names of every layout, and writes every LoRA file; the other modules each do one job on that form. The facts they rely on, with sources, are in docs/lora-formats.md.
"""
