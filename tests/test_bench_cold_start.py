"""bench/cold_start.py --smoke: hold out the latest items, train without them, add them with add-items, evaluate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from cold_start import first_seen, held_out_items  # noqa: E402


def test_held_out_items_are_the_latest_first_seen():
    seqs = pl.DataFrame({"item_ids": [[0, 1, 2], [3, 1, 4]], "timestamps": [[10, 50, 60], [5, 20, 70]]})
    first = first_seen(seqs, 5)
    np.testing.assert_array_equal(first, [10, 20, 60, 5, 70])
    np.testing.assert_array_equal(held_out_items(first, 0.4), [2, 4])        # ceil(0.4 * 5) = 2 latest
    no_ts = pl.DataFrame({"item_ids": [[0, 1], [2]], "timestamps": [None, None]},
                         schema={"item_ids": pl.List(pl.Int32), "timestamps": pl.List(pl.Int64)})
    np.testing.assert_array_equal(held_out_items(first_seen(no_ts, 3), 0.3), [2])   # item id order


def test_cold_start_smoke_writes_a_result(tmp_path):
    out = subprocess.run([sys.executable, "bench/cold_start.py", "--smoke", "--run-dir", str(tmp_path / "run"),
                          "--results-dir", str(tmp_path / "results")],
                         cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads((tmp_path / "results" / "cold_start_smoke.json").read_text())
    c = result["counts"]
    assert c["n_held_out"] == int(np.ceil(0.1 * c["n_items_full"])) and c["n_added"] >= 1
    assert c["n_items_catalogue"] == c["n_items_cold_run"] + c["n_added"] and c["n_test_new_targets"] > 0
    for system in ("genrec", "content_knn", "popularity"):
        m = result["metrics"][system]
        assert 0 <= m["recall@10"] <= 1 and 0 <= m["ndcg@10"] <= m["recall@10"] + 1e-9
        assert m["n_users"] == c["n_test_new_targets"]
    assert result["metrics"]["popularity"]["recall@10"] == 0.0     # popularity cannot rank an item without history
    assert result["git_commit"] and result["seeds"]["train_seed_everything"] == 0 and result["seconds"]["add_items"] > 0
    assert (tmp_path / "results" / "cold_start_smoke.md").read_text().startswith("**smoke: cold start")
    # the held-out items never reached the cold run (no leakage), and came back through add-items
    cold_items = set(pl.read_parquet(tmp_path / "run" / "cold" / "dataset" / "items.parquet")["source_id"])
    new_items = [json.loads(line)["source_id"]
                 for line in (tmp_path / "run" / "new_items.jsonl").read_text().splitlines()]
    assert not cold_items & set(new_items)
    served = json.loads((tmp_path / "run" / "export_added" / "items.json").read_text())["source_id"]
    assert served[c["n_items_cold_run"]:] == new_items
