"""Synthetic full-disk magnetograms with a matching flare catalog, for demos, tests and benchmarks."""
