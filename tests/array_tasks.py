"""Work done in child processes by tests that run tasks side by side.

Kept apart from the test modules so that a spawned child imports only this module and
what the task needs (pandas), not torch, Lightning and the test module's fixtures.
"""

from __future__ import annotations

from pathlib import Path


def write_summary_part(args: tuple[str, int, str]) -> None:
    """One array task's `cv_summary.csv` row, as `fdflare cv --folds K` writes it."""
    from fdflare.reports.cv import SUMMARY_COLUMNS, write_summary

    out, fold, model = args
    write_summary(Path(out), [dict.fromkeys(SUMMARY_COLUMNS, 0) | {"model": model, "fold": fold}])
