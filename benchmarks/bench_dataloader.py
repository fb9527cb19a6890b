"""Data loading speed: fdflare's training set against the study's PIL + torchvision pipeline.

Writes ``--n`` synthetic 512 x 512 grey JPGs (a noisy disk with bright and dark regions, as
magnetograms) in the study's tree, then measures, in this run:

* per-worker throughput (images/s of ``dataset[i]`` in one process) over the augmented
  training set (flare x4, no-flare x2): the study's pipeline (one ``Dataset`` per
  augmentation, ``pandas.iloc`` per item, PIL -> torchvision transforms -> ``ToTensor``) as
  the baseline, and fdflare's :class:`~fdflare.data.dataset.FlareDataset` with float output, uint8
  output (scaled on the device), the ``torchvision.io`` decoder and the array store;
* ``DataLoader`` throughput with one worker and batch 64, which adds the cost of sending
  batches between processes (float32 for the study, uint8 for fdflare).

Run: ``python benchmarks/bench_dataloader.py [--n 400] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from fdflare.core.paths import image_relpaths
from fdflare.data.dataset import FlareDataset
from fdflare.data.sources import FolderImages, open_images


def make_images(root: Path, n: int, size: int = 512, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disk = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.45 * size) ** 2
    times = pd.date_range("2011-01-01", periods=n, freq="h")
    labels = image_relpaths(times, "jpg")
    for label in labels:
        a = np.full((size, size), 128.0)
        a[disk] += rng.normal(0, 6, int(disk.sum()))
        for _ in range(6):  # active regions
            cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
            r = rng.integers(5, 20)
            blob = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            a[blob & disk] = rng.choice([20, 235])
        a[~disk] = 0
        path = root / label
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a.clip(0, 255).astype(np.uint8), "L").save(path, quality=90)
    return pd.DataFrame({"label": labels, "goes_class": (np.arange(n) % 4 == 0).astype(int)})


class _StudyDataset(Dataset):
    """The study's per-class dataset: a filtered table, ``iloc`` per item, PIL + transform."""

    def __init__(
        self, table: pd.DataFrame, root: Path, transform: Callable, cls: int | None
    ) -> None:
        self.annotations = table if cls is None else table[table["goes_class"] == cls]
        self.root, self.transform = root, transform

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        hmi = Image.open(self.root / self.annotations.iloc[index, 0])
        return self.transform(hmi), torch.tensor(int(self.annotations.iloc[index, 1]))

    def __len__(self) -> int:
        return len(self.annotations)


def study_training_set(table: pd.DataFrame, root: Path) -> Dataset:
    tt = T.ToTensor()
    rot, hf, vf = (
        T.RandomRotation(degrees=(-5, 5)),
        T.RandomHorizontalFlip(1.0),
        T.RandomVerticalFlip(1.0),
    )
    parts = [
        _StudyDataset(table, root, T.Compose([tt]), 1),
        _StudyDataset(table, root, T.Compose([hf, tt]), 1),
        _StudyDataset(table, root, T.Compose([vf, tt]), 1),
        _StudyDataset(table, root, T.Compose([rot, tt]), 1),
        _StudyDataset(table, root, T.Compose([tt]), 0),
        _StudyDataset(table, root, T.Compose([T.RandomChoice([hf, vf, rot]), tt]), 0),
    ]
    return ConcatDataset(parts)


def items_per_second(ds: Dataset, repeat: int) -> float:
    n = len(ds)  # type: ignore[arg-type]
    best = 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        for i in range(n):
            ds[i]
        best = max(best, n / (time.perf_counter() - t0))
    return best


def loader_per_second(ds: Dataset, repeat: int) -> float:
    best = 0.0
    for _ in range(repeat):
        loader = DataLoader(ds, batch_size=64, num_workers=1, shuffle=False)
        t0 = time.perf_counter()
        n = sum(len(x) for x, _ in loader)
        best = max(best, n / (time.perf_counter() - t0))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="images (default %(default)s)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="repeats, best kept (default %(default)s)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # torchvision.io's notice

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        table = make_images(root, args.n)
        ours = table.rename(columns={"goes_class": "target"})
        baseline = study_training_set(table, root)
        rows: list[tuple[str, float]] = [
            (
                "study: PIL + torchvision transforms, float32",
                items_per_second(baseline, args.repeat),
            )
        ]
        pil = FolderImages(root)
        rows.append(
            (
                "fdflare: PIL + numpy, float32",
                items_per_second(
                    FlareDataset(ours, pil, image_size=512, augment=True), args.repeat
                ),
            )
        )
        rows.append(
            (
                "fdflare: PIL + numpy, uint8",
                items_per_second(
                    FlareDataset(ours, pil, image_size=512, augment=True, as_uint8=True),
                    args.repeat,
                ),
            )
        )
        tv = FolderImages(root, decoder="torchvision")
        rows.append(
            (
                "fdflare: torchvision.io, uint8",
                items_per_second(
                    FlareDataset(ours, tv, image_size=512, augment=True, as_uint8=True), args.repeat
                ),
            )
        )
        try:
            from fdflare.prepare.pipeline import build_array_store

            geometry = pd.DataFrame({"path": table["label"], "width": 512, "height": 512})
            build_array_store(root, geometry, 512, workers=1, progress=False)
            store = open_images(root)
            rows.append(
                (
                    "fdflare: array store (memory map), uint8",
                    items_per_second(
                        FlareDataset(ours, store, image_size=512, augment=True, as_uint8=True),
                        args.repeat,
                    ),
                )
            )
        except ImportError:
            pass
        loader_rows = [
            ("study: DataLoader, 1 worker, float32", loader_per_second(baseline, args.repeat)),
            (
                "fdflare: DataLoader, 1 worker, uint8",
                loader_per_second(
                    FlareDataset(ours, pil, image_size=512, augment=True, as_uint8=True),
                    args.repeat,
                ),
            ),
        ]

    n_samples = len(baseline)
    print(
        f"{args.n} images of 512 x 512 -> {n_samples} augmented training samples; best of {args.repeat}; 1 torch thread\n"
    )
    for title, group in (
        ("per worker (dataset[i] in one process)", rows),
        ("through a DataLoader", loader_rows),
    ):
        base = group[0][1]
        print(f"{title:48s} {'images/s':>10s} {'vs study':>9s}")
        for name, rate in group:
            print(f"{name:48s} {rate:10.0f} {rate / base:8.2f}x")
        print()


if __name__ == "__main__":
    main()
