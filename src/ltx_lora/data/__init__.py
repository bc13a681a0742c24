"""Datasets: scan, probe, buckets, preprocessing cache."""
