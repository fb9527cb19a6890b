"""The table stages against the study's way: label, prepare (JP2 decode) and the loader.

* ``label``: the study's per-instance loop (a boolean mask over the catalog DataFrame, a
  sort by class and list building for every hourly instance) against
  :func:`fdflare.label.make_labels` over the 2010-12-01 .. 2018-12-30 hourly range, with a
  synthetic catalog of the size of the study's flare list (8,606 flares).
* ``prepare``: the study's full JPEG 2000 decode plus area resize against
  :func:`fdflare.prepare.decode.decode_jp2` (reduced-resolution decode plus area resize), on
  a synthetic Helioviewer-style JP2.
* ``loader``: items per second of one process (one core, one torch thread) over the
  augmented training set (flare x4, no-flare x2): the study's pipeline (one ``Dataset`` per
  augmentation, a ``pandas`` row lookup and a PIL open per item, torchvision transforms,
  float32 ``ToTensor``) against :class:`fdflare.data.dataset.FlareDataset` on the path
  ``fdflare prepare`` and ``fdflare train`` take by default (the array store, uint8 items).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fdflare.bench.measure import Ceilings, Row, Settings, best_rate, median_seconds

__all__ = [
    "label_row",
    "loader_row",
    "prepare_fits_binned_row",
    "prepare_fits_row",
    "prepare_row",
    "study_label_loop",
    "study_training_set",
    "synthetic_catalog",
    "synthetic_jp2",
    "write_images",
]

#: Flares in the study's list (HEK-style, solar cycle 24) that the synthetic catalog mimics.
STUDY_FLARES = 8606


# --------------------------------------------------------------------------- label


def synthetic_catalog(n: int = STUDY_FLARES, seed: int = 0) -> pd.DataFrame:
    """A flare catalog in :func:`fdflare.acquire.catalog.read_catalog`'s schema.

    Start times uniform over 2010-2018, GOES classes from a power law (about 8% >= M1.0,
    as cycle 24's list), positions on the visible disk.
    """
    from fdflare.label import STUDY_END, STUDY_START

    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp(STUDY_START).value
    t1 = pd.Timestamp(STUDY_END).value
    starts = pd.to_datetime(np.sort(rng.integers(t0, t1, n)).astype("datetime64[ns]"))
    starts = starts.floor("min")
    flux = 1e-6 * (1 - rng.random(n)) ** (-1 / 1.1)  # >= C1.0, heavy tail
    flux = np.minimum(flux, 9.9e-4)
    letters = np.select([flux >= 1e-4, flux >= 1e-5], ["X", "M"], "C")
    scale = np.select([flux >= 1e-4, flux >= 1e-5], [1e-4, 1e-5], 1e-6)
    value = np.floor(flux / scale * 10) / 10
    classes = [f"{a}{v:.1f}" for a, v in zip(letters, value, strict=True)]
    return pd.DataFrame(
        {
            "start_time": starts,
            "goes_class": pd.array(classes, dtype="string"),
            "flux": value * scale,
            "fl_lon": rng.uniform(-90, 90, n).round(),
            "fl_lat": rng.uniform(-40, 40, n).round(),
        }
    )


def study_label_loop(catalog: pd.DataFrame, times: pd.DatetimeIndex) -> list[list[Any]]:
    """The study's labelling loop: one DataFrame filter and sort per instance."""
    df = catalog.rename(columns={"start_time": "start"})
    rows: list[list[Any]] = []
    for t in times:
        pwe = t + pd.Timedelta("23:59:59")
        emp = df[(df.start > t) & (df.start <= pwe)].sort_values("goes_class", ascending=False)
        emp = emp.reset_index()
        if emp.empty:
            rows.append([t, "NF", "unk", "unk", [], [], []])
            continue
        top = emp.head(1).squeeze(axis=0)
        rest = emp.iloc[1:]
        rows.append(
            [
                t,
                top.goes_class,
                top.fl_lon,
                top.fl_lat,
                list(rest.goes_class),
                list(rest.fl_lon),
                list(rest.fl_lat),
            ]
        )
    return rows


def label_row(settings: Settings, ceilings: Ceilings) -> Row:
    """The label row: the full hourly range, the study's loop timed on a sample of it."""
    from fdflare.core.paths import image_relpaths
    from fdflare.label import STUDY_END, STUDY_START, LabelConfig, label_windows, make_labels

    catalog = synthetic_catalog()
    times = pd.date_range(STUDY_START, STUDY_END, freq="1h", inclusive="left").as_unit("ns")
    names = list(image_relpaths(times))
    cfg = LabelConfig()
    repeat = settings.pick(1, 5)
    fast = median_seconds(lambda: make_labels(catalog, names, cfg), repeat, warmup=1)
    core = median_seconds(lambda: label_windows(catalog, times), repeat, warmup=0)
    n_base = settings.pick(300, 3000)
    sample = times[:: max(1, len(times) // n_base)][:n_base]
    t0 = time.perf_counter()
    study_label_loop(catalog, sample)
    per_instance = (time.perf_counter() - t0) / len(sample)
    base = per_instance * len(times)
    return Row(
        name="label",
        unit="s",
        baseline=base,
        fdflare=fast,
        limit=(
            f"pandas table building: the vectorised window search (label_windows) takes "
            f"{core:.3f} s of the {fast:.3f} s; the rest makes image names, matches them and "
            "writes the fold tables"
        ),
        note=(
            f"{len(times):,} hourly instances, synthetic catalog of {len(catalog):,} flares; "
            f"the study's loop timed on {len(sample):,} instances "
            f"({per_instance * 1e3:.2f} ms each) and scaled to all of them; fdflare median "
            f"of {repeat}"
        ),
    )


# --------------------------------------------------------------------------- prepare


def synthetic_jp2(path: Path, n: int, *, lossless: bool = False, seed: int = 0) -> None:
    """Write an ``n`` x ``n`` Helioviewer-style JP2 of a noisy disk with regions.

    Lossy (five quality layers, like Helioviewer's files) unless ``lossless``; six
    resolution levels.
    """
    from fdflare.prepare.jp2 import write_helioviewer_jp2

    rng = np.random.default_rng(seed)
    y = np.arange(n, dtype=np.float32)[:, None]
    x = np.arange(n, dtype=np.float32)[None, :]
    c, r = n / 2 - 0.5, 0.47 * n
    inside = (x - c) ** 2 + (y - c) ** 2 <= r * r
    field = 128 + rng.normal(0, 6, (n, n)).astype(np.float32)
    for _ in range(6):  # active regions of both polarities
        cy, cx = rng.uniform(0.3 * n, 0.7 * n, 2)
        rr = rng.uniform(0.01, 0.04) * n
        field[(x - cx) ** 2 + (y - cy) ** 2 < rr * rr] = rng.choice([20.0, 235.0])
    data = np.where(inside, np.clip(np.rint(field), 1, 255), 0).astype(np.uint8)
    cdelt = 0.504 * 4096 / n
    header: dict[str, str | int | float] = {
        "DATE-OBS": "2012-03-07T00:00:05.200",
        "NAXIS1": n,
        "NAXIS2": n,
        "CRPIX1": c + 1,
        "CRPIX2": n - c,
        "CDELT1": cdelt,
        "CDELT2": cdelt,
        "CROTA2": 0.0,
        "RSUN_OBS": r * cdelt,
    }
    layers = None if lossless else [160.0, 80.0, 40.0, 20.0, 10.0]
    write_helioviewer_jp2(path, data, header, num_resolutions=6, quality_layers=layers)


def study_decode(path: Path, size: int) -> np.ndarray:
    """The study's way: decode the whole JP2, then area-resize to ``size``."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return np.asarray(im.resize((size, size), Image.Resampling.BOX))


def reduced_decode_only(path: Path, k: int) -> None:
    """Decode at ``2**k`` reduced resolution, nothing else (the decoder's share)."""
    from PIL import Image

    with Image.open(path) as im:
        im.reduce = k
        im.load()


def prepare_row(settings: Settings, ceilings: Ceilings) -> Row:
    """The prepare row: one JP2 to a ``size`` x ``size`` image, the study's way and fdflare's."""
    from fdflare.prepare.decode import decode_jp2

    src, size = settings.pick((2048, 256), (4096, 512))
    repeat = settings.pick(3, 7)
    with tempfile.TemporaryDirectory(prefix="fdflare-bench-") as tmp:
        path = Path(tmp) / "HMI.m2012.03.07_00.00.00.jp2"
        synthetic_jp2(path, src)
        base = median_seconds(lambda: study_decode(path, size), repeat)
        fast = median_seconds(lambda: decode_jp2(path, size), repeat)
        k = decode_jp2(path, size)[1]
        decode_only = median_seconds(lambda: reduced_decode_only(path, k), repeat)
        diff = np.abs(decode_jp2(path, size)[0].astype(int) - study_decode(path, size).astype(int))
        mb = path.stat().st_size / 1e6
    return Row(
        name="prepare",
        unit="ms",
        baseline=base * 1e3,
        fdflare=fast * 1e3,
        limit=(
            f"the JPEG 2000 decoder (OpenJPEG): the reduced decode alone (k={k}) takes "
            f"{decode_only * 1e3:.1f} ms of the {fast * 1e3:.1f} ms"
        ),
        note=(
            f"{src} x {src} lossy JP2 ({mb:.1f} MB) -> {size} x {size}, one process, median "
            f"of {repeat}; pixels differ from the study's by {diff.mean():.2f} grey levels on "
            "average"
        ),
    )


def synthetic_hmi_fits(
    path: Path, n: int, seed: int = 0, *, binned: tuple[Path, int] | None = None
) -> dict[str, Any]:
    """Write an ``n`` x ``n`` JSOC-style magnetogram: field in gauss, RICE FITS, upside down.

    Noise of 8 G on the disk, a few active regions of +-1500 G, no data off the disk,
    ``CROTA2`` 180 (stored south up, as HMI). Stored as ``hmi.M_720s`` stores it: ``int32``
    in 0.1 G (``BSCALE = 0.1``, ``BLANK`` for no data), RICE_1, one row per tile. With
    ``binned = (path, k)`` also writes the same record as JSOC's export processing bins it
    (``download --source jsoc --rebin k``: turned north up, each ``k`` x ``k`` block the
    mean of its pixels with data, ``CDELT`` and ``CRPIX`` of the binned grid, ``HISTORY``
    ``Boxcar bin by k``). Returns the header written.
    """
    from astropy.io import fits

    rng = np.random.default_rng(seed)
    y = np.arange(n, dtype=np.float32)[:, None]
    x = np.arange(n, dtype=np.float32)[None, :]
    c, r = n / 2 - 0.5, 0.47 * n
    field = rng.normal(0, 8, (n, n)).astype(np.float32)
    for _ in range(6):
        cy, cx = rng.uniform(0.3 * n, 0.7 * n, 2)
        rr = rng.uniform(0.01, 0.04) * n
        field[(x - cx) ** 2 + (y - cy) ** 2 < rr * rr] = rng.choice([-1500.0, 1500.0])
    blank = np.iinfo(np.int32).min
    stored = np.where((x - c) ** 2 + (y - c) ** 2 > r * r, blank, np.rint(field / 0.1))
    cdelt = 0.504 * 4096 / n
    header: dict[str, Any] = {
        "T_REC": "2012.03.07_00:00:00_TAI",
        "DATE-OBS": "2012-03-07T00:00:05.20",
        "CRPIX1": c + 1,
        "CRPIX2": c + 1,
        "CDELT1": cdelt,
        "CDELT2": cdelt,
        "CROTA2": 180.0,
        "RSUN_OBS": r * cdelt,
        "CRLT_OBS": -7.2,
        "BUNIT": "Gauss",
    }
    hdr = fits.Header()
    for key, value in header.items():
        hdr[key] = value
    comp = fits.CompImageHDU(stored.astype(np.int32), header=hdr, compression_type="RICE_1")
    comp.header["BSCALE"], comp.header["BZERO"], comp.header["BLANK"] = 0.1, 0.0, blank
    fits.HDUList([fits.PrimaryHDU(), comp]).writeto(path, overwrite=True)
    if binned is not None:
        out, k = binned
        gauss = np.where(stored == blank, np.nan, stored * 0.1)[::-1, ::-1]  # north up
        blocks = gauss.reshape(n // k, k, n // k, k)
        has = ~np.isnan(blocks)
        total = np.where(has, blocks, 0.0).sum(axis=(1, 3))
        count = has.sum(axis=(1, 3))
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        hdr_b = fits.Header()
        for key, value in header.items():
            hdr_b[key] = value
        hdr_b["CDELT1"] = hdr_b["CDELT2"] = cdelt * k
        hdr_b["CRPIX1"] = hdr_b["CRPIX2"] = (n - c - 0.5) / k + 0.5  # turned: n + 1 - (c + 1)
        hdr_b["CROTA2"] = 0.0
        hdr_b["HISTORY"] = f"Boxcar bin by {k}, North is up"
        ints = np.where(np.isnan(mean), blank, np.rint(np.nan_to_num(mean) / 0.1))
        comp = fits.CompImageHDU(ints.astype(np.int32), header=hdr_b, compression_type="RICE_1")
        comp.header["BSCALE"], comp.header["BZERO"], comp.header["BLANK"] = 0.1, 0.0, blank
        fits.HDUList([fits.PrimaryHDU(), comp]).writeto(out, overwrite=True)
    return header


def interleaved_medians(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median seconds of each function, timed in turn (one call of each per round).

    On a machine that others load, interleaving gives each the same share of the busy
    moments, so their ratio holds even when the absolute times do not. One untimed round
    first.
    """
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(1, repeat)):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) for name, t in times.items()}


def _one_record(
    tmp: Path, src: int, size: int, *, binned: bool = True
) -> tuple[Path, Path | None, Path]:
    """One synthetic record as JSOC's FITS, as JSOC bins it to ``size`` and as Helioviewer's JP2.

    Returns:
        ``(fits, binned, jp2)``: the JP2 is made from the same field with Helioviewer's
        recipe (+-250 G, lossy JPEG 2000), so every path makes the same image; ``binned``
        is None (not written) with ``binned=False``.
    """
    from fdflare.prepare.fits import north_up, parse_scaling, read_fits, scale_field
    from fdflare.prepare.jp2 import write_helioviewer_jp2

    fits_path = tmp / "HMI.m2012.03.07_00.00.00.fits"
    binned_path = tmp / "binned.fits" if binned else None
    synthetic_hmi_fits(fits_path, src, binned=(binned_path, src // size) if binned_path else None)
    data, header = read_fits(fits_path)
    stored, turned = north_up(data, header)
    grey = scale_field(stored, turned, parse_scaling("helioviewer"))
    jp2_path = tmp / "HMI.m2012.03.07_00.00.00.jp2"
    jp2_header = {k: v for k, v in turned.items() if isinstance(v, int | float | str)}
    write_helioviewer_jp2(
        jp2_path, grey, jp2_header, num_resolutions=6, quality_layers=[160, 80, 40, 20, 10]
    )
    return fits_path, binned_path, jp2_path


def prepare_fits_binned_row(settings: Settings, ceilings: Ceilings) -> Row:
    """A record JSOC binned (``download --source jsoc --rebin``) against its JP2 in prepare.

    The same record as :func:`prepare_fits_row`'s, binned on JSOC's side to the output size
    (``jsoc_rebin``'s boxcar, written as JSOC writes it); the baseline is fdflare's JP2
    path on Helioviewer's JP2 of the record, timed in turn. The note gives the bytes and how
    far the image is from the full-resolution FITS image and from the JP2's full decode.
    """
    import os

    from fdflare.prepare.decode import decode_jp2
    from fdflare.prepare.fits import decode_fits_with_geometry

    src, size = settings.pick((1024, 256), (4096, 512))
    repeat = settings.pick(5, 15)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with tempfile.TemporaryDirectory(prefix="fdflare-bench-") as tmp:
        fits_path, binned_path, jp2_path = _one_record(Path(tmp), src, size)
        assert binned_path is not None
        t = interleaved_medians(
            {
                "jp2": lambda: decode_jp2(jp2_path, size),
                "binned": lambda: decode_fits_with_geometry(binned_path, size),
            },
            repeat,
        )
        full = decode_fits_with_geometry(fits_path, size)[0].astype(int)
        binned = decode_fits_with_geometry(binned_path, size)[0].astype(int)
        from_jp2 = study_decode(jp2_path, size).astype(int)
        mb, full_mb = binned_path.stat().st_size / 1e6, fits_path.stat().st_size / 1e6
    return Row(
        name="prepare_fits_binned",
        unit="ms",
        baseline=t["jp2"] * 1e3,
        fdflare=t["binned"] * 1e3,
        limit="a small file read whole: decompressing its rows and the limb's share",
        note=(
            f"baseline: fdflare's JP2 path on Helioviewer's JP2 of the same record; binned "
            f"FITS / JP2 = {t['binned'] / t['jp2']:.2f}x per image; {src} x {src} record "
            f"binned {src // size} x {src // size} by JSOC (--rebin {src // size}) to "
            f"{size} x {size}, {mb:.2f} MB against {full_mb:.1f} MB unbinned; one process, "
            f"median of {repeat} rounds timed in turn, load average {load:.1f} at the start; "
            f"{np.abs(binned - full).mean():.2f} grey levels from the full-resolution FITS "
            f"image, {np.abs(binned - from_jp2).mean():.2f} from the JP2's full decode (the "
            "field is averaged before the clip at +-250 G)"
        ),
        extra={"ratio_to_jp2": t["binned"] / t["jp2"], "mb": mb, "load_average": load},
    )


def prepare_fits_row(settings: Settings, ceilings: Ceilings) -> Row:
    """FITS against JP2 in prepare: one record's image from JSOC's FITS and Helioviewer's JP2.

    The JP2 is made from the same field with Helioviewer's recipe (+-250 G, lossy JPEG
    2000), so both paths make the same image; the baseline is fdflare's JP2 path
    (``decode_jp2``), fdflare's side the default FITS path (fdflare's row reader: every
    row decompressed, the exact block mean), timed in turn. The note gives astropy's
    whole-image path (``--full-decode``), the sampled rows (one and two per block; their
    images are not the block mean, see ``docs/prepare.md``), the decompression's share and
    how far the images are from the full average and the JP2's. The same record binned by
    JSOC is :func:`prepare_fits_binned_row`.
    """
    import os

    from fdflare.prepare.decode import decode_jp2
    from fdflare.prepare.fits import decode_fits_with_geometry
    from fdflare.prepare.fitsrows import open_row_tiles

    src, size = settings.pick((1024, 256), (4096, 512))
    repeat = settings.pick(5, 15)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with tempfile.TemporaryDirectory(prefix="fdflare-bench-") as tmp:
        fits_path, _, jp2_path = _one_record(Path(tmp), src, size, binned=False)
        tiles = open_row_tiles(fits_path)
        if tiles is None:  # JSOC's layout: the row reader must apply
            raise RuntimeError("the synthetic FITS is not read by the row reader")
        buf = np.empty((64, src), np.int32)

        def decompress_all() -> None:
            for start in range(0, src, 64):
                tiles.rows(np.arange(start, min(start + 64, src)), out=buf)

        t = interleaved_medians(
            {
                "jp2": lambda: decode_jp2(jp2_path, size),
                "fits": lambda: decode_fits_with_geometry(fits_path, size),
                "one": lambda: decode_fits_with_geometry(fits_path, size, rows_per_block=1),
                "two": lambda: decode_fits_with_geometry(fits_path, size, rows_per_block=2),
                "rows": decompress_all,
                "whole": lambda: decode_fits_with_geometry(fits_path, size, full_decode=True),
            },
            repeat,
        )
        whole = t["whole"]
        image = decode_fits_with_geometry(fits_path, size)[0].astype(int)
        one = decode_fits_with_geometry(fits_path, size, rows_per_block=1)[0].astype(int)
        two = decode_fits_with_geometry(fits_path, size, rows_per_block=2)[0].astype(int)
        from_jp2 = study_decode(jp2_path, size).astype(int)
        mb = fits_path.stat().st_size / 1e6
    err1, err2 = np.abs(one - image), np.abs(two - image)
    return Row(
        name="prepare_fits",
        unit="ms",
        baseline=t["jp2"] * 1e3,
        fdflare=t["fits"] * 1e3,
        limit=(
            f"RICE has no reduced-resolution decode: decompressing all {src} rows takes "
            f"{t['rows'] * 1e3:.0f} of the {t['fits'] * 1e3:.0f} ms"
        ),
        note=(
            f"baseline: fdflare's JP2 path on Helioviewer's JP2 of the same record; FITS / "
            f"JP2 = {t['fits'] / t['jp2']:.1f}x per image; {src} x {src} RICE FITS, int32 "
            f"BSCALE 0.1 ({mb:.1f} MB) -> {size} x {size}, one process, median of {repeat} "
            f"rounds timed in turn, load average {load:.1f} at the start; astropy's whole "
            f"image (--full-decode): {whole * 1e3:.0f} ms ({whole / t['jp2']:.0f}x); sampled "
            f"rows, not the block mean: one per block {t['one'] * 1e3:.1f} ms "
            f"({t['one'] / t['jp2']:.1f}x, {err1.mean():.2f} grey levels from the mean, "
            f"99th percentile {np.percentile(err1, 99):.0f}), two {t['two'] * 1e3:.1f} ms "
            f"({t['two'] / t['jp2']:.1f}x, {err2.mean():.2f}, "
            f"{np.percentile(err2, 99):.0f}); the FITS image differs from the JP2's full "
            f"decode by {np.abs(image - from_jp2).mean():.2f} grey levels on average; the "
            "same record binned by JSOC: the prepare_fits_binned row"
        ),
        extra={
            "ratio_to_jp2": t["fits"] / t["jp2"],
            "one_row_ms": t["one"] * 1e3,
            "two_rows_ms": t["two"] * 1e3,
            "astropy_ms": whole * 1e3,
            "load_average": load,
        },
    )


# --------------------------------------------------------------------------- loader


def write_images(root: Path, n: int, size: int = 512, seed: int = 0) -> pd.DataFrame:
    """Write ``n`` synthetic grey JPGs in the study's tree; return their label table.

    The table has the study's columns ``label`` and ``goes_class`` (every 4th a flare).
    """
    from PIL import Image

    from fdflare.core.paths import image_relpaths

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disk = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.45 * size) ** 2
    times = pd.date_range("2011-01-01", periods=n, freq="h")
    labels = list(image_relpaths(times, "jpg"))
    for label in labels:
        a = np.full((size, size), 128.0)
        a[disk] += rng.normal(0, 6, int(disk.sum()))
        for _ in range(6):  # active regions
            cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
            r = rng.integers(max(2, size // 100), max(3, size // 25))
            blob = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            a[blob & disk] = rng.choice([20, 235])
        a[~disk] = 0
        path = root / label
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a.clip(0, 255).astype(np.uint8), "L").save(path, quality=90)
    return pd.DataFrame({"label": labels, "goes_class": (np.arange(n) % 4 == 0).astype(int)})


def study_training_set(table: pd.DataFrame, root: Path) -> Any:
    """The study's training set: six per-augmentation datasets, concatenated."""
    import torch
    import torchvision.transforms as T
    from PIL import Image
    from torch.utils.data import ConcatDataset, Dataset

    class StudyDataset(Dataset):
        """The study's per-class dataset: a filtered table, ``iloc`` per item, PIL + transform."""

        def __init__(self, transform: Callable[[Any], Any], cls: int) -> None:
            self.annotations = table[table["goes_class"] == cls]
            self.transform = transform

        def __getitem__(self, index: int) -> tuple[Any, Any]:
            hmi = Image.open(root / self.annotations.iloc[index, 0])
            return self.transform(hmi), torch.tensor(int(self.annotations.iloc[index, 1]))

        def __len__(self) -> int:
            return len(self.annotations)

    tt = T.ToTensor()
    rot = T.RandomRotation(degrees=(-5, 5))
    hf, vf = T.RandomHorizontalFlip(1.0), T.RandomVerticalFlip(1.0)
    parts = [
        StudyDataset(T.Compose([tt]), 1),
        StudyDataset(T.Compose([hf, tt]), 1),
        StudyDataset(T.Compose([vf, tt]), 1),
        StudyDataset(T.Compose([rot, tt]), 1),
        StudyDataset(T.Compose([tt]), 0),
        StudyDataset(T.Compose([T.RandomChoice([hf, vf, rot]), tt]), 0),
    ]
    return ConcatDataset(parts)


def _items(ds: Any) -> Callable[[], int]:
    def run() -> int:
        n = len(ds)
        for i in range(n):
            ds[i]
        return n

    return run


def _through_loader(ds: Any, *, workers: int, pin: bool, repeat: int) -> Callable[[], int]:
    """Items per call through a ``DataLoader`` of ``workers`` processes, batch 64."""
    import torch

    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=64,
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=workers > 0,
        shuffle=False,
    )

    def run() -> int:
        return sum(len(x) for x, _ in loader)

    return run


def loader_row(settings: Settings, ceilings: Ceilings) -> Row:
    """The loader row: items per second of one process over the augmented training set."""
    import torch

    from fdflare.data.dataset import FlareDataset
    from fdflare.data.sources import open_images
    from fdflare.prepare.pack import build_array_store

    n, repeat = settings.pick((24, 2), (400, 3))
    size = 512
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory(prefix="fdflare-bench-") as tmp:
            root = Path(tmp) / "images"
            table = write_images(root, n, size)
            ours = table.rename(columns={"goes_class": "target"})
            study = study_training_set(table, root)
            base = best_rate(_items(study), repeat)
            files = FlareDataset(
                ours, open_images(root), image_size=size, augment=True, as_uint8=True
            )
            decode_path = best_rate(_items(files), repeat)
            geometry = pd.DataFrame({"path": table["label"], "width": size, "height": size})
            build_array_store(root, geometry, size, workers=1, progress=False)
            source = open_images(root)  # the default: the array store where there is one
            default = FlareDataset(ours, source, image_size=size, augment=True, as_uint8=True)
            fast = best_rate(_items(default), repeat)
            samples = len(default)
            kind = type(source).__name__
            through: dict[str, float] = {}
            if not settings.quick:  # batches of 64 from one worker process, as train does
                pin = settings.device == "cuda"
                for key, ds in (("study", study), ("fdflare", default)):
                    run = _through_loader(ds, workers=1, pin=pin, repeat=repeat)
                    through[key] = best_rate(run, repeat + 1)  # the first pass starts the worker
    finally:
        torch.set_num_threads(threads)
    pin_text = settings.device == "cuda"
    # every item reads its image (size^2 bytes) from the memory map and writes it once
    ceiling = ceilings.memory_gbs * 1e9 / (2 * size * size)
    return Row(
        name="loader",
        unit="img/s",
        baseline=base,
        fdflare=fast,
        higher_is_better=True,
        limit=(
            f"memory bandwidth {ceilings.memory_gbs:.1f} GB/s: {ceiling:,.0f} img/s to read "
            f"and write each {size} x {size} uint8 image once; the rotations (a quarter of the "
            "items) and Python per item cost the rest"
        ),
        note=(
            f"one process, 1 torch thread (per core); {n} images of {size} x {size} -> "
            f"{samples} augmented samples, best of {repeat}; fdflare's default path "
            f"({kind}, uint8); decoding the JPGs instead: {decode_path:,.0f} img/s "
            f"({decode_path / base:.2f}x)"
            + (
                f"; through a DataLoader (1 worker, batch 64{', pinned' if pin_text else ''}): "
                f"study {through['study']:,.0f}, fdflare {through['fdflare']:,.0f} img/s"
                if through
                else ""
            )
        ),
        extra={"decode_path_img_s": decode_path, "dataloader_1_worker_img_s": through},
    )
