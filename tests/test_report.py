"""`genrec report` turns a run folder into markdown + plots and one self-contained HTML page, and says which
stages are missing."""

from __future__ import annotations

import json
import re

from genrec.report import markdown_to_html, write_report

SLICE = {"n_users": 7, "share": 7 / 37, "recall@10": 0.25, "recall@20": 0.5, "ndcg@10": 0.125, "ndcg@20": 0.2}
BEYOND = {"coverage@10": 0.11, "coverage@20": 0.19, "novelty@10": 9.5, "novelty@20": 9.75, "avg_popularity@10": 41.0,
          "avg_popularity@20": 33.5, "diversity@10": 0.61, "diversity@20": 0.67, "diversity_measure": "category",
          # in the order metrics.json stores keys (sorted as strings); the report orders them by popularity
          "by_target_popularity": {"1-4": SLICE, "20+": SLICE | {"n_users": 11}, "5-19": SLICE,
                                   "never": {"n_users": 0, "share": 0.0}},
          "cold_targets": SLICE}
SYSTEM = {"recall@5": 0.1, "recall@10": 0.2, "recall@20": 0.3, "ndcg@5": 0.05, "ndcg@10": 0.07, "ndcg@20": 0.09,
          "invalid_rate": 0.0, "n_users": 37, "seconds": 1.5}


def _evaluated_run(tmp_path, systems):
    (tmp_path / "sid").mkdir()
    (tmp_path / "sid" / "report.json").write_text(json.dumps({
        "levels": [{"level": 0, "size": 5, "used": 5, "used_fraction": 1.0, "perplexity": 4.2}],
        "collisions_raw": {"n_colliding_items": 3, "largest_group": 2},
        "collisions_before_dedup": {"n_colliding_items": 0}}))
    (tmp_path / "metrics.json").write_text(json.dumps({"split": "test", "systems": systems,
                                                       "beyond_protocol": {"diversity": {"measure": "category"}}}))
    return tmp_path


def test_report_on_an_evaluated_run(tmp_path):
    out = write_report(_evaluated_run(tmp_path, {"genrec": SYSTEM, "popularity": SYSTEM}))   # no "beyond" yet
    text = out.read_text()
    assert "not prepared yet" in text and "not embedded yet" in text
    assert "| 0 | 5 | 5 (100%) | 4.2 |" in text and "| genrec | 0.1000" in text
    assert "Beyond accuracy" not in text
    assert (tmp_path / "plots" / "metrics.png").read_bytes()[:4] == b"\x89PNG"


def test_report_shows_beyond_accuracy_and_writes_one_self_contained_html(tmp_path):
    from genrec.lit.callbacks import plot_training_curve

    run = _evaluated_run(tmp_path, {"genrec": SYSTEM | {"beyond": BEYOND}, "sasrec": SYSTEM | {"beyond": BEYOND}})
    (run / "logs").mkdir()
    (run / "logs" / "metrics.csv").write_text("epoch,step,train/loss,train/loss_per_target,val/ndcg@10\n"
                                              "0,9,40.0,7.5,\n0,11,,,0.03\n1,19,170.0,7.25,\n1,23,,,0.04\n")
    plot_training_curve(run / "logs" / "metrics.csv", run / "plots" / "training_curve.png")
    text = write_report(run).read_text()
    assert "## Beyond accuracy" in text and "diversity by category" in text
    assert "| genrec | 0.1100 | 0.1900 | 9.5000 | 9.7500 | 0.6100 | 0.6700 | 41.0 | 33.5 |" in text
    assert "| never | 0 (0%) | all | — | — | — | — |" in text                       # an empty bucket, once
    rows = [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| ") and " | sasrec | " in line]
    assert rows == ["| 1-4", "| 5-19", "| 20+", "| cold (< 5)"]
    assert "| cold (< 5) | 7 (19%) | sasrec | 0.2500 | 0.5000 | 0.1250 | 0.2000 |" in text
    assert (run / "plots" / "by_target_popularity.png").read_bytes()[:4] == b"\x89PNG"
    page = (run / "report.html").read_text()
    # every plot the markdown links (codebook usage is missing here and said so) is inside the page
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert linked == ["sid/report.png", "plots/training_curve.png", "plots/metrics.png",
                      "plots/by_target_popularity.png"]
    assert page.count('<img src="data:image/png;base64,') == 3 and "(plot sid/report.png is missing)" in page
    # self-contained: every src/href is a data URI, and without them no URL is left
    assert all(v.startswith("data:image/png;base64,") for v in re.findall(r'(?:src|href)="([^"]*)"', page))
    rest = re.sub(r'"data:image/png;base64,[A-Za-z0-9+/=]+"', '""', page)
    assert "http" not in rest and "//" not in rest and "url(" not in rest
    assert "<td>0.6100</td>" in page and "<h2>Beyond accuracy</h2>" in page and "cold (&lt; 5)" in page


def test_markdown_to_html_escapes_text_and_keeps_its_structure(tmp_path):
    text = "# run `a<b>`\n\n- one **two**\n- three\n\n| x | y |\n|---|---|\n| 1 | <2> |\n\nplain & text"
    page = markdown_to_html(text, tmp_path)
    assert "<h1>run <code>a&lt;b&gt;</code></h1>" in page
    assert "<ul><li>one <strong>two</strong></li><li>three</li></ul>" in page
    assert "<thead><tr><th>x</th><th>y</th></tr></thead><tbody><tr><td>1</td><td>&lt;2&gt;</td></tr></tbody>" in page
    assert "<p>plain &amp; text</p>" in page
