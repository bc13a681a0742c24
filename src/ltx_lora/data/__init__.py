"""Datasets: probing media, dataset files, buckets, preprocessing and the cache training reads."""
