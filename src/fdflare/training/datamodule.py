"""Loaders over the prepared datasets, sharded over processes by the epoch sampler."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from fdflare.data.dataset import EpochSampler, FlareDataset, augment_on_device


class FlareDataModule(L.LightningDataModule):
    """Loaders over prepared datasets, sharded by :class:`~fdflare.data.dataset.EpochSampler`.

    Args:
        train: the augmented training set.
        val: the validation fold.
        holdout: the selection set, when held out from training.
        batch_size: images per batch per process.
        workers: loader worker processes.
        seed: shuffle seed.
        channels_last: hand batches to the model in channels-last memory format.

    Batches of uint8 images are scaled to [0, 1] after the copy to the device; batches of a
    ``device_augment`` training set are flipped and rotated there first.
    """

    def __init__(
        self,
        train: FlareDataset,
        val: FlareDataset,
        holdout: FlareDataset | None = None,
        *,
        batch_size: int = 64,
        workers: int = 4,
        seed: int = 0,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.train_set, self.val_set, self.holdout_set = train, val, holdout
        self.batch_size, self.workers, self.seed = batch_size, workers, seed
        self.channels_last = channels_last

    def _loader(self, dataset: FlareDataset, *, train: bool) -> torch.utils.data.DataLoader:
        trainer = self.trainer
        rank = trainer.global_rank if trainer is not None else 0
        world = trainer.world_size if trainer is not None else 1
        sampler = EpochSampler(
            len(dataset), shuffle=train, seed=self.seed, rank=rank, world_size=world, pad=train
        )
        cuda = trainer is not None and trainer.strategy.root_device.type == "cuda"
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.workers,
            pin_memory=cuda,
            persistent_workers=self.workers > 0,
            prefetch_factor=4 if self.workers > 0 else None,
            drop_last=False,
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augment (``device_augment``), then scale uint8 images to [0, 1] on the device."""
        if len(batch) == 3:
            x, y, aug = batch
            x = augment_on_device(x, aug)
        else:
            x, y = batch
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def train_dataloader(self) -> torch.utils.data.DataLoader:  # noqa: D102
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> list[torch.utils.data.DataLoader]:  # noqa: D102
        loaders = [self._loader(self.val_set, train=False)]
        if self.holdout_set is not None:
            loaders.append(self._loader(self.holdout_set, train=False))
        return loaders
