"""Validation sampling, health checks, sample media and the training report."""
