"""Collaborative item features: the item table of a SASRec trained on the training split only.

The same trained model is the SASRec baseline of the results tables; evaluate it with
:func:`genrec.lit.sasrec.evaluate_sasrec` on ``dataset.split.valid`` / ``.test``.
"""

from __future__ import annotations

import dataclasses

import time
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.loggers import CSVLogger

from genrec.config import from_dict
from genrec.data.dataset import Dataset
from genrec.data.split import training_items
from genrec.io import ArtifactError, atomic_path
from genrec.lit.callbacks import EpochLog, Throughput, batch_rows, quiet_lightning
from genrec.lit.sasrec import MONITOR, KeepBest, LitSASRec, SASRecDataModule, SASRecTrainConfig
from genrec.model.sasrec import SASRec, SASRecConfig

CHECKPOINT = "sasrec.pt"     # file name of the best weights inside ``out_dir``
LOG_DIR = "logs"             # CSVLogger folder inside ``out_dir``
MAX_LOG_INTERVAL = 50        # Lightning's default logging interval, lowered for datasets with fewer batches


@dataclass
class SASRecResult:
    model: SASRec                    # best weights (by validation NDCG@10), in eval mode
    item_embeddings: np.ndarray      # (n_items, d_model) float32: the collaborative features
    seen_in_training: np.ndarray     # (n_items,) bool: the item occurs in some training prefix
    best_val: dict[str, float]       # validation recall/ndcg @5/10/20 of the returned weights
    best_epoch: int                  # 0-based epoch of the returned weights
    epochs: int                      # epochs actually trained
    seconds: float                   # wall time of the whole fit, validation included
    train_samples_per_second: float  # training windows per second, over the training batches only
    n_train_windows: int             # training windows per epoch
    n_skipped_users: int             # users whose training prefix has < 2 items (nothing to learn from)


def train_sasrec(dataset: Dataset, config: SASRecTrainConfig, out_dir: Path | None = None) -> SASRecResult:
    """Train SASRec on ``dataset.split.train``, early-stopped on validation NDCG@10.

    With ``out_dir`` the best weights go to ``out_dir/sasrec.pt`` (architecture stored beside them,
    see :func:`load_sasrec`) and per-epoch metrics to ``out_dir/logs`` (CSV).
    """
    if config.eval_max_items is None:        # the protocol's history length, from the dataset manifest
        config = dataclasses.replace(config, eval_max_items=dataset.max_items)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        result = _fit(dataset, config, out_dir)
    finally:  # Trainer(deterministic=True) and the thread count are process-wide; give them back
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    if out_dir is not None:
        save_sasrec(Path(out_dir) / CHECKPOINT, result.model, config, result)
    return result


def _fit(dataset: Dataset, config: SASRecTrainConfig, out_dir: Path | None) -> SASRecResult:
    L.seed_everything(config.seed, workers=True, verbose=False)
    split = dataset.split
    data = SASRecDataModule(split, dataset.n_items, config)
    module = LitSASRec(config, dataset.n_items, item_counts=data.item_counts)
    # Windows per second over each epoch's training (loading included, validation not); nothing logged.
    keep, throughput = KeepBest(), Throughput(count=batch_rows, span="epoch", log_key=None)
    quiet_lightning()                        # no litlogger tips or absent-device banners in the embed log
    callbacks: list[L.Callback] = [keep, throughput, EpochLog()]   # a plain line per epoch, also in logs
    if config.early_stopping:
        callbacks.append(EarlyStopping(monitor=MONITOR, mode="max", patience=config.patience))
    n_batches = -(-len(data.train_windows) // config.batch_size)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=config.max_epochs, callbacks=callbacks,
        logger=CSVLogger(out_dir, name=LOG_DIR) if out_dir is not None else False,
        default_root_dir=out_dir, enable_checkpointing=False, enable_model_summary=False,
        enable_progress_bar=config.progress_bar, num_sanity_val_steps=0, deterministic=True,
        log_every_n_steps=min(MAX_LOG_INTERVAL, n_batches),
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        # Loading is in-process on purpose (tiny integer windows); Lightning's worker hint does not apply.
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(module, datamodule=data)
    seconds = time.perf_counter() - start
    if keep.best_state is None:
        raise RuntimeError("SASRec training finished without a validation pass; check max_epochs >= 1.")

    model = module.model
    if config.early_stopping:
        model.load_state_dict(keep.best_state)
        best_val, best_epoch = keep.best_metrics, keep.best_epoch
    else:
        best_val, best_epoch = keep.last_metrics, trainer.current_epoch - 1
    model.eval()
    seen = np.zeros(dataset.n_items, dtype=bool)
    seen[training_items(split)] = True
    return SASRecResult(
        model=model,
        item_embeddings=model.item_embeddings().detach().cpu().numpy().astype(np.float32),
        seen_in_training=seen,
        best_val=best_val,
        best_epoch=best_epoch,
        epochs=trainer.current_epoch,
        seconds=seconds,
        train_samples_per_second=throughput.per_second,
        n_train_windows=len(data.train_windows),
        n_skipped_users=data.train_windows.n_skipped_users,
    )


def save_sasrec(path: Path, model: SASRec, config: SASRecTrainConfig, result: SASRecResult) -> None:
    """Weights with the architecture beside them (nanoGPT's ``model_args``), written atomically."""
    payload = {
        "model_args": asdict(model.config),
        "train_config": asdict(config),
        "state_dict": model.state_dict(),
        "best_val": result.best_val,
        "best_epoch": result.best_epoch,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_sasrec(path: Path) -> SASRec:
    """Rebuild a SASRec (eval mode) from a checkpoint written by :func:`train_sasrec`."""
    return load_sasrec_with_config(path)[0]


def load_sasrec_with_config(path: Path) -> tuple[SASRec, SASRecTrainConfig]:
    """The SASRec and the training config it was fitted with (its ``eval_max_items`` is its history window)."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path} not found; train SASRec with train_sasrec(..., out_dir={path.parent}) first.")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    model = SASRec(SASRecConfig(**payload["model_args"]))
    model.load_state_dict(payload["state_dict"])
    known = {f.name for f in fields(SASRecTrainConfig)}   # a field since removed is not an error
    stored = {k: v for k, v in payload.get("train_config", {}).items() if k in known}
    return model.eval(), from_dict(SASRecTrainConfig, stored)


def collab_features(
    dataset: Dataset, config: SASRecTrainConfig, out_dir: Path | None = None
) -> tuple[np.ndarray, dict]:
    """The collaborative feature matrix (n_items, d_model) float32 and a JSON-ready summary for the manifest.

    Items that never occur in a training prefix still get a row (they were only ever softmax
    negatives); ``unseen_item_ids`` lists them so the fusion step can treat them as missing.
    """
    result = train_sasrec(dataset, config, out_dir)
    unseen = np.flatnonzero(~result.seen_in_training)
    info = {
        "encoder": "sasrec",
        "trained_on": "split.train",
        "dim": int(result.item_embeddings.shape[1]),
        "config": asdict(config),
        "best_val": result.best_val,
        "best_epoch": result.best_epoch,
        "epochs": result.epochs,
        "seconds": round(result.seconds, 3),
        "train_samples_per_second": round(result.train_samples_per_second, 1),
        "n_train_windows": result.n_train_windows,
        "n_users_without_transitions": result.n_skipped_users,  # training prefix < 2 items: nothing to learn
        "coverage": float(result.seen_in_training.mean()) if dataset.n_items else 0.0,
        "unseen_item_ids": unseen.tolist(),
    }
    return result.item_embeddings, info
