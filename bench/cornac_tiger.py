"""The peer: cornac's TIGER on the same run, splits and item text vectors as genrec.

    pip install -e ".[bench]"                       # cornac 3.x
    python bench/run.py --dataset Office            # genrec, SASRec, popularity -> bench/results/Office.json
    python bench/cornac_tiger.py --dataset Office   # adds cornac's TIGER to Office.json / Office.md
    python bench/run.py --dataset Office --with-cornac   # both in one command

cornac.models.TIGER runs with PAISCHER_CONFIG (6+6-layer T5, standardized inputs, RQ-VAE 768/512/256,
beam width 30). That recipe is 8,000 RQ-VAE epochs and 100 seq2seq epochs: days on 2 CPU cores. So
the peer gets a wall-time budget instead, by default 3x genrec's own training-side wall time in the
same results file (embed + tokenize + train), and the recipe is scaled to fit it: the RQ-VAE stops at
15% of the budget, the number of seq2seq epochs comes from a throughput probe of the same T5, and the
cosine warmup is 10% of the steps that fit (10,000 in the original). Everything else is
PAISCHER_CONFIG. The budget and the epochs reached are written next to the metrics. `--recipe grid`
runs cornac's faster GRID_CONFIG (4+4 layers, residual k-means, batch 256) the same way.

Data and metrics: bench/cornac_common.py (genrec's leave-one-out as cornac's splits, cornac's own
ranking_eval over the full catalogue); item vectors are RUN/features/text.npy (the MiniLM vectors
genrec's tokenizer used) through FeatureModality.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from cornac_common import cornac_splits, next_item_method, record_peer, score_test_split  # noqa: E402, F401
from run import add_existing_run_args, default_run_dir, peak_rss_mb, training_side_seconds  # noqa: E402

RQVAE_SHARE = 0.15           # fraction of the budget the RQ-VAE may use (its recipe asks for 8,000 epochs)
PROBE_STEPS = 12             # timed seq2seq steps that size the epoch count


class DeadlineRange:
    """Wraps cornac's epoch progress bar so the epoch loop ends once ``deadline`` (perf_counter) passes."""

    def __init__(self, bar, deadline: float):
        self.bar, self.deadline, self.epochs_done = bar, deadline, 0

    def __iter__(self):
        for epoch in self.bar:
            if time.perf_counter() > self.deadline:
                break
            yield epoch
            self.epochs_done = epoch
        self.bar.close()

    def __getattr__(self, name):  # set_postfix and the rest go to the real bar
        return getattr(self.bar, name)


def install_deadlines(deadlines: dict[str, float], record: dict) -> None:
    """Make cornac's TIGER stop its 'RQ-VAE' and 'TIGER' loops at the given deadlines (perf_counter).

    Epoch loops stop at the next epoch boundary; the seq2seq batch iterator also stops mid-epoch, so
    one long epoch cannot overrun the budget. ``record`` receives the loops and the batches trained.
    """
    from cornac.models.tiger import recom_tiger

    real_trange, real_batches = recom_tiger.trange, recom_tiger.session_seq_iter
    record["batches"] = 0

    def trange(*args, desc=None, **kwargs):
        wrapped = DeadlineRange(real_trange(*args, desc=desc, **kwargs), deadlines.get(desc, math.inf))
        record[desc] = wrapped
        return wrapped

    def session_seq_iter(*args, **kwargs):
        for batch in real_batches(*args, **kwargs):
            if time.perf_counter() > deadlines.get("TIGER", math.inf):
                record["stopped_mid_epoch"] = True
                return
            record["batches"] += 1
            yield batch

    recom_tiger.trange, recom_tiger.session_seq_iter = trange, session_seq_iter


def recipe(name: str) -> dict:
    """cornac's shipped TIGER recipes: 'paischer' (PAISCHER_CONFIG, the issue's choice) or 'grid' (GRID_CONFIG)."""
    from cornac.models.tiger import GRID_CONFIG, PAISCHER_CONFIG

    recipes = {"paischer": PAISCHER_CONFIG, "grid": GRID_CONFIG}
    if name not in recipes:
        raise SystemExit(f"unknown recipe {name!r}; choose from {sorted(recipes)}")
    return dict(recipes[name])


def probe_samples_per_second(tiger, seed: int = 0) -> float:
    """Training samples/s of cornac's TIGERSeq2Seq sized as ``tiger`` (a cornac TIGER, not yet fitted), on random
    tokens: forward + backward + optimizer step, as in its training loop."""
    import torch
    from cornac.models.tiger.tiger import TIGERSeq2Seq

    torch.manual_seed(seed)
    levels = [tiger.rqvae_codebook_size] * tiger.rqvae_num_levels + [4]
    model = TIGERSeq2Seq(levels, d_model=tiger.d_model, d_ff=tiger.d_ff, num_heads=tiger.num_heads, d_kv=tiger.d_kv,
                         num_enc_layers=tiger.num_enc_layers, num_dec_layers=tiger.num_dec_layers,
                         dropout=tiger.dropout)
    opt = torch.optim.AdamW(model.parameters(), lr=tiger.learning_rate)
    batch = tiger.batch_size
    enc = torch.randint(1, tiger.rqvae_codebook_size, (batch, tiger.max_len * len(levels)))
    target = torch.stack([torch.randint(0, s, (batch,)) for s in levels], dim=1)

    def step():
        opt.zero_grad()
        model(enc, torch.ones_like(enc, dtype=torch.float), target).backward()
        opt.step()

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(PROBE_STEPS):
        step()
    return PROBE_STEPS * batch / (time.perf_counter() - t0)


def scaled_config(base: dict, budget: float, n_train_samples: int, samples_per_second: float, seed: int) -> dict:
    """A cornac recipe with its epoch counts scaled to the seq2seq share of the budget."""
    cfg = dict(base, seed=seed, verbose=True)
    seq_seconds = budget * (1 - RQVAE_SHARE)
    epochs = max(1, int(seq_seconds * samples_per_second // max(1, n_train_samples)))
    cfg["n_epochs"] = min(epochs, base.get("n_epochs", 20))
    if cfg.get("lr_schedule") == "cosine":
        steps = cfg["n_epochs"] * math.ceil(n_train_samples / cfg.get("batch_size", 256))
        cfg["warmup_steps"] = min(base.get("warmup_steps", 10000), max(1, steps // 10))
    if cfg["n_epochs"] >= 3:   # best-on-validation needs a few checkpoints to choose from
        cfg["val_eval_every"] = max(1, cfg["n_epochs"] // 3)
        cfg["val_sample"] = 500
    else:
        cfg["model_selection"] = "last"
    return cfg


def full_recipe_estimate(entry: dict, base: dict, n_train_samples: int) -> dict:
    """What the unscaled recipe's fit would take on this machine, at the speeds measured inside the budget.

    Seq2seq: the recipe's epochs over ``n_train_samples`` at the probe's samples/s. RQ-VAE: the recipe's
    epochs at the epochs/s it reached in its share of the budget (if it finished, its share bounds it).
    An estimate, not a run: it ignores validation rounds, so it is a lower bound on the real fit.
    """
    seq_hours = base["n_epochs"] * n_train_samples / entry["probe_samples_per_second"] / 3600
    rq_seconds = RQVAE_SHARE * entry["budget_seconds"]
    rq_epochs_done = entry.get("rqvae_epochs") or 0
    rq_recipe = base.get("rqvae_n_epochs", 0)
    if entry.get("config", {}).get("tokenizer", "rqvae") != "rqvae" or not rq_recipe:
        rq_hours = 0.0   # GRID_CONFIG's residual k-means has no epochs to scale
    elif rq_epochs_done >= rq_recipe:
        rq_hours = rq_seconds / 3600   # it finished inside its share
    else:
        rq_hours = rq_recipe * rq_seconds / max(1, rq_epochs_done) / 3600
    return {"hours": round(seq_hours + rq_hours, 1), "seq2seq_hours": round(seq_hours, 1),
            "rqvae_hours": round(rq_hours, 1), "recipe_seq2seq_epochs": base["n_epochs"],
            "recipe_rqvae_epochs": rq_recipe, "n_train_samples": n_train_samples}


def train_samples(sequences) -> int:
    """cornac's seq2seq training samples: the prefixes of each s[:-2] with at least one item."""
    return sum(max(0, len(s) - 3) for s in sequences)


def default_budget(result: dict) -> float:
    return 3.0 * training_side_seconds(result)


def run_peer(run_dir: Path, budget: float, seed: int = 0, recipe_name: str = "paischer") -> dict:
    """Fit cornac's TIGER within ``budget`` seconds and evaluate it on the test split; returns its entry."""
    import cornac
    from cornac.data import FeatureModality
    from cornac.models import TIGER

    from genrec.data.dataset import load_dataset

    ds = load_dataset(run_dir)
    text_path = run_dir / "features" / "text.npy"
    if not text_path.exists():
        raise SystemExit(f"{text_path} not found: run bench/run.py --dataset NAME (or genrec embed) first")
    text = np.load(text_path).astype(np.float32)
    if text.shape[0] != ds.n_items:
        raise SystemExit(f"{text_path} has {text.shape[0]} rows but the dataset has {ds.n_items} items; "
                         "re-run genrec embed on this run")
    n_train_samples = train_samples(ds.sequences)
    method, build_seconds = next_item_method(
        ds.sequences, seed, item_feature=FeatureModality(features=text, ids=[str(i) for i in range(ds.n_items)]))

    base = recipe(recipe_name)
    rate = probe_samples_per_second(TIGER(**base), seed)
    cfg = scaled_config(base, budget, n_train_samples, rate, seed)
    print(f"cornac TIGER: budget {budget:.0f} s, probe {rate:.0f} samples/s, {n_train_samples} training samples "
          f"-> n_epochs {cfg['n_epochs']}, warmup {cfg['warmup_steps']} steps", flush=True)

    loops: dict = {}
    fit_start = time.perf_counter()
    install_deadlines({"RQ-VAE": fit_start + RQVAE_SHARE * budget, "TIGER": fit_start + budget}, loops)
    model = TIGER(**cfg)
    model.fit(method.train_set, method.val_set)
    fit_seconds = time.perf_counter() - fit_start

    entry = score_test_split(model, method)   # recall/ndcg@5/10/20, n_users, seconds
    entry.update(
        # cornac maps every finished beam through its sid -> item table (a KeyError otherwise), so
        # an item outside the catalogue cannot be returned.
        invalid_rate=0.0,
        fit_seconds=round(fit_seconds, 1),
        build_seconds=round(build_seconds, 1),
        budget_seconds=round(budget, 1),
        rqvae_epochs=loops["RQ-VAE"].epochs_done if "RQ-VAE" in loops else None,
        seq2seq_epochs=round(loops["batches"] * cfg["batch_size"] / max(1, n_train_samples), 2),  # fractional
        seq2seq_batches=loops["batches"],
        stopped_mid_epoch=loops.get("stopped_mid_epoch", False),
        probe_samples_per_second=round(rate, 1),
        config={k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
        recipe=recipe_name,
        cornac_version=cornac.__version__,
        peak_rss_mb=peak_rss_mb(),
    )
    entry["full_recipe_estimate"] = full_recipe_estimate(entry, base, n_train_samples)
    return entry


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/cornac_tiger.py", description=__doc__.strip().splitlines()[0])
    add_existing_run_args(p)
    p.add_argument("--budget-seconds", type=float, default=None,
                   help="cornac's fit budget (default: 3x genrec's embed + tokenize + train time in NAME.json)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--recipe", default="paischer", choices=("paischer", "grid"),
                   help="cornac's PAISCHER_CONFIG (default, 6+6 layers) or GRID_CONFIG (4+4, residual k-means)")
    p.add_argument("--estimate-only", action="store_true",
                   help="fit nothing: add the full-recipe fit estimate to the peer already in NAME.json")
    a = p.parse_args(argv)
    if a.estimate_only:
        add_estimate(a.results_dir / f"{a.dataset}.json", a.run_dir or default_run_dir(a.dataset), a.recipe)
        return 0
    add_peer(a.results_dir / f"{a.dataset}.json", a.run_dir or default_run_dir(a.dataset),
             a.budget_seconds, a.seed, a.recipe)
    return 0


def peer_key(recipe_name: str) -> str:
    """The peer's name in a result's 'peers' (and bench/summary.py's labels)."""
    return "cornac_tiger" if recipe_name == "paischer" else f"cornac_tiger_{recipe_name}"


def add_peer(result_path: Path, run_dir: Path, budget: float | None = None, seed: int = 0,
             recipe_name: str = "paischer") -> dict:
    """Run the peer on ``run_dir`` and add it to the results JSON (and its markdown) under 'peers'."""
    return record_peer(result_path, peer_key(recipe_name),
                       lambda result: run_peer(run_dir, budget or default_budget(result), seed, recipe_name))


def add_estimate(result_path: Path, run_dir: Path, recipe_name: str = "paischer") -> dict:
    """Add ``full_recipe_estimate`` to a peer entry recorded before the estimate existed."""
    from genrec.data.dataset import load_dataset
    from genrec.io import write_json_atomic

    result = json.loads(result_path.read_text())
    key = peer_key(recipe_name)
    if key not in result.get("peers", {}):
        raise SystemExit(f"{result_path} has no '{key}' peer: run python bench/cornac_tiger.py --dataset NAME first")
    entry = result["peers"][key]
    entry["full_recipe_estimate"] = full_recipe_estimate(entry, recipe(recipe_name),
                                                         train_samples(load_dataset(run_dir).sequences))
    write_json_atomic(result_path, result)
    print(json.dumps(entry["full_recipe_estimate"]))
    return entry


if __name__ == "__main__":
    sys.exit(main())
