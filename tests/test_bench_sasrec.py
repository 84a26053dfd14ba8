"""bench/sasrec.py --smoke trains its SASRec variants on the demo and writes the JSON the report is built from."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from genrec.lit.sasrec import SASRecTrainConfig

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from sasrec import (SMOKE_OVERRIDES, SMOKE_VARIANTS, base_setting, changed_fields, prepared_run,  # noqa: E402
                    resolved_base, run_variant, select, stage_row)

METRICS = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20")


def test_select_reads_validation_only():
    rows = {"a": {"valid": {"ndcg@10": 0.02}, "test": {"ndcg@10": 0.09}},
            "b": {"valid": {"ndcg@10": 0.03}, "test": {"ndcg@10": 0.01}}}
    assert select(rows) == "b"


def test_changed_fields_compare_trained_configs_with_the_current_base():
    """A row kept from an older bench setting names what it differs in, even settings it never asked for."""
    from dataclasses import asdict

    base = resolved_base({"batching": "random"}, max_items=20)
    assert base["resolved"] == asdict(SASRecTrainConfig(batching="random", eval_max_items=20))
    old_default = {k: v for k, v in asdict(SASRecTrainConfig(eval_max_items=20)).items() if k != "batching"}
    assert changed_fields(old_default, base) == "batching=length"      # missing field: its dataclass default
    again = {**base["resolved"], "dropout": 0.5, "progress_bar": False, "num_threads": 2}
    assert changed_fields(again, base) == "dropout=0.5"
    assert changed_fields(base["resolved"], base) == ""


def test_help_names_the_variants():
    out = subprocess.run([sys.executable, "bench/sasrec.py", "--help"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "--variants" in out.stdout and "dropout0.5" in out.stdout


def test_smoke_writes_every_variant_with_valid_and_test(tmp_path):
    results = tmp_path / "results"
    args = [sys.executable, "bench/sasrec.py", "--smoke", "--run-dir", str(tmp_path / "run"),
            "--results-dir", str(results)]
    out = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads((results / "sasrec_smoke.json").read_text())
    for key in ("dataset", "git_commit", "machine", "dataset_stats", "base", "selection", "variants", "selected"):
        assert key in result, key
    assert list(result["variants"]) == list(SMOKE_VARIANTS)
    for name, row in result["variants"].items():
        for split in ("valid", "test"):
            assert set(METRICS) <= set(row[split]) and all(0.0 <= row[split][m] <= 1.0 for m in METRICS)
        assert 1 <= row["epochs"] <= 2 and 0 <= row["best_epoch"] < row["epochs"] and row["train_seconds"] >= 0
        assert row["config"]["eval_max_items"] == result["dataset_stats"]["max_items"]   # the protocol's length
        assert row["config"]["dropout"] == row["fields"].get("dropout", SASRecTrainConfig().dropout)
    best = max(result["variants"].values(), key=lambda r: r["valid"]["ndcg@10"])
    assert result["variants"][result["selected"]] is not None and best["valid"]["ndcg@10"] == \
        result["variants"][result["selected"]]["valid"]["ndcg@10"]
    assert (results / "sasrec_smoke.md").read_text().startswith("**smoke: SASRec variants")

    # Re-running one variant keeps the other one's row (a long grid is run a few variants at a time).
    kept = result["variants"][SMOKE_VARIANTS[0]]
    out = subprocess.run(args + ["--variants", SMOKE_VARIANTS[1]], cwd=REPO, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    again = json.loads((results / "sasrec_smoke.json").read_text())
    assert again["variants"][SMOKE_VARIANTS[0]] == kept and list(again["variants"]) == list(SMOKE_VARIANTS)


def test_the_base_row_from_the_run_stage_equals_a_retrain(tmp_path):
    """--base-from-run scores the run's own SASRec stage instead of retraining it: the same row, bar its cost."""
    from genrec.data.dataset import load_dataset
    from genrec.features.stage import EmbedConfig, embed

    _, base, (raw, stages_cfg) = base_setting("smoke", smoke=True)
    run = prepared_run("smoke", True, tmp_path / "run", raw, stages_cfg)
    dataset, fields = load_dataset(run), {**base, **SMOKE_OVERRIDES}
    assert stage_row("default", fields, dataset, run) is None                  # no stage yet: retrain
    embed(run, EmbedConfig(text={"enabled": False}, image={"enabled": False}, sasrec=SASRecTrainConfig(**fields),
                           progress=False))
    assert stage_row("default", {**fields, "dropout": 0.5}, dataset, run) is None   # other settings: retrain
    reused, retrained = stage_row("default", fields, dataset, run), run_variant("default", fields, dataset, run)
    for key in ("valid", "test", "epochs", "best_epoch", "n_train_windows", "config", "fields"):
        assert reused[key] == retrained[key], key
    assert reused["from_run_stage"].startswith("features/sasrec/sasrec.pt")
