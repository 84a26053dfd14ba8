"""bench/scale.py --smoke: the decode scaling bench runs end to end, writes the issue's JSON shape, and its
pruned exact search returns score_catalogue's top-k on the smoke catalogue."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import scale  # noqa: E402

from genrec.decode import Trie, exclude_mask, pruned_search, score_catalogue  # noqa: E402


def test_help_names_the_sizes_flag():
    out = subprocess.run([sys.executable, "bench/scale.py", "--help"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "--sizes" in out.stdout and "--smoke" in out.stdout


def test_smoke_writes_the_schema_with_pruned_equal_to_full(tmp_path):
    out = subprocess.run([sys.executable, "bench/scale.py", "--smoke", "--serving-only", "--out", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads((tmp_path / "scale.json").read_text())
    scale.validate(result)
    n = scale.SMOKE["sizes"][0]
    got = {(r["decoding"], r["batch"]) for r in result["serving"] if r["n_items"] == n}
    assert got == {(p, b) for p in scale.PATHS for b in (1, scale.SMOKE["batch"])}
    assert [r["stage"] for r in result["rows"]] == ["decode_index", "decode_index"]
    # the bench compared pruned and full on every timed call, and each pruned method in the comparison
    assert all(v["equal"] and v["compared_calls"] > 0 for v in result["pruned_equals_full"][str(n)].values())
    assert result["methods"] and all(r["equals_full"] for r in result["methods"])
    full = [r for r in result["serving"] if r["decoding"] == "full"]
    assert all(r["items_scored"] == n for r in full)
    assert (tmp_path / "scale.md").read_text().startswith("# Scaling")
    assert (tmp_path / "scale.png").read_bytes()[:4] == b"\x89PNG"


def test_pruned_equals_full_on_the_smoke_catalogue():
    cfg = scale.ScaleConfig(**scale.SMOKE)
    n = cfg.sizes[0]
    data = scale.prepare(n, cfg, 40)
    trie = Trie(data.pq.codes, data.pq.level_sizes)
    head = scale.ParallelHead(data.pq, cfg, cfg.temperature, np.random.default_rng(0))
    paths = []
    for start in range(0, 40, 8):
        states, mask = data.states[start:start + 8], exclude_mask(data.histories[start:start + 8], n)
        got = pruned_search(head.bind(states), trie, 8, cfg.k, item_mask=mask)
        want = score_catalogue(head.bind(states), trie, 8, cfg.k, item_mask=mask)
        assert scale.same_topk(got.result, want)
        paths += got.path.tolist()
    assert paths.count("pruned") > len(paths) // 2        # the smoke catalogue exercises the search itself


def test_schema_names_the_missing_field():
    with pytest.raises(ValueError, match="missing 'serving'"):
        scale.validate({"git_commit": None, "rows": [], "pruned_equals_full": {}, "config": {}, "wall_time_s": 1})
    row = {"n_items": 10, "decoding": "greedy", "batch": 1, "p50_ms": 1, "p99_ms": 1, "rss_mb": 1, "items_scored": 1}
    with pytest.raises(ValueError, match="decoding must be one of"):
        scale.validate({"git_commit": None, "rows": [], "serving": [row], "pruned_equals_full": {}, "config": {},
                        "wall_time_s": 1})


def test_smoke_stage_rows_time_every_stage_in_its_own_process(tmp_path):
    """--smoke --stages-only: a tiny RecBole catalogue through prepare .. serve, one row per stage with the
    child's wall time and peak RSS; the serving runtime holds its large arrays as memory maps. With
    --item-grad-steps, both trainings also step with a dense and with a sparse item table."""
    out = subprocess.run([sys.executable, "bench/scale.py", "--smoke", "--stages-only", "--item-grad-steps", "2",
                          "--out", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads((tmp_path / "scale.json").read_text())
    scale.validate(result)
    n = scale.STAGE_SMOKE["sizes"][0]
    rows = {r["stage"]: r for r in result["rows"] if r["n_items"] == n}
    assert set(scale.STAGES) <= set(rows)
    for stage in scale.STAGES:
        assert rows[stage]["seconds"] > 0 and rows[stage]["peak_rss_mb"] > 0
        assert rows[stage]["n_interactions"] == n * scale.StageConfig().interactions_per_item
    assert rows["prepare"]["prepared_items"] <= n
    assert rows["export"]["export_mb"] > 0
    assert rows["collab"]["steps_measured"] >= 1 and rows["train"]["steps_measured"] >= 1
    assert all(rows["serve"]["memory_mapped"].values()), rows["serve"]["memory_mapped"]
    # the served requests are users' test histories from the prepared run, each decoded once
    assert rows["serve"]["requests"] == scale.STAGE_SMOKE["serve_requests"]
    assert rows["serve"]["p99_ms"] >= rows["serve"]["p50_ms"] > 0 and 0 <= rows["serve"]["dense_pass_share"] <= 1
    # the same requests, interleaved, with decoder_step.onnx once per level (the exact export's encoder gives all)
    stepped = rows["serve"]["per_level_steps"]
    assert stepped["p99_ms"] >= stepped["p50_ms"] > 0
    # the exported model per decoding path (its own exact scoring, and trie beam search on the same export):
    # in-process latency at batch 1 and batched, and a real server process under loopback HTTP load
    served = {(r["decoding"], r["batch"]): r for r in scale.export_rows(result) if r["n_items"] == n}
    assert set(served) == {(d, b) for d in ("exact", "beam") for b in (1, scale.STAGE_SMOKE["serve_batch"])}
    for r in served.values():
        assert r["p99_ms"] >= r["p50_ms"] > 0 and r["req_per_s"] > 0 and r["rss_mb"] > 0 and r["http_errors"] == 0
    http = rows["serve"]["http"]
    assert all(h["requests"] == scale.STAGE_SMOKE["http_requests"] and h["alive_after_load"] for h in http.values())
    assert rows["train"]["item_grad"] == rows["collab"]["item_grad"] == "dense"   # "auto" on a small catalogue
    compared = {(r["training"], r["item_grad"]): r for r in result["rows"] if r["stage"] == "item_grad_steps"}
    assert set(compared) == {(t, g) for t in ("collab", "train") for g in ("dense", "sparse")}
    assert all(r["steps_measured"] == 2 and r["seconds_per_step"] > 0 for r in compared.values())
    assert "## Pipeline stages" in (tmp_path / "scale.md").read_text()
    assert "## Serving the exported model" in (tmp_path / "scale.md").read_text()


def test_partial_runs_keep_the_other_part(tmp_path):
    """--stages-only keeps the decode rows of an existing scale.json, and rows of sizes it did not re-measure."""
    decode_row = {"stage": "decode_index", "n_items": 5, "codes": "pq", "level_sizes": [4, 4, 2], "what": "trie",
                  "seconds": 0.1, "peak_rss_mb": 1.0, "index_mb": 0.1}
    previous = {"git_commit": "abc", "rows": [decode_row,
                                              {"stage": "prepare", "n_items": 7, "n_interactions": 70, "seconds": 1.0,
                                               "peak_rss_mb": 9.0}],
                "serving": [], "pruned_equals_full": {}, "config": {}, "wall_time_s": 1.0}
    (tmp_path / "scale.json").write_text(json.dumps(previous))
    calls = []
    original = scale.measure_stages
    scale.measure_stages = lambda n, cfg: calls.append(n) or [
        {"n_items": n, "n_interactions": 10 * n, "stage": "prepare", "seconds": 2.0, "peak_rss_mb": 3.0}]
    try:
        out = scale.main(["--smoke", "--stages-only", "--sizes", "600", "--out", str(tmp_path)])
    finally:
        scale.measure_stages = original
    assert calls == [600]
    assert [(r["stage"], r["n_items"]) for r in out["rows"]] == [("decode_index", 5), ("prepare", 7), ("prepare", 600)]


def test_serve_only_re_measures_the_kept_exports_and_keeps_every_other_row(tmp_path):
    """--stages-only --work DIR keeps each size's export; --serve-only then re-serves it at this commit and
    replaces only the serve rows (the export's commit is recorded beside the new one)."""
    work = tmp_path / "work"
    first = scale.main(["--smoke", "--stages-only", "--work", str(work), "--out", str(tmp_path)])
    n = scale.STAGE_SMOKE["sizes"][0]
    assert (work / str(n) / "export").is_dir() and (work / str(n) / scale.SERVE_HISTORIES).exists()
    again = scale.main(["--smoke", "--serve-only", "--work", str(work), "--out", str(tmp_path)])
    before = {(r["n_items"], r["stage"]): r for r in first["rows"]}
    after = {(r["n_items"], r["stage"]): r for r in again["rows"]}
    assert set(before) == set(after)
    for key, row in after.items():
        if key[1] == "serve":
            assert row["export_git_commit"] == before[key]["git_commit"] and row["requests"] == before[key]["requests"]
        else:
            assert row == before[key]
    assert scale.decode_rows(again) == scale.decode_rows(first)
    # the exported model's serving rows follow the re-measured serve rows
    assert ({(r["decoding"], r["batch"]) for r in scale.export_rows(again)}
            == {(r["decoding"], r["batch"]) for r in scale.export_rows(first)} != set())
    assert all(r["git_commit"] == again["git_commit"] for r in scale.export_rows(again))
    with pytest.raises(SystemExit):
        scale.main(["--smoke", "--serve-only", "--work", str(tmp_path / "elsewhere"), "--out", str(tmp_path)])
