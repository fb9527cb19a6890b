"""JSOC's DRMS calls the downloader makes, through ``drms``, under the one HTTP policy.

* ``checkAddress.sh``: is the export e-mail registered (:meth:`JsocClient.check_email`);
* ``jsoc_info?op=rs_list``: the records of a time range with ``T_REC``, ``QUALITY`` and
  the record number (:meth:`JsocClient.records`);
* ``jsoc_fetch?op=exp_request`` then ``op=exp_status`` until the export is done: the
  files of chosen records as FITS (RICE-compressed, full headers)
  (:meth:`JsocClient.export`);
* the files themselves, by HTTP from the export's directory, written atomically
  (:meth:`JsocClient.fetch`).

``drms`` builds the requests and reads the answers; its HTTP (``urllib``) failures are
classified here into the policy of :mod:`fdflare.core.http`: timeouts, broken connections,
HTTP 429 and 5xx (with ``Retry-After``) and an HTML page where JSON was expected (JSOC's
maintenance page) are retried with back-off. JSOC's own export states are handled as JSOC
documents them: status 1, 2 (and 6, "not found yet", for a request just made) are
pending, polled after the ``wait`` the server suggests; 7 is the per-user limit of
pending exports, retried after a back-off; anything else is a failed export.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import numpy as np
import pandas as pd

from fdflare.acquire.helioviewer.client import ItemFailed
from fdflare.core.errors import InputError
from fdflare.core.http import HttpPolicy, Retryable, parse_retry_after, snippet
from fdflare.core.io import atomic_path

__all__ = [
    "DEFAULT_JSOC_URL",
    "EMAIL_ENV",
    "JSOC_URL_ENV",
    "REBIN_FACTORS",
    "SEGMENT",
    "SEGMENT_SIZE",
    "SERIES",
    "ExportFailed",
    "JsocClient",
    "check_rebin",
    "resolve_jsoc_url",
    "source_id",
    "source_of",
    "t_rec_to_utc",
    "tai_text",
]

DEFAULT_JSOC_URL = "http://jsoc.stanford.edu/"
"""JSOC at Stanford: CGIs under ``cgi-bin/ajax/``, export files under ``/SUM*/``."""
JSOC_URL_ENV = "FDFLARE_JSOC_URL"
"""Environment variable naming the JSOC base URL when none is given."""
EMAIL_ENV = "JSOC_EMAIL"
"""Environment variable with the e-mail address registered for JSOC exports."""
#: The series offered, and the number each one has in ``manifest.csv``'s ``source_id``
#: (Helioviewer's ids are small; these keep a manifest to one archive and series).
SERIES = {"hmi.M_720s": 720720, "hmi.M_720s_nrt": 720721}
SEGMENT = "magnetogram"
#: pixels on a side of an ``hmi.M_720s``/``hmi.M_720s_nrt`` magnetogram
SEGMENT_SIZE = 4096
#: the binning factors ``--rebin`` offers: JSOC's ``jsoc_rebin`` (boxcar, ``scale = 1/N``)
#: averages ``N`` x ``N`` blocks on JSOC's side, so 4096 / N pixels come down
REBIN_FACTORS = (1, 2, 4, 8, 16)
_BINNED_STEP = 1_000_000  # source_id: the series' number plus the binning factor in millions
#: the largest FITS file accepted (a RICE-compressed 4096 x 4096 magnetogram is ~15 MB)
MAX_FITS_BYTES = 256 * 1024 * 1024
FITS_MAGIC = b"SIMPLE  ="
PENDING = (1, 2, 6)
USER_LIMIT = 7

_T = TypeVar("_T")
_T_REC = re.compile(r"\[(\d{4}\.\d\d\.\d\d_\d\d:\d\d:\d\d(?:\.\d+)?)_TAI\]")


def source_id(series: str, rebin: int = 1) -> int:
    """``manifest.csv``'s ``source_id`` of a series binned by ``rebin`` on JSOC's side.

    The series' number (:data:`SERIES`), plus ``rebin`` millions when binned: 720720 is
    ``hmi.M_720s`` as recorded, 8720720 the same binned 8 x 8, so one directory never
    holds two resolutions.
    """
    return SERIES[series] + (rebin * _BINNED_STEP if rebin > 1 else 0)


def source_of(source: int) -> tuple[str, int] | None:
    """The ``(series, rebin)`` of a ``source_id`` (:func:`source_id`'s inverse), else None."""
    rebin, number = divmod(int(source), _BINNED_STEP)
    series = next((name for name, n in SERIES.items() if n == number), None)
    if series is None or rebin not in (0, *REBIN_FACTORS) or rebin == 1:
        return None
    return series, max(rebin, 1)


def check_rebin(rebin: object) -> None:
    """Refuse a binning factor that is not one of :data:`REBIN_FACTORS`.

    Raises:
        InputError: ``rebin`` is not one of them (field ``rebin``).
    """
    if rebin not in REBIN_FACTORS:
        raise InputError(
            f"rebin must be one of {', '.join(map(str, REBIN_FACTORS))} "
            f"({SEGMENT_SIZE} / rebin pixels on a side), not {rebin!r}",
            field="rebin",
        )


class ExportFailed(Exception):
    """JSOC refused or failed an export: every record of it fails, with this reason."""


def resolve_jsoc_url(base_url: str | None, *, option: str = "base_url") -> str:
    """``base_url``, else ``$FDFLARE_JSOC_URL``, else JSOC; checked, ending in ``/``.

    Raises:
        InputError: not an http(s) URL with a host.
    """
    url = base_url or os.environ.get(JSOC_URL_ENV) or DEFAULT_JSOC_URL
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InputError(f"not an http(s) URL: {url!r}", field=option)
    return url if url.endswith("/") else url + "/"


def tai_text(t: pd.Timestamp) -> str:
    """A UTC time as JSOC's TAI time string, ``2011.01.01_00:00:34_TAI``."""
    from astropy.time import Time

    tai = Time(t.to_pydatetime(), scale="utc").tai
    return tai.strftime("%Y.%m.%d_%H:%M:%S_TAI")


def t_rec_to_utc(values: Any) -> pd.DatetimeIndex:
    """JSOC ``T_REC`` strings (``2011.01.01_00:00:00_TAI``) as UTC times; NaT where invalid."""
    from astropy.time import Time

    text = pd.Series(list(values), dtype=object).astype(str)
    m = text.str.extract(r"^(\d{4})\.(\d\d)\.(\d\d)_(\d\d):(\d\d):(\d\d(?:\.\d+)?)_TAI$")
    ok = m.notna().all(axis=1).to_numpy()
    out = pd.DatetimeIndex(np.full(len(text), np.datetime64("NaT"), dtype="datetime64[ns]"))
    if ok.any():
        iso = (m[0] + "-" + m[1] + "-" + m[2] + "T" + m[3] + ":" + m[4] + ":" + m[5])[ok]
        utc = Time(list(iso), format="isot", scale="tai").utc.to_value("datetime64")
        values_ns = out.to_numpy().copy()
        values_ns[ok] = pd.DatetimeIndex(utc).round("ms").to_numpy()
        out = pd.DatetimeIndex(values_ns)
    return out


def _drms() -> Any:
    """Import drms without its ``logging.basicConfig(level=INFO)`` on the root logger."""
    import logging

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    import drms

    root.setLevel(level)
    root.handlers[:] = handlers
    return drms


def _write_all(fh: Any, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[fh.write(view) :]


class JsocClient:
    """Asks one JSOC for records, exports and files; shared by worker threads.

    Args:
        base_url: JSOC base URL ending in ``/`` (:func:`resolve_jsoc_url`).
        series: ``hmi.M_720s`` or ``hmi.M_720s_nrt``.
        email: the address registered for exports.
        policy: timeouts, retries, ``Retry-After`` and the bound on requests in flight.
        stop: when set, nothing more starts and a wait ends at once.
        http: the client for the files (its pool should admit ``policy.concurrency``).
        export_timeout: the longest wait, in seconds, for one export to finish.
        rebin: bin each image ``rebin`` x ``rebin`` on JSOC's side (export processing
            ``rebin``, boxcar; 1: as recorded); a file of any other size is refused.
        rebin_option: the option that set ``rebin``, as the refusal names it.
        rebin_advice: what the refusal of a file of another size advises (``download``'s
            default: a directory holds one resolution).
        poll: seconds between status polls when the server suggests none (and the least).
        sleep: the function that waits between polls (tests inject one that records).
    """

    def __init__(
        self,
        *,
        base_url: str,
        series: str,
        email: str,
        policy: HttpPolicy,
        stop: threading.Event,
        http: httpx.Client,
        export_timeout: float = 3600.0,
        poll: float = 1.0,
        sleep: Callable[[float], None] | None = None,
        rebin: int = 1,
        rebin_option: str = "--rebin",
        rebin_advice: str = "the next run asks again, or use --rebin 1 in another directory",
    ) -> None:
        config = _drms().ServerConfig(
            name=f"fdflare:{base_url}",
            cgi_baseurl=base_url + "cgi-bin/ajax/",
            cgi_jsoc_info="jsoc_info",
            cgi_jsoc_fetch="jsoc_fetch",
            cgi_check_address="checkAddress.sh",
            http_download_baseurl=base_url,
        )
        self.drms = _drms().Client(server=config)
        self.base_url = base_url
        self.series = series
        self.email = email
        self.policy = policy
        self.stop = stop
        self.http = http
        self.export_timeout = export_timeout
        self.poll = poll
        self.sleep = sleep
        self.rebin = rebin
        self.rebin_option = rebin_option
        self.rebin_advice = rebin_advice
        self.pending_polls = 0  # status polls that found the export still pending
        self.last_reason = ""  # of the last call whose retries ran out

    # -- drms calls under the policy -----------------------------------------------------

    def _drms(self, what: str, call: Callable[[], _T]) -> _T:
        """Run one drms call; classify its urllib and JSON failures for the policy."""

        def attempt() -> _T:
            try:
                with self.policy.slot():
                    result = call()
            except urllib.error.HTTPError as exc:
                self.policy.reached.set()
                if exc.code == 429 or exc.code >= 500:
                    wait = parse_retry_after(
                        exc.headers.get("Retry-After") if exc.headers else None,
                        now=self.policy.clock(),
                    )
                    raise Retryable(f"{what}: HTTP {exc.code}", retry_after=wait) from None
                raise ItemFailed(f"{what}: HTTP {exc.code} {exc.reason}") from None
            except urllib.error.URLError as exc:
                reason = exc.reason
                if isinstance(reason, TimeoutError | socket.timeout):
                    raise Retryable(f"{what}: timed out") from None
                raise Retryable(f"{what}: cannot connect ({reason})", unreachable=True) from None
            except TimeoutError:
                raise Retryable(f"{what}: timed out") from None
            except (ConnectionError, OSError) as exc:
                raise Retryable(f"{what}: connection error ({exc})") from None
            except (ValueError, UnicodeDecodeError) as exc:
                # JSOC's maintenance page (HTML) where JSON was expected: waiting mends it
                self.policy.reached.set()
                raise Retryable(f"{what}: the answer is not JSON ({exc})") from None
            self.policy.reached.set()
            return result

        return self.policy.call(what, attempt, stop=self.stop)

    def check_email(self) -> bool:
        """Whether JSOC knows ``email`` as registered for exports."""
        return bool(self._drms("checkAddress", lambda: self.drms.check_email(self.email)))

    def records(self, first: pd.Timestamp, last: pd.Timestamp) -> pd.DataFrame:
        """The records of ``[first, last]`` (UTC): ``t_rec`` (UTC), ``quality``, ``recnum``.

        Raises:
            ItemFailed: JSOC answered the query with an error.
        """
        ds = f"{self.series}[{tai_text(first)}-{tai_text(last)}]"

        def call() -> dict[str, Any]:
            return dict(self.drms._json.rs_list(ds, key="T_REC,QUALITY,*recnum*"))

        answer = self._drms(f"rs_list {ds}", call)
        if answer.get("status") != 0:
            raise ItemFailed(
                f"rs_list {ds}: JSOC status {answer.get('status')}: "
                f"{snippet(str(answer.get('error', '')).encode(), 200)}"
            )
        columns = {k.get("name"): k.get("values", []) for k in answer.get("keywords", [])}
        t_rec = columns.get("T_REC", [])
        table = pd.DataFrame(
            {
                "t_rec_text": pd.Series(t_rec, dtype=object),
                "t_rec": t_rec_to_utc(t_rec),
                "quality": pd.Series(columns.get("QUALITY", []), dtype=object),
                "recnum": pd.to_numeric(
                    pd.Series(columns.get("*recnum*", []), dtype=object), errors="coerce"
                ),
            }
        )
        return table.dropna(subset=["t_rec", "recnum"]).reset_index(drop=True)

    def export(self, recnums: list[int]) -> list[tuple[str, str]]:
        """Export records as FITS; return ``(T_REC text, URL)`` of each file.

        Raises:
            ExportFailed: JSOC failed the export or it did not finish in ``export_timeout``.
            fdflare.core.http.GaveUp: the retries (of the per-user limit, or HTTP) ran out.
        """
        ds = f"{self.series}[:{','.join(f'#{int(r)}' for r in recnums)}]{{{SEGMENT}}}"

        # jsoc_rebin's arguments, as drms's own tests pass them; JSOC ignores arguments it
        # cannot use without failing the export, so fetch() checks each file's size
        process = (
            {"rebin": {"method": "boxcar", "scale": 1 / self.rebin}} if self.rebin > 1 else None
        )

        def submit() -> Any:
            request = self.drms.export(
                ds,
                method="url",
                protocol="fits",
                email=self.email,
                filenamefmt=False,
                process=process,
            )
            return request

        def attempt() -> Any:
            request = self._drms("exp_request", submit)
            if request.status == USER_LIMIT:
                raise Retryable(
                    f"JSOC's per-user limit: {request._d.get('error', 'pending exports')}"
                )
            return request

        request = self.policy.call("exp_request", attempt, stop=self.stop)
        waited = 0.0
        while request.status in PENDING:
            wait = max(self.poll, float(request._d.get("wait") or 0))
            if waited + wait > self.export_timeout:
                raise ExportFailed(
                    f"export {request.id} still pending after {waited:.0f} s "
                    f"(status {request.status}); rerun later"
                )
            self._wait(wait)
            waited += wait
            self.pending_polls += 1
            self._drms(f"exp_status {request.id}", lambda: request._update_status())
        if request.status != 0:
            raise ExportFailed(
                f"export {request.id or ''} failed: JSOC status {request.status}: "
                f"{request._d.get('error') or 'no reason given'}"
            )
        urls = self._drms(f"export {request.id} files", lambda: request.urls)
        out = []
        for record, url in zip(urls["record"], urls["url"], strict=True):
            m = _T_REC.search(str(record))
            if m is not None:
                out.append((m.group(1) + "_TAI", str(url)))
        return out

    def _wait(self, seconds: float) -> None:
        from fdflare.core.http import Stopped

        if self.sleep is not None:
            self.sleep(seconds)
        elif self.stop.wait(seconds):
            raise Stopped
        if self.stop.is_set():
            raise Stopped

    # -- the files -----------------------------------------------------------------------

    def fetch(self, url: str, dest: Path) -> tuple[int, str]:
        """Fetch one exported FITS file to ``dest`` atomically; return ``(bytes, sha256)``.

        Raises:
            fdflare.core.http.GaveUp: retries ran out.
            ItemFailed: an answer that retrying will not mend, or a URL off JSOC's host.
        """
        if urlsplit(url).netloc != urlsplit(self.base_url).netloc:
            raise ItemFailed(f"the export names a file on another host: {url!r}")
        what = f"GET {urlsplit(url).path}"

        def attempt() -> tuple[int, str]:
            with atomic_path(dest) as tmp:
                in_body = False
                try:
                    with self.policy.slot(), self.http.stream("GET", url) as response:
                        self.policy.check_status(response, what)
                        if response.status_code >= 400:
                            response.read()
                            raise ItemFailed(
                                f"{what}: HTTP {response.status_code}: {snippet(response.content)}"
                            )
                        in_body = True
                        result = self._save(response, tmp, what)
                    if self.rebin > 1:
                        self._check_binned(tmp, what)
                except httpx.HTTPError as exc:
                    classified = self.policy.transport_error(exc, in_body=in_body)
                    if isinstance(classified, Retryable):
                        raise classified from None
                    raise ItemFailed(f"{type(exc).__name__}: {exc}") from None
            return result

        return self.policy.call(what, attempt, stop=self.stop)

    def _check_binned(self, path: Path, what: str) -> None:
        """Refuse a file that is not ``SEGMENT_SIZE / rebin`` pixels on a side.

        Raises:
            ItemFailed: naming the size found; the file is not kept and the next run asks
                again.
        """
        import warnings

        from astropy.io import fits

        want = SEGMENT_SIZE // self.rebin
        shape = None
        try:
            with warnings.catch_warnings(), fits.open(path, memmap=False) as hdul:
                warnings.simplefilter("ignore", fits.verify.VerifyWarning)
                for hdu in hdul:
                    if hdu.is_image and hdu.header.get("NAXIS", 0) == 2:
                        shape = (int(hdu.header["NAXIS1"]), int(hdu.header["NAXIS2"]))
                        break
        except (OSError, ValueError, KeyError) as exc:
            raise ItemFailed(f"{what}: not a readable FITS file ({exc})") from None
        if shape != (want, want):
            found = f"a {shape[0]} x {shape[1]} image" if shape else "no 2-D image"
            raise ItemFailed(
                f"{what}: JSOC sent {found}, not the {want} x {want} of {self.rebin_option} "
                f"{self.rebin} (the export's processing was not applied); {self.rebin_advice}"
            )

    def _save(self, response: httpx.Response, tmp: Path, what: str) -> tuple[int, str]:
        digest = hashlib.sha256()
        nbytes = 0
        head = b""
        with open(tmp, "wb", buffering=0) as fh:
            for chunk in response.iter_bytes():
                if len(head) < len(FITS_MAGIC):
                    head += chunk[: len(FITS_MAGIC)]
                    if len(head) >= len(FITS_MAGIC) and not head.startswith(FITS_MAGIC):
                        kind = response.headers.get("Content-Type", "no Content-Type")
                        raise Retryable(f"{what} answered {kind}, not a FITS file: {snippet(head)}")
                _write_all(fh, chunk)
                digest.update(chunk)
                nbytes += len(chunk)
                if nbytes > MAX_FITS_BYTES:
                    raise ItemFailed(f"{what}: the body runs past {MAX_FITS_BYTES:,} bytes")
            os.fsync(fh.fileno())
        if not head.startswith(FITS_MAGIC):
            raise Retryable(f"{what}: not a FITS file ({nbytes} bytes)")
        expected = response.headers.get("Content-Length")
        if expected is not None and expected.isdigit() and nbytes < int(expected):
            raise Retryable(f"incomplete body: got {nbytes} of {expected} bytes")
        return nbytes, digest.hexdigest()
