"""bench/run.py --smoke runs the whole benchmark path on a small demo, so the scripts cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from run import validate_result  # noqa: E402


def test_bench_smoke_writes_a_valid_result(tmp_path):
    out = subprocess.run([sys.executable, "bench/run.py", "--smoke", "--run-dir", str(tmp_path / "smoke"),
                          "--results-dir", str(tmp_path / "results")],
                         cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads((tmp_path / "results" / "smoke.json").read_text())
    validate_result(result)
    assert result["dataset"] == "smoke" and result["metrics"]["genrec"]["invalid_rate"] == 0.0
    assert (tmp_path / "results" / "smoke.md").read_text().startswith("**smoke")
    for kind in ("codebook", "training_curve"):
        assert (tmp_path / "results" / f"smoke_{kind}.png").read_bytes()[:4] == b"\x89PNG"


def test_schema_rejects_missing_fields():
    with pytest.raises(ValueError, match="missing 'dataset'"):
        validate_result({})
    good = {k: {} for k in ("git_commit", "machine", "versions", "config", "dataset_stats", "tokenizer", "train")}
    good |= {"dataset": "x", "peak_rss_mb": 1.0, "stages": {s: 1.0 for s in
                                                            ("prepare", "embed", "tokenize", "train", "evaluate")}}
    good["metrics"] = {s: {k: 0.0 for k in ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20",
                                            "invalid_rate", "n_users", "seconds")} for s in
                       ("genrec", "sasrec", "popularity")}
    validate_result(good)
    good["metrics"]["sasrec"]["ndcg@10"] = "high"
    with pytest.raises(ValueError, match="metrics.sasrec.ndcg@10"):
        validate_result(good)
