"""Training: the study's recipe on Lightning, checkpoints, cross-validation."""
