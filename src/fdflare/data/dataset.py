"""The study's augmented training set: dataset, augmentation and the epoch sampler.

:class:`FlareDataset` gives ``(image, target)`` pairs: images ``[1, H, W]`` scaled to [0, 1]
(``ToTensor`` semantics, no normalisation) or left as uint8 for a faster host to device
copy; with ``augment=True`` it is the study's training set (flare instances x4: original,
horizontal flip, vertical flip, random rotation within +-5 deg; no-flare x2: original and
one random choice of those three). Random choices are drawn from ``(seed, epoch, index)``,
so an epoch gives the same samples whatever the number of workers and whether or not the
run was resumed. Label tables live in :mod:`fdflare.data.tables`, image sources in
:mod:`fdflare.data.sources`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from fdflare.core.errors import InputError
from fdflare.data.sources import ArrayStoreImages, FolderImages

# Augmentation kinds of one training sample.
ORIGINAL, HFLIP, VFLIP, ROTATE, RANDOM_CHOICE = 0, 1, 2, 3, 4
#: Copies of each flare / no-flare instance in the study's training set.
FLARE_KINDS = (ORIGINAL, HFLIP, VFLIP, ROTATE)
NOFLARE_KINDS = (ORIGINAL, RANDOM_CHOICE)
ROTATION_DEGREES = 5.0


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
        device_augment: leave the flips and rotations to the device: items are
            ``(image, target, augmentation)`` with the image unchanged and ``augmentation``
            ``[kind, degrees]`` (float64; kind 0 original, 1 hflip, 2 vflip, 3 rotate), the same
            random choices as on the host; :func:`augment_on_device` applies them to a batch.

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
        device_augment: bool = False,
    ) -> None:
        self.labels = np.asarray(table["label"].astype(str).to_numpy(), dtype=object)
        self.targets = table["target"].to_numpy().astype(np.int64)
        self.source = source
        self.image_size = int(image_size)
        self.augment = augment
        self.seed = int(seed)
        self.as_uint8 = as_uint8
        self.rotation_degrees = float(rotation_degrees)
        self.device_augment = device_augment
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

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, ...]:
        epoch, i = key if isinstance(key, tuple) else (0, key)
        row, kind = int(self.rows[i]), int(self.kinds[i])
        label = self.labels[row]
        img = self.source.read(label)
        if img.shape != (self.image_size, self.image_size) or img.dtype != np.uint8:
            raise InputError(
                f"image is {img.shape} {img.dtype}, expected {self.image_size}x{self.image_size} uint8",
                path=self.source.describe(label),
            )
        degrees = 0.0
        if kind in (ROTATE, RANDOM_CHOICE):
            rng = np.random.default_rng([self.seed, int(epoch), int(i)])
            if kind == RANDOM_CHOICE:
                kind = (HFLIP, VFLIP, ROTATE)[int(rng.integers(3))]
            if kind == ROTATE:
                d = self.rotation_degrees
                degrees = float(rng.uniform(-d, d))
        if self.device_augment:
            x = torch.from_numpy(np.array(img, copy=True)).unsqueeze(0)
            if not self.as_uint8:
                x = x.float().div_(255.0)
            aug = torch.tensor([float(kind), degrees], dtype=torch.float64)
            return x, torch.tensor(self.targets[row]), aug
        if kind == ROTATE:
            img = rotate(img, degrees)
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


def rotate_batch(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image of ``x`` ``[B, C, H, W]`` by its angle: the pixels of :func:`rotate`.

    PIL's nearest-neighbour affine map, redone on the tensors' device: the rotation about the
    image centre in 16.16 fixed point (as PIL's ``ImagingTransformAffine`` computes it for
    images under 32,768 pixels), output pixel ``(u, v)`` taking the input pixel under
    ``(u + 0.5, v + 0.5)``, 0 outside the image.
    """
    b, c, h, w = x.shape
    dev = x.device
    angle = -torch.deg2rad(torch.remainder(degrees.to(torch.float64).cpu(), 360.0))
    cos = torch.round(torch.cos(angle) * 1e15) / 1e15
    sin = torch.round(torch.sin(angle) * 1e15) / 1e15
    cx, cy = w / 2.0, h / 2.0
    a2 = cos * -cx + sin * -cy + cx
    a5 = -sin * -cx + cos * -cy + cy

    def fix(v: torch.Tensor) -> torch.Tensor:
        return torch.floor(v * 65536.0 + 0.5).long().to(dev)[:, None, None]

    a0, a1, a3, a4 = fix(cos), fix(sin), fix(-sin), fix(cos)
    xo, yo = fix(a2 + sin * 0.5 + cos * 0.5), fix(a5 + cos * 0.5 - sin * 0.5)
    us = torch.arange(w, device=dev)[None, None, :]
    vs = torch.arange(h, device=dev)[None, :, None]
    xi = (xo + vs * a1 + us * a0) >> 16
    yi = (yo + vs * a4 + us * a3) >> 16
    inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    index = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).view(b, 1, h * w).expand(b, c, h * w)
    out = torch.gather(x.reshape(b, c, h * w), 2, index).view(b, c, h, w)
    return out * inside.view(b, 1, h, w).to(out.dtype)


def augment_on_device(x: torch.Tensor, aug: torch.Tensor) -> torch.Tensor:
    """Apply the flips and rotations of ``device_augment`` items to a batch, where it lies.

    Args:
        x: images ``[B, C, H, W]`` (uint8 or float), unaugmented.
        aug: ``[B, 2]``: kind (0 original, 1 hflip, 2 vflip, 3 rotate) and degrees.
    """
    kind = aug[:, 0].round().long().to(x.device)
    out = x.clone()
    for k, flip in ((HFLIP, -1), (VFLIP, -2)):
        pick = (kind == k).nonzero().flatten()
        if len(pick):
            out[pick] = x[pick].flip(flip)
    pick = (kind == ROTATE).nonzero().flatten()
    if len(pick):
        out[pick] = rotate_batch(x[pick], aug[pick.to(aug.device), 1])
    return out


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
