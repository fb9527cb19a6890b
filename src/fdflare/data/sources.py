"""Image sources: one 8-bit grayscale image per label, and the up-front image check.

* :class:`FolderImages` reads PNG or JPG files under a root (the study's tree);
  :class:`ArrayStoreImages` reads the packed uint8 store of ``fdflare prepare --array-store``;
  :func:`open_images` picks one.
* :func:`check_images` finds missing files with one directory listing per folder and checks
  every image's size, mode and completeness from its header and trailer, all up front in the
  main process, so that a bad image fails before any training or prediction starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from PIL import Image

from fdflare.core.errors import InputError, MissingDataError

DECODERS = ("pil", "torchvision")
IMAGE_FORMATS = ("PNG", "JPEG")
#: bytes read from a file's end to find its end marker (JPEG writers may pad after it)
_TAIL = 1024
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_END = b"\xff\xd9"


def _complete(fmt: str | None, tail: bytes) -> bool:
    """Whether an image file's last bytes hold its format's end marker."""
    if fmt == "PNG":
        return tail.endswith(_PNG_END)
    if fmt == "JPEG":
        return _JPEG_END in tail
    return True


class ImageSource(Protocol):
    """Where images come from: reads one 8-bit grayscale image per label."""

    def read(self, label: str) -> np.ndarray:
        """Return the image of ``label`` as a ``uint8`` array ``[H, W]``."""
        ...

    def exists(self, labels: pd.Series) -> np.ndarray:
        """Return a boolean mask: which labels have an image."""
        ...

    def describe(self, label: str) -> str:
        """Return the file (or store entry) of ``label``, for messages."""
        ...


class _Renamer:
    """Label -> relative file path, optionally with another extension."""

    ext: str | None = None

    def relpath(self, label: str) -> str:
        """Return the path of ``label``'s image relative to the source."""
        if self.ext is None:
            return label
        stem, dot, _ = label.rpartition(".")
        return f"{stem if dot else label}.{self.ext}"

    def relpaths(self, labels: pd.Series) -> pd.Series:
        """Vectorised :meth:`relpath`."""
        s = pd.Series(labels, dtype="string")
        if self.ext is None:
            return s
        return s.str.replace(r"\.[^./]*$", "", regex=True) + f".{self.ext}"


class FolderImages(_Renamer):
    """PNG or JPG files under ``root`` at their label paths (the study's tree).

    Args:
        root: the image folder.
        ext: when given, replaces each label's extension (e.g. labels say ``.jpg`` and the
            images are PNG).
        decoder: ``"pil"`` (PIL + numpy) or ``"torchvision"`` (``torchvision.io.decode_image``).
    """

    def __init__(
        self, root: str | os.PathLike[str], ext: str | None = None, decoder: str = "pil"
    ) -> None:
        self.root = Path(root)
        self.ext = None if ext is None else ext.lstrip(".")
        if decoder not in DECODERS:
            raise InputError(
                f"unknown decoder {decoder!r}; choose one of {', '.join(DECODERS)}", field="decoder"
            )
        self.decoder = decoder
        if not self.root.is_dir():
            raise MissingDataError(
                f"image folder {self.root} does not exist (run `fdflare prepare` to make it)"
            )

    def describe(self, label: str) -> str:  # noqa: D102
        return str(self.root / self.relpath(label))

    def exists(self, labels: pd.Series) -> np.ndarray:
        """One ``os.listdir`` per distinct folder, then a vectorised membership test."""
        rel = self.relpaths(labels).astype(str)
        parent = rel.str.rpartition("/")[0]
        found: list[str] = []
        for d in pd.unique(parent.to_numpy()):
            try:
                names = os.listdir(self.root / d) if d else os.listdir(self.root)
            except (FileNotFoundError, NotADirectoryError):
                continue
            prefix = f"{d}/" if d else ""
            found.extend(prefix + n for n in names)
        return rel.isin(pd.Index(found)).to_numpy()

    def header(self, label: str) -> tuple[tuple[int, int], str]:
        """Return ``((width, height), mode)`` from the file header, without decoding.

        The file's end is checked too (a PNG ends with its ``IEND`` chunk, a JPEG with its
        end-of-image marker), so a truncated file is found here rather than when a loader
        decodes it mid-run.

        Raises:
            InputError: not a PNG or JPEG, or a truncated one, naming the file.
        """
        path = self.root / self.relpath(label)
        try:
            with Image.open(path, formats=IMAGE_FORMATS) as im:
                size, mode, fmt = im.size, im.mode, im.format
            with open(path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                length = fh.tell()
                fh.seek(max(0, length - _TAIL))
                tail = fh.read()
        except (OSError, SyntaxError, ValueError) as exc:
            raise InputError(f"not a readable PNG or JPEG image ({exc})", path=path) from exc
        if not _complete(fmt, tail):
            raise InputError(
                f"truncated {fmt} image: the file ends before its end marker ({length} bytes)",
                path=path,
            )
        return size, mode

    def read(self, label: str) -> np.ndarray:  # noqa: D102
        path = self.root / self.relpath(label)
        try:
            if self.decoder == "torchvision":
                import torch
                from torchvision.io import ImageReadMode, decode_image

                with open(path, "rb") as fh:
                    data = torch.frombuffer(bytearray(fh.read()), dtype=torch.uint8)
                t = decode_image(data, mode=ImageReadMode.UNCHANGED)
                if t.dtype != torch.uint8 or t.shape[0] != 1:
                    raise InputError(
                        f"image has {t.shape[0]} channel(s) of {t.dtype}, expected one 8-bit grayscale channel",
                        path=path,
                    )
                return t[0].numpy()
            with Image.open(path, formats=IMAGE_FORMATS) as im:
                if im.mode != "L":
                    raise InputError(
                        f"image mode is {im.mode}, expected 8-bit grayscale (L)", path=path
                    )
                return np.asarray(im)
        except InputError:
            raise
        except (OSError, SyntaxError, ValueError, RuntimeError) as exc:
            raise InputError(
                f"cannot decode image ({type(exc).__name__}: {exc})", path=path
            ) from exc


class ArrayStoreImages(_Renamer):
    """Images from the packed uint8 array of ``fdflare prepare --array-store``.

    The store is ``DIR/images.npy`` (``N x size x size`` uint8) with ``DIR/images_index.csv``
    (``row``, ``path``), opened by ``fdflare.prepare.store.open_array_store``. It is memory-mapped:
    worker processes reopen the map instead of receiving a copy.

    Args:
        root: the store folder (the output folder of ``fdflare prepare``).
        ext: when given, replaces each label's extension before the look-up.
    """

    def __init__(self, root: str | os.PathLike[str], ext: str | None = None) -> None:
        from fdflare.prepare.store import open_array_store

        self.root = Path(root)
        self.ext = None if ext is None else ext.lstrip(".")
        images, index = open_array_store(self.root)
        self.shape = tuple(images.shape)
        filename = getattr(images, "filename", None)
        self.file = Path(filename) if filename else self.root / "images.npy"
        self.row_of = dict(zip(index["path"].astype(str), index["row"].astype(int), strict=True))
        self._images: np.ndarray | None = images

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_images"] = None  # reopened lazily: pickling a memory map would copy it
        return state

    @property
    def images(self) -> np.ndarray:
        """The memory-mapped ``N x H x W`` array."""
        if self._images is None:
            self._images = np.load(self.file, mmap_mode="r")
        return self._images

    def exists(self, labels: pd.Series) -> np.ndarray:  # noqa: D102
        return self.relpaths(labels).astype(str).isin(pd.Index(list(self.row_of))).to_numpy()

    def describe(self, label: str) -> str:  # noqa: D102
        return f"{self.file}[{self.relpath(label)}]"

    def header(self, label: str) -> tuple[tuple[int, int], str]:
        """Return ``((width, height), "L")``: every stored image has the store's size."""
        return (int(self.shape[2]), int(self.shape[1])), "L"

    def read(self, label: str) -> np.ndarray:  # noqa: D102
        return self.images[self.row_of[self.relpath(label)]]


def open_images(
    path: str | os.PathLike[str],
    ext: str | None = None,
    decoder: str = "pil",
    array_store: bool = True,
) -> FolderImages | ArrayStoreImages:
    """Return the image source at ``path``.

    Args:
        path: an image folder, or the output folder of ``fdflare prepare --array-store``.
        ext: replace the labels' image extension.
        decoder: decoder of image files.
        array_store: use the array store when ``path`` holds one (else the files).
    """
    path = Path(path)
    if not path.is_dir():
        raise MissingDataError(
            f"image folder {path} does not exist (run `fdflare prepare` to make it)"
        )
    if array_store and (path / "images.npy").is_file() and (path / "images_index.csv").is_file():
        return ArrayStoreImages(path, ext=ext)
    return FolderImages(path, ext=ext, decoder=decoder)


# --------------------------------------------------------------------------- checks


@dataclass
class ImageCheck:
    """What :func:`check_images` found.

    Attributes:
        keep: boolean mask of the rows whose image exists.
        missing: labels of the rows without an image.
    """

    keep: np.ndarray
    missing: list[str]


def check_images(
    table: pd.DataFrame,
    source: FolderImages | ArrayStoreImages,
    *,
    image_size: int,
    skip_missing: bool = False,
    table_path: str | os.PathLike[str] | None = None,
    check_headers: bool = True,
) -> ImageCheck:
    """Check, in the main process, that every label has an image of the right size and mode.

    Args:
        table: label table (``label`` column).
        source: image source.
        image_size: expected width and height in pixels.
        skip_missing: drop rows without an image instead of failing (reported in the result).
        table_path: the table's file, for messages.
        check_headers: read every image header (size and mode; about 20,000 a second from
            a local disk); else only the first.

    Raises:
        MissingDataError: images are missing and ``skip_missing`` is false: the count and the
            first few, and ``--skip-missing``.
        InputError: an image of the wrong size or mode, naming the file.
    """
    labels = table["label"]
    exists = source.exists(labels)
    missing = labels[~exists].astype(str).tolist()
    where = f" (labels from {table_path})" if table_path else ""
    if missing and not skip_missing:
        shown = ", ".join(source.describe(x) for x in missing[:5])
        raise MissingDataError(
            f"{len(missing)} of {len(labels)} images are missing{where}, e.g. {shown}. Make them "
            "with `fdflare prepare`, or pass --skip-missing to drop those rows and go on"
        )
    present = labels[exists].astype(str).tolist()
    todo = present if check_headers else present[:1]
    if todo:
        expected = (image_size, image_size)
        for label in todo:  # sequential: PIL's header parsing holds the GIL, threads only slow it
            size, mode = source.header(label)
            if size != expected or mode != "L":
                raise InputError(
                    f"image is {size[0]}x{size[1]} {mode}, expected {image_size}x{image_size} "
                    "8-bit grayscale (L); resize with `fdflare prepare --size` or set --image-size",
                    path=source.describe(label),
                )
    return ImageCheck(keep=exists, missing=missing)
