"""Which semantic-ID layout and decoding: every layout on the same features and the same training budget.

    python bench/layouts.py --dataset Office                       # every default layout, then the decode sweep
    python bench/layouts.py --dataset Office --layouts rq-fused-ar  # re-run one layout, keep the other rows
    python bench/layouts.py --dataset Beauty --decode-only --layouts rq-fused-ar --beam-widths exact   # no retraining
    python bench/layouts.py --smoke --trainer.max_epochs=1          # the demo catalogue, a few seconds a layout (CI)

A layout is a tokenizer (method, fused or per-modality codes, levels) plus the code head that reads
it: "parallel" heads are decoded exactly (every item scored), "autoregressive" heads by trie-constrained
beam search. Every layout is the dataset's config family (bench/run.py CONFIGS) with only the tokenize
section and the head changed, run end to end (prepare -> embed -> tokenize -> train -> evaluate) into its
own run folder with the same seed and budget (the YAML's max_epochs with early stopping on validation
NDCG@10). The checkpoint of each autoregressive layout is then scored on test at several beam widths
without retraining (genrec.evaluate once per width), and exactly: the model's exact top k (what a beam as
wide as the widest non-leaf trie level returns), found by genrec.decode.threshold's search, shows how much
beam search loses. Layouts trained with the item loss are also scored with ``rerankN``: a beam of N
generates the candidates, re-scored by code log-prob + the state's item logit (GenRec.recommend's
search "rerank"). SASRec is scored in the first layout's run (same features, same split).

Writes bench/results/layouts_NAME.json (one row per layout and beam width), .md (each row against the best
row and SASRec) and .png. Extra flags go to every layout's Lightning CLI, e.g. --trainer.max_epochs=2.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from ablation import previous_table, slug  # noqa: E402
from run import RESULTS, bench_config, git_commit, run_bench, write_outputs  # noqa: E402

HEADS = ("parallel", "autoregressive")
EXACT = "exact"                  # --beam-widths word for the width that keeps every trie prefix
RERANK = "rerank"                # --beam-widths prefix: "rerank50" = beam 50, then item-level re-scoring
# 20 is the protocol's floor (beam >= the largest K), as genrec.evaluate checks; reranking applies only to
# layouts trained with the item loss (ITEM_LOSS_FLAG), whose state has an item-level score
BEAM_WIDTHS = (20, 50, 100, EXACT, f"{RERANK}50")
ITEM_LOSS_FLAG = "--model.item_loss_weight"
# Beams decoded at once: users per evaluation batch = this // beam width (at most genrec.evaluate's 256), so an
# exact-width sweep over a 10k-item catalogue holds ~10 users' beams, not 256 users' (tens of GB of log-probs).
BEAM_ROWS = 1 << 16


@dataclass(frozen=True)
class Layout:
    tokenize: dict                   # replaces these keys of the config family's tokenize section
    head: str                        # "parallel" (exact scoring) or "autoregressive" (trie beam search)
    train_args: tuple[str, ...] = () # more Lightning CLI flags than --model.head
    default: bool = True             # run when --layouts is not given

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(f"Layout.head must be one of {HEADS}, got {self.head!r}")

    @property
    def flags(self) -> list[str]:
        return [f"--model.head={self.head}", *self.train_args]


RQ_AUTOREGRESSIVE = {"method": "rqvae", "n_levels": 3, "modalities": "fused"}   # TIGER's layout: 3 levels (+ dedup)
ITEM_LOSS = "--model.item_loss_weight=1.0"
RQ_SEPARATE_L4 = {"method": "rqvae", "modalities": "separate", "n_levels": 4}   # per modality, 4 levels each
FUSED_PQ = {"method": "pq", "modalities": "fused", "n_levels": 16}   # one PQ tokenizer on the fused vector: 16 digits

# name -> layout, in table order. Add a row here; `--layouts NAME` runs it alone and keeps the others.
LAYOUTS = {
    # the config family's default: PQ per modality (its own n_levels), parallel head, exact scoring
    "pq-parallel": Layout({"method": "pq", "modalities": "separate"}, "parallel"),
    "pq-fused-parallel": Layout(FUSED_PQ, "parallel"),
    "rq-fused-ar": Layout(RQ_AUTOREGRESSIVE, "autoregressive"),
    "rq-separate-ar": Layout({"method": "rqvae", "modalities": "separate", "n_levels": 3}, "autoregressive"),
    "rq-separate-ar-L4": Layout(RQ_SEPARATE_L4, "autoregressive"),
    # also trained with SASRec's item-level cross-entropy on their states (decoding is unchanged)
    "rq-fused-ar-itemloss": Layout(RQ_AUTOREGRESSIVE, "autoregressive", (ITEM_LOSS,), default=False),
    # the autoregressive head still climbs on validation at the family's last epoch: 2.5x the epochs
    # (its cosine schedule stretched to match)
    "rq-fused-ar-e100": Layout(RQ_AUTOREGRESSIVE, "autoregressive", ("--trainer.max_epochs=100",), default=False),
    "rq-separate-ar-L4-itemloss": Layout(RQ_SEPARATE_L4, "autoregressive", (ITEM_LOSS,), default=False),
    # the same with a sampled item loss (512 popularity-drawn negatives): its cost does not grow with items
    "rq-separate-ar-L4-itemloss-sampled": Layout(RQ_SEPARATE_L4, "autoregressive", (
        ITEM_LOSS, "--model.item_loss=sampled", "--model.item_loss_negatives=512"), default=False),
    # the item loss's weight and the epoch budget, chosen on validation (weight 1 and 40 epochs above)
    "rq-separate-ar-L4-itemloss-w0.5": Layout(RQ_SEPARATE_L4, "autoregressive", ("--model.item_loss_weight=0.5",),
                                              default=False),
    "rq-separate-ar-L4-itemloss-w2": Layout(RQ_SEPARATE_L4, "autoregressive", ("--model.item_loss_weight=2.0",),
                                            default=False),
    "rq-separate-ar-L4-itemloss-e80": Layout(RQ_SEPARATE_L4, "autoregressive", (ITEM_LOSS, "--trainer.max_epochs=80"),
                                             default=False),
    "rqkmeans-separate-ar": Layout({"method": "rqkmeans", "modalities": "separate", "n_levels": 3}, "autoregressive"),
    # an autoregressive order over the PQ digits: the default's codes, generated digit by digit
    "pq-separate-ar": Layout({"method": "pq", "modalities": "separate"}, "autoregressive"),
    # softmax at each level only over the codes the trie allows after the true prefix (was an ablation row)
    "rq-fused-ar-constrained": Layout(RQ_AUTOREGRESSIVE, "autoregressive", ("--model.constrained_training=true",),
                                      default=False),
}


def layout_config(raw: dict, layout: Layout) -> dict:
    """The bench config with one layout's tokenizer (a copy; the other stages unchanged)."""
    raw = copy.deepcopy(raw)
    tokenize = raw.setdefault("tokenize", {})
    tokenize.update(layout.tokenize)
    if tokenize.get("method", "rqvae") != "rqvae":
        tokenize.pop("rqvae", None)   # RQ-VAE settings are refused with another method (TokenizeConfig)
    return raw


def parse_widths(values: list[str]) -> list[int | str]:
    """--beam-widths: integers >= 20, the word 'exact', and 'rerankN' (N >= 20)."""
    out: list[int | str] = []
    for v in values:
        if v == EXACT:
            out.append(EXACT)
            continue
        rerank = v.startswith(RERANK)
        try:
            width = int(v[len(RERANK):] if rerank else v)
        except ValueError:
            raise SystemExit(f"--beam-widths: {v!r} is neither an integer, {EXACT!r} nor {RERANK}N "
                             f"(e.g. {RERANK}50)") from None
        if width < BEAM_WIDTHS[0]:
            raise SystemExit(f"--beam-widths: {width} is below {BEAM_WIDTHS[0]}, the largest K the protocol ranks "
                             "(genrec.evaluate refuses it)")
        out.append(f"{RERANK}{width}" if rerank else width)
    return out


def exact_beam_width(trie) -> int:
    """The narrowest beam that keeps every prefix at every level but the last: the widest non-leaf trie level.

    Beam search of this width is exact top-k for an autoregressive head (at least BEAM_WIDTHS[0] for k = 20).
    """
    return max([trie.n_nodes(level) for level in range(1, trie.depth)] + [BEAM_WIDTHS[0]])


def sweep_widths(requested: list[int | str], exact: int, rerank: bool = False) -> list[tuple[str, int]]:
    """The distinct (search, width) pairs to decode with, widths capped at ``exact`` (a wider beam returns the
    same); ``rerankN`` entries only when ``rerank`` (the layout was trained with the item loss)."""
    out = set()
    for w in requested:
        if isinstance(w, str) and w.startswith(RERANK):
            if rerank:
                out.add(("rerank", min(int(w[len(RERANK):]), exact)))
        else:
            out.add(("beam", exact if w == EXACT else min(int(w), exact)))
    return sorted(out, key=lambda sw: (sw[0] == "rerank", sw[1]))


def eval_batch(width: int) -> int:
    from genrec.evaluate import EvaluateConfig

    return max(1, min(EvaluateConfig.batch_size, BEAM_ROWS // width))


def decode_sweep(run_dir: Path, requested: list[int | str], rerank: bool = False) -> tuple[int, list[dict]]:
    """Score the run's best checkpoint on test, and on validation (what picks a decoding), at each beam width
    (genrec.evaluate, no retraining)."""
    from genrec.evaluate import EvaluateConfig, evaluate, load_genrec

    model, _ = load_genrec(run_dir)
    exact = exact_beam_width(model.trie)
    del model
    out = []
    for search, width in sweep_widths(requested, exact, rerank):
        if search == "rerank":
            print(f"== beam {width} + item rerank", flush=True)
            cfg = EvaluateConfig(split="test", systems=("genrec",), search="rerank", beam_width=width,
                                 batch_size=eval_batch(width), output=f"metrics_rerank{width}.json")
        elif width >= exact:
            # The exact top-k through genrec.decode.threshold (a beam-20 pass, then every prefix that can still
            # reach its 20th score): the same items as a beam this wide (tests/decode), at a fraction of its cost.
            print(f"== exact (threshold search; equal to beam {width})", flush=True)
            cfg = EvaluateConfig(split="test", systems=("genrec",), search="exact", output="metrics_exact.json")
        else:
            print(f"== beam {width}", flush=True)
            cfg = EvaluateConfig(split="test", systems=("genrec",), search="beam", beam_width=width,
                                 batch_size=eval_batch(width), output=f"metrics_beam{width}.json")
        m = evaluate(run_dir, cfg)["systems"]["genrec"]
        valid = evaluate(run_dir, replace(cfg, split="valid", output=cfg.output.replace(".json", "_valid.json")))
        out.append({**m, "beam_width": width, "exact": search == "beam" and width >= exact, "search": cfg.search,
                    "eval_batch_size": cfg.batch_size, "valid_ndcg@10": valid["systems"]["genrec"]["ndcg@10"],
                    "valid_evaluate_seconds": valid["systems"]["genrec"]["seconds"]})
    return exact, out


def metric_fields(m: dict) -> dict:
    """A row's test figures from a genrec.evaluate system entry."""
    return {"ndcg@10": m["ndcg@10"], "recall@10": m["recall@10"], "ndcg@20": m["ndcg@20"],
            "recall@20": m["recall@20"], "invalid_rate": m["invalid_rate"],
            "evaluate_seconds": m["seconds"],
            "decode_ms_per_user": round(1000 * m["seconds"] / max(1, m["n_users"]), 3),
            **{key: m[key] for key in ("valid_ndcg@10", "valid_evaluate_seconds") if key in m}}


def layout_rows(name: str, layout: Layout, cfg: dict, res: dict, sweep: list[dict] | None, exact: int | None,
                train_args: list[str]) -> list[dict]:
    """One row per beam width (one row for a parallel layout) from a bench run and its decode sweep."""
    tokenize, tok = cfg["tokenize"], res["tokenizer"]
    raw_collisions = tok.get("collisions_raw", {})
    common = {
        "layout": name, "tokenizer": tokenize.get("method", "rqvae"), "modalities": tokenize.get("modalities", "fused"),
        "n_levels": tokenize.get("n_levels"), "n_digits": len(tok.get("levels", [])),
        "collisions": raw_collisions.get("n_colliding_items"), "collision_rate": raw_collisions.get("collision_rate"),
        "train_seconds": res["stages"]["train"], "tokenize_seconds": res["stages"]["tokenize"],
        "epochs": res["train"]["epochs"], "best_valid_ndcg@10": res["train"]["best_val_ndcg@10"],
        "train_targets_per_second": res["train"]["train_targets_per_second"],
        "stages": res["stages"], "train_args": [*layout.flags, *train_args], "git_commit": res["git_commit"],
    }
    if layout.head == "parallel":
        return [{**common, "decoding": "parallel", "beam_width": None, "exact": True,
                 **metric_fields(res["metrics"]["genrec"])}]
    return [{**common, "decoding": "autoregressive", "beam_width": s["beam_width"], "exact": s["exact"],
             "search": s["search"], "exact_beam_width": exact, "eval_batch_size": s["eval_batch_size"],
             **metric_fields(s)}
            for s in sweep]


def total_seconds(rows: list[dict]) -> float:
    """The table's cost: each layout's stage wall times once, plus every extra beam width's evaluation (test, and
    validation where it was scored)."""
    stages = {r["layout"]: sum(r["stages"].values()) for r in rows}
    sweeps = sum(r["evaluate_seconds"] + r.get("valid_evaluate_seconds", 0.0)
                 for r in rows if r["decoding"] == "autoregressive")
    return round(sum(stages.values()) + sweeps, 1)


def row_order(row: dict) -> tuple:
    names = list(LAYOUTS)
    return (names.index(row["layout"]) if row["layout"] in names else len(names), row.get("search") == "rerank",
            row["beam_width"] or 0)


def row_key(row: dict) -> tuple:
    """What a re-run row replaces: the same layout decoded the same way."""
    return row["layout"], row["beam_width"], row.get("search") == "rerank"


def decoding_label(row: dict) -> str:
    if row["decoding"] == "parallel":
        return "parallel, exact"
    if row.get("search") == "exact":
        return "exact (threshold search)"
    if row.get("search") == "rerank":
        return f"beam {row['beam_width']} + item rerank"
    return f"beam {row['beam_width']}" + (" (exact)" if row.get("exact") else "")


def table(dataset: str, out: dict) -> str:
    """Markdown: every row's test NDCG@10 against the best row's, and SASRec of the same run."""
    rows, sasrec = out["rows"], out["sasrec"]
    best = max((r["ndcg@10"] for r in rows), default=0.0)

    def ratio(value: float | None) -> str:
        return "—" if value is None or not best else f"{value / best:.0%}"

    lines = [f"**Semantic-ID layouts on {dataset}** (test split, full ranking; ratio = NDCG@10 / the best row's)", "",
             "| layout | tokenizer | codes | digits | decoding | NDCG@10 | ratio | Recall@10 | invalid | "
             "decode ms/user | best valid NDCG@10 | valid NDCG@10, this decoding | train s | epochs |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['layout']} | {r['tokenizer']} | {r['modalities']} | {r['n_digits']} | "
                     f"{decoding_label(r)} | "
                     f"{r['ndcg@10']:.4f} | {ratio(r['ndcg@10'])} | {r['recall@10']:.4f} | {r['invalid_rate']:.4f} | "
                     f"{r['decode_ms_per_user']:.2f} | {r['best_valid_ndcg@10']:.4f} | "
                     f"{'—' if r.get('valid_ndcg@10') is None else format(r['valid_ndcg@10'], '.4f')} | "
                     f"{r['train_seconds']:.0f} | "
                     f"{r['epochs']} |")
    if sasrec:
        lines.append(f"| SASRec (same run) | — | — | — | every item scored | {sasrec['ndcg@10']:.4f} | "
                     f"{ratio(sasrec['ndcg@10'])} | {sasrec['recall@10']:.4f} | {sasrec['invalid_rate']:.4f} | "
                     "— | — | — | — | — |")
    return "\n".join(lines) + "\n"


def plot(dataset: str, out: dict, path: Path) -> Path:
    """Left: test NDCG@10 per row, SASRec dashed. Right: NDCG@10 against decode cost across beam widths."""
    import matplotlib.pyplot as plt

    from genrec.plots import save_png

    rows, sasrec = out["rows"], out["sasrec"]
    labels = [f"{r['layout']}, {decoding_label(r)}" for r in rows]
    values = [r["ndcg@10"] for r in rows]
    colors = ["#4c72b0" if r["decoding"] == "parallel" else "#dd8452" for r in rows]
    fig, (bars, cost) = plt.subplots(1, 2, figsize=(12, 0.35 * len(rows) + 2),
                                     gridspec_kw={"width_ratios": [3, 2]})
    bars.barh(labels[::-1], values[::-1], color=colors[::-1])
    for y, v in enumerate(values[::-1]):
        bars.text(v, y, f" {v:.4f}", va="center", fontsize=7)
    if sasrec:
        bars.axvline(sasrec["ndcg@10"], color="k", ls="--", lw=1, label=f"SASRec {sasrec['ndcg@10']:.4f}")
        bars.legend(fontsize=7, loc="lower right")
    top = max(values + [sasrec.get("ndcg@10", 0.0) if sasrec else 0.0])
    bars.set_xlim(0, top * 1.3 if top > 0 else 1)
    bars.set_xlabel("test NDCG@10")
    bars.tick_params(axis="y", labelsize=7)
    bars.set_title(f"layouts on {dataset} (blue: parallel, orange: autoregressive)", fontsize=9)
    for name in dict.fromkeys(r["layout"] for r in rows):
        own = [r for r in rows if r["layout"] == name]
        marker = "s" if own[0]["decoding"] == "parallel" else "o-"
        cost.plot([r["decode_ms_per_user"] for r in own], [r["ndcg@10"] for r in own], marker, label=name, ms=4)
        for r in own:
            if r["beam_width"]:
                cost.annotate(str(r["beam_width"]), (r["decode_ms_per_user"], r["ndcg@10"]), fontsize=6,
                              xytext=(2, 2), textcoords="offset points")
    ms = [r["decode_ms_per_user"] for r in rows if r["decode_ms_per_user"] > 0]
    if ms and max(ms) > 10 * min(ms):   # log only across decades; tick labels collide inside one
        cost.set_xscale("log")
    cost.set_xlabel("decode ms per user (points: beam widths up to exact)")
    cost.set_ylabel("test NDCG@10")
    cost.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return save_png(fig, path)


def choose(only: list[str] | None) -> dict[str, Layout]:
    if not only:
        return {name: layout for name, layout in LAYOUTS.items() if layout.default}
    unknown = sorted(set(only) - set(LAYOUTS))
    if unknown:
        raise SystemExit(f"unknown layouts {unknown}; known: {list(LAYOUTS)}")
    return {name: LAYOUTS[name] for name in LAYOUTS if name in only}


def kept_rows(previous: Path, only: list[str] | None, train_args: list[str],
              decode_only: bool = False) -> tuple[list[dict], dict | None]:
    """The previous table's rows to keep, and its SASRec entry: with ``--layouts``, the other known layouts'
    rows; with ``--decode-only``, every row (re-scored widths replace theirs in run_layouts). Only a table run
    with the same extra training flags counts (rows of another budget are not kept beside these)."""
    before = previous_table(previous, bool(only) or decode_only, {"train_args": train_args})
    rows = [r for r in before.get("rows", []) if r["layout"] in LAYOUTS and (decode_only or r["layout"] not in only)]
    return rows, before.get("sasrec")


def trained_run(saved: Path, run_dir: Path) -> dict:
    """--decode-only: the bench result a previous run of a layout wrote (its run folder must still be there)."""
    if not saved.exists() or not (run_dir / "checkpoints").exists():
        raise SystemExit(f"--decode-only re-scores layouts trained before, but {saved} or {run_dir}/checkpoints is "
                         "missing: run the layout without --decode-only first (same --run-root and --results-dir)")
    return json.loads(saved.read_text())


def run_layouts(dataset: str, *, smoke: bool, run_root: Path, train_args: list[str], only: list[str] | None,
               widths: tuple[int | str, ...] = BEAM_WIDTHS, results: Path = RESULTS,
               decode_only: bool = False) -> dict:
    """Train and score the chosen layouts (``decode_only``: re-score the checkpoints of a previous run at
    ``widths`` without retraining) and write results/layouts_NAME.json, .md and .png."""
    from genrec.io import machine_info

    name = "smoke" if smoke else dataset
    _, raw = bench_config(dataset, smoke)
    chosen = choose(only)
    kept, sasrec = kept_rows(results / f"layouts_{name}.json", only, train_args, decode_only)
    rows: list[dict] = []
    scratch = results / "layouts_runs"
    for i, (layout_name, layout) in enumerate(chosen.items()):
        print(f"==== layouts {name}: {layout_name}", flush=True)
        cfg = layout_config(raw, layout)
        run_dir = run_root / slug(layout_name)
        systems = ("genrec", "sasrec") if i == 0 else ("genrec",)   # SASRec once: every layout has the same features
        if decode_only:
            res = trained_run(scratch / f"{name}_{slug(layout_name)}.json", run_dir)
        else:
            res = run_bench(dataset, smoke=smoke, run_dir=run_dir, train_args=[*layout.flags, *train_args],
                            results=scratch, raw=cfg, systems=systems, name=f"{name}_{slug(layout_name)}")
        if "sasrec" in res["metrics"]:
            m = res["metrics"]["sasrec"]
            sasrec = {"ndcg@10": m["ndcg@10"], "recall@10": m["recall@10"], "ndcg@20": m["ndcg@20"],
                      "invalid_rate": m["invalid_rate"], "layout_run": layout_name, "git_commit": res["git_commit"]}
        sweep, exact = None, None
        if layout.head == "autoregressive":
            exact, sweep = decode_sweep(run_dir, widths, rerank=any(f.startswith(ITEM_LOSS_FLAG) for f in layout.flags))
        rows += layout_rows(layout_name, layout, cfg, res, sweep, exact, train_args)
    fresh = {row_key(r) for r in rows}
    rows = sorted([r for r in kept if row_key(r) not in fresh] + rows, key=row_order)
    out = {"dataset": name, "git_commit": git_commit(), "machine": machine_info(), "train_args": train_args,
           "beam_widths": [str(w) for w in widths], "seconds": total_seconds(rows), "sasrec": sasrec or {},
           "rows": rows}
    write_outputs(results, f"layouts_{name}", out, table(name, out), lambda path: plot(name, out, path))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/layouts.py", description=__doc__.strip().splitlines()[0],
                                epilog="Any other flags go to every layout's Lightning CLI.")
    p.add_argument("--dataset", default=None, help="any dataset in bench/run.py CONFIGS, e.g. Office")
    p.add_argument("--smoke", action="store_true", help="the small built-in demo catalogue (CI)")
    p.add_argument("--layouts", nargs="*", default=None,
                   help=f"run only these (the other rows of the previous table are kept); known: {', '.join(LAYOUTS)}")
    p.add_argument("--beam-widths", nargs="+", default=[str(w) for w in BEAM_WIDTHS],
                   help="beam widths each autoregressive layout is scored at (integers >= 20, 'exact', and "
                        "'rerankN': beam N re-scored by the item logit, for layouts trained with the item loss)")
    p.add_argument("--decode-only", action="store_true",
                   help="no training: re-score the chosen layouts' checkpoints from a previous run at --beam-widths")
    p.add_argument("--run-root", type=Path, default=None, help="where layout runs go (default bench/runs/layouts/NAME)")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    a, train_args = p.parse_known_args(argv)
    if a.smoke == (a.dataset is not None):
        p.error("give --dataset NAME or --smoke (exactly one)")
    name = "smoke" if a.smoke else a.dataset
    run_root = a.run_root or REPO / "bench" / "runs" / "layouts" / name
    run_layouts(name, smoke=a.smoke, run_root=run_root, train_args=train_args, only=a.layouts,
                widths=parse_widths(a.beam_widths), results=a.results_dir, decode_only=a.decode_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
