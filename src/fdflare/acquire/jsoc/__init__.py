"""HMI magnetograms as FITS (the field in gauss) from JSOC through ``drms``, resumable.

* :mod:`.client`: the DRMS calls (``jsoc_info``, ``jsoc_fetch``, the files) under the one
  HTTP policy of :mod:`fdflare.core.http`;
* :mod:`.download`: choosing records by ``T_REC`` and ``QUALITY``, exports in chunks, the
  run and its summary (the tree and manifest of :mod:`fdflare.acquire.helioviewer`).
"""

from fdflare.acquire.jsoc.client import DEFAULT_JSOC_URL, EMAIL_ENV, JSOC_URL_ENV, SERIES
from fdflare.acquire.jsoc.download import JsocSummary, download_jsoc, resolve_email

__all__ = [
    "DEFAULT_JSOC_URL",
    "EMAIL_ENV",
    "JSOC_URL_ENV",
    "SERIES",
    "JsocSummary",
    "download_jsoc",
    "resolve_email",
]
