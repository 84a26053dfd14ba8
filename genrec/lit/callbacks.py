"""Training callbacks: throughput (genrec's training CLI and SASRec's trainer), a training-curve PNG, a time budget."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import lightning as L


def next_item_targets(batch, pl_module) -> int:
    """Next-item targets in a genrec training batch (genrec.lit.module.batch_targets)."""
    from genrec.lit.module import batch_targets

    return batch_targets(batch, pl_module.arch)


def batch_rows(batch, pl_module) -> int:
    """Examples (rows) in a training batch: SASRec's windows."""
    return len(batch[0])


SPANS = ("batch", "epoch")


class Throughput(L.Callback):
    """Training examples per second, excluding validation time; one class for genrec and SASRec.

    Args:
        count: ``count(batch, pl_module)``: what one batch adds (genrec: next-item targets; SASRec: windows).
        span: "batch" (genrec) times each training step from batch start to batch end, so loading
            between batches is not counted; "epoch" (SASRec) times each epoch's training from its start
            until validation or the epoch's end, loading included.
        log_key: logged after every batch with the running rate; None logs nothing (SASRec).
    """

    def __init__(self, count=next_item_targets, span: str = "batch", log_key: str | None = "train/targets_per_s"):
        if span not in SPANS:
            raise ValueError(f"Throughput span must be one of {SPANS}, got {span!r}")
        self.count, self.span, self.log_key = count, span, log_key
        self.total = 0          # examples counted (targets or windows, per ``count``)
        self.seconds = 0.0
        self._t0 = None

    def _stop(self) -> None:
        if self._t0 is not None:
            self.seconds += time.perf_counter() - self._t0
            self._t0 = None

    def on_train_epoch_start(self, trainer, pl_module):
        if self.span == "epoch":
            self._t0 = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.span == "batch":
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.span == "batch":
            if self._t0 is None:
                return
            self.seconds += time.perf_counter() - self._t0
        self.total += self.count(batch, pl_module)
        if self.log_key is not None:
            pl_module.log(self.log_key, self.per_second, batch_size=1)

    # Lightning runs the epoch-end validation before on_train_epoch_end, so stop at whichever comes first.
    def on_validation_start(self, trainer, pl_module):
        if self.span == "epoch":
            self._stop()

    def on_train_epoch_end(self, trainer, pl_module):
        if self.span == "epoch":
            self._stop()

    @property
    def per_second(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else 0.0

    targets_per_second = per_second     # the name bench/run.py finds genrec's rate by


class TrainingCurvePlot(L.Callback):
    """At the end of fit, draws train loss and validation NDCG@10 from the CSV log into RUN/plots/."""

    def __init__(self, out: Path | None = None):
        self.out = out

    def on_fit_end(self, trainer, pl_module):
        if trainer.global_rank != 0:
            return
        log_dir = getattr(trainer.logger, "log_dir", None)
        if not log_dir or not (Path(log_dir) / "metrics.csv").exists():
            return
        out = self.out or Path(trainer.datamodule.run) / "plots" / "training_curve.png"
        plot_training_curve(Path(log_dir) / "metrics.csv", out)


def plot_training_curve(metrics_csv: Path, out: Path) -> Path:
    from genrec.plots import plt, save_png


    steps, loss, vsteps, vndcg = [], [], [], []
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("train/loss"):
                steps.append(int(row["step"])), loss.append(float(row["train/loss"]))
            if row.get("val/ndcg@10"):
                vsteps.append(int(row["step"])), vndcg.append(float(row["val/ndcg@10"]))
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    ax[0].plot(steps, loss, lw=1)
    ax[0].set(title="training loss (sum of per-level CE)", xlabel="step")
    ax[1].plot(vsteps, vndcg, marker="o")
    ax[1].set(title="validation NDCG@10", xlabel="step")
    return save_png(fig, out)


class TrainingTimeBudget(L.Callback):
    """Stops fitting after ``seconds`` of training wall time, keeping a copy of the weights at each mark.

    What a design learns per second is what the CPU budget buys, so time counts every training
    step (data, forward, backward, optimiser) from the first batch on, and not validation. For each
    mark reached (the budget itself is the last), ``snapshots`` holds ``{"seconds", "step", "epoch",
    "targets", "state_dict"}``, so the model can be scored at each point of its learning curve
    after training, at no cost to the budget.
    """

    def __init__(self, seconds: float, marks: tuple[float, ...] = ()):
        if seconds <= 0:
            raise ValueError(f"the training-time budget must be > 0 seconds, got {seconds}")
        self.seconds = float(seconds)
        self.marks = sorted({float(m) for m in marks if 0 < m < seconds} | {self.seconds})
        self.snapshots: list[dict] = []
        self.elapsed = 0.0
        self.targets = 0
        self._t0 = None

    def on_train_epoch_start(self, trainer, pl_module):
        self._t0 = time.perf_counter()

    def on_validation_end(self, trainer, pl_module):
        self._t0 = time.perf_counter()      # validation is not training time

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        from genrec.lit.module import batch_targets

        now = time.perf_counter()
        self.elapsed += now - self._t0
        self._t0 = now
        self.targets += batch_targets(batch, pl_module.arch)
        passed = sum(self.elapsed >= m for m in self.marks) - len(self.snapshots)
        if passed > 0:
            # A slow step can pass several marks at once; they share this one copy of the weights.
            snapshot = {"seconds": round(self.elapsed, 2), "step": trainer.global_step, "epoch": trainer.current_epoch,
                        "targets": self.targets,
                        "state_dict": {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}}
            self.snapshots += [snapshot] * passed
        if self.elapsed >= self.seconds:
            trainer.should_stop = True
