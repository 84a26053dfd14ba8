"""Where genrec and SASRec differ: metrics per target-popularity bucket, on validation and test.

    python bench/segments.py --dataset Beauty      # reads bench/runs/Beauty (run bench/run.py first); ~2 min

Each user's target is bucketed by how often that item occurs in the training split (as input or
target: every item of split.train): never, 1-4, 5-19 or 20+ times; the buckets and their metrics are
`genrec evaluate`'s own (genrec.metrics.popularity_bucket / slice_metrics, stored in metrics.json
as systems.NAME.beyond.by_target_popularity for the evaluated split). For every bucket and split the
script ranks the full catalogue with the run's genrec checkpoint and its SASRec (the same models
and settings as `genrec evaluate`), and reports the bucket's share of users and each system's
NDCG@10 and Recall@20 there. A model that is strong on popular targets and weak on rare ones
loses more on a split whose targets are rarer. Writes bench/results/segments_NAME.json and .md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from run import RESULTS, add_existing_run_args, default_run_dir, git_commit  # noqa: E402

from genrec.metrics import POPULARITY_EDGES as EDGES  # noqa: E402
from genrec.metrics import bucket_labels, popularity_bucket, ranking_metrics, slice_metrics  # noqa: E402

SHOWN = ("ndcg@10", "recall@20")


def segment_metrics(ranked: np.ndarray, targets: np.ndarray, buckets: np.ndarray,
                    labels: list[str]) -> dict[str, dict]:
    """label -> {n_users, share, metrics of SHOWN} over the users whose target falls in that bucket
    (genrec.metrics.slice_metrics, as `genrec evaluate` computes it; an empty bucket has no metric)."""
    ks = sorted({int(name.split("@")[1]) for name in SHOWN})
    out = {}
    for index, label in enumerate(labels):
        entry = slice_metrics(ranked, targets, buckets == index, ks)
        out[label] = {key: value for key, value in entry.items() if key in ("n_users", "share", *SHOWN)}
    return out


def markdown(dataset: str, result: dict) -> str:
    systems = result["systems"]
    lines = [f"**{dataset}: metrics by how often the target occurs in the training split**", "",
             "| split | target seen | users | " + " | ".join(f"{s} {m}" for s in systems for m in SHOWN) + " |",
             "|---|---|---|" + "---|" * (len(systems) * len(SHOWN))]
    for split, buckets in result["splits"].items():
        for label, row in buckets.items():
            cells = [f"{row['systems'][s].get(m, float('nan')):.4f}" for s in systems for m in SHOWN]
            lines.append(f"| {split} | {label} | {row['n_users']} ({row['share']:.0%}) | " + " | ".join(cells) + " |")
        cells = [f"{result['overall'][split][s][m]:.4f}" for s in systems for m in SHOWN]
        lines.append(f"| {split} | all | {result['overall'][split]['n_users']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_segments(dataset: str, run_dir: Path, results: Path = RESULTS) -> dict:
    import torch

    from genrec.baselines import popularity_counts
    from genrec.data.dataset import load_dataset
    from genrec.evaluate import SASREC_EVAL_BATCH, EvaluateConfig, evaluate_genrec, load_genrec, sasrec_baseline
    from genrec.io import write_json_atomic, write_text_atomic
    from genrec.lit.sasrec import evaluate_sasrec

    torch.manual_seed(0)
    ds = load_dataset(run_dir)
    counts = popularity_counts(ds.split.train, ds.n_items)     # what `genrec evaluate` buckets targets by
    config = EvaluateConfig()
    module, ckpt = load_genrec(run_dir, config.checkpoint)
    sasrec, sasrec_max_items = sasrec_baseline(run_dir, ds)
    labels = bucket_labels()
    systems = ("genrec", "sasrec")
    out = {"dataset": dataset, "run": str(run_dir), "checkpoint": str(ckpt), "git_commit": git_commit(),
           "edges": list(EDGES), "systems": list(systems), "splits": {}, "overall": {}}
    t0 = time.perf_counter()
    for split in ("valid", "test"):
        examples = getattr(ds.split, split)
        ranked = {"genrec": evaluate_genrec(module, examples, config),
                  "sasrec": evaluate_sasrec(sasrec, examples, ds.n_items, sasrec_max_items, SASREC_EVAL_BATCH,
                                            exclude_history=config.exclude_history, progress=False)[0]}
        buckets = popularity_bucket(counts[examples.targets])
        per_system = {s: segment_metrics(ranked[s], examples.targets, buckets, labels) for s in systems}
        # Bucket sizes are the same for every system (same targets); keep them once per bucket.
        out["splits"][split] = {label: {"n_users": per_system["genrec"][label]["n_users"],
                                        "share": per_system["genrec"][label]["share"],
                                        "systems": {s: {m: per_system[s][label][m] for m in SHOWN
                                                        if m in per_system[s][label]} for s in systems}}
                                for label in labels}
        overall = {s: ranking_metrics(ranked[s], examples.targets) for s in systems}
        out["overall"][split] = {"n_users": len(examples)} | {s: {m: overall[s][m] for m in SHOWN} for s in systems}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    results.mkdir(parents=True, exist_ok=True)
    write_json_atomic(results / f"segments_{dataset}.json", out)
    write_text_atomic(results / f"segments_{dataset}.md", markdown(dataset, out))
    print(markdown(dataset, out))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/segments.py", description=__doc__.strip().splitlines()[0])
    add_existing_run_args(p)
    a = p.parse_args(argv)
    run_dir = a.run_dir or default_run_dir(a.dataset)
    if not (run_dir / "checkpoints").exists():
        raise SystemExit(f"{run_dir}/checkpoints not found: run `python bench/run.py --dataset {a.dataset}` first")
    run_segments(a.dataset, run_dir, a.results_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
