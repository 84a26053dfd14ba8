"""Reproduce a results-table row: the whole pipeline on ../shared/data/NAME with a checked-in config.

    python bench/run.py --dataset Office          # writes bench/results/Office.json and Office.md
    python bench/run.py --smoke                   # the built-in demo, small and fast (CI runs it)

Stages: prepare -> embed -> tokenize -> train (Lightning CLI, the dataset's config family in configs/) ->
evaluate (genrec, SASRec and popularity on the same split with the same metric functions).
Each stage's wall time and the process's peak memory are recorded with machine info and the
git commit. Not run by pytest (except --smoke through tests/test_bench.py).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared" / "data").resolve()
RESULTS = REPO / "bench" / "results"
RESULT_KEYS = ("dataset", "git_commit", "machine", "versions", "stages", "peak_rss_mb", "metrics", "config",
               "dataset_stats", "tokenizer", "train")
SYSTEM_KEYS = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20", "invalid_rate", "n_users",
               "seconds")


TRAINING_SIDE = ("embed", "tokenize", "train")   # the stages a peer's fit budget is measured against
PIPELINE = ("prepare", "embed", "tokenize", "train", "evaluate")   # `genrec pipeline`; not the bench's extra
                                                                    # history-removed scoring


def pipeline_minutes(result: dict) -> float:
    """genrec's pipeline wall time in one result (PIPELINE's stages), in minutes."""
    return sum(float(result["stages"][stage]) for stage in PIPELINE) / 60


def training_side_seconds(result: dict) -> float:
    """genrec's embed + tokenize + train wall time in one result: what a peer's fit budget is compared with."""
    return sum(float(result["stages"][stage]) for stage in TRAINING_SIDE)


def peer_reference(result: dict) -> dict:
    """What a peer's fit budget was measured against: the genrec run in ``result`` (kept with the peer's entry)."""
    return {"genrec_training_side_seconds": round(training_side_seconds(result), 2),
            "genrec_commit": result.get("git_commit")}


def carried_peers(previous: dict | None, result: dict) -> dict:
    """A previous result's peers, kept when genrec is re-run on the same data.

    A peer's metrics depend only on the dataset (same splits, same text vectors), so a genrec re-run must not
    drop an hours-long cornac run. Each entry keeps the genrec run its budget was set against; a previous
    result of different data (other counts) contributes nothing.
    """
    if not previous or not previous.get("peers"):
        return {}
    if previous.get("dataset_stats") != result.get("dataset_stats"):
        print("previous result has other data: its peers are not carried over", flush=True)
        return {}
    return {name: {**peer_reference(previous), **peer} for name, peer in previous["peers"].items()}


def default_run_dir(dataset: str) -> Path:
    return REPO / "bench" / "runs" / dataset


def add_existing_run_args(p: argparse.ArgumentParser) -> None:
    """--dataset, --run-dir, --results-dir of a script that reads a run bench/run.py already made."""
    p.add_argument("--dataset", required=True, help="a dataset already run by bench/run.py, e.g. Beauty")
    p.add_argument("--run-dir", type=Path, default=None, help="the bench run folder (default bench/runs/NAME)")
    p.add_argument("--results-dir", type=Path, default=RESULTS)


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, kids) / 1024, 1)


def validate_result(result: dict) -> None:
    """The result JSON schema: raises ValueError naming the first missing or malformed field."""
    for key in RESULT_KEYS:
        if key not in result:
            raise ValueError(f"result is missing '{key}'")
    for system in ("genrec", "sasrec", "popularity"):
        if system not in result["metrics"]:
            raise ValueError(f"metrics is missing system '{system}'")
        for key in SYSTEM_KEYS:
            value = result["metrics"][system].get(key)
            if not isinstance(value, (int, float)):
                raise ValueError(f"metrics.{system}.{key} must be a number, got {value!r}")
    for stage in PIPELINE:
        if not isinstance(result["stages"].get(stage), (int, float)):
            raise ValueError(f"stages.{stage} must be the stage's wall time in seconds")


def peer_note(peer: dict) -> str:
    """How a peer was fitted, for its table row: under a wall-time budget (TIGER) or for a number of epochs."""
    if "budget_seconds" in peer:
        return f"fit budget {peer['budget_seconds']:.0f} s, {peer['seq2seq_epochs']:g} epochs"
    return f"epoch {peer['best_epoch']} of {peer['epochs']}, best on validation"


def markdown(result: dict) -> str:
    from genrec.evaluate import markdown_table

    stages = ", ".join(f"{k} {v:.0f} s" for k, v in result["stages"].items())
    rows = dict(result["metrics"])
    for name, peer in result.get("peers", {}).items():   # added by bench/cornac_tiger.py, bench/cornac_sasrec.py
        rows[f"{name} ({peer_note(peer)})"] = peer
    filtered = result.get("metrics_exclude_history")
    extra = ("" if not filtered else "\n\n" + markdown_table(
        filtered, title=f"{result['dataset']} (test split, full ranking without each user's history items)"))
    return (markdown_table(rows, title=f"{result['dataset']} (test split, full ranking)") + extra
            + f"\n\nwall time: {stages}; pipeline {pipeline_minutes(result):.1f} min; "
              f"peak RSS {result['peak_rss_mb']:.0f} MB; commit {str(result['git_commit'])[:10]}\n")


PLOTS = {"sid/report.png": "codebook", "plots/training_curve.png": "training_curve"}


def copy_plots(run_dir: Path, results: Path, name: str) -> list[Path]:
    """Keep the run's codebook-usage and training-curve PNGs next to its JSON (the run folder is scratch)."""
    import shutil

    from genrec.io import atomic_path

    copied = []
    for rel, kind in PLOTS.items():
        if (run_dir / rel).exists():
            with atomic_path(results / f"{name}_{kind}.png") as tmp:
                shutil.copyfile(run_dir / rel, tmp)
            copied.append(results / f"{name}_{kind}.png")
    return copied


# Which config family each dataset of ../shared/data belongs to (one YAML per kind of data).
CONFIGS = {"Office": "configs/text_rich.yaml", "Scientific": "configs/text_rich.yaml",
           "Scientific_DeCoRec_mm": "configs/multimodal.yaml",
           "Beauty": "configs/sparse.yaml", "Sports_and_Outdoors": "configs/sparse.yaml", "smoke": "configs/smoke.yaml"}


def bench_config(dataset: str, smoke: bool = False) -> tuple[Path, dict]:
    """A dataset's config family: its YAML path and its ``stages:`` section plus ``train_config``."""
    from genrec.config import load_yaml

    name = "smoke" if smoke else dataset
    if name not in CONFIGS:
        raise SystemExit(f"no config family for {name!r}; add it to CONFIGS in bench/run.py (known: {sorted(CONFIGS)})")
    cfg_path = REPO / CONFIGS[name]
    return cfg_path, {**(load_yaml(cfg_path).get("stages") or {}), "train_config": CONFIGS[name]}


def write_outputs(results: Path, stem: str, out: dict, table: str, draw) -> None:
    """Write STEM.json, STEM.md and (``draw(path)``) STEM.png into ``results``, atomically, and print the table."""
    from genrec.io import write_json_atomic, write_text_atomic

    results.mkdir(parents=True, exist_ok=True)
    write_json_atomic(results / f"{stem}.json", out)
    write_text_atomic(results / f"{stem}.md", table)
    draw(results / f"{stem}.png")
    print(table)


def stage_config(raw: dict, smoke: bool):
    """The prepare / embed / tokenize settings of a bench config, as a PipelineConfig."""
    from genrec.pipeline import demo_pipeline_config, stage_config_from_dict

    stages_cfg = stage_config_from_dict(raw)
    if smoke:
        stages_cfg.embed.image.image_size = demo_pipeline_config().embed.image.image_size
    return stages_cfg


def bench_source(dataset: str, smoke: bool, raw: dict, run_dir: Path) -> Path:
    """The source folder a bench run prepares: ../shared/data/NAME, or (smoke) a small demo written beside the run."""
    if smoke:
        from genrec.data.demo import DemoConfig, write_demo_source

        source = run_dir.parent / f"{run_dir.name}_source"
        if not source.exists():
            write_demo_source(source, seed=0, config=DemoConfig(**raw.get("demo", {})))
        return source
    source = SHARED / dataset
    if not source.exists():
        raise SystemExit(f"{source} not found: bench/run.py reads ../shared/data/{dataset}")
    return source


STEPS = "steps"   # results/steps/NAME__STEP.json: one result per named step (bench/run.py --step)


def slug_step(step: str) -> str:
    """A step label as a file-name part: letters, digits, '-', '.' and '_' kept, anything else '-'."""
    return "".join(c if c.isalnum() or c in "-._" else "-" for c in step).strip("-") or "step"


def kept_stages(run_dir: Path, stages_cfg, previous: dict | None) -> dict[str, dict]:
    """The leading stages (prepare, embed, tokenize) ``run_dir`` holds up to date for ``stages_cfg``, each with
    the wall seconds and commit of the previous result that built them; a stage the previous result does not
    time (or another dataset's result) is rebuilt, so every figure in a result was measured."""
    from genrec.pipeline import STAGE_FOLDERS, stale_stages

    stale = stale_stages(run_dir, stages_cfg)
    kept: dict[str, dict] = {}
    for stage in STAGE_FOLDERS:
        took = ((previous or {}).get("stages") or {}).get(stage)
        if stage in stale or not isinstance(took, (int, float)):
            break
        kept[stage] = {"seconds": took, "git_commit": previous.get("git_commit")}
    return kept


def stage_timer(seconds: dict[str, float]):
    """``timed(name, fn)``: run ``fn()``, record its wall seconds in ``seconds[name]``, print them,
    return its result."""
    def timed(name, fn):
        t0 = time.perf_counter()
        out = fn()
        seconds[name] = round(time.perf_counter() - t0, 2)
        print(f"== {name}: {seconds[name]:.1f} s", flush=True)
        return out
    return timed


def run_bench(dataset: str, *, smoke: bool, run_dir: Path, train_args: list[str], results: Path = RESULTS,
              raw: dict | None = None, systems: tuple[str, ...] = ("genrec", "sasrec", "popularity"),
              name: str | None = None, reuse_stages: bool = False, step: str | None = None) -> dict:
    """Run every stage into ``run_dir`` and write ``results/NAME.json`` and ``.md``.

    ``raw`` replaces the checked-in stage config (bench/ablation.py passes variants of it); a run that
    evaluates fewer ``systems`` than all three is not a results-table row and skips the schema check.
    ``reuse_stages``: keep prepare / embed / tokenize where ``run_dir`` already holds them with the same
    config and inputs (genrec.pipeline.stale_stages); their wall time is the previous result's, and the
    result names them under ``reused_stages``.
    """
    from genrec.data.dataset import load_dataset
    from genrec.data.prepare import prepare
    from genrec.evaluate import EvaluateConfig, evaluate
    from genrec.features.stage import embed
    from genrec.io import machine_info, package_versions, write_json_atomic, write_text_atomic
    from genrec.pipeline import STAGE_FOLDERS, train_run
    from genrec.tokenizer.stage import tokenize

    cfg_path, checked_in = bench_config(dataset, smoke)
    raw = checked_in if raw is None else raw
    stages_cfg = stage_config(raw, smoke)
    train_yaml = raw.get("train_config", "configs/demo.yaml")
    seconds: dict[str, float] = {}
    timed = stage_timer(seconds)

    name = name or ("smoke" if smoke else dataset)
    previous_path = results / f"{name}.json"
    previous = json.loads(previous_path.read_text()) if previous_path.exists() else None
    reused = kept_stages(run_dir, stages_cfg, previous) if reuse_stages else {}
    if reused:
        print(f"reusing {', '.join(reused)} of {run_dir} (same config and inputs)", flush=True)

    def stage(name_: str, fn):
        if name_ in reused:
            seconds[name_] = reused[name_]["seconds"]
            return json.loads((run_dir / STAGE_FOLDERS[name_] / "manifest.json").read_text())
        return timed(name_, fn)

    source = bench_source(dataset, smoke, raw, run_dir)
    manifest = stage("prepare", lambda: prepare(source, run_dir, stages_cfg.prepare, name=dataset))
    emb = stage("embed", lambda: embed(run_dir, stages_cfg.embed))
    tok = stage("tokenize", lambda: tokenize(run_dir, stages_cfg.tokenize))
    cli = timed("train", lambda: train_run(run_dir, train_yaml, train_args))
    search = cli.model.hparams.get("search", "beam")   # decode as validation did (model.search)
    metrics = timed("evaluate", lambda: evaluate(run_dir, EvaluateConfig(split="test", systems=systems, search=search)))
    # The same checkpoints ranked without each user's history items, the convention of RecBole's and S3-Rec's
    # full-sort evaluation: published figures on these splits may use either, so the table shows both.
    filtered = timed("evaluate_exclude_history", lambda: evaluate(run_dir, EvaluateConfig(
        split="test", systems=systems, search=search, exclude_history=True, output="metrics_exclude_history.json")))
    throughput = next((c.targets_per_second for c in cli.trainer.callbacks if hasattr(c, "targets_per_second")), None)
    ds = load_dataset(run_dir)
    result = {
        "dataset": dataset,
        "git_commit": git_commit(),
        "machine": machine_info(),
        "versions": package_versions(),
        "stages": seconds,
        "peak_rss_mb": peak_rss_mb(),
        "metrics": {s: metrics["systems"][s] for s in systems},
        "metrics_exclude_history": {s: filtered["systems"][s] for s in systems},
        "config": {"bench": str(cfg_path.relative_to(REPO)), "train": train_yaml, "train_args": train_args,
                   "stages": raw},
        "dataset_stats": {k: manifest.get(k) for k in ("n_users", "n_items", "n_interactions", "format")},
        "embed": {k: emb.get(k) for k in ("modalities", "coverage") if k in emb},
        "tokenizer": {k: tok.get(k) for k in ("levels", "collisions_raw", "collisions_before_dedup", "reconstruction",
                                             "seconds") if k in tok},
        "train": {"best_val_ndcg@10": float(cli.trainer.checkpoint_callback.best_model_score or 0.0),
                  "epochs": cli.trainer.current_epoch, "train_targets_per_second": throughput},
        "n_items_check": ds.n_items,
    }
    if reused:
        result["reused_stages"] = reused
    if len(systems) == 3:
        validate_result(result)
    results.mkdir(parents=True, exist_ok=True)
    peers = carried_peers(previous, result)
    if peers:
        result["peers"] = peers
        print(f"kept peers from the previous {previous_path.name}: {', '.join(peers)}", flush=True)
    write_json_atomic(results / f"{name}.json", result)
    write_text_atomic(results / f"{name}.md", markdown(result))
    if step:   # kept beside the table row, so the results docs list each step's figures (bench/summary.py)
        write_json_atomic(results / STEPS / f"{name}__{slug_step(step)}.json",
                          result | {"step": step, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    copy_plots(run_dir, results, name)
    print(markdown(result))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/run.py", description=__doc__.strip().splitlines()[0])
    p.add_argument("--dataset", default=None, help="folder name in ../shared/data, e.g. Office, Beauty, Scientific")
    p.add_argument("--smoke", action="store_true", help="run on a small built-in demo catalogue (CI)")
    p.add_argument("--run-dir", type=Path, default=None, help="where the run is written (default bench/runs/NAME)")
    p.add_argument("--results-dir", type=Path, default=RESULTS, help="where NAME.json and NAME.md go")
    p.add_argument("--with-cornac", action="store_true",
                   help="then run cornac's SASRec and TIGER on the same run (bench/cornac_sasrec.py, "
                        "bench/cornac_tiger.py; needs the bench extra)")
    p.add_argument("--reuse-stages", action="store_true",
                   help="keep prepare / embed / tokenize where the run folder holds them with the same config and "
                        "inputs (their wall time is carried from the previous NAME.json); e.g. after changing only "
                        "training flags")
    p.add_argument("--step", default=None,
                   help="also keep this result as a named step (results/steps/NAME__STEP.json), listed in "
                        "bench/RESULTS.md's table of steps")
    p.epilog = "Any other flags go to the Lightning training CLI, e.g. --trainer.max_epochs=5"
    a, train_args = p.parse_known_args(argv)
    if a.smoke == (a.dataset is not None):
        p.error("give --dataset NAME or --smoke (exactly one)")
    name = "smoke" if a.smoke else a.dataset
    run_dir = a.run_dir or default_run_dir(name)
    run_bench(name, smoke=a.smoke, run_dir=run_dir, train_args=train_args, results=a.results_dir,
              reuse_stages=a.reuse_stages, step=a.step)
    if a.with_cornac:   # SASRec first: minutes, where TIGER's budget is a multiple of genrec's training
        import cornac_sasrec
        import cornac_tiger

        cornac_sasrec.add_peer(a.results_dir / f"{name}.json", run_dir)
        cornac_tiger.add_peer(a.results_dir / f"{name}.json", run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
