"""NOAA SWPC's live GOES X-ray flare list (JSON), as a flare catalog.

SWPC publishes the flares of the last seven days at
``https://services.swpc.noaa.gov/json/goes/primary/xray-flares-7-day.json``: a JSON array
of objects such as::

    {"time_tag": "2024-05-10T12:00:00Z", "begin_time": "2024-05-10T06:27:00Z",
     "begin_class": "C1.2", "max_time": "2024-05-10T06:54:00Z", "max_class": "X4.0",
     "max_xrlong": 4.0e-4, "end_time": "2024-05-10T07:06:00Z", "end_class": "M2.1",
     "satellite": 16}

Only ``begin_time`` and ``max_class`` are needed (``end_time`` is ``"Unk"`` while a flare
is in progress). :func:`parse_swpc_flares` turns the array into the catalog frame of
:func:`fdflare.acquire.catalog.read_catalog` (``start_time, goes_class, flux, fl_lon,
fl_lat``; the list carries no locations, so they are NaN), with duplicates dropped by the
one rule of :data:`fdflare.acquire.catalog.DUPLICATE_KEY`. A record without a usable start
time or class is counted (``attrs["bad_records"]``), never silently dropped.

:func:`fetch_swpc_flares` fetches it through the one HTTP policy (timeouts, retries with
back-off, ``Retry-After``); an answer that is not a JSON array of records is retried as a
transient failure, and after the retries it is a :class:`~fdflare.core.errors.DownloadError`
naming the reason.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pandas as pd

from fdflare.core.errors import DownloadError
from fdflare.core.http import GaveUp, HttpPolicy, Retryable, snippet

SWPC_FLARES_URL = "https://services.swpc.noaa.gov/json/goes/primary/xray-flares-7-day.json"
#: how far back the 7-day list reaches from the moment it is fetched
SWPC_SPAN = pd.Timedelta(days=7)
#: largest body accepted (the 7-day list is a few tens of kB)
MAX_BYTES = 8 << 20


def _utc(value: Any) -> pd.Timestamp | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        t = pd.Timestamp(value.strip())
    except (ValueError, TypeError):
        return None
    if t is pd.NaT:
        return None
    if t.tzinfo is not None:
        t = t.tz_convert("UTC").tz_localize(None)
    return t.as_unit("ns")


def parse_swpc_flares(records: Any) -> pd.DataFrame:
    """The flares of SWPC's JSON array as a catalog frame (see module doc).

    Raises:
        ValueError: ``records`` is not a list of objects.
    """
    from fdflare.acquire.catalog import COLUMNS, drop_duplicate_flares
    from fdflare.acquire.goes import CLASS_PATTERN, class_flux, normalise_class

    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ValueError("not a JSON array of flare records")
    starts, classes, bad = [], [], 0
    pattern = re.compile(CLASS_PATTERN)
    for r in records:
        t = _utc(r.get("begin_time"))
        cls = r.get("max_class")
        if t is None or not isinstance(cls, str) or not pattern.match(cls):
            bad += 1
            continue
        starts.append(t)
        classes.append(cls.strip().upper())
    frame = pd.DataFrame(
        {
            "start_time": pd.DatetimeIndex(starts, dtype="datetime64[ns]"),
            "goes_class": normalise_class(pd.Series(classes, dtype="string")),
            "flux": class_flux(classes) if classes else np.array([], dtype=float),
            "fl_lon": np.nan,
            "fl_lat": np.nan,
        },
        columns=list(COLUMNS),
    )
    frame = frame.sort_values("start_time", kind="stable").reset_index(drop=True)
    frame, dropped = drop_duplicate_flares(frame)
    frame = frame.reset_index(drop=True)
    frame.attrs["bad_records"] = bad
    frame.attrs["duplicates_dropped"] = dropped
    return frame


def fetch_swpc_flares(
    url: str = SWPC_FLARES_URL, *, policy: HttpPolicy | None = None, stop: Any = None
) -> pd.DataFrame:
    """Fetch and parse SWPC's flare list (see module doc).

    Raises:
        DownloadError: the list could not be had after the retries (the reason named).
    """
    import httpx

    from fdflare import __version__

    policy = policy or HttpPolicy(retries=2, concurrency=1)

    def attempt() -> pd.DataFrame:
        with policy.client(headers={"User-Agent": f"fdflare/{__version__}"}) as client:
            try:
                with policy.slot():
                    response = client.get(url)
            except httpx.HTTPError as exc:
                classified = policy.transport_error(exc, in_body=True)
                if isinstance(classified, Retryable):
                    raise classified from None
                raise DownloadError(f"{url}: {type(exc).__name__}: {exc}") from None
        policy.check_status(response, "flare list")
        if response.status_code != 200:
            raise DownloadError(f"{url}: HTTP {response.status_code} {snippet(response.content)}")
        if len(response.content) > MAX_BYTES:
            raise DownloadError(f"{url}: a body of {len(response.content)} bytes, not a flare list")
        try:
            return parse_swpc_flares(json.loads(response.content))
        except (ValueError, UnicodeDecodeError) as exc:
            raise Retryable(f"not a flare list ({exc}): {snippet(response.content)}") from None

    try:
        return policy.call(f"the flare list {url}", attempt, stop=stop)
    except GaveUp as exc:
        raise DownloadError(exc.reason) from None
