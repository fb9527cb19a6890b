"""A local JP2 archive as the forecast's source: a site's own mirror, or a download.

:class:`LocalArchive` reads a folder of HMI JPEG 2000 files in the layout ``fdflare
download`` and ``fdflare synth --jp2`` write (``YYYY/MM/DD/HMI.mYYYY.MM.DD_HH.MM.SS.jp2``,
named after the time the file stands for). The names are indexed once (one walk of the
tree, the times parsed from the names at once, sorted), so the closest file to a time is a
binary search; a time later than the newest file indexed makes it walk the tree again, so
files that arrived since are found.

The observation time of a file is its ``DATE-OBS`` (read from the chosen file's XML header
alone), else the time in its name. A file name is never trusted as a path: an image id is
a path relative to the root, checked to lie inside it (no absolute paths, no ``..``, no
link leading out).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from fdflare.core.errors import InputError

__all__ = ["LocalArchive"]


class LocalArchive:
    """The HMI JP2 files under ``root``, indexed by the time in their names.

    Args:
        root: a JP2 tree as ``fdflare download`` or ``fdflare synth --jp2`` writes it.

    Raises:
        InputError: ``root`` is not a folder, or holds no HMI JP2 file.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.given = Path(root)
        if not self.given.exists():
            raise InputError("no such archive folder", path=self.given, field="--archive")
        if not self.given.is_dir():
            raise InputError(
                "is a file; the archive is a folder of JP2 files (YYYY/MM/DD/HMI.m....jp2)",
                path=self.given,
                field="--archive",
            )
        self.root = self.given.resolve()
        self._lock = threading.Lock()
        self._times = np.array([], dtype="datetime64[ns]")
        self._names: list[str] = []
        self._known: set[str] = set()
        self.ignored = 0
        self._header_times: dict[str, pd.Timestamp | None] = {}
        self.refresh()
        if not self._names:
            raise InputError(
                "holds no HMI JPEG 2000 file (YYYY/MM/DD/HMI.mYYYY.MM.DD_HH.MM.SS.jp2, as "
                "`fdflare download` or `fdflare synth --jp2` writes them)",
                path=self.given,
                field="--archive",
            )

    @property
    def source(self) -> str:
        """``archive:/abs/root``: the source a forecast from this archive names."""
        return f"archive:{self.root}"

    def __len__(self) -> int:
        return len(self._names)

    def refresh(self) -> int:
        """Walk the tree again and index every file; return how many are indexed."""
        from fdflare.core.paths import parse_image_times, scan_images

        names = scan_images(self.root, extensions=("jp2",))
        times, _ext = parse_image_times(names)
        ok = times.notna().to_numpy()
        kept = [n for n, good in zip(names, ok.tolist(), strict=True) if good]
        t = times.to_numpy()[ok]
        order = np.argsort(t, kind="stable")
        with self._lock:
            self._times = t[order]
            self._names = [kept[i] for i in order]
            self._known = set(self._names)
            self.ignored = int((~ok).sum())
        return len(self._names)

    def closest(self, t: pd.Timestamp) -> tuple[str, pd.Timestamp] | None:
        """The file closest in time to ``t``: ``(relative path, observation time)``.

        None when the archive holds no file (it may have been emptied since it was opened).
        """
        ts = pd.Timestamp(t)
        if ts.tzinfo is not None:
            ts = ts.tz_convert("UTC").tz_localize(None)
        target = np.datetime64(ts, "ns")
        if not len(self._times) or target > self._times[-1]:
            self.refresh()  # files may have arrived since the index was made
        with self._lock:
            times, names = self._times, self._names
        if not len(times):
            return None
        i = int(np.searchsorted(times, target))
        candidates = [j for j in (i - 1, i) if 0 <= j < len(times)]
        j = min(candidates, key=lambda k: (abs(times[k] - target), k))
        name = names[j]
        return name, self.observation_time(name, pd.Timestamp(times[j]))

    def observation_time(self, image_id: str, named: pd.Timestamp | None = None) -> pd.Timestamp:
        """The file's ``DATE-OBS`` (whole seconds, UTC), else the time in its name."""
        if image_id in self._header_times:
            cached = self._header_times[image_id]
            if cached is not None:
                return cached
        else:
            from fdflare.core.timeparse import parse_time
            from fdflare.prepare.jp2 import read_jp2_header

            found: pd.Timestamp | None = None
            try:
                text = read_jp2_header(self.path(image_id)).get("DATE-OBS", "")
                if text:
                    found = parse_time(text, whole_seconds=False).floor("s")
            except (InputError, OSError, ValueError):
                found = None  # the decoder says what is wrong with the file
            self._header_times[image_id] = found
            if found is not None:
                return found
        if named is None:
            from fdflare.core.paths import parse_image_times

            named = pd.Timestamp(parse_image_times([image_id])[0].iloc[0])
        return named

    def path(self, image_id: str) -> Path:
        """The file of an image id (a relative path of the index), checked to lie in the root.

        Raises:
            InputError: an absolute path, ``..``, a link leading out of the root, or a
                name the archive does not hold.
        """
        rel = PurePosixPath(str(image_id))
        if (
            not str(image_id)
            or rel.is_absolute()
            or "\\" in str(image_id)
            or any(part in ("..", "") for part in str(image_id).split("/"))
        ):
            raise InputError(f"{image_id!r} is not an image of the archive", path=self.root)
        if str(rel) not in self._known:
            raise InputError(f"{image_id!r} is not an image of the archive", path=self.root)
        full = (self.root / rel).resolve()
        if not full.is_relative_to(self.root):
            raise InputError(
                f"{image_id!r} leads outside the archive (to {full}): refused", path=self.root
            )
        return full
