"""Benchmarks: dataset loaders for the real layouts, metrics, the eval runner."""
