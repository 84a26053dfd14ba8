"""Cold-start quality of `genrec add-items`: items the model never saw, added to its export without retraining.

    python bench/cold_start.py --dataset Office     # bench/results/cold_start_Office.{json,md}
    python bench/cold_start.py --smoke              # the demo catalogue, about a minute (its test:
                                                    # tests/test_bench_cold_start.py)

1. Prepare the whole dataset (``full/``) and hold out the ``--holdout`` share (10%) of items that appear last in
   time: ordered by each item's first interaction timestamp (ties: the later item id; a source without
   timestamps falls back to the order of first appearance, which is the item id order of prepare).
2. Write a copy of the source without them (a RecBole ``.inter`` + ``.item`` pair: every event of a held-out
   item is dropped) and run prepare -> embed -> tokenize -> train on it (``cold/``), with the dataset's config
   family (bench/run.py CONFIGS). So the held-out items are absent from the training split, the SASRec table,
   the tokenizer fit and the vocabulary. The one change to the family: ``tokenize.dedup_capacity`` is raised to
   ``DEDUP_CAPACITY`` (the field that exists for this), so a new item whose codes collide finds a free dedup code.
3. ``genrec export`` the cold run, then ``genrec add-items`` the held-out items (a JSONL of their metadata).
4. Evaluate on the full data's test targets (each user's last item, history = everything before it) that are
   held-out items, ranking the whole catalogue (old + new): genrec through the grown export (onnxruntime;
   once with the default fill of what a new item lacks, the mean item, and once with ``--run``'s fill from its
   10 nearest catalogue items by text, "text-neighbour fill"),
   a content-only nearest-neighbour baseline (cosine between the mean text embedding of the history and every
   item's, with the run's text encoder) and popularity (training-split counts, so it cannot rank new items).
   genrec on the test targets that are old items is reported for reference.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from run import RESULTS, bench_config, bench_source, git_commit, stage_config, stage_timer  # noqa: E402

HOLDOUT = 0.1            # share of items held out: the ones whose first interaction is latest
DEDUP_CAPACITY = 32      # dedup-digit vocabulary of the cold run, so colliding new items get a free code
K = 10                   # Recall@K / NDCG@K
ENCODE_BATCH = 512       # histories per onnxruntime call
ITEM_FIELDS = ("title", "brand", "categories", "price", "description")   # the text template's fields


# ---------------------------------------------------------------------- hold-out
def first_seen(sequences, n_items: int) -> np.ndarray:
    """(n_items,) first interaction time per item; without timestamps the item id (prepare numbers items in
    order of first appearance)."""
    first = np.full(n_items, np.iinfo(np.int64).max, dtype=np.int64)
    if sequences["timestamps"].null_count() == sequences.height:
        return np.arange(n_items, dtype=np.int64)
    for items, ts in zip(sequences["item_ids"].to_list(), sequences["timestamps"].to_list()):
        np.minimum.at(first, np.asarray(items, np.int64), np.asarray(ts, np.int64))
    return first


def held_out_items(first: np.ndarray, share: float) -> np.ndarray:
    """The ceil(share * n) items with the latest first interaction (ties: the larger item id), sorted."""
    n = len(first)
    order = np.lexsort((np.arange(n), first))          # by time, then id
    return np.sort(order[n - math.ceil(share * n):])


def _clean(value) -> str:
    return " ".join(str(value).split())


def read_sequences(run: Path):
    """RUN/dataset/sequences.parquet in user order (user ids, item ids and timestamps per user)."""
    import polars as pl

    return pl.read_parquet(run / "dataset" / "sequences.parquet").sort("user_id")


def write_cold_source(full, sequences, held: np.ndarray, folder: Path, name: str) -> dict:
    """The full dataset without the held-out items, as RecBole ``name.inter`` / ``name.item`` files."""
    folder.mkdir(parents=True, exist_ok=True)
    items = full.items.sort("item_id")
    source_ids = items["source_id"].to_list()
    drop = set(held.tolist())
    has_ts = sequences["timestamps"].null_count() < sequences.height
    n_events = 0
    with open(folder / f"{name}.inter", "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token" + ("\ttimestamp:float" if has_ts else "") + "\n")
        for row in sequences.iter_rows(named=True):
            times = row["timestamps"] if has_ts else [None] * len(row["item_ids"])
            for item, ts in zip(row["item_ids"], times):
                if item in drop:
                    continue
                f.write(f"{row['source_user_id']}\t{source_ids[item]}" + (f"\t{ts}" if has_ts else "") + "\n")
                n_events += 1
    fields = [c for c in ITEM_FIELDS if c in items.columns and items[c].null_count() < items.height]
    kinds = {"price": "float", "categories": "token_seq"}
    with open(folder / f"{name}.item", "w", encoding="utf-8") as f:
        f.write("\t".join(["item_id:token"] + [f"{c}:{kinds.get(c, 'token_seq')}" for c in fields]) + "\n")
        for row in items.iter_rows(named=True):
            if row["item_id"] in drop:
                continue
            values = [",".join(_clean(v) for v in row[c]) if c == "categories" and row[c] else
                      "" if row[c] is None else _clean(row[c]) for c in fields]
            f.write("\t".join([row["source_id"], *values]) + "\n")
    return {"n_events": n_events, "n_items": items.height - len(drop), "timestamps": has_ts}


def write_new_items(full, held: np.ndarray, path: Path) -> Path:
    """The held-out items' metadata as a `genrec add-items` JSONL source."""
    items = full.items.sort("item_id")
    with open(path, "w", encoding="utf-8") as f:
        for i in held.tolist():
            row = items.row(i, named=True)
            obj = {"source_id": row["source_id"], **{c: row[c] for c in ITEM_FIELDS if c in row and row[c] is not None}}
            f.write(json.dumps(obj) + "\n")
    return path


# ---------------------------------------------------------------------- evaluation
def eval_cases(full, catalogue: dict[str, int]):
    """Each full-data user's last item and everything before it, in the grown export's ids (items the cold run's
    filters dropped are not in the catalogue: such a target is skipped, such a history item left out)."""
    src = full.items.sort("item_id")["source_id"].to_list()
    histories, targets, target_full, n_skipped = [], [], [], 0
    for seq in full.sequences:
        seq = seq.tolist()
        target = catalogue.get(src[seq[-1]])
        if target is None:
            n_skipped += 1
            continue
        hist = [catalogue[src[i]] for i in seq[:-1] if src[i] in catalogue]
        if not hist:
            n_skipped += 1
            continue
        histories.append(hist)
        targets.append(target)
        target_full.append(seq[-1])
    return histories, np.asarray(targets), np.asarray(target_full), n_skipped


def genrec_ranked(runtime, histories: list[list[int]], k: int) -> np.ndarray:
    out = []
    for s in range(0, len(histories), ENCODE_BATCH):
        res = runtime.recommend(histories[s:s + ENCODE_BATCH], k, exclude_history=False)
        out.append(res.items[:, :k])
    return np.concatenate(out) if out else np.zeros((0, k), np.int64)


def content_knn_ranked(vectors: np.ndarray, histories: list[list[int]], k: int) -> np.ndarray:
    """Cosine between the mean of the history's (L2-normalised) text vectors and every item's."""
    from genrec.metrics import topk_from_scores

    out = []
    for s in range(0, len(histories), ENCODE_BATCH):
        profile = np.stack([vectors[h].mean(axis=0) for h in histories[s:s + ENCODE_BATCH]])
        profile /= np.maximum(np.linalg.norm(profile, axis=1, keepdims=True), 1e-12)
        out.append(topk_from_scores(profile @ vectors.T, k))
    return np.concatenate(out) if out else np.zeros((0, k), np.int64)


def text_vectors(catalogue_items, text_config: dict) -> np.ndarray:
    """(n, d) L2-normalised text embeddings of the catalogue with the run's text encoder (mean vector for no text)."""
    from genrec.features.text import TextConfig, TextEncoder, item_texts

    config = TextConfig(**text_config)
    texts = item_texts(catalogue_items, config)
    present = np.array([bool(t) for t in texts])
    x = np.zeros((len(texts), TextEncoder(config).dim), np.float32)
    if present.any():
        x[present], _ = TextEncoder(config).encode([t for t in texts if t], progress=False)
        x[~present] = x[present].mean(axis=0)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def metrics_row(ranked: np.ndarray, targets: np.ndarray, rows: np.ndarray, seconds: float) -> dict:
    from genrec.metrics import ndcg_at_k, recall_at_k

    if not rows.any():
        return {f"recall@{K}": 0.0, f"ndcg@{K}": 0.0, "n_users": 0, "seconds": round(seconds, 2)}
    return {f"recall@{K}": recall_at_k(ranked[rows], targets[rows], K),
            f"ndcg@{K}": ndcg_at_k(ranked[rows], targets[rows], K),
            "n_users": int(rows.sum()), "seconds": round(seconds, 2)}


# ---------------------------------------------------------------------- the run
def run(dataset: str, *, smoke: bool, run_dir: Path, results: Path, train_args: list[str], holdout: float) -> dict:

    from genrec.catalog.add import AddItemsConfig, add_items
    from genrec.data.dataset import load_dataset
    from genrec.data.prepare import prepare
    from genrec.export.onnx import ExportConfig, export
    from genrec.features.stage import embed
    from genrec.io import machine_info, write_json_atomic, write_text_atomic
    from genrec.pipeline import train_run
    from genrec.serving.runtime import ExportRuntime
    from genrec.tokenizer.stage import tokenize

    cfg_path, raw = bench_config(dataset, smoke)
    stages = stage_config(raw, smoke)
    stages.tokenize = dataclasses.replace(stages.tokenize,
                                          dedup_capacity=max(stages.tokenize.dedup_capacity or 0, DEDUP_CAPACITY))
    train_yaml = raw["train_config"]
    seconds: dict[str, float] = {}
    timed = stage_timer(seconds)

    source = bench_source(dataset, smoke, raw, run_dir)
    name = "smoke" if smoke else dataset
    timed("prepare_full", lambda: prepare(source, run_dir / "full", stages.prepare, name=name))
    full = load_dataset(run_dir / "full")
    sequences = read_sequences(run_dir / "full")
    first = first_seen(sequences, full.n_items)
    held = held_out_items(first, holdout)
    cold_info = write_cold_source(full, sequences, held, run_dir / "cold_source", name)
    new_source = write_new_items(full, held, run_dir / "new_items.jsonl")
    cold = run_dir / "cold"
    timed("prepare", lambda: prepare(run_dir / "cold_source", cold, stages.prepare, fmt="recbole", name=f"{name}_cold"))
    timed("embed", lambda: embed(cold, stages.embed))
    timed("tokenize", lambda: tokenize(cold, stages.tokenize))
    timed("train", lambda: train_run(cold, train_yaml, train_args))
    export_config = ExportConfig(name=f"{name}_cold", exporter="legacy" if smoke else "dynamo", thumbnail_size=0)
    timed("export", lambda: export(cold, run_dir / "export", export_config))
    added = timed("add_items", lambda: add_items(run_dir / "export", new_source, run_dir / "export_added",
                                                 AddItemsConfig(overwrite=True)))
    # The same items again, each borrowing its text neighbours' SASRec rows and id embeddings (--run).
    timed("add_items_neighbours", lambda: add_items(run_dir / "export", new_source, run_dir / "export_added_nn",
                                                    AddItemsConfig(overwrite=True, run=cold)))

    runtime = ExportRuntime(run_dir / "export_added")
    catalogue = {sid: i for i, sid in enumerate(runtime.source_ids)}
    n_old = int(json.loads((run_dir / "export" / "manifest.json").read_text())["n_items"])
    histories, targets, target_full, n_skipped = eval_cases(full, catalogue)
    is_new = np.isin(target_full, held)
    cold_ds = load_dataset(cold)
    train_counts = np.zeros(runtime.n_items, np.int64)
    train = [np.asarray(s, np.int64) for s in cold_ds.split.train if len(s)]
    if train:
        train_counts[:n_old] = np.bincount(np.concatenate(train), minlength=n_old)[:n_old]
    # The grown export's ids 0..n_old-1 are the cold run's item ids (export writes items in item_id order).
    assert runtime.source_ids[:n_old] == cold_ds.items.sort("item_id")["source_id"].to_list()

    t0 = time.perf_counter()
    ranked = {"genrec": genrec_ranked(runtime, histories, K)}
    seconds["eval_genrec"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    nn_runtime = ExportRuntime(run_dir / "export_added_nn")
    assert nn_runtime.source_ids == runtime.source_ids
    ranked["genrec, text-neighbour fill"] = genrec_ranked(nn_runtime, histories, K)
    seconds["eval_genrec, text-neighbour fill"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    full_items = full.items.sort("item_id")
    by_source = {s: i for i, s in enumerate(full_items["source_id"].to_list())}
    catalogue_items = full_items[[by_source[s] for s in runtime.source_ids]]
    text_config = json.loads((cold / "features" / "manifest.json").read_text())["config"]["text"]
    vectors = text_vectors(catalogue_items, text_config)
    ranked["content_knn"] = content_knn_ranked(vectors, histories, K)
    seconds["eval_content_knn"] = round(time.perf_counter() - t0, 2)
    from genrec.metrics import topk_from_scores

    ranked["popularity"] = np.repeat(topk_from_scores(train_counts[None].astype(np.float64), K), len(histories), axis=0)
    metrics = {system: metrics_row(r, targets, is_new, seconds.get(f"eval_{system}", 0.0))
               for system, r in ranked.items()}
    metrics["genrec (old-item targets, reference)"] = metrics_row(ranked["genrec"], targets, ~is_new, 0.0)
    metrics["genrec, text-neighbour fill (old-item targets, reference)"] = metrics_row(
        ranked["genrec, text-neighbour fill"], targets, ~is_new, 0.0)
    new_in_top = float((ranked["genrec"][is_new] >= n_old).mean()) if is_new.any() else 0.0
    nn_new_in_top = (float((ranked["genrec, text-neighbour fill"][is_new] >= n_old).mean())
                     if is_new.any() else 0.0)

    info = added["source"]["added_items"][-1]
    result = {
        "dataset": dataset if not smoke else "smoke", "git_commit": git_commit(), "machine": machine_info(),
        "seconds": seconds, "holdout": holdout, "k": K,
        "seeds": {"train_seed_everything": _train_seed(train_yaml), "embed": stages.embed.seed,
                  "tokenize": stages.tokenize.seed, "sasrec": getattr(stages.embed.sasrec, "seed", None)},
        "counts": {"n_items_full": full.n_items, "n_held_out": int(len(held)), "n_items_cold_run": n_old,
                   "n_items_catalogue": runtime.n_items, "n_added": info["n_added"],
                   "n_test_users": int(len(targets)), "n_test_new_targets": int(is_new.sum()),
                   "n_test_skipped": n_skipped, "cold_source": cold_info,
                   "held_out_first_seen_from": int(first[held].min()) if len(held) else None},
        "add_items": {k: info[k] for k in ("modalities", "id_embedding_fill", "n_skipped_existing")}
                     | {"seconds": seconds["add_items"]},
        "metrics": metrics,
        "genrec_new_items_share_of_top10_on_new_targets": round(new_in_top, 4),
        "genrec_text_neighbour_fill_new_items_share_of_top10_on_new_targets": round(nn_new_in_top, 4),
        "config": {"bench": str(cfg_path.relative_to(REPO)), "train": train_yaml, "train_args": train_args,
                   "tokenize.dedup_capacity": stages.tokenize.dedup_capacity, "exporter": export_config.exporter},
    }
    stem = f"cold_start_{result['dataset']}"
    results.mkdir(parents=True, exist_ok=True)
    write_json_atomic(results / f"{stem}.json", result)
    write_text_atomic(results / f"{stem}.md", markdown(result))
    print(markdown(result))
    return result


def _train_seed(train_yaml: str):
    from genrec.config import load_yaml

    return load_yaml(REPO / train_yaml).get("seed_everything")


def markdown(result: dict) -> str:
    c = result["counts"]
    lines = [f"**{result['dataset']}: cold start ({c['n_held_out']} items held out of {c['n_items_full']}, the "
             f"{result['holdout']:.0%} that appear last; added with `genrec add-items`; full ranking over "
             f"{c['n_items_catalogue']} items)**", "",
             f"| system | recall@{K} | ndcg@{K} | test users |", "|---|---|---|---|"]
    for system, m in result["metrics"].items():
        lines.append(f"| {system} | {m[f'recall@{K}']:.4f} | {m[f'ndcg@{K}']:.4f} | {m['n_users']} |")
    total = sum(v for k, v in result["seconds"].items())
    lines += ["", f"Test targets that are new items: {c['n_test_new_targets']} of {c['n_test_users']} users. "
              f"Share of genrec's top-{K} that is new items on those users: "
              f"{result['genrec_new_items_share_of_top10_on_new_targets']:.2f}. add-items took "
              f"{result['add_items']['seconds']:.0f} s; total {total / 60:.1f} min; "
              f"commit {str(result['git_commit'])[:10]}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/cold_start.py", description=__doc__.strip().splitlines()[0])
    p.add_argument("--dataset", default=None, help="folder name in ../shared/data with timestamps, e.g. Office")
    p.add_argument("--smoke", action="store_true", help="the small demo catalogue (CI; about a minute)")
    p.add_argument("--holdout", type=float, default=HOLDOUT, help="share of items held out (latest first interaction)")
    p.add_argument("--run-dir", type=Path, default=None, help="scratch folder (default bench/runs/cold_start_NAME)")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    p.epilog = "Any other flags go to the Lightning training CLI, e.g. --trainer.max_epochs=5"
    a, train_args = p.parse_known_args(argv)
    if a.smoke == (a.dataset is not None):
        p.error("give --dataset NAME or --smoke (exactly one)")
    if not 0 < a.holdout < 1:
        p.error("--holdout must be in (0, 1)")
    name = "smoke" if a.smoke else a.dataset
    run_dir = a.run_dir or REPO / "bench" / "runs" / f"cold_start_{name}"
    run(name, smoke=a.smoke, run_dir=run_dir, results=a.results_dir, train_args=train_args, holdout=a.holdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
