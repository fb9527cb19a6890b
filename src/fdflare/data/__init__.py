"""Data: label tables, image sources and the study's augmented dataset (torch)."""
