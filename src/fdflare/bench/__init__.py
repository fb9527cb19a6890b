"""Benchmarks of every stage against the study's way of doing it, in the same run.

``measure`` (the row record, timers, the machine and its measured ceilings), ``stages``
(label, prepare, loader), ``steps`` (the training steps of the study's models, one
magnetogram's prediction, the forecast service) and ``run`` (the rows by name, the run,
its table). ``fdflare bench`` is the command; docs/performance.md holds a run's table.
"""

#: The rows of ``fdflare bench``, in table order (``fdflare.bench.run.ROWS`` runs them).
ROW_NAMES = (
    "label",
    "prepare",
    "prepare_fits",
    "prepare_fits_binned",
    "loader",
    "train_alexnet",
    "train_vgg16",
    "train_resnet34",
    "predict_latency",
    "forecast_latency",
)
