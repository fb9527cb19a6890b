"""Verify forecasts against a flare catalog, beside persistence and climatology.

The forecasts come from a history table (``fdflare forecast --history``) or a forecast
store (``--store``, :mod:`fdflare.forecast.store`); both give the same table
(:func:`history_frame`), which :func:`verify_forecasts` scores on frames, without files.

Each forecast is labelled as the study labels an image, with its recipe's event: 1 when a
flare at or above the recipe's threshold starts in ``(window_start, window_start +
window)``. A forecast whose window ends after the catalog's last flare (or ``until``)
cannot be verified yet: it is counted as pending and left out, never scored as a miss; one
whose window starts before the catalog (its first flare's day, or ``since``) is counted and
left out too.

One forecast per window: of the forecasts of one window (the same window start, times
compared parsed, never as text), the first issued is scored, the one made before the
window began when there is one; the re-issues are counted and left out, so a forecast
re-issued after the flare never replaces the one actually made.

On exactly the verified forecasts, two references are scored with the model:

* **persistence**: yes iff a flare at or above the threshold started in the window's length
  up to the window start;
* **climatology**: one rate for every forecast, known in advance: the given rate (e.g. the
  training rate of the models), else the share of hourly windows with a flare at or above
  the threshold in the catalog's year before the first verified window, else (when the
  catalog holds less than 30 days before it) the verified windows' own rate, which is said.

The Brier skill score is against that climatology; TSS and HSS2 are compared with
persistence and with climatology's 0, and whether the model beats each is stated.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from typing import Any

import numpy as np
import pandas as pd

from fdflare.core.errors import InputError
from fdflare.core.io import parse_probabilities, refuse_first
from fdflare.core.recipe import Recipe, assumed_study

PRIOR = pd.Timedelta(days=365)
MIN_PRIOR = pd.Timedelta(days=30)
_ISO = "%Y-%m-%dT%H:%M:%SZ"


@dataclass
class Verification:
    """What :func:`verify_forecasts` found."""

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
    n_reissues: int = 0
    n_late: int = 0
    n_other_event: int = 0
    recipe: Recipe = field(default_factory=assumed_study)
    scores: dict[str, Any] = field(default_factory=dict)  # kind -> Scores
    #: the model's TSS and HSS2 minus persistence's, with a 95 % interval over days
    #: (:func:`fdflare.analysis.skill.paired_difference`)
    difference: dict[str, Any] = field(default_factory=dict)
    table: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "history": self.history,
            "catalog": self.catalog,
            "event": self.recipe.event,
            "threshold": self.recipe.threshold,
            "window_hours": self.recipe.window_hours,
            "recipe_assumed": self.recipe.assumed,
            "until": self.until.strftime(_ISO),
            "forecasts": self.n_forecasts,
            "verified": self.n_verified,
            "pending": self.n_pending,
            "before_catalog": self.n_before,
            "reissues": self.n_reissues,
            "issued_after_window_start": self.n_late,
            "other_event": self.n_other_event,
            "since": None if self.since is None else self.since.strftime(_ISO),
            "events": self.events,
            "climatology": self.climatology,
            "climatology_source": self.climatology_source,
            "scores": {k: v.to_dict() for k, v in self.scores.items()},
            "difference_vs_persistence": self.difference,
            "notes": self.notes,
        }


def _times(df: pd.DataFrame, column: str, path: str | os.PathLike[str] | None) -> pd.Series:
    """A text column of times, parsed whatever the notation (UTC, naive)."""
    from fdflare.core.timeparse import parse_utc_series

    values = parse_utc_series(df[column].astype(str))
    refuse_first(
        values.isna().to_numpy(),
        lambda i: f"{df[column].iloc[i]!r} is not a time (YYYY-MM-DDTHH:MM:SSZ)",
        path=path,
        field=column,
    )
    return values


def row_recipes(df: pd.DataFrame, path: str | os.PathLike[str] | None) -> list[Recipe]:
    """The recipe of each row of a history or store table.

    A row without recipe cells (a history of an older fdflare) is the study's, assumed.

    Raises:
        InputError: a recipe cell that does not parse (line and field named).
    """
    cache: dict[tuple[str, str, str, bool], Recipe] = {}
    out = []
    cols = [
        df[c].astype(str).tolist() if c in df else [""] * len(df)
        for c in ("threshold", "window", "recipe")
    ]
    assumed = df["recipe_assumed"].astype(str).tolist() if "recipe_assumed" in df else None
    for i, (threshold, window, text) in enumerate(zip(*cols, strict=True)):
        flag = assumed is not None and assumed[i].strip() == "1"
        key = (threshold.strip(), window.strip(), text.strip(), flag)
        if key not in cache:
            try:
                if key[2]:
                    r = dc_replace(Recipe.from_dict(json.loads(key[2])), assumed=flag)
                elif key[0] or key[1]:  # written without the whole recipe: an assumed one
                    r = Recipe.from_dict({"threshold": key[0], "window": key[1]})
                    r = dc_replace(r, assumed=True)
                else:
                    r = assumed_study()
            except (InputError, ValueError) as exc:
                why = exc.message if isinstance(exc, InputError) else str(exc)
                raise InputError(
                    f"not a recipe ({why})", path=path, line=i + 2, field="recipe"
                ) from None
            cache[key] = r
        out.append(cache[key])
    return out


def history_frame(df: pd.DataFrame, *, path: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """A history or store table with its times parsed, probabilities read and recipes made.

    Adds the columns ``_requested``, ``_issued``, ``_start``, ``_end`` (naive UTC times),
    ``_prob`` (float) and ``recipe`` (a :class:`Recipe` per row), and keeps the rest.

    Raises:
        InputError: a time, probability or recipe that does not parse (line and field).
    """
    out = df.copy()
    out["_requested"] = _times(df, "requested_time", path).to_numpy()
    out["_issued"] = _times(df, "issue_time", path).to_numpy()
    out["_start"] = _times(df, "window_start", path).to_numpy()
    out["_prob"] = parse_probabilities(df["flare_prob"], path=path).to_numpy(dtype=float)
    recipes = row_recipes(df, path)
    out["recipe"] = recipes
    out["_end"] = out["_start"] + pd.to_timedelta([r.window_delta for r in recipes])
    return out


def table_recipe(table: pd.DataFrame, path: str | os.PathLike[str] | None) -> Recipe:
    """The one event the forecasts of a :func:`history_frame` table are for.

    Raises:
        InputError: the table holds forecasts of several events (each named).
    """
    if table.empty:
        return assumed_study()
    events: dict[str, Recipe] = {}
    for r in table["recipe"]:
        events.setdefault(r.event, r)
    if len(events) > 1:
        raise InputError(
            f"the forecasts are for {len(events)} events ({'; '.join(events)}): a verification "
            "scores one event; split the history by its threshold and window columns",
            path=path,
        )
    stated = [r for r in table["recipe"] if not r.assumed]
    return stated[0] if stated else next(iter(events.values()))


def _persistence(
    times: pd.DatetimeIndex, catalog: pd.DataFrame, *, threshold: float, window: pd.Timedelta
) -> np.ndarray:
    """1.0 where a flare at or above ``threshold`` started in ``(t - window, t]``, else 0.0."""
    strong = catalog.loc[catalog["flux"].to_numpy(dtype=float) >= threshold, "start_time"]
    starts = np.sort(pd.DatetimeIndex(strong).as_unit("ns").asi8)
    t = pd.DatetimeIndex(times).as_unit("ns").asi8
    lo = np.searchsorted(starts, t - window.value, side="right")
    hi = np.searchsorted(starts, t, side="right")
    return (hi > lo).astype(float)


def prior_climatology(
    catalog: pd.DataFrame,
    first: pd.Timestamp,
    threshold: float,
    window: pd.Timedelta | None = None,
) -> tuple[float | None, str]:
    """The share of hourly windows with a flare >= threshold in the year before ``first``.

    The catalog is taken to cover the time from its first flare; with less than
    :data:`MIN_PRIOR` of coverage before ``first``, ``(None, reason)``. ``window`` is the
    recipe's window (default the study's).
    """
    from fdflare.label import label_windows

    window = window if window is not None else assumed_study().window_delta
    if catalog.empty:
        return None, "the catalog holds no flares"
    start = max(pd.Timestamp(catalog["start_time"].min()).ceil("h"), first - PRIOR)
    end = first - window  # windows that end before the first forecast's starts
    if end - start < MIN_PRIOR:
        return None, "the catalog holds less than 30 days before the first forecast"
    hours = pd.date_range(start, end, freq="h", inclusive="left")
    labels = label_windows(catalog, hours, window=window, threshold=threshold, rest=False)
    rate = float(labels["target"].mean())
    return rate, f"the catalog's {len(hours)} hourly windows before {first:%Y-%m-%d}"


#: how long after its requested time a forecast may be issued and still count as made then
BACKFILL_GRACE = pd.Timedelta(hours=1)


def _first_per_window(table: pd.DataFrame) -> tuple[np.ndarray, int]:
    """A mask of the forecast scored for each window (the first issued), and the re-issues."""
    order = table.sort_values(["_start", "_issued"], kind="stable").index
    first = ~table.loc[order, "_start"].duplicated(keep="first")
    keep = pd.Series(False, index=table.index)
    keep[first.index[first.to_numpy()]] = True
    return keep.to_numpy(), int((~keep).sum())


def verify_forecasts(
    table: pd.DataFrame,
    catalog: pd.DataFrame,
    *,
    until: pd.Timestamp | None,
    recipe: Recipe,
    climatology: float | None = None,
    since: pd.Timestamp | None = None,
    threshold: float = 0.5,
    path: str | os.PathLike[str] | None = None,
    history_name: str = "forecasts",
    catalog_name: str = "catalog",
) -> Verification:
    """Label a table of forecasts from a catalog and score them with the baselines.

    Args:
        table: a history or store table (:data:`~fdflare.forecast.formats.HISTORY_COLUMNS`,
            text), or one that :func:`history_frame` already read.
        catalog: flares as :func:`~fdflare.acquire.catalog.read_catalog` gives them.
        until: the time the catalog is complete to (default: its last flare's start).
        recipe: the event to verify; forecasts of another event are counted, left out.
        climatology: the reference rate of the Brier skill score.
        since: the time the catalog is complete from (default: its first flare's day).
        threshold: P >= threshold is a yes forecast.
        path: the file the table came from, for messages.
        history_name: what to call the forecasts' source in the report.
        catalog_name: what to call the catalog in the report.

    Raises:
        InputError: a time, probability or recipe that does not parse; no catalog end.
    """
    from fdflare.acquire.goes import class_flux
    from fdflare.analysis.metrics import score_frame
    from fdflare.analysis.skill import paired_difference
    from fdflare.label import label_windows

    df = table if "_start" in table else history_frame(table, path=path)
    df = df.reset_index(drop=True)
    window = recipe.window_delta
    flux = float(class_flux([recipe.threshold], field="threshold")[0])
    same = np.array([r.same_event(recipe) for r in df["recipe"]], dtype=bool)
    last = pd.Timestamp(catalog["start_time"].max()) if len(catalog) else None
    until = until if until is not None else last
    if until is None:
        raise InputError(
            "the catalog holds no flares: give --end to say which time it covers",
            path=catalog_name,
        )
    first = pd.Timestamp(catalog["start_time"].min()).floor("D") if len(catalog) else None
    since = since if since is not None else first
    starts = pd.DatetimeIndex(df["_start"])
    chosen, reissues = _first_per_window(df[same]) if same.any() else (np.array([], bool), 0)
    pick = np.zeros(len(df), dtype=bool)
    pick[np.flatnonzero(same)[chosen]] = True
    covered = pick & (True if since is None else np.asarray(starts >= since))
    ready = covered & np.asarray(starts + window <= until)
    pending = covered & ~ready
    before = pick & ~covered
    v = Verification(
        str(history_name),
        str(catalog_name),
        until,
        len(df),
        int(ready.sum()),
        int(pending.sum()),
        0,
        None,
        "",
        recipe=recipe,
    )
    v.since, v.n_before, v.n_reissues = since, int(before.sum()), reissues
    v.n_other_event = int((~same).sum())
    # a forecast stands for its requested time (a service's cycle); one issued well after
    # that was made with hindsight available (a back-fill), whatever its observation's age
    v.n_late = int((ready & np.asarray(df["_issued"] > df["_requested"] + BACKFILL_GRACE)).sum())
    if recipe.assumed:
        v.notes.append(
            f"the forecasts record no recipe: the study's event ({recipe.event}) is assumed"
        )
    if v.n_other_event:
        v.notes.append(f"{v.n_other_event} forecast(s) of another event left out")
    if v.n_reissues:
        v.notes.append(
            f"{v.n_reissues} re-issue(s) left out: each window is scored with its first "
            "forecast (the one issued before the window began, when there is one)"
        )
    if v.n_before:
        i = int(np.flatnonzero(before)[np.argmin(starts[before])])
        v.notes.append(
            f"{v.n_before} forecast(s) before the catalog: their window starts before "
            f"{since:{_ISO}}, where the catalog begins (its first flare's day, or --start), "
            f"the first at {starts[i]:{_ISO}}; left out, not scored as quiet (to include "
            f"them, give a catalog that covers them and --start {starts[before].min():{_ISO}})"
        )
    if v.n_pending:
        v.notes.append(
            f"{v.n_pending} forecast(s) pending: their window ends after {until:{_ISO}}, "
            "the end of the flare list or catalog: scored once it covers them"
        )
    if v.n_late:
        v.notes.append(
            f"{v.n_late} verified forecast(s) were issued over "
            f"{BACKFILL_GRACE.total_seconds() / 3600:g} h after the time they stand for "
            "(back-filled): they were not forecasts made in advance"
        )
    if not v.n_verified:
        return v
    times = pd.DatetimeIndex(starts[ready])
    labels = label_windows(catalog, times, window=window, threshold=flux, rest=False)
    target = labels["target"].to_numpy(dtype=np.int64)
    v.events = int(target.sum())
    if climatology is not None:
        v.climatology, v.climatology_source = climatology, "given (--climatology)"
    else:
        rate, why = prior_climatology(catalog, times.min(), flux, window)
        if rate is None:
            rate = float(target.mean())
            why = f"the verified windows' own rate ({why}): a rate not known in advance"
        v.climatology, v.climatology_source = rate, why
    frames = {
        "model": df["_prob"].to_numpy(dtype=float)[ready],
        "persistence": _persistence(times, catalog, threshold=flux, window=window),
        "climatology": np.full(len(times), v.climatology),
    }
    for kind, p in frames.items():
        frame = pd.DataFrame({"flare_prob": p, "target": target})
        v.scores[kind] = score_frame(frame, path=kind, threshold=threshold)
    v.difference = paired_difference(
        [(frames["model"], frames["persistence"], target, times)], threshold=threshold
    )
    ref = v.scores["climatology"].brier
    for s in v.scores.values():  # BSS against the climatology above, not the sample rate
        s.bss = None if not ref or s.brier is None else 1.0 - s.brier / ref
    keep = [c for c in df.columns if not c.startswith("_") and c != "recipe"]
    out = df.loc[ready, keep].copy()
    if "recipe" in table.columns and "recipe" not in keep:
        out["recipe"] = table.reset_index(drop=True).loc[ready, "recipe"].astype(str)
    out["target"] = target.astype(str)
    out["persistence"] = frames["persistence"].astype(int).astype(str)
    out["goes_class"] = labels["goes_class"].fillna("").astype(str).to_numpy()
    out["fl_start"] = pd.Series(labels["fl_start"]).dt.strftime(_ISO).fillna("").to_numpy()
    v.table = out.reset_index(drop=True)
    return v


class NoForecasts(InputError):
    """The history or store holds no forecast."""


def _nonempty(path: str | os.PathLike[str]) -> bool:
    return os.path.isfile(path) and os.path.getsize(path) > 0


def read_forecasts(
    history: str | os.PathLike[str] | None = None, store: str | os.PathLike[str] | None = None
) -> tuple[pd.DataFrame, str]:
    """The forecasts of a history table or a store, as :func:`history_frame` reads them.

    Raises:
        InputError: an unreadable file, or one that holds no forecast.
    """
    if history is not None:
        from fdflare.forecast.formats import read_history

        raw = read_history(history)
        if raw.empty:
            raise NoForecasts(
                "the forecast history is empty: it holds no forecast (only its header)",
                path=history,
            )
        return history_frame(raw, path=history), str(history)
    from fdflare.forecast.store import ForecastStore

    assert store is not None
    with ForecastStore.open(store, create=False) as st:
        raw = st.frame()
    if raw.empty:
        raise NoForecasts("the forecast store is empty: it holds no forecast yet", path=store)
    return history_frame(raw, path=store), str(store)


def verify_history(
    history: str | os.PathLike[str] | None,
    catalog: str | os.PathLike[str],
    *,
    store: str | os.PathLike[str] | None = None,
    catalog_format: str = "auto",
    until: pd.Timestamp | None = None,
    since: pd.Timestamp | None = None,
    climatology: float | None = None,
    threshold: float = 0.5,
    extra: pd.DataFrame | None = None,
) -> Verification:
    """Verify a history table (or a store) against a catalog file (:func:`verify_forecasts`).

    ``extra`` is a :func:`history_frame` table added to the forecasts read (rows about to
    be imported into the store).

    Raises:
        InputError: a history, store or catalog that cannot be read, naming file, line and
            field, or forecasts of several events.
    """
    from fdflare.acquire.catalog import read_catalog

    adding = extra is not None and not extra.empty
    if adding and history is None and store is not None and not _nonempty(store):
        table, name = extra, str(store)  # a store about to be made by the import
    else:
        try:
            table, name = read_forecasts(history, store)
        except NoForecasts:
            if not adding or extra is None:
                raise
            table, name = extra.iloc[:0], str(store if history is None else history)
        if adding:
            table = pd.concat([table, extra], ignore_index=True)
    recipe = table_recipe(table, name)
    cat = read_catalog(catalog, fmt=catalog_format)
    return verify_forecasts(
        table,
        cat,
        until=until,
        recipe=recipe,
        climatology=climatology,
        since=since,
        threshold=threshold,
        path=name,
        history_name=name,
        catalog_name=str(catalog),
    )


def format_verification(v: Verification) -> str:
    """The verification as a text table with what it means (several lines)."""
    from fdflare.analysis.skill import difference_words
    from fdflare.core.table import fmt_number, render_table

    head = (
        f"{v.history}: {v.n_forecasts} forecast(s) of P({v.recipe.event}), {v.n_verified} "
        f"verified against {v.catalog} (up to {v.until:%Y-%m-%dT%H:%M:%SZ}), "
        f"{v.n_pending} pending"
        + (f", {v.n_before} before the catalog" if v.n_before else "")
        + (f", {v.n_reissues} re-issue(s) left out" if v.n_reissues else "")
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
        text = (
            f"{name.upper()}: the model {verdict} persistence ({fmt_number(a)} vs {fmt_number(b)})"
        )
        diff = v.difference.get(name)
        if diff:
            text += f"; {difference_words(diff)}"
        if a < 0 and b < 0:
            text += ", but both are below 0: worse than climatology's 0"
        elif a < 0:
            text += "; the model is below 0: worse than climatology's 0"
        elif a == 0:
            text += "; the model is at 0: no better than climatology"
        lines.append(text)
    if m.bss is not None:
        verdict = "beats" if m.bss > 0 else "does NOT beat"
        lines.append(f"Brier: the model {verdict} climatology (BSS {fmt_number(m.bss)})")
    lines += [f"note: {n}" for n in v.notes]
    return "\n".join(lines)
