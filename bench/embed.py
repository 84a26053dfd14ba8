"""Benchmark of the embed stage (not run by pytest).

    python bench/embed.py                       # throughput + SASRec on Office and Beauty
    python bench/embed.py --parts throughput    # only texts/s and images/s
    python bench/embed.py --parts office --sasrec '{"d_model": 64, "dropout": 0.2}'

* texts/s: the bundled all-MiniLM-L6-v2 (max_length 128, batch 64) on real Office item texts
  (the default template), cache off, model loading excluded.
* images/s: tf_efficientnet_lite0 (224 px, batch 32) on rendered PNG files, decode + preprocessing
  + forward, cache off, model loading excluded.
* SASRec: trained on the training split, selected by validation NDCG@10, evaluated on the test
  split with the DESIGN.md protocol (leave-one-out, full ranking, last 20 items, Recall/NDCG@5/10/20),
  next to popularity counted on the training split.

Torch is limited to 2 threads (the 2-core budget). Results are merged into bench/results/embed.json
(so parts can be run separately) and printed as a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from genrec.io import machine_info, package_versions, write_json_atomic

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data").resolve()
RESULTS = REPO / "bench" / "results" / "embed.json"
THREADS = 2                      # the CPU budget the numbers are quoted for
N_TEXTS = 2000                   # texts encoded for the throughput number
N_IMAGES = 500                   # rendered images encoded for the throughput number
IMAGE_SIDE = 256                 # rendered picture size (resized to the encoder's 224 px input)
WARMUP = 8                       # items encoded before timing (first-call allocations)
DATASETS = {"office": "Office", "beauty": "Beauty"}
PARTS = ("throughput", *DATASETS)
METRIC_ORDER = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20")


def prepared(name: str, work: Path):
    """RUN/dataset for ../shared/data/<name>, prepared once into ``work/<name>`` and reused."""
    from genrec.data.dataset import load_dataset
    from genrec.data.prepare import PrepareConfig, prepare

    source = DATA / name
    if not source.exists():
        raise SystemExit(f"{source} not found: the benchmark reads the shared data folder beside the repo")
    run = work / name
    if not (run / "dataset" / "manifest.json").exists():
        prepare(source, run, PrepareConfig(progress=False))
    return load_dataset(run)


def bench_texts(work: Path, n: int) -> dict:
    from genrec.features.text import TextConfig, TextEncoder, item_texts

    dataset = prepared("Office", work)
    cfg = TextConfig()
    texts = [t for t in item_texts(dataset.items, cfg) if t]
    if len(texts) < n:
        raise SystemExit(f"Office has {len(texts)} item texts, fewer than --texts {n}")
    texts = texts[:n]
    encoder = TextEncoder(cfg)
    encoder.encode_batch(texts[:WARMUP])                       # loads the model
    tokens = encoder.token_lengths(texts)
    _, stats = encoder.encode(texts, cache=None, progress=True)
    return {
        "n": n, "n_unique": stats.n_unique, "source": "Office item texts (default template)", "model": cfg.model,
        "max_length": cfg.max_length,
        "batch_size": cfg.batch_size, "mean_tokens": round(float(np.mean(tokens)), 1),
        "seconds": round(stats.encode_seconds, 2), "texts_per_second": round(stats.texts_per_second, 1),
    }


def render_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` PNG product-like pictures: a coloured shape on a light background."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        im = Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), tuple(int(v) for v in rng.integers(220, 256, 3)))
        d = ImageDraw.Draw(im)
        box = sorted(rng.integers(20, IMAGE_SIDE - 20, 2)), sorted(rng.integers(20, IMAGE_SIDE - 20, 2))
        xy = (box[0][0], box[1][0], box[0][1] + 10, box[1][1] + 10)
        colour = tuple(int(v) for v in rng.integers(0, 200, 3))
        (d.ellipse if i % 2 else d.rectangle)(xy, fill=colour, outline=(0, 0, 0), width=2)
        paths.append(folder / f"img{i:05d}.png")
        im.save(paths[-1])
    return paths


def bench_images(work: Path, n: int) -> dict:
    from genrec.features.image import ImageConfig, ImageEncoder

    paths = render_images(work / "rendered_images", n)
    cfg = ImageConfig()
    encoder = ImageEncoder(cfg)
    encoder.encode_files(paths[:WARMUP], progress=False)
    res = encoder.encode_files(paths, cache=None, progress=True)
    if not res.mask.all():
        raise RuntimeError(f"rendered images failed to decode: {res.missing_reasons}")
    return {
        "n": n, "source": f"rendered {IMAGE_SIDE}x{IMAGE_SIDE} PNG files", "model": cfg.model,
        "image_size": cfg.image_size, "batch_size": cfg.batch_size,
        "seconds": round(res.encode_seconds, 2), "images_per_second": round(res.images_per_second, 1),
    }


def bench_sasrec(name: str, work: Path, overrides: dict) -> dict:
    from genrec.baselines import evaluate_popularity
    from genrec.features.collab import train_sasrec
    from genrec.lit.sasrec import SASRecTrainConfig, evaluate_sasrec

    dataset = prepared(name, work)
    config = SASRecTrainConfig(**overrides)
    result = train_sasrec(dataset, config, work / name / "sasrec")
    split = dataset.split
    _, test = evaluate_sasrec(result.model, split.test, dataset.n_items, config.eval_max_items,
                              config.eval_batch_size, exclude_history=config.exclude_history)
    _, pop_valid = evaluate_popularity(split, split.valid, dataset.n_items)
    _, pop_test = evaluate_popularity(split, split.test, dataset.n_items)
    return {
        "dataset": name, "n_users": dataset.n_users, "n_items": dataset.n_items,
        "n_interactions": dataset.manifest.get("n_interactions"),
        "sasrec": {"valid": result.best_val, "test": test, "best_epoch": result.best_epoch,
                   "epochs": result.epochs, "seconds": round(result.seconds, 1), "config": asdict(config)},
        "popularity": {"valid": pop_valid, "test": pop_test},
    }


def format_table(results: dict) -> str:
    lines = []
    if "texts" in results or "images" in results:
        lines += ["| encoder | items | seconds | throughput (2 CPU threads) |", "|---|---|---|---|"]
        if "texts" in results:
            t = results["texts"]
            lines.append(f"| text: {t['model']} (max_length {t['max_length']}, {t['mean_tokens']} tokens avg) "
                         f"| {t['n']:,} | {t['seconds']} | **{t['texts_per_second']} texts/s** |")
        if "images" in results:
            i = results["images"]
            lines.append(f"| image: {i['model']} ({i['image_size']} px) | {i['n']:,} | {i['seconds']} "
                         f"| **{i['images_per_second']} images/s** |")
        lines.append("")
    rows = [(r["dataset"], model, r[key]) for r in results.get("sasrec", {}).values()
            for model, key in (("popularity", "popularity"), ("SASRec", "sasrec"))]
    if rows:
        header = " | ".join(m.replace("recall", "R").replace("ndcg", "N") for m in METRIC_ORDER)
        lines += [f"| dataset | model | split | {header} |", "|---|---|---|" + "---|" * len(METRIC_ORDER)]
        for dataset, model, r in rows:
            for split in ("valid", "test"):
                vals = " | ".join(f"{r[split][m]:.4f}" for m in METRIC_ORDER)
                lines.append(f"| {dataset} | {model} | {split} | {vals} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
    p.add_argument("--texts", type=int, default=N_TEXTS, help="texts to encode for texts/s")
    p.add_argument("--images", type=int, default=N_IMAGES, help="rendered images to encode for images/s")
    p.add_argument("--sasrec", default="{}", help="JSON overrides of SASRecTrainConfig fields")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "genrec-bench-embed",
                   help="scratch folder for prepared datasets, images and checkpoints")
    a = p.parse_args(argv)
    parts = [x.strip() for x in a.parts.split(",") if x.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"--parts: unknown {unknown}; choose from {PARTS}")

    import torch

    torch.set_num_threads(THREADS)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.update(machine=machine_info(), versions=package_versions(), torch_threads=THREADS)
    load_before = os.getloadavg()
    if "throughput" in parts:
        results["texts"] = bench_texts(a.work, a.texts)
        results["images"] = bench_images(a.work, a.images)
        # Other processes share the 2 cores; the 1/5/15-min load averages put the numbers in context.
        results["load_average"] = {"before": [round(x, 2) for x in load_before],
                                   "after": [round(x, 2) for x in os.getloadavg()]}
    for key, name in DATASETS.items():
        if key in parts:
            start = time.perf_counter()
            results.setdefault("sasrec", {})[name] = bench_sasrec(name, a.work, json.loads(a.sasrec))
            print(f"{name}: SASRec done in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    write_json_atomic(RESULTS, results)
    print(format_table(results))
    print(f"\nwritten to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
