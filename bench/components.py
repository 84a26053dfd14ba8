"""Which part of genrec's score finds which targets: NDCG@10 per target-popularity bucket, ranking by one part.

    python bench/components.py --dataset Beauty      # reads bench/runs/Beauty (bench/run.py first); ~3 min

A parallel head scores item i as sum_d w_d logp_d(code_d(i)) + h . e_i: one group of digits per modality
(each modality's own product quantizer), a dedup digit, and (search "rerank") the item logit. This script
ranks the whole catalogue for every validation user by each part alone (a modality's digits unweighted, or the
item logit), by the full score as decoded (which reproduces `genrec evaluate`'s ranking: a test checks it),
and by the digits plus the item logit times each ``--item-logit-weights`` value. For each ranking it reports
NDCG@10 overall and per target-popularity bucket (bench/segments.py's), and each bucket's median target rank.
History items stay in the ranking, as in the results table. Only validation is read; nothing is retrained.
Writes bench/results/components_NAME.json and .md.
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

BATCH = 256
AS_DECODED = "full score, as decoded"
ITEM_LOGIT = "item logit"


def component_scores(model, hist, users, modalities: list[str], n_levels: int,
                     item_logit_weights: tuple[float, ...] = ()) -> dict[str, np.ndarray]:
    """name -> (B, N) float64 score of every item under that part of a parallel head's score.

    Modality digits are summed unweighted; AS_DECODED is the model's own score (its level weights, item
    logit when it was trained with one, and item prior); "digits + a x item logit" rows reweigh the last.
    """
    import torch

    codes = model.trie.item_codes                                     # (N, D)
    weights = model.config.level_weights or [1.0] * codes.shape[1]
    trained = model.config.level_weights
    model.set_level_weights(None)                                     # the raw log-probs; restored below
    try:
        with torch.inference_mode():
            step = model.step(hist, users)
            state = step.state              # before any code step, which may replace it (what the item loss scores)
            rows, zeros = np.arange(len(hist)), np.zeros(len(hist), dtype=np.int64)
            logp = [np.asarray(step(level, rows, None if level == 0 else zeros), dtype=np.float64)[:, codes[:, level]]
                    for level in range(codes.shape[1])]               # D x (B, N): each item's log-prob per digit
            table = model.logit_table().float()     # times the decoding weight of the item logit
    finally:
        model.set_level_weights(trained)
    out = {f"{name} digits": sum(logp[i * n_levels:(i + 1) * n_levels]) for i, name in enumerate(modalities)}
    digits = sum(w * lp for w, lp in zip(weights, logp))
    with_logit = model.item_loss_weight is None or model.item_loss_weight > 0
    if with_logit:
        logit = (state.float() @ table.T).double().cpu().numpy()
        out[ITEM_LOGIT] = logit
        for a in item_logit_weights:
            out[f"digits + {a:g} x item logit"] = digits + a * logit
    prior = 0.0 if model.item_prior is None else model.item_prior
    out[AS_DECODED] = digits + (out[ITEM_LOGIT] if with_logit else 0.0) + prior
    return out


def target_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of each target among all items, ties to the lower item id (as every genrec search)."""
    t = scores[np.arange(len(targets)), targets][:, None]
    ids = np.arange(scores.shape[1])[None, :]
    return 1 + (scores > t).sum(1) + ((scores == t) & (ids < targets[:, None])).sum(1)


def run_components(dataset: str, run_dir: Path, results: Path = RESULTS,
                   item_logit_weights: tuple[float, ...] = (), max_users: int | None = None) -> dict:
    import torch
    from tqdm.auto import tqdm

    from genrec.baselines import popularity_counts
    from genrec.data.dataset import load_dataset
    from genrec.data.split import left_pad
    from genrec.evaluate import load_genrec
    from genrec.io import write_json_atomic, write_text_atomic
    from genrec.metrics import bucket_labels, ndcg_gains, popularity_bucket
    from genrec.tokenizer.semantic_ids import load_semantic_ids

    ds = load_dataset(run_dir)
    sid = load_semantic_ids(run_dir)
    model, ckpt = load_genrec(run_dir)
    if not model.parallel:
        raise ValueError(f"{ckpt} has an autoregressive head: a digit's log-prob depends on the codes before it, "
                         "so the score does not split into parts; this needs a parallel head (PQ codes)")
    model.eval()
    examples = ds.split.valid
    n = len(examples) if max_users is None else min(max_users, len(examples))
    counts = popularity_counts(ds.split.train, ds.n_items)
    ranks: dict[str, list[np.ndarray]] = {}
    t0 = time.perf_counter()
    with torch.inference_mode():
        for start in tqdm(range(0, n, BATCH), desc="scoring by part", unit="batch"):
            stop = min(start + BATCH, n)
            hist = torch.as_tensor(left_pad(examples.histories[start:stop], model.max_items))
            users = torch.as_tensor(examples.user_ids[start:stop])
            for name, scores in component_scores(model, hist, users, sid.modalities, sid.n_levels,
                                                 item_logit_weights).items():
                ranks.setdefault(name, []).append(target_ranks(scores, np.asarray(examples.targets[start:stop])))
    buckets = popularity_bucket(counts[np.asarray(examples.targets[:n])])
    labels = bucket_labels()
    rows = {}
    for name, parts in ranks.items():
        r = np.concatenate(parts)
        gains = ndcg_gains(r, 10)
        rows[name] = {"ndcg@10": float(gains.mean()),
                      "by_target_seen": {lab: {"n_users": int((buckets == i).sum()),
                                               "ndcg@10": float(gains[buckets == i].mean()),
                                               "median_rank": float(np.median(r[buckets == i]))}
                                         for i, lab in enumerate(labels) if (buckets == i).any()}}
    out = {"dataset": dataset, "run": str(run_dir), "checkpoint": str(ckpt), "git_commit": git_commit(),
           "split": "valid", "n_users": n, "modalities": sid.modalities,
           "level_weights": model.config.level_weights, "history_in_ranking": True, "rows": rows,
           "seconds": round(time.perf_counter() - t0, 1)}
    results.mkdir(parents=True, exist_ok=True)
    write_json_atomic(results / f"components_{dataset}.json", out)
    write_text_atomic(results / f"components_{dataset}.md", markdown(out))
    print(markdown(out))
    return out


def markdown(result: dict) -> str:
    from genrec.metrics import bucket_labels

    first = next(iter(result["rows"].values()))["by_target_seen"]
    labels = [b for b in bucket_labels() if b in first]
    lines = [f"**{result['dataset']}: validation NDCG@10 ranking by one part of genrec's score** "
             f"({result['n_users']} users, history items kept; median target rank per bucket in brackets)", "",
             "| ranked by | all | " + " | ".join(f"target seen {b}" for b in labels) + " |",
             "|---|---|" + "---|" * len(labels)]
    def order(name: str) -> int:   # the JSON's keys are sorted as text: parts, then mixtures, then the full score
        return 3 if name == AS_DECODED else 2 if name.startswith("digits + ") else 1 if name == ITEM_LOGIT else 0

    for name in sorted(result["rows"], key=order):
        row = result["rows"][name]
        cells = [f"{row['by_target_seen'][b]['ndcg@10']:.4f} ({row['by_target_seen'][b]['median_rank']:.0f})"
                 for b in labels]
        lines.append(f"| {name} | {row['ndcg@10']:.4f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/components.py", description=__doc__.strip().splitlines()[0])
    add_existing_run_args(p)
    p.add_argument("--item-logit-weights", type=float, nargs="*", default=[2.0, 5.0], metavar="A",
                   help="also rank by the weighted digits plus A x the item logit (default 2 5)")
    p.add_argument("--max-users", type=int, default=None, help="score only the first N validation users")
    a = p.parse_args(argv)
    run_dir = a.run_dir or default_run_dir(a.dataset)
    if not (run_dir / "checkpoints").exists():
        raise SystemExit(f"{run_dir}/checkpoints not found: run `python bench/run.py --dataset {a.dataset}` first")
    try:
        run_components(a.dataset, run_dir, a.results_dir, tuple(a.item_logit_weights), a.max_users)
    except ValueError as e:
        raise SystemExit(f"bench/components.py: {e}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
