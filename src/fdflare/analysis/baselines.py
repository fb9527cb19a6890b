"""Reference forecasts that every model must beat, on the same instances as the model.

* ``persistence``: yes (probability 1) iff a flare of the mode's class or above started in
  the 24 hours up to and including the instance time, ``(t - 24 h, t]``: the label window
  ``(t, t + 24 h)`` mirrored into the past. Nothing but the flare catalog is needed, so it
  is the forecast any operational centre can issue for free.
* ``climatology``: every validation instance gets the positive rate of its fold's training
  instances. This is the reference of the Brier skill score: a model with BSS <= 0 forecasts
  worse probabilities than this constant.
* ``flux``: a logistic regression, fitted on each fold's training instances, on two
  disk-integrated image features: an unsigned-flux proxy (the mean absolute departure of
  on-disk pixels from the disk's median, the zero-field grey of the magnetogram) and the
  share of strong-field pixels (departure above :data:`STRONG_LEVEL` grey levels). This is
  the classic one-number full-disk forecast (total unsigned flux), and it uses the same
  images as the model. Training instances are weighted by class as the study weights its
  loss, so a threshold of 0.5 means the same thing for it as for the study's models.
* ``history``: a logistic regression, fitted and weighted as ``flux``, on the flare history
  up to the instance time (:func:`fdflare.analysis.history.flare_history`: the largest flare
  and the number of flares >= C1.0 in the last 24 and 72 hours). Persistence asks the
  catalog one yes/no question; this reads all it says, so it is the stronger of the two
  forecasts that need no image.

Every baseline writes prediction files in the study's format (``timestamp,flare_prob,target``,
one ``fold{k}_{kind}.csv`` per fold), so :mod:`fdflare.analysis.metrics` scores them exactly
as it scores a model.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fdflare.core.errors import InputError, MissingDataError
from fdflare.core.io import refuse_first
from fdflare.core.paths import parse_image_times
from fdflare.core.recipe import parse_threshold

KINDS = ("persistence", "climatology", "flux", "history")
#: grey levels from the disk median above which a pixel counts as strong field
STRONG_LEVEL = 32
#: share of the disk radius left out at the limb by the flux features
LIMB_MARGIN = 0.02
#: the persistence window
WINDOW = pd.Timedelta(hours=24)

_FOLD_FILE = re.compile(r"^Fold(\d+)_val\.csv$")


@dataclass
class FoldPredictions:
    """One baseline's forecasts for one fold's validation instances."""

    fold: int
    kind: str
    table: pd.DataFrame  # timestamp, flare_prob, target


def list_folds(labels: str | os.PathLike[str]) -> list[int]:
    """The folds a label folder (``Fold{k}_val.csv`` files, or ``labels.csv``) holds."""
    path = Path(labels)
    if path.is_dir():
        found = sorted(
            int(m.group(1)) for p in path.iterdir() if (m := _FOLD_FILE.match(p.name)) is not None
        )
        if found:
            return found
        path = path / "labels.csv"
    if not path.is_file():
        raise MissingDataError(
            f"no labels in {labels}: expected Fold{{k}}_val.csv files or labels.csv "
            "(run `fdflare label` to make them)"
        )
    from fdflare.data.tables import read_label_csv

    table = read_label_csv(path, allow_empty=True)
    if "fold" in table.columns:
        folds = pd.to_numeric(table["fold"], errors="coerce").dropna().astype(int)
        return sorted({k for k in folds.tolist() if k > 0})  # 0: not a test row of a split
    times, _ = parse_image_times(table["label"].astype(str))
    return sorted(set(((pd.DatetimeIndex(times).month - 1) // 3 + 1).dropna().astype(int)))


def _times(table: pd.DataFrame, what: str) -> pd.DatetimeIndex:
    times, _ = parse_image_times(table["label"].astype(str))
    refuse_first(
        times.isna().to_numpy(),
        lambda i: f"image name {table['label'].iloc[i]!s} holds no time (HMI.mYYYY.MM.DD_HH.MM.SS)",
        path=table.attrs.get("path", what),
        field="label",
    )
    return pd.DatetimeIndex(times)


def persistence(
    times: pd.DatetimeIndex | pd.Series, catalog: pd.DataFrame, *, threshold: float
) -> np.ndarray:
    """1.0 where a flare with peak flux >= ``threshold`` started in ``(t - 24 h, t]``, else 0.0."""
    strong = catalog.loc[catalog["flux"].to_numpy(dtype=float) >= threshold, "start_time"]
    starts = np.sort(pd.DatetimeIndex(strong).as_unit("ns").asi8)
    t = pd.DatetimeIndex(times).as_unit("ns").asi8
    lo = np.searchsorted(starts, t - WINDOW.value, side="right")
    hi = np.searchsorted(starts, t, side="right")
    return (hi > lo).astype(float)


def climatology(train_target: np.ndarray, n: int) -> np.ndarray:
    """The training positive rate, ``n`` times."""
    y = np.asarray(train_target, dtype=float)
    if len(y) == 0:
        raise InputError("no training instances to take the climatological rate from")
    return np.full(n, float(y.mean()))


def disk_features(
    images: np.ndarray, centre: np.ndarray | None = None, radius: np.ndarray | None = None
) -> np.ndarray:
    """The flux baseline's two features for a stack of 8-bit magnetograms.

    Args:
        images: ``(N, H, W)`` uint8 images.
        centre: ``(N, 2)`` disk centres ``(x, y)`` in pixels (``geometry.csv``); default
            the centroid of the image's non-zero pixels (the sky is 0).
        radius: ``(N,)`` disk radii in pixels; default from the area of the non-zero pixels.

    The disk is shrunk by :data:`LIMB_MARGIN` of its radius plus half a pixel, so that no
    sky pixel at the limb counts as strong field (which would make the features follow the
    disk's apparent size, hence the season, instead of the active regions).

    Returns:
        ``(N, 2)``: mean absolute departure from the on-disk median (grey levels), and the
        share of on-disk pixels departing by more than :data:`STRONG_LEVEL`.
    """
    n, h, w = images.shape
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros((n, 2))
    for i in range(n):
        img = images[i]
        if centre is None or radius is None:
            lit = img > 0
            area = int(lit.sum())
            if area == 0:
                continue
            cx, cy = float(xx[lit].mean()), float(yy[lit].mean())
            r = float(np.sqrt(area / np.pi))
        else:
            cx, cy, r = float(centre[i, 0]), float(centre[i, 1]), float(radius[i])
        r = r * (1 - LIMB_MARGIN) - 0.5
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        pix = img[mask].astype(np.int16)
        if pix.size == 0:
            continue
        dev = np.abs(pix - int(np.median(pix)))
        out[i] = dev.mean(), float((dev > STRONG_LEVEL).mean())
    return out


def fit_balanced(
    features: np.ndarray, target: np.ndarray, *, what: str
) -> Callable[[np.ndarray], np.ndarray]:
    """Fit a class-weighted logistic regression (scikit-learn); return ``features -> P``.

    The features are standardised; training instances are weighted by class as the study
    weights its loss, so 0.5 is the forecast's threshold. ``what`` names the baseline in the
    error for training data of one class.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(target).astype(int)
    if len(np.unique(y)) < 2:
        raise InputError(f"the {what} baseline needs flare and no-flare training instances")
    model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced"))
    model.fit(features, y)

    def predict(x: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict_proba(x)[:, 1], dtype=float)

    return predict


def fit_flux(features: np.ndarray, target: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Fit the flux baseline on :func:`disk_features`; return ``features -> P``."""
    model = fit_balanced(np.log1p(features), target, what="flux")
    return lambda x: model(np.log1p(x))


def _frame(labels: pd.Series, prob: np.ndarray, target: pd.Series) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "timestamp": labels.astype(str).to_numpy(),
            "flare_prob": np.asarray(prob, dtype=float),
            "target": target.to_numpy().astype(np.int64),
        }
    )


class ImageFeatures:
    """Disk features of the images behind a label table, read once per image.

    Reads the array store of ``fdflare prepare --array-store`` when ``images`` holds one
    (fast), else the image files; takes the disk centre and radius from ``geometry.csv``
    beside the images where it has a row for the image.
    """

    def __init__(
        self,
        images: str | os.PathLike[str],
        image_ext: str | None = None,
        geometry: str | os.PathLike[str] | None = None,
    ) -> None:
        from fdflare.data.sources import open_images

        self.root = Path(images)
        self.source = open_images(self.root, ext=image_ext)
        self.geometry: pd.DataFrame | None = None
        if geometry is None:  # prepare writes it among the images, synth beside them
            found = [
                p
                for p in (self.root / "geometry.csv", self.root.parent / "geometry.csv")
                if p.is_file()
            ]
            geometry = found[0] if found else None
        if geometry is not None:
            from fdflare.prepare.geometry import read_geometry_file

            g = read_geometry_file(geometry, what="geometry table")
            g["stem"] = g["path"].astype(str).str.replace(r"\.[A-Za-z0-9]+$", "", regex=True)
            self.geometry = g.drop_duplicates("stem").set_index("stem")
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, labels: Sequence[str], chunk: int = 256) -> np.ndarray:
        """``(N, 2)`` features for the images named by ``labels``."""
        names = [str(x) for x in labels]
        todo = [x for x in dict.fromkeys(names) if x not in self._cache]
        for i in range(0, len(todo), chunk):
            part = todo[i : i + chunk]
            stack = np.stack([self.source.read(x) for x in part])
            centre = radius = None
            if self.geometry is not None:
                stems = [re.sub(r"\.[A-Za-z0-9]+$", "", x) for x in part]
                g = self.geometry.reindex(stems)
                if not g[["center_x", "center_y", "radius_px"]].isna().any(axis=None):
                    centre = g[["center_x", "center_y"]].to_numpy(dtype=float)
                    radius = g["radius_px"].to_numpy(dtype=float)
            for name, f in zip(part, disk_features(stack, centre, radius), strict=True):
                self._cache[name] = f
        return np.array([self._cache[x] for x in names]).reshape(len(names), 2)


def baseline_predictions(
    labels: str | os.PathLike[str],
    kinds: Sequence[str],
    *,
    catalog: pd.DataFrame | None = None,
    mode: str = "M",
    images: str | os.PathLike[str] | None = None,
    image_ext: str | None = None,
    geometry: str | os.PathLike[str] | None = None,
    folds: Sequence[int] | None = None,
    optional: Sequence[str] = (),
    notes: list[str] | None = None,
) -> list[FoldPredictions]:
    """Forecast every validation instance of every fold with each baseline in ``kinds``.

    Args:
        labels: label folder (or ``labels.csv``) as for ``fdflare train``.
        kinds: any of :data:`KINDS`.
        catalog: flares (:func:`fdflare.acquire.catalog.read_catalog`), for persistence
            and history.
        mode: the class threshold of persistence (``M``: >= M1.0, ``C``: >= C1.0, or a
            class such as ``M5.0``).
        images: image folder or array store, for the flux baseline.
        image_ext: image extension to use instead of the labels' (e.g. ``png``).
        geometry: ``geometry.csv`` of the images (default: found among or beside them).
        folds: folds to forecast (default: every fold the labels hold).
        optional: fitted kinds (``flux``, ``history``) to leave out, on every fold, where a
            fold's training instances are all of one class, instead of failing; each one
            left out is said in ``notes``.
        notes: receives a line for each kind left out.

    Raises:
        InputError: an unknown kind, a baseline without what it needs, or bad labels.
    """
    from fdflare.data.tables import fold_tables

    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise InputError(f"unknown baseline {unknown[0]!r}; choose from {', '.join(KINDS)}")
    for kind in ("persistence", "history"):
        if kind in kinds and catalog is None:
            raise InputError(f"the {kind} baseline needs a flare catalog (--catalog)")
    if "flux" in kinds and images is None:
        raise InputError("the flux baseline needs the images (--images)")
    thr = parse_threshold(mode, what="mode")[0]
    features = ImageFeatures(images, image_ext, geometry) if "flux" in kinds and images else None
    out: list[FoldPredictions] = []
    dropped: dict[str, str] = {}
    if "history" in kinds:
        from fdflare.analysis.history import check_catalog

        assert catalog is not None
        try:
            check_catalog(catalog, what="the history baseline")
        except InputError as exc:
            if "history" not in optional:
                raise
            dropped["history"] = f"history baseline left out: {exc.message}"
    instants: list[pd.DatetimeIndex] = []
    for k in folds if folds is not None else list_folds(labels):
        tables = fold_tables(labels, k)
        train, val = tables.train, tables.val
        one_class = train["target"].nunique() < 2
        for kind in kinds:
            if kind in dropped:
                continue
            if kind in optional and kind in ("flux", "history") and one_class:
                what = "flares" if len(train) and train["target"].iloc[0] else "without a flare"
                dropped[kind] = (
                    f"{kind} baseline left out: fold {k}'s {len(train)} training instances are "
                    f"all {what}, so it cannot be fitted there"
                )
                continue
            if kind == "persistence":
                assert catalog is not None
                prob = persistence(_times(val, str(tables.val_path)), catalog, threshold=thr)
            elif kind == "climatology":
                prob = climatology(train["target"].to_numpy(), len(val))
            elif kind == "history":
                from fdflare.analysis.history import flare_history

                assert catalog is not None
                model = fit_balanced(
                    flare_history(_times(train, str(tables.train_path)), catalog),
                    train["target"].to_numpy(),
                    what="history",
                )
                instants.append(_times(val, str(tables.val_path)))
                prob = model(flare_history(instants[-1], catalog))
            else:
                assert features is not None
                model = fit_flux(features(train["label"]), train["target"].to_numpy())
                prob = model(features(val["label"]))
            out.append(FoldPredictions(k, kind, _frame(val["label"], prob, val["target"])))
    if notes is not None:
        notes.extend(dropped.values())
        if instants and "history" not in dropped:
            from fdflare.analysis.history import coverage_note

            assert catalog is not None
            note = coverage_note(pd.DatetimeIndex(np.concatenate(instants)), catalog)
            if note:
                notes.append(f"history baseline: {note}")
    return [p for p in out if p.kind not in dropped]


def write_predictions(
    predictions: Sequence[FoldPredictions], out: str | os.PathLike[str]
) -> list[Path]:
    """Write ``out/fold{k}_{kind}.csv`` for each, atomically; return the paths."""
    from fdflare.core.io import atomic_open

    paths = []
    for p in predictions:
        path = Path(out) / f"fold{p.fold}_{p.kind}.csv"
        with atomic_open(path) as fh:
            p.table.to_csv(fh, index=False, lineterminator="\n", float_format="%.6g")
        paths.append(path)
    return paths
