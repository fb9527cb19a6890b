"""HMI magnetograms (JPEG 2000) from the Helioviewer API v2, resumable.

* :mod:`.client`: the two API calls (``getClosestImage``, ``getJP2Image``) under the one
  HTTP policy of :mod:`fdflare.core.http`;
* :mod:`.manifest`: ``manifest.csv``, its journal and its lock;
* :mod:`.download`: planning a range, the run on a thread pool, and its summary.
"""

from fdflare.acquire.helioviewer.client import (
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    HMI_MAGNETOGRAM_SOURCE_ID,
    is_jpeg2000,
)
from fdflare.acquire.helioviewer.download import DownloadSummary, download_range, requested_times
from fdflare.acquire.helioviewer.manifest import MANIFEST_COLUMNS, read_manifest

__all__ = [
    "BASE_URL_ENV",
    "DEFAULT_BASE_URL",
    "HMI_MAGNETOGRAM_SOURCE_ID",
    "MANIFEST_COLUMNS",
    "DownloadSummary",
    "download_range",
    "is_jpeg2000",
    "read_manifest",
    "requested_times",
]
