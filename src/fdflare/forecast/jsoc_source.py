"""JSOC's near-real-time series as the forecast's source (``forecast --source jsoc-nrt``).

:class:`JsocSource` answers the two questions the forecast service asks of a source (the
same as :class:`~fdflare.forecast.archive.LocalArchive`'s): which observation is closest to
a time (:meth:`JsocSource.closest`: a ``jsoc_info`` listing of ``hmi.M_720s_nrt`` around
it, records whose ``QUALITY`` is not 0 passed over), and where its file is
(:meth:`JsocSource.path`: one ``jsoc_fetch`` export of that record, fetched as FITS into a
temporary folder). The service decodes the FITS with prepare's FITS path (north up,
Helioviewer's grey levels), so the models trained on Helioviewer's images apply.

Failures of JSOC (unreachable, outages past the retries, a failed export) are a
:class:`~fdflare.forecast.service.ServiceError` (exit status 3); no good record within the
tolerance is left to the service, which says so (exit status 4).
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

import pandas as pd

from fdflare.core.http import HttpPolicy

__all__ = ["JsocSource"]


class JsocSource:
    """JSOC's NRT magnetograms for one forecast.

    Args:
        base_url: JSOC base URL (``None``: ``$FDFLARE_JSOC_URL``, else JSOC).
        email: the address registered for exports (``None``: ``$JSOC_EMAIL``).
        tolerance: how far from the requested time records are listed.
        series: the series (``hmi.M_720s_nrt``; ``hmi.M_720s`` for past times).
        policy: the HTTP policy (default: 3 retries).
        poll_sleep: the wait between export polls (tests inject one).
        rebin: have JSOC bin the record ``rebin`` x ``rebin`` before sending it (its export
            processing ``rebin``, as ``download --source jsoc --rebin``): 8 sends the 512 x 512
            image, 0.3 MB in place of 14 MB. A file of another size fails the forecast.
        rebin_option: the option that set ``rebin``, as errors name it (``serve``'s is
            ``--jsoc-rebin``).

    Raises:
        InputError: no e-mail, a base URL that is not an http(s) URL, or a ``rebin`` that is
            not one of 1, 2, 4, 8, 16.
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        email: str | None = None,
        tolerance: pd.Timedelta,
        series: str = "hmi.M_720s_nrt",
        policy: HttpPolicy | None = None,
        poll_sleep: Any = None,
        export_timeout: float = 600.0,
        rebin: int = 1,
        rebin_option: str = "--rebin",
    ) -> None:
        from fdflare.acquire.jsoc.client import check_rebin, resolve_jsoc_url
        from fdflare.acquire.jsoc.download import resolve_email

        check_rebin(rebin)

        self.url = resolve_jsoc_url(base_url, option="--base-url")
        self.email = resolve_email(email)
        self.tolerance = pd.Timedelta(tolerance)
        self.series = series
        self.policy = policy or HttpPolicy(retries=3, concurrency=1)
        self.poll_sleep = poll_sleep
        self.export_timeout = export_timeout
        self.rebin = rebin
        self.rebin_option = rebin_option
        self._tmp = tempfile.TemporaryDirectory(prefix="fdflare-jsoc-")
        self.root = Path(self._tmp.name)
        self._recnums: dict[str, int] = {}
        self.passed_over: list[str] = []  # bad-quality records nearer than the one chosen

    @property
    def source(self) -> str:
        """``jsoc:SERIES@URL`` (binned: ``jsoc:SERIES/rebinN@URL``), the source a forecast names."""
        binned = f"/rebin{self.rebin}" if self.rebin > 1 else ""
        return f"jsoc:{self.series}{binned}@{self.url}"

    def close(self) -> None:
        """Remove the fetched files."""
        self._tmp.cleanup()

    def _client(self, http: Any) -> Any:
        from fdflare.acquire.jsoc.client import JsocClient

        return JsocClient(
            base_url=self.url,
            series=self.series,
            email=self.email,
            policy=self.policy,
            stop=threading.Event(),
            http=http,
            export_timeout=self.export_timeout,
            sleep=self.poll_sleep,
            rebin=self.rebin,
            rebin_option=self.rebin_option,
            rebin_advice=f"the next forecast asks again, or drop {self.rebin_option}",
        )

    def _call(self, what: str, fn: Any) -> Any:
        from fdflare import __version__
        from fdflare.acquire.helioviewer.client import ItemFailed
        from fdflare.acquire.jsoc.client import ExportFailed
        from fdflare.core.http import GaveUp
        from fdflare.forecast.service import ServiceError

        try:
            with self.policy.client(headers={"User-Agent": f"fdflare/{__version__}"}) as http:
                return fn(self._client(http))
        except GaveUp as exc:
            raise ServiceError(f"JSOC ({self.url}) failed {what}: {exc.reason}") from None
        except (ItemFailed, ExportFailed) as exc:
            raise ServiceError(f"JSOC ({self.url}) failed {what}: {exc}") from None

    def closest(self, t: pd.Timestamp) -> tuple[str, pd.Timestamp] | None:
        """The good record closest to ``t`` within the tolerance: ``(T_REC, T_REC in UTC)``.

        Records with ``QUALITY`` not 0 are passed over (and named in :attr:`passed_over`);
        None when no good record lies within the tolerance.
        """
        ts = pd.Timestamp(t)
        if ts.tzinfo is not None:
            ts = ts.tz_convert("UTC").tz_localize(None)
        records = self._call(
            "to list its records",
            lambda api: api.records(ts - self.tolerance, ts + self.tolerance),
        )
        if not len(records):
            return None
        records = records.assign(
            dist=(pd.DatetimeIndex(records["t_rec"]) - ts).to_series().abs().to_numpy()
        )
        records = records.sort_values("dist", kind="stable")
        for row in records.itertuples():
            quality = str(row.quality).strip()
            try:
                good = int(quality, 0) == 0
            except ValueError:
                good = False
            if good:
                self._recnums[str(row.t_rec_text)] = int(row.recnum)
                return str(row.t_rec_text), pd.Timestamp(row.t_rec).floor("s")
            self.passed_over.append(f"{row.t_rec_text} (QUALITY={quality})")
        return None

    def path(self, image_id: str) -> Path:
        """Export the record ``image_id`` (a ``T_REC`` of :meth:`closest`) and fetch it."""
        from fdflare.core.errors import InputError

        if image_id not in self._recnums:
            raise InputError(f"{image_id!r} is not a record this source chose", path=self.root)
        dest = self.root / "magnetogram.fits"  # never a name the server chose

        def fetch(api: Any) -> Path:
            files = api.export([self._recnums[image_id]])
            urls = [url for t_rec, url in files if t_rec == image_id]
            if not urls:
                from fdflare.acquire.jsoc.client import ExportFailed

                raise ExportFailed(f"the export of {image_id} listed no file")
            api.fetch(urls[0], dest)
            return dest

        result: Path = self._call(f"to export {image_id}", fetch)
        return result
