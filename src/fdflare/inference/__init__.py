"""Inference: probabilities from checkpoints."""
