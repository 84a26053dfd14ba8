"""bench/run.py --smoke runs the whole benchmark path on a small demo, so the scripts cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from run import validate_result  # noqa: E402
from segments import bucket_labels, popularity_bucket, segment_metrics  # noqa: E402


def test_bench_smoke_writes_a_valid_result(tmp_path):
    out = subprocess.run([sys.executable, "bench/run.py", "--smoke", "--run-dir", str(tmp_path / "smoke"),
                          "--results-dir", str(tmp_path / "results")],
                         cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads((tmp_path / "results" / "smoke.json").read_text())
    validate_result(result)
    assert result["dataset"] == "smoke" and result["metrics"]["genrec"]["invalid_rate"] == 0.0
    assert (tmp_path / "results" / "smoke.md").read_text().startswith("**smoke")
    # the same checkpoints also ranked without each user's history items (RecBole's full-sort convention)
    filtered = json.loads((tmp_path / "smoke" / "metrics_exclude_history.json").read_text())
    assert filtered["config"]["exclude_history"] is True
    assert set(result["metrics_exclude_history"]) == set(result["metrics"])
    for system, row in result["metrics_exclude_history"].items():
        assert row == filtered["systems"][system] and 0 <= row["ndcg@10"] <= row["recall@10"] <= 1
    assert "without each user's history items" in (tmp_path / "results" / "smoke.md").read_text()
    for kind in ("codebook", "training_curve"):
        assert (tmp_path / "results" / f"smoke_{kind}.png").read_bytes()[:4] == b"\x89PNG"

    # bench/segments.py on the same run: its overall test figures are the bench's own.
    out = subprocess.run([sys.executable, "bench/segments.py", "--dataset", "smoke",
                          "--run-dir", str(tmp_path / "smoke"), "--results-dir", str(tmp_path / "results")],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    segments = json.loads((tmp_path / "results" / "segments_smoke.json").read_text())
    for system in ("genrec", "sasrec"):
        assert segments["overall"]["test"][system]["ndcg@10"] == pytest.approx(result["metrics"][system]["ndcg@10"])
    for split in ("valid", "test"):
        rows = segments["splits"][split].values()
        assert sum(r["n_users"] for r in rows) == segments["overall"][split]["n_users"]

    # bench/weights.py on the same run (fused codes: one weight on every digit); 1 is always tried, and test is
    # read for the validation pick and for 1 only.
    out = subprocess.run([sys.executable, "bench/weights.py", "--dataset", "smoke",
                          "--run-dir", str(tmp_path / "smoke"), "--results-dir", str(tmp_path / "results"),
                          "--modality", "fused", "--values", "0.5"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    weights = json.loads((tmp_path / "results" / "weights_smoke_fused.json").read_text())
    assert [r["value"] for r in weights["rows"]] == [1.0, 0.5] and weights["git_commit"]
    plain = next(r for r in weights["rows"] if r["value"] == 1.0)
    assert plain["test"]["ndcg@10"] == pytest.approx(result["metrics"]["genrec"]["ndcg@10"])
    assert all(("test" in r) == (r["value"] in (1.0, weights["chosen"])) for r in weights["rows"])
    assert "(chosen)" in (tmp_path / "results" / "weights_smoke_fused.md").read_text()
    # --popularity adds to search "rerank" scores; the smoke model has no trained item logit, so one line says so
    out = subprocess.run([sys.executable, "bench/weights.py", "--dataset", "smoke",
                          "--run-dir", str(tmp_path / "smoke"), "--results-dir", str(tmp_path / "results"),
                          "--popularity", "-0.1"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 1 and "search 'rerank' scores only" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run([sys.executable, "bench/weights.py", "--dataset", "smoke",
                          "--run-dir", str(tmp_path / "smoke"), "--results-dir", str(tmp_path / "results"),
                          "--digits", "0.5"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 1 and "weighed against the item logit" in out.stderr and "Traceback" not in out.stderr

    # bench/seeds.py on the same run: seed 0 is the bench run's own models, seed 1 is retrained.
    out = subprocess.run([sys.executable, "bench/seeds.py", "--dataset", "smoke", "--run-dir", str(tmp_path / "smoke"),
                          "--results-dir", str(tmp_path / "results"), "--out-root", str(tmp_path / "seeds"),
                          "--seeds", "0", "1"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    seeds = json.loads((tmp_path / "results" / "seeds_smoke.json").read_text())
    seed0, seed1 = seeds["per_seed"]
    assert seed0["reused"] == ["genrec", "sasrec"] and seed1["reused"] == []
    assert seed1["train_seconds"]["genrec"] > 0 and seed1["train_seconds"]["sasrec"] > 0
    for system in ("genrec", "sasrec"):
        assert seed0[system]["test"]["ndcg@10"] == pytest.approx(result["metrics"][system]["ndcg@10"])
        stats = seeds["summary"]["systems"][system]["test"]["ndcg@10"]
        pair = [seed0[system]["test"]["ndcg@10"], seed1[system]["test"]["ndcg@10"]]
        assert stats["mean"] == pytest.approx(np.mean(pair)) and stats["std"] == pytest.approx(np.std(pair, ddof=1))
    assert (tmp_path / "results" / "seeds_smoke.png").read_bytes()[:4] == b"\x89PNG"
    # --resume: seed 1's kept figures are read back, not retrained
    out = subprocess.run([sys.executable, "bench/seeds.py", "--dataset", "smoke", "--run-dir", str(tmp_path / "smoke"),
                          "--results-dir", str(tmp_path / "results"), "--out-root", str(tmp_path / "seeds"),
                          "--seeds", "1", "--resume"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (resumed,) = json.loads((tmp_path / "results" / "seeds_smoke.json").read_text())["per_seed"]
    assert resumed["resumed"] == ["genrec", "sasrec"] and "kept from an earlier run" in out.stdout
    for system in ("genrec", "sasrec"):
        assert resumed[system] == seed1[system] and resumed["train_seconds"][system] == seed1["train_seconds"][system]

    # --reuse-stages after a training-flag change: the up-to-date stages are kept with their first timing.
    out = subprocess.run([sys.executable, "bench/run.py", "--smoke", "--run-dir", str(tmp_path / "smoke"),
                          "--results-dir", str(tmp_path / "results"), "--reuse-stages", "--trainer.max_epochs=1"],
                         cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    again = json.loads((tmp_path / "results" / "smoke.json").read_text())
    validate_result(again)
    assert set(again["reused_stages"]) == {"prepare", "embed", "tokenize"}
    for stage in ("prepare", "embed", "tokenize"):
        assert again["stages"][stage] == result["stages"][stage]
        assert again["reused_stages"][stage] == {"seconds": result["stages"][stage], "git_commit": result["git_commit"]}
    assert again["train"]["epochs"] <= 1 and again["config"]["train_args"] == ["--trainer.max_epochs=1"]


def test_design_bench_smoke_trains_every_design_for_the_same_budget(tmp_path):
    """bench/design.py --smoke: every design trains for the budget, is scored along its curve, and one wins."""
    from design import DESIGNS, MARK_FRACTIONS

    out = subprocess.run([sys.executable, "bench/design.py", "--smoke", "--budget-seconds", "2",
                          "--run-root", str(tmp_path / "design"), "--results-dir", str(tmp_path / "results")],
                         cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads((tmp_path / "results" / "design_smoke.json").read_text())
    assert sorted(result["designs"]) == sorted(d.name for d in DESIGNS)   # the JSON keeps keys sorted
    assert result["winner"] == max(result["designs"], key=lambda n: result["designs"][n]["valid"]["ndcg@10"])
    for name, design in result["designs"].items():
        assert design["train_seconds"] >= 2.0 and design["steps"] > 0, name
        seconds = [point["seconds"] for point in design["curve"]]
        assert len(seconds) == len(MARK_FRACTIONS) + 1 and seconds == sorted(seconds) and seconds[-1] >= 2.0
        assert 0.0 <= design["valid"]["ndcg@10"] <= 1.0 and 0.0 <= design["test"]["ndcg@10"] <= 1.0
    # smoke.yaml trains the plain causal model with the code head: exactly that design is marked as the config
    assert [n for n, d in result["designs"].items() if d["matches_config"]] == [
        "one token per item, causal (every position per pass)"]
    assert result["designs"]["one token per item, every prefix, code head"]["training_examples"] == "prefix"
    assert (tmp_path / "results" / "design_smoke.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "results" / "design_smoke.md").read_text().startswith("**Design benchmark on smoke**")


@pytest.mark.parametrize("hold, message", [("text", "MODALITY=WEIGHT"), ("text=abc", "MODALITY=WEIGHT"),
                                           ("text=0", "must be > 0"), ("text=0.5", "hold the others only")])
def test_weights_hold_flag_is_checked_before_any_work(hold, message):
    out = subprocess.run([sys.executable, "bench/weights.py", "--dataset", "nowhere", "--hold", hold], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_the_digits_sweep_scales_every_digit_and_the_popularity_sweep_only_adds_a_prior():
    from weights import DIGITS, POPULARITY, swept_settings

    base, counts = [1.0, 0.25, 1.0], np.array([0, 3, 10])
    digits = swept_settings(DIGITS, [1.0, 0.2], base, counts)
    assert digits[1.0] == (base, None) and digits[0.2] == ([0.2, 0.05, 0.2], None)
    prior = swept_settings(POPULARITY, [0.0, -2.0], base, counts)
    assert prior[0.0] == (base, None)
    assert prior[-2.0][0] == base and np.allclose(prior[-2.0][1], -2.0 * np.log1p(counts))
    out = subprocess.run([sys.executable, "bench/weights.py", "--dataset", "nowhere", "--digits", "0.5",
                          "--popularity", "-1"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "not both" in out.stderr


def test_the_digits_table_names_the_item_logit_weight_its_values_are_relative_to():
    from weights import DIGITS, markdown

    row = {"ndcg@10": 0.05, "recall@20": 0.1, "ndcg@10_by_target_seen": {"1-4": 0.02, "20+": 0.08}}
    result = {"dataset": "x", "modality": DIGITS, "chosen": 0.5, "held": {}, "trained_level_weights": [1.0, 0.25],
              "item_logit_weight": 5.0, "rows": [{"value": 1.0, "valid": row, "test": row},
                                                 {"value": 0.5, "valid": row, "test": row}]}
    table = markdown(result)
    assert "the item logit keeps the checkpoint's weight 5" in table and "| 0.5 (chosen) | valid | 0.0500" in table
    assert "item logit keeps" not in markdown(result | {"item_logit_weight": 1.0})


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


def test_popularity_buckets_and_per_bucket_metrics_by_hand():
    assert bucket_labels() == ["never", "1-4", "5-19", "20+"]
    assert popularity_bucket(np.array([0, 1, 4, 5, 19, 20, 300])).tolist() == [0, 1, 1, 2, 2, 3, 3]
    ranked = np.tile(np.arange(20), (4, 1))              # every user gets items 0..19 in order
    targets = np.array([0, 2, 30, 9])                    # ranks 1, 3, miss, 10
    buckets = np.array([3, 3, 1, 2])
    out = segment_metrics(ranked, targets, buckets, bucket_labels())
    assert out["never"] == {"n_users": 0, "share": 0.0}
    assert out["20+"]["n_users"] == 2 and out["20+"]["share"] == 0.5
    assert out["20+"]["ndcg@10"] == pytest.approx((1.0 + 1 / np.log2(4)) / 2)
    assert out["1-4"]["ndcg@10"] == 0.0 and out["1-4"]["recall@20"] == 0.0
    assert out["5-19"]["ndcg@10"] == pytest.approx(1 / np.log2(11)) and out["5-19"]["recall@20"] == 1.0


def test_summary_states_the_peer_budget_as_a_multiple_of_genrec_training_side():
    from summary import peer_minutes

    result = {"stages": {"prepare": 5.0, "embed": 100.0, "tokenize": 20.0, "train": 180.0, "evaluate": 9.0}}
    peer = {"fit_seconds": 600.0, "seconds": 300.0, "budget_seconds": 900.0}
    assert peer_minutes(peer, result) == "15.0 (fit+eval; fit budget 3× genrec's embed+tokenize+train)"
    assert peer_minutes({"fit_seconds": 60.0, "seconds": 0.0}, result) == "1.0 (fit+eval)"
    # a peer kept from an earlier genrec run states its budget against that run, not the current one
    earlier = {**peer, "genrec_training_side_seconds": 450.0, "genrec_commit": "abcdef0123"}
    assert peer_minutes(earlier, {**result, "git_commit": "9999999"}) == (
        "15.0 (fit+eval; fit budget 2× genrec's embed+tokenize+train of the run at abcdef0, 450 s)")


def test_a_genrec_rerun_keeps_the_peers_of_the_same_data_only():
    from run import carried_peers

    stats = {"n_users": 10, "n_items": 5, "n_interactions": 50, "format": "demo"}
    previous = {"dataset_stats": stats, "git_commit": "abc", "peers": {"cornac_tiger": {"ndcg@10": 0.01}},
                "stages": {"embed": 10.0, "tokenize": 2.0, "train": 30.0}}
    kept = carried_peers(previous, {"dataset_stats": dict(stats)})
    assert kept == {"cornac_tiger": {"ndcg@10": 0.01, "genrec_training_side_seconds": 42.0, "genrec_commit": "abc"}}
    # an entry that already names its reference keeps it; other data or no previous result keeps nothing
    previous["peers"]["cornac_tiger"].update(genrec_training_side_seconds=7.0, genrec_commit="old")
    assert carried_peers(previous, {"dataset_stats": stats})["cornac_tiger"]["genrec_commit"] == "old"
    assert carried_peers(previous, {"dataset_stats": {**stats, "n_users": 11}}) == {}
    assert carried_peers(None, {"dataset_stats": stats}) == {}


def test_seeds_resume_only_from_figures_kept_for_the_same_run_folder_build_and_settings(tmp_path):
    from seeds import keep_figures, kept_figures, seed_key

    figures = {"valid": {"ndcg@10": 0.05}, "test": {"ndcg@10": 0.04}}
    key = seed_key(tmp_path / "run", "genrec", {"train_config": {"lr": 0.005}, "seed": 1})
    keep_figures(tmp_path / "seed_1" / "genrec.json", key, figures, 12.5)
    kept = kept_figures(tmp_path / "seed_1" / "genrec.json", key)
    assert kept["valid"] == figures["valid"] and kept["train_seconds"] == 12.5
    for other in (seed_key(tmp_path / "run", "genrec", {"train_config": {"lr": 0.001}, "seed": 1}),
                  seed_key(tmp_path / "run", "genrec", {"train_config": {"lr": 0.005}, "seed": 2}),
                  seed_key(tmp_path / "other", "genrec", {"train_config": {"lr": 0.005}, "seed": 1})):
        assert kept_figures(tmp_path / "seed_1" / "genrec.json", other) is None
    # the folder rebuilt at the same path (a new machine): the same arrays keep the seeds, other codes do not
    (tmp_path / "run" / "sid").mkdir(parents=True)
    manifest = tmp_path / "run" / "sid" / "manifest.json"
    manifest.write_text('{"created": "now", "files": {"codes.npy": "aa", "report.png": "01"}}')
    built = seed_key(tmp_path / "run", "genrec", {"train_config": {"lr": 0.005}, "seed": 1})
    keep_figures(tmp_path / "seed_1" / "genrec.json", built, figures, 12.5)
    manifest.write_text('{"created": "later", "files": {"codes.npy": "aa", "report.png": "02"}}')
    same = seed_key(tmp_path / "run", "genrec", {"train_config": {"lr": 0.005}, "seed": 1})
    assert kept_figures(tmp_path / "seed_1" / "genrec.json", same)["valid"] == figures["valid"]
    manifest.write_text('{"created": "later", "files": {"codes.npy": "bb", "report.png": "02"}}')
    other_codes = seed_key(tmp_path / "run", "genrec", {"train_config": {"lr": 0.005}, "seed": 1})
    assert kept_figures(tmp_path / "seed_1" / "genrec.json", other_codes) is None
    (tmp_path / "seed_1" / "sasrec.json").write_text("{not json")
    assert kept_figures(tmp_path / "seed_1" / "sasrec.json", key) is None
    assert kept_figures(tmp_path / "seed_2" / "genrec.json", key) is None


def test_seeds_reuse_a_bench_model_only_while_the_run_folder_holds_the_table_run(tmp_path):
    from seeds import reusable_systems

    table = {"metrics": {"genrec": {"ndcg@10": 0.0374}, "sasrec": {"ndcg@10": 0.0367}}}
    (tmp_path / "Beauty.json").write_text(json.dumps(table))
    run = tmp_path / "run"
    run.mkdir()
    assert reusable_systems(run, tmp_path / "Beauty.json") == set()      # never evaluated
    (run / "metrics.json").write_text(json.dumps({"split": "test", "systems": table["metrics"]}))
    assert reusable_systems(run, tmp_path / "Beauty.json") == {"genrec", "sasrec"}
    # a later experiment retrained genrec in the same folder: only SASRec is still the table's
    (run / "metrics.json").write_text(json.dumps({"split": "test", "systems": {"genrec": {"ndcg@10": 0.0351},
                                                                          "sasrec": {"ndcg@10": 0.0367}}}))
    assert reusable_systems(run, tmp_path / "Beauty.json") == {"sasrec"}
    (run / "metrics.json").write_text(json.dumps({"split": "valid", "systems": table["metrics"]}))
    assert reusable_systems(run, tmp_path / "Beauty.json") == set()


def test_seed_means_reach_the_readme_only_while_they_measure_the_table_run():
    """A seeds JSON counts for the README's table only with the table run's config and, for the run's own
    seed, exactly the table's figures; otherwise the README shows a dash and RESULTS.md says why."""
    from summary import readme_table, seeds_outdated

    def per_seed(seed, g, s):
        return {"seed": seed, "genrec": {"test": {"ndcg@10": g}}, "sasrec": {"test": {"ndcg@10": s}}}

    def stat(values):
        return {"test": {"ndcg@10": {"mean": sum(values) / len(values), "n": len(values)}}}

    result = {"config": {"train": "configs/sparse.yaml"}, "metrics": {"genrec": {"ndcg@10": 0.05},
              "sasrec": {"ndcg@10": 0.04}, "popularity": {"ndcg@10": 0.01}},
              "dataset_stats": {"n_users": 10, "n_items": 5},
              "stages": dict.fromkeys(("prepare", "embed", "tokenize", "train", "evaluate"), 12.0)}
    seeds = {"train_config": "configs/sparse.yaml", "bench_run_seed": {"genrec": 0},
             "per_seed": [per_seed(0, 0.05, 0.04), per_seed(1, 0.06, 0.05)],
             "summary": {"systems": {"genrec": stat([0.05, 0.06]), "sasrec": stat([0.04, 0.05])}}}
    assert seeds_outdated(seeds, result) is None
    assert "| 0.0550 / 0.0450 (2 seeds) |" in readme_table({"X": result}, {"X": seeds})
    assert "configs/beauty.yaml" in seeds_outdated({**seeds, "train_config": "configs/beauty.yaml"}, result)
    moved = {**result, "metrics": {**result["metrics"], "genrec": {"ndcg@10": 0.051}}}
    assert "not the table's run" in seeds_outdated(seeds, moved)
    assert "(2 seeds)" not in readme_table({"X": moved}, {"X": seeds})
    assert "no row" in seeds_outdated({**seeds, "bench_run_seed": {"genrec": 7}}, result)


def test_results_md_is_what_summary_generates_from_the_committed_json():
    """bench/RESULTS.md is bench/summary.py's output for bench/results/*.json: no figure can drift from its JSON."""
    from summary import OUT, render

    assert OUT.read_text() == render(REPO / "bench" / "results"), (
        "bench/RESULTS.md is out of date with bench/results/*.json: run python bench/summary.py and commit it")


def test_readme_results_table_is_what_summary_generates_from_the_committed_json():
    """The README's one results table is generated too (between its marker lines), so it cannot drift either."""
    from summary import README, load_kind, load_results, readme_table, with_readme_table

    text, folder = README.read_text(), REPO / "bench" / "results"
    assert text == with_readme_table(text, readme_table(load_results(folder), load_kind(folder, "seeds"))), (
        "README.md's results table is out of date with bench/results/*.json: run python bench/summary.py")


def test_summary_reads_only_json_and_follows_it(tmp_path):
    """No torch import (fast, no training); a figure changed in a JSON changes RESULTS.md; --check notices."""
    import shutil

    results = tmp_path / "results"
    shutil.copytree(REPO / "bench" / "results", results, ignore=shutil.ignore_patterns("*.png", "*.md"))
    probe = ("import sys; sys.path.insert(0, 'bench'); import summary; from pathlib import Path; "
             f"text = summary.render(Path({str(results)!r})); assert text == summary.render(Path({str(results)!r})); "
             "assert 'torch' not in sys.modules, 'summary imported torch'; print(text)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    before = out.stdout
    office = json.loads((results / "Office.json").read_text())
    office["metrics"]["genrec"]["ndcg@10"] = 0.0123456
    (results / "Office.json").write_text(json.dumps(office))
    from summary import README_END, README_START, main, render

    after = render(results)
    assert "| Office | genrec | 0.0691 | 0.0999 | 0.1490 | 0.0469 | 0.0123 | 0.0691 |" in after and after != before
    (tmp_path / "RESULTS.md").write_text(before)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{README_START}\nold table\n{README_END}\n\nmore text\n")
    args = ["--results-dir", str(results), "--out", str(tmp_path / "RESULTS.md"), "--readme", str(readme)]
    assert main([*args, "--check"]) == 1
    assert main(args) == 0
    assert (tmp_path / "RESULTS.md").read_text() == after
    assert "old table" not in readme.read_text() and readme.read_text().endswith(f"{README_END}\n\nmore text\n")
    assert "| Office | 4,905 / 2,420 | 0.0123 |" in readme.read_text()
    assert main([*args, "--check"]) == 0


def test_summary_shows_both_protocols_only_for_runs_that_scored_both():
    from summary import protocol_section

    def metrics(ndcg, recall):
        return {"ndcg@10": ndcg, "recall@10": recall}

    both = {"git_commit": "abc1234567", "metrics": {"genrec": metrics(0.03, 0.06), "sasrec": metrics(0.036, 0.07)},
            "metrics_exclude_history": {"genrec": metrics(0.041, 0.08), "sasrec": metrics(0.052, 0.1)}}
    assert protocol_section({"Office": {"git_commit": "x", "metrics": both["metrics"]}}) == ""
    lines = protocol_section({"Beauty": both, "Office": {"git_commit": "x", "metrics": both["metrics"]}}).splitlines()
    rows = [line for line in lines if line.startswith("| Beauty")]
    assert rows == ["| Beauty | genrec | 0.0300 | 0.0410 | 0.0600 | 0.0800 | abc1234 |",
                    "| Beauty | SASRec (ours) | 0.0360 | 0.0520 | 0.0700 | 0.1000 | abc1234 |"]
    assert not any(line.startswith("| Office") for line in lines)


def test_steps_keep_each_step_together_in_the_order_steps_were_first_run(tmp_path):
    from summary import steps_section

    def result(dataset, step, when, genrec, sasrec, flags=()):
        return {"dataset": dataset, "step": step, "finished_at": when, "git_commit": "abc1234567",
                "config": {"train_args": list(flags)},
                "stages": {"prepare": 5.0, "embed": 540.0, "tokenize": 5.0, "train": 600.0, "evaluate": 50.0,
                           "evaluate_exclude_history": 60.0},   # not a pipeline stage: 20 minutes, not 21
                "train": {"best_val_ndcg@10": genrec + 0.01}, "metrics": {"genrec": {"ndcg@10": genrec},
                                                                         "sasrec": {"ndcg@10": sasrec}},
                "embed": {"modalities": {"collab": {"best_val": {"ndcg@10": sasrec + 0.01}}}}}

    assert steps_section(tmp_path) == ""
    (tmp_path / "steps").mkdir()
    for name, r in {"Sports_and_Outdoors__b": result("Sports_and_Outdoors", "b", "2026-01-03T00:00:00Z", 0.02, 0.021),
                    "Beauty__b": result("Beauty", "b", "2026-01-02T00:00:00Z", 0.04, 0.041, ["--x=1"]),
                    "Beauty__a": result("Beauty", "a", "2026-01-01T00:00:00Z", 0.03, 0.031),
                    "Sports_and_Outdoors__a": result("Sports_and_Outdoors", "a", "2026-01-04T00:00:00Z", 0.01, 0.011)
                    }.items():
        (tmp_path / "steps" / f"{name}.json").write_text(json.dumps(r))
    rows = [line for line in steps_section(tmp_path).splitlines() if line.startswith("| a") or line.startswith("| b")]
    assert rows == ["| a | Beauty | — | 0.0400 | 0.0300 | 0.0410 | 0.0310 | 20 | abc1234 |",
                    "| a | Sports_and_Outdoors | — | 0.0200 | 0.0100 | 0.0210 | 0.0110 | 20 | abc1234 |",
                    "| b | Beauty | `--x=1` | 0.0500 | 0.0400 | 0.0510 | 0.0410 | 20 | abc1234 |",
                    "| b | Sports_and_Outdoors | — | 0.0300 | 0.0200 | 0.0310 | 0.0210 | 20 | abc1234 |"]
