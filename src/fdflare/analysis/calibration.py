"""Calibrated probabilities: a monotone map from a model's scores to observed frequencies.

A deep model trained with a class-weighted loss outputs scores, not probabilities: on the
study's release every fold of AlexNet has a Brier score worse than, or hardly better than,
climatology. A map fitted on predictions the model did not see during its own fold's
validation mends that:

* ``isotonic`` (scikit-learn's :class:`~sklearn.isotonic.IsotonicRegression`): the
  non-decreasing step function closest to the outcomes; no shape assumed, needs thousands
  of instances;
* ``platt``: a logistic curve on the logit of the score (scikit-learn's
  :class:`~sklearn.linear_model.LogisticRegression`, unregularised); two parameters, stable
  on small calibration sets.
* ``history``: a logistic regression on the logit of the score *and* the flare history up
  to each instance (:func:`fdflare.analysis.history.flare_history`: the largest flare and the
  number of flares >= C1.0 in the last 24 and 72 hours, read from a flare catalog), with
  standardised inputs and scikit-learn's default L2 penalty (C = 1). It is the forecast a
  forecaster issues from the model and the recent flares together; it is not monotone in
  the score alone, so ``predict`` and ``forecast`` (which read no catalog) refuse it.

The maps are stored as plain numbers (the isotonic knots, the Platt or logistic
coefficients) in JSON, so applying one needs no scikit-learn and no pickle.

Where the calibration data come from decides whether the result can be trusted:

* ``cross_fold``: each fold is calibrated with a map fitted on the *other* folds'
  validation predictions. For a published release (predictions only), these are the only
  out-of-sample predictions there are.
* ``fit`` / ``apply``: fit on one set (fdflare's own runs: the held-out slice of the
  training data, ``train --holdout-fraction``) and apply to another.

The decision threshold that maximises TSS is chosen on the calibration data only and the
validation data are scored at it, next to 0.5.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
import pandas as pd

from fdflare.core.errors import InputError

METHODS = ("isotonic", "platt", "history")
#: the maps of the score alone, which ``predict``, ``forecast`` and ensembles apply
MONOTONE = ("isotonic", "platt")
#: probabilities are clipped to [EPS, 1 - EPS] before the logit of Platt scaling
EPS = 1e-6


@dataclass
class Calibrator:
    """A fitted calibration map.

    Attributes:
        method: ``isotonic`` or ``platt``.
        x: isotonic knots (scores), increasing.
        y: isotonic values at the knots (probabilities), non-decreasing.
        a: Platt slope on ``logit(score)``.
        b: Platt intercept (and the history map's).
        features: the history map's inputs: ``logit`` then
            :data:`fdflare.analysis.history.FEATURES`.
        mean, scale: the history map's standardisation of each input.
        coef: the history map's coefficient of each standardised input.
        n: instances the map was fitted on.
        positives: positive instances among them.
        sources: files the map was fitted on.
    """

    method: str
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    a: float = 1.0
    b: float = 0.0
    n: int = 0
    positives: int = 0
    sources: list[str] = field(default_factory=list)
    features: list[str] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)
    coef: list[float] = field(default_factory=list)

    def __call__(self, prob: np.ndarray, history: np.ndarray | None = None) -> np.ndarray:
        """Map scores (and, for ``history``, the ``(N, 4)`` flare history) to probabilities."""
        p = np.asarray(prob, dtype=float)
        if self.method == "isotonic":
            return np.interp(p, self.x, self.y)
        if self.method == "history":
            if history is None:
                raise InputError("a history calibration map needs the flare history (a catalog)")
            x = np.column_stack([_logit(p), np.asarray(history, dtype=float)])
            z = ((x - np.asarray(self.mean)) / np.asarray(self.scale)) @ np.asarray(self.coef)
            return 1.0 / (1.0 + np.exp(-(z + self.b)))
        z = _logit(p)
        return 1.0 / (1.0 + np.exp(-(self.a * z + self.b)))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``calibration.json`` and ``ensemble.json`` hold)."""
        d = asdict(self)
        keep = {
            "isotonic": ("x", "y"),
            "platt": ("a", "b"),
            "history": ("b", "features", "mean", "scale", "coef"),
        }[self.method]
        for name in ("x", "y", "a", "b", "features", "mean", "scale", "coef"):
            if name not in keep:
                d.pop(name)
        return d

    @classmethod
    def from_dict(
        cls,
        d: Any,
        *,
        path: str | None = None,
        field: str = "",
        methods: Sequence[str] = METHODS,
    ) -> Calibrator:
        """Read a map written by :meth:`to_dict`, checking every field.

        Args:
            d: the map object (untrusted: any JSON value).
            path: the file it came from, named in errors.
            field: where the map sits in the file (``files[0].map``), prefixed to the field
                names in errors.
            methods: the methods the reader can apply (:data:`MONOTONE` where no flare
                catalog is at hand).

        Raises:
            InputError: one line naming the file and the field: not an object, an unknown
                method, knots that are not lists of numbers, lengths that differ, knots not
                non-decreasing, values outside [0, 1], coefficients that are not finite
                numbers, counts that are not whole numbers.
        """
        at = f"{field}." if field else ""

        def bad(name: str, message: str) -> InputError:
            return InputError(f"calibration map: {message}", path=path, field=at + name)

        if not isinstance(d, dict):
            raise InputError(
                f"calibration map: expected an object, found {_json_kind(d)}",
                path=path,
                field=field or None,
            )
        method = d.get("method")
        if method == "history" and "history" not in methods:
            raise bad(
                "method",
                "a history map reads the flare history, which this command does not; "
                f"give a map of the score alone ({', '.join(methods)})",
            )
        if method not in METHODS:
            raise bad("method", f"method {_shown(method)} is not one of {', '.join(METHODS)}")
        counts = {}
        for name in ("n", "positives"):
            value = d.get(name, 0)
            if not _is_number(value) or value != int(value) or value < 0:
                raise bad(name, f"{name} must be a whole number >= 0, found {_shown(value)}")
            counts[name] = int(value)
        if counts["positives"] > counts["n"] > 0:
            raise bad("positives", f"positives {counts['positives']} exceed n {counts['n']}")
        sources = d.get("sources", [])
        if not isinstance(sources, list) or not all(isinstance(v, str) for v in sources):
            raise bad("sources", "sources must be a list of file names")
        cal = cls(method=str(method), n=counts["n"], positives=counts["positives"], sources=sources)
        if method == "isotonic":
            for name in ("x", "y"):
                if name not in d:
                    raise bad(name, f"isotonic map without its knots '{name}'")
                values = d[name]
                if not isinstance(values, list):
                    raise bad(name, f"expected a list of numbers, found {_json_kind(values)}")
                for i, v in enumerate(values):
                    if not _is_number(v) or not math.isfinite(v):
                        raise bad(f"{name}[{i}]", f"knot {_shown(v)} is not a finite number")
            cal.x, cal.y = [float(v) for v in d["x"]], [float(v) for v in d["y"]]
            x, y = np.asarray(cal.x), np.asarray(cal.y)
            if len(x) == 0:
                raise bad("x", "isotonic map without knots")
            if len(x) != len(y):
                raise bad("y", f"{len(y)} values for {len(x)} knots")
            for name, v in (("x", x), ("y", y)):
                if np.any(np.diff(v) < 0):
                    i = int(np.flatnonzero(np.diff(v) < 0)[0]) + 1
                    raise bad(f"{name}[{i}]", f"{name} must be non-decreasing (a monotone map)")
            if np.any((y < 0) | (y > 1)):
                i = int(np.flatnonzero((y < 0) | (y > 1))[0])
                raise bad(f"y[{i}]", f"value {y[i]:g} is not a probability in [0, 1]")
        elif method == "history":
            _history_fields(cal, d, bad)
        else:
            for name in ("a", "b"):
                value = d.get(name)
                if not _is_number(value) or not math.isfinite(value):
                    raise bad(name, f"Platt coefficient {_shown(value)} is not a finite number")
            cal.a, cal.b = float(d["a"]), float(d["b"])
        return cal


def _history_fields(cal: Calibrator, d: dict[str, Any], bad: Any) -> None:
    """Read and check the history map's inputs and coefficients into ``cal``."""
    from fdflare.analysis.history import FEATURES

    expected = ["logit", *FEATURES]
    if d.get("features") != expected:
        raise bad("features", f"a history map's features must be {expected}")
    b = d.get("b")
    if not _is_number(b) or not math.isfinite(b):
        raise bad("b", f"intercept {_shown(b)} is not a finite number")
    cal.b, cal.features = float(b), list(expected)
    for name in ("mean", "scale", "coef"):
        values = d.get(name)
        if not isinstance(values, list) or len(values) != len(expected):
            raise bad(name, f"expected a list of {len(expected)} numbers")
        for i, v in enumerate(values):
            if not _is_number(v) or not math.isfinite(v) or (name == "scale" and v <= 0):
                what = "a positive number" if name == "scale" else "a finite number"
                raise bad(f"{name}[{i}]", f"{_shown(v)} is not {what}")
        setattr(cal, name, [float(v) for v in values])


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_kind(value: Any) -> str:
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "true/false"}
    if value is None:
        return "null"
    return kinds.get(type(value), "a number")


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) else f"{value:g}"
    return text if len(text) <= 40 else text[:37] + "..."


def before_after(
    record: dict[str, Any], method: str = "calibrated"
) -> tuple[list[str], list[list[str]]]:
    """The before/after table of a calibration record (``calibration.json``): head and rows.

    One row per file: Brier and BSS before and after, the threshold chosen on the
    calibration data, TSS at 0.5 before and after, and TSS and FAR after at that threshold.
    Every report of a calibration (the command, the demo, the reproduction, the HTML page)
    shows this table.
    """
    from fdflare.core.table import fmt_number

    head = [
        "file",
        "Brier",
        "BSS",
        f"Brier {method}",
        f"BSS {method}",
        "threshold",
        "TSS at 0.5",
        f"TSS {method} at 0.5",
        f"TSS {method} at threshold",
        "FAR at threshold",
    ]
    rows = []
    for item in record["files"]:
        b, a = item["before"], item["after"]
        at = a.get("at_threshold") or {}
        rows.append(
            [
                str(item["file"]),
                fmt_number(b["brier"]),
                fmt_number(b["bss"]),
                fmt_number(a["brier"]),
                fmt_number(a["bss"]),
                fmt_number(item["threshold"], 3),
                fmt_number(b["at_0.5"]["tss"]),
                fmt_number(a["at_0.5"]["tss"]),
                fmt_number(at.get("tss")),
                fmt_number(at.get("far")),
            ]
        )
    return head, rows


def training_rates(labels: str | os.PathLike[str], folds: Sequence[int]) -> list[float]:
    """Each fold's training positive rate: the climatology a forecaster knows in advance.

    Raises:
        MissingDataError: a fold's training table is missing from ``labels``.
    """
    from fdflare.data.tables import fold_tables

    return [float(fold_tables(labels, int(k)).train["target"].mean()) for k in folds]


def read_calibration_map(
    path: str | os.PathLike[str], *, methods: Sequence[str] = MONOTONE
) -> Calibrator:
    """The one calibration map in ``path``: a map object, or a calibration.json with one file.

    ``methods``: the methods the reader can apply; the default leaves out ``history``, which
    needs a flare catalog (``forecast --catalog`` reads one).

    Raises:
        InputError: not a map, or a calibration.json with several maps (one per fold).
    """
    from fdflare.core.io import read_json

    data = read_json(path, what="calibration file")
    if isinstance(data, dict) and "method" in data:
        return Calibrator.from_dict(data, path=str(path), methods=methods)
    if isinstance(data, dict) and "files" not in data:
        raise InputError(
            "expected a calibration map (with 'method') or calibration.json (with 'files')",
            path=path,
            field="method",
        )
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list) or not files:
        raise InputError(
            "expected a calibration map (with 'method') or calibration.json (with a list of "
            "'files')",
            path=path,
            field="files" if isinstance(data, dict) else None,
        )
    maps = []
    for i, item in enumerate(files):
        if not isinstance(item, dict) or "map" not in item:
            raise InputError(
                "expected an object with a 'map' for each file", path=path, field=f"files[{i}]"
            )
        maps.append(item["map"])
    if any(m != maps[0] for m in maps[1:]):
        raise InputError(
            f"holds {len(files)} different maps (one per fold, --cross-fold); give a file "
            "with one map (its files[k].map object) or calibrate with --fit/--apply",
            path=path,
        )
    return Calibrator.from_dict(maps[0], path=str(path), field="files[0].map", methods=methods)


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    return np.log(q / (1 - q))


def fit_calibrator(
    prob: np.ndarray,
    target: np.ndarray,
    method: str,
    *,
    sources: Sequence[str] = (),
    history: np.ndarray | None = None,
) -> Calibrator:
    """Fit a calibration map of ``method`` to scores ``prob`` and outcomes ``target``.

    ``history``: the ``(N, 4)`` flare history of the instances, for ``method="history"``.
    """
    if method not in METHODS:
        raise InputError(f"unknown calibration method {method!r}; choose from {', '.join(METHODS)}")
    p = np.asarray(prob, dtype=float)
    y = np.asarray(target).astype(int)
    if len(p) == 0 or len(np.unique(y)) < 2:
        raise InputError(
            "calibration needs flare and no-flare instances in the data it is fitted on "
            f"({len(p)} instance(s), {int(y.sum())} positive)"
        )
    n, positives, names = len(p), int(y.sum()), [str(s) for s in sources]
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
        return Calibrator(
            method,
            x=[float(v) for v in iso.X_thresholds_],
            y=[float(v) for v in iso.y_thresholds_],
            n=n,
            positives=positives,
            sources=names,
        )
    from sklearn.linear_model import LogisticRegression

    if method == "history":
        from fdflare.analysis.history import FEATURES

        if history is None:
            raise InputError("the history map needs the flare history of its instances")
        x = np.column_stack([_logit(p), np.asarray(history, dtype=float)])
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale[scale == 0] = 1.0  # a constant input (no flare in any window) gets no weight
        lr = LogisticRegression(max_iter=1000).fit((x - mean) / scale, y)
        return Calibrator(
            method,
            b=float(lr.intercept_[0]),
            n=n,
            positives=positives,
            sources=names,
            features=["logit", *FEATURES],
            mean=[float(v) for v in mean],
            scale=[float(v) for v in scale],
            coef=[float(v) for v in lr.coef_[0]],
        )
    lr = LogisticRegression(C=1e6, max_iter=1000).fit(_logit(p).reshape(-1, 1), y)
    return Calibrator(
        method,
        a=float(lr.coef_[0, 0]),
        b=float(lr.intercept_[0]),
        n=n,
        positives=positives,
        sources=names,
    )


# --------------------------------------------------------------------------- scores


def probability_scores(
    prob: np.ndarray, target: np.ndarray, *, reference_rate: float
) -> dict[str, float | None]:
    """Brier score, Brier skill score against ``reference_rate`` and the reliability term."""
    p = np.asarray(prob, dtype=float)
    y = np.asarray(target, dtype=float)
    if len(p) == 0:
        return {"brier": None, "bss": None, "reference_rate": reference_rate}
    bs = float(np.mean((p - y) ** 2))
    ref = float(np.mean((reference_rate - y) ** 2))
    return {
        "brier": bs,
        "bss": None if ref == 0 else 1.0 - bs / ref,
        "reference_rate": reference_rate,
    }


def categorical_scores(prob: np.ndarray, target: np.ndarray, threshold: float) -> dict[str, Any]:
    """TSS, HSS2 and the false-alarm ratio FP / (TP + FP) at ``threshold``."""
    from fdflare.core.scores import confusion, skill_scores

    tp, fp, tn, fn = confusion(prob, target, threshold)
    tss, hss2, _ = skill_scores(tp, fp, tn, fn)
    far = fp / (tp + fp) if tp + fp else None
    return {
        "threshold": threshold,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "tss": tss,
        "hss2": hss2,
        "far": far,
    }


def tss_threshold(prob: np.ndarray, target: np.ndarray) -> float | None:
    """The threshold that maximises TSS on these (calibration) data."""
    from fdflare.analysis.metrics import best_threshold

    thr, _ = best_threshold(prob, target)
    return thr


# --------------------------------------------------------------------------- files


@dataclass
class CalibratedFile:
    """One prediction file, calibrated, and how it scores before and after."""

    source: Path
    table: pd.DataFrame
    raw: np.ndarray  # the probabilities before calibration
    calibrator: Calibrator
    threshold: float | None  # chosen on the calibration data
    before: dict[str, Any]
    after: dict[str, Any]


def _read(path: str | os.PathLike[str]) -> pd.DataFrame:
    from fdflare.analysis.metrics import read_predictions

    return read_predictions(path)


def _score(
    prob: np.ndarray, target: np.ndarray, *, reference_rate: float, threshold: float | None
) -> dict[str, Any]:
    out: dict[str, Any] = probability_scores(prob, target, reference_rate=reference_rate)
    out["at_0.5"] = categorical_scores(prob, target, 0.5)
    out["at_threshold"] = None if threshold is None else categorical_scores(prob, target, threshold)
    return out


def _histories(
    tables: Sequence[tuple[Path, pd.DataFrame]], method: str, catalog: pd.DataFrame | None
) -> list[np.ndarray | None]:
    """Each table's flare history for the ``history`` map (read once per table), else Nones."""
    if method != "history":
        return [None] * len(tables)
    if catalog is None:
        raise InputError("the history map needs a flare catalog (--catalog)")
    from fdflare.analysis.history import table_histories

    return list(table_histories(tables, catalog, what="the history map"))


def _calibrate_one(
    path: Path,
    table: pd.DataFrame,
    fit_tables: Sequence[tuple[Path, pd.DataFrame]],
    method: str,
    reference_rate: float | None,
    history: np.ndarray | None = None,
    fit_history: Sequence[np.ndarray | None] = (),
) -> CalibratedFile:
    fit_p = np.concatenate([t["flare_prob"].to_numpy(float) for _, t in fit_tables])
    fit_y = np.concatenate([t["target"].to_numpy(int) for _, t in fit_tables])
    fit_h = None
    if method == "history":
        fit_h = np.concatenate([h for h in fit_history if h is not None])
    cal = fit_calibrator(
        fit_p, fit_y, method, sources=[str(p) for p, _ in fit_tables], history=fit_h
    )
    thr = tss_threshold(cal(fit_p, fit_h), fit_y)
    raw_thr = tss_threshold(fit_p, fit_y)
    rate = float(fit_y.mean()) if reference_rate is None else reference_rate
    p, y = table["flare_prob"].to_numpy(float), table["target"].to_numpy(int)
    q = cal(p, history)
    out = table.copy()
    out["flare_prob"] = q
    return CalibratedFile(
        source=path,
        table=out,
        raw=p,
        calibrator=cal,
        threshold=thr,
        before=_score(p, y, reference_rate=rate, threshold=raw_thr),
        after=_score(q, y, reference_rate=rate, threshold=thr),
    )


def cross_fold(
    paths: Sequence[str | os.PathLike[str]],
    method: str,
    *,
    reference_rates: Sequence[float | None] | None = None,
    catalog: pd.DataFrame | None = None,
) -> list[CalibratedFile]:
    """Calibrate each file with a map fitted on all the other files.

    Args:
        paths: one prediction file per fold (at least two).
        method: one of :data:`METHODS`.
        reference_rates: per file, the climatological rate of the Brier skill score (the
            fold's training positive rate); default the calibration data's rate.
        catalog: flares (:func:`fdflare.acquire.catalog.read_catalog`), for ``history``.
    """
    if len(paths) < 2:
        raise InputError("--cross-fold needs the prediction files of two or more folds")
    tables = [(Path(p), _read(p)) for p in paths]
    hist = _histories(tables, method, catalog)
    rates = list(reference_rates) if reference_rates is not None else [None] * len(tables)
    others = [[j for j in range(len(tables)) if j != i] for i in range(len(tables))]
    return [
        _calibrate_one(
            p,
            t,
            [tables[j] for j in others[i]],
            method,
            rates[i],
            hist[i],
            [hist[j] for j in others[i]],
        )
        for i, (p, t) in enumerate(tables)
    ]


def fit_apply(
    fit: Sequence[str | os.PathLike[str]],
    apply: Sequence[str | os.PathLike[str]],
    method: str,
    *,
    reference_rates: Sequence[float | None] | None = None,
    catalog: pd.DataFrame | None = None,
) -> list[CalibratedFile]:
    """Fit one map on the ``fit`` files and apply it to each of the ``apply`` files."""
    fit_tables = [(Path(p), _read(p)) for p in fit]
    tables = [(Path(p), _read(p)) for p in apply]
    fit_hist = _histories(fit_tables, method, catalog)
    hist = _histories(tables, method, catalog)
    rates = list(reference_rates) if reference_rates is not None else [None] * len(apply)
    return [
        _calibrate_one(p, t, fit_tables, method, rates[i], hist[i], fit_hist)
        for i, (p, t) in enumerate(tables)
    ]


def write_calibrated(
    results: Sequence[CalibratedFile], out: str | os.PathLike[str], *, figures: bool = True
) -> dict[str, Any]:
    """Write the calibrated files (same names), ``calibration.json`` and the figures.

    Returns:
        The ``calibration.json`` content.
    """
    from fdflare.core.io import atomic_open, write_text_atomic

    out = Path(out)
    names = [r.source.name for r in results]
    if len(set(names)) != len(names):
        raise InputError("two prediction files share a name; calibrated files keep their names")
    record: dict[str, Any] = {"files": []}
    for r in results:
        with atomic_open(out / r.source.name) as fh:
            r.table.to_csv(fh, index=False, lineterminator="\n", float_format="%.6g")
        record["files"].append(
            {
                "source": str(r.source),
                "file": r.source.name,
                "map": r.calibrator.to_dict(),
                "threshold": r.threshold,
                "before": r.before,
                "after": r.after,
            }
        )
    if figures and results:
        from fdflare.analysis.reliability import reliability_figure
        from fdflare.core.io import atomic_path

        raw = np.concatenate([r.raw for r in results])
        cal = np.concatenate([r.table["flare_prob"].to_numpy(float) for r in results])
        y = np.concatenate([r.table["target"].to_numpy(int) for r in results])
        fig = reliability_figure({"before": raw, f"after ({results[0].calibrator.method})": cal}, y)
        for ext in ("png", "svg"):
            with atomic_path(out / f"reliability.{ext}") as tmp:
                fig.savefig(tmp, format=ext, dpi=120)
        record["figures"] = ["reliability.png", "reliability.svg"]
    write_text_atomic(out / "calibration.json", json.dumps(record, indent=2, default=_plain) + "\n")
    return record


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)
