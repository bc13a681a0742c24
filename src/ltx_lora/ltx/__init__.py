"""The adapter to Lightricks' ltx-core: the only package that imports `ltx_core`."""
