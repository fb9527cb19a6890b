"""The two Helioviewer API v2 calls the downloader makes, under the one HTTP policy.

* ``getClosestImage/?date=...Z&sourceId=19``: the observation closest to a time
  (:meth:`HelioviewerClient.closest`);
* ``getJP2Image/?id=...``: its JPEG 2000 file, written atomically
  (:meth:`HelioviewerClient.jp2`).

Timeouts, retries with back-off and jitter, ``Retry-After`` and the bound on requests in
flight come from :class:`fdflare.core.http.HttpPolicy`. Besides timeouts, broken
connections, HTTP 429 and 5xx, two answers that an overloaded archive gives and that
waiting mends are retried too: a ``200`` whose body is not what was asked for (an HTML page
instead of JSON or a JPEG 2000 file) and a truncated body. Only when the retries run out is
the item a failure, with the last reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from fdflare.core.errors import InputError
from fdflare.core.http import HttpPolicy, Retryable, snippet
from fdflare.core.io import atomic_path

__all__ = [
    "BASE_URL_ENV",
    "DEFAULT_BASE_URL",
    "HMI_MAGNETOGRAM_SOURCE_ID",
    "HelioviewerClient",
    "ItemFailed",
    "is_jpeg2000",
    "resolve_base_url",
]

DEFAULT_BASE_URL = "https://api.helioviewer.org/v2/"
"""The public Helioviewer API; mirrors such as ``https://helioviewer-api.ias.u-psud.fr/v2/``
work the same way."""
BASE_URL_ENV = "FDFLARE_HELIOVIEWER_URL"
"""Environment variable naming the API base URL when none is given."""
HMI_MAGNETOGRAM_SOURCE_ID = 19
"""Helioviewer ``sourceId`` of SDO/HMI line-of-sight magnetograms."""

JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
#: the largest JPEG 2000 file accepted (a 4096 x 4096 HMI JP2 is a few MB; more is not one)
MAX_JP2_BYTES = 64 * 1024 * 1024
J2K_CODESTREAM = b"\xff\x4f\xff\x51"


class ItemFailed(Exception):
    """A failure that retrying will not mend; the item is recorded as failed."""


def is_jpeg2000(head: bytes) -> bool:
    """Whether ``head`` (the first bytes of a file) starts a JP2 file or a J2K codestream."""
    return head.startswith(JP2_SIGNATURE) or head.startswith(J2K_CODESTREAM)


def resolve_base_url(base_url: str | None, *, option: str = "base_url") -> str:
    """Return the API base URL (ending in ``/``): ``base_url``, else the environment, else public.

    Raises:
        InputError: not an ``http(s)://host/...`` address.
    """
    url = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise InputError(f"invalid base URL {url!r}: {exc}", field=option) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InputError(
            f"invalid base URL {url!r}: expected http(s)://host/..., e.g. {DEFAULT_BASE_URL}",
            field=option,
        )
    return url.rstrip("/") + "/"


def _write_all(fh: Any, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[fh.write(view) :]


class HelioviewerClient:
    """Asks one Helioviewer API for observations and files; shared by worker threads.

    Args:
        client: the HTTP client (its connection pool should admit ``policy.concurrency``).
        base_url: API base URL ending in ``/`` (see :func:`resolve_base_url`).
        source_id: Helioviewer data source.
        policy: timeouts, retries, ``Retry-After`` and the bound on requests in flight.
        stop: when set, nothing more starts and a download in flight is abandoned.
    """

    def __init__(
        self,
        *,
        client: httpx.Client,
        base_url: str,
        source_id: int,
        policy: HttpPolicy,
        stop: threading.Event,
    ) -> None:
        self.client = client
        self.closest_url = base_url + "getClosestImage/"
        self.jp2_url = base_url + "getJP2Image/"
        self.source_id = source_id
        self.policy = policy
        self.stop = stop

    def _status(self, response: httpx.Response, what: str) -> None:
        self.policy.check_status(response, what)
        if response.status_code >= 400:
            response.read()
            raise ItemFailed(
                f"{what}: HTTP {response.status_code} {response.reason_phrase}: "
                f"{snippet(response.content)}"
            )

    def _transport(self, exc: httpx.HTTPError, *, in_body: bool = False) -> Exception:
        classified = self.policy.transport_error(exc, in_body=in_body)
        if isinstance(classified, Retryable):
            return classified
        return ItemFailed(f"{type(exc).__name__}: {exc}")

    def closest(self, t: pd.Timestamp) -> tuple[int, pd.Timestamp] | str:
        """Return ``(image id, observation time)`` of the image closest to ``t``, or a gap reason.

        Raises:
            fdflare.core.http.GaveUp: retries ran out.
            ItemFailed: an answer that retrying will not mend (HTTP 4xx, an API error).
        """
        what = "getClosestImage"
        params = {"date": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "sourceId": str(self.source_id)}

        def attempt() -> dict[str, Any]:
            try:
                with self.policy.slot():
                    response = self.client.get(self.closest_url, params=params)
            except httpx.HTTPError as exc:
                raise self._transport(exc) from None
            self._status(response, what)
            try:
                data = json.loads(response.content)
            except (ValueError, UnicodeDecodeError):
                kind = response.headers.get("Content-Type", "no Content-Type")
                raise Retryable(
                    f"{what} answered {kind}, not JSON: {snippet(response.content)}"
                ) from None
            if not isinstance(data, dict):
                raise Retryable(
                    f"{what} answered JSON that is not an object: {snippet(response.content)}"
                )
            data["_raw"] = response.content
            return data

        data = self.policy.call(what, attempt, stop=self.stop)
        raw = data.pop("_raw")
        if "error" in data:
            message = str(data["error"])
            shown = snippet(message.encode("utf-8", "replace"), 200)  # bounded, one line, escaped
            if "no images" in message.lower():
                return f"no image: {shown}"
            raise ItemFailed(f"{what} error: {shown}")
        image_id = data.get("id")
        date = data.get("date")
        try:
            image_id = int(str(image_id))
            observed = pd.Timestamp(str(date))
            if pd.isna(observed) or image_id < 0:
                raise ValueError(date)
        except (TypeError, ValueError):
            raise ItemFailed(
                f"{what} answered without a valid 'id' and 'date': {snippet(raw, 160)}"
            ) from None
        if observed.tzinfo is not None:
            observed = observed.tz_convert("UTC").tz_localize(None)
        return image_id, observed.floor("s")

    def jp2(self, image_id: int, dest: Path) -> tuple[int, str]:
        """Fetch one JPEG 2000 file to ``dest`` atomically; return ``(bytes, sha256)``.

        Raises:
            fdflare.core.http.GaveUp: retries ran out (the last reason is kept).
            ItemFailed: an answer that retrying will not mend.
            fdflare.core.http.Stopped: the run is being stopped; no file was left.
        """
        what = f"getJP2Image id={image_id}"

        def attempt() -> tuple[int, str]:
            with atomic_path(dest) as tmp:
                in_body = False
                try:
                    with (
                        self.policy.slot(),
                        self.client.stream(
                            "GET", self.jp2_url, params={"id": str(image_id)}
                        ) as response,
                    ):
                        self._status(response, what)
                        in_body = True
                        nbytes, digest = self._save_body(response, tmp, what)
                except httpx.HTTPError as exc:
                    raise self._transport(exc, in_body=in_body) from None
            return nbytes, digest

        return self.policy.call(what, attempt, stop=self.stop)

    def _save_body(self, response: httpx.Response, tmp: Path, what: str) -> tuple[int, str]:
        from fdflare.core.http import Stopped

        expected = response.headers.get("Content-Length")
        if expected is not None and expected.isdigit() and int(expected) > MAX_JP2_BYTES:
            raise ItemFailed(
                f"{what}: the answer announces {int(expected):,} bytes, more than any HMI "
                f"JPEG 2000 file ({MAX_JP2_BYTES:,} at most)"
            )
        digest = hashlib.sha256()
        head = b""
        checked = False
        nbytes = 0
        # Unbuffered: what has arrived is on disk (under the temporary name) at once.
        with open(tmp, "wb", buffering=0) as fh:
            for chunk in response.iter_bytes():
                if self.stop.is_set():
                    raise Stopped
                if not checked:
                    head += chunk
                    if len(head) < len(JP2_SIGNATURE):
                        continue
                    self._check_signature(head, response, what)
                    checked = True
                    chunk, head = head, b""
                _write_all(fh, chunk)
                digest.update(chunk)
                nbytes += len(chunk)
                if nbytes > MAX_JP2_BYTES:
                    raise ItemFailed(
                        f"{what}: the body runs past {MAX_JP2_BYTES:,} bytes, more than any HMI "
                        "JPEG 2000 file"
                    )
            if not checked:
                self._check_signature(head, response, what)
                _write_all(fh, head)
                digest.update(head)
                nbytes += len(head)
            os.fsync(fh.fileno())
        if (
            expected is not None
            and expected.isdigit()
            and response.num_bytes_downloaded < int(expected)
        ):
            raise Retryable(
                f"incomplete body: got {response.num_bytes_downloaded} of {expected} bytes"
            )
        return nbytes, digest.hexdigest()

    @staticmethod
    def _check_signature(head: bytes, response: httpx.Response, what: str) -> None:
        if is_jpeg2000(head):
            return
        kind = response.headers.get("Content-Type", "no Content-Type")
        shown = "an empty body" if not head else f"a body starting {snippet(head)}"
        # An overloaded archive answers 200 with an error page: transient, retried.
        raise Retryable(f"{what} answered {kind} with {shown}: not a JPEG 2000 file")
