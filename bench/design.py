"""Which model design learns the most per second of CPU: the benchmark behind genrec's default model.

    python bench/design.py --dataset Office       # 8 designs x 240 s of training + scoring, about 50 min
    python bench/design.py --smoke                # the small demo, a few seconds per design (CI)

Every design trains from the same seed, on the same data, for the same wall-time budget of
training (validation off; a constant learning rate after warmup, so no schedule depends on a step
count the budget cuts short). TrainingTimeBudget keeps a copy of the weights at 1/8, 1/4, 1/2 and
all of the budget; afterwards each copy is scored on a fixed subset of validation users (full
ranking; beam 20 for the code heads, exact scoring for the parallel head), and the last one on all
validation users and on test. The design with the best validation NDCG@10 at the budget wins.

Writes bench/results/design_NAME.json, .md and a learning-curve PNG (validation NDCG@10 against
training seconds).
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from ablation import kept_rows  # noqa: E402
from layouts import RQ_AUTOREGRESSIVE  # noqa: E402
from run import RESULTS, bench_config, bench_source, git_commit, stage_config, write_outputs  # noqa: E402

MARK_FRACTIONS = (1 / 8, 1 / 4, 1 / 2)        # where the learning curve is sampled, as parts of the budget
PQ_PER_MODALITY = {"method": "pq", "modalities": "separate", "n_levels": 8}   # when the bench config is not PQ
TIGER_LR = 1e-3                                # AdamW for the T5 (CausalSID's 5e-3 is tuned for the small model)
CAUSAL = {"arch": "causal", "head": "autoregressive", "item_id_embedding": False, "item_id_init": "normal"}


@dataclass(frozen=True)
class Design:
    name: str
    layout: str                                     # "rq": TIGER's 3 RQ-VAE levels (+ dedup); "pq": PQ digits
    model: dict = field(default_factory=dict)       # GenRecModule arguments over the training YAML's
    data: dict = field(default_factory=dict)        # SIDDataModule arguments over the training YAML's
    encoder_tokens_per_item: str = "1"


DESIGNS = (
    Design("TIGER: T5 4+4 layers over every prefix", "rq", CAUSAL | {"arch": "tiger", "lr": TIGER_LR},
           {"use_content": False}, encoder_tokens_per_item="4"),
    Design("one token per item, every prefix, code head", "rq", CAUSAL,
           {"use_content": False, "training_examples": "prefix"}),
    Design("one token per item, causal (every position per pass)", "rq", CAUSAL,
           {"use_content": False}),
    Design("causal + item-id embedding", "rq", CAUSAL | {"item_id_embedding": True},
           {"use_content": False}),
    Design("causal + item ids warm-started from the SASRec table", "rq",
           CAUSAL | {"item_id_embedding": True, "item_id_init": "collab"},
           {"use_content": False}),
    Design("causal + item ids + content projection", "rq", CAUSAL | {"item_id_embedding": True},
           {"use_content": True}),
    Design("causal + item ids + content, PQ digits + parallel head", "pq",
           CAUSAL | {"item_id_embedding": True, "head": "parallel"},
           {"use_content": True}),
    Design("PQ + parallel head + content + warm-started item ids", "pq",
           CAUSAL | {"item_id_embedding": True, "head": "parallel", "item_id_init": "collab"},
           {"use_content": True}),
)


def layout_config(raw: dict, layout: str) -> dict:
    """The bench config with the tokenizer of one layout (the other stages unchanged)."""
    raw = copy.deepcopy(raw)
    tokenize = raw.setdefault("tokenize", {})
    if layout == "rq":
        tokenize.update(RQ_AUTOREGRESSIVE)
    elif tokenize.get("method") != "pq":
        tokenize.pop("rqvae", None)   # RQ-VAE settings are refused with method pq
        tokenize.update(PQ_PER_MODALITY)
    return raw


def share_stages(src: Path, dst: Path) -> None:
    """Give ``dst`` the same dataset/ and features/ as ``src`` (one SASRec training serves both layouts)."""
    from genrec.io import write_folder_atomic
    from genrec.pipeline import STAGE_FOLDERS

    for stage in ("prepare", "embed"):
        folder = STAGE_FOLDERS[stage]
        manifest = (src / folder / "manifest.json").read_text()
        if (dst / folder / "manifest.json").exists() and (dst / folder / "manifest.json").read_text() == manifest:
            continue
        # copied whole into a temporary sibling, then renamed: an interrupted copy leaves no half folder
        write_folder_atomic(dst / folder, lambda tmp: shutil.copytree(src / folder, tmp, dirs_exist_ok=True))


def build_runs(dataset: str, smoke: bool, raw: dict, run_root: Path) -> dict[str, Path]:
    """Both layouts' run folders, each stage built only where missing or stale."""
    from genrec.pipeline import ensure_stages

    runs = {"pq": run_root / "pq", "rq": run_root / "rq"}
    source = bench_source(dataset, smoke, raw, runs["pq"])
    ensure_stages(runs["pq"], source=source, config=stage_config(layout_config(raw, "pq"), smoke))
    runs["rq"].mkdir(parents=True, exist_ok=True)
    share_stages(runs["pq"], runs["rq"])
    ensure_stages(runs["rq"], source=source, config=stage_config(layout_config(raw, "rq"), smoke))
    return runs


def training_setup(train_yaml: dict, design: Design, run: Path):
    """The DataModule and module of one design: the training YAML's sizes and optimiser, the design's choices."""
    from genrec.lit.data import SIDDataModule
    from genrec.lit.module import GenRecModule

    data = ({k: v for k, v in {**train_yaml.get("data", {}), **design.data}.items() if k != "max_items"}
            | {"run": str(run)})
    model = {**train_yaml.get("model", {}), **design.model, "scheduler": "constant"}
    dm = SIDDataModule(**data)
    return dm, GenRecModule(dims=dm.model_dims, **model)


def score(module, examples, max_items: int) -> tuple[dict, float]:
    """Full-ranking metrics of the module on one split, and the decoding seconds."""
    from genrec.evaluate import EvaluateConfig, evaluate_genrec
    from genrec.metrics import ranking_metrics

    module.eval()
    t0 = time.perf_counter()
    ranked = evaluate_genrec(module.genrec, examples, EvaluateConfig())
    return ranking_metrics(ranked, examples.targets), round(time.perf_counter() - t0, 2)


def training_transitions(split) -> int:
    """Next-item targets in one epoch: every transition of every training sequence."""
    return int(sum(max(len(seq) - 1, 0) for seq in split.train))


def run_design(design: Design, run: Path, train_yaml: dict, budget: float, *, curve_users: int | None,
               max_users: int | None, seed: int, progress: bool) -> dict:
    import lightning as L

    from genrec.evaluate import subset
    from genrec.lit.callbacks import TrainingTimeBudget

    L.seed_everything(seed, verbose=False)
    dm, module = training_setup(train_yaml, design, run)
    timer = TrainingTimeBudget(budget, marks=tuple(budget * f for f in MARK_FRACTIONS))
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=-1, limit_val_batches=0, num_sanity_val_steps=0,
                        logger=False, enable_checkpointing=False, enable_model_summary=False, callbacks=[timer],
                        enable_progress_bar=progress, use_distributed_sampler=False)
    trainer.fit(module, datamodule=dm)
    split = dm.dataset.split
    # The curve is sampled on one fixed subset of validation users (the same for every design), so
    # a slow decoder (TIGER's beam search) does not dominate the benchmark's time; the point at the
    # budget is also scored on all validation users, and on test.
    curve_examples = subset(split.valid, curve_users, seed)
    curve, scored = [], {}
    for snap in timer.snapshots:
        key = id(snap)                   # marks passed by one slow step share a snapshot: score it once
        if key not in scored:
            module.load_state_dict(snap["state_dict"])
            scored[key] = score(module, curve_examples, dm.max_items)
        metrics, seconds = scored[key]
        curve.append({k: snap[k] for k in ("seconds", "step", "epoch", "targets")} | {"valid_subset": metrics})
    valid_examples = subset(split.valid, max_users, seed)
    valid, _ = score(module, valid_examples, dm.max_items)        # the weights at the budget
    test_examples = subset(split.test, max_users, seed)
    test, test_seconds = score(module, test_examples, dm.max_items)
    return {
        "layout": design.layout, "model": design.model, "data": design.data,
        "encoder_tokens_per_item": design.encoder_tokens_per_item,
        "training_examples": dm.example_mode(),
        "n_parameters": sum(p.numel() for p in module.parameters()),
        # epochs as passes over the training transitions (each is one target per epoch in both example modes)
        "train_seconds": round(timer.elapsed, 2), "steps": trainer.global_step,
        "epochs": round(timer.targets / max(training_transitions(split), 1), 2),
        "targets_per_second": round(timer.targets / max(timer.elapsed, 1e-9), 1),
        "curve_users": len(curve_examples), "curve": curve,
        "valid_users": len(valid_examples), "valid": valid,
        "test_users": len(test_examples), "test": test,
        "decode_ms_per_user": round(1000 * test_seconds / max(len(test_examples), 1), 3),
    }


def _defaults(cls) -> dict:
    import inspect

    return {k: v.default for k, v in inspect.signature(cls.__init__).parameters.items()}


def matches_config(design: Design, train_yaml: dict) -> bool:
    """Whether the design is what the dataset's checked-in training YAML trains (apart from the schedule)."""
    from genrec.lit.data import CODE_HEADS, SIDDataModule
    from genrec.lit.module import GenRecModule

    model = _defaults(GenRecModule) | train_yaml.get("model", {})
    if model.get("head") is None:      # the head follows the tokenizer the config's stages build
        method = ((train_yaml.get("stages") or {}).get("tokenize") or {}).get("method", "rqvae")
        model["head"] = CODE_HEADS.get(method, "autoregressive")
    data = _defaults(SIDDataModule) | train_yaml.get("data", {})
    return (all(model.get(k) == v for k, v in design.model.items())
            and all(data.get(k) == v for k, v in design.data.items()))


def table(dataset: str, out: dict) -> str:
    first = next(iter(out["designs"].values()))
    marks = " | ".join(f"@{f * out['budget_seconds']:g} s" for f in (*MARK_FRACTIONS, 1))
    lines = [f"**Design benchmark on {dataset}**: {out['budget_seconds']:g} s of training per design; validation "
             f"NDCG@10 on {first['curve_users']:,} users along the way, then on all {first['valid_users']:,} "
             "validation users and on test at the budget (full ranking)", "",
             f"| design | codes | tokens/item | targets/s | epochs | {marks} | **valid** | test | decode ms/user |",
             "|---|---|---|---|---|" + "---|" * (len(MARK_FRACTIONS) + 1) + "---|---|---|"]
    for name, r in out["designs"].items():
        curve = " | ".join(f"{p['valid_subset']['ndcg@10']:.4f}" for p in r["curve"])
        tags = (" (winner)" if name == out["winner"] else "") + (" [config]" if r["matches_config"] else "")
        lines.append(f"| {name}{tags} | {r['layout']} | {r['encoder_tokens_per_item']} | "
                     f"{r['targets_per_second']:,.0f} | {r['epochs']:g} | {curve} | **{r['valid']['ndcg@10']:.4f}** | "
                     f"{r['test']['ndcg@10']:.4f} | {r['decode_ms_per_user']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(dataset: str, out: dict, path: Path) -> Path:
    from genrec.plots import plt, save_png

    fig, ax = plt.subplots(figsize=(10, 4.2))
    for name, r in out["designs"].items():
        ax.plot([p["seconds"] for p in r["curve"]], [p["valid_subset"]["ndcg@10"] for p in r["curve"]], marker="o",
                label=name, lw=2.5 if name == out["winner"] else 1.2)
    ax.set(xlabel="training seconds (2 CPU cores)", ylabel="validation NDCG@10",
           title=f"What each design learns per second on {dataset}")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_png(fig, path)


def run_designs(dataset: str, smoke: bool, budget: float, run_root: Path, results: Path, only: list[str] | None,
                *, curve_users: int | None, max_users: int | None, seed: int = 0) -> dict:
    from genrec.config import load_yaml
    from genrec.io import machine_info

    _, raw = bench_config(dataset, smoke)
    train_yaml = load_yaml(REPO / raw.get("train_config", "configs/demo.yaml"))
    chosen = [d for d in DESIGNS if not only or d.name in only]
    if only and len(chosen) != len(only):
        raise SystemExit(f"unknown designs {sorted(set(only) - {d.name for d in DESIGNS})}; "
                         f"choose from {[d.name for d in DESIGNS]}")
    name = "smoke" if smoke else dataset
    settings = {"budget_seconds": budget, "curve_users": curve_users, "max_users": max_users, "seed": seed}
    designs = kept_rows(results / f"design_{name}.json", [d.name for d in DESIGNS], only, key="designs", same=settings)
    runs = build_runs(dataset, smoke, raw, run_root)
    for design in chosen:
        print(f"==== design {dataset}: {design.name} ({budget:.0f} s of training)", flush=True)
        t0 = time.perf_counter()
        designs[design.name] = run_design(design, runs[design.layout], train_yaml, budget, curve_users=curve_users,
                                          max_users=max_users, seed=seed, progress=not smoke)
        # wall time of the whole row (training, then scoring every snapshot): what the benchmark costs
        designs[design.name] |= {"matches_config": matches_config(design, train_yaml), "git_commit": git_commit(),
                                 "seconds": round(time.perf_counter() - t0, 1)}
        print(f"     validation NDCG@10 {designs[design.name]['valid']['ndcg@10']:.4f}", flush=True)
    designs = {d.name: designs[d.name] for d in DESIGNS if d.name in designs}   # table order
    winner = max(designs, key=lambda n: designs[n]["valid"]["ndcg@10"])
    out = {"dataset": name, "git_commit": git_commit(), "machine": machine_info(), **settings,
           "mark_fractions": list(MARK_FRACTIONS), "train_config": raw.get("train_config"),
           "winner": winner, "designs": designs}
    write_outputs(results, f"design_{name}", out, table(name, out), lambda path: plot(name, out, path))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/design.py", description=__doc__.strip().splitlines()[0])
    p.add_argument("--dataset", default=None,
                   help="a folder of ../shared/data listed in bench/run.py CONFIGS, e.g. Office")
    p.add_argument("--smoke", action="store_true", help="the small built-in demo, a few seconds per design (CI)")
    p.add_argument("--budget-seconds", type=float, default=None,
                   help="training wall time per design (default 240; --smoke 3)")
    p.add_argument("--curve-users", type=int, default=1000,
                   help="validation users the learning curve is scored on (a fixed random subset; default 1000)")
    p.add_argument("--max-users", type=int, default=None,
                   help="score the final validation and test on a fixed subset of this many users (default all; "
                        "--smoke 150)")
    p.add_argument("--designs", nargs="*", default=None, help="run only these designs (names as in the table)")
    p.add_argument("--run-root", type=Path, default=None, help="run folders (default bench/runs/design/NAME)")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    if a.smoke == (a.dataset is not None):
        p.error("give --dataset NAME or --smoke (exactly one)")
    name = "smoke" if a.smoke else a.dataset
    budget = a.budget_seconds or (3.0 if a.smoke else 240.0)
    run_root = a.run_root or REPO / "bench" / "runs" / "design" / name
    max_users = a.max_users or (150 if a.smoke else None)
    run_designs(name, a.smoke, budget, run_root, a.results_dir, a.designs,
                curve_users=min(a.curve_users, max_users or a.curve_users), max_users=max_users)
    return 0


if __name__ == "__main__":
    sys.exit(main())
