"""Training callbacks: throughput (genrec's training CLI and SASRec's trainer), a plain line per epoch, a
training-curve PNG, a time budget; and the filter that quiets Lightning's banners."""

from __future__ import annotations

import csv
import logging
import math
import re
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


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _metric(metrics: dict, *names: str) -> float | None:
    """The first of ``names`` that Lightning holds a value for, as a float."""
    for name in names:
        if name in metrics:
            return float(metrics[name])
    return None


class EpochLog(L.Callback):
    """One plain line per training epoch: epoch, step, smoothed train loss, val NDCG@10, elapsed time.

    A progress bar shows nothing in a log file or CI log until it finishes (20-40 minutes of training on
    the larger datasets); this line is written whatever stdout is, and also keeps the history on a
    terminal. It goes through a tqdm bar's own print when there is one, so the bar stays whole.
    """

    def __init__(self, loss_keys: tuple[str, ...] = ("train/loss_per_target", "train/loss"),
                 val_key: str = "val/ndcg@10"):
        self.loss_keys, self.val_key = loss_keys, val_key
        self._t0 = None

    def on_fit_start(self, trainer, pl_module):
        self._t0 = time.perf_counter()

    def line(self, trainer) -> str:
        metrics = trainer.callback_metrics
        total = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs > 0 else None
        epoch = f"epoch {trainer.current_epoch + 1}" + (f"/{total}" if total else "")
        loss_key = next((k for k in self.loss_keys if k in metrics), self.loss_keys[0])
        loss, val = _metric(metrics, loss_key), _metric(metrics, self.val_key)
        elapsed = time.perf_counter() - self._t0 if self._t0 is not None else 0.0
        return "  ".join([
            epoch, f"step {trainer.global_step}",
            f"{loss_key} {'-' if loss is None or not math.isfinite(loss) else f'{loss:.4f}'}",
            f"{self.val_key} {'-' if val is None else f'{val:.4f}'}", f"elapsed {_duration(elapsed)}"])

    def on_train_epoch_end(self, trainer, pl_module):
        # Lightning runs the epoch's validation before this hook, so the line carries its NDCG@10.
        from lightning.pytorch.callbacks import TQDMProgressBar

        if not trainer.is_global_zero:
            return
        line = self.line(trainer)
        bar = trainer.progress_bar_callback
        if isinstance(bar, TQDMProgressBar):
            bar.print(line)
        else:
            print(line, flush=True)   # rich's live display moves plain prints above its bar


# Lightning's INFO lines that say nothing a user can act on. A device banner that finds the device
# ("GPU available: True (cuda), used: False") is kept, once per process; warnings are never touched.
_ADVERTS = re.compile(r"^\W*Tip: ")                        # litlogger / litmodels suggestions
_DEVICE_BANNER = re.compile(r"^(GPU|TPU|HPU|IPU) available: (\w+)")
LIGHTNING_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class QuietLightning(logging.Filter):
    """Drops Lightning's product tips, device banners for devices the machine does not have, and repeats
    of the other device banners (every Trainer prints them: SASRec's, genrec's, evaluation's)."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        message = record.getMessage()
        if _ADVERTS.match(message):
            return False
        banner = _DEVICE_BANNER.match(message)
        if banner:
            if banner.group(2) == "False" or message in self.seen:
                return False
            self.seen.add(message)
        return True


def quiet_lightning() -> QuietLightning:
    """Installs one :class:`QuietLightning` on Lightning's rank-zero loggers (idempotent); returns it."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    found = next((f for lg in loggers for f in lg.filters if isinstance(f, QuietLightning)), None)
    quiet = found or QuietLightning()
    for lg in loggers:
        if quiet not in lg.filters:
            lg.addFilter(quiet)
    return quiet


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
    """Train loss per target (EMA; train/loss in logs written before it existed) and validation NDCG@10 by step."""
    from genrec.plots import plt, save_png

    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    loss_key = "train/loss_per_target" if any(row.get("train/loss_per_target") for row in rows) else "train/loss"
    steps, loss, vsteps, vndcg = [], [], [], []
    for row in rows:
        if row.get(loss_key):
            steps.append(int(row["step"])), loss.append(float(row[loss_key]))
        if row.get("val/ndcg@10"):
            vsteps.append(int(row["step"])), vndcg.append(float(row["val/ndcg@10"]))
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    ax[0].plot(steps, loss, lw=1)
    ax[0].set(title="training loss per target (sum of per-level CE, EMA)" if loss_key == "train/loss_per_target"
              else "training loss (sum of per-level CE)", xlabel="step")
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
