"""Verify a forecast history against a flare catalog, beside persistence and climatology.

Each forecast of ``fdflare forecast --history`` is labelled as the study labels an image:
1 when a flare >= M1.0 starts in ``(window_start, window_start + 24 h)``. A forecast whose
window ends after the catalog's last flare (or ``until``) cannot be verified yet: it is
counted as pending and left out, never scored as a miss.

On exactly the verified forecasts, two references are scored with the model:

* **persistence**: yes iff a flare >= M1.0 started in the 24 h up to the window start;
* **climatology**: one rate for every forecast, known in advance: the given rate (e.g. the
  training rate of the models), else the share of hourly 24 h windows with a flare >= M1.0
  in the catalog's year before the first verified window, else (when the catalog holds
  less than 30 days before it) the verified windows' own rate, which is said.

The Brier skill score is against that climatology; TSS and HSS2 are compared with
persistence, and whether the model beats each is stated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fdflare.core.errors import InputError
from fdflare.core.io import parse_probabilities, refuse_first

WINDOW = pd.Timedelta(hours=24)
PRIOR = pd.Timedelta(days=365)
MIN_PRIOR = pd.Timedelta(days=30)


@dataclass
class Verification:
    """What :func:`verify_history` found."""

    history: str
    catalog: str
    until: pd.Timestamp
    n_forecasts: int
    n_verified: int
    n_pending: int
    events: int
    climatology: float | None
    climatology_source: str
    since: pd.Timestamp | None = None
    n_before: int = 0
    scores: dict[str, Any] = field(default_factory=dict)  # kind -> Scores
    table: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "history": self.history,
            "catalog": self.catalog,
            "until": self.until.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "forecasts": self.n_forecasts,
            "verified": self.n_verified,
            "pending": self.n_pending,
            "before_catalog": self.n_before,
            "since": None if self.since is None else self.since.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "events": self.events,
            "climatology": self.climatology,
            "climatology_source": self.climatology_source,
            "scores": {k: v.to_dict() for k, v in self.scores.items()},
            "notes": self.notes,
        }


def _times(df: pd.DataFrame, column: str, path: Path) -> pd.DatetimeIndex:
    values = pd.to_datetime(df[column].str.strip(), errors="coerce", utc=True)
    refuse_first(
        values.isna().to_numpy(),
        lambda i: f"{df[column].iloc[i]!r} is not a time (YYYY-MM-DDTHH:MM:SSZ)",
        path=path,
        field=column,
    )
    return pd.DatetimeIndex(values).tz_localize(None)


def prior_climatology(
    catalog: pd.DataFrame, first: pd.Timestamp, threshold: float
) -> tuple[float | None, str]:
    """The share of hourly 24 h windows with a flare >= threshold in the year before ``first``.

    The catalog is taken to cover the time from its first flare; with less than
    :data:`MIN_PRIOR` of coverage before ``first``, ``(None, reason)``.
    """
    from fdflare.label import label_windows

    if catalog.empty:
        return None, "the catalog holds no flares"
    start = max(pd.Timestamp(catalog["start_time"].min()).ceil("h"), first - PRIOR)
    end = first - WINDOW  # windows that end before the first forecast's starts
    if end - start < MIN_PRIOR:
        return None, "the catalog holds less than 30 days before the first forecast"
    hours = pd.date_range(start, end, freq="h", inclusive="left")
    rate = float(label_windows(catalog, hours, threshold=threshold, rest=False)["target"].mean())
    return rate, f"the catalog's {len(hours)} hourly windows before {first:%Y-%m-%d}"


def verify_history(
    history: str | os.PathLike[str],
    catalog: str | os.PathLike[str],
    *,
    catalog_format: str = "auto",
    until: pd.Timestamp | None = None,
    since: pd.Timestamp | None = None,
    climatology: float | None = None,
    threshold: float = 0.5,
    mode: str = "M",
) -> Verification:
    """Label the history's forecasts from the catalog and score them with the baselines.

    Raises:
        InputError: a history or catalog that cannot be read, naming file, line and field.
    """
    from fdflare.acquire.catalog import read_catalog
    from fdflare.acquire.goes import threshold_flux
    from fdflare.analysis.baselines import persistence
    from fdflare.analysis.metrics import score_frame
    from fdflare.forecast.formats import read_history
    from fdflare.label import label_windows

    path = Path(history)
    df = read_history(path)
    dup = df["requested_time"].str.strip().duplicated().to_numpy()
    refuse_first(
        dup,
        lambda i: (
            f"a second forecast for {df['requested_time'].iloc[i]} (each requested time "
            "is verified once; `fdflare forecast --history` keeps one row per time)"
        ),
        path=path,
        field="requested_time",
    )
    starts = _times(df, "window_start", path)
    prob = parse_probabilities(df["flare_prob"], path=path).to_numpy(dtype=float)
    cat = read_catalog(catalog, fmt=catalog_format)
    flux = threshold_flux(mode)
    last = pd.Timestamp(cat["start_time"].max()) if len(cat) else None
    until = until if until is not None else last
    if until is None:
        raise InputError(
            "the catalog holds no flares: give --until to say which time it covers", path=catalog
        )
    first = pd.Timestamp(cat["start_time"].min()).floor("D") if len(cat) else None
    since = since if since is not None else first
    covered = np.ones(len(df), dtype=bool) if since is None else np.asarray(starts >= since)
    ready = np.asarray(starts + WINDOW <= until) & covered
    pending = covered & ~ready
    v = Verification(
        str(path), str(catalog), until, len(df), int(ready.sum()), int(pending.sum()), 0, None, ""
    )
    v.since, v.n_before = since, int((~covered).sum())
    if v.n_before:
        v.notes.append(
            f"{v.n_before} forecast(s) before the catalog: their window starts before "
            f"{since:%Y-%m-%dT%H:%M:%SZ}, where the catalog begins (its first flare's day, or "
            "--since); left out, not scored as quiet"
        )
    if v.n_pending:
        v.notes.append(
            f"{v.n_pending} forecast(s) pending: their window ends after {until:%Y-%m-%dT%H:%M:%SZ}, "
            "the end of the catalog (rerun with a newer catalog)"
        )
    if not v.n_verified:
        return v
    times = starts[ready]
    labels = label_windows(cat, times, threshold=flux, rest=False)
    target = labels["target"].to_numpy(dtype=np.int64)
    v.events = int(target.sum())
    if climatology is not None:
        v.climatology, v.climatology_source = climatology, "given (--climatology)"
    else:
        rate, why = prior_climatology(cat, times.min(), flux)
        if rate is None:
            rate = float(target.mean())
            why = f"the verified windows' own rate ({why}): a rate not known in advance"
        v.climatology, v.climatology_source = rate, why
    frames = {
        "model": prob[ready],
        "persistence": persistence(times, cat, threshold=flux),
        "climatology": np.full(len(times), v.climatology),
    }
    for kind, p in frames.items():
        frame = pd.DataFrame({"flare_prob": p, "target": target})
        v.scores[kind] = score_frame(frame, path=kind, threshold=threshold)
    ref = v.scores["climatology"].brier
    for s in v.scores.values():  # BSS against the climatology above, not the sample rate
        s.bss = None if not ref or s.brier is None else 1.0 - s.brier / ref
    table = df[ready].copy()
    table["target"] = target.astype(str)
    table["persistence"] = frames["persistence"].astype(int).astype(str)
    table["goes_class"] = labels["goes_class"].fillna("").astype(str).to_numpy()
    table["fl_start"] = (
        pd.Series(labels["fl_start"]).dt.strftime("%Y-%m-%dT%H:%M:%SZ").fillna("").to_numpy()
    )
    v.table = table
    return v


def format_verification(v: Verification) -> str:
    """The verification as a text table with what it means (several lines)."""
    from fdflare.core.table import fmt_number, render_table

    head = (
        f"{v.history}: {v.n_forecasts} forecast(s), {v.n_verified} verified against {v.catalog} "
        f"(up to {v.until:%Y-%m-%dT%H:%M:%SZ}), {v.n_pending} pending"
        + (f", {v.n_before} before the catalog" if v.n_before else "")
    )
    if not v.scores:
        return "\n".join([head, *[f"note: {n}" for n in v.notes], "nothing to verify yet"])
    rows = []
    for kind, s in v.scores.items():
        rows.append(
            [
                kind,
                s.n,
                s.tp,
                s.fp,
                s.tn,
                s.fn,
                *(fmt_number(x) for x in (s.tss, s.hss2, s.auc, s.brier, s.bss)),
            ]
        )
    header = ["forecast", "n", "TP", "FP", "TN", "FN", "TSS", "HSS2", "AUC", "Brier", "BSS"]
    lines = [head, render_table(header, rows)]
    lines.append(
        f"events: {v.events} of {v.n_verified} windows; climatology {fmt_number(v.climatology)} "
        f"from {v.climatology_source}; BSS is against it"
    )
    m, p = v.scores["model"], v.scores["persistence"]
    for name in ("tss", "hss2"):
        a, b = getattr(m, name), getattr(p, name)
        if a is None or b is None:
            lines.append(f"{name.upper()}: undefined for the model or persistence (see the counts)")
            continue
        verdict = "beats" if a > b else "does NOT beat"
        lines.append(
            f"{name.upper()}: the model {verdict} persistence ({fmt_number(a)} vs {fmt_number(b)})"
        )
    if m.bss is not None:
        verdict = "beats" if m.bss > 0 else "does NOT beat"
        lines.append(f"Brier: the model {verdict} climatology (BSS {fmt_number(m.bss)})")
    lines += [f"note: {n}" for n in v.notes]
    return "\n".join(lines)
