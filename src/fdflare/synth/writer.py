"""Write a synthetic data set: images, geometry, flare catalog and regions, resumable."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fdflare import __version__
from fdflare.acquire.catalog import write_catalog
from fdflare.core.disk import NEAR_LIMB_DEG
from fdflare.core.errors import InputError, RunError
from fdflare.core.io import atomic_path, write_text_atomic
from fdflare.core.paths import image_relpaths
from fdflare.prepare.geometry import GEOMETRY_FILE, write_geometry_file
from fdflare.prepare.jp2 import write_helioviewer_jp2
from fdflare.synth.config import GEOMETRY_COLUMNS, SynthConfig
from fdflare.synth.flares import draw_flares, window_fraction
from fdflare.synth.regions import _patch_arrays, _region_arrays, simulate_regions
from fdflare.synth.render import helioviewer_header, render_magnetogram, to_uint8
from fdflare.synth.seeds import _HASH_MISSING, _STREAM_NOISE, _days, _hash_uniform, _time_keys
from fdflare.synth.sun import DiskGeometry, disk_geometry

__all__ = ["SYNTH_FORMAT", "SynthResult", "generate"]

#: Version of the generator's output; bumped whenever the same seed would give other files.
SYNTH_FORMAT = 2


@dataclass
class SynthResult:
    """What :func:`generate` wrote.

    Attributes:
        out: the output directory.
        config: the resolved settings (also saved as ``synth.json``).
        geometry: one row per image (the content of ``geometry.csv``).
        catalog: the flares (the content of ``catalog.csv``, times as datetimes).
        regions: the active regions (the content of ``regions.csv``).
        written: images written by this call (PNG/JPG and JPEG 2000).
        skipped: images already present from an earlier, identical run.
        missing: image times left out as data gaps.
        counts: flare counts by class letter, near-limb (``|lon| > 70``), behind the limb
            (``|lon| > 90``), unlocated; and hourly 24 h windows with a flare >= M1.0 / C1.0.
    """

    out: Path
    config: SynthConfig
    geometry: pd.DataFrame
    catalog: pd.DataFrame
    regions: pd.DataFrame
    written: int = 0
    skipped: int = 0
    missing: int = 0
    counts: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- the run


def _image_rng(seed: int, key: int, size: int) -> np.random.Generator:
    return np.random.default_rng(
        np.random.SeedSequence([seed, _STREAM_NOISE, int(key) + (1 << 40), size])
    )


def _write_raster(path: Path, data: np.ndarray, fmt: str) -> None:
    from PIL import Image

    image = Image.fromarray(data)
    with atomic_path(path) as tmp:
        if fmt == "png":
            image.save(tmp, format="PNG", compress_level=1)
        else:
            image.save(tmp, format="JPEG", quality=95)


def _render_row(
    r: dict[str, np.ndarray], row: pd.Series, size: int, config: SynthConfig, key: int
) -> np.ndarray:
    geometry = DiskGeometry(
        size,
        float(row["center_x"]),
        float(row["center_y"]),
        float(row["radius_px"]),
        float(row["b0_deg"]),
    )
    patches = _patch_arrays(r, float(_days([row["date_obs"]])[0]))
    rng = _image_rng(config.seed, key, size)
    field = render_magnetogram(patches, geometry, noise=config.noise, rng=rng)
    return to_uint8(field, config.clip, config.stretch)


def _check_previous(out: Path, config: SynthConfig) -> None:
    """Refuse to mix runs: ``out`` must be empty of synth output or hold the same settings."""
    marker = out / "synth.json"
    if not marker.exists():
        if (out / "images").exists() or (out / "jp2").exists():
            raise InputError(
                "the directory holds images but no synth.json; choose an empty --out directory",
                path=out,
            )
        return
    try:
        old = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the previous run's settings: {exc}", path=marker) from None
    new = _config_record(config)
    for key in sorted(set(old) | set(new)):
        if key == "fdflare_version":
            continue
        if old.get(key) != new.get(key):
            raise InputError(
                f"the directory holds a synth run with {key}={old.get(key)!r}, not "
                f"{new.get(key)!r}; use another --out directory (or delete this one) to "
                "change settings, or the same settings to resume",
                path=marker,
                field=key,
            )


def _config_record(config: SynthConfig) -> dict[str, Any]:
    record = dataclasses.asdict(config)
    record["synth_format"] = SYNTH_FORMAT
    record["fdflare_version"] = __version__
    return record


def _rounded_geometry(geometry: pd.DataFrame) -> pd.DataFrame:
    g = geometry.copy()
    t = pd.DatetimeIndex(g["date_obs"])
    g["date_obs"] = t.strftime("%Y-%m-%dT%H:%M:%S.") + pd.Index(t.microsecond // 1000).astype(
        str
    ).str.zfill(3)
    for c in ("center_x", "center_y", "radius_px"):
        g[c] = g[c].round(4)
    g["b0_deg"] = g["b0_deg"].round(5)
    g["rsun_obs"] = g["rsun_obs"].round(4)
    g["cdelt_arcsec"] = g["cdelt_arcsec"].round(6)
    g["dsun_m"] = g["dsun_m"].round(0)
    return g[list(GEOMETRY_COLUMNS)]


def _regions_csv(regions: pd.DataFrame) -> str:
    r = regions.copy()
    for c in ("emerge_time", "end_time"):
        r[c] = pd.DatetimeIndex(r[c]).strftime("%Y-%m-%d %H:%M:%S")
    for c in ("lon0", "lat", "t_grow", "t_decay", "lifetime", "tilt", "separation", "complexity"):
        r[c] = r[c].round(4)
    r["flux_max"] = r["flux_max"].map(lambda v: f"{v:.4e}")
    return r.to_csv(index=False, lineterminator="\n")


def _flare_counts(catalog: pd.DataFrame) -> dict[str, int]:
    letters = catalog["goes_class"].astype("string").str[0]
    lon = catalog["fl_lon"].abs()
    return {
        "flares": len(catalog),
        "C": int((letters == "C").sum()),
        "M": int((letters == "M").sum()),
        "X": int((letters == "X").sum()),
        "near_limb": int((lon > NEAR_LIMB_DEG).sum()),
        "behind_limb": int((lon > 90).sum()),
        "unlocated": int(lon.isna().sum()),
    }


def generate(
    out: str | os.PathLike[str],
    config: SynthConfig | None = None,
    *,
    workers: int | None = None,
    progress: bool | None = None,
    on_image: Callable[[Path], None] | None = None,
) -> SynthResult:
    """Write a synthetic data set to ``out``: images, geometry, flare catalog and regions.

    Output (see ``docs/synth.md``): ``images/YYYY/MM/DD/HMI.m....png`` (or ``.jpg``),
    ``geometry.csv``, ``catalog.csv`` (flares from ``start`` to ``end`` + 24 h, so every
    image has a complete 24 h window), ``regions.csv``, ``synth.json`` (the settings) and,
    with ``jp2``, ``jp2/YYYY/MM/DD/HMI.m....jp2``.

    Every file is written atomically. A run that stops can be resumed by running it again
    with the same settings: images already there are kept. ``geometry.csv`` is written
    last, so its presence means the run completed.

    Args:
        out: output directory (created).
        config: the settings (default :class:`SynthConfig`'s); its ``end`` is the last
            image time, included (:func:`last_image_time` turns an excluded end into it).
        workers: worker processes rendering and encoding images (default: up to 4, by
            CPU count, one per 10 s of work, see :func:`default_workers`); 1 renders here.
        progress: show progress on stderr (default and ``True``: a bar on a terminal, a
            line per tenth elsewhere; ``False``: nothing).
        on_image: called with each image path written (for tests and custom progress).

    Raises:
        InputError: a setting is invalid, or ``out`` holds a run made with other settings.
    """
    config = (config or SynthConfig()).resolved()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("output path exists and is not a directory", path=out)
    _check_previous(out, config)

    requested = config.times()
    keys = _time_keys(requested)
    gap = _hash_uniform(config.seed, _HASH_MISSING, keys) < config.missing
    times = requested[~gap]
    keys = keys[~gap]
    start_t, end_t = pd.Timestamp(config.start), pd.Timestamp(config.end)
    catalog_end = end_t + pd.Timedelta(days=1)
    regions = simulate_regions(
        start_t, catalog_end, seed=config.seed, region_rate=config.region_rate
    )
    catalog = draw_flares(
        regions,
        start_t,
        catalog_end,
        seed=config.seed,
        flare_rate=config.flare_rate,
        b0=config.b0,
        unlocated=config.unlocated,
    )
    geometry = disk_geometry(times, size=config.size, seed=config.seed, b0=config.b0)
    geometry.insert(0, "path", image_relpaths(times, ext=config.fmt))

    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "synth.json", json.dumps(_config_record(config), indent=2) + "\n")
    write_text_atomic(out / "regions.csv", _regions_csv(regions))
    write_catalog(catalog, out / "catalog.csv")

    paths = {"img": [str(out / "images" / p) for p in geometry["path"]]}
    frames = {"img": geometry}
    if config.jp2:
        frames["jp2"] = disk_geometry(times, size=config.jp2_size, seed=config.seed, b0=config.b0)
        paths["jp2"] = [str(out / "jp2" / p) for p in image_relpaths(times, ext="jp2")]
    jobs = [(kind, i) for kind in paths for i in range(len(times))]
    todo = [(kind, i) for kind, i in jobs if not os.path.exists(paths[kind][i])]
    skipped = len(jobs) - len(todo)
    state = _JobState(
        config=config,
        regions=_region_arrays(regions),
        keys=np.asarray(keys, dtype=np.int64),
        geometry={k: f[list(_RENDER_COLUMNS)].copy() for k, f in frames.items()},
        paths=paths,
    )

    written = _run_jobs(state, todo, workers=workers, progress=progress, on_done=on_image)

    # rounded here, so written as Python writes the rounded numbers
    write_geometry_file(out / GEOMETRY_FILE, _rounded_geometry(geometry), float_format=None)
    counts: dict[str, Any] = _flare_counts(catalog)
    hourly = times[(times.minute == 0) & (times.second == 0)]
    counts["hourly_instances"] = len(hourly)
    counts["positive_M"] = window_fraction(hourly, catalog, 1e-5)[0]
    counts["positive_C"] = window_fraction(hourly, catalog, 1e-6)[0]
    return SynthResult(
        out=out,
        config=config,
        geometry=geometry,
        catalog=catalog,
        regions=regions,
        written=written,
        skipped=skipped,
        missing=int(gap.sum()),
        counts=counts,
    )


#: Geometry columns a worker needs to render an image and write its JP2 header.
_RENDER_COLUMNS = (
    "date_obs",
    "center_x",
    "center_y",
    "radius_px",
    "b0_deg",
    "rsun_obs",
    "cdelt_arcsec",
    "dsun_m",
)


@dataclass
class _JobState:
    """Everything a worker needs to render and write any image of the run."""

    config: SynthConfig
    regions: dict[str, np.ndarray]
    keys: np.ndarray
    geometry: dict[str, pd.DataFrame]  # "img" and, with jp2, "jp2": the rows of each image
    paths: dict[str, list[str]]


_STATE: _JobState | None = None  # set in each worker process by _init_worker


def _init_worker(state: _JobState) -> None:
    global _STATE
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process alone reports Ctrl-C
    _STATE = state


def _do_job(state: _JobState, job: tuple[str, int]) -> str:
    """Render and write one image (``("img", i)`` or ``("jp2", i)``); return its path."""
    kind, i = job
    config, path = state.config, state.paths[kind][i]
    row = state.geometry[kind].iloc[i]
    size = config.size if kind == "img" else config.jp2_size
    data = _render_row(state.regions, row, size, config, int(state.keys[i]))
    if kind == "img":
        _write_raster(Path(path), data, config.fmt)
    else:
        write_helioviewer_jp2(path, data, helioviewer_header(row, size))
    return path


def _work(job: tuple[str, int]) -> str:
    assert _STATE is not None, "worker not initialised"
    return _do_job(_STATE, job)


def estimated_seconds(jobs: Sequence[tuple[str, int]], config: SynthConfig) -> float:
    """Return a rough single-process time for ``jobs``: about 20 ms per 512 x 512 image.

    Rendering grows with the pixels; a JPEG 2000 adds its encoding (about 2 s at 4096).
    """
    n_img = sum(1 for kind, _ in jobs if kind == "img")
    n_jp2 = len(jobs) - n_img
    img = 0.002 + 0.02 * (config.size / 512) ** 2
    jp2 = 0.002 + 0.05 * (config.jp2_size / 512) ** 2
    return n_img * img + n_jp2 * jp2


def default_workers(seconds: float) -> int:
    """Return the default number of worker processes for about ``seconds`` of rendering.

    One per 10 s of work (starting a process costs about a second), at most 4 and at most
    the CPUs this process may use; small runs render in this process.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus, int(seconds // 10)))


def _run_jobs(
    state: _JobState,
    jobs: Sequence[tuple[str, int]],
    *,
    workers: int | None,
    progress: bool | None,
    on_done: Callable[[Path], None] | None,
) -> int:
    """Render ``jobs`` in worker processes with a progress bar; return how many were written.

    With one worker (or one job) everything runs in this process. Workers ignore Ctrl-C:
    on an interrupt the images in flight are finished (each written atomically), the rest
    cancelled, and the ``KeyboardInterrupt`` goes on to the caller.
    """
    from fdflare.core.progress import progress_bar

    if workers is None:
        workers = default_workers(estimated_seconds(jobs, state.config))
    workers = max(1, int(workers))
    workers = min(workers, max(1, len(jobs)))
    done = 0
    # a bar on a terminal, a line per tenth elsewhere (never carriage returns in a log)
    bar = progress_bar(total=len(jobs), unit="img", desc="synth", enabled=progress is not False)
    with bar:

        def finish(path: str) -> None:
            nonlocal done
            done += 1
            bar.update(1)
            if on_done is not None:
                on_done(Path(path))

        if workers == 1:
            for job in jobs:
                finish(_do_job(state, job))
            return done
        context = multiprocessing.get_context("spawn")
        pool = cf.ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(state,)
        )
        pending: set[cf.Future[str]] = set()
        try:
            for job in jobs:
                pending.add(pool.submit(_work, job))
                if len(pending) >= 4 * workers:
                    finished, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                    for f in finished:
                        finish(f.result())
            while pending:
                finished, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for f in finished:
                    finish(f.result())
        except cf.process.BrokenProcessPool:
            pool.shutdown(wait=False, cancel_futures=True)
            raise RunError(
                "a worker process died (out of memory, or it could not start); the images "
                "written so far are kept: rerun the same command to resume, with --workers 1 "
                "to render in one process"
            ) from None
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    return done
