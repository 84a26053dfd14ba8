"""Tune our SASRec baseline on validation: train named variants of its settings on one dataset's run.

    python bench/sasrec.py --dataset Beauty                              # every variant below
    python bench/sasrec.py --dataset Beauty --variants default dropout0.5 # only these; the others are kept
    python bench/sasrec.py --smoke                                       # the demo catalogue, seconds (CI)
    python bench/sasrec.py --dataset NAME --variants default X --base-from-run   # default: the run's own stage

Each variant is the dataset's bench setting (``stages: embed: sasrec:`` of its config family, see
bench/run.py CONFIGS) with a few SASRecTrainConfig fields changed, trained from the same seed on the
training split and early-stopped on validation NDCG@10. Every variant is then scored on validation
and test with the same metric functions as `genrec evaluate`; the selected variant is the one with
the best VALIDATION NDCG@10 (test is reported, never used to choose). The run folder's dataset is
reused (bench/runs/NAME/dataset from bench/run.py) or prepared with the config family's prepare
settings; SASRec needs no text features. Writes bench/results/sasrec_NAME.json (variants already in
it and not re-run are kept, each with the commit it ran at) and sasrec_NAME.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from run import RESULTS, bench_config, bench_source, default_run_dir, git_commit, stage_config  # noqa: E402

SELECT_BY = "ndcg@10"        # validation metric the selection reads
SHOWN = ("ndcg@10", "recall@10")
VARIANT_DIR = "sasrec_variants"   # per-variant checkpoints and logs inside the run folder (scratch)

# name -> SASRecTrainConfig fields changed from the bench setting. Leads for sparse data: more dropout
# (the original SASRec uses 0.5 on Beauty), decoupled weight decay, wider/more heads, training windows
# as long as the protocol's history (20: trained as scored) or longer, a warmed-up higher lr, more patience.
SAMPLED = {"loss": "sampled", "n_negatives": 2048, "sample_alpha": 0.5}
CORNAC_SHAPE = {"d_model": 100, "n_heads": 1, "batch_size": 512}
VARIANTS: dict[str, dict] = {
    "default": {},
    "dropout0.5": {"dropout": 0.5},
    "len20": {"train_max_len": 20},
    "dropout0.5_wd0.1": {"dropout": 0.5, "weight_decay": 0.1},
    "dropout0.5_len20": {"dropout": 0.5, "train_max_len": 20},
    "dropout0.5_len200": {"dropout": 0.5, "train_max_len": 200},
    "dropout0.5_d128_h2": {"dropout": 0.5, "d_model": 128, "n_heads": 2},
    "dropout0.5_d128_h2_l3": {"dropout": 0.5, "d_model": 128, "n_heads": 2, "n_layers": 3},
    "dropout0.5_d256_h4": {"dropout": 0.5, "d_model": 256, "n_heads": 4},
    "dropout0.5_d128_h2_l3_from_end": {"dropout": 0.5, "d_model": 128, "n_heads": 2, "n_layers": 3,
                                       "positions": "from_end"},
    "dropout0.5_lr2e-3_warmup": {"dropout": 0.5, "lr": 2e-3, "warmup_steps": 200},
    "dropout0.5_patience10": {"dropout": 0.5, "patience": 10},
    # cornac 3.0.1's SASRec defaults (the issue's .0489 on Office): sampled softmax over in-batch targets plus
    # 2048 negatives ~ count^0.5, width 100 (1 head), batch 512; ours trains every position of a window.
    "sampled2048": SAMPLED,
    "sampled2048_logq": {**SAMPLED, "logq_correction": True},
    "d100_b512": CORNAC_SHAPE,
    "sampled2048_d100_b512": {**SAMPLED, **CORNAC_SHAPE},
    "sampled2048_d100_b512_len20": {**SAMPLED, **CORNAC_SHAPE, "train_max_len": 20},
    # cornac scores on its last 50 items; the protocol's history is the dataset's max_items (20 here)
    "eval50": {"eval_max_items": 50},
    "dropout0.5_eval50": {"dropout": 0.5, "eval_max_items": 50},
    # cornac's loop: one example per training target, its history as input, scored at its end
    "prefix": {"training_examples": "prefix"},
    "dropout0.5_len20_prefix": {"dropout": 0.5, "train_max_len": 20, "training_examples": "prefix"},
    # plain shuffled batches (pmixer's, cornac's and gSASRec's loaders) instead of one window length per batch
    "random_batches": {"batching": "random"},
    "prefix_random_batches": {"training_examples": "prefix", "batching": "random"},
    # positions counted back from the newest item (the original SASRec's and cornac's left padding), over
    # windows (the original's training) or per-target prefixes (cornac's loop, exact at the scored end)
    "from_end": {"positions": "from_end"},
    "prefix_from_end": {"training_examples": "prefix", "positions": "from_end"},
}
SMOKE_VARIANTS = ("default", "dropout0.5", "sampled2048")
SMOKE_OVERRIDES = {"max_epochs": 2}   # on top of every variant: the smoke run only checks the path


def base_setting(dataset: str, smoke: bool) -> tuple[str, dict, object]:
    """The bench's SASRec fields for this dataset (its config family's ``stages.embed.sasrec``) and its stage config."""
    cfg_path, raw = bench_config(dataset, smoke)
    sasrec = dict(((raw.get("embed") or {}).get("sasrec")) or {})
    return str(cfg_path.relative_to(REPO)), sasrec, (raw, stage_config(raw, smoke))


def prepared_run(dataset: str, smoke: bool, run_dir: Path, raw: dict, stages_cfg) -> Path:
    """``run_dir`` with its dataset stage: reused when present (bench/run.py made it), else prepared now."""
    from genrec.data.prepare import prepare

    if not (run_dir / "dataset").exists():
        source = bench_source(dataset, smoke, raw, run_dir)
        prepare(source, run_dir, replace(stages_cfg.prepare, progress=False), name=dataset)
    return run_dir


def resolved_config(fields: dict, dataset):
    """SASRecTrainConfig of ``fields``, its history window resolved to the protocol's as train_sasrec does."""
    from genrec.lit.sasrec import SASRecTrainConfig

    config = SASRecTrainConfig(**fields)
    if config.eval_max_items is None:    # the protocol length, as train_sasrec and genrec evaluate resolve it
        config = replace(config, eval_max_items=dataset.max_items)
    return config


def scored_row(name: str, model, config, fields: dict, dataset, fit: dict) -> dict:
    """A table row: the weights scored on valid and test, beside what their fit cost (``fit``)."""
    from genrec.evaluate import SASREC_EVAL_BATCH
    from genrec.lit.sasrec import evaluate_sasrec

    split = dataset.split
    # scored as it was early-stopped: with or without the users' history items in the ranking
    scores = {s: evaluate_sasrec(model, getattr(split, s), dataset.n_items, config.eval_max_items,
                                 SASREC_EVAL_BATCH, exclude_history=config.exclude_history)[1]
              for s in ("valid", "test")}
    row = {"fields": fields, "config": asdict(config), "valid": scores["valid"], "test": scores["test"], **fit}
    print(f"{name}: valid NDCG@10 {row['valid']['ndcg@10']:.4f}, test NDCG@10 {row['test']['ndcg@10']:.4f}, "
          f"best epoch {row['best_epoch']} of {row['epochs']}, {row['train_seconds']:.0f} s", flush=True)
    return row


def run_variant(name: str, fields: dict, dataset, run_dir: Path) -> dict:
    """Train one variant (early-stopped on validation NDCG@10) and score its best weights on valid and test."""
    from genrec.features.collab import train_sasrec

    config = resolved_config(fields, dataset)
    load_before, commit = os.getloadavg(), git_commit()   # the commit the variant was launched at
    result = train_sasrec(dataset, config, out_dir=run_dir / VARIANT_DIR / name)
    return scored_row(name, result.model, config, fields, dataset, {
        "epochs": result.epochs, "best_epoch": result.best_epoch, "train_seconds": round(result.seconds, 1),
        "train_samples_per_second": round(result.train_samples_per_second, 1),
        "n_train_windows": result.n_train_windows, "load_average_before_after": [list(load_before),
                                                                                  list(os.getloadavg())],
        "git_commit": commit,
    })


def stage_row(name: str, fields: dict, dataset, run_dir: Path) -> dict | None:
    """The row of ``fields`` read from the run's own SASRec stage (RUN/features/sasrec, bench/run.py's embed
    stage) instead of retrained, when that stage trained exactly these settings; None otherwise.

    SASRec training is seeded and deterministic, so these are the weights a retrain would return (the test
    checks it on the demo); the fit figures are the stage's, from its manifest.
    """
    from genrec.features.collab import CHECKPOINT, load_sasrec_with_config
    from genrec.features.stage import SASREC_DIR, features_dir
    from genrec.io import MANIFEST, read_manifest

    config, folder = resolved_config(fields, dataset), features_dir(run_dir)
    checkpoint = folder / SASREC_DIR / CHECKPOINT
    if not checkpoint.exists() or not (folder / MANIFEST).exists():
        print(f"{name}: {run_dir} has no SASRec stage; retraining", flush=True)
        return None
    model, trained = load_sasrec_with_config(checkpoint)
    differ = changed_fields(asdict(trained), {"resolved": asdict(config), "defaults": {}})
    if differ:
        print(f"{name}: the run's SASRec stage was trained with other settings ({differ}); retraining", flush=True)
        return None
    info = read_manifest(folder, "embed")
    fit = info["modalities"]["collab"]
    return scored_row(name, model, config, fields, dataset, {
        "epochs": fit["epochs"], "best_epoch": fit["best_epoch"], "train_seconds": round(fit["seconds"], 1),
        "train_samples_per_second": fit["train_samples_per_second"], "n_train_windows": fit["n_train_windows"],
        "load_average_before_after": None, "git_commit": None,
        "from_run_stage": f"{folder.name}/{SASREC_DIR}/{CHECKPOINT} (written {info['created']})",
    })


def select(variants: dict[str, dict]) -> str:
    """The variant with the best validation NDCG@10 (the first in table order on ties); test is never read."""
    return max(variants, key=lambda v: variants[v]["valid"][SELECT_BY])


NOT_SETTINGS = frozenset({"progress_bar", "num_threads", "eval_batch_size"})   # change speed or display only


def resolved_base(fields: dict, max_items: int) -> dict:
    """The bench setting as SASRecTrainConfig resolves it, and the dataclass defaults (the JSON keeps both, so
    bench/summary.py can tell what each row changed without importing torch)."""
    from genrec.lit.sasrec import SASRecTrainConfig

    return {"resolved": asdict(SASRecTrainConfig(**fields, eval_max_items=max_items)),
            "defaults": asdict(SASRecTrainConfig())}


def changed_fields(config: dict, base: dict) -> str:
    """The settings a row was trained with that differ from the bench setting (``base``: resolved_base's).

    Read from the row's stored config, not the fields it asked for: a row kept from a run under an older bench
    setting then names what it differs in. A field the row's config lacks (added to SASRecTrainConfig later)
    had its dataclass default then.
    """
    config = {**base["defaults"], **config}
    return ", ".join(f"{k}={config[k]}" for k, v in base["resolved"].items() if k not in NOT_SETTINGS
                     and config.get(k) != v)


def markdown(out: dict) -> str:
    chosen = out["selected"]
    lines = [f"**{out['dataset']}: SASRec variants, selected by validation {SELECT_BY} "
             f"(base: {out['base']['config']} `stages.embed.sasrec`)**", "",
             "| variant | changed fields | " + " | ".join(f"valid {m}" for m in SHOWN) + " | "
             + " | ".join(f"test {m}" for m in SHOWN) + " | best epoch / epochs | train s |",
             "|---|---|" + "---|" * (2 * len(SHOWN) + 2)]
    for name, row in out["variants"].items():
        mark = " **(selected)**" if name == chosen else ""
        if "resolved" in out["base"]:
            changed = changed_fields(row["config"], out["base"])
        else:   # a JSON from before the base was stored resolved: every row ran under this one base
            changed = ", ".join(f"{k}={v}" for k, v in row["fields"].items() if out["base"]["fields"].get(k) != v)
        changed = changed or "—"
        cells = [f"{row[s][m]:.4f}" for s in ("valid", "test") for m in SHOWN]
        stage = " (the run's stage)" if row.get("from_run_stage") else ""   # --base-from-run: not retrained
        lines.append(f"| {name}{mark} | {changed} | " + " | ".join(cells)
                     + f" | {row['best_epoch']} / {row['epochs']} | {row['train_seconds']:.0f}{stage} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/sasrec.py", description=__doc__.strip().splitlines()[0],
                                epilog="variants: " + "; ".join(f"{k} {v or '(bench setting)'}"
                                                               for k, v in VARIANTS.items()))
    p.add_argument("--dataset", default=None, help="folder name in ../shared/data, e.g. Beauty, Sports_and_Outdoors")
    p.add_argument("--smoke", action="store_true", help="the built-in demo catalogue, 2 epochs per variant (CI)")
    p.add_argument("--variants", nargs="+", default=None, choices=sorted(VARIANTS),
                   help="variants to (re)train; the others already in the JSON are kept (default: all)")
    p.add_argument("--run-dir", type=Path, default=None, help="the run folder (default bench/runs/NAME)")
    p.add_argument("--results-dir", type=Path, default=RESULTS, help="where sasrec_NAME.json and .md go")
    p.add_argument("--base-from-run", action="store_true",
                   help="score the bench setting's row (default) from the run's own SASRec stage "
                        "(RUN/features/sasrec, from bench/run.py) instead of retraining it, when that stage "
                        "trained the same settings")
    a = p.parse_args(argv)
    if a.smoke == (a.dataset is not None):
        p.error("give --dataset NAME or --smoke (exactly one)")
    from genrec.data.dataset import load_dataset
    from genrec.io import machine_info, write_json_atomic, write_text_atomic

    name = "smoke" if a.smoke else a.dataset
    names = a.variants or (list(SMOKE_VARIANTS) if a.smoke else list(VARIANTS))
    cfg_path, base, (raw, stages_cfg) = base_setting(name, a.smoke)
    run_dir = prepared_run(name, a.smoke, a.run_dir or default_run_dir(name), raw, stages_cfg)
    dataset = load_dataset(run_dir)

    path = a.results_dir / f"sasrec_{name}.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    stats = {"n_users": len(dataset.sequences), "n_items": dataset.n_items, "max_items": dataset.max_items}
    kept = previous.get("variants", {}) if previous.get("dataset_stats") == stats else {}
    if previous and not kept:
        print(f"{path} holds other data (or none): its variants are not kept", flush=True)
    out = {"dataset": name, "git_commit": git_commit(), "machine": machine_info(), "dataset_stats": stats,
           "base": {"config": cfg_path, "fields": base, **resolved_base(base, dataset.max_items)},
           "selection": f"validation {SELECT_BY}",
           "variants": dict(kept)}
    a.results_dir.mkdir(parents=True, exist_ok=True)
    for variant in names:
        fields = {**base, **VARIANTS[variant], **(SMOKE_OVERRIDES if a.smoke else {})}
        reused = stage_row(variant, fields, dataset, run_dir) if a.base_from_run and variant == "default" else None
        out["variants"][variant] = reused or run_variant(variant, fields, dataset, run_dir)
        out["variants"] = {k: out["variants"][k] for k in VARIANTS if k in out["variants"]}  # table order
        out["selected"] = select(out["variants"])
        write_json_atomic(path, out)          # after every variant: a long grid survives an interruption
        write_text_atomic(path.with_suffix(".md"), markdown(out))
    print(markdown(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
