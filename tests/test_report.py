"""`genrec report` turns a run folder into markdown + a metrics plot, and says which stages are missing."""

from __future__ import annotations

import json

from genrec.report import write_report

SYSTEM = {"recall@5": 0.1, "recall@10": 0.2, "recall@20": 0.3, "ndcg@5": 0.05, "ndcg@10": 0.07, "ndcg@20": 0.09,
          "invalid_rate": 0.0, "n_users": 37, "seconds": 1.5}


def test_report_on_an_evaluated_run(tmp_path):
    (tmp_path / "sid").mkdir()
    (tmp_path / "sid" / "report.json").write_text(json.dumps({
        "levels": [{"level": 0, "size": 5, "used": 5, "used_fraction": 1.0, "perplexity": 4.2}],
        "collisions_raw": {"n_colliding_items": 3, "largest_group": 2},
        "collisions_before_dedup": {"n_colliding_items": 0}}))
    (tmp_path / "metrics.json").write_text(json.dumps({"split": "test", "systems": {"genrec": SYSTEM,
                                                                                    "popularity": SYSTEM}}))
    out = write_report(tmp_path)
    text = out.read_text()
    assert "not prepared yet" in text and "not embedded yet" in text
    assert "| 0 | 5 | 5 (100%) | 4.2 |" in text and "| genrec | 0.1000" in text
    assert (tmp_path / "plots" / "metrics.png").read_bytes()[:4] == b"\x89PNG"
