"""Leave-one-out and temporal splits over chronological sequences.

Leave-one-out (DESIGN.md protocol, the default): for a sequence s of length n,
  train      = s[:n-2]                      (the only part any model or feature may learn from)
  valid      = history s[:n-2], target s[n-2]
  test       = history s[:n-1], target s[n-1]
Every user therefore needs at least 3 interactions; ``prepare`` enforces that.

Temporal (``genrec prepare --split temporal``): one global time line cut at two quantiles of all
event times, so no model learns from anything that happened after the validation window opened;
see :func:`temporal`. ``prepare`` records which split a dataset uses and its cut points in the
manifest (``split``), and :func:`make_split` rebuilds it from there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_LEN_LEAVE_ONE_OUT = 3
DEFAULT_MAX_ITEMS = 20   # the protocol's history length (PrepareConfig.max_items, recorded in the dataset manifest)
SPLITS = ("leave_one_out", "temporal")
PAD_ITEM = -1   # left padding of fixed-length histories (item ids are >= 0)


def left_pad(histories, length: int) -> np.ndarray:
    """The last ``length`` ids of each history, left-padded with PAD_ITEM: (n, length) int64.

    Training, evaluation and the ONNX server all cut histories with this one function.
    """
    out = np.full((len(histories), length), PAD_ITEM, dtype=np.int64)
    for row, hist in enumerate(histories):
        tail = np.asarray(hist, dtype=np.int64)[-length:]
        if len(tail):
            out[row, length - len(tail):] = tail
    return out


@dataclass(frozen=True)
class EvalExamples:
    """Histories and next-item targets for one evaluation split."""

    user_ids: np.ndarray          # (n,) int
    histories: list[np.ndarray]   # chronological item ids before the target (untruncated)
    targets: np.ndarray           # (n,) int

    def __len__(self) -> int:
        return len(self.targets)


@dataclass(frozen=True)
class Split:
    train: list[np.ndarray]   # per user, the training prefix (may be shorter than 2 for odd data)
    valid: EvalExamples
    test: EvalExamples


def leave_one_out(sequences: list[np.ndarray]) -> Split:
    """Split each user's chronological sequence; see the module docstring."""
    for u, seq in enumerate(sequences):
        if len(seq) < MIN_LEN_LEAVE_ONE_OUT:
            raise ValueError(
                f"user {u} has {len(seq)} interactions; leave-one-out needs at least "
                f"{MIN_LEN_LEAVE_ONE_OUT}. Prepare the dataset with min_seq_len >= {MIN_LEN_LEAVE_ONE_OUT}."
            )
    users = np.arange(len(sequences))
    train = [np.asarray(s[:-2]) for s in sequences]
    valid = EvalExamples(users, [np.asarray(s[:-2]) for s in sequences], np.array([s[-2] for s in sequences]))
    test = EvalExamples(users, [np.asarray(s[:-1]) for s in sequences], np.array([s[-1] for s in sequences]))
    return Split(train=train, valid=valid, test=test)


def temporal(sequences: list[np.ndarray], timestamps: list[np.ndarray], valid_cut: int, test_cut: int) -> Split:
    """Global temporal split: events before ``valid_cut`` train, [valid_cut, test_cut) validate, the rest test.

    Each user contributes at most one target per evaluation split (their first event in that window),
    with all earlier events as history; users with no event in a window are absent from it.
    """
    if valid_cut > test_cut:
        raise ValueError(f"valid_cut ({valid_cut}) must be <= test_cut ({test_cut})")
    train, vu, vh, vt, tu, th, tt = [], [], [], [], [], [], []
    for u, (seq, ts) in enumerate(zip(sequences, timestamps)):
        if ts is None or len(ts) != len(seq):
            raise ValueError(f"user {u}: temporal split needs a timestamp per interaction")
        n_train = int(np.searchsorted(ts, valid_cut, side="left"))
        n_pre_test = int(np.searchsorted(ts, test_cut, side="left"))
        train.append(np.asarray(seq[:n_train]))
        if n_pre_test > n_train and n_train > 0:
            vu.append(u), vh.append(np.asarray(seq[:n_train])), vt.append(seq[n_train])
        if len(seq) > n_pre_test and n_pre_test > 0:
            tu.append(u), th.append(np.asarray(seq[:n_pre_test])), tt.append(seq[n_pre_test])
    mk = lambda u, h, t: EvalExamples(np.array(u, dtype=np.int64), h, np.array(t, dtype=np.int64))  # noqa: E731
    return Split(train=train, valid=mk(vu, vh, vt), test=mk(tu, th, tt))


def training_items(split: Split) -> np.ndarray:
    """Sorted unique item ids that occur in the training part (what learned features may see)."""
    if not split.train:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.concatenate([s for s in split.train if len(s)] or [np.zeros(0, dtype=np.int64)]))


def temporal_cuts(event_times: np.ndarray, valid_from: float, test_from: float) -> tuple[int, int]:
    """The validation and test cut times: the ``valid_from`` / ``test_from`` quantiles of all event times
    (PrepareConfig checks 0 < valid_from <= test_from < 1)."""
    valid_cut, test_cut = np.quantile(np.asarray(event_times), [valid_from, test_from], method="higher")
    return int(valid_cut), int(test_cut)


def make_split(spec: dict | None, sequences: list[np.ndarray], timestamps: list[np.ndarray | None]) -> Split:
    """The split a dataset manifest's ``split`` entry describes (no entry: leave-one-out)."""
    kind = (spec or {}).get("kind", "leave_one_out")
    if kind == "leave_one_out":
        return leave_one_out(sequences)
    if kind == "temporal":
        return temporal(sequences, timestamps, spec["valid_cut"], spec["test_cut"])
    raise ValueError(f"unknown split kind {kind!r} in the dataset manifest; expected one of {SPLITS}")
