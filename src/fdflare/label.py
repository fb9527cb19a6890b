"""Label hourly magnetogram instances with the largest flare of the following 24 hours.

For an instance at time ``t`` the prediction window is ``(t, t + window - 1 s]`` on flare
*start* time (STUDY.md section 2). The label is the largest flare of the window by peak flux
(ties go to the earliest), with its location and start, and the other flares of the window.
The binary target is 1 iff that flare is at or above the mode's threshold (``M``: >= M1.0,
``C``: >= C1.0). Instances are kept only where an image exists, and are split into 4 folds by
calendar quarter (fold k validates on months 3k-2 .. 3k of every year).

Input is checked before it is used: options name themselves in their errors, a threshold
below A1.0 is refused (and a window without a flare is never positive), impossible flare
locations are named by file, line and field, and repeated catalog rows are dropped with the
rule of :func:`fdflare.acquire.catalog.drop_duplicate_flares` and counted.

Everything is vectorised: window bounds come from two ``searchsorted`` calls over the sorted
flare start times and the largest flare from a sparse-table range-maximum query, so the whole
2010-2018 hourly range labels in well under a second.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fdflare.acquire.catalog import drop_duplicate_flares, location_problem
from fdflare.core.errors import InputError, UsageError
from fdflare.core.paths import parse_image_times, scan_image_tree
from fdflare.core.recipe import Recipe, canonical_threshold, file_sha256, parse_threshold
from fdflare.core.settings import check_duration, check_time, setting, validate
from fdflare.splits import make_split, select_counts, split_record, split_table

STUDY_START = "2010-12-01 00:00:00"
STUDY_END = "2018-12-31 00:00:00"  # last instance 2018-12-30 23:00, as the study's stop rule
SECOND_NS = 1_000_000_000

TABLE_COLUMNS = (
    "label",
    "time",
    "fold",
    "target",
    "goes_class",
    "flux",
    "fl_lon",
    "fl_lat",
    "fl_start",
    "n_flares",
    "rest_fl",
    "rest_lon",
    "rest_lat",
    "rest_start",
)


def _mode_problem(value: Any) -> str | None:
    try:
        parse_mode(value)
    except UsageError as exc:  # "--mode 'Q': what is wrong": the option is named by the CLI
        return str(exc).split(": ", 1)[-1]
    return None


_TIME: dict[str, Any] = {"metavar": "TIME", "check": check_time}


@dataclass
class LabelConfig:
    """Options of the labelling stage, with the study's defaults.

    Each field carries its help and check (:func:`fdflare.core.settings.setting`):
    ``fdflare label`` generates its options from them and :func:`check_config` checks a
    config. ``n_folds`` (4 in the study) has no option.
    """

    start: str = setting(STUDY_START, "first instance time", **_TIME)
    end: str = setting(STUDY_END, "instances strictly before this time", **_TIME)
    cadence: str = setting("1h", "instance spacing", metavar="DURATION", check=check_duration("0s"))
    window: str = setting(
        "24h", "prediction window", metavar="DURATION", check=check_duration("1s")
    )
    mode: str = setting(
        "M",
        "M: >= M1.0 is positive; C: >= C1.0; or any class from A1.0 up, e.g. M5",
        metavar="CLASS",
        check=_mode_problem,
    )
    gap_hours: float | None = setting(
        None,
        "purge training instances whose window overlaps the validation quarter or that lie "
        "within N hours after it (none: off, as the study)",
        low=0,
        metavar="N",
    )
    n_folds: int = 4
    split: str = setting(
        "quarters",
        "quarters: the study's 4 quarterly folds; chronological: train before "
        "--select-from, select until --test-from, test after; suryabench: SuryaBench's flare "
        "split; or a JSON split file of train, select and test intervals",
        metavar="quarters|chronological|suryabench|FILE",
    )
    select_from: str | None = setting(None, "chronological: selection start", **_TIME)
    test_from: str | None = setting(None, "chronological: test start", **_TIME)

    def checked(self) -> LabelConfig:
        """The config, checked by :func:`check_config` (errors name the field)."""
        check_config(self)
        return self


@dataclass
class LabelResult:
    """The labelled table and what was left out, with counts for the report."""

    table: pd.DataFrame
    folds: dict[int, tuple[pd.DataFrame, pd.DataFrame]]
    recipe: Recipe = field(default_factory=Recipe)
    counts: dict[str, int] = field(default_factory=dict)
    purged: dict[int, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: the selection rows of each fold (a chronological split's select interval)
    selects: dict[int, pd.DataFrame] = field(default_factory=dict)


# --------------------------------------------------------------------------- options


def parse_mode(mode: str) -> float:
    """Return the flux threshold of ``--mode``: a letter (``M`` = M1.0) or a class (``M5``).

    Raises:
        UsageError: ``mode`` is not a class, or lies below A1.0 (``M0``, ``A0``, ``C0.0``),
            which would mark every window positive (:func:`fdflare.core.recipe.parse_threshold`).
    """
    try:
        return parse_threshold(mode, what="--mode")[0]
    except InputError as exc:
        raise UsageError(exc.message) from None


def _iso_time(value: Any) -> pd.Timestamp:
    """A time option in ISO 8601 (a day/month order such as 02/01/2011 is refused)."""
    from fdflare.core.timeparse import parse_time

    return parse_time(value, whole_seconds=False)


def check_config(cfg: LabelConfig) -> tuple[pd.Timestamp, pd.Timestamp, pd.Timedelta, pd.Timedelta]:
    """Check the options before any work; return ``(start, end, cadence, window)``.

    Each field by its own check (:func:`fdflare.core.settings.validate`), then the checks
    across fields: ``end`` after ``start``, ``n_folds`` a divisor of 12, the split.

    Raises:
        InputError: a bad setting, naming the field.
        UsageError: a split and its options that do not go together.
    """
    validate(cfg)
    start, end = _iso_time(cfg.start), _iso_time(cfg.end)
    cadence, window = pd.Timedelta(cfg.cadence), pd.Timedelta(cfg.window)
    if start.tzinfo is not None or end.tzinfo is not None:
        start = start.tz_convert("UTC").tz_localize(None) if start.tzinfo else start
        end = end.tz_convert("UTC").tz_localize(None) if end.tzinfo else end
    if end <= start:
        raise InputError(f"{end} must be after start ({start})", field="end")
    if cfg.n_folds < 1 or 12 % cfg.n_folds:
        raise InputError(f"must divide 12, got {cfg.n_folds}", field="n_folds")
    make_split(cfg.split, select_from=cfg.select_from, test_from=cfg.test_from)
    return start, end, cadence, window


# --------------------------------------------------------------------------- catalog


def _check_frame_locations(catalog: pd.DataFrame) -> None:
    """The same rule on a catalog already read (no line numbers: NOAA reports, frames)."""
    lon = catalog["fl_lon"].to_numpy(dtype=float)
    lat = catalog["fl_lat"].to_numpy(dtype=float)
    problem = location_problem(lon, lat, ~np.isnan(lon), ~np.isnan(lat))
    if problem is not None:
        i, message, on_lon = problem
        when = pd.Timestamp(catalog["start_time"].iloc[i])
        raise InputError(
            f"flare starting {when}: {message}",
            path=catalog.attrs.get("source"),
            field="fl_lon" if on_lon else "fl_lat",
        )


# --------------------------------------------------------------------------- images


def read_image_list(
    images: str | os.PathLike[str], skipped: list[tuple[str, str]] | None = None
) -> list[str]:
    """Return relative image paths from a directory tree or a text file of paths.

    A text file holds one path per line (blank lines and ``#`` comments are ignored);
    absolute or prefixed paths are reduced to their ``YYYY/MM/DD/name`` tail. A tree is
    walked through links to folders; what could not be walked (a link that loops, an
    unreadable folder) is appended to ``skipped`` as ``(path, reason)``.
    """
    p = Path(images)
    if p.is_dir():
        names, missed = scan_image_tree(p)
        if skipped is not None:
            skipped.extend(missed)
        return names
    if not p.is_file():
        raise InputError("no such image directory or list file", path=p)
    data = p.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x}); an image list holds one UTF-8 "
            "path per line",
            path=p,
            line=line,
        ) from None
    lines = text.splitlines()
    names = [ln.strip() for ln in lines]
    names = [n for n in names if n and not n.startswith("#")]
    if names and "," in names[0]:  # a CSV table such as a fold file: its first column
        names = [n.split(",", 1)[0] for n in names]
    names = [n.strip('"') for n in names]
    if names and names[0].lower() in {"label", "path", "filename", "filenames", "timestamp"}:
        names = names[1:]
    return ["/".join(n.replace("\\", "/").split("/")[-4:]) for n in names]


def match_images(
    names: list[str], times: pd.DatetimeIndex
) -> tuple[np.ndarray, np.ndarray, dict[str, int], list[str]]:
    """Match image names to instance times.

    Returns:
        ``(instance_index, names, counts, notes)``: for each instance with an image, its
        index in ``times`` and its relative path; counts of names that could not be used.
    """
    counts: dict[str, int] = {}
    notes: list[str] = []
    if not names:
        return np.array([], dtype=np.int64), np.array([], dtype=object), {"images": 0}, notes
    s = pd.Series(names, dtype="object")
    t, _ext = parse_image_times(s)
    unparsed = t.isna().to_numpy()
    counts["images"] = len(names)
    counts["images_unrecognised"] = int(unparsed.sum())
    if unparsed.any():
        notes.append(
            f"{int(unparsed.sum())} file name(s) do not follow HMI.mYYYY.MM.DD_HH.MM.SS.<ext>, "
            f"e.g. {s[unparsed].iloc[0]!r}; they were not used"
        )
    ok = ~unparsed
    tv = t[ok].to_numpy(dtype="datetime64[ns]").view("i8")
    nv = s[ok].to_numpy()
    grid = pd.DatetimeIndex(times).as_unit("ns").asi8
    pos = np.searchsorted(grid, tv)
    on_grid = (pos < len(grid)) & (grid[np.minimum(pos, len(grid) - 1)] == tv)
    counts["images_off_grid"] = int((~on_grid).sum())
    if (~on_grid).any():
        notes.append(
            f"{int((~on_grid).sum())} image(s) are outside the instance range or off the "
            "cadence grid and were not used"
        )
    pos, nv = pos[on_grid], nv[on_grid]
    order = np.lexsort((nv.astype(str), pos))
    pos, nv = pos[order], nv[order]
    first = np.ones(len(pos), dtype=bool)
    first[1:] = pos[1:] != pos[:-1]
    counts["images_duplicate_time"] = int((~first).sum())
    if (~first).any():
        notes.append(
            f"{int((~first).sum())} image(s) share an instance time with another image; "
            "the first by name was used"
        )
    return pos[first], nv[first], counts, notes


# --------------------------------------------------------------------------- windows


def _range_argmax(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Index of the maximum of ``values[lo:hi]`` per query (earliest on ties; -1 if empty).

    A sparse table: ``O(n log n)`` to build, ``O(1)`` per query, all vectorised.
    """
    n = len(values)
    out = np.full(len(lo), -1, dtype=np.int64)
    length = hi - lo
    nonempty = length > 0
    if n == 0 or not nonempty.any():
        return out
    table = [np.arange(n, dtype=np.int64)]
    k = 1
    while (1 << k) <= n:
        prev = table[-1]
        half = 1 << (k - 1)
        a, b = prev[: n - (1 << k) + 1], prev[half : half + n - (1 << k) + 1]
        table.append(np.where(values[a] >= values[b], a, b))
        k += 1
    q_lo, q_hi, q_len = lo[nonempty], hi[nonempty], length[nonempty]
    level = np.floor(np.log2(q_len)).astype(np.int64)
    res = np.empty(len(q_lo), dtype=np.int64)
    for lev in np.unique(level):
        sel = level == lev
        a = table[lev][q_lo[sel]]
        b = table[lev][q_hi[sel] - (1 << lev)]
        res[sel] = np.where(values[a] >= values[b], a, b)
    out[nonempty] = res
    return out


def _joined_slices(
    tokens: np.ndarray, lo: np.ndarray, hi: np.ndarray, skip: np.ndarray
) -> list[str]:
    """For each row, ``;``-join ``tokens[lo:hi]`` without ``tokens[skip]``."""
    if len(tokens) == 0:
        return [""] * len(lo)
    pieces = [str(x) + ";" for x in tokens]
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in pieces])])
    big = "".join(pieces)
    a, m, m1, b = (
        offsets[lo],
        offsets[np.maximum(skip, 0)],
        offsets[np.maximum(skip, 0) + 1],
        offsets[hi],
    )
    has = (hi - lo) > 1
    return [
        (big[i:j] + big[k:e])[:-1] if h else ""
        for i, j, k, e, h in zip(
            a.tolist(), m.tolist(), m1.tolist(), b.tolist(), has.tolist(), strict=False
        )
    ]


def _fmt_coord(x: np.ndarray) -> np.ndarray:
    return np.array(["nan" if np.isnan(v) else format(v, ".10g") for v in x], dtype=object)


def label_windows(
    catalog: pd.DataFrame,
    times: pd.DatetimeIndex,
    *,
    window: str | pd.Timedelta = "24h",
    threshold: float = 1e-5,
    rest: bool = True,
) -> pd.DataFrame:
    """Label each instance time with the largest flare starting in ``(t, t + window - 1 s]``.

    Args:
        catalog: flares in the schema of :func:`fdflare.acquire.catalog.read_catalog`.
        times: instance times.
        window: window length.
        threshold: peak flux at or above which the target is 1.
        rest: also list the other flares of each window (``;``-separated, by start time).

    Returns:
        One row per instance with ``time, target, goes_class, flux, fl_lon, fl_lat,
        fl_start, n_flares`` and, with ``rest``, ``rest_fl, rest_lon, rest_lat, rest_start``.
    """
    cat = catalog.sort_values("start_time", kind="stable").reset_index(drop=True)
    starts = cat["start_time"].to_numpy(dtype="datetime64[ns]").view("i8")
    flux = cat["flux"].to_numpy(dtype=float)
    times = pd.DatetimeIndex(times).as_unit("ns")
    t = times.asi8
    w = pd.Timedelta(window).value - SECOND_NS
    lo = np.searchsorted(starts, t, side="right")
    hi = np.searchsorted(starts, t + w, side="right")
    best = _range_argmax(flux, lo, hi)
    has = best >= 0
    b = np.maximum(best, 0)

    cls = cat["goes_class"].astype(str).to_numpy(dtype=object)
    out = pd.DataFrame({"time": pd.DatetimeIndex(times)})
    best_flux = np.where(has, flux[b] if len(flux) else np.nan, np.nan)
    # positive only where the window holds a flare, whatever the threshold
    out["target"] = (has & (np.nan_to_num(best_flux, nan=0.0) >= threshold)).astype(np.int64)
    best_cls = np.full(len(t), None, dtype=object)
    best_cls[has] = cls[b[has]]
    out["goes_class"] = pd.array(best_cls, dtype="string")
    out["flux"] = best_flux
    lon = cat["fl_lon"].to_numpy(dtype=float)
    lat = cat["fl_lat"].to_numpy(dtype=float)
    out["fl_lon"] = np.where(has, lon[b] if len(lon) else np.nan, np.nan)
    out["fl_lat"] = np.where(has, lat[b] if len(lat) else np.nan, np.nan)
    fl_start = np.where(has, starts[b] if len(starts) else 0, np.iinfo(np.int64).min)
    out["fl_start"] = pd.to_datetime(fl_start.view("datetime64[ns]"))
    out["n_flares"] = (hi - lo).astype(np.int64)
    if rest:
        out["rest_fl"] = _joined_slices(cls, lo, hi, best)
        out["rest_lon"] = _joined_slices(_fmt_coord(lon), lo, hi, best)
        out["rest_lat"] = _joined_slices(_fmt_coord(lat), lo, hi, best)
        st = pd.to_datetime(starts.view("datetime64[ns]")).strftime("%Y-%m-%d %H:%M:%S")
        out["rest_start"] = _joined_slices(np.asarray(st, dtype=object), lo, hi, best)
    return out


# --------------------------------------------------------------------------- folds


def assign_folds(times: pd.Series | pd.DatetimeIndex, n_folds: int = 4) -> np.ndarray:
    """Fold of each time: calendar quarter (``n_folds=4``) -> 1..4; months split evenly."""
    if 12 % n_folds:
        raise ValueError(f"n_folds must divide 12, got {n_folds}")
    months = pd.DatetimeIndex(times).month.to_numpy()
    return (months - 1) // (12 // n_folds) + 1


def purge_mask(
    times: pd.Series | pd.DatetimeIndex,
    fold_of: np.ndarray,
    fold: int,
    *,
    window: str | pd.Timedelta = "24h",
    gap_hours: float = 0.0,
    n_folds: int = 4,
) -> np.ndarray:
    """Training instances of ``fold`` to drop so no window crosses into validation.

    An instance outside the validation period is purged when its window ``(t, t + window
    - 1 s]`` reaches into the next period and that period validates ``fold``, or when it
    lies less than ``gap_hours`` after the end of a validation period.
    """
    idx = pd.DatetimeIndex(times)
    months = 12 // n_folds
    period_start = idx.to_period("M").asfreq("M")
    pm = period_start.month.to_numpy()
    first_month = ((pm - 1) // months) * months + 1
    block_start = pd.to_datetime(
        {"year": idx.year, "month": first_month, "day": np.ones(len(idx), dtype=int)}
    )
    block_start = pd.DatetimeIndex(block_start)
    next_start = block_start + pd.DateOffset(months=months)
    next_fold = fold_of % n_folds + 1
    prev_fold = (fold_of - 2) % n_folds + 1
    w = pd.Timedelta(window) - pd.Timedelta(seconds=1)
    train = fold_of != fold
    forward = (next_fold == fold) & ((idx + w) >= next_start)
    backward = (prev_fold == fold) & ((idx - block_start) < pd.Timedelta(hours=gap_hours))
    return np.asarray(train & (forward | backward))


# --------------------------------------------------------------------------- stage


def label_recipe(cfg: LabelConfig, catalog: pd.DataFrame | None = None) -> Recipe:
    """The recipe of a labelling run: what its positives mean and how they were made.

    The catalog is named by its file (``attrs["source"]`` of
    :func:`~fdflare.acquire.catalog.read_catalog`) with the SHA-256 of its bytes.
    """
    source = None if catalog is None else catalog.attrs.get("source")
    name = sha = None
    if source and Path(str(source)).is_file():
        name, sha = Path(str(source)).name, file_sha256(str(source))
    return Recipe(
        threshold=canonical_threshold(cfg.mode),
        window=cfg.window,
        cadence=cfg.cadence,
        purge_hours=cfg.gap_hours,
        split=split_record(cfg),
        catalog=name,
        catalog_sha256=sha,
    )


def make_labels(
    catalog: pd.DataFrame,
    image_names: list[str],
    config: LabelConfig | None = None,
) -> LabelResult:
    """Build the full label table and the per-fold train/validation tables.

    Args:
        catalog: flares (see :func:`fdflare.acquire.catalog.read_catalog`).
        image_names: relative image paths in the study layout.
        config: options; the study's defaults when None.
    """
    cfg = config or LabelConfig()
    start, end, cadence, window = check_config(cfg)
    times = pd.date_range(start, end, freq=cadence, inclusive="left").as_unit("ns")
    threshold = parse_mode(cfg.mode)
    _check_frame_locations(catalog)
    dropped_on_read = int(catalog.attrs.get("duplicates_dropped", 0) or 0)
    catalog, dropped_here = drop_duplicate_flares(catalog)

    inst, names, counts, notes = match_images(image_names, times)
    kept = times[inst]
    table = label_windows(catalog, kept, window=window, threshold=threshold)
    table.insert(0, "label", pd.array(names, dtype="string"))
    table.insert(2, "fold", assign_folds(kept, cfg.n_folds))
    table = table[[c for c in TABLE_COLUMNS if c in table.columns]]
    counts["instances_in_range"] = len(times)
    counts["instances_without_image"] = len(times) - len(kept)
    counts["instances"] = len(kept)
    counts["positives"] = int(table["target"].sum())
    counts["flares_in_catalog"] = len(catalog)
    counts["duplicate_flares_dropped"] = dropped_on_read + dropped_here
    counts["flares_without_location"] = int(catalog["fl_lon"].isna().sum())

    folds: dict[int, tuple[pd.DataFrame, pd.DataFrame]] = {}
    purged: dict[int, int] = {}
    split = make_split(cfg.split, select_from=cfg.select_from, test_from=cfg.test_from)
    if split is not None:  # one fold: train, select and test (val) rows
        table, parts, warnings = split_table(table, split, cfg.window, cfg.gap_hours, counts)
        folds, selects = {1: (parts.train, parts.test)}, {1: parts.select}
        recipe = label_recipe(cfg, catalog)
        return LabelResult(
            table, folds, recipe, counts, {1: parts.purged}, notes, warnings, selects
        )
    fold_of = table["fold"].to_numpy()
    for k in range(1, cfg.n_folds + 1):
        val_mask = fold_of == k
        train_mask = ~val_mask
        if cfg.gap_hours is not None:
            drop = purge_mask(
                table["time"],
                fold_of,
                k,
                window=window,
                gap_hours=cfg.gap_hours,
                n_folds=cfg.n_folds,
            )
            purged[k] = int(drop.sum())
            train_mask &= ~drop
        folds[k] = (table[train_mask], table[val_mask])
    warnings = [
        f"fold {k} has no {part} instances: {start} .. {end} holds "
        + ("no month of its quarter" if part == "validation" else "only its own quarter")
        + f"; Fold{k}_{'val' if part == 'validation' else 'train'}.csv holds a header only"
        for k, (train, val) in folds.items()
        for part, rows in (("training", train), ("validation", val))
        if len(rows) == 0
    ]
    return LabelResult(
        table=table,
        folds=folds,
        recipe=label_recipe(cfg, catalog),
        counts=counts,
        purged=purged,
        notes=notes,
        warnings=warnings,
    )


def _fold_csv(df: pd.DataFrame) -> str:
    """The study's fold file: ``label,goes_class`` with the binary target."""
    rows = (df["label"].astype(str) + "," + df["target"].astype(str)).tolist()
    return "label,goes_class\n" + "".join(r + "\n" for r in rows)


def write_labels(
    result: LabelResult, out: str | os.PathLike[str], config: LabelConfig | None = None
) -> list[Path]:
    """Write ``Fold{k}_{train,val}.csv``, ``labels.csv`` and ``summary.json`` into ``out``.

    Every file is written atomically, after all of them have been computed.
    """
    from fdflare.core.io import write_text_atomic

    out = Path(out)
    texts: dict[str, str] = {}
    for k, (train, val) in result.folds.items():
        texts[f"Fold{k}_train.csv"] = _fold_csv(train)
        texts[f"Fold{k}_val.csv"] = _fold_csv(val)
        if k in result.selects:
            texts[f"Fold{k}_select.csv"] = _fold_csv(result.selects[k])
    table = result.table.copy()
    table["time"] = table["time"].dt.strftime("%Y-%m-%d %H:%M:%S")
    table["fl_start"] = table["fl_start"].dt.strftime("%Y-%m-%d %H:%M:%S")
    texts["labels.csv"] = table.to_csv(index=False, lineterminator="\n")
    summary = {
        "recipe": result.recipe.to_dict(),
        "config": asdict(config) if config else None,
        "counts": result.counts,
        "folds": {
            str(k): {
                "train": len(tr),
                "train_positive": int(tr["target"].sum()),
                "val": len(va),
                "val_positive": int(va["target"].sum()),
                "purged": result.purged.get(k, 0),
                **select_counts(result.selects.get(k)),
            }
            for k, (tr, va) in result.folds.items()
        },
        "notes": result.notes,
        "warnings": result.warnings,
    }
    texts["summary.json"] = json.dumps(summary, indent=2) + "\n"
    written = []
    for name, text in texts.items():
        write_text_atomic(out / name, text)
        written.append(out / name)
    return written
