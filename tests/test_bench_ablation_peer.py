"""bench/ablation.py variants and bench/cornac_tiger.py's data plumbing (no training here)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from ablation import has_image, kept_rows, table, variants  # noqa: E402
from cornac_tiger import RQVAE_SHARE, DeadlineRange, cornac_splits, default_budget, full_recipe_estimate  # noqa: E402
from run import bench_config, markdown  # noqa: E402

from genrec.data.split import leave_one_out  # noqa: E402


def test_ablation_variants_change_one_thing_each():
    _, raw = bench_config("Scientific_DeCoRec_mm")
    assert has_image(raw)
    found = variants(raw)
    assert list(found) == ["text", "text+image", "text+collab", "all"]   # code layouts: bench/layouts.py
    text, _ = found["text"]
    assert text["embed"]["collab"] is False and not text["embed"]["precomputed"]
    image, _ = found["text+image"]
    assert image["embed"]["collab"] is False and [p["name"] for p in image["embed"]["precomputed"]] == ["image"]
    collab, _ = found["text+collab"]
    assert collab["embed"].get("collab", True) and not collab["embed"]["precomputed"]
    assert found["all"][0] == raw and found["all"][1] == []
    assert [p["name"] for p in raw["embed"]["precomputed"]] == ["image"], "variants must not modify the config"


def test_ablation_without_images_skips_the_image_variants():
    _, raw = bench_config("Office")
    assert not has_image(raw)
    assert list(variants(raw)) == ["text", "text+collab"]


def test_ablation_table_reports_training_throughput():
    metrics = {"genrec": {"recall@10": 0.1, "ndcg@10": 0.05, "ndcg@20": 0.06}}
    row = {"metrics": metrics, "modalities": ["collab", "text"], "codes": "pq, fused", "stages": {"train": 61.4},
           "epochs": 12}
    rows = {"text+collab": row | {"train_targets_per_second": 9348.4}, "old run": row}   # old JSONs lack the rate
    lines = table("Office", rows).splitlines()
    assert lines[2].endswith("| train s | epochs | targets/s |")
    assert lines[4] == "| text+collab | collab+text | pq, fused | 0.1000 | 0.0500 | 0.0600 | 61 | 12 | 9,348 |"
    assert lines[5].endswith("| 61 | 12 | — |")


def test_rerunning_one_variant_keeps_the_other_rows(tmp_path):
    previous = tmp_path / "ablation_Office.json"
    names = ["text", "text+collab", "text+collab, fused codes"]
    assert kept_rows(previous, names, ["text"]) == {}                     # nothing to keep yet
    previous.write_text(json.dumps({"variants": {n: {"git_commit": "abc"} for n in names + ["dropped variant"]}}))
    assert list(kept_rows(previous, names, ["text+collab"])) == ["text", "text+collab, fused codes"]
    assert kept_rows(previous, names, None) == {}                         # a full run starts afresh


def test_cornac_splits_are_genrecs_leave_one_out():
    seqs = [np.array([4, 1, 2, 7]), np.array([3, 5, 6])]
    train, valid, test = cornac_splits(seqs)
    split = leave_one_out(seqs)

    def items(rows, user):
        return [int(i) for u, s, i, t in rows if u == str(user)]

    for u, seq in enumerate(seqs):
        assert items(train, u) == list(split.train[u])
        assert items(valid, u) == [*split.valid.histories[u], split.valid.targets[u]]
        assert items(test, u) == [*split.test.histories[u], split.test.targets[u]]
        assert all(s == str(u) for uu, s, _, _ in test if uu == str(u))   # one session per user
    times = [t for u, s, i, t in test if u == "0"]
    assert times == sorted(times)


def test_deadline_range_stops_the_epoch_loop():
    class Bar(list):
        closed = False

        def close(self):
            self.closed = True

    passed = DeadlineRange(Bar(range(1, 100)), deadline=time.perf_counter() - 1)
    assert list(passed) == [] and passed.epochs_done == 0 and passed.closed

    bar = Bar(range(1, 4))
    open_ended = DeadlineRange(bar, deadline=time.perf_counter() + 60)
    assert list(open_ended) == [1, 2, 3] and open_ended.epochs_done == 3 and bar.closed


def test_peer_budget_and_markdown_row():
    result = {"dataset": "Office", "stages": {"prepare": 1, "embed": 50, "tokenize": 20, "train": 230, "evaluate": 3},
              "peak_rss_mb": 100.0, "git_commit": "abc"}
    assert default_budget(result) == pytest.approx(900.0)
    row = {k: 0.01 for k in ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20")}
    row |= {"invalid_rate": 0.0, "seconds": 1.0}
    result["metrics"] = {"genrec": row}
    result["peers"] = {"cornac_tiger": {**row, "budget_seconds": 900.0, "seq2seq_epochs": 2}}
    assert "| cornac_tiger (fit budget 900 s, 2 epochs) |" in markdown(result)


def test_full_recipe_estimate_scales_the_measured_speeds_to_the_recipe_epochs():
    base = {"n_epochs": 100, "rqvae_n_epochs": 8000}
    entry = {"probe_samples_per_second": 40.0, "budget_seconds": 1000.0, "rqvae_epochs": 50,
             "config": {"tokenizer": "rqvae"}}
    est = full_recipe_estimate(entry, base, n_train_samples=14_400)
    # seq2seq: 100 epochs x 14,400 samples / 40 per s = 36,000 s = 10 h
    assert est["seq2seq_hours"] == 10.0
    # RQ-VAE: 50 epochs in its share of the budget, the recipe asks for 8,000 (160x as many)
    assert est["rqvae_hours"] == pytest.approx(round(8000 / 50 * RQVAE_SHARE * 1000 / 3600, 1))
    assert est["hours"] == pytest.approx(est["seq2seq_hours"] + est["rqvae_hours"], abs=0.051)
    # an RQ-VAE that finished inside its share costs at most that share; residual k-means costs nothing here
    assert full_recipe_estimate({**entry, "rqvae_epochs": 8000}, base, 14_400)["rqvae_hours"] == round(
        RQVAE_SHARE * 1000 / 3600, 1)
    assert full_recipe_estimate({**entry, "config": {"tokenizer": "rkmeans"}}, base, 14_400)["rqvae_hours"] == 0.0
