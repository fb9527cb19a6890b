"""Image names and times in the study's layout, vectorised.

Images live at ``YYYY/MM/DD/HMI.mYYYY.MM.DD_HH.MM.SS.<ext>``, named after the *requested*
time. These helpers go from times to relative paths and back, over whole arrays at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "jp2")


def image_relpaths(
    times: pd.Series | pd.DatetimeIndex | np.ndarray, ext: str = "jpg"
) -> np.ndarray:
    """Return ``YYYY/MM/DD/HMI.mYYYY.MM.DD_HH.MM.SS.<ext>`` for each time."""
    t = pd.DatetimeIndex(pd.to_datetime(times))
    day = t.strftime("%Y/%m/%d/HMI.m%Y.%m.%d_%H.%M.%S")
    return (np.asarray(day, dtype=object) + f".{ext}").astype(str)


def parse_image_times(names: Iterable[str] | pd.Series) -> tuple[pd.Series, pd.Series]:
    """Parse the time from each image name (any directory prefix).

    Works on fixed byte positions with numpy rather than a regular expression per name
    (about 6x faster on 60,000 names); the name must contain
    ``HMI.mYYYY.MM.DD_HH.MM.SS.<ext>`` with a valid calendar date and time.

    Returns:
        ``(times, ext)``: times as ``datetime64[ns]`` (``NaT`` for names that do not follow
        the pattern) and the extension of each name (empty where it does not).
    """
    names = list(names)
    tails = [n[n.rfind("HMI.m") + 5 :] if "HMI.m" in n else "" for n in map(str, names)]
    raw = np.array([t.encode("ascii", "replace")[:24] for t in tails], dtype="S24")
    u = raw.view(np.uint8).reshape(len(raw), 24).astype(np.int64)
    d = u[:, [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]] - ord("0")
    ok = np.all((d >= 0) & (d <= 9), axis=1)
    for pos, char in ((4, "."), (7, "."), (10, "_"), (13, "."), (16, "."), (19, ".")):
        ok &= u[:, pos] == ord(char)
    year = d[:, 0] * 1000 + d[:, 1] * 100 + d[:, 2] * 10 + d[:, 3]
    month, day = d[:, 4] * 10 + d[:, 5], d[:, 6] * 10 + d[:, 7]
    hh, mm, ss = d[:, 8] * 10 + d[:, 9], d[:, 10] * 10 + d[:, 11], d[:, 12] * 10 + d[:, 13]
    ok &= (month >= 1) & (month <= 12) & (day >= 1) & (hh < 24) & (mm < 60) & (ss < 60)
    month_start = np.where(ok, (year - 1970) * 12 + month - 1, 0).astype("datetime64[M]")
    first_day = month_start.astype("datetime64[D]")
    days_in_month = ((month_start + 1).astype("datetime64[D]") - first_day).astype(np.int64)
    ok &= day <= days_in_month
    secs = (first_day + (day - 1)).astype("datetime64[s]") + (hh * 3600 + mm * 60 + ss)
    times = np.where(ok, secs.astype("datetime64[ns]"), np.datetime64("NaT", "ns"))
    ext = [t[20:] if good else "" for t, good in zip(tails, ok.tolist(), strict=False)]
    return pd.Series(times, dtype="datetime64[ns]"), pd.Series(ext, dtype="object")


def walk_tree(
    root: str | os.PathLike[str],
    *,
    skip_hidden: bool = False,
    prune: Callable[[Path], bool] | None = None,
) -> tuple[list[str], list[tuple[str, str]]]:
    """List every file under ``root``, following links to folders, without looping.

    A folder linked into the tree (a month kept on another disk) is walked like any other.
    A link back to one of its own ancestors would loop forever: it is skipped and reported,
    and so are folders that cannot be listed and links that point nowhere.

    Args:
        root: the top folder.
        skip_hidden: skip files and folders whose name starts with ``.``.
        prune: a folder for which this returns true is not entered (nor reported).

    Returns:
        ``(files, skipped)``: sorted POSIX paths relative to ``root`` (through links, as the
        user sees them), and ``(relative path, reason)`` of what was not walked, folders
        ending in ``/``.
    """
    root = Path(root)
    files: list[str] = []
    skipped: list[tuple[str, str]] = []
    try:
        top = root.stat()
    except OSError as exc:
        return files, [("./", f"cannot read this folder: {exc.strerror or exc}")]
    # (folder, its path relative to root, the (device, inode) of it and of its ancestors:
    # a folder whose key is among its ancestors' is a link back up, a loop)
    stack: list[tuple[Path, str, dict[tuple[int, int], str]]] = [
        (root, "", {(top.st_dev, top.st_ino): "."})
    ]
    while stack:
        here, rel, ancestors = stack.pop()
        try:
            with os.scandir(here) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            skipped.append(((rel or ".") + "/", f"cannot read this folder: {exc.strerror or exc}"))
            continue
        for entry in entries:
            if skip_hidden and entry.name.startswith("."):
                continue
            name = f"{rel}/{entry.name}" if rel else entry.name
            try:
                is_dir = entry.is_dir()  # follows links; no system call for plain entries
            except OSError:
                is_dir = False
            if not is_dir:
                if entry.is_symlink() and not os.path.exists(entry.path):
                    skipped.append((name, "skipped: a link that points nowhere"))
                else:
                    files.append(name)
                continue
            try:
                st = entry.stat()  # the folder itself, through a link
            except OSError as exc:
                skipped.append((name + "/", f"cannot read this folder: {exc.strerror or exc}"))
                continue
            key = (st.st_dev, st.st_ino)
            if key in ancestors:
                skipped.append(
                    (
                        name + "/",
                        f"skipped: a link to {_shown_folder(ancestors[key])}, which contains "
                        "it (following it would loop forever)",
                    )
                )
                continue
            if prune is not None and prune(Path(entry.path)):
                continue
            stack.append((Path(entry.path), name, {**ancestors, key: name}))
    files.sort()
    skipped.sort()
    return files, skipped


def _shown_folder(rel: str) -> str:
    return "the top folder" if rel == "." else rel + "/"


def scan_image_tree(
    root: str | os.PathLike[str], extensions: Iterable[str] = IMAGE_EXTENSIONS
) -> tuple[list[str], list[tuple[str, str]]]:
    """Image files under ``root`` (links followed) and what was skipped: see :func:`walk_tree`."""
    exts = {"." + e.lower().lstrip(".") for e in extensions}
    files, skipped = walk_tree(root)
    found = [
        f
        for f in files
        if (name := f.rsplit("/", 1)[-1]).startswith("HMI.m") and Path(name).suffix.lower() in exts
    ]
    return found, skipped


def scan_images(
    root: str | os.PathLike[str], extensions: Iterable[str] = IMAGE_EXTENSIONS
) -> list[str]:
    """List image files under ``root`` as sorted POSIX paths relative to it (links followed)."""
    return scan_image_tree(root, extensions)[0]
