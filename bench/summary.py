"""Collect every dataset's bench result into one table and one plot (what the README shows).

    python bench/summary.py        # reads bench/results/NAME.json, writes bench/results/summary.md and .png

It runs nothing: the figures are those bench/run.py and bench/cornac_tiger.py wrote, so the table
and the plot always agree with the JSON files they come from.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from run import RESULTS, training_side_seconds, validate_result  # noqa: E402

DATASET_ORDER = ("Beauty", "Sports_and_Outdoors", "Office", "Scientific", "Scientific_DeCoRec_mm")
SYSTEM_LABELS = {"genrec": "genrec", "sasrec": "SASRec (ours)", "popularity": "popularity",
                 "cornac_tiger": "cornac TIGER (PAISCHER recipe)", "cornac_tiger_grid": "cornac TIGER (GRID recipe)"}


def load_results(folder: Path) -> dict[str, dict]:
    """dataset -> result, for every NAME.json in ``folder`` that is a full results-table row."""
    found = {}
    for path in sorted(folder.glob("*.json")):
        result = json.loads(path.read_text())
        try:
            validate_result(result)
        except ValueError:
            continue   # embed.json, serve.json, ablation_*.json, tokenizer_*.json are other kinds of result
        if result["dataset"] != "smoke":
            found[result["dataset"]] = result
    order = {name: i for i, name in enumerate(DATASET_ORDER)}
    return dict(sorted(found.items(), key=lambda kv: order.get(kv[0], len(order))))


def systems_of(result: dict) -> dict[str, dict]:
    """Every system in one result (the peers too), in SYSTEM_LABELS order."""
    found = {**result["metrics"], **result.get("peers", {})}
    return {s: found[s] for s in sorted(found, key=lambda s: list(SYSTEM_LABELS).index(s) if s in SYSTEM_LABELS
                                        else len(SYSTEM_LABELS))}


def peer_minutes(peer: dict, result: dict) -> str:
    """A peer's fit + evaluation minutes, with its fit budget as a multiple of genrec's training side."""
    cell = f"{(peer['fit_seconds'] + peer['seconds']) / 60:.1f} (fit+eval"
    genrec_side = peer.get("genrec_training_side_seconds") or training_side_seconds(result)
    if peer.get("budget_seconds") and genrec_side > 0:
        cell += f"; fit budget {peer['budget_seconds'] / genrec_side:.0f}× genrec's embed+tokenize+train"
        if peer.get("genrec_commit") not in (None, result.get("git_commit")):
            cell += f" of the run at {peer['genrec_commit'][:7]}, {genrec_side:.0f} s"
    return cell + ")"


def table(results: dict[str, dict]) -> str:
    lines = ["| dataset | system | Recall@5 | Recall@10 | Recall@20 | NDCG@5 | NDCG@10 | NDCG@20 | invalid | "
             "pipeline min |", "|---|---|---|---|---|---|---|---|---|---|"]
    for dataset, result in results.items():
        pipeline_min = sum(result["stages"].values()) / 60
        for system, m in systems_of(result).items():
            cells = [f"{m[f'{kind}@{k}']:.4f}" for kind in ("recall", "ndcg") for k in (5, 10, 20)]
            minutes = (f"{pipeline_min:.1f}" if system == "genrec" else peer_minutes(m, result) if "fit_seconds" in m
                       else "")
            lines.append(f"| {dataset} | {SYSTEM_LABELS.get(system, system)} | " + " | ".join(cells)
                         + f" | {m['invalid_rate']:g} | {minutes} |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, dict], out: Path) -> Path:
    import matplotlib.pyplot as plt
    import numpy as np

    from genrec.plots import save_png

    systems = [s for s in SYSTEM_LABELS if any(s in systems_of(r) for r in results.values())]
    datasets = list(results)
    width = 0.8 / max(1, len(systems))
    fig, ax = plt.subplots(figsize=(max(5, 1.8 * len(datasets) + 2), 3.6))
    x = np.arange(len(datasets))
    for i, system in enumerate(systems):
        values = [systems_of(results[d]).get(system, {}).get("ndcg@10", np.nan) for d in datasets]
        bars = ax.bar(x + (i - (len(systems) - 1) / 2) * width, values, width, label=SYSTEM_LABELS[system])
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=1)
    ax.set_xticks(x, datasets)
    ax.set_ylabel("test NDCG@10 (full ranking)")
    ax.set_title("genrec vs baselines, same run per dataset (bench/run.py)")
    ax.legend(fontsize=8)
    return save_png(fig, out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/summary.py", description=__doc__.strip().splitlines()[0])
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    from genrec.io import write_text_atomic

    results = load_results(a.results_dir)
    if not results:
        raise SystemExit(f"no results in {a.results_dir}: run python bench/run.py --dataset NAME first")
    text = table(results)
    write_text_atomic(a.results_dir / "summary.md", text)
    plot(results, a.results_dir / "summary.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
