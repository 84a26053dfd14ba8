"""Seed-to-seed spread of a results-table row: genrec and SASRec retrained with other seeds.

    python bench/seeds.py --dataset Beauty --seeds 0 1 2   # reads bench/runs/Beauty (bench/run.py first)
    # each retrained seed costs a genrec and a SASRec training: about 55 min on Sports_and_Outdoors
    python bench/seeds.py --dataset smoke --seeds 0 1      # on bench/run.py --smoke's run (CI)

The bench run's dataset, features and semantic IDs stay fixed: the codes and the SASRec table they
were built from are one artifact. For each seed the generative model is retrained with the run's
training config and ``--seed_everything SEED``, and a baseline SASRec is retrained with the run's
SASRec settings and ``seed SEED``. The seed the bench run itself used reuses its models while the
run folder still holds the results table's run (its metrics.json has the figures of
bench/results/NAME.json); otherwise that seed is retrained like the others. Both are
scored on the validation and test splits with `genrec evaluate`'s metric functions. The report
gives each seed's figures, mean and standard deviation per system, and genrec minus SASRec per
seed, so a lead can be told apart from seed noise. Writes bench/results/seeds_NAME.{json,md,png}.

Each retrained seed's figures are also kept, as soon as they are measured, in RESULTS_DIR/seed_runs/NAME/
seed_N_SYSTEM.json (tracked, so they outlive the run folders); ``--resume`` reads them back instead of
retraining while they were measured for the same run folder content and training settings, so a run cut off
after some seeds goes on from there, also in a later session.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from run import RESULTS, add_existing_run_args, bench_config, default_run_dir, git_commit, write_outputs  # noqa: E402

SPLITS = ("valid", "test")
SHOWN = ("ndcg@10", "recall@10", "ndcg@20", "recall@20")
SYSTEMS = ("genrec", "sasrec")
SHARED_STAGES = ("dataset", "features", "sid")   # what every seed's run folder links to


def seed_run_dir(base: Path, out_root: Path, seed: int) -> Path:
    """A run folder for one seed whose dataset/features/sid are the bench run's (symlinks, nothing copied)."""
    run = out_root / f"seed_{seed}"
    run.mkdir(parents=True, exist_ok=True)
    for stage in SHARED_STAGES:
        link = run / stage
        if not link.exists():
            link.symlink_to((base / stage).resolve(), target_is_directory=True)
    return run


def seed_key(base: Path, system: str, settings: dict) -> dict:
    """What a kept seed figure was measured for: the bench run folder, the content of its shared stages (the
    arrays and tables their manifests hash, so a deterministic rebuild on a new machine still matches and any
    other rebuild does not) and the system's training settings."""
    import hashlib
    import json

    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    stages = {}
    for stage in SHARED_STAGES:
        manifest = base / stage / "manifest.json"
        files = json.loads(manifest.read_text()).get("files", {}) if manifest.is_file() else {}
        stages[stage] = {name: digest for name, digest in sorted(files.items())
                         if name.endswith((".npy", ".parquet"))}
    stages_blob = json.dumps(stages, sort_keys=True).encode()
    return {"run_dir": str(base.resolve()), "system": system, "settings_sha256": hashlib.sha256(blob).hexdigest(),
            "stages_sha256": hashlib.sha256(stages_blob).hexdigest()}


def kept_figures(path: Path, key: dict) -> dict | None:
    """A seed's kept figures at ``path`` if they were measured for ``key``, else None."""
    import json

    if not path.is_file():
        return None
    try:
        kept = json.loads(path.read_text())
    except ValueError:
        return None          # not ours or cut off mid-write (writes are atomic, so only a foreign file)
    return kept if kept.get("key") == key and all(s in kept for s in SPLITS) else None


def keep_figures(path: Path, key: dict, figures: dict, seconds: float) -> None:
    from genrec.io import write_json_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"key": key, "git_commit": git_commit(), "train_seconds": seconds} | figures)


def spread(values: list[float]) -> dict:
    """mean, sample standard deviation (0 for one seed), min and max."""
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
            "min": float(arr.min()), "max": float(arr.max()), "n": len(arr)}


def summarize(per_seed: list[dict]) -> dict:
    """Per system and split, the spread of each SHOWN metric; per split, genrec minus SASRec per seed."""
    out: dict = {"systems": {}, "genrec_minus_sasrec": {}}
    for system in SYSTEMS:
        out["systems"][system] = {split: {m: spread([row[system][split][m] for row in per_seed]) for m in SHOWN}
                                  for split in SPLITS}
    for split in SPLITS:
        diffs = [row["genrec"][split]["ndcg@10"] - row["sasrec"][split]["ndcg@10"] for row in per_seed]
        out["genrec_minus_sasrec"][split] = {"ndcg@10": spread(diffs),
                                             "seeds_genrec_ahead": int(sum(d > 0 for d in diffs))}
    return out


def markdown(name: str, result: dict) -> str:
    seeds = [row["seed"] for row in result["per_seed"]]
    lines = [f"**{name}: {len(seeds)} seeds ({', '.join(map(str, seeds))}), same semantic IDs and features**", "",
             "| system | split | " + " | ".join(f"{m} mean ± std" for m in SHOWN) + " | NDCG@10 per seed |",
             "|---|---|" + "---|" * (len(SHOWN) + 1)]
    for system in SYSTEMS:
        for split in SPLITS:
            stats = result["summary"]["systems"][system][split]
            per = ", ".join(f"{row[system][split]['ndcg@10']:.4f}" for row in result["per_seed"])
            cells = " | ".join(f"{stats[m]['mean']:.4f} ± {stats[m]['std']:.4f}" for m in SHOWN)
            lines.append(f"| {system} | {split} | {cells} | {per} |")
    lines.append("")
    for split in SPLITS:
        d = result["summary"]["genrec_minus_sasrec"][split]
        lines.append(f"- {split}: genrec − SASRec NDCG@10 {d['ndcg@10']['mean']:+.4f} ± {d['ndcg@10']['std']:.4f} "
                     f"(genrec ahead on {d['seeds_genrec_ahead']} of {d['ndcg@10']['n']} seeds)")
    retrained = {s: [row["train_seconds"][s] for row in result["per_seed"] if row["train_seconds"][s]] for s in SYSTEMS}
    if any(retrained.values()):
        lines.append("- retraining wall time per seed: " + ", ".join(
            f"{s} {np.mean(v) / 60:.1f} min" for s, v in retrained.items() if v)
            + f"; commit {str(result['git_commit'])[:10]}")
    return "\n".join(lines) + "\n"


def draw(result: dict, path: Path) -> None:
    """NDCG@10 of every seed per system and split (dots), with the mean (bar)."""
    from genrec.plots import plt, save_png   # headless (Agg) pyplot

    fig, axes = plt.subplots(1, len(SPLITS), figsize=(4 * len(SPLITS), 3.2))
    for ax, split in zip(np.atleast_1d(axes), SPLITS):
        for x, system in enumerate(SYSTEMS):
            values = [row[system][split]["ndcg@10"] for row in result["per_seed"]]
            ax.bar(x, float(np.mean(values)), width=0.6, alpha=0.35, color=f"C{x}")
            ax.scatter([x] * len(values), values, color=f"C{x}", zorder=3)
        ax.set_xticks(range(len(SYSTEMS)), SYSTEMS)
        ax.set_title(f"{split} NDCG@10 per seed")
    save_png(fig, path)


def train_genrec(run: Path, train_yaml: str, seed: int) -> float:
    from genrec.pipeline import train_run

    t0 = time.perf_counter()
    train_run(run, train_yaml, [f"--seed_everything={seed}", "--trainer.enable_progress_bar=false"])
    return time.perf_counter() - t0


def score_genrec(run: Path) -> dict:
    """Validation and test metrics of RUN's best checkpoint, exactly as `genrec evaluate` computes them."""
    from genrec.evaluate import EvaluateConfig, evaluate

    return {split: evaluate(run, EvaluateConfig(split=split, systems=("genrec",),
                                                output=f"seeds_metrics_{split}.json"))["systems"]["genrec"]
            for split in SPLITS}


def score_sasrec(model, max_items: int, dataset) -> dict:
    from genrec.evaluate import SASREC_EVAL_BATCH
    from genrec.lit.sasrec import evaluate_sasrec

    split = dataset.split
    return {name: evaluate_sasrec(model, getattr(split, name), dataset.n_items, max_items, SASREC_EVAL_BATCH)[1]
            for name in SPLITS}


def reusable_systems(base: Path, table_path: Path) -> set[str]:
    """The systems whose model in the bench run folder is still the results table's: the run's last
    test evaluation (metrics.json) gives the table's NDCG@10. Later experiments in the same folder
    (a retrained checkpoint) make a system not reusable."""
    import json

    metrics_path = base / "metrics.json"
    if not (metrics_path.exists() and table_path.exists()):
        return set()
    run_metrics, table = json.loads(metrics_path.read_text()), json.loads(table_path.read_text())
    if run_metrics.get("split") != "test":
        return set()
    systems = run_metrics.get("systems", {})
    return {system for system in SYSTEMS if system in systems and
            systems[system]["ndcg@10"] == table.get("metrics", {}).get(system, {}).get("ndcg@10")}


def run_seed(seed: int, base: Path, out_root: Path, kept_dir: Path, train_yaml: str, genrec_seed: int,
             dataset, reusable: set[str], resume: bool = False) -> dict:
    """One seed's genrec and SASRec figures: the bench run's own models when the seed is theirs and reusable,
    the figures a cut-off run kept (``resume``), or retrained and scored (and kept)."""
    from genrec.config import load_yaml
    from genrec.features.collab import CHECKPOINT, load_sasrec_with_config, train_sasrec

    row: dict = {"seed": seed, "train_seconds": {}, "reused": [], "resumed": []}
    folder = out_root / f"seed_{seed}"
    bench_sasrec, config = load_sasrec_with_config(base / "features" / "sasrec" / CHECKPOINT)
    keys = {"genrec": seed_key(base, "genrec", {"train_config": load_yaml(REPO / train_yaml), "seed": seed}),
            "sasrec": seed_key(base, "sasrec", {"config": asdict(replace(config, seed=seed))})}
    for system in SYSTEMS:
        kept = kept_figures(kept_dir / f"seed_{seed}_{system}.json", keys[system]) if resume else None
        if kept is not None:
            row[system] = {split: kept[split] for split in SPLITS}
            row["train_seconds"][system] = kept["train_seconds"]
            row["resumed"].append(system)
            continue
        if system == "genrec":
            if seed == genrec_seed and "genrec" in reusable:
                row["genrec"], row["train_seconds"]["genrec"] = score_genrec(base), None
                row["reused"].append("genrec")
                continue
            seconds = round(train_genrec(seed_run_dir(base, out_root, seed), train_yaml, seed), 1)
            row["genrec"] = score_genrec(folder)
        else:
            if seed == config.seed and "sasrec" in reusable:
                row["sasrec"], row["train_seconds"]["sasrec"] = score_sasrec(bench_sasrec, config.eval_max_items,
                                                                             dataset), None
                row["reused"].append("sasrec")
                continue
            t0 = time.perf_counter()
            model = train_sasrec(dataset, replace(config, seed=seed), out_dir=folder / "sasrec").model
            seconds = round(time.perf_counter() - t0, 1)
            row["sasrec"] = score_sasrec(model, config.eval_max_items, dataset)
        row["train_seconds"][system] = seconds
        keep_figures(kept_dir / f"seed_{seed}_{system}.json", keys[system], row[system], seconds)
    for system in SYSTEMS:
        print(f"seed {seed} {system}: " + ", ".join(f"{s} NDCG@10 {row[system][s]['ndcg@10']:.4f}" for s in SPLITS)
              + (" (kept from an earlier run)" if system in row["resumed"] else ""), flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/seeds.py", description=__doc__.strip().splitlines()[0])
    add_existing_run_args(p)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds to train and score (default 0 1 2)")
    p.add_argument("--out-root", type=Path, default=None,
                   help="where the retrained seeds' run folders go (default bench/runs/seeds/NAME)")
    p.add_argument("--resume", action="store_true",
                   help="reuse the figures an earlier, cut-off run of this command kept in RESULTS_DIR/seed_runs/NAME "
                        "(same run folder content and training settings) instead of retraining that seed")
    a = p.parse_args(argv)
    from genrec.config import load_yaml
    from genrec.data.dataset import load_dataset

    base = a.run_dir or default_run_dir(a.dataset)
    for needed in (*SHARED_STAGES, "checkpoints/best.ckpt", "features/sasrec"):
        if not (base / needed).exists():
            raise SystemExit(f"{base / needed} not found: run `python bench/run.py --dataset {a.dataset}` first")
    _, raw = bench_config(a.dataset, smoke=a.dataset == "smoke")
    train_yaml = raw.get("train_config", "configs/demo.yaml")
    genrec_seed = int(load_yaml(REPO / train_yaml).get("seed_everything", 0))
    out_root = a.out_root or REPO / "bench" / "runs" / "seeds" / a.dataset
    dataset = load_dataset(base)
    reusable = reusable_systems(base, a.results_dir / f"{a.dataset}.json")
    if set(SYSTEMS) - reusable:
        print(f"{base} no longer holds the results table's {', '.join(sorted(set(SYSTEMS) - reusable))} model: "
              "its seed is retrained too", flush=True)
    t0 = time.perf_counter()
    kept_dir = a.results_dir / "seed_runs" / a.dataset
    per_seed = [run_seed(seed, base, out_root, kept_dir, train_yaml, genrec_seed, dataset, reusable, a.resume)
                for seed in dict.fromkeys(a.seeds)]
    result = {"dataset": a.dataset, "git_commit": git_commit(), "train_config": train_yaml,
              "bench_run_seed": {"genrec": genrec_seed}, "reusable_from_bench_run": sorted(reusable),
              "seconds": round(time.perf_counter() - t0, 1),
              "per_seed": per_seed, "summary": summarize(per_seed)}
    write_outputs(a.results_dir, f"seeds_{a.dataset}", result, markdown(a.dataset, result),
                  lambda path: draw(result, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
