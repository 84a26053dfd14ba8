"""Decoding weight of one modality's digits, chosen on validation, then measured once on test.

    python bench/weights.py --dataset Beauty --modality text --values 1 0.5 0.33 0.25 0.15   # ~7 min on Beauty
    python bench/weights.py --dataset Beauty --modality collab --values 1.5 0.75 --hold text=0.25

A parallel head trains each digit as its own softmax and decoding sums their log-probs as if they were
independent; the digits of one modality quantize one vector, so they are not. For each value v the run's
genrec checkpoint decodes with that modality's digit log-probs times v (the others 1, or --hold's;
genrec.decode.weighted, what `model.modality_weights` and `genrec evaluate --modality-weights` set) and ranks
the whole catalogue for every validation user. Only validation NDCG@10 picks v. Test is then read for the pick
and for v = 1, so the test gain is measured, not chosen. Each row also gives NDCG@10 per target-popularity
bucket (bench/segments.py's).
Writes bench/results/weights_NAME.json and .md (weights_NAME_MODALITY.* for a modality other than text).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from run import RESULTS, add_existing_run_args, default_run_dir, git_commit  # noqa: E402

METRICS = ("ndcg@10", "recall@20")
DEFAULT_MODALITY = "text"   # its table is weights_NAME.json; another modality's is weights_NAME_MODALITY.json


def score(module, examples, counts, weights) -> dict:
    """Decode ``examples`` with per-digit ``weights`` and return METRICS overall and NDCG@10 per bucket."""
    from genrec.evaluate import EvaluateConfig, evaluate_genrec
    from genrec.metrics import popularity_bucket_metrics, ranking_metrics

    module.set_level_weights(weights)
    t0 = time.perf_counter()
    ranked = evaluate_genrec(module, examples, EvaluateConfig())
    overall = ranking_metrics(ranked, examples.targets)
    per_bucket = {label: entry.get("ndcg@10")
                  for label, entry in popularity_bucket_metrics(ranked, examples.targets, counts, ks=[10]).items()}
    return {m: overall[m] for m in METRICS} | {"ndcg@10_by_target_seen": per_bucket,
                                               "seconds": round(time.perf_counter() - t0, 1)}


def markdown(result: dict) -> str:
    from genrec.metrics import bucket_labels

    present = result["rows"][0]["valid"]["ndcg@10_by_target_seen"]
    labels = [b for b in bucket_labels() if b in present]           # the JSON's keys are sorted as text
    replaced = (f"; each value replaces the checkpoint's own level weights {result['trained_level_weights']}"
                if result.get("trained_level_weights") else "")
    held = ", ".join(f"{m} x {w:g}" for m, w in (result.get("held") or {}).items())
    replaced += f"; held fixed: {held}" if held else ""
    lines = [f"**{result['dataset']}: decoding weight of the {result['modality']} digits** (validation picks "
             f"{result['chosen']}; test is read for the pick and for 1 only{replaced})", "",
             "| weight | split | NDCG@10 | Recall@20 | " + " | ".join(f"NDCG@10, target seen {b}" for b in labels) + " |",
             "|---|---|---|---|" + "---|" * len(labels)]
    for row in result["rows"]:
        for split in ("valid", "test"):
            if split in row:
                r = row[split]
                by = [f"{r['ndcg@10_by_target_seen'][b]:.4f}" if r["ndcg@10_by_target_seen"][b] is not None else "–"
                      for b in labels]
                mark = " (chosen)" if row["value"] == result["chosen"] else ""
                lines.append(f"| {row['value']:g}{mark} | {split} | {r['ndcg@10']:.4f} | {r['recall@20']:.4f} | "
                             + " | ".join(by) + " |")
    return "\n".join(lines) + "\n"


def run_weights(dataset: str, run_dir: Path, modality: str, values: list[float], results: Path = RESULTS,
                hold: dict[str, float] | None = None) -> dict:
    import torch

    from genrec.baselines import popularity_counts
    from genrec.data.dataset import load_dataset
    from genrec.evaluate import load_genrec
    from genrec.io import write_json_atomic, write_text_atomic
    from genrec.tokenizer.semantic_ids import load_semantic_ids

    torch.manual_seed(0)
    ds = load_dataset(run_dir)
    sid = load_semantic_ids(run_dir)
    module, ckpt = load_genrec(run_dir)
    counts = popularity_counts(ds.split.train, ds.n_items)
    trained = module.config.level_weights
    values = sorted(set(values) | {1.0}, reverse=True)
    hold = dict(hold or {})
    weights = {v: sid.level_weights({**hold, modality: v}) for v in values}   # raises on an unknown modality
    t0 = time.perf_counter()
    rows = []
    for v in values:
        rows.append({"value": v, "level_weights": weights[v], "valid": score(module, ds.split.valid, counts, weights[v])})
        print(f"{modality} x {v:g}: valid NDCG@10 {rows[-1]['valid']['ndcg@10']:.4f}", flush=True)
    best = max(rows, key=lambda r: (r["valid"]["ndcg@10"], r["value"] == 1.0))   # a tie keeps the plain sum
    for row in rows:
        if row is best or row["value"] == 1.0:
            row["test"] = score(module, ds.split.test, counts, weights[row["value"]])
    out = {"dataset": dataset, "run": str(run_dir), "checkpoint": str(ckpt), "git_commit": git_commit(),
           "modality": modality, "held": hold, "modalities": sid.modalities, "trained_level_weights": trained,
           "chosen": best["value"], "selected_by": "validation ndcg@10", "rows": rows,
           "gain": {split: best[split]["ndcg@10"] - next(r for r in rows if r["value"] == 1.0)[split]["ndcg@10"]
                    for split in ("valid", "test")},
           "seconds": round(time.perf_counter() - t0, 1)}
    results.mkdir(parents=True, exist_ok=True)
    stem = f"weights_{dataset}" if modality == DEFAULT_MODALITY else f"weights_{dataset}_{modality}"
    write_json_atomic(results / f"{stem}.json", out)
    write_text_atomic(results / f"{stem}.md", markdown(out))
    print(markdown(out))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/weights.py", description=__doc__.strip().splitlines()[0])
    add_existing_run_args(p)
    p.add_argument("--modality", default=DEFAULT_MODALITY,
                   help="whose digits are weighted (a name in RUN/sid's modalities; 'fused' for fused codes)")
    p.add_argument("--values", type=float, nargs="+", default=[1.0, 0.5, 0.33, 0.25, 0.15],
                   help="weights tried on validation (1 is always tried)")
    p.add_argument("--hold", nargs="+", default=[], metavar="MODALITY=WEIGHT",
                   help="other modalities' weights, fixed while --modality's varies (default: 1)")
    a = p.parse_args(argv)
    hold = {}
    for item in a.hold:
        name, _, value = item.partition("=")
        try:
            hold[name] = float(value)
        except ValueError:
            p.error(f"--hold takes MODALITY=WEIGHT, e.g. text=0.25; got {item!r}")
        if not hold[name] > 0:
            p.error(f"--hold weights must be > 0, got {item!r}")
    if a.modality in hold:   # checked before the checkpoint is loaded
        p.error(f"--hold names {a.modality!r}, the modality whose weight is varied; hold the others only")
    run_dir = a.run_dir or default_run_dir(a.dataset)
    if not (run_dir / "checkpoints").exists():
        raise SystemExit(f"{run_dir}/checkpoints not found: run `python bench/run.py --dataset {a.dataset}` first")
    if any(not v > 0 for v in a.values):
        raise SystemExit(f"--values must all be > 0, got {a.values}")
    try:
        run_weights(a.dataset, run_dir, a.modality, a.values, a.results_dir, hold)
    except ValueError as e:
        raise SystemExit(f"bench/weights.py: {e}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
