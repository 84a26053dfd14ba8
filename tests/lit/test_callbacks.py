"""Training callbacks: TrainingTimeBudget (training time only, snapshots at its marks, stops at the budget),
Throughput (one class for genrec and SASRec), the plain line per epoch, the Lightning log filter, the smoothed loss
per target and its plot; and `python train.py --help`."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import genrec.lit.callbacks as callbacks
from genrec.lit.callbacks import TrainingTimeBudget


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_budget_snapshots_marks_skips_validation_time_and_stops(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(callbacks.time, "perf_counter", clock)
    module = torch.nn.Linear(2, 1)
    module.arch = "causal"
    trainer = SimpleNamespace(global_step=0, current_epoch=0, should_stop=False)
    window = torch.tensor([[-1, 1, 2, 3]])                                  # 2 next-item targets
    budget = TrainingTimeBudget(10.0, marks=(2.5, 5.0, 6.0, 0.0, 12.0))   # marks outside (0, budget) dropped
    assert budget.marks == [2.5, 5.0, 6.0, 10.0]

    def batch(seconds: float):
        clock.now += seconds
        trainer.global_step += 1
        budget.on_train_batch_end(trainer, module, None, (window,), 0)
        with torch.no_grad():
            module.weight.add_(1.0)                                         # the next step changes the weights

    budget.on_train_epoch_start(trainer, module)
    batch(3.0)                                                              # 3 s: passes 2.5
    assert [s["seconds"] for s in budget.snapshots] == [3.0]
    clock.now += 100.0                                                      # a long validation round...
    budget.on_validation_end(trainer, module)                               # ...is not training time
    batch(3.5)                                                              # 6.5 s: passes 5 and 6 in one step
    assert len(budget.snapshots) == 3 and budget.snapshots[1] is budget.snapshots[2]
    assert not trainer.should_stop
    batch(4.0)                                                              # 10.5 s: the budget
    assert trainer.should_stop and budget.elapsed == pytest.approx(10.5)
    assert [s["step"] for s in budget.snapshots] == [1, 2, 2, 3]
    assert budget.targets == 6 and budget.snapshots[0]["targets"] == 2
    # each snapshot is a copy taken at its step, not a view of the live weights
    first = budget.snapshots[0]["state_dict"]["weight"]
    assert torch.allclose(first, module.weight.detach() - 3.0, atol=1e-5)   # float32: (w + 3) - 3 is not w


def test_budget_must_be_positive():
    with pytest.raises(ValueError, match="must be > 0 seconds"):
        TrainingTimeBudget(0)


# --------------------------------------------------------------------------- Throughput: one class, both trainings


class OldGenrecThroughput:                 # genrec.lit.callbacks.Throughput as it was (genrec's training CLI)
    def __init__(self):
        self.targets, self.seconds, self._t0 = 0, 0.0, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t0 = callbacks.time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._t0 is None:
            return
        self.seconds += callbacks.time.perf_counter() - self._t0
        from genrec.lit.module import batch_targets

        self.targets += batch_targets(batch, pl_module.arch)
        pl_module.log("train/targets_per_s", self.targets / max(self.seconds, 1e-9), batch_size=1)

    @property
    def targets_per_second(self):
        return self.targets / max(self.seconds, 1e-9)


class OldSASRecThroughput:                 # genrec.lit.sasrec.TrainThroughput as it was (SASRec's training)
    def __init__(self):
        self.seconds, self.samples, self._start = 0.0, 0, None

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = callbacks.time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.samples += len(batch[0])

    def _stop(self):
        if self._start is not None:
            self.seconds += callbacks.time.perf_counter() - self._start
            self._start = None

    def on_validation_start(self, trainer, pl_module):
        self._stop()

    def on_train_epoch_end(self, trainer, pl_module):
        self._stop()

    @property
    def samples_per_second(self):
        return self.samples / self.seconds if self.seconds > 0 else 0.0


class Logged(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.arch, self.logged = "causal", []

    def log(self, name, value, **kwargs):
        self.logged.append((name, value, kwargs))


def run_epochs(callback, module, clock, batches):
    """Lightning's hook order for two epochs: loading time between batches, validation before epoch end."""
    trainer = SimpleNamespace()
    for epoch in range(2):
        clock.now += 0.5                                         # epoch set-up
        getattr(callback, "on_train_epoch_start", lambda *a: None)(trainer, module)
        for i, (batch, step_seconds) in enumerate(batches):
            clock.now += 0.25                                    # loading the batch
            getattr(callback, "on_train_batch_start", lambda *a: None)(trainer, module, batch, i)
            clock.now += step_seconds
            callback.on_train_batch_end(trainer, module, None, batch, i)
        clock.now += 0.125
        getattr(callback, "on_validation_start", lambda *a: None)(trainer, module)
        clock.now += 40.0                                        # validation: never training time
        getattr(callback, "on_validation_end", lambda *a: None)(trainer, module)
        getattr(callback, "on_train_epoch_end", lambda *a: None)(trainer, module)


def test_one_throughput_class_counts_and_times_as_each_former_callback(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(callbacks.time, "perf_counter", clock)
    windows = [(torch.tensor([[-1, 1, 2, 3], [4, 5, 6, 7]]),), (torch.tensor([[-1, -1, 8, 9]]),)]   # 5 then 1 targets
    genrec_batches = [(windows[0], 1.5), (windows[1], 3.0)]
    # genrec: next-item targets over step time only (loading excluded), logged after every batch
    new, old = callbacks.Throughput(), OldGenrecThroughput()
    new_module, old_module = Logged(), Logged()
    run_epochs(new, new_module, clock, genrec_batches)
    run_epochs(old, old_module, clock, genrec_batches)
    assert (new.total, new.seconds) == (old.targets, old.seconds) == (12, 9.0)
    assert new.targets_per_second == old.targets_per_second == 12 / 9.0
    assert new_module.logged == old_module.logged and len(new_module.logged) == 4
    assert new_module.logged[0] == ("train/targets_per_s", 5 / 1.5, {"batch_size": 1})
    # SASRec: windows over each epoch's training time (loading included, validation not), nothing logged
    sasrec_batches = [((torch.zeros(3, 4), torch.zeros(3, 4)), 1.5), ((torch.zeros(2, 4), torch.zeros(2, 4)), 3.0)]
    new = callbacks.Throughput(count=callbacks.batch_rows, span="epoch", log_key=None)
    old = OldSASRecThroughput()
    new_module = Logged()
    run_epochs(new, new_module, clock, sasrec_batches)
    run_epochs(old, Logged(), clock, sasrec_batches)
    assert (new.total, new.seconds) == (old.samples, old.seconds) == (10, 2 * (2 * 0.25 + 4.5 + 0.125))
    assert new.per_second == old.samples_per_second and new_module.logged == []
    assert callbacks.Throughput(span="epoch").per_second == 0.0          # before any training: no division by 0
    with pytest.raises(ValueError, match="span must be one of"):
        callbacks.Throughput(span="step")


# --------------------------------------------------------------------------- progress in logs, quiet Lightning, loss


class Scripted(__import__("lightning").LightningModule):
    """A tiny module whose logged figures are known: loss per target 1/(epoch+1), val NDCG@10 0.1 x (epoch+1)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        self.log("train/loss_per_target", 1.0 / (self.current_epoch + 1))
        return (self.w * batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self):
        self.log("val/ndcg@10", 0.1 * (self.current_epoch + 1))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_csv_logged_fit_prints_one_plain_line_per_epoch(tmp_path, capsys):
    from lightning import Trainer
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(torch.ones(12, 1)), batch_size=4)      # 3 steps per epoch
    trainer = Trainer(max_epochs=3, logger=CSVLogger(tmp_path, name="logs"), callbacks=[callbacks.EpochLog()],
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                      num_sanity_val_steps=0, accelerator="cpu", devices=1, log_every_n_steps=1)
    trainer.fit(Scripted(), loader, loader)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert [re.sub(r"elapsed \d+m\d\ds$", "elapsed T", line) for line in lines] == [
        "epoch 1/3  step 3  train/loss_per_target 1.0000  val/ndcg@10 0.1000  elapsed T",
        "epoch 2/3  step 6  train/loss_per_target 0.5000  val/ndcg@10 0.2000  elapsed T",
        "epoch 3/3  step 9  train/loss_per_target 0.3333  val/ndcg@10 0.3000  elapsed T"]
    assert (tmp_path / "logs" / "version_0" / "metrics.csv").exists()


def test_epoch_line_before_any_validation_and_with_sasrecs_loss_key(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(callbacks.time, "perf_counter", clock)
    log = callbacks.EpochLog()
    log.on_fit_start(None, None)
    clock.now = 3723.0
    trainer = SimpleNamespace(callback_metrics={"train/loss": torch.tensor(2.5)}, max_epochs=-1,   # unlimited epochs
                              current_epoch=0, global_step=7)
    assert log.line(trainer) == "epoch 1  step 7  train/loss 2.5000  val/ndcg@10 -  elapsed 1h02m03s"


def _record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("lightning.pytorch.utilities.rank_zero", level, __file__, 1, message, None, None)


def test_quiet_lightning_drops_tips_and_absent_device_banners_but_keeps_what_users_act_on():
    quiet = callbacks.QuietLightning()
    kept = lambda message, level=logging.INFO: quiet.filter(_record(message, level))   # noqa: E731
    assert not kept("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger](...)")
    assert not kept("💡 Tip: For seamless cloud uploads and versioning, try installing [litmodels](...)")
    assert not kept("GPU available: False, used: False") and not kept("TPU available: False, using: 0 TPU cores")
    assert not kept("HPU available: False, using: 0 HPUs")
    assert kept("GPU available: True (cuda), used: False")            # a device the run does not use: said once
    assert not kept("GPU available: True (cuda), used: False")
    assert kept("Seed set to 0") and kept("`Trainer.fit` stopped: `max_epochs=3` reached.")
    assert kept("Tip: anything at warning level is kept", logging.WARNING)


def test_quiet_lightning_on_real_trainers(tmp_path):
    from lightning import Trainer
    from lightning.pytorch.loggers import CSVLogger

    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    loggers = [logging.getLogger(name) for name in callbacks.LIGHTNING_LOGGERS]
    installed = {lg.name: list(lg.filters) for lg in loggers}      # by an earlier in-process training, if any
    for lg in loggers:
        lg.filters = [f for f in lg.filters if not isinstance(f, callbacks.QuietLightning)]
    rank_zero.addHandler(handler)
    try:
        Trainer(logger=CSVLogger(tmp_path), accelerator="cpu", devices=1)
        assert any("available: False" in m for m in seen) and any("Tip:" in m for m in seen)   # what users saw
        seen.clear()
        first = callbacks.quiet_lightning()
        assert callbacks.quiet_lightning() is first                                            # installed once
        for _ in range(2):
            Trainer(logger=CSVLogger(tmp_path), accelerator="cpu", devices=1)
        assert not [m for m in seen if "Tip:" in m or "available: False" in m], seen
    finally:
        rank_zero.removeHandler(handler)
        for lg in loggers:
            lg.filters = installed[lg.name]


def _genrec_module(**kw):
    from genrec.lit.data import ModelDims
    from genrec.lit.module import GenRecModule

    levels, n_items = (5, 7, 3), 23
    torch.manual_seed(0)
    m = GenRecModule(dims=ModelDims(levels, n_items, 0, "test", max_items=6), d_model=24, n_layers=1, n_heads=2,
                     d_ff=37, dropout=0.0, **kw)
    codes = np.stack([np.arange(n_items) % 5, np.arange(n_items) % 7, np.arange(n_items) // 8], 1)   # distinct rows
    m.item_codes.copy_(torch.as_tensor(codes))
    m.targets_per_batch = 3 * 4.0
    return m.train()


def test_train_loss_per_target_is_the_batch_sum_over_its_targets_smoothed_and_the_optimised_loss_is_unchanged():
    from genrec.lit.batching import causal_windows
    from genrec.lit.module import LOSS_EMA_DECAY

    short = torch.as_tensor(causal_windows([np.array([1, 2, 3])] * 3, 6))     # 3 windows x 2 targets
    full = torch.as_tensor(causal_windows([np.arange(4, 11)] * 3, 6))          # 3 windows x 6 targets
    m = _genrec_module()

    def summed(window):
        hist, targets = window[:, :-1], window[:, 1:]
        select = (hist >= 0) & (targets >= 0)
        logits, _ = m.model.teacher_forced(*m.genrec.history_inputs(hist)[:2], m.item_codes[targets.clamp(min=0)],
                                           select, None, None)
        return m.level_losses(logits, targets[select], "sum").detach()

    s_short, s_full = summed(short), summed(full)
    assert torch.allclose(m.training_step((short,), 0), s_short / 12.0)   # optimised: sum / expected targets (3 x 4)
    assert torch.allclose(m.loss_per_target_ema, s_short / 6)              # first step: its own loss per target
    assert torch.allclose(m.training_step((full,), 0), s_full / 12.0)
    # EMA: 0.95 x the previous value + 0.05 x this batch's sum / its 18 targets
    assert torch.allclose(m.loss_per_target_ema, LOSS_EMA_DECAY * s_short / 6 + (1 - LOSS_EMA_DECAY) * s_full / 18)
    mean = _genrec_module(target_weighting="batch")                         # "batch" already is the mean
    loss = mean.training_step((full,), 0)
    assert torch.allclose(mean.loss_per_target_ema, loss.detach()) and torch.allclose(loss, s_full / 18)


def test_training_curve_plots_the_loss_per_target(tmp_path, monkeypatch):
    import genrec.plots

    drawn = []
    monkeypatch.setattr(genrec.plots, "save_png", lambda fig, out: drawn.append(fig))
    csv_file = tmp_path / "metrics.csv"
    csv_file.write_text("epoch,step,train/loss,train/loss_per_target,val/ndcg@10\n"
                        "0,9,17.0,7.5,\n0,11,,,0.03\n1,19,174.0,7.25,\n1,23,,,0.04\n")
    callbacks.plot_training_curve(csv_file, tmp_path / "curve.png")
    loss_ax, val_ax = drawn[0].axes
    assert list(loss_ax.lines[0].get_ydata()) == [7.5, 7.25] and "per target" in loss_ax.get_title()
    assert list(val_ax.lines[0].get_ydata()) == [0.03, 0.04]
    csv_file.write_text("epoch,step,train/loss,val/ndcg@10\n0,9,17.0,\n0,11,,0.03\n")     # a log from before it
    callbacks.plot_training_curve(csv_file, tmp_path / "curve.png")
    assert list(drawn[1].axes[0].lines[0].get_ydata()) == [17.0] and "per target" not in drawn[1].axes[0].get_title()


# --------------------------------------------------------------------------- python train.py --help


def test_train_help_is_fast_genrecs_own_and_exits_0():
    import runpy
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    for flag in ("--help", "-h"):
        out = subprocess.run([sys.executable, "train.py", flag], cwd=repo, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        text = out.stdout
        assert text.startswith("genrec: a generative recommender") and "No arguments: the demo" in text
        for name in ("configs/text_rich.yaml", "text_rich.yaml", "sparse.yaml", "multimodal.yaml", "--source",
                     "--data.run", "Lightning subcommands", "fit", "validate", "test", "predict"):
            assert name in text, name
    # the overview needs no torch (that is what makes it fast), and lists exactly Lightning's subcommands
    code = ("import runpy, sys; sys.argv = ['train.py', '--help']; runpy.run_path('train.py', run_name='__main__'); "
            "print('TORCH', 'torch' in sys.modules, 'lightning' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120)
    assert "TORCH False False" in out.stdout, out.stdout[-500:] + out.stderr[-2000:]
    from lightning.pytorch.cli import LightningCLI

    assert list(runpy.run_path(str(repo / "train.py"))["SUBCOMMANDS"]) == list(LightningCLI.subcommands())
