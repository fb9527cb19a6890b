"""Benchmarks of every stage against the study's way of doing it, in the same run."""
