"""TrainingTimeBudget: counts training time only, snapshots the weights at its marks, stops at the budget."""

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
