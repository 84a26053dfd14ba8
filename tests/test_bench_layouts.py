"""bench/layouts.py: layout configs, the exact beam width, kept rows, the table, and a --smoke run on two layouts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from layouts import (  # noqa: E402
    LAYOUTS,
    exact_beam_width,
    kept_rows,
    layout_config,
    parse_widths,
    sweep_widths,
    table,
)
from run import bench_config  # noqa: E402

from genrec.decode import RecomputeStep, Trie, beam_search  # noqa: E402
from genrec.pipeline import stage_config_from_dict  # noqa: E402


@pytest.mark.parametrize("dataset", ["Office", "Scientific_DeCoRec_mm", "Beauty", "smoke"])
def test_every_layout_changes_only_the_tokenizer_and_is_a_valid_stage_config(dataset):
    _, raw = bench_config(dataset, smoke=dataset == "smoke")
    before = json.dumps(raw, sort_keys=True)
    for name, layout in LAYOUTS.items():
        cfg = layout_config(raw, layout)
        stage_config_from_dict(cfg)   # e.g. smoke's rqvae: section is dropped for pq and rqkmeans, else refused
        assert {k: v for k, v in cfg.items() if k != "tokenize"} == {k: v for k, v in raw.items() if k != "tokenize"}
        assert {k: cfg["tokenize"][k] for k in layout.tokenize} == layout.tokenize, name
        assert layout.flags[0] == f"--model.head={layout.head}"
    assert json.dumps(raw, sort_keys=True) == before, "layouts must not modify the checked-in config"
    if dataset != "smoke":   # on real data pq-parallel is the config family unchanged
        assert layout_config(raw, LAYOUTS["pq-parallel"]) == raw


def test_beam_search_at_the_exact_width_is_the_exact_top_k():
    """A beam as wide as the widest non-leaf trie level returns the same top 20 as scoring every item."""
    rng = np.random.default_rng(3)
    sizes = (5, 7, 11, 3)
    codes = np.unique(np.stack([rng.integers(0, k, 300) for k in sizes], axis=1), axis=0)   # (N, 4) unique
    codes = codes[rng.permutation(len(codes))]
    trie = Trie(codes, sizes)
    table_ = [rng.normal(size=(2,) + sizes[:d + 1]) for d in range(len(sizes))]   # per request, per prefix

    def fn(level, requests, prefixes):   # log-probs that depend on the whole prefix (an autoregressive head)
        logits = np.stack([table_[level][(r, *p)] for r, p in zip(requests, prefixes)])
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    exact = exact_beam_width(trie)
    assert exact == max(trie.n_nodes(d) for d in range(1, len(sizes)))
    got = beam_search(RecomputeStep(fn), trie, batch_size=2, beam_width=exact, k=20)
    for r in range(2):
        item_scores = [sum(fn(d, np.array([r]), c[None, :d])[0, c[d]] for d in range(len(sizes))) for c in codes]
        want = np.lexsort((np.arange(len(codes)), -np.asarray(item_scores)))[:20]
        assert got.items[r].tolist() == want.tolist()
    assert exact_beam_width(Trie(codes[:4], sizes)) == 20   # never below the protocol's k


def test_beam_widths_are_capped_at_the_exact_width_and_checked():
    assert sweep_widths([20, 50, 100, "exact"], exact=60) == [("beam", 20), ("beam", 50), ("beam", 60)]
    assert sweep_widths(["exact", 20], exact=240) == [("beam", 20), ("beam", 240)]
    assert parse_widths(["20", "exact", "rerank50"]) == [20, "exact", "rerank50"]
    # reranking only for layouts trained with the item loss, capped like a beam
    assert sweep_widths([20, "rerank50", "rerank100"], exact=60) == [("beam", 20)]
    assert sweep_widths([20, "rerank50", "rerank100"], exact=60, rerank=True) == [
        ("beam", 20), ("rerank", 50), ("rerank", 60)]
    with pytest.raises(SystemExit, match="below 20"):
        parse_widths(["rerank5"])
    with pytest.raises(SystemExit, match="below 20"):
        parse_widths(["10"])
    with pytest.raises(SystemExit, match="neither an integer"):
        parse_widths(["wide"])


def test_rerunning_one_layout_keeps_the_other_rows_of_the_same_budget(tmp_path):
    previous = tmp_path / "layouts_Office.json"
    rows = [{"layout": "pq-parallel", "beam_width": None}, {"layout": "rq-fused-ar", "beam_width": 20},
            {"layout": "rq-fused-ar", "beam_width": 50}, {"layout": "retired-layout", "beam_width": None}]
    previous.write_text(json.dumps({"train_args": [], "sasrec": {"ndcg@10": 0.04}, "rows": rows}))
    kept, sasrec = kept_rows(previous, ["pq-parallel"], [])
    assert [(r["layout"], r["beam_width"]) for r in kept] == [("rq-fused-ar", 20), ("rq-fused-ar", 50)]
    assert sasrec == {"ndcg@10": 0.04}
    assert kept_rows(previous, None, []) == ([], None)                                   # a full run starts afresh
    kept, _ = kept_rows(previous, ["rq-fused-ar"], [], decode_only=True)   # re-scoring replaces widths, not layouts
    assert [r["layout"] for r in kept] == ["pq-parallel", "rq-fused-ar", "rq-fused-ar"]
    assert kept_rows(previous, ["pq-parallel"], ["--trainer.max_epochs=2"]) == ([], None)   # another budget


def test_table_states_each_row_against_the_best_and_sasrec():
    base = {"tokenizer": "rqvae", "modalities": "fused", "n_digits": 4, "recall@10": 0.1, "invalid_rate": 0.0,
            "decode_ms_per_user": 1.234, "best_valid_ndcg@10": 0.05, "train_seconds": 61.4, "epochs": 7}
    out = {"rows": [{**base, "layout": "pq-parallel", "decoding": "parallel", "beam_width": None, "ndcg@10": 0.08},
                    {**base, "layout": "rq-fused-ar", "decoding": "autoregressive", "beam_width": 20, "exact": False,
                     "ndcg@10": 0.06},
                    {**base, "layout": "rq-fused-ar", "decoding": "autoregressive", "beam_width": 37, "exact": True,
                     "ndcg@10": 0.064},
                    {**base, "layout": "rq-fused-ar", "decoding": "autoregressive", "beam_width": 50, "exact": False,
                     "search": "rerank", "ndcg@10": 0.07, "valid_ndcg@10": 0.0612}],
           "sasrec": {"ndcg@10": 0.04, "recall@10": 0.09, "invalid_rate": 0.0}}
    lines = table("Office", out).splitlines()
    assert lines[4] == ("| pq-parallel | rqvae | fused | 4 | parallel, exact | 0.0800 | 100% | 0.1000 | 0.0000 | "
                        "1.23 | 0.0500 | — | 61 | 7 |")
    assert "| beam 20 | 0.0600 | 75% |" in lines[5]
    assert "| beam 37 (exact) | 0.0640 | 80% |" in lines[6]
    assert "| beam 50 + item rerank | 0.0700 | 88% |" in lines[7] and "| 0.0500 | 0.0612 | 61 |" in lines[7]
    assert lines[8].startswith("| SASRec (same run) |") and "| 0.0400 | 50% |" in lines[8]
    assert all(line.count("|") == lines[2].count("|") for line in lines[2:])


def test_layouts_smoke_scores_one_autoregressive_checkpoint_at_several_widths(tmp_path):
    """--smoke on a parallel and an autoregressive layout (with the item loss, so it is also reranked): the
    issue's schema, one row per (layout, width, search)."""
    AR = "rq-fused-ar-itemloss"
    out = subprocess.run([sys.executable, "bench/layouts.py", "--smoke", "--layouts", "pq-parallel", AR,
                          "--beam-widths", "20", "exact", "rerank20", "--run-root", str(tmp_path / "runs"),
                          "--results-dir", str(tmp_path / "results"), "--trainer.max_epochs=1"],
                         cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "results" / "layouts_smoke.json").read_text())
    assert result["dataset"] == "smoke" and len(result["git_commit"]) == 40
    assert 0 < result["sasrec"]["ndcg@10"] <= 1
    rows = result["rows"]
    assert [(r["layout"], r["decoding"]) for r in rows] == [("pq-parallel", "parallel"), *[(AR, "autoregressive")] * 3]
    assert rows[0]["beam_width"] is None and rows[0]["tokenizer"] == "pq"
    exact = rows[2]["exact_beam_width"]
    assert [(r["beam_width"], r["search"]) for r in rows[1:]] == [(20, "beam"), (exact, "exact"), (20, "rerank")]
    assert rows[2]["exact"] and not rows[1]["exact"] and not rows[3]["exact"]
    assert rows[1]["tokenizer"] == "rqvae" and rows[1]["n_digits"] == 4   # 3 RQ levels + the dedup digit
    for r in rows:
        for key in ("ndcg@10", "recall@10", "train_seconds", "decode_ms_per_user"):
            assert isinstance(r[key], (int, float)) and r[key] >= 0, (r["layout"], key)
        assert r["invalid_rate"] == 0.0
        assert r["epochs"] == 1
        assert (0 <= r["valid_ndcg@10"] <= 1) if r["decoding"] == "autoregressive" else "valid_ndcg@10" not in r
    stages = {r["layout"]: sum(r["stages"].values()) for r in rows}
    sweeps = sum(r["evaluate_seconds"] + r["valid_evaluate_seconds"] for r in rows[1:])
    assert result["seconds"] == round(sum(stages.values()) + sweeps, 1)   # validation scoring counted too
    assert rows[1]["train_seconds"] == rows[2]["train_seconds"] == rows[3]["train_seconds"], \
        "the widths score one checkpoint, not a retrain"
    assert (tmp_path / "results" / "layouts_smoke.md").read_text().startswith("**Semantic-ID layouts on smoke**")
    assert (tmp_path / "results" / "layouts_smoke.png").read_bytes()[:4] == b"\x89PNG"

    # --decode-only scores the same checkpoint at another width; the other rows stay
    out = subprocess.run([sys.executable, "bench/layouts.py", "--smoke", "--decode-only", "--layouts", AR,
                          "--beam-widths", "50", "--run-root", str(tmp_path / "runs"),
                          "--results-dir", str(tmp_path / "results"), "--trainer.max_epochs=1"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    again = json.loads((tmp_path / "results" / "layouts_smoke.json").read_text())["rows"]
    assert [(r["layout"], r["beam_width"], r.get("search")) for r in again] == [
        ("pq-parallel", None, None),
        *[(AR, w, "exact" if w == exact else "beam") for w in sorted({20, min(50, exact), exact})],
        (AR, 20, "rerank")]
    assert all(r["train_seconds"] == rows[1]["train_seconds"] and r["invalid_rate"] == 0.0 for r in again[1:])


def test_summary_renders_a_layouts_file_without_torch(tmp_path):
    row = {"layout": "rq-fused-ar", "tokenizer": "rqvae", "modalities": "fused", "n_digits": 4,
           "decoding": "autoregressive", "beam_width": 20, "exact": False, "ndcg@10": 0.0376, "recall@10": 0.07,
           "invalid_rate": 0.0, "decode_ms_per_user": 0.3, "best_valid_ndcg@10": 0.04, "train_seconds": 159.4,
           "epochs": 40}
    (tmp_path / "layouts_Office.json").write_text(json.dumps({
        "dataset": "Office", "git_commit": "abcdef0123", "train_args": ["--trainer.max_epochs=2"], "seconds": 600.0,
        "sasrec": {"ndcg@10": 0.0435, "recall@10": 0.08, "invalid_rate": 0.0}, "rows": [row]}))
    (tmp_path / "layouts_smoke.json").write_text("{}")   # smoke runs stay out of RESULTS.md
    probe = ("import sys; sys.path.insert(0, 'bench'); import summary; from pathlib import Path; "
             f"print(summary.render(Path({str(tmp_path)!r}))); assert 'torch' not in sys.modules, 'imported torch'")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "## Semantic-ID layouts and decoding" in out.stdout
    assert "`python bench/layouts.py --dataset Office --trainer.max_epochs=2`; 10.0 min" in out.stdout
    assert "| rq-fused-ar | rqvae | fused | 4 | beam 20 | 0.0376 | 100% |" in out.stdout
    assert "| SASRec (same run) |" in out.stdout and "![layouts on Office](results/layouts_Office.png)" in out.stdout
