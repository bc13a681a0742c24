"""Datasets: probing media, dataset files, resolution buckets and the `dataset scan` command's work."""
