"""A second peer: cornac's SASRec, with its own training loop and ranking_eval, on genrec's run and splits.

    pip install -e ".[bench]"                         # cornac 3.x
    python bench/run.py --dataset Office              # genrec, SASRec (ours), popularity -> bench/results/Office.json
    python bench/cornac_sasrec.py --dataset Office    # adds cornac's SASRec to Office.json / Office.md
    python bench/run.py --dataset Office --with-cornac   # genrec, then both cornac peers

Pins our SASRec baseline by someone else's code. cornac.models.SASRec runs with its defaults: width 100,
2 blocks, 1 head, dropout 0.2, loss 'ce' (softmax over the batch's 512 targets plus 2048 negatives shared by
the batch, drawn ~ training count^0.5), Adam lr 1e-3 with betas (0.9, 0.98), no L2, histories of its last
50 items (our protocol cuts histories at the dataset's max_items, 20 on the S3-Rec data; the peer keeps its
own length), one training example per next item of each training sequence. Two settings differ from its
defaults, which stop after 10 epochs and keep the last: it trains MAX_EPOCHS = 20 epochs and keeps the
epoch with the best validation NDCG@10 (model_selection="best"), scored by cornac's own val_score
(ranking_eval on the valid split, s[:-1]) every VAL_EVERY = 5 epochs, its default interval; NDCG@10 on
validation is also what selects our SASRec. cornac has no early stopping, so all epochs run. The
validation curve and the chosen epoch are written next to the test metrics.

Cost: one forward pass per training target (not per window, as ours), about a minute per epoch on
Office with one thread (38k targets), so the cap is 20 epochs, twice cornac's default, not 50; raise
it with --epochs when the validation curve still climbs at the last check.

Data and metrics: bench/cornac_common.py (genrec's leave-one-out as cornac's splits, cornac's ranking_eval
over the full catalogue on the test split).
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from cornac_common import next_item_method, record_peer, score_test_split  # noqa: E402
from run import add_existing_run_args, default_run_dir, peak_rss_mb  # noqa: E402

PEER_KEY = "cornac_sasrec"   # the peer's name in a result's 'peers' (and bench/summary.py's labels)
MAX_EPOCHS = 20              # epochs trained (cornac's default n_epochs is 10); ~1 min each on Office
VAL_EVERY = 5                # validation interval in epochs (cornac's default val_eval_every)
VAL_METRIC, VAL_K = "ndcg", 10   # selection metric, as for our SASRec (cornac's default is recall@20)
THREADS = 1                  # torch threads, as our SASRec trains (SASRecTrainConfig.num_threads): on 2 busy
                             # cores, 2 threads made one demo epoch 25x slower (148 s against 6 s); on an
                             # idle machine --threads 2 may be faster


@contextmanager
def recorded_validation(curve: list[float]):
    """During SASRec.fit, score validation with every item known and append each score to ``curve``.

    cornac 3.0.1's val_score calls ranking_eval with exclude_unknowns=True: a validation target that is not
    a training item leaves that user no positive, cornac's NDCG/Recall divide 0 by 0, and the mean is NaN.
    Every later `score > best` is then False, so model_selection="best" silently keeps the last epoch
    (Office: 4 NaN checks in 20 epochs). Here the same ranking_eval runs with exclude_unknowns=False, as the
    test scoring does: such users count as misses, as in genrec's validation.
    """
    from cornac.eval_methods.next_item_evaluation import ranking_eval
    from cornac.metrics import NDCG, Recall
    from cornac.models.sasrec import recom_sasrec

    real = recom_sasrec.val_score
    metrics = {"ndcg": NDCG, "recall": Recall}

    def val_score(model, train_set, val_set, metric="recall", k=20):
        (score,), _ = ranking_eval(model, [metrics[metric.lower()](k=k)], train_set, val_set, exclude_unknowns=False,
                                   mode="last")
        curve.append(float(score))
        return float(score)

    recom_sasrec.val_score = val_score
    try:
        yield curve
    finally:
        recom_sasrec.val_score = real


def peer_config(seed: int, epochs: int = MAX_EPOCHS, val_every: int = VAL_EVERY) -> dict:
    """cornac SASRec keyword arguments: its defaults, with the epoch cap and best-on-validation selection."""
    return {"n_epochs": epochs, "model_selection": "best", "val_eval_every": val_every, "val_metric": VAL_METRIC,
            "val_k": VAL_K, "seed": seed, "verbose": True}


def changed_defaults(cls, cfg: dict) -> dict:
    """The settings in ``cfg`` that differ from ``cls``'s constructor defaults (seed and verbosity aside)."""
    import inspect

    params = inspect.signature(cls).parameters
    return {k: v for k, v in cfg.items() if k not in ("seed", "verbose") and params[k].default != v}


def run_peer(run_dir: Path, seed: int = 0, epochs: int = MAX_EPOCHS, val_every: int = VAL_EVERY,
             threads: int = THREADS) -> dict:
    """Fit cornac's SASRec on the run's training split, select on validation, score the test split; its entry."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run_peer(run_dir, seed, epochs, val_every)
    finally:
        torch.set_num_threads(before)


def _run_peer(run_dir: Path, seed: int, epochs: int, val_every: int) -> dict:
    import cornac
    import torch
    from cornac.models import SASRec

    from genrec.data.dataset import load_dataset

    ds = load_dataset(run_dir)
    method, build_seconds = next_item_method(ds.sequences, seed)
    cfg = peer_config(seed, epochs, val_every)
    model = SASRec(**cfg)
    print(f"cornac SASRec: {epochs} epochs, validation {VAL_METRIC}@{VAL_K} every {val_every}", flush=True)
    curve: list[float] = []
    t0 = time.perf_counter()
    with recorded_validation(curve):
        model.fit(method.train_set, method.val_set)
    fit_seconds = time.perf_counter() - t0

    checked = [val_every * (i + 1) for i in range(len(curve))]   # the epochs cornac validated
    best = max(range(len(curve)), key=lambda i: (curve[i], -i)) if curve else None   # earliest on ties, as cornac
    entry = score_test_split(model, method)   # recall/ndcg@5/10/20, n_users, seconds
    entry.update(
        invalid_rate=0.0,                     # it scores the catalogue's items only
        fit_seconds=round(fit_seconds, 1),
        build_seconds=round(build_seconds, 1),
        epochs=epochs,
        best_epoch=checked[best] if best is not None else epochs,   # 1-based, as cornac counts
        valid_curve={str(e): round(v, 5) for e, v in zip(checked, curve)},
        selection=f"best validation {VAL_METRIC}@{VAL_K} of epochs {', '.join(map(str, checked))}"
        if curve else "last epoch (nothing validated)",
        config=cfg,
        defaults_changed=changed_defaults(SASRec, cfg),
        torch_threads=torch.get_num_threads(),
        cornac_version=cornac.__version__,
        peak_rss_mb=peak_rss_mb(),
    )
    return entry


def add_peer(result_path: Path, run_dir: Path, seed: int = 0, epochs: int = MAX_EPOCHS,
             val_every: int = VAL_EVERY, threads: int = THREADS) -> dict:
    """Run the peer on ``run_dir`` and add it to the results JSON (and its markdown) under 'peers'.

    A run folder without its dataset stage (the bench run was scratched) gets it prepared with the dataset's
    config family, as bench/sasrec.py does; the peer needs nothing else from the run.
    """
    if not (run_dir / "dataset").exists() and result_path.exists():
        from sasrec import base_setting, prepared_run

        _, _, (raw, stages_cfg) = base_setting(result_path.stem, smoke=False)
        prepared_run(result_path.stem, False, run_dir, raw, stages_cfg)
    return record_peer(result_path, PEER_KEY, lambda result: run_peer(run_dir, seed, epochs, val_every, threads))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/cornac_sasrec.py", description=__doc__.strip().splitlines()[0])
    add_existing_run_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=MAX_EPOCHS, help=f"epochs trained (default {MAX_EPOCHS})")
    p.add_argument("--val-every", type=int, default=VAL_EVERY,
                   help=f"validate every N epochs and keep the best (default {VAL_EVERY})")
    p.add_argument("--threads", type=int, default=THREADS, help=f"torch threads (default {THREADS})")
    a = p.parse_args(argv)
    if min(a.epochs, a.val_every, a.threads) < 1:
        p.error("--epochs, --val-every and --threads must be >= 1")
    add_peer(a.results_dir / f"{a.dataset}.json", a.run_dir or default_run_dir(a.dataset), a.seed, a.epochs,
             a.val_every, a.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
