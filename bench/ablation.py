"""Ablation: which modalities make genrec's number.

    python bench/ablation.py --dataset Scientific_DeCoRec_mm     # text / +image / +collab / all
    python bench/ablation.py --dataset Office                   # no images there: text / +collab

Every variant is the checked-in config family of the dataset (bench/run.py CONFIGS) with one
change, run end to end (prepare -> embed -> tokenize -> train -> evaluate) into its own run folder,
same seeds, same training budget (the YAML's max_epochs with early stopping on validation NDCG@10).
Writes bench/results/ablation_NAME.json, .md and a bar chart .png. Extra flags go to the Lightning CLI
of every variant, e.g. --trainer.max_epochs=20 for a cheaper pass. The code layouts (PQ or RQ codes,
fused or per modality, parallel or autoregressive head, constrained training) are bench/layouts.py's.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from run import RESULTS, bench_config, git_commit, run_bench, write_outputs  # noqa: E402


def _without_image(raw: dict) -> dict:
    raw = copy.deepcopy(raw)
    embed = raw.setdefault("embed", {})
    embed["precomputed"] = [p for p in embed.get("precomputed", []) if p.get("name") != "image"]
    embed.setdefault("image", {})["enabled"] = False
    return raw


def _with(raw: dict, section: str, **values) -> dict:
    raw = copy.deepcopy(raw)
    raw.setdefault(section, {}).update(values)
    return raw


def has_image(raw: dict) -> bool:
    """The bench config imports an image matrix (the Amazon 2014/2023 text-only folders have none)."""
    return any(p.get("name") == "image" for p in raw.get("embed", {}).get("precomputed", []))


def variants(raw: dict) -> dict[str, tuple[dict, list[str]]]:
    """name -> (stage config, extra training flags). 'all' is the checked-in config unchanged."""
    image = has_image(raw)
    text_only = _with(_without_image(raw), "embed", collab=False)
    out = {"text": (text_only, [])}
    if image:
        out["text+image"] = (_with(raw, "embed", collab=False), [])
    out["text+collab"] = (_without_image(raw), [])
    if image:
        out["all"] = (raw, [])
    return out


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def table(dataset: str, rows: dict[str, dict]) -> str:
    lines = [f"**Ablation on {dataset}** (test split, full ranking; genrec only)", "",
             "| variant | modalities | codes | Recall@10 | NDCG@10 | NDCG@20 | train s | epochs | targets/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        m = r["metrics"]["genrec"]
        lines.append(f"| {name} | {'+'.join(r['modalities'])} | {r['codes']} | {m['recall@10']:.4f} | "
                     f"{m['ndcg@10']:.4f} | {m['ndcg@20']:.4f} | {r['stages']['train']:.0f} | {r['epochs']} | "
                     f"{rate(r.get('train_targets_per_second'))} |")
    return "\n".join(lines) + "\n"


def plot(dataset: str, rows: dict[str, dict], out: Path) -> Path:
    import matplotlib.pyplot as plt

    from genrec.plots import save_png

    names = list(rows)
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(names) + 1.2))
    values = [rows[n]["metrics"]["genrec"]["ndcg@10"] for n in names]
    ax.barh(names[::-1], values[::-1], color="#4c72b0")
    for y, v in enumerate(values[::-1]):
        ax.text(v, y, f" {v:.4f}", va="center", fontsize=8)
    ax.set_xlabel("test NDCG@10")
    ax.set_title(f"genrec ablation on {dataset}")
    ax.set_xlim(0, max(values) * 1.25 if max(values) > 0 else 1)
    return save_png(fig, out)


def total_seconds(rows: dict[str, dict]) -> float:
    """The table's cost: every row's stage wall times, so it stays right when --variants re-runs a few rows."""
    return round(sum(sum(row["stages"].values()) for row in rows.values()), 1)


def previous_table(previous: Path, keep: bool, same: dict | None = None) -> dict:
    """The previous table when ``keep`` (a run that re-runs some of its rows), else {}, so the others can be kept
    (each row records the commit it ran at). A table whose fields differ from ``same`` (e.g. another budget)
    gives {}."""
    if not keep or not previous.exists():
        return {}
    loaded = json.loads(previous.read_text())
    if any(loaded.get(field) != value for field, value in (same or {}).items()):
        print(f"{previous.name} was run with other settings than {same}: its other rows are not kept", flush=True)
        return {}
    return loaded


def kept_rows(previous: Path, names: list[str], only: list[str] | None, key: str = "variants",
              same: dict | None = None) -> dict[str, dict]:
    """With ``--variants``, the other variants' rows of the previous table, so re-running one variant
    updates its row instead of dropping the rest. ``key`` is where the rows are (see previous_table)."""
    old = previous_table(previous, bool(only), same).get(key, {})
    return {name: old[name] for name in names if name in old and name not in only}


def run_ablation(dataset: str, run_root: Path, train_args: list[str], only: list[str] | None,
                 results: Path = RESULTS) -> dict:
    from genrec.io import machine_info

    _, raw = bench_config(dataset)
    every = variants(raw)
    chosen = every
    if only:
        unknown = sorted(set(only) - set(chosen))
        if unknown:
            raise SystemExit(f"unknown variants {unknown}; {dataset} has {list(chosen)}")
        chosen = {k: v for k, v in chosen.items() if k in only}
    rows = kept_rows(results / f"ablation_{dataset}.json", list(every), only)
    scratch = results / "ablation_runs"
    for name, (cfg, extra) in chosen.items():
        print(f"==== ablation {dataset}: {name}", flush=True)
        res = run_bench(dataset, smoke=False, run_dir=run_root / slug(name), train_args=[*extra, *train_args],
                        results=scratch, raw=copy.deepcopy(cfg), systems=("genrec",), name=f"{dataset}_{slug(name)}")
        rows[name] = {
            "metrics": res["metrics"],
            "modalities": sorted(res["embed"].get("modalities", {})),   # embed manifest: name -> details
            "codes": f"{cfg.get('tokenize', {}).get('method', 'rqvae')}, "
                     f"{cfg.get('tokenize', {}).get('modalities', 'fused')}",
            "constrained_training": "--model.constrained_training=true" in extra,
            "head": next((f.split("=", 1)[1] for f in extra if f.startswith("--model.head=")), "config default"),
            "stages": res["stages"],
            "epochs": res["train"]["epochs"],
            "best_val_ndcg@10": res["train"]["best_val_ndcg@10"],
            # Training throughput (next-item targets per second): the per-target cost of each head.
            "train_targets_per_second": res["train"]["train_targets_per_second"],
            "tokenizer": res["tokenizer"],
            "git_commit": res["git_commit"],
        }
    rows = {name: rows[name] for name in every if name in rows}   # table order, whatever ran last
    out = {"dataset": dataset, "git_commit": git_commit(), "machine": machine_info(), "train_args": train_args,
           "seconds": total_seconds(rows), "variants": rows}
    write_outputs(results, f"ablation_{dataset}", out, table(dataset, rows), lambda path: plot(dataset, rows, path))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/ablation.py", description=__doc__.strip().splitlines()[0],
                                epilog="Any other flags go to every variant's Lightning CLI.")
    p.add_argument("--dataset", required=True,
                   help="Scientific_DeCoRec_mm or Office (any dataset in bench/run.py CONFIGS)")
    p.add_argument("--variants", nargs="*", default=None, help="run only these variants (names as in the table)")
    p.add_argument("--run-root", type=Path, default=None, help="where variant runs go (default bench/runs/ablation)")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    a, train_args = p.parse_known_args(argv)
    run_root = a.run_root or REPO / "bench" / "runs" / "ablation" / a.dataset
    run_ablation(a.dataset, run_root, train_args, a.variants, a.results_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
