"""Models: the registry of architectures, the networks and their weights."""
