"""Lightning training and full-ranking evaluation for :class:`genrec.model.sasrec.SASRec`.

Data contract: training windows come from ``Split.train`` only (the part of each user's
sequence before the validation and test targets). Validation and test examples are only ever
used for scoring, never as inputs to a gradient step.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from tqdm.auto import tqdm

from genrec.baselines import popularity_counts
from genrec.data.split import EvalExamples, Split
from genrec.lit.batching import LengthBucketBatchSampler, next_item_windows
from genrec.lit.optim import ITEM_GRADS, AdamWSparse, sparse_item_grad
from genrec.metrics import DEFAULT_KS, ranking_metrics, topk_from_scores
from genrec.model.sasrec import Positions, SASRec, SASRecConfig

IGNORE_INDEX = -100          # target value for padded positions (torch cross_entropy convention)
MONITOR = "val/ndcg@10"      # the only metric used for early stopping and model selection
TOP_K = max(DEFAULT_KS)      # length of the ranked lists scored by the metrics
ADAM_BETAS = (0.9, 0.98)     # the betas of the original SASRec
DEFAULT_SAMPLED_NEGATIVES = 2048   # loss="sampled": shared negatives per batch when n_negatives is None (cornac)


@dataclass
class SASRecTrainConfig:
    d_model: int = 64                   # embedding and hidden width
    n_layers: int = 2                   # transformer blocks
    n_heads: int = 1                    # attention heads
    ffn_mult: int = 1                   # feed-forward width multiplier
    dropout: float = 0.2                # dropout on embeddings, attention and residual branches
    train_max_len: int = 50             # training window; longer training prefixes are cut into several windows
    training_examples: Literal["windows", "prefix"] = "windows"  # windows: every position of a window is a
                                        # target (SASRec's paper); prefix: one example per target, its last
                                        # train_max_len items as input (cornac's loop; ~mean-length x the work)
    positions: Positions = "from_start"  # position 0 at the window's first item (GPT style) or at its
                                        # newest (the original SASRec's left padding); see genrec.model.sasrec
    eval_max_items: int | None = None   # histories are truncated to their last eval_max_items; None: the
                                        # dataset's max_items (its manifest), the protocol length genrec reads too
    loss: Literal["ce", "bce", "sampled"] = "ce"  # ce: full softmax over the catalogue; bce: one positive vs
                                        # uniform negatives; sampled: softmax over the batch's targets plus
                                        # n_negatives popularity-drawn negatives (cost does not grow with n_items)
    n_negatives: int | None = None      # bce: uniform negatives per position (None: 1); sampled: negatives shared
                                        # by the batch (None: 2048, cornac's n_sample)
    sample_alpha: float = 0.5           # sampled: negatives drawn with probability ~ training count ** sample_alpha
    logq_correction: bool = False       # sampled: subtract log(expected occurrences among the candidates) from
                                        # each candidate's logit (sampling-bias correction); cornac's 'ce' has none
    batch_size: int = 128               # training windows per step
    batching: Literal["length", "random"] = "length"  # length: the epoch sorted by window length, so every batch
                                        # holds one length (SASRec's loader as it has been); random: plain
                                        # shuffled batches, as pmixer's, cornac's and gSASRec's loaders draw
    eval_batch_size: int = 1024         # histories scored at once during validation and testing
    lr: float = 1e-3                    # AdamW peak learning rate
    weight_decay: float = 0.0           # AdamW decoupled weight decay on matrices (not biases or LayerNorm,
                                        # nor a sparse item table: SparseAdam has none)
    item_grad: str = "auto"             # the item table's update (genrec.lit.optim): "dense" AdamW; "sparse" only
                                        # the rows a batch read (bce and sampled losses); "auto": sparse from
                                        # genrec.lit.optim.SPARSE_ITEMS_FROM items on with those losses
    warmup_steps: int = 0               # linear learning-rate warmup steps; 0 disables warmup
    max_epochs: int = 200               # upper bound on training epochs
    patience: int = 5                   # epochs without a validation NDCG@10 gain before stopping
    early_stopping: bool = True         # stop on patience and restore the best epoch; False keeps the last epoch
    exclude_history: bool = False       # drop history items from the ranking; the protocol ranks the full catalogue
    seed: int = 0                       # seeds weights, dropout, negatives and batch order
    num_threads: int = 1                # torch CPU threads while training (0 keeps torch's setting); 1 is safe
                                        # when other jobs share the CPU, where extra threads wait on each other;
                                        # configs/sparse.yaml's wider model takes 0, as its bench runs alone
    progress_bar: bool = True           # show Lightning's progress bar while training

    def __post_init__(self) -> None:
        positive = ("d_model", "n_layers", "n_heads", "ffn_mult", "train_max_len", "eval_max_items", "n_negatives",
                    "batch_size", "eval_batch_size", "max_epochs", "patience")
        for name in positive:
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"SASRecTrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.loss not in ("ce", "bce", "sampled"):
            raise ValueError(f"SASRecTrainConfig.loss must be 'ce', 'bce' or 'sampled', got {self.loss!r}")
        if self.n_negatives is None:   # resolved here, so the stored config says what was trained
            self.n_negatives = DEFAULT_SAMPLED_NEGATIVES if self.loss == "sampled" else 1
        if not self.sample_alpha >= 0:
            raise ValueError(f"SASRecTrainConfig.sample_alpha must be >= 0 (0: uniform over training items), "
                             f"got {self.sample_alpha}")
        if self.batching not in ("length", "random"):
            raise ValueError(f"SASRecTrainConfig.batching must be 'length' or 'random', got {self.batching!r}")
        if self.training_examples not in ("windows", "prefix"):
            raise ValueError(f"SASRecTrainConfig.training_examples must be 'windows' or 'prefix', "
                             f"got {self.training_examples!r}")
        if self.item_grad not in ITEM_GRADS:
            raise ValueError(f"SASRecTrainConfig.item_grad must be one of {ITEM_GRADS}, got {self.item_grad!r}")
        if self.item_grad == "sparse" and self.loss == "ce":
            raise ValueError("SASRecTrainConfig.item_grad='sparse' needs loss 'sampled' or 'bce': the full softmax "
                             "('ce') reads every row of the item table each step")
        if self.num_threads < 0:
            raise ValueError(f"SASRecTrainConfig.num_threads must be >= 0 (0 = torch default), got {self.num_threads}")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ValueError(
                f"SASRecTrainConfig needs lr > 0, weight_decay >= 0, warmup_steps >= 0; got lr={self.lr}, "
                f"weight_decay={self.weight_decay}, warmup_steps={self.warmup_steps}"
            )
        self.model_config(1)  # validates d_model / n_heads / dropout early, with the model's messages

    def model_config(self, n_items: int) -> SASRecConfig:
        return SASRecConfig(
            n_items=n_items, max_len=max(self.train_max_len, self.eval_max_items or 0), d_model=self.d_model,
            n_layers=self.n_layers, n_heads=self.n_heads, ffn_mult=self.ffn_mult, dropout=self.dropout,
            positions=self.positions,
        )


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


class TrainWindows(TorchDataset):
    """Next-item windows over the training prefixes: inputs ``s[a:b]``, targets ``s[a+1:b+1]``.

    The cut is genrec's (genrec.lit.batching.next_item_windows): prefixes longer than ``max_len + 1``
    are cut into consecutive windows from the end backwards, so every transition is trained exactly
    once. Prefixes with fewer than 2 items have no transition and are counted in ``n_skipped_users``.
    """

    def __init__(self, train: list[np.ndarray], max_len: int, prefix: bool = False):
        """``prefix``: one window per transition instead, its item and the up to ``max_len`` before it,
        of which only the last position is a target (``last_only``)."""
        self.last_only = prefix
        if prefix:
            self.windows = [np.asarray(seq[max(0, t - max_len): t + 1], dtype=np.int64)
                            for seq in train for t in range(1, len(seq))]
        else:
            self.windows = next_item_windows(train, max_len)  # each of length <= max_len + 1
        self.n_skipped_users = sum(len(seq) < 2 for seq in train)
        self.n_transitions = len(self.windows) if prefix else int(sum(len(w) - 1 for w in self.windows))

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.windows[i]


def collate_train(windows: list[np.ndarray], pad_id: int, last_only: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad windows into inputs (b, t) padded with ``pad_id`` and targets (b, t) padded with IGNORE_INDEX
    (``last_only``: only each window's last transition is a target)."""
    t = max(len(w) for w in windows) - 1
    inputs = torch.full((len(windows), t), pad_id, dtype=torch.long)
    targets = torch.full((len(windows), t), IGNORE_INDEX, dtype=torch.long)
    for row, w in enumerate(windows):
        inputs[row, : len(w) - 1] = torch.from_numpy(w[:-1])
        if last_only:
            targets[row, len(w) - 2] = int(w[-1])
        else:
            targets[row, : len(w) - 1] = torch.from_numpy(w[1:])
    return inputs, targets


def pad_histories(histories: list[np.ndarray], max_items: int, pad_id: int) -> torch.Tensor:
    """Last ``max_items`` of each history, right-padded with ``pad_id``: (b, min(max_items, longest))."""
    cut = [np.asarray(h[-max_items:], dtype=np.int64) for h in histories]
    for i, h in enumerate(cut):
        if len(h) == 0:
            raise ValueError(
                f"evaluation example {i} has an empty history; SASRec cannot score it. "
                "Leave-one-out gives every user history; for temporal splits drop users without history."
            )
    out = torch.full((len(cut), max(len(h) for h in cut)), pad_id, dtype=torch.long)
    for row, h in enumerate(cut):
        out[row, : len(h)] = torch.from_numpy(h)
    return out


class EvalBatches(TorchDataset):
    """Index-only dataset over EvalExamples; batches are (histories, targets) lists (see ``collate_eval``)."""

    def __init__(self, examples: EvalExamples):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.examples.histories[i], int(self.examples.targets[i])


def collate_eval(batch: list[tuple[np.ndarray, int]]) -> tuple[list[np.ndarray], np.ndarray]:
    return [h for h, _ in batch], np.array([t for _, t in batch], dtype=np.int64)


class SASRecDataModule(L.LightningDataModule):
    """Training windows from ``split.train``; validation examples from ``split.valid`` (scored, never trained on)."""

    def __init__(self, split: Split, n_items: int, config: SASRecTrainConfig):
        super().__init__()
        self.config = config
        self.pad_id = n_items
        self.train_windows = TrainWindows(split.train, config.train_max_len, config.training_examples == "prefix")
        self.item_counts = popularity_counts(split.train, n_items)   # (n_items,) the sampled loss's popularity
        self.valid = split.valid
        if len(self.train_windows) == 0:
            raise ValueError(
                "no training transitions: every training prefix has fewer than 2 items. "
                "SASRec needs users with at least 4 interactions under leave-one-out."
            )

    def train_dataloader(self) -> DataLoader:
        lengths = [len(w) for w in self.train_windows.windows]
        # SASRec's batches as it has always drawn them: the whole epoch sorted as one pool, and one
        # generator drawn from epoch after epoch (genrec reseeds per epoch and sorts pools of 50 batches).
        sampler = LengthBucketBatchSampler(lengths, self.config.batch_size, seed=self.config.seed,
                                           pool_batches=None, reseed_each_epoch=False,
                                           bucket=self.config.batching == "length")
        collate = partial(collate_train, pad_id=self.pad_id, last_only=self.train_windows.last_only)
        return DataLoader(self.train_windows, batch_sampler=sampler, collate_fn=collate)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(EvalBatches(self.valid), batch_size=self.config.eval_batch_size, collate_fn=collate_eval)


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


# rows x items scored at once by rank_histories: at 10^6 items, 16 histories (~128 MB of float64 scores)
# instead of a whole evaluation batch (1024 rows would be 8 GB)
SCORE_CELLS = 1 << 24


@torch.no_grad()
def rank_histories(
    model: SASRec, histories: list[np.ndarray], max_items: int, k: int = TOP_K, exclude_history: bool = False
) -> np.ndarray:
    """Top-k item ids (b, k), best first, over the full catalogue for one batch of histories.

    Slots that no item can fill (catalogue smaller than k, or everything excluded) hold -1. Histories are
    scored SCORE_CELLS // n_items at a time, so a large catalogue never holds a (batch, n_items) table.
    """
    rows = max(1, SCORE_CELLS // max(1, model.config.n_items))
    if len(histories) > rows:
        return np.concatenate([rank_histories(model, histories[i:i + rows], max_items, k, exclude_history)
                               for i in range(0, len(histories), rows)])
    was_training = model.training
    model.eval()
    scores = model.score_last(pad_histories(histories, max_items, model.config.pad_id))  # (b, n_items)
    model.train(was_training)
    scores = scores.double().cpu().numpy()
    if exclude_history:
        for row, h in enumerate(histories):
            scores[row, np.asarray(h, dtype=np.int64)] = -np.inf
    top = topk_from_scores(scores, k)                                        # (b, min(k, n_items))
    top = np.where(np.isneginf(np.take_along_axis(scores, top, axis=1)), -1, top)
    ranked = np.full((len(histories), k), -1, dtype=np.int64)
    ranked[:, : top.shape[1]] = top
    return ranked


def evaluate_sasrec(
    model: SASRec,
    examples: EvalExamples,
    n_items: int,
    max_items: int,
    batch_size: int,
    *,
    exclude_history: bool = False,
    progress: bool = False,
) -> tuple[np.ndarray, dict[str, float]]:
    """Full-ranking evaluation: ranked (n, 20) item ids and Recall/NDCG@{5,10,20} (genrec.metrics).

    Each history is truncated to its last ``max_items``. ``exclude_history`` removes the
    user's whole (untruncated) history from the ranking; the DESIGN.md protocol keeps it False.
    """
    if model.config.n_items != n_items:
        raise ValueError(f"model was built for {model.config.n_items} items but the dataset has {n_items}")
    ranked = np.zeros((len(examples), TOP_K), dtype=np.int64)
    starts = range(0, len(examples), batch_size)
    for start in tqdm(starts, desc="sasrec eval", disable=not progress, unit="batch"):
        stop = min(start + batch_size, len(examples))
        ranked[start:stop] = rank_histories(model, examples.histories[start:stop], max_items, TOP_K, exclude_history)
    return ranked, ranking_metrics(ranked, examples.targets)


# ---------------------------------------------------------------------------------------------
# Sampled softmax
# ---------------------------------------------------------------------------------------------


class PopularitySampler:
    """Negatives drawn with replacement, with probability proportional to ``count ** alpha``.

    ``counts`` are the items' occurrences in the training split; an item that never occurs there
    is never drawn (as in cornac's sampler). A draw is a binary search of uniforms in the cumulative
    distribution, O(k log n_items): no per-step pass over the catalogue.
    """

    def __init__(self, counts: np.ndarray, alpha: float):
        counts = np.asarray(counts, dtype=np.float64)
        if counts.ndim != 1 or (counts < 0).any() or counts.sum() <= 0:
            raise ValueError("PopularitySampler needs non-negative per-item training counts (n_items,) with a "
                             "positive total; build them with genrec.baselines.popularity_counts(split.train, n)")
        weights = np.where(counts > 0, counts ** alpha, 0.0)
        self.p_negative = torch.from_numpy(weights / weights.sum())   # (n_items,) float64: one draw's distribution
        self.p_target = torch.from_numpy(counts / counts.sum())       # (n_items,) how often a batch target is the item
        self._cdf = torch.cumsum(self.p_negative, 0)                  # (n_items,)

    def sample(self, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``k`` item ids (k,), independent draws."""
        # Uniforms scaled by the last cdf value: rounding can never select past the last drawable item.
        u = torch.rand(k, dtype=torch.float64, generator=generator) * self._cdf[-1]
        return torch.searchsorted(self._cdf, u, right=True)

    def log_expected_count(self, ids: torch.Tensor, n_targets: int, n_negatives: int) -> torch.Tensor:
        """log E[occurrences of each id among a batch's candidates]: ``n_targets`` targets and ``n_negatives`` draws."""
        ids = ids.cpu()
        expected = n_targets * self.p_target[ids] + n_negatives * self.p_negative[ids]
        return torch.log(expected.clamp_min(1e-30)).float()   # (len(ids),)


def sampled_softmax_loss(
    hidden: torch.Tensor,
    targets: torch.Tensor,
    table: torch.Tensor | Callable[[torch.Tensor], torch.Tensor],
    negatives: torch.Tensor,
    log_q: Callable[[torch.Tensor], torch.Tensor] | None = None,
    sparse: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    """Mean cross-entropy of each target against the batch's distinct targets plus shared negatives.

    hidden (n, d) and targets (n,) are the scored positions; table (n_items, d) the output item table;
    negatives (k,) item ids shared by every row (repeats allowed). A negative equal to any target of the
    batch is masked out, so a row's own target never counts as its negative and every item enters each
    softmax at most once: passing every item as ``negatives`` gives the full softmax. ``log_q`` maps
    candidate ids to the log of their expected occurrences among the candidates; it is subtracted from
    every candidate's logit (the logQ sampling-bias correction). Cost: O(n (u + k) d), u <= n distinct targets.
    ``sparse``: the table's gradient is sparse (only the candidates' rows); ``table`` must then be a leaf.
    ``table`` may also be a function of candidate ids -> their rows (genrec computes item rows on demand).
    ``reduction``: "mean" or "sum" over the rows, as F.cross_entropy.
    """
    distinct, column = torch.unique(targets, return_inverse=True)        # (u,), (n,): each row's positive column
    candidates = torch.cat([distinct, negatives])                        # (u + k,)
    rows = table(candidates) if callable(table) else F.embedding(candidates, table, sparse=sparse)
    logits = hidden @ rows.T                                             # (n, u + k)
    if log_q is not None:
        logits = logits - log_q(candidates).to(logits.device, logits.dtype)
    collides = torch.cat([torch.zeros_like(distinct, dtype=torch.bool), torch.isin(negatives, distinct)])
    return F.cross_entropy(logits.masked_fill(collides, float("-inf")), column, reduction=reduction)


# ---------------------------------------------------------------------------------------------
# Lightning module and callbacks
# ---------------------------------------------------------------------------------------------


class LitSASRec(L.LightningModule):
    """``item_counts`` (n_items,): training-split occurrences, needed by ``loss="sampled"`` only
    (``SASRecDataModule.item_counts``)."""

    def __init__(self, config: SASRecTrainConfig, n_items: int, item_counts: np.ndarray | None = None):
        super().__init__()
        # the counts are data, not a hyperparameter (and an array breaks Lightning's argument lookup)
        self.save_hyperparameters({"config": asdict(config), "n_items": n_items}, ignore=["item_counts"])
        self.config = config
        self.model = SASRec(config.model_config(n_items))
        # Training-only, like genrec's item_id_grad: the saved model is a plain embedding either way.
        self.sparse_items = config.loss != "ce" and sparse_item_grad(config.item_grad, n_items)
        if self.sparse_items:
            self.model.item_emb.sparse = True
        self.sampler: PopularitySampler | None = None
        if config.loss == "sampled":
            if item_counts is None or len(item_counts) != n_items:
                raise ValueError("LitSASRec(loss='sampled') needs item_counts of length n_items from the training "
                                 "split: pass item_counts=SASRecDataModule(...).item_counts")
            self.sampler = PopularitySampler(item_counts, config.sample_alpha)
        self._val_ranked: list[np.ndarray] = []
        self._val_targets: list[np.ndarray] = []

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, targets = batch                           # (b, t), (b, t)
        hidden = self.model(inputs)                       # (b, t, d)
        real = targets != IGNORE_INDEX                    # (b, t)
        h, y = hidden[real], targets[real]                # (n, d), (n,): only real positions are scored
        loss = {"ce": self._ce, "bce": self._bce, "sampled": self._sampled}[self.config.loss](h, y)
        self.log("train/loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=int(real.sum()))
        return loss

    def _ce(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.model.logits(h), y)  # logits (n, n_items)

    def _bce(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n_items = self.model.config.n_items
        shift = torch.randint(1, n_items, (len(y), self.config.n_negatives), device=y.device)
        negatives = (y[:, None] + shift) % n_items                            # (n, n_neg), never the positive
        pos = (h * self._rows(y)).sum(-1)                                     # (n,)
        neg = torch.einsum("nd,nkd->nk", h, self._rows(negatives))            # (n, n_neg)
        return (F.softplus(-pos) + F.softplus(neg).sum(-1)).mean()

    def _sampled(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        negatives = self.sampler.sample(self.config.n_negatives).to(y.device)   # (k,) shared by the batch
        log_q = None
        if self.config.logq_correction:
            log_q = partial(self.sampler.log_expected_count, n_targets=len(y), n_negatives=len(negatives))
        # the whole table (its padding row is never a candidate): a sparse gradient needs the leaf
        return sampled_softmax_loss(h, y, self.model.item_emb.weight, negatives, log_q, sparse=self.sparse_items)

    def _rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Output item rows for ``ids``; with a sparse item table, a lookup whose gradient is sparse too."""
        return F.embedding(ids, self.model.item_emb.weight, sparse=self.sparse_items)

    def validation_step(self, batch: tuple[list[np.ndarray], np.ndarray], batch_idx: int) -> None:
        histories, targets = batch
        ranked = rank_histories(self.model, histories, self.config.eval_max_items, TOP_K, self.config.exclude_history)
        self._val_ranked.append(ranked)
        self._val_targets.append(targets)

    def on_validation_epoch_end(self) -> None:
        metrics = ranking_metrics(np.concatenate(self._val_ranked), np.concatenate(self._val_targets))
        self._val_ranked.clear()
        self._val_targets.clear()
        for name, value in metrics.items():
            self.log(f"val/{name}", value, prog_bar=name == "ndcg@10")

    def configure_optimizers(self):
        table = self.model.item_emb.weight if self.sparse_items else None
        params = [p for p in self.model.parameters() if p is not table]
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": self.config.weight_decay},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]    # biases and LayerNorm
        if self.sparse_items:
            optimizer = AdamWSparse([*groups, {"params": [table], "sparse": True}], lr=self.config.lr, betas=ADAM_BETAS)
        else:
            optimizer = torch.optim.AdamW(groups, lr=self.config.lr, betas=ADAM_BETAS)
        if not self.config.warmup_steps:
            return optimizer
        warmup = self.config.warmup_steps
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class KeepBest(L.Callback):
    """Keeps an in-memory copy of the weights with the best validation NDCG@10 (earliest on ties)."""

    def __init__(self) -> None:
        self.best_score = -np.inf
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_metrics: dict[str, float] = {}
        self.last_metrics: dict[str, float] = {}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.last_metrics = {
            k.removeprefix("val/"): float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")
        }
        score = self.last_metrics[MONITOR.removeprefix("val/")]
        if score > self.best_score:
            self.best_score, self.best_epoch = score, trainer.current_epoch
            self.best_metrics = dict(self.last_metrics)
            self.best_state = copy.deepcopy(pl_module.model.state_dict())
