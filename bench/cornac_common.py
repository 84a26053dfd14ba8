"""What the cornac peers (bench/cornac_tiger.py, bench/cornac_sasrec.py) share: the splits, the test scoring, the JSON.

Data: each user's sequence from RUN/dataset, split as leave_one_out does (train = s[:-2], valid = s[:-1],
test = s), passed through NextItemEvaluation.from_splits with mode="last" (one target per user, the last
item). Metrics come from cornac's own ranking_eval over the full catalogue; with one target per user its
NDCG@K and Recall@K are the same quantities genrec.metrics computes.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from run import markdown, peer_reference  # noqa: E402

from genrec.metrics import DEFAULT_KS as KS  # noqa: E402


def cornac_splits(sequences: list[np.ndarray]) -> tuple[list, list, list]:
    """USIT tuples (user, session = user, item, time = position) for cornac, split as genrec's leave-one-out."""
    train, valid, test = [], [], []
    for user, seq in enumerate(sequences):
        rows = [(str(user), str(user), str(int(item)), pos) for pos, item in enumerate(seq)]
        train.extend(rows[:-2])
        valid.extend(rows[:-1])
        test.extend(rows)
    return train, valid, test


def next_item_method(sequences: list[np.ndarray], seed: int, **modalities):
    """cornac's NextItemEvaluation over genrec's leave-one-out splits, and the seconds it took to build.

    ``modalities`` go to from_splits (e.g. ``item_feature=FeatureModality(...)`` for TIGER).
    """
    from cornac.eval_methods import NextItemEvaluation

    train, valid, test = cornac_splits(sequences)
    t0 = time.perf_counter()
    method = NextItemEvaluation.from_splits(train_data=train, val_data=valid, test_data=test, fmt="USIT",
                                            exclude_unknowns=False, mode="last", seed=seed, **modalities)
    return method, time.perf_counter() - t0


def score_test_split(model, method) -> dict:
    """Recall/NDCG@{5,10,20} of a fitted cornac model on the test split (cornac's ranking_eval, full catalogue),
    with the number of users scored and the evaluation seconds."""
    from cornac.eval_methods.next_item_evaluation import ranking_eval
    from cornac.metrics import NDCG, Recall

    metrics = [Recall(k=k) for k in KS] + [NDCG(k=k) for k in KS]
    t0 = time.perf_counter()
    avg, _ = ranking_eval(model, metrics, method.train_set, method.test_set, exclude_unknowns=False, mode="last",
                          verbose=True)
    names = [f"recall@{k}" for k in KS] + [f"ndcg@{k}" for k in KS]
    return {**{name: float(v) for name, v in zip(names, avg)}, "n_users": len(method.test_set.sessions),
            "seconds": round(time.perf_counter() - t0, 1)}


def record_peer(result_path: Path, key: str, make_entry: Callable[[dict], dict]) -> dict:
    """Add ``make_entry(result)`` to the results JSON under ``peers[key]`` (and rewrite its markdown).

    The entry keeps the genrec run it sits beside (``peer_reference``), so a later genrec re-run can carry it.
    """
    from genrec.io import write_json_atomic, write_text_atomic

    if not result_path.exists():
        raise SystemExit(f"{result_path} not found: run python bench/run.py --dataset NAME first")
    result = json.loads(result_path.read_text())
    entry = {**make_entry(result), **peer_reference(result)}
    result = json.loads(result_path.read_text())   # re-read: the fit may have taken long
    result.setdefault("peers", {})[key] = entry
    write_json_atomic(result_path, result)
    write_text_atomic(result_path.with_suffix(".md"), markdown(result))
    print(markdown(result))
    return result
