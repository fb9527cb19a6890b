"""fdflare: full-disk solar flare forecasting with deep learning.

The package is a pipeline of stages, one module each, that talk through plain files:
``download``/``catalog`` -> ``prepare`` -> ``label`` -> ``train`` -> ``predict`` ->
``evaluate``/``spatial`` -> ``reproduce``. Every stage is importable without the CLI, and
heavy optional libraries (sunpy, torch, captum) are imported only by the stages that use them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
