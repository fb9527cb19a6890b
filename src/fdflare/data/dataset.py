"""Label tables, image sources and the study's augmented training set.

* :func:`read_label_csv` reads a label table: the study's fold files (``label,goes_class``
  where ``goes_class`` is the binary target) or fdflare's ``labels.csv`` (``label``,
  ``target``, ...). :func:`fold_tables` picks the train and validation tables of a fold.
* An image source reads one 8-bit grayscale image per label: :class:`FolderImages` (PNG or
  JPG files under a root, the study's tree) or :class:`ArrayStoreImages` (the packed uint8
  store of ``fdflare prepare --array-store``). :func:`check_images` finds missing files with
  one directory listing per folder and checks every image's size and mode from its header,
  all up front in the main process.
* :class:`FlareDataset` gives ``(image, target)`` pairs: images ``[1, H, W]`` scaled to
  [0, 1] (``ToTensor`` semantics, no normalisation) or left as uint8 for a faster host to
  device copy; with ``augment=True`` it is the study's training set (flare instances x4:
  original, horizontal flip, vertical flip, random rotation within +-5 deg; no-flare x2:
  original and one random choice of those three). Random choices are drawn from
  ``(seed, epoch, index)``, so an epoch gives the same samples whatever the number of
  workers and whether or not the run was resumed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from fdflare.core.errors import InputError, MissingDataError

# Augmentation kinds of one training sample.
ORIGINAL, HFLIP, VFLIP, ROTATE, RANDOM_CHOICE = 0, 1, 2, 3, 4
AUGMENT_NAMES = ("original", "hflip", "vflip", "rotate", "random")
#: Copies of each flare / no-flare instance in the study's training set.
FLARE_KINDS = (ORIGINAL, HFLIP, VFLIP, ROTATE)
NOFLARE_KINDS = (ORIGINAL, RANDOM_CHOICE)
ROTATION_DEGREES = 5.0
DECODERS = ("pil", "torchvision")
IMAGE_FORMATS = ("PNG", "JPEG")


# --------------------------------------------------------------------------- label tables


def read_label_csv(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a label table and return it with ``label`` (str) and ``target`` (int64) columns.

    Accepts the study's fold files (``label,goes_class`` with ``goes_class`` the binary
    target) and fdflare's ``labels.csv`` (``label``, ``target`` and more columns, which are
    kept). Labels are relative image paths; absolute paths and ``..`` are refused.

    Raises:
        InputError: naming the file, line and field of the first bad value.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such label table", path=path)
    try:
        df = pd.read_csv(path, dtype={"label": "string"}, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"not a readable CSV table ({exc})", path=path) from exc
    if "label" not in df.columns:
        raise InputError(
            f"missing column 'label' (found {', '.join(map(str, df.columns))})",
            path=path,
            field="label",
        )
    if "target" in df.columns:
        field = "target"
    elif "goes_class" in df.columns:
        field = "goes_class"  # the study's fold files: goes_class holds the binary target
    else:
        raise InputError(
            "missing target column: expected 'target' (fdflare labels.csv) or 'goes_class' "
            "(the study's fold files, binary)",
            path=path,
            field="target",
        )
    label = df["label"].astype("string").str.strip()
    bad = (label.isna() | (label == "")).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"empty label ({int(bad.sum())} in all)", path=path, line=i + 2, field="label"
        )
    unsafe = (
        label.str.startswith("/")
        | label.str.contains(r"(?:^|[/\\])\.\.(?:[/\\]|$)")
        | label.str.match(r"^[A-Za-z]:")
    ).to_numpy(dtype=bool)
    if unsafe.any():
        i = int(np.flatnonzero(unsafe)[0])
        raise InputError(
            f"label {label.iloc[i]!r} is not a relative path inside the image folder",
            path=path,
            line=i + 2,
            field="label",
        )
    target = pd.to_numeric(df[field], errors="coerce")
    bad = ~target.isin([0, 1]).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        hint = (
            " (the study's fold files hold the binary target in goes_class)"
            if field == "goes_class"
            else ""
        )
        raise InputError(
            f"target {df[field].iloc[i]!r} is not 0 or 1{hint}; {int(bad.sum())} bad value(s) in all",
            path=path,
            line=i + 2,
            field=field,
        )
    out = df.copy()
    out["label"] = label.astype(str).to_numpy()
    out["target"] = target.to_numpy().astype(np.int64)
    if field == "goes_class":
        out = out.drop(columns=["goes_class"])
    out.attrs["path"] = str(path)
    return out


@dataclass
class FoldTables:
    """The train and validation tables of one fold, with where they came from."""

    train: pd.DataFrame
    val: pd.DataFrame
    train_path: Path
    val_path: Path


def fold_tables(labels: str | os.PathLike[str], fold: int) -> FoldTables:
    """Return the train and validation tables of ``fold`` from a label folder or table.

    For a folder, uses ``Fold{k}_train.csv`` and ``Fold{k}_val.csv`` when present (the
    study's files, or those of ``fdflare label``); otherwise, or when ``labels`` is a table
    file, splits that table (``labels.csv``) by its ``fold`` column (or by the calendar
    quarter of the image time: fold k validates months 3k-2 .. 3k).

    Raises:
        MissingDataError: neither the fold files nor ``labels.csv`` exist.
    """
    labels = Path(labels)
    if labels.is_file():  # a table given: split it
        table_path = labels
    else:
        table_path = labels / "labels.csv"
        train_path, val_path = labels / f"Fold{fold}_train.csv", labels / f"Fold{fold}_val.csv"
        if train_path.is_file() and val_path.is_file():
            train, val = read_label_csv(train_path), read_label_csv(val_path)
            return FoldTables(train, val, train_path, val_path)
    if not table_path.is_file():
        raise MissingDataError(
            f"no labels for fold {fold} in {labels}: expected Fold{fold}_train.csv and "
            f"Fold{fold}_val.csv, or labels.csv (run `fdflare label --out {labels}` to make them)"
        )
    table = read_label_csv(table_path)
    if "fold" in table.columns:
        fold_of = pd.to_numeric(table["fold"], errors="coerce").to_numpy()
    else:
        from fdflare.core.paths import parse_image_times

        times, _ = parse_image_times(table["label"])
        fold_of = ((pd.DatetimeIndex(times).month.to_numpy() - 1) // 3 + 1).astype(float)
    if not np.isin(fold_of, [fold]).any():
        raise InputError(f"no instance of fold {fold} in the table", path=table_path, field="fold")
    val = fold_of == fold
    train_df = table[~val].reset_index(drop=True)
    val_df = table[val].reset_index(drop=True)
    train_df.attrs["path"] = val_df.attrs["path"] = str(table_path)
    return FoldTables(train_df, val_df, table_path, table_path)


def class_weights(
    n_flare: int, n_noflare: int, flare_copies: int = 4, noflare_copies: int = 2
) -> tuple[float, float]:
    """Return the study's NLL class weights ``[r, 1 - r]``.

    ``r = 1 - c_nf N_nf / (c_fl N_fl + c_nf N_nf)`` with the counts before augmentation and
    the copies per instance (4 and 2 in the study), i.e. each class is weighted by the
    share of the *other* class in the augmented training set.
    """
    total = flare_copies * n_flare + noflare_copies * n_noflare
    if total == 0:
        raise ValueError("no training instances")
    r = 1.0 - (noflare_copies * n_noflare) / total
    return r, 1.0 - r


def augmentation_plan(target: np.ndarray, augment: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Expand a table into training samples: ``(row, kind)`` for each.

    Flare rows appear 4 times (original, hflip, vflip, rotate), no-flare rows twice
    (original, one random choice of the three), in the study's order: all flare originals,
    flips, rotations, then no-flare originals and augmented copies. ``augment=False`` gives
    each row once, unchanged.
    """
    target = np.asarray(target)
    rows = np.arange(len(target))
    if not augment:
        return rows, np.full(len(rows), ORIGINAL, dtype=np.int8)
    fl, nf = rows[target == 1], rows[target == 0]
    parts_rows = [fl] * len(FLARE_KINDS) + [nf] * len(NOFLARE_KINDS)
    parts_kind = [np.full(len(fl), k, np.int8) for k in FLARE_KINDS] + [
        np.full(len(nf), k, np.int8) for k in NOFLARE_KINDS
    ]
    return np.concatenate(parts_rows), np.concatenate(parts_kind)


# --------------------------------------------------------------------------- image sources


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
        """Return ``((width, height), mode)`` from the file header, without decoding."""
        path = self.root / self.relpath(label)
        try:
            with Image.open(path, formats=IMAGE_FORMATS) as im:
                return im.size, im.mode
        except (OSError, SyntaxError, ValueError) as exc:
            raise InputError(f"not a readable PNG or JPEG image ({exc})", path=path) from exc

    def read(self, label: str) -> np.ndarray:  # noqa: D102
        path = self.root / self.relpath(label)
        try:
            if self.decoder == "torchvision":
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


# --------------------------------------------------------------------------- dataset


class FlareDataset(Dataset):
    """``(image, target)`` pairs from a label table, optionally the study's augmented set.

    Args:
        table: label table with ``label`` and ``target`` columns.
        source: image source (:func:`open_images`).
        image_size: expected image width and height; another size is an :class:`InputError`.
        augment: expand into the study's augmented training set (:func:`augmentation_plan`).
        seed: seed of the random augmentation choices.
        as_uint8: return uint8 images (for a 4x smaller host-to-device copy; scale on the
            device with ``x.float() / 255``) instead of float32 in [0, 1].
        rotation_degrees: rotations are drawn uniformly within +-this angle (5 in the study).

    Items are indexed by ``i`` or by ``(epoch, i)`` (see :class:`EpochSampler`): the random
    choices of sample ``i`` depend only on ``(seed, epoch, i)``.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        source: FolderImages | ArrayStoreImages,
        *,
        image_size: int,
        augment: bool = False,
        seed: int = 0,
        as_uint8: bool = False,
        rotation_degrees: float = ROTATION_DEGREES,
    ) -> None:
        self.labels = np.asarray(table["label"].astype(str).to_numpy(), dtype=object)
        self.targets = table["target"].to_numpy().astype(np.int64)
        self.source = source
        self.image_size = int(image_size)
        self.augment = augment
        self.seed = int(seed)
        self.as_uint8 = as_uint8
        self.rotation_degrees = float(rotation_degrees)
        self.rows, self.kinds = augmentation_plan(self.targets, augment)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def n_flare(self) -> int:
        """Flare instances (before augmentation)."""
        return int(self.targets.sum())

    @property
    def n_noflare(self) -> int:
        """No-flare instances (before augmentation)."""
        return int(len(self.targets) - self.targets.sum())

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = key if isinstance(key, tuple) else (0, key)
        row, kind = int(self.rows[i]), int(self.kinds[i])
        label = self.labels[row]
        img = self.source.read(label)
        if img.shape != (self.image_size, self.image_size) or img.dtype != np.uint8:
            raise InputError(
                f"image is {img.shape} {img.dtype}, expected {self.image_size}x{self.image_size} uint8",
                path=self.source.describe(label),
            )
        if kind in (ROTATE, RANDOM_CHOICE):
            rng = np.random.default_rng([self.seed, int(epoch), int(i)])
            if kind == RANDOM_CHOICE:
                kind = (HFLIP, VFLIP, ROTATE)[int(rng.integers(3))]
            if kind == ROTATE:
                d = self.rotation_degrees
                img = rotate(img, float(rng.uniform(-d, d)))
        if kind == HFLIP:
            img = img[:, ::-1]
        elif kind == VFLIP:
            img = img[::-1]
        img = np.ascontiguousarray(img)
        if not img.flags.writeable:  # PIL and memory-mapped arrays are read-only
            img = img.copy()
        x = torch.from_numpy(img).unsqueeze(0)
        if not self.as_uint8:
            x = x.float().div_(255.0)
        return x, torch.tensor(self.targets[row])


def rotate(img: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate about the centre, nearest neighbour, corners filled with 0.

    The same pixels as ``torchvision.transforms.RandomRotation`` on a PIL image (which is
    ``PIL.Image.rotate`` with ``NEAREST``), as the study.
    """
    return np.asarray(
        Image.fromarray(img).rotate(degrees, resample=Image.Resampling.NEAREST, fillcolor=0)
    )


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` keys for :class:`FlareDataset`, sharded over processes.

    Shuffling uses a generator seeded with ``seed + epoch`` (as ``DistributedSampler``), so
    an epoch's order depends only on the seed and the epoch: a resumed run sees the same
    batches as an uninterrupted one. Lightning calls :meth:`set_epoch` before each epoch.

    Args:
        n: dataset length.
        shuffle: permute each epoch (training) or keep order (evaluation).
        seed: shuffle seed.
        rank: this process's rank.
        world_size: number of processes.
        pad: with several processes, repeat indices so every process gets the same number
            (training, where DDP needs equal batch counts); evaluation shards are left uneven.
    """

    def __init__(
        self,
        n: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        pad: bool = True,
    ) -> None:
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch of the next iteration."""
        self.epoch = int(epoch)

    def _indices(self) -> np.ndarray:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            idx = torch.randperm(self.n, generator=g).numpy()
        else:
            idx = np.arange(self.n)
        if self.pad and self.world_size > 1 and self.n % self.world_size:
            extra = self.world_size - self.n % self.world_size
            idx = np.concatenate([idx, np.resize(idx, extra)])
        return idx[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return iter([(epoch, int(i)) for i in self._indices()])

    def __len__(self) -> int:
        if self.pad and self.world_size > 1:
            return -(-self.n // self.world_size)
        return len(range(self.rank, self.n, self.world_size))
