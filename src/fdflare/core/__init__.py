"""Shared machinery of every stage: errors, crash-safe files and tables, image names."""
