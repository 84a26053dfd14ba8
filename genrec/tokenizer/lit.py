"""Thin Lightning wrapper that trains an :class:`RQVAE`: MSE reconstruction + summed commitment loss.

The codebooks must already be initialised (k-means on a catalogue sample, see ``fit.py``);
this module only runs the optimisation and logs to CSV (``<log_dir>/<name>/version_*/metrics.csv``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from genrec.tokenizer.rqvae import RQVAE


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    epochs: int = 30             # passes over the catalogue
    min_steps: int = 0           # train at least this many optimisation steps (small catalogues have few per epoch)
    batch_size: int = 512        # items per optimisation step
    lr: float = 2e-3             # AdamW peak learning rate (cosine-decayed to lr_min_ratio × lr)
    lr_min_ratio: float = 0.05   # final learning rate as a fraction of lr
    weight_decay: float = 1e-4   # AdamW weight decay
    seed: int = 0                # shuffling order and dead-code re-seeding draws

    def __post_init__(self):
        if self.epochs < 0 or self.min_steps < 0:
            raise ValueError(f"TrainConfig.epochs and min_steps must be >= 0, got {self.epochs}, {self.min_steps}")
        if self.batch_size < 1:
            raise ValueError(f"TrainConfig.batch_size must be >= 1, got {self.batch_size}")
        if self.lr <= 0 or not 0 < self.lr_min_ratio <= 1 or self.weight_decay < 0:
            raise ValueError("TrainConfig: lr must be > 0, lr_min_ratio in (0, 1], weight_decay >= 0")


class RQVAELitModule(L.LightningModule):
    def __init__(self, model: RQVAE, config: TrainConfig):
        super().__init__()
        self.model = model
        self.config = config

    def training_step(self, batch: tuple[torch.Tensor], batch_idx: int) -> torch.Tensor:
        (x,) = batch                                         # (b, input_dim)
        out = self.model(x)
        recon = F.mse_loss(out.recon, out.target)
        # vector-quantize-pytorch >= 1.2x already multiplies each level's loss by commitment_weight
        commit = out.commit_losses.sum()
        loss = recon + commit
        self.log_dict({"loss": loss, "recon": recon, "commit": commit}, on_step=False, on_epoch=True,
                      batch_size=x.shape[0])
        return loss

    def on_train_epoch_end(self) -> None:
        # Codes whose EMA usage is below the revival threshold right now (0 = all alive).
        threshold = self.model.config.dead_code_threshold
        for level, layer in enumerate(self.model.rvq.layers):
            dead = (layer._codebook.cluster_size < threshold).sum().float()
            self.log(f"dead_codes_l{level}", dead)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)
        total = max(1, self.trainer.estimated_stepping_batches)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total,
                                                           eta_min=self.config.lr * self.config.lr_min_ratio)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def train_rqvae(model: RQVAE, x: torch.Tensor, config: TrainConfig, *, log_dir: Path, name: str) -> Path:
    """Train ``model`` in place on the rows of ``x`` (n, input_dim); returns the CSV metrics file."""
    L.seed_everything(config.seed, workers=True, verbose=False)
    gen = torch.Generator().manual_seed(config.seed)
    # drop_last: a final batch of 1-2 items gives a noisy step and skews the EMA counts
    drop_last = x.shape[0] > config.batch_size
    loader = DataLoader(TensorDataset(x), batch_size=config.batch_size, shuffle=True, generator=gen,
                        drop_last=drop_last)
    steps = max(config.epochs * len(loader), config.min_steps)
    logger = CSVLogger(save_dir=str(log_dir), name=name, version=0)
    # Lightning prints device banners at INFO; they add nothing on a CPU-only tokenizer run.
    lit_log = logging.getLogger("lightning.pytorch")
    level = lit_log.level
    lit_log.setLevel(logging.WARNING)
    # deterministic=True switches torch's global deterministic mode on; put it back afterwards
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            max_epochs=math.ceil(steps / len(loader)),
            max_steps=steps,
            logger=logger,
            enable_checkpointing=False,
            enable_model_summary=False,
            deterministic=True,
            log_every_n_steps=1,
        )
        model.train()
        trainer.fit(RQVAELitModule(model, config), train_dataloaders=loader)
    finally:
        lit_log.setLevel(level)
        torch.use_deterministic_algorithms(was_deterministic)
    model.eval()
    return Path(logger.log_dir) / "metrics.csv"
