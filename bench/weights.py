"""Decoding weight of one modality's digits, chosen on validation, then measured once on test.

    python bench/weights.py --dataset Beauty --modality text --values 1 0.5 0.33 0.25 0.15   # ~7 min on Beauty
    python bench/weights.py --dataset Beauty --modality collab --values 1.5 0.75 --hold text=0.25
    python bench/weights.py --dataset Beauty --popularity -4 -3 -2 -1.5 -1 -0.5   # a popularity prior; ~5 min
    python bench/weights.py --dataset Beauty --digits 0.5 0.3 0.2 0.1   # every digit against the item logit

A parallel head trains each digit as its own softmax and decoding sums their log-probs as if they were
independent; the digits of one modality quantize one vector, so they are not. For each value v the run's
genrec checkpoint decodes with that modality's digit log-probs times v (the others 1, or --hold's;
genrec.decode.weighted, what `model.modality_weights` and `genrec evaluate --modality-weights` set) and ranks
the whole catalogue for every validation user. Only validation NDCG@10 picks v. Test is then read for the pick
and for v = 1, so the test gain is measured, not chosen. Each row also gives NDCG@10 per target-popularity
bucket (bench/segments.py's).

``--popularity B...`` varies a popularity prior instead: every item's score gains B * log(1 + its training
count) (GenRec.set_item_prior; search "rerank" only), the digit weights staying the checkpoint's (or --hold's).
B < 0 pushes rare items up. 0, the plain score, is always tried and read on test.
``--digits S...`` scales every digit's weight (the checkpoint's, or --hold's) by S, which ranks as the item
logit times 1/S: how much the digits count against the item logit (search "rerank" only; 1 always tried).
Writes bench/results/weights_NAME.json and .md (weights_NAME_MODALITY.* for a modality other than text,
weights_NAME_popularity.* for the prior, weights_NAME_digits.* for --digits).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from run import RESULTS, add_existing_run_args, default_run_dir, git_commit  # noqa: E402

METRICS = ("ndcg@10", "recall@20")
DEFAULT_MODALITY = "text"   # its table is weights_NAME.json; another modality's is weights_NAME_MODALITY.json
POPULARITY = "popularity"   # --popularity's sweep, written as weights_NAME_popularity.json
DIGITS = "digits"           # --digits' sweep (every digit against the item logit), weights_NAME_digits.json


def score(module, examples, counts, weights, prior=None) -> dict:
    """Decode ``examples`` with per-digit ``weights`` (and an item ``prior``) and return METRICS overall and
    NDCG@10 per bucket."""
    from genrec.evaluate import EvaluateConfig, evaluate_genrec
    from genrec.metrics import popularity_bucket_metrics, ranking_metrics

    module.set_level_weights(weights)
    module.set_item_prior(prior)
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
    verb = ("digit weights are" if result["modality"] == POPULARITY else
            "each value multiplies" if result["modality"] == DIGITS else "each value replaces")
    replaced = (f"; {verb} the checkpoint's own level weights {result['trained_level_weights']}"
                if result.get("trained_level_weights") and not result.get("held") else "")
    if result["modality"] == DIGITS and result.get("item_logit_weight", 1.0) != 1.0:
        replaced += f"; the item logit keeps the checkpoint's weight {result['item_logit_weight']:g}"
    held = ", ".join(f"{m} x {w:g}" for m, w in (result.get("held") or {}).items())
    replaced += f"; held fixed: {held}" if held else ""
    what = ("popularity prior B x log(1 + training count)" if result["modality"] == POPULARITY
            else "every digit's weight against the item logit" if result["modality"] == DIGITS
            else f"decoding weight of the {result['modality']} digits")
    plain = 0 if result["modality"] == POPULARITY else 1
    lines = [f"**{result['dataset']}: {what}** (validation picks "
             f"{result['chosen']}; test is read for the pick and for {plain} only{replaced})", "",
             "| weight | split | NDCG@10 | Recall@20 | "
             + " | ".join(f"NDCG@10, target seen {b}" for b in labels) + " |",
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


def swept_settings(modality: str, values: list[float], base: list[float], counts) -> dict:
    """value -> (per-digit weights, item prior | None) for --popularity (base weights, prior B x log(1 + count))
    or --digits (base weights times S, no prior)."""
    import numpy as np

    if modality == POPULARITY:
        return {v: (base, v * np.log1p(counts) if v else None) for v in values}
    return {v: ([w * v for w in base], None) for v in values}


def run_weights(dataset: str, run_dir: Path, modality: str, values: list[float], results: Path = RESULTS,
                hold: dict[str, float] | None = None) -> dict:
    """Sweep ``modality``'s digit weight over ``values``, or (modality POPULARITY) the popularity prior's B."""
    import numpy as np
    import torch

    from genrec.baselines import popularity_counts
    from genrec.data.dataset import load_dataset
    from genrec.evaluate import EvaluateConfig, load_genrec
    from genrec.io import write_json_atomic, write_text_atomic
    from genrec.tokenizer.semantic_ids import load_semantic_ids

    torch.manual_seed(0)
    ds = load_dataset(run_dir)
    sid = load_semantic_ids(run_dir)
    module, ckpt = load_genrec(run_dir)
    counts = popularity_counts(ds.split.train, ds.n_items)
    trained = module.config.level_weights
    hold = dict(hold or {})
    popularity = modality == POPULARITY
    plain = 0.0 if popularity else 1.0
    values = sorted(set(values) | {plain}, reverse=True)
    if modality in (POPULARITY, DIGITS):
        if module.default_search(EvaluateConfig().search) != "rerank":
            what = ("a popularity prior is added to" if popularity
                    else "the digits are weighed against the item logit in")
            raise ValueError(f"{ckpt} decodes with search {module.default_search(EvaluateConfig().search)!r}; "
                             f"{what} search 'rerank' scores only (a model trained with --model.item_loss_weight 1)")
        base = sid.level_weights(hold) if hold else trained
    if modality in (POPULARITY, DIGITS):
        settings = swept_settings(modality, values, base or [1.0] * len(module.level_sizes), counts)
    else:
        # raises on an unknown modality
        settings = {v: (sid.level_weights({**hold, modality: v}), None) for v in values}
    t0 = time.perf_counter()
    rows = []
    for v in values:
        rows.append({"value": v, "level_weights": settings[v][0],
                     "valid": score(module, ds.split.valid, counts, *settings[v])})
        print(f"{modality} x {v:g}: valid NDCG@10 {rows[-1]['valid']['ndcg@10']:.4f}", flush=True)
    best = max(rows, key=lambda r: (r["valid"]["ndcg@10"], r["value"] == plain))   # a tie keeps the plain score
    for row in rows:
        if row is best or row["value"] == plain:
            row["test"] = score(module, ds.split.test, counts, *settings[row["value"]])
    out = {"dataset": dataset, "run": str(run_dir), "checkpoint": str(ckpt), "git_commit": git_commit(),
           "modality": modality, "held": hold, "modalities": sid.modalities, "trained_level_weights": trained,
           "item_logit_weight": module.config.item_logit_weight,   # what --digits' values are relative to
           "chosen": best["value"], "selected_by": "validation ndcg@10", "rows": rows,
           "gain": {split: best[split]["ndcg@10"] - next(r for r in rows if r["value"] == plain)[split]["ndcg@10"]
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
    p.add_argument("--popularity", type=float, nargs="+", metavar="B",
                   help="vary a popularity prior B x log(1 + training count) instead (0 is always tried; search "
                        "'rerank' checkpoints only); the digit weights are the checkpoint's, or --hold's")
    p.add_argument("--digits", type=float, nargs="+", metavar="S",
                   help="scale every digit's weight (the checkpoint's, or --hold's) by S instead, against the item "
                        "logit (1 is always tried; search 'rerank' checkpoints only)")
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
    if a.popularity is not None and a.digits is not None:
        p.error("give --popularity or --digits, not both")
    if a.digits is not None:
        a.modality, a.values = DIGITS, a.digits
    if a.popularity is not None:
        a.modality, a.values = POPULARITY, a.popularity
        if not all(math.isfinite(v) for v in a.values):
            p.error(f"--popularity values must be finite, got {a.values}")
    elif a.modality in hold and a.modality != DIGITS:   # checked before the checkpoint is loaded
        p.error(f"--hold names {a.modality!r}, the modality whose weight is varied; hold the others only")
    run_dir = a.run_dir or default_run_dir(a.dataset)
    if not (run_dir / "checkpoints").exists():
        raise SystemExit(f"{run_dir}/checkpoints not found: run `python bench/run.py --dataset {a.dataset}` first")
    if a.modality != POPULARITY and any(not v > 0 for v in a.values):
        raise SystemExit(f"--values must all be > 0, got {a.values}")
    try:
        run_weights(a.dataset, run_dir, a.modality, a.values, a.results_dir, hold)
    except ValueError as e:
        raise SystemExit(f"bench/weights.py: {e}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
