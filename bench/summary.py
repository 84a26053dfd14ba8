"""Write bench/RESULTS.md from bench/results/*.json: every benchmark table the docs quote.

    python bench/summary.py            # writes bench/RESULTS.md and the README's results table
    python bench/summary.py --check    # exit 1 if either differs from what the JSON gives
    python bench/summary.py --plot     # also redraw bench/results/summary.png (needs matplotlib)

It runs nothing and reads only the JSON files, so it is fast and deterministic, and no figure in
RESULTS.md or the README's table can drift from its JSON: tests/test_bench.py fails when the committed
files and this script's output differ. Each section states the command that writes its JSON, the
seeds, and the wall time where the JSON records it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from run import RESULTS, STEPS, pipeline_minutes, training_side_seconds, validate_result  # noqa: E402
from components import markdown as components_markdown  # noqa: E402
from weights import markdown as weights_markdown  # noqa: E402

OUT = REPO / "bench" / "RESULTS.md"
README = REPO / "README.md"
# The README's results table sits between these two lines; bench/summary.py rewrites what is between them.
README_START = "<!-- results table: written by python bench/summary.py from bench/results/*.json -->"
README_END = "<!-- end of results table -->"
DATASET_ORDER = ("Beauty", "Sports_and_Outdoors", "Office", "Scientific", "Scientific_DeCoRec_mm")
SYSTEM_LABELS = {"genrec": "genrec", "sasrec": "SASRec (ours)", "popularity": "popularity",
                 "cornac_tiger": "cornac TIGER (PAISCHER recipe)", "cornac_tiger_grid": "cornac TIGER (GRID recipe)",
                 "cornac_sasrec": "cornac SASRec (its defaults)"}
# Ablation rows in the order bench/ablation.py builds them: modality rows, then one change to the config row.
ABLATION_BASES = ("text", "text+image", "text+collab", "all")
SPLIT_ORDER = ("valid", "test")
ABLATION_CHANGES = ("", "fused codes", "separate codes", "RQ-VAE codes + autoregressive head",
                    "RQ-VAE + autoregressive, constrained training", "constrained training")


# ---------------------------------------------------------------- loading

def load_results(folder: Path) -> dict[str, dict]:
    """dataset -> result, for every NAME.json in ``folder`` that is a full results-table row."""
    found = {}
    for path in sorted(folder.glob("*.json")):
        result = json.loads(path.read_text())
        try:
            validate_result(result)
        except ValueError:
            continue   # embed.json, serve.json, ablation_*.json, tokenizer_*.json are other kinds of result
        if result["dataset"] != "smoke":
            found[result["dataset"]] = result
    order = {name: i for i, name in enumerate(DATASET_ORDER)}
    return dict(sorted(found.items(), key=lambda kv: order.get(kv[0], len(order))))


def load_kind(folder: Path, prefix: str) -> dict[str, dict]:
    """NAME -> JSON for every ``prefix_NAME.json`` (smoke runs left out), in DATASET_ORDER."""
    found = {p.stem[len(prefix) + 1:]: json.loads(p.read_text()) for p in sorted(folder.glob(f"{prefix}_*.json"))}
    order = {name: i for i, name in enumerate(DATASET_ORDER)}
    return {k: found[k] for k in sorted(found, key=lambda k: (order.get(k, len(order)), k)) if k != "smoke"}


def systems_of(result: dict) -> dict[str, dict]:
    """Every system in one result (the peers too), in SYSTEM_LABELS order."""
    found = {**result["metrics"], **result.get("peers", {})}
    return {s: found[s] for s in sorted(found, key=lambda s: list(SYSTEM_LABELS).index(s) if s in SYSTEM_LABELS
                                        else len(SYSTEM_LABELS))}


def genrec_seed(result: dict, train_args: list[str], seeds: dict | None = None) -> str:
    """The genrec training seed a JSON records: its own field, --seed_everything in the command's extra flags,
    or the bench-run seed bench/seeds.py found for the dataset; "—" when none of them says."""
    for where in (result, result.get("train", {})):
        if "seed" in where:
            return str(where["seed"])
    for i, arg in enumerate(train_args):
        if arg.startswith("--seed_everything"):
            return arg.split("=", 1)[1] if "=" in arg else train_args[i + 1]
    found = (seeds or {}).get("bench_run_seed", {}).get("genrec")
    return "—" if found is None else str(found)


# ---------------------------------------------------------------- formatting

def f4(x: float | None) -> str:
    return "—" if x is None else f"{x:.4f}"


def num(x: float | None, digits: int = 0) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def commit(c: str | None) -> str:
    return str(c)[:7] if c else "—"


def row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def header(cells: list[str]) -> list[str]:
    return [row(cells), "|" + "---|" * len(cells)]


def command_with(base: str, extra: list[str]) -> str:
    return f"`{' '.join([base, *extra])}`"


# ---------------------------------------------------------------- sections

def peer_minutes(peer: dict, result: dict) -> str:
    """A peer's fit + evaluation minutes, with its fit budget as a multiple of genrec's training side."""
    cell = f"{(peer['fit_seconds'] + peer['seconds']) / 60:.1f} (fit+eval"
    genrec_side = peer.get("genrec_training_side_seconds") or training_side_seconds(result)
    if peer.get("budget_seconds") and genrec_side > 0:
        cell += f"; fit budget {peer['budget_seconds'] / genrec_side:.0f}× genrec's embed+tokenize+train"
        if peer.get("genrec_commit") not in (None, result.get("git_commit")):
            cell += f" of the run at {peer['genrec_commit'][:7]}, {genrec_side:.0f} s"
    return cell + ")"


def table(results: dict[str, dict]) -> str:
    """The summary table: every system of every dataset, test split."""
    lines = header(["dataset", "system", "Recall@5", "Recall@10", "Recall@20", "NDCG@5", "NDCG@10", "NDCG@20",
                    "invalid", "pipeline min"])
    for dataset, result in results.items():
        pipeline_min = pipeline_minutes(result)
        for system, m in systems_of(result).items():
            cells = [f"{m[f'{kind}@{k}']:.4f}" for kind in ("recall", "ndcg") for k in (5, 10, 20)]
            minutes = (f"{pipeline_min:.1f}" if system == "genrec" else peer_minutes(m, result) if "fit_seconds" in m
                       else "")
            lines.append(f"| {dataset} | {SYSTEM_LABELS.get(system, system)} | " + " | ".join(cells)
                         + f" | {m['invalid_rate']:g} | {minutes} |")
    return "\n".join(lines) + "\n"


def text_vectors(result: dict) -> str:
    text = result.get("embed", {}).get("modalities", {}).get("text", {})
    if "n_cached" not in text:
        return "—"
    return f"{text['n_encoded']:,} encoded, {text['n_cached']:,} from cache"


def runs_section(results: dict[str, dict], seeds: dict[str, dict]) -> str:
    lines = ["## Results table", "",
             "Command: `python bench/run.py --dataset NAME` (genrec, SASRec and popularity in one run; writes "
             "`results/NAME.json`); the cornac rows are added by `python bench/cornac_tiger.py --dataset NAME` "
             "(or `bench/run.py --with-cornac`). Test split, leave-one-out, full ranking over the catalogue, "
             "histories cut to the last 20 items, one seed per dataset (below). \"pipeline min\" is genrec's "
             "prepare → embed (incl. SASRec) → tokenize → train → evaluate, and a peer's fit plus evaluation.",
             "",
             table(results).rstrip(), "", "![NDCG@10 per system and dataset](results/summary.png)", "",
             "**Runs.** Seeds: genrec's as its JSON records it (a `seed` field, `--seed_everything` in the "
             "command, or the bench-run seed `bench/seeds.py` found; \"—\" where none does: those runs used "
             "their training YAML's `seed_everything`, 0 in every checked-in config), and SASRec's `seed` "
             "(`embed.modalities.collab.config.seed`). The training config is the one named in the JSON, as it "
             "was at the run's commit. Wall time in "
             "seconds per stage on 2 CPU cores. \"text vectors\" says how many item texts were encoded and how "
             "many came from the embedding cache (a cached text costs no encoder time, so the embed time "
             "depends on it).", ""]
    lines += header(["dataset", "command", "seed genrec / SASRec", "users", "items", "interactions", "prepare s",
                     "embed s (incl. SASRec)", "tokenize s", "train s", "evaluate s", "peak RSS MB", "text vectors",
                     "commit"])
    for dataset, r in results.items():
        cfg, stats, st = r.get("config", {}), r["dataset_stats"], r["stages"]
        extra = cfg.get("train_args", [])
        collab = r.get("embed", {}).get("modalities", {}).get("collab", {})
        lines.append(row([dataset, command_with(f"python bench/run.py --dataset {dataset}", extra),
                          f"{genrec_seed(r, extra, seeds.get(dataset))} / "
                          f"{collab.get('config', {}).get('seed', '—')}",
                          num(stats["n_users"]), num(stats["n_items"]), num(stats["n_interactions"]),
                          num(st["prepare"], 1), num(st["embed"]), num(st["tokenize"], 1), num(st["train"]),
                          num(st["evaluate"], 1), num(r["peak_rss_mb"]), text_vectors(r), commit(r["git_commit"])]))
    lines += ["", "**Training.** genrec: epochs run (early stopping on validation NDCG@10), best validation "
              "NDCG@10 and training throughput in next-item targets per second. SASRec: the baseline and the "
              "collaborative features, trained on the training split only.", ""]
    lines += header(["dataset", "training config", "epochs", "best valid NDCG@10", "targets/s", "SASRec epochs run",
                     "SASRec best epoch", "SASRec valid NDCG@10", "SASRec s"])
    for dataset, r in results.items():
        t = r["train"]
        collab = r.get("embed", {}).get("modalities", {}).get("collab", {})
        lines.append(row([dataset, f"`{r.get('config', {}).get('train', '—')}`", t.get("epochs", "—"),
                          f4(t.get("best_val_ndcg@10")), num(t.get("train_targets_per_second")),
                          collab.get("epochs", "—"), collab.get("best_epoch", "—"),
                          f4(collab.get("best_val", {}).get("ndcg@10")), num(collab.get("seconds"))]))
    peers = [(d, name, p) for d, r in results.items() for name, p in r.get("peers", {}).items()
             if "budget_seconds" in p]
    if peers:
        lines += ["", "**Peers.** Fit under a wall-time budget with the recipe's epochs and warmup scaled to fit "
                  "(`bench/cornac_tiger.py`); \"full recipe\" is the fit time the unscaled recipe would take here, "
                  "from the measured throughput (`full_recipe_estimate`).", ""]
        lines += header(["dataset", "peer", "command", "fit budget s", "genrec run it was set against", "fit s",
                         "eval s", "RQ-VAE epochs", "seq2seq epochs", "samples/s", "full recipe h"])
        for dataset, name, p in peers:
            against = (f"{commit(p['genrec_commit'])}, {p['genrec_training_side_seconds']:,.0f} s"
                       if p.get("genrec_commit") else f"this run, {training_side_seconds(results[dataset]):,.0f} s")
            lines.append(row([dataset, SYSTEM_LABELS.get(name, name),
                              f"`python bench/cornac_tiger.py --dataset {dataset} --budget-seconds "
                              f"{p['budget_seconds']:g}`", num(p["budget_seconds"]), against,
                              num(p["fit_seconds"]), num(p["seconds"]), p.get("rqvae_epochs", "—"),
                              p.get("seq2seq_epochs", "—"), p.get("probe_samples_per_second", "—"),
                              p.get("full_recipe_estimate", {}).get("hours", "—")]))
    trained = [(d, name, p) for d, r in results.items() for name, p in r.get("peers", {}).items()
               if "budget_seconds" not in p]
    if trained:
        lines += ["", "**Trained peers.** Fit with their own training loop and defaults for a fixed number of epochs, "
                  "keeping the epoch with the best validation score (`bench/cornac_sasrec.py`).", ""]
        lines += header(["dataset", "peer", "command", "epochs", "selected epoch", "selection", "fit s", "eval s"])
        for dataset, name, p in trained:
            lines.append(row([dataset, SYSTEM_LABELS.get(name, name),
                              f"`python bench/cornac_sasrec.py --dataset {dataset}{threads_flag(p)}`",
                              p.get("epochs", "—"),
                              p.get("best_epoch", "—"), p.get("selection", "—"), num(p["fit_seconds"]),
                              num(p["seconds"])]))
    return "\n".join(lines) + "\n"


def threads_flag(peer: dict) -> str:
    """The command's ``--threads`` when the peer was fit on more than the script's default single thread."""
    threads = peer.get("torch_threads", 1)
    return f" --threads {threads}" if threads != 1 else ""


def protocol_section(results: dict[str, dict]) -> str:
    """Each run's systems ranked with and without the users' history items (bench/run.py scores both)."""
    runs = {d: r for d, r in results.items() if r.get("metrics_exclude_history")}
    if not runs:
        return ""
    lines = ["## History items in the ranking", "",
             "The results table ranks the whole catalogue, each user's history items included. RecBole's and "
             "S3-Rec's full-sort evaluation (and gSASRec's) remove them first; published figures on these splits "
             "may use either convention. `bench/run.py` scores the same checkpoints both ways (test split; "
             "training and early stopping are unchanged):", ""]
    lines += header(["dataset", "system", "NDCG@10 history kept", "NDCG@10 history removed", "Recall@10 kept",
                     "Recall@10 removed", "commit"])
    for dataset, r in runs.items():
        for system, kept in r["metrics"].items():
            removed = r["metrics_exclude_history"].get(system)
            if removed is None:
                continue
            lines.append(row([dataset, SYSTEM_LABELS.get(system, system), f4(kept["ndcg@10"]), f4(removed["ndcg@10"]),
                              f4(kept["recall@10"]), f4(removed["recall@10"]), commit(r["git_commit"])]))
    return "\n".join(lines) + "\n"


def steps_section(folder: Path) -> str:
    """Every result kept as a named step (``bench/run.py --step``), oldest first: what each change did."""
    steps = [json.loads(p.read_text()) for p in sorted((folder / STEPS).glob("*.json"))]
    if not steps:
        return ""
    order = {name: i for i, name in enumerate(DATASET_ORDER)}
    first = {}   # a step's rows stay together, in the order the steps were first run
    for r in steps:
        first[r["step"]] = min(first.get(r["step"], r["finished_at"]), r["finished_at"])
    steps.sort(key=lambda r: (first[r["step"]], r["step"], order.get(r["dataset"], len(order))))
    lines = ["## Steps", "",
             "Each change to a config family measured end to end (`python bench/run.py --dataset NAME --step "
             "LABEL`, then the flags shown), oldest first. NDCG@10 on validation (genrec: its best epoch; SASRec: "
             "its early-stopping epoch) and on test, history items kept in the ranking.", ""]
    lines += header(["step", "dataset", "training flags", "genrec valid", "genrec test", "SASRec valid",
                     "SASRec test", "pipeline min", "commit"])
    for r in steps:
        collab = r.get("embed", {}).get("modalities", {}).get("collab", {})
        flags = " ".join(r.get("config", {}).get("train_args", [])) or "—"
        lines.append(row([r["step"], r["dataset"], flags if flags == "—" else f"`{flags}`",
                          f4(r["train"].get("best_val_ndcg@10")), f4(r["metrics"]["genrec"]["ndcg@10"]),
                          f4(collab.get("best_val", {}).get("ndcg@10")), f4(r["metrics"]["sasrec"]["ndcg@10"]),
                          f"{pipeline_minutes(r):.0f}", commit(r["git_commit"])]))
    return "\n".join(lines) + "\n"


def seeds_outdated(seeds: dict, result: dict | None) -> str | None:
    """Why a seeds JSON does not measure the results table's run (None: it does). It must have trained with
    the table run's config, and its bench-run seed must have the table's test NDCG@10 for genrec and SASRec
    (bench/seeds.py reuses the run's own models for that seed, so the figures are equal, not close)."""
    if result is None:
        return "no results-table run"
    if seeds.get("train_config") != result["config"]["train"]:
        return f"trained with {seeds.get('train_config')}, the table run with {result['config']['train']}"
    seed = seeds.get("bench_run_seed", {}).get("genrec")
    own = next((r for r in seeds["per_seed"] if r["seed"] == seed), None)
    if own is None:
        return f"has no row for the table run's seed {seed}"
    table = result["metrics"]
    if any(own[system]["test"]["ndcg@10"] != table[system]["ndcg@10"] for system in ("genrec", "sasrec")):
        return (f"its seed {seed} ({own['genrec']['test']['ndcg@10']:.4f} / {own['sasrec']['test']['ndcg@10']:.4f}) "
                f"is not the table's run ({table['genrec']['ndcg@10']:.4f} / {table['sasrec']['ndcg@10']:.4f})")
    return None


def seeds_section(seeds: dict[str, dict], results: dict[str, dict]) -> str:
    lines = ["## Seed spread", "",
             "Command: `python bench/seeds.py --dataset NAME --seeds 0 1 2` (after `bench/run.py`; writes "
             "`results/seeds_NAME.json`). genrec and SASRec are retrained per seed on the bench run's semantic "
             "IDs and features (fixed), and scored on test and validation; a seed whose model the bench run "
             "folder still held is reused, not retrained. Mean ± sample standard deviation over the seeds. "
             "A row that no longer measures the results table's run (another config, or a re-run since) says "
             "so in the last column; only current rows reach the README's table.", ""]
    lines += header(["dataset", "seeds", "genrec test NDCG@10", "SASRec test NDCG@10", "genrec − SASRec, test",
                     "seeds genrec ahead (test / valid)", "genrec valid NDCG@10", "SASRec valid NDCG@10",
                     "reused from the bench run", "retraining min, all seeds", "measures the table's run"])
    for name, s in seeds.items():
        outdated = seeds_outdated(s, results.get(name))
        sy, diff = s["summary"]["systems"], s["summary"]["genrec_minus_sasrec"]
        n = diff["test"]["ndcg@10"]["n"]
        reused = "; ".join(f"seed {r['seed']}: {', '.join(r['reused'])}" for r in s["per_seed"] if r["reused"])

        def ms(system: str, split: str) -> str:
            m = sy[system][split]["ndcg@10"]
            return f"{m['mean']:.4f} ± {m['std']:.4f}"

        lines.append(row([name, ", ".join(str(r["seed"]) for r in s["per_seed"]), ms("genrec", "test"),
                          ms("sasrec", "test"),
                          f"{diff['test']['ndcg@10']['mean']:+.4f} ± {diff['test']['ndcg@10']['std']:.4f}",
                          f"{diff['test']['seeds_genrec_ahead']} of {n} / {diff['valid']['seeds_genrec_ahead']} of {n}",
                          ms("genrec", "valid"), ms("sasrec", "valid"), reused or "none",
                          # summed per seed: a --resume run's own wall time leaves out the seeds it read back
                          num(sum(t for r in s["per_seed"] for t in r["train_seconds"].values() if t) / 60, 1),
                          "yes" if outdated is None else f"no: {outdated} (commit {commit(s['git_commit'])})"]))
    lines += ["", "Per seed (test NDCG@10):", ""]
    lines += header(["dataset", "seed", "genrec", "SASRec", "genrec retrain s", "SASRec retrain s"])
    for name, s in seeds.items():
        for r in s["per_seed"]:
            lines.append(row([name, r["seed"], f4(r["genrec"]["test"]["ndcg@10"]), f4(r["sasrec"]["test"]["ndcg@10"]),
                              num(r["train_seconds"]["genrec"]), num(r["train_seconds"]["sasrec"])]))
    return "\n".join(lines) + "\n"


def segments_section(segments: dict[str, dict]) -> str:
    lines = ["## Metrics by target popularity", "",
             "Command: `python bench/segments.py --dataset NAME` (after `bench/run.py`; reads that run's models; "
             "writes `results/segments_NAME.json`). Each user's target is bucketed by how often it occurs in the "
             "training split.", ""]
    for name, s in segments.items():
        systems = s["systems"]
        lines += [f"**{name}** ({num(s['seconds'])} s, commit {commit(s['git_commit'])})", ""]
        lines += header(["split", "target seen in training", "users", "share"]
                        + [f"{sys_} {m}" for sys_ in systems for m in ("NDCG@10", "Recall@20")])
        for split in sorted(s["splits"], key=lambda sp: SPLIT_ORDER.index(sp) if sp in SPLIT_ORDER else 9):
            buckets = s["splits"][split]
            for label in sorted(buckets, key=bucket_floor):
                b = buckets[label]
                cells = [f4(b.get("systems", {}).get(sys_, {}).get(m)) for sys_ in systems
                         for m in ("ndcg@10", "recall@20")]
                lines.append(row([split, label, num(b["n_users"]), f"{b['share']:.0%}", *cells]))
            o = s["overall"][split]
            lines.append(row([split, "all", num(o["n_users"]), "100%",
                              *[f4(o[sys_][m]) for sys_ in systems for m in ("ndcg@10", "recall@20")]]))
        lines.append("")
    return "\n".join(lines)


def components_section(components: dict[str, dict]) -> str:
    lines = ["## Which part of the score finds which targets", "",
             "Command: `python bench/components.py --dataset NAME` (after `bench/run.py`; reads that run's "
             "genrec checkpoint, retrains nothing; writes `results/components_NAME.json`). Every validation "
             "user's catalogue ranked by one part of a parallel head's score at a time: one modality's digits, "
             "the item logit, or the full score as decoded (the results table's ranking).", ""]
    for name, c in components.items():
        lines += [f"Run `{c['run']}`, commit {commit(c['git_commit'])}, {num(c['seconds'])} s.", "",
                  components_markdown(c)]
    return "\n".join(lines)


def weights_section(weights: dict[str, dict]) -> str:
    lines = ["## Decoding weight per modality", "",
             "Command: `python bench/weights.py --dataset NAME --modality text` (after `bench/run.py`; reads that "
             "run's genrec checkpoint, retrains nothing; writes `results/weights_NAME.json`, or "
             "`weights_NAME_MODALITY.json` for another modality, whose table may hold the others fixed with `--hold`). "
             "Each weight decodes "
             "the whole validation split with the modality's digit log-probs times that weight; validation "
             "NDCG@10 picks one, and test is read only for the pick and for 1 (the plain sum). "
             "`--popularity B...` (`weights_NAME_popularity.json`) varies a popularity prior instead: every "
             "item's score plus B x log(1 + its training count), the plain score being B = 0. "
             "`--digits S...` (`weights_NAME_digits.json`) scales every digit's weight by S against the item "
             "logit, which ranks as the item logit times 1/S (`model.item_logit_weight`).", ""]
    for name, w in weights.items():
        lines += [f"Run `{w['run']}`, commit {commit(w['git_commit'])}, {num(w['seconds'])} s. "
                  f"Gain of the pick over the plain score ({0 if w['modality'] == 'popularity' else 1}): "
                  f"validation {w['gain']['valid']:+.4f}, test {w['gain']['test']:+.4f}.", "",
                  weights_markdown(w)]
    return "\n".join(lines)


def bucket_floor(label: str) -> int:
    """Sort key of a popularity bucket label ('never', '1-4', '5-19', '20+'): its lower edge."""
    return 0 if label == "never" else int(label.split("-")[0].rstrip("+"))


def ablation_key(name: str) -> tuple:
    base, _, change = name.partition(", ")
    return (ABLATION_BASES.index(base) if base in ABLATION_BASES else len(ABLATION_BASES),
            ABLATION_CHANGES.index(change) if change in ABLATION_CHANGES else len(ABLATION_CHANGES), name)


def ablation_section(ablations: dict[str, dict], results: dict[str, dict]) -> str:
    lines = ["## Ablations", "",
             "Command: `python bench/ablation.py --dataset NAME` (writes `results/ablation_NAME.json`; "
             "`--variants NAME ...` re-runs only those rows and keeps the others). Each variant is the checked-in "
             "bench config with one change, run end to end with the same seed and training budget (early "
             "stopping on validation NDCG@10); genrec only, test split. \"collab\" is the SASRec item table; "
             "\"image\" is a precomputed image feature. The row marked [config] is the bench config unchanged. "
             "\"train s\" includes early stopping, so it is not a per-epoch cost; targets/s is.", ""]
    for name, a in ablations.items():
        rows = a["variants"]
        config_row = "all" if "all" in rows else "text+collab"
        seed = genrec_seed(a, a.get("train_args", []))
        seed = "the config's `seed_everything`" if seed == "—" else seed
        lines += [f"**{name}**: {command_with(f'python bench/ablation.py --dataset {name}', a.get('train_args', []))}; "
                  f"every variant with seed {seed}; {a['seconds'] / 60:.1f} min of stage "
                  f"time in all rows; commit {commit(a['git_commit'])}", ""]
        lines += header(["variant", "modalities", "codes", "head", "Recall@10", "NDCG@10", "NDCG@20",
                         "best valid NDCG@10", "train s", "epochs", "targets/s"])
        for variant in sorted(rows, key=ablation_key):
            r, m = rows[variant], rows[variant]["metrics"]["genrec"]
            head = r.get("head", "config default")
            head += ", constrained training" if r.get("constrained_training") else ""
            lines.append(row([variant + (" [config]" if variant == config_row else ""), "+".join(r["modalities"]),
                              r["codes"], head, f4(m["recall@10"]), f4(m["ndcg@10"]), f4(m["ndcg@20"]),
                              f4(r.get("best_val_ndcg@10")), num(r["stages"]["train"]), r["epochs"],
                              num(r.get("train_targets_per_second"))]))
        lines += ["", f"![ablation on {name}](results/ablation_{name}.png)", ""]
    return "\n".join(lines)


def layouts_section(layouts: dict[str, dict]) -> str:
    from layouts import table

    lines = ["## Semantic-ID layouts and decoding", "",
             "Command: `python bench/layouts.py --dataset NAME` (writes `results/layouts_NAME.json`; `--layouts NAME "
             "...` re-runs only those layouts and keeps the other rows). Every layout is the dataset's config family "
             "with only the tokenizer and the code head changed, trained with the same seed and budget (early "
             "stopping on validation NDCG@10). Each autoregressive checkpoint is scored on test at several beam widths "
             "without retraining, and exactly (threshold search: the same top k as a beam as wide as the widest "
             "non-leaf trie level, `genrec evaluate --search exact`). Ratio = test NDCG@10 over the best row's; "
             "SASRec is scored in the same run.", ""]
    for name, found in layouts.items():
        lines += [f"**{name}**: "
                  f"{command_with(f'python bench/layouts.py --dataset {name}', found.get('train_args', []))}"
                  f"; {found['seconds'] / 60:.1f} min of stage and decoding time in all rows; commit "
                  f"{commit(found['git_commit'])}", "", table(name, found),
                  f"![layouts on {name}](results/layouts_{name}.png)", ""]
    return "\n".join(lines)


def cold_start_section(cold: dict[str, dict]) -> str:
    from cold_start import markdown

    lines = ["## Cold start", "",
             "Command: `python bench/cold_start.py --dataset NAME`. The 10% of items that appear last in time are "
             "held out of every stage (training split, SASRec table, tokenizer, vocabulary), the rest is trained with "
             "the dataset's config family and exported, and the held-out items are added with `genrec add-items`. "
             "Metrics are on test users whose target is a held-out item, ranking the whole catalogue. \"text-neighbour "
             "fill\" is `add-items --run RUN`: a new item takes the SASRec-table rows and id embeddings of its 10 "
             "nearest items by text; plain genrec gives it the mean item's.", ""]
    for name, found in cold.items():
        lines += [markdown(found), f"commit {commit(found['git_commit'])}", ""]
    return "\n".join(lines)


def design_order(names: list[str]) -> list[str]:
    from design import DESIGNS

    known = [d.name for d in DESIGNS]
    return sorted(names, key=lambda n: (known.index(n) if n in known else len(known), n))


def design_section(designs: dict[str, dict]) -> str:
    lines = ["## Model designs at equal training time", "",
             "Command: `python bench/design.py --dataset NAME` (writes `results/design_NAME.json`). Every design "
             "trains from the same seed on the training split for the same wall-time budget of training "
             "(validation off, constant learning rate after warmup); copies of the weights along the way are "
             "scored on a fixed validation subset, the last one on all validation users and on test (full "
             "ranking; beam 20 for the code heads, every item scored for the parallel head). The design with the "
             "best validation NDCG@10 at the budget wins; [config] marks what the training config trains.", ""]
    for name, d in designs.items():
        first = next(iter(d["designs"].values()))
        marks = [f"valid@{p['seconds']:.0f} s" for p in first["curve"][:-1]]
        budget = "" if d["budget_seconds"] == 240 else f" --budget-seconds {d['budget_seconds']:g}"
        lines += [f"**{name}**: `python bench/design.py --dataset {name}{budget}`; seed {d['seed']}; "
                  f"{d['budget_seconds']:g} s of training per design; curve on {d['curve_users']:,} validation "
                  f"users, final scores on {first['valid_users']:,} validation and {first['test_users']:,} test "
                  f"users; training config `{d['train_config']}`; commit {commit(d['git_commit'])}", ""]
        lines += header(["design", "codes", "tokens per item", "targets/s", "epochs", *marks,
                         f"valid NDCG@10 at {d['budget_seconds']:g} s", "test NDCG@10", "decode ms/user"])
        for design in design_order(list(d["designs"])):
            r = d["designs"][design]
            tags = (" **(winner)**" if design == d["winner"] else "") + (" [config]" if r["matches_config"] else "")
            curve = [f4(p["valid_subset"]["ndcg@10"]) for p in r["curve"][:-1]]
            lines.append(row([design + tags, r["layout"], r["encoder_tokens_per_item"], num(r["targets_per_second"]),
                              f"{r['epochs']:g}", *curve, f4(r["valid"]["ndcg@10"]), f4(r["test"]["ndcg@10"]),
                              f"{r['decode_ms_per_user']:.2f}"]))
        lines += ["", f"![validation NDCG@10 against training seconds per design](results/design_{name}.png)", ""]
    return "\n".join(lines)


def collisions(c: dict) -> str:
    return f"{c['n_colliding_items']:,} ({c['n_duplicates']:,})"


def tokenizer_section(tokenizers: dict[str, dict], results: dict[str, dict]) -> str:
    lines = ["## Semantic IDs", "",
             "Command: `python bench/tokenizer_quality.py --dataset NAME` (writes `results/tokenizer_NAME.json`): "
             "prepare → embed (text only) → tokenize with the default RQ-VAE, and the reference semantic IDs "
             "shipped beside the data through the same collision count. "
             "\"items sharing a tuple\" counts items whose code tuple another item also has (in brackets: how "
             "many need a dedup code).", ""]
    for name, t in tokenizers.items():
        used = " / ".join(f"{lv['used_fraction']:.0%}" for lv in t["levels"] if lv["size"] > 1)
        perplexity = " / ".join(f"{lv['perplexity']:.0f}" for lv in t["levels"] if lv["size"] > 1)
        coded = [lv for lv in t["levels"] if lv["size"] > 1]
        dedup = " + a dedup level" if len(coded) < len(t["levels"]) else ""
        sizes = sorted({lv["size"] for lv in coded})
        lines += [f"**{name}**: {len(coded)} levels × {'/'.join(map(str, sizes))} codes{dedup}; embed "
                  f"{num(t['embed_seconds'], 1)} s, tokenize {num(t['tokenize_seconds'], 1)} s; seed 0 "
                  "(`genrec tokenize --seed`, default)", ""]
        lines += header(["tokenizer", "codes used per level", "perplexity per level", "items sharing a tuple"])
        lines.append(row(["genrec RQ-VAE, nearest codes (`last_level: nearest`)", used, perplexity,
                          collisions(t["collisions_raw"])]))
        lines.append(row(["genrec RQ-VAE, default `last_level: unique`", used, perplexity,
                          collisions(t["collisions_before_dedup"])]))
        for ref, c in t.get("references", {}).items():
            lines.append(row([f"reference `{ref}` ({c['n_levels']} levels)", "—", "—", collisions(c)]))
        lines += ["", f"![{name} codebook usage](results/tokenizer_{name}.png)", ""]
    pq = [(d, r["tokenizer"]) for d, r in results.items() if "reconstruction" in r.get("tokenizer", {})]
    if pq:
        lines += ["The tokenizers of the bench runs (`tokenizer` in `results/NAME.json`): codes used, collisions "
                  "with plain nearest codes, relative reconstruction error per quantized vector.", ""]
        lines += header(["dataset", "digits", "codes used (min over levels)", "perplexity (min–max)",
                         "items sharing a tuple, nearest codes", "relative reconstruction error", "tokenize s"])
        for dataset, t in pq:
            levels = [lv for lv in t["levels"] if lv["size"] > 1]
            recon = ", ".join(f"{k} {v['relative']:.2f}" for k, v in sorted(t["reconstruction"].items()))
            lines.append(row([dataset, len(levels), f"{min(lv['used_fraction'] for lv in levels):.0%}",
                              f"{min(lv['perplexity'] for lv in levels):.0f}–"
                              f"{max(lv['perplexity'] for lv in levels):.0f}",
                              collisions(t["collisions_raw"]), recon, num(t.get("seconds"), 1)]))
        lines.append("")
    return "\n".join(lines)


def embed_section(e: dict) -> str:
    load = e.get("load_average", {})
    lines = ["## Encoders and the SASRec baseline", "",
             f"Command: `python bench/embed.py` (writes `results/embed.json`). Torch limited to "
             f"{e.get('torch_threads', '?')} threads; encoder throughput excludes model loading and uses no cache. "
             f"Load average before / after: {load.get('before', '—')} / {load.get('after', '—')} (above 2 means "
             "the cores were shared, so the rates are low).", ""]
    lines += header(["measure", "value", "wall time s"])
    t, i = e.get("texts"), e.get("images")
    if t:
        lines.append(row([f"text encoder `{t['model']}`, {t['n']:,} {t['source']}, {t['mean_tokens']} tokens avg, "
                          f"batch {t['batch_size']}", f"{t['texts_per_second']} texts/s", num(t["seconds"], 1)]))
    if i:
        lines.append(row([f"image encoder `{i['model']}` at {i['image_size']} px, {i['n']:,} {i['source']}, "
                          f"batch {i['batch_size']}", f"{i['images_per_second']} images/s", num(i["seconds"], 1)]))
    for name, s in e.get("sasrec", {}).items():
        sr, pop = s["sasrec"], s["popularity"]
        lines.append(row([f"SASRec on {name}, test NDCG@10 / Recall@10 (valid NDCG@10); best epoch "
                          f"{sr['best_epoch']} of {sr['epochs']}, seed {sr['config'].get('seed', '—')}",
                          f"{f4(sr['test']['ndcg@10'])} / {f4(sr['test']['recall@10'])} "
                          f"({f4(sr['valid']['ndcg@10'])})", num(sr["seconds"])]))
        lines.append(row([f"popularity on {name}, test NDCG@10", f4(pop["test"]["ndcg@10"]), "—"]))
    return "\n".join(lines) + "\n"


def serve_section(r: dict) -> str:
    cfg, setting = r["config"], r["setting"]
    cmd = f"python bench/serve.py --run {cfg['run']}" if cfg.get("run") else "python bench/serve.py"
    targets = r.get("targets", {})

    def target(key: str, what: str) -> str:
        t = targets.get(key)
        return "" if t is None else what.format(f"{t['target']:g}") + (" (met)" if t["met"] else " (missed)")

    lines = ["## Serving", "",
             f"Command: `{cmd}` (writes `results/serve.json`); wall time not recorded. Model: {setting['model']}, "
             f"{setting['weights']}; {setting['n_items']:,} items, {len(setting['level_sizes'])} code levels, "
             f"{setting['history_items']}-item histories, k = {setting['k']}, exclude_history "
             f"{str(setting['exclude_history']).lower()}; {r['machine']['cpu_count']} CPU cores, load average "
             f"before / after {r['machine']['load_avg_before']} / {r['machine']['load_avg_after']}; seed "
             f"{cfg.get('seed', '—')} for the request histories. The peer path is a T5 of TIGER's size "
             f"({r['peer_tiger_generate']['parameters']:,} parameters, random weights) over TIGER's layout, "
             f"`generate()` with `prefix_allowed_tokens_fn`, {r['peer_tiger_generate']['history_tokens']} history "
             "tokens.", ""]
    lines += header(["measure", "result", "target"])
    lines.append(row(["in-process latency, batch 1 (ONNX + decoding)",
                      f"p50 {r['onnx_in_process']['p50_ms']:.2f} ms, p99 {r['onnx_in_process']['p99_ms']:.2f} ms",
                      f"{target('onnx_p50_ms', 'p50 ≤ {} ms')}, {target('onnx_p99_ms', 'p99 ≤ {} ms')}"]))
    lines.append(row(["HTTP over loopback, 1 client",
                      f"p50 {r['http_single_client']['p50_ms']:.2f} ms, p99 {r['http_single_client']['p99_ms']:.2f} ms",
                      target("http_p50_ms", "p50 ≤ {} ms")]))
    load = r["http_load"]
    lines.append(row([f"throughput, {load['clients']} concurrent clients, {load['requests']:,} requests",
                      f"{load['requests_per_s']:g} req/s, {load['errors']} errors, {load['n_5xx']} 5xx "
                      f"(p50 {load['p50_ms']:.1f} ms, p99 {load['p99_ms']:.1f} ms)",
                      target("throughput_rps", "≥ {} req/s")]))
    flood = r.get("http_flood")
    if flood:
        alone, beside = flood["alone"], flood["beside_flood"]
        lines.append(row([f"{flood['light_clients']} light clients beside one client looping "
                          f"{flood['flood']['body_kb']:g} kB batches",
                          f"p50 {beside['p50_ms']:.1f} ms, p99 {beside['p99_ms']:.1f} ms (alone: p50 "
                          f"{alone['p50_ms']:.1f} ms, p99 {alone['p99_ms']:.1f} ms)",
                          target("flood_light_p99_ms", "p99 ≤ {} ms")]))
    lines.append(row(["server RSS", f"{r['server_memory']['peak_rss_mb']:g} MB peak",
                      target("server_rss_mb", "< {} MB")]))
    lines.append(row(["torch eager, same model (`GenRecModule.recommend`)",
                      f"p50 {r['torch_eager_ours']['p50_ms']:.2f} ms: ONNX is "
                      f"{r['speedup']['onnx_vs_torch_eager_ours_p50']:g}× faster", ""]))
    lines.append(row(["peer path", f"p50 {r['peer_tiger_generate']['p50_ms']:.1f} ms: ONNX is "
                      f"{r['speedup']['onnx_vs_peer_p50']:g}× faster", target("speedup_vs_peer", "≥ {}×")]))
    lines.append(row(["TIGER's T5 exported by genrec (ONNX, cached decoder step)",
                      f"p50 {r['onnx_tiger_in_process']['p50_ms']:.1f} ms: "
                      f"{r['speedup']['onnx_tiger_vs_peer_p50']:g}× faster than the peer path", ""]))
    lines += ["", "![serving latency](results/serve_latency.png)", ""]
    return "\n".join(lines)


def sasrec_section(tuned: dict[str, dict]) -> str:
    """bench/sasrec.py's variant tables (our SASRec baseline tuned on validation), one per dataset."""
    from sasrec import markdown   # bench/sasrec.py

    lines = ["## SASRec baseline tuning", "",
             "Command: `python bench/sasrec.py --dataset NAME` (writes `results/sasrec_NAME.json`; `--variants ...` "
             "re-runs only those; `--base-from-run` scores the bench setting from the run's own SASRec stage "
             "instead of retraining it). Each variant is trained with early stopping on validation NDCG@10 and the "
             "selection reads validation only; test is shown beside it. The results table's SASRec column uses "
             "the bench setting (`default`) until a selected variant is made the default and every dataset re-run.",
             ""]
    for name, out in tuned.items():
        lines += [markdown(out), f"(commit {commit(out.get('git_commit'))})", ""]
    return "\n".join(lines)


def scale_section(out: dict) -> str:
    """bench/scale.py's own report (scale.json -> markdown), as a section: its headings one level down."""
    from scale import markdown   # bench/scale.py

    body = markdown(out).splitlines()[1:]                       # its "# Scaling" title becomes ours
    body = [("#" + line) if line.startswith("## ") else line for line in body]
    return "\n".join(["## Scale: 10k to 1M items", "",
                       "Command: `python bench/scale.py` (`--stages-only --sizes 1000000` for the 1M stage rows, "
                       "`--serving-only` for the decode rows, `--serve-only --work DIR` to re-serve kept exports; "
                       "writes `results/scale.json`).", *body, "",
                       "![stage time and decode latency against catalogue size](results/scale.png)", ""])


def readme_table(results: dict[str, dict], seeds: dict[str, dict] | None = None) -> str:
    """The README's one table: test NDCG@10 per system and dataset, the mean over seeds of genrec and SASRec
    where bench/seeds.py measured the table's run, and genrec's pipeline minutes."""
    peers = [s for s in SYSTEM_LABELS if s not in ("genrec", "sasrec", "popularity")
             and any(s in r.get("peers", {}) for r in results.values())]
    lines = header(["dataset", "users / items", "genrec", "SASRec (ours)", "popularity",
                    *[SYSTEM_LABELS[p] for p in peers], "genrec / SASRec, seed mean", "genrec pipeline min"])
    for dataset, r in results.items():
        systems = systems_of(r)
        cells = [f"**{f4(systems['genrec']['ndcg@10'])}**" if systems["genrec"]["ndcg@10"] == max(
            m["ndcg@10"] for m in systems.values()) else f4(systems["genrec"]["ndcg@10"])]
        cells += [f4(systems[s]["ndcg@10"]) for s in ("sasrec", "popularity")]
        cells += [f4(systems[p]["ndcg@10"]) if p in systems else "—" for p in peers]
        seeded = (seeds or {}).get(dataset)
        if seeded is not None and seeds_outdated(seeded, r) is None:
            mean = {sys_: seeded["summary"]["systems"][sys_]["test"]["ndcg@10"] for sys_ in ("genrec", "sasrec")}
            cells.append(f"{f4(mean['genrec']['mean'])} / {f4(mean['sasrec']['mean'])} ({mean['genrec']['n']} seeds)")
        else:
            cells.append("—")
        stats = r["dataset_stats"]
        lines.append(row([dataset, f"{stats['n_users']:,} / {stats['n_items']:,}", *cells,
                          f"{pipeline_minutes(r):.1f}"]))
    return "\n".join(lines) + "\n"


def with_readme_table(readme: str, table_text: str) -> str:
    """``readme`` with the text between README_START and README_END replaced by ``table_text``."""
    start, end = readme.find(README_START), readme.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"README.md has no results table block: put the lines {README_START!r} and "
                         f"{README_END!r} where the table goes")
    return readme[:start + len(README_START)] + "\n" + table_text + readme[end:]


def render(folder: Path = RESULTS) -> str:
    """RESULTS.md from the JSON in ``folder``: the same text on every machine for the same files."""
    results = load_results(folder)
    parts = ["# Benchmark results", "",
             "Generated by `python bench/summary.py` from `bench/results/*.json`; do not edit by hand "
             "(`tests/test_bench.py` fails when this file and the JSON disagree: re-run the script after a "
             "benchmark). Each JSON also records the git commit, machine and package versions. Every figure "
             "is one run on a 2-core x86_64 CPU machine; absolute times vary with load, so compare times "
             "measured in one run.", ""]
    seeds = load_kind(folder, "seeds")
    if results:
        parts.append(runs_section(results, seeds))
        if protocol := protocol_section(results):
            parts.append(protocol)
    if steps := steps_section(folder):
        parts.append(steps)
    if seeds:
        parts.append(seeds_section(seeds, results))
    if segments := load_kind(folder, "segments"):
        parts.append(segments_section(segments))
    if weights := load_kind(folder, "weights"):
        parts.append(weights_section(weights))
    if components := load_kind(folder, "components"):
        parts.append(components_section(components))
    if ablations := load_kind(folder, "ablation"):
        parts.append(ablation_section(ablations, results))
    if layouts := load_kind(folder, "layouts"):
        parts.append(layouts_section(layouts))
    if cold := load_kind(folder, "cold_start"):
        parts.append(cold_start_section(cold))
    if designs := load_kind(folder, "design"):
        parts.append(design_section(designs))
    tokenizers = load_kind(folder, "tokenizer")
    if tokenizers or results:
        parts.append(tokenizer_section(tokenizers, results))
    if (folder / "embed.json").exists():
        parts.append(embed_section(json.loads((folder / "embed.json").read_text())))
    if (folder / "serve.json").exists():
        parts.append(serve_section(json.loads((folder / "serve.json").read_text())))
    if tuned := load_kind(folder, "sasrec"):
        parts.append(sasrec_section(tuned))
    if (folder / "scale.json").exists():
        parts.append(scale_section(json.loads((folder / "scale.json").read_text())))
    return "\n".join(parts).rstrip() + "\n"


def plot(results: dict[str, dict], out: Path) -> Path:
    import matplotlib.pyplot as plt
    import numpy as np

    from genrec.plots import save_png

    systems = [s for s in SYSTEM_LABELS if any(s in systems_of(r) for r in results.values())]
    datasets = list(results)
    width = 0.8 / max(1, len(systems))
    fig, ax = plt.subplots(figsize=(max(5, 1.8 * len(datasets) + 2), 3.6))
    x = np.arange(len(datasets))
    for i, system in enumerate(systems):
        values = [systems_of(results[d]).get(system, {}).get("ndcg@10", np.nan) for d in datasets]
        bars = ax.bar(x + (i - (len(systems) - 1) / 2) * width, values, width, label=SYSTEM_LABELS[system])
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=1)
    ax.set_xticks(x, datasets)
    ax.set_ylabel("test NDCG@10 (full ranking)")
    ax.set_title("genrec vs baselines, same run per dataset (bench/run.py)")
    ax.legend(fontsize=8)
    return save_png(fig, out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/summary.py", description=__doc__.strip().splitlines()[0])
    p.add_argument("--results-dir", type=Path, default=RESULTS, help="where the JSON files are")
    p.add_argument("--out", type=Path, default=OUT, help="the markdown file to write")
    p.add_argument("--readme", type=lambda v: Path(v) if v else None, default=README,
                   help="markdown file whose results-table block is rewritten too (none with --readme '')")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file differs from the JSON")
    p.add_argument("--plot", action="store_true", help="also redraw RESULTS_DIR/summary.png (matplotlib)")
    a = p.parse_args(argv)

    if not any(a.results_dir.glob("*.json")):
        raise SystemExit(f"no results in {a.results_dir}: run python bench/run.py --dataset NAME first")
    outputs = {a.out: render(a.results_dir)}
    if a.readme is not None and a.readme.exists():
        readme = a.readme.read_text()
        outputs[a.readme] = with_readme_table(readme, readme_table(load_results(a.results_dir),
                                                                   load_kind(a.results_dir, "seeds")))
    stale = [path for path, text in outputs.items() if not path.exists() or path.read_text() != text]
    if a.check:
        for path in stale:
            print(f"{path} is out of date with {a.results_dir}/*.json: run python bench/summary.py", file=sys.stderr)
        return 1 if stale else 0
    from genrec.io import write_text_atomic

    for path in stale:
        write_text_atomic(path, outputs[path])
        print(f"wrote {path}")
    if a.plot:
        plot(load_results(a.results_dir), a.results_dir / "summary.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
