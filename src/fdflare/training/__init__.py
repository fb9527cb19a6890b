"""Training: the study's recipe on Lightning, its configuration and checkpoints."""
