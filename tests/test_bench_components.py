"""bench/components.py: the parts of a parallel head's score add up to the score genrec decodes with."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from components import AS_DECODED, ITEM_LOGIT, component_scores, target_ranks  # noqa: E402

from tiny import MAX_ITEMS, N_ITEMS, tiny_module  # noqa: E402

# the tiny model's 4 digits read as two "modalities" of one digit each, then two digits outside them (as a dedup)
MODALITIES, N_LEVELS = ["a", "b"], 1


@pytest.mark.parametrize("prior", [False, True])
def test_the_full_score_ranks_every_target_where_rerank_decoding_puts_it(prior):
    model = tiny_module(head="parallel", item_loss_weight=1.0, item_id_embedding=True).genrec
    model.set_level_weights([1.0, 0.25, 2.0, 1.0])
    if prior:
        model.set_item_prior(np.random.default_rng(1).normal(size=N_ITEMS))
    rng = np.random.default_rng(0)
    hist = torch.as_tensor(rng.integers(-1, N_ITEMS, size=(9, MAX_ITEMS)))
    hist[:, -1] = torch.as_tensor(rng.integers(0, N_ITEMS, size=9))      # every history ends on an item
    parts = component_scores(model, hist, None, MODALITIES, N_LEVELS, item_logit_weights=(1.0, 3.0))
    assert model.config.level_weights == [1.0, 0.25, 2.0, 1.0]         # restored after the raw log-probs
    ranked = model.recommend(hist, k=N_ITEMS, search="rerank").items  # every item, best first
    targets = rng.integers(0, N_ITEMS, size=9)
    expected = np.array([list(row).index(t) + 1 for row, t in zip(ranked, targets)])
    np.testing.assert_array_equal(target_ranks(parts[AS_DECODED], targets), expected)
    if not prior:   # digits + 1 x item logit is the decoded score itself
        np.testing.assert_allclose(parts["digits + 1 x item logit"], parts[AS_DECODED])
    assert not np.allclose(parts["digits + 3 x item logit"], parts[AS_DECODED])
    assert set(parts) == {"a digits", "b digits", ITEM_LOGIT, "digits + 1 x item logit", "digits + 3 x item logit",
                          AS_DECODED}
    assert parts["a digits"].max() <= 0 and parts[ITEM_LOGIT].shape == (9, N_ITEMS)


def test_target_ranks_break_ties_to_the_lower_item_id():
    scores = np.array([[0.5, 1.0, 1.0, 0.2], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(target_ranks(scores, np.array([2, 0])), [2, 1])
    np.testing.assert_array_equal(target_ranks(scores, np.array([3, 3])), [4, 4])


def test_a_run_without_checkpoints_is_refused_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, "bench/components.py", "--dataset", "nowhere", "--run-dir", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "checkpoints not found" in out.stderr and "Traceback" not in out.stderr
