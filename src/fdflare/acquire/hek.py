"""GOES flares with locations from the Heliophysics Events Knowledgebase (HEK).

The HEK (https://www.lmsal.com/hek/) lists the flares of NOAA SWPC's GOES event reports
(``frm_name == "SWPC"``) with their positions. :func:`fetch_hek_catalog` asks its JSON API
for one calendar month at a time, so a failure costs one month and a long range shows
progress per month; a failed month is retried with exponential back-off, finished months
can be kept in a cache folder so that a rerun fetches only what is missing, and the
records are turned into the common catalog schema of :mod:`fdflare.acquire.catalog`.

Positions: HEK gives Stonyhurst ``hgs_x`` (longitude) / ``hgs_y`` (latitude) in degrees for
SWPC flares, which are used as they are; where they are missing, the helioprojective
``hpc_x`` / ``hpc_y`` (arcsec, seen from Earth at the flare start) are converted with
:mod:`sunpy.coordinates`. A point off the solar disk has no Stonyhurst position and
becomes unknown (NaN), as does the ``(0, 0)`` placeholder HEK writes for "no position";
the flare itself is kept.

The base URL comes from the ``url`` argument, else the ``FDFLARE_HEK_URL`` environment
variable, else :data:`DEFAULT_HEK_URL`, so tests and mirrors can point the client at
another server.

Why not ``sunpy.net.hek.HEKClient``: it takes a ``url`` argument, but ``sunpy.net`` cannot
be imported without sunpy's ``net`` extra (beautifulsoup4, drms, zeep), which fdflare does
not otherwise need; its requests run through ``urllib`` with no timeout, so a stalled
server hangs a run for ever; and it builds an astropy ``SkyCoord`` per record. This module
sends the same query (the parameters ``sunpy.net.hek`` sends) through httpx with timeouts
and bounded paging, and converts all positions in one vectorised ``SkyCoord``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fdflare.acquire.catalog import select_flares
from fdflare.acquire.goes import CLASS_PATTERN, class_flux, normalise_class
from fdflare.core.errors import DownloadError, InputError
from fdflare.core.http import GaveUp, HttpPolicy, Retryable
from fdflare.core.recipe import parse_threshold
from fdflare.core.timeparse import parse_time

__all__ = [
    "DEFAULT_HEK_URL",
    "HEK_URL_ENV",
    "RECORD_FIELDS",
    "HEKFlareClient",
    "fetch_hek_catalog",
    "hpc_to_hgs",
    "month_intervals",
    "records_to_catalog",
    "resolve_hek_url",
    "select_flares",  # from fdflare.acquire.catalog, kept here for old imports
]

DEFAULT_HEK_URL = "https://www.lmsal.com/hek/her"
HEK_URL_ENV = "FDFLARE_HEK_URL"
#: The fields kept from each HEK record (HEK returns about 250).
RECORD_FIELDS = (
    "event_starttime",
    "event_peaktime",
    "event_endtime",
    "fl_goescls",
    "hgs_x",
    "hgs_y",
    "hpc_x",
    "hpc_y",
    "ar_noaanum",
    "frm_name",
    "kb_archivid",
)
_TIME_FMT = "%Y-%m-%dT%H:%M:%S"
# HEK may still be ingesting the last days' reports: months ending later than this before
# now are fetched again on every run rather than cached.
_SETTLE = pd.Timedelta(days=3)


def resolve_hek_url(url: str | None = None) -> str:
    """Return the HEK base URL: ``url``, else ``$FDFLARE_HEK_URL``, else the public HEK.

    Raises:
        InputError: the URL is not an ``http(s)://host/...`` address.
    """
    import httpx

    source = "--base-url"
    if not url:
        url = os.environ.get(HEK_URL_ENV) or None
        source = HEK_URL_ENV
    if not url:
        return DEFAULT_HEK_URL
    url = url.strip().rstrip("?&")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise InputError(f"not a valid URL: {url!r} ({exc})", field=source) from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InputError(
            f"the HEK URL must be an http:// or https:// address with a host, got {url!r}",
            field=source,
        )
    return url


def month_intervals(
    start: pd.Timestamp, end: pd.Timestamp
) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Split ``[start, end)`` at calendar month boundaries.

    >>> month_intervals(pd.Timestamp("2011-01-15"), pd.Timestamp("2011-03-01"))[0]
    (Timestamp('2011-01-15 00:00:00'), Timestamp('2011-02-01 00:00:00'))
    """
    if end <= start:
        return []
    bounds = pd.date_range(start.to_period("M").to_timestamp(), end, freq="MS")
    edges = sorted({start, end, *(b for b in bounds if start < b < end)})
    return list(itertools.pairwise(edges))


@dataclass
class HEKFlareClient:
    """Query HEK's JSON API for flare records, one time interval at a time.

    Args:
        url: base URL of the HEK ``her`` service (see :func:`resolve_hek_url`).
        timeout: seconds to wait for each read (and for a connection, without
            ``connect_timeout``).
        connect_timeout: seconds to wait for a connection (default: ``timeout``).
        retries: further attempts after a failed one (server errors, timeouts and
            malformed replies are retried; 4xx errors other than 429 are not).
        backoff: seconds before the first retry; doubled each time, with jitter, up to
            ``backoff_max``; a server's ``Retry-After`` is honoured instead.
        backoff_max: longest back-off in seconds.
        page_size: records per page (HEK's ``result_limit``).
        max_pages: pages per interval before giving up (bounds the paging loop).
        frm_name: the feature recognition method whose flares to list.
        sleep: the function to wait with (tests pass one that records the waits).

    Timeouts, retries, back-off and ``Retry-After`` follow :class:`fdflare.core.http.HttpPolicy`,
    the same policy as the Helioviewer downloader's (:meth:`policy`).
    """

    url: str = DEFAULT_HEK_URL
    timeout: float = 60.0
    connect_timeout: float | None = None
    retries: int = 3
    backoff: float = 2.0
    backoff_max: float = 60.0
    page_size: int = 500
    max_pages: int = 200
    frm_name: str = "SWPC"
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def policy(self) -> HttpPolicy:
        """The HTTP policy of this client (one request in flight)."""
        return HttpPolicy(
            connect_timeout=self.connect_timeout or self.timeout,
            read_timeout=self.timeout,
            retries=self.retries,
            backoff=self.backoff,
            backoff_max=self.backoff_max,
            concurrency=1,
            sleep=self.sleep,
        )

    def params(
        self, t0: pd.Timestamp, t1: pd.Timestamp, min_letter: str | None = None, page: int = 1
    ) -> dict[str, str]:
        """Return the query parameters for flares in ``[t0, t1]`` (as ``sunpy.net.hek`` sends)."""
        p = {
            "cosec": "2",  # JSON
            "cmd": "search",
            "type": "column",
            "event_type": "fl",
            "event_starttime": t0.strftime(_TIME_FMT),
            "event_endtime": t1.strftime(_TIME_FMT),
            "event_coordsys": "helioprojective",
            "x1": "-5000",
            "x2": "5000",
            "y1": "-5000",
            "y2": "5000",
            "param0": "FRM_NAME",
            "op0": "=",
            "value0": self.frm_name,
        }
        if min_letter:
            # HEK compares class strings; ">= 'C'" keeps C, M and X. The exact threshold
            # (e.g. C5.0) is applied afterwards on the peak flux.
            p.update({"param1": "FL_GOESCLS", "op1": ">=", "value1": min_letter})
        p.update({"result_limit": str(self.page_size), "page": str(page)})
        return p

    def _page(
        self, client: Any, params: dict[str, str], policy: HttpPolicy
    ) -> tuple[list[dict[str, Any]], bool]:
        import httpx

        try:
            with policy.slot():
                response = client.get(self.url, params=params)
        except httpx.HTTPError as exc:  # connect/read errors and timeouts
            classified = policy.transport_error(exc)
            if isinstance(classified, Retryable):
                raise classified from None
            raise DownloadError(f"{type(exc).__name__}: {exc}") from None
        policy.check_status(response, "HEK")  # 429 and 5xx are retried
        if response.status_code != 200:
            raise DownloadError(
                f"HTTP {response.status_code} from {response.request.url}: {response.text[:200]!r}"
            )
        try:
            body = response.json()
        except ValueError:
            raise Retryable(f"reply is not JSON: {response.text[:120]!r}") from None
        if not isinstance(body, dict) or not isinstance(body.get("result"), list):
            raise Retryable(f"reply has no 'result' list: {str(body)[:120]!r}")
        records = [r for r in body["result"] if isinstance(r, dict)]
        if len(records) != len(body["result"]):
            raise Retryable("reply has 'result' entries that are not records")
        return records, bool(body.get("overmax", False))

    def search(
        self,
        client: Any,
        t0: pd.Timestamp,
        t1: pd.Timestamp,
        min_letter: str | None = None,
        *,
        policy: HttpPolicy | None = None,
    ) -> list[dict[str, Any]]:
        """Return the records (reduced to :data:`RECORD_FIELDS`) of one interval, retrying.

        Args:
            client: an open :class:`httpx.Client`.
            t0: interval start.
            t1: interval end.
            min_letter: lowest class letter to ask the server for, or None for all.
            policy: the HTTP policy (default :meth:`policy`).

        Raises:
            DownloadError: after ``retries`` further failed attempts, or at once for a
                client error (4xx other than 429) or more than ``max_pages`` pages.
        """
        policy = policy or self.policy()

        def attempt() -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            for page in range(1, self.max_pages + 1):
                records, overmax = self._page(client, self.params(t0, t1, min_letter, page), policy)
                out.extend({k: r.get(k) for k in RECORD_FIELDS} for r in records)
                if not overmax:
                    return out
            raise DownloadError(
                f"HEK still reports more results after {self.max_pages} pages of "
                f"{self.page_size} for {t0:%Y-%m-%d}..{t1:%Y-%m-%d}"
            )

        what = f"HEK query for {t0:%Y-%m-%d %H:%M}..{t1:%Y-%m-%d %H:%M}"
        try:
            return policy.call(what, attempt)
        except GaveUp as exc:
            raise DownloadError(exc.reason) from None


def hpc_to_hgs(
    x_arcsec: Sequence[float] | np.ndarray,
    y_arcsec: Sequence[float] | np.ndarray,
    times: Sequence[Any] | np.ndarray | pd.Series | pd.DatetimeIndex,
) -> tuple[np.ndarray, np.ndarray]:
    """Convert helioprojective positions seen from Earth to Stonyhurst longitude/latitude.

    Vectorised through :mod:`sunpy.coordinates`: one ``SkyCoord`` in ``Helioprojective``
    (``observer="earth"``, ``obstime=times``) transformed to ``HeliographicStonyhurst``.
    Points off the solar disk give NaN.

    Args:
        x_arcsec: helioprojective longitude (solar X), arcsec.
        y_arcsec: helioprojective latitude (solar Y), arcsec.
        times: observation times (UTC), one per point.

    Returns:
        Stonyhurst longitude in (-180, 180] and latitude, degrees.
    """
    x = np.asarray(x_arcsec, dtype=float)
    y = np.asarray(y_arcsec, dtype=float)
    t = pd.to_datetime(pd.Series(np.asarray(times)))
    if not (x.shape == y.shape == (len(t),)):
        raise ValueError(f"x, y and times differ in length: {x.shape}, {y.shape}, {len(t)}")
    if len(x) == 0:
        return np.empty(0), np.empty(0)
    try:
        import astropy.units as u
        from astropy.coordinates import SkyCoord
        from astropy.time import Time
        from sunpy.coordinates import frames
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "converting helioprojective positions needs sunpy and astropy: "
            "pip install 'fdflare[solar]'"
        ) from exc
    obstime = Time(t.to_numpy(dtype="datetime64[ns]"), scale="utc")
    hpc = SkyCoord(
        x * u.arcsec,
        y * u.arcsec,
        frame=frames.Helioprojective(obstime=obstime, observer="earth"),
    )
    hgs = hpc.transform_to(frames.HeliographicStonyhurst(obstime=obstime))
    lon = np.asarray(hgs.lon.wrap_at(180 * u.deg).to_value(u.deg), dtype=float)
    lat = np.asarray(hgs.lat.to_value(u.deg), dtype=float)
    return lon, lat


def _naive_utc(value: pd.Timestamp | str, name: str) -> pd.Timestamp:
    return parse_time(value, name=name, whole_seconds=False)


def _numbers(values: pd.Series) -> np.ndarray:
    return pd.to_numeric(values.astype("string").str.strip(), errors="coerce").to_numpy(
        dtype=float, na_value=np.nan
    )


def records_to_catalog(records: pd.DataFrame) -> pd.DataFrame:
    """Turn HEK flare records into the common catalog schema.

    Records without a start time or with a malformed class are left out and counted,
    records without any class likewise; nothing else is dropped. Locations come from
    ``hgs_x/hgs_y`` where given, else from ``hpc_x/hpc_y`` via :func:`hpc_to_hgs`;
    ``(0, 0)`` placeholders and points off the disk become NaN.

    Args:
        records: one row per HEK record with (a subset of) :data:`RECORD_FIELDS`.

    Returns:
        The catalog (``start_time, goes_class, flux, fl_lon, fl_lat``), sorted by start
        time, with ``attrs["counts"]``: ``records``, ``bad_time``, ``unclassified``,
        ``bad_class``, ``location_hgs``, ``location_hpc``, ``off_disk``,
        ``placeholder_locations``, ``unknown_location``.
    """
    rec = records.reindex(columns=list(RECORD_FIELDS))
    n = len(rec)
    start = pd.to_datetime(
        rec["event_starttime"].astype("string").str.strip(), format="ISO8601", errors="coerce"
    )
    if getattr(start.dt, "tz", None) is not None:
        start = start.dt.tz_convert("UTC").dt.tz_localize(None)
    bad_time = start.isna().to_numpy()
    cls = rec["fl_goescls"].astype("string").str.strip()
    unclassified = (cls.isna() | cls.eq("")).to_numpy(dtype=bool)
    class_ok = cls.str.match(CLASS_PATTERN).fillna(False).to_numpy(dtype=bool)
    bad_class = ~unclassified & ~class_ok
    keep = ~bad_time & class_ok

    hgs_x, hgs_y = _numbers(rec["hgs_x"]), _numbers(rec["hgs_y"])
    hpc_x, hpc_y = _numbers(rec["hpc_x"]), _numbers(rec["hpc_y"])
    with np.errstate(invalid="ignore"):
        hgs_zero = (hgs_x == 0) & (hgs_y == 0)
        hpc_zero = (hpc_x == 0) & (hpc_y == 0)
        hgs_ok = (
            np.isfinite(hgs_x)
            & np.isfinite(hgs_y)
            & ~hgs_zero
            & (np.abs(hgs_x) <= 180)
            & (np.abs(hgs_y) <= 90)
        )
    hpc_ok = np.isfinite(hpc_x) & np.isfinite(hpc_y) & ~hpc_zero
    use_hpc = keep & ~hgs_ok & hpc_ok
    lon = np.where(hgs_ok, hgs_x, np.nan)
    lat = np.where(hgs_ok, hgs_y, np.nan)
    if use_hpc.any():
        conv_lon, conv_lat = hpc_to_hgs(hpc_x[use_hpc], hpc_y[use_hpc], start[use_hpc].to_numpy())
        # 1e-6 degrees is far below the arcsec precision of the input; rounding keeps the
        # written catalog free of float noise (12.0, not 11.99999999994).
        lon[use_hpc], lat[use_hpc] = np.round(conv_lon, 6), np.round(conv_lat, 6)
    off_disk = use_hpc & np.isnan(lon)
    placeholder = keep & ~hgs_ok & ~hpc_ok & (hgs_zero | hpc_zero)

    kept_cls = cls[keep]
    out = pd.DataFrame(
        {
            "start_time": start[keep].to_numpy().astype("datetime64[ns]"),
            "goes_class": normalise_class(kept_cls).to_numpy(dtype=object),
            "flux": class_flux(kept_cls, field="fl_goescls"),
            "fl_lon": lon[keep],
            "fl_lat": lat[keep],
        }
    )
    out["goes_class"] = out["goes_class"].astype("string")
    out = out.sort_values("start_time", kind="stable").reset_index(drop=True)
    out.attrs["counts"] = {
        "records": n,
        "bad_time": int(bad_time.sum()),
        "unclassified": int((unclassified & ~bad_time).sum()),
        "bad_class": int((bad_class & ~bad_time).sum()),
        "location_hgs": int((keep & hgs_ok).sum()),
        "location_hpc": int((use_hpc & ~off_disk).sum()),
        "off_disk": int(off_disk.sum()),
        "placeholder_locations": int(placeholder.sum()),
        "unknown_location": int(np.isnan(out["fl_lon"].to_numpy()).sum()),
    }
    return out


def _cache_file(
    cache_dir: Path, client: HEKFlareClient, t0: pd.Timestamp, t1: pd.Timestamp, letter: str | None
) -> Path:
    key = hashlib.sha1(
        json.dumps([client.url, client.frm_name, letter or ""]).encode()
    ).hexdigest()[:10]
    return cache_dir / f"hek-{t0:%Y%m%dT%H%M%S}-{t1:%Y%m%dT%H%M%S}-{key}.json"


def _read_cached(path: Path) -> list[dict[str, Any]] | None:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    records = body.get("records") if isinstance(body, dict) else None
    return records if isinstance(records, list) else None


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc="HEK flares",
        unit="month",
        file=sys.stderr,
        disable=not enabled or not sys.stderr.isatty(),
    )


def fetch_hek_catalog(
    start: pd.Timestamp | str,
    end: pd.Timestamp | str,
    *,
    min_class: str | None = None,
    url: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    client: HEKFlareClient | None = None,
    progress: bool = True,
    http_client: Any = None,
) -> pd.DataFrame:
    """Fetch the SWPC flares starting in ``[start, end)`` from HEK, month by month.

    Every month is tried (each with the client's retries) even if an earlier one failed;
    months fetched are written to ``cache_dir`` (one JSON file each, atomically) and read
    from there on a rerun, so an interrupted or partly failed run resumes where it
    stopped.

    Args:
        start: first flare start time (UTC).
        end: flares starting before this time.
        min_class: lowest GOES class kept (e.g. ``C1.0``), None for all.
        url: HEK base URL; None reads ``$FDFLARE_HEK_URL`` or uses the public HEK.
        cache_dir: folder for finished months, or None to keep nothing.
        client: query settings (timeouts, retries, page size); its ``url`` is replaced
            by the resolved ``url``.
        progress: show a per-month progress bar on stderr (only when it is a terminal).
        http_client: an :class:`httpx.Client` to send the requests with (kept open); by
            default one is made with the client's timeouts and closed.

    Returns:
        The catalog in the common schema (see :mod:`fdflare.acquire.catalog`) with
        ``attrs["counts"]`` merging those of :func:`records_to_catalog` and
        :func:`select_flares`, plus ``months`` and ``months_cached``.

    Raises:
        InputError: ``end`` is not after ``start``, a bad URL or a bad ``min_class``.
        DownloadError: some months could not be fetched; the message lists them, and the
            months that were fetched stay in ``cache_dir``.
    """
    from fdflare import __version__
    from fdflare.core.io import write_text_atomic

    t_start, t_end = _naive_utc(start, "start"), _naive_utc(end, "end")
    if t_end <= t_start:
        raise InputError(f"end {t_end} is not after start {t_start}", field="end")
    letter = None
    if min_class:
        parse_threshold(min_class, what="min_class")  # validates, raising InputError
        letter = min_class.strip()[0].upper()
    base = dataclasses.replace(client if client is not None else HEKFlareClient())
    base.url = resolve_hek_url(url)
    cache = Path(cache_dir) if cache_dir is not None else None
    months = month_intervals(t_start, t_end)
    now = pd.Timestamp.now(tz="UTC").tz_localize(None)

    chunks: list[list[dict[str, Any]]] = []
    failed: list[tuple[pd.Timestamp, str]] = []
    n_cached = 0
    n_kept = 0  # months whose records are in the cache folder (read from it or written)
    policy = base.policy()
    headers = {"User-Agent": f"fdflare/{__version__} (+https://github.com/fdflare)"}
    with (
        (
            contextlib.nullcontext(http_client)
            if http_client is not None
            else policy.client(headers=headers)
        ) as http,
        contextlib.closing(_progress(len(months), progress)) as bar,
    ):
        for t0, t1 in months:
            path = _cache_file(cache, base, t0, t1, letter) if cache is not None else None
            records = _read_cached(path) if path is not None and path.is_file() else None
            if records is not None:
                n_cached += 1
                n_kept += 1
            else:
                try:
                    records = base.search(http, t0, t1, letter, policy=policy)
                except DownloadError as exc:
                    failed.append((t0, str(exc)))
                    bar.update(1)
                    if not policy.reached.is_set():
                        break  # not one answer: the service cannot be reached at all
                    continue
                if path is not None and t1 < now - _SETTLE:
                    body = {"url": base.url, "start": str(t0), "end": str(t1), "records": records}
                    write_text_atomic(path, json.dumps(body))
                    n_kept += 1
            chunks.append(records)
            bar.set_postfix_str(f"{t0:%Y-%m}: {len(records)} records")
            bar.update(1)

    if failed and not policy.reached.is_set() and n_cached == 0:
        raise DownloadError(f"cannot reach HEK at {base.url}: {failed[0][1]}")
    if failed:
        where = f"; the {n_kept} month(s) fetched are kept in {cache}" if cache and n_kept else ""
        raise DownloadError(
            f"HEK query failed for {len(failed)} of {len(months)} month(s) "
            f"({', '.join(f'{t:%Y-%m}' for t, _ in failed)}){where}; rerun the same command "
            f"to fetch only what is missing. First error: {failed[0][1]}"
        )
    raw = pd.DataFrame.from_records(
        [r for chunk in chunks for r in chunk], columns=list(RECORD_FIELDS)
    )
    converted = records_to_catalog(raw)
    out = select_flares(converted, t_start, t_end, min_class)
    out.attrs["counts"] = {
        **converted.attrs["counts"],
        **out.attrs["counts"],
        "months": len(months),
        "months_cached": n_cached,
    }
    out.attrs["source"] = base.url
    out.attrs["format"] = "hek"
    return out
