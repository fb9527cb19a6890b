"""Write a synthetic data set: images, geometry, flare catalog and regions, resumable."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fdflare import __version__
from fdflare.core.errors import InputError
from fdflare.core.io import atomic_path, write_text_atomic
from fdflare.core.paths import image_relpaths
from fdflare.synth.config import CATALOG_COLUMNS, GEOMETRY_COLUMNS, SynthConfig
from fdflare.synth.flares import draw_flares, window_fraction
from fdflare.synth.jp2 import helioviewer_header
from fdflare.synth.regions import _patch_arrays, _region_arrays, simulate_regions
from fdflare.synth.render import render_magnetogram, to_uint8
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


def _geometry_csv(geometry: pd.DataFrame) -> str:
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
    return g[list(GEOMETRY_COLUMNS)].to_csv(index=False, lineterminator="\n")


def _catalog_csv(catalog: pd.DataFrame) -> str:
    c = catalog[list(CATALOG_COLUMNS)].copy()
    c["start_time"] = pd.DatetimeIndex(c["start_time"]).strftime("%Y-%m-%d %H:%M:%S")
    return c.to_csv(index=False, lineterminator="\n", na_rep="")


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
        "near_limb": int((lon > 70).sum()),
        "behind_limb": int((lon > 90).sum()),
        "unlocated": int(lon.isna().sum()),
    }


def generate(
    out: str | os.PathLike[str],
    *,
    start: str = SynthConfig.start,
    end: str | None = None,
    cadence: str = SynthConfig.cadence,
    size: int = SynthConfig.size,
    seed: int = SynthConfig.seed,
    flare_rate: float = SynthConfig.flare_rate,
    region_rate: float = SynthConfig.region_rate,
    fmt: str = SynthConfig.fmt,
    b0: float | str = SynthConfig.b0,
    noise: float = SynthConfig.noise,
    clip: float = SynthConfig.clip,
    stretch: float = SynthConfig.stretch,
    missing: float = SynthConfig.missing,
    unlocated: float = SynthConfig.unlocated,
    jp2: bool = False,
    jp2_size: int = SynthConfig.jp2_size,
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
        start: first image time.
        end: last image time, inclusive (default ``start`` + 28 days).
        cadence: image spacing.
        size: image width and height.
        seed: the synthetic Sun.
        flare_rate: multiplies every region's flare rate.
        region_rate: regions emerging per day.
        fmt: ``png`` or ``jpg``.
        b0: observer latitude in degrees, or ``"auto"``.
        noise: white noise, gauss per pixel.
        clip: gauss mapped to 1 and 255.
        stretch: ``asinh`` stretch of the 8-bit scaling (0: linear).
        missing: fraction of image times left out as data gaps.
        unlocated: fraction of flares without a location.
        jp2: also write Helioviewer-style JPEG 2000 files.
        jp2_size: their width and height.
        workers: threads rendering and encoding images (default: up to 4, by CPU count).
        progress: show a progress bar on stderr (default: when stderr is a terminal).
        on_image: called with each image path written (for tests and custom progress).

    Raises:
        InputError: a setting is invalid, or ``out`` holds a run made with other settings.
    """
    config = SynthConfig(
        start=start,
        end=end,
        cadence=cadence,
        size=size,
        seed=seed,
        flare_rate=flare_rate,
        region_rate=region_rate,
        fmt=fmt,
        b0=b0,
        noise=noise,
        clip=clip,
        stretch=stretch,
        missing=missing,
        unlocated=unlocated,
        jp2=jp2,
        jp2_size=jp2_size,
    ).resolved()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("output path exists and is not a directory", path=out)
    _check_previous(out, config)
    if config.jp2:
        try:
            from fdflare.prepare.jp2 import write_helioviewer_jp2  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the build
            raise InputError(
                f"--jp2 needs fdflare.prepare.jp2, which cannot be imported: {exc}", field="jp2"
            ) from None

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
    write_text_atomic(out / "catalog.csv", _catalog_csv(catalog))

    arrays = _region_arrays(regions)
    jobs: list[tuple[str, int]] = [("img", i) for i in range(len(times))]
    jp2_geometry = None
    jp2_paths: np.ndarray | None = None
    if config.jp2:
        jp2_geometry = disk_geometry(times, size=config.jp2_size, seed=config.seed, b0=config.b0)
        jp2_paths = image_relpaths(times, ext="jp2")
        jobs += [("jp2", i) for i in range(len(times))]

    def target(kind: str, i: int) -> Path:
        if kind == "img":
            return out / "images" / str(geometry["path"].iloc[i])
        assert jp2_paths is not None
        return out / "jp2" / str(jp2_paths[i])

    todo = [(kind, i) for kind, i in jobs if not target(kind, i).exists()]
    skipped = len(jobs) - len(todo)

    def work(job: tuple[str, int]) -> Path:
        kind, i = job
        path = target(kind, i)
        if kind == "img":
            data = _render_row(arrays, geometry.iloc[i], config.size, config, int(keys[i]))
            _write_raster(path, data, config.fmt)
        else:
            from fdflare.prepare.jp2 import write_helioviewer_jp2

            assert jp2_geometry is not None
            row = jp2_geometry.iloc[i]
            data = _render_row(arrays, row, config.jp2_size, config, int(keys[i]))
            write_helioviewer_jp2(path, data, helioviewer_header(row, config.jp2_size))
        return path

    written = _run_jobs(work, todo, workers=workers, progress=progress, on_done=on_image)

    write_text_atomic(out / "geometry.csv", _geometry_csv(geometry))
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


def _run_jobs(
    work: Callable[[tuple[str, int]], Path],
    jobs: Sequence[tuple[str, int]],
    *,
    workers: int | None,
    progress: bool | None,
    on_done: Callable[[Path], None] | None,
) -> int:
    """Run ``work`` over ``jobs`` on a bounded thread pool with a progress bar; return the count."""
    from tqdm import tqdm

    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    workers = max(1, int(workers))
    show = sys.stderr.isatty() if progress is None else progress
    done = 0
    lock = threading.Lock()
    with tqdm(total=len(jobs), unit="img", disable=not show, file=sys.stderr, desc="synth") as bar:

        def finish(path: Path) -> None:
            nonlocal done
            with lock:
                done += 1
                bar.update(1)
            if on_done is not None:
                on_done(path)

        if workers == 1:
            for job in jobs:
                finish(work(job))
            return done
        with cf.ThreadPoolExecutor(max_workers=workers) as pool:
            pending: set[cf.Future[Path]] = set()
            it = iter(jobs)
            try:
                for job in it:
                    pending.add(pool.submit(work, job))
                    if len(pending) >= 2 * workers:
                        finished, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                        for f in finished:
                            finish(f.result())
                for f in cf.as_completed(pending):
                    finish(f.result())
            except BaseException:
                for f in pending:
                    f.cancel()
                raise
    return done
