"""bench/cornac_sasrec.py: cornac's SASRec as a peer row, one epoch on the demo catalogue (needs the bench extra)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

pytest.importorskip("cornac")

from cornac_sasrec import PEER_KEY, add_peer, changed_defaults, peer_config  # noqa: E402
from run import markdown  # noqa: E402
from sasrec import base_setting, prepared_run  # noqa: E402

METRICS = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20")


def test_only_the_epochs_and_the_selection_differ_from_cornacs_defaults():
    from cornac.models import SASRec

    assert changed_defaults(SASRec, peer_config(seed=0)) == {
        "n_epochs": 20, "model_selection": "best", "val_metric": "ndcg", "val_k": 10}


def test_one_epoch_on_the_demo_lands_in_the_results_json_and_table(tmp_path):
    _, _, (raw, stages_cfg) = base_setting("smoke", smoke=True)
    run_dir = prepared_run("smoke", True, tmp_path / "run", raw, stages_cfg)
    result_path = tmp_path / "smoke.json"
    genrec_row = {m: 0.1 for m in METRICS} | {"invalid_rate": 0.0, "n_users": 1, "seconds": 1.0}
    result_path.write_text(json.dumps({
        "dataset": "smoke", "git_commit": "abc", "peak_rss_mb": 1.0, "metrics": {"genrec": genrec_row},
        "stages": {"prepare": 1, "embed": 2, "tokenize": 3, "train": 4, "evaluate": 5},
        "peers": {"cornac_tiger": {**genrec_row, "budget_seconds": 27.0, "seq2seq_epochs": 1}}}))

    written = add_peer(result_path, run_dir, seed=0, epochs=1, val_every=1)

    result = json.loads(result_path.read_text())
    entry = result["peers"][PEER_KEY]
    assert set(result["peers"]) == {"cornac_tiger", PEER_KEY}      # the TIGER peer is kept
    assert all(0.0 <= entry[m] <= 1.0 for m in METRICS) and entry["recall@20"] >= entry["recall@10"]
    from genrec.data.dataset import load_dataset

    assert entry["n_users"] == len(load_dataset(run_dir).sequences)   # every user scored on test
    assert entry["epochs"] == entry["best_epoch"] == 1 and list(entry["valid_curve"]) == ["1"]
    assert 0.0 < entry["valid_curve"]["1"] <= 1.0   # not NaN: cornac's own val_score is NaN with unknown targets
    assert entry["config"]["model_selection"] == "best" and entry["fit_seconds"] >= 0 and entry["torch_threads"] == 1
    assert entry["genrec_commit"] == "abc"                            # the genrec run it sits beside
    assert f"| {PEER_KEY} (epoch 1 of 1, best on validation) |" in markdown(result)
    assert result_path.with_suffix(".md").read_text() == markdown(written)


def test_summary_renders_a_cornac_sasrec_row(tmp_path):
    from summary import readme_table, render

    result = json.loads((REPO / "bench" / "results" / "Office.json").read_text())
    row = {m: 0.05 for m in METRICS} | {"invalid_rate": 0.0, "n_users": 4905, "seconds": 30.0, "fit_seconds": 300.0,
                                        "epochs": 20, "best_epoch": 15, "selection": "best validation ndcg@10"}
    result.setdefault("peers", {})[PEER_KEY] = row
    (tmp_path / "Office.json").write_text(json.dumps(result))
    text = render(tmp_path)
    assert "| Office | cornac SASRec (its defaults) | 0.0500 |" in text
    assert ("| Office | cornac SASRec (its defaults) | `python bench/cornac_sasrec.py --dataset Office` | 20 | 15 |"
            in text)
    assert "cornac SASRec (its defaults)" in readme_table({"Office": result}).splitlines()[0]


def test_validation_counts_a_target_unknown_to_training_as_a_miss_not_nan():
    import numpy as np
    from cornac.models import NextItemRecommender
    from cornac.models.seq_utils import val_score as cornac_val_score
    from cornac_common import next_item_method
    from cornac_sasrec import recorded_validation

    class ByItemId(NextItemRecommender):
        def score(self, user_idx, history_items, **kwargs):
            return np.arange(self.total_items, dtype=float)

    # user 1's validation target (item 4) is in no training prefix
    sequences = [np.array([0, 1, 2, 3, 1]), np.array([1, 2, 0, 4, 5]), np.array([2, 3, 1, 0, 2])]
    method, _ = next_item_method(sequences, seed=0)
    model = ByItemId("by_id")
    model.fit(method.train_set, method.val_set)
    with np.errstate(invalid="ignore"):
        assert np.isnan(cornac_val_score(model, method.train_set, method.val_set, metric="ndcg", k=10))
    from cornac.models.sasrec import recom_sasrec

    curve: list[float] = []
    with recorded_validation(curve):
        score = recom_sasrec.val_score(model, method.train_set, method.val_set, metric="ndcg", k=10)
    assert curve == [score] and 0.0 < score < 1.0
    assert recom_sasrec.val_score is cornac_val_score      # restored
