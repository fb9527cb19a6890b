"""Image names and times in the study's layout, vectorised.

Images live at ``YYYY/MM/DD/HMI.mYYYY.MM.DD_HH.MM.SS.<ext>``, named after the *requested*
time. These helpers go from times to relative paths and back, over whole arrays at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

NAME_PATTERN = r"HMI\.m(\d{4})\.(\d{2})\.(\d{2})_(\d{2})\.(\d{2})\.(\d{2})\.([A-Za-z0-9]+)$"
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "jp2")


def image_relpaths(times: pd.Series | pd.DatetimeIndex | np.ndarray, ext: str = "jpg") -> np.ndarray:
    """Return ``YYYY/MM/DD/HMI.mYYYY.MM.DD_HH.MM.SS.<ext>`` for each time."""
    t = pd.DatetimeIndex(pd.to_datetime(times))
    day = t.strftime("%Y/%m/%d/HMI.m%Y.%m.%d_%H.%M.%S")
    return (np.asarray(day, dtype=object) + f".{ext}").astype(str)


def parse_image_times(names: Iterable[str] | pd.Series) -> tuple[pd.Series, pd.Series]:
    """Parse the time from each image name (any directory prefix).

    Returns:
        ``(times, ext)``: times as ``datetime64[ns]`` (``NaT`` for names that do not follow
        the pattern) and the extension of each name.
    """
    s = pd.Series(list(names) if not isinstance(names, pd.Series) else names, dtype="object")
    s = s.astype("string")
    parts = s.str.extract(NAME_PATTERN)
    stamp = (
        parts[0] + "-" + parts[1] + "-" + parts[2] + " " + parts[3] + ":" + parts[4] + ":" + parts[5]
    )
    times = pd.to_datetime(stamp, format="%Y-%m-%d %H:%M:%S", errors="coerce")
    return times, parts[6]


def scan_images(root: str | os.PathLike[str], extensions: Iterable[str] = IMAGE_EXTENSIONS) -> list[str]:
    """List image files under ``root`` as sorted POSIX paths relative to it."""
    root = Path(root)
    exts = {"." + e.lower().lstrip(".") for e in extensions}
    found: list[str] = []
    for dirpath, _dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        for name in filenames:
            if Path(name).suffix.lower() in exts and name.startswith("HMI.m"):
                found.append((rel / name).as_posix())
    found.sort()
    return found
