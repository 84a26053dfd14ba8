"""Training callbacks: TrainingTimeBudget (training time only, snapshots at its marks, stops at the budget) and
Throughput (one class for genrec and SASRec)."""

from __future__ import annotations

from types import SimpleNamespace

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
