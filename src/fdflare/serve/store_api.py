"""The parts of the forecast stage the service uses: the store, the archive, verification."""

from __future__ import annotations

from fdflare.serve._standin import (  # TEMPORARY until branch store lands
    AlreadyIssued,
    ForecastStore,
    LocalArchive,
    run_forecast_archive,
    verify_forecasts,
)

__all__ = [
    "AlreadyIssued",
    "ForecastStore",
    "LocalArchive",
    "run_forecast_archive",
    "verify_forecasts",
]
