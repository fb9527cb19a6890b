"""The study's training and validation steps as a Lightning module."""

from __future__ import annotations

import typing
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from fdflare.core.scores import skill_scores
from fdflare.models.networks import FlareNet, create_model
from fdflare.training.config import TrainConfig


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


class FlareClassifier(L.LightningModule):
    """The study's training and validation steps around a :class:`~fdflare.models.networks.FlareNet`.

    Args:
        config: the run's config.
        weights: NLL class weights ``(w_noflare, w_flare)``.
        model: the network; by default built from ``config``.
        channels_last: keep the weights in channels-last memory format (default: the
            config's ``channels_last``; :func:`~fdflare.training.config.resolve_runtime`
            resolves its ``auto``).
        compile: compile the network's forward with ``torch.compile`` (in place: the
            ``state_dict`` and so the checkpoints keep their names).
        selection: the name of the second validation loader's set (``holdout`` or
            ``select``; ``val``: none, the study selects on the validation fold).
    """

    def __init__(
        self,
        config: TrainConfig,
        weights: tuple[float, float],
        model: FlareNet | None = None,
        *,
        channels_last: bool | None = None,
        compile: bool = False,
        selection: str = "val",
    ) -> None:
        super().__init__()
        self.config = config
        self.selection = selection
        self.model = model if model is not None else create_model(config.model, pretrained=False)
        if config.channels_last if channels_last is None else channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if compile:
            import torch._dynamo as dynamo

            # a graph torch.compile cannot build runs eagerly (with a warning), never kills a run
            dynamo.config.suppress_errors = True
            self.model.compile()
        self.register_buffer(
            "class_weights", torch.tensor(weights, dtype=torch.float32), persistent=False
        )
        self._train_sum = torch.zeros(2)  # loss sum, batches
        self._epoch_begun = -1
        self._val: dict[int, torch.Tensor] = {}  # per loader: loss sum, batches, tp, fp, tn, fn
        self.epoch_scores: dict[str, float | None] = {}

    @property
    def weights(self) -> torch.Tensor:
        """The NLL class weights ``[w_noflare, w_flare]`` (a buffer: on the module's device)."""
        return typing.cast(torch.Tensor, self.class_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log-probabilities ``[B, 2]``."""
        return self.model(x)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """At an epoch's first batch, seed dropout from (seed, epoch, rank) and reset the loss sum.

        Done here rather than in ``on_train_epoch_start``, which Lightning skips for the first
        epoch after resuming from an end-of-epoch checkpoint: a resumed run draws the same
        dropout masks as an uninterrupted one.
        """
        if self._epoch_begun != self.current_epoch:
            self._epoch_begun = self.current_epoch
            torch.manual_seed(_epoch_seed(self.config.seed, self.current_epoch, self.global_rank))
            self._train_sum = torch.zeros(2, device=self.device)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:  # noqa: D102
        x, y = batch
        loss = F.nll_loss(self.model(x), y, weight=self.weights)
        self._train_sum += torch.stack([loss.detach().float(), torch.ones((), device=loss.device)])
        if (
            self.trainer.progress_bar_callback is not None
        ):  # a value for the bar costs a device sync
            self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=False, logger=False)
        return loss

    def train_loss(self) -> float:
        """Mean batch loss of the epoch so far, over all processes (call on every rank)."""
        total = self.trainer.strategy.reduce(self._train_sum.clone(), reduce_op="sum")
        return float(total[0] / total[1]) if float(total[1]) > 0 else float("nan")

    def on_validation_epoch_start(self) -> None:  # noqa: D102
        self._val = {}

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:  # noqa: D102
        x, y = batch
        logp = self.model(x).float()
        loss = F.nll_loss(logp, y, weight=self.weights)
        pred = logp[:, 1].exp() >= self.config.threshold
        truth = y.bool()
        row = torch.stack(
            [
                loss.detach(),
                torch.ones((), device=logp.device),
                (pred & truth).sum().float(),
                (pred & ~truth).sum().float(),
                (~pred & ~truth).sum().float(),
                (~pred & truth).sum().float(),
            ]
        )  # float32: exact for counts below 2**24, and MPS has no float64
        acc = self._val.get(dataloader_idx)
        self._val[dataloader_idx] = row if acc is None else acc + row

    def on_validation_epoch_end(self) -> None:
        """Reduce over processes and compute loss, TSS and HSS2 per loader (val, selection)."""
        prefixes = ["val"] if self.selection in ("val", "none") else ["val", self.selection]
        scores: dict[str, float | None] = {}
        for idx, prefix in enumerate(prefixes):
            acc = self._val.get(idx, torch.zeros(6, device=self.device))
            acc = self.trainer.strategy.reduce(acc, reduce_op="sum")
            loss_sum, batches, tp, fp, tn, fn = (float(v) for v in acc.cpu())
            tss, hss2, _notes = skill_scores(int(tp), int(fp), int(tn), int(fn))
            scores[f"{prefix}_loss"] = loss_sum / batches if batches else None
            scores[f"{prefix}_tss"] = tss
            scores[f"{prefix}_hss2"] = hss2
            scores[f"{prefix}_tp"], scores[f"{prefix}_fp"] = tp, fp
            scores[f"{prefix}_tn"], scores[f"{prefix}_fn"] = tn, fn
        self.epoch_scores = scores

    def configure_optimizers(self) -> Any:
        """SGD (or AdamW) with weight decay and ``OneCycleLR`` stepped every batch."""
        c = self.config
        optimizer: torch.optim.Optimizer
        if c.optimizer == "adamw":
            optimizer = torch.optim.AdamW(
                self.model.parameters(), lr=c.lr, weight_decay=c.weight_decay
            )
        else:
            optimizer = torch.optim.SGD(
                self.model.parameters(), lr=c.lr, weight_decay=c.weight_decay
            )
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=c.max_lr,
            total_steps=int(self.trainer.estimated_stepping_batches),
            pct_start=c.pct_start,
            anneal_strategy=c.anneal_strategy,  # type: ignore[arg-type]  # checked by validate()
            cycle_momentum=c.cycle_momentum,
            base_momentum=c.base_momentum,
            max_momentum=c.max_momentum,
            div_factor=c.div_factor,
            final_div_factor=c.final_div_factor,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
