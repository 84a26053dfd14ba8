"""SASRec training (collaborative features and the baseline): data windows, leakage proofs, learning, popularity.

The leakage proof: SASRec's full-softmax loss pushes every catalogue row down as a negative, so
rows of unseen items do move (that is not leakage: knowing an item exists is not knowing it was
the target). What proves that validation and test targets are never seen is that (1) no training
batch contains them, and (2) the trained weights are bitwise identical when those targets are
replaced by other items.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from genrec.baselines import evaluate_popularity, popularity_counts, popularity_ranked
from genrec.data.dataset import Dataset
from genrec.data.split import EvalExamples
from genrec.features.collab import CHECKPOINT, collab_features, load_sasrec, train_sasrec
from genrec.lit.batching import LengthBucketBatchSampler
from genrec.lit.sasrec import (
    IGNORE_INDEX,
    LitSASRec,
    SASRecDataModule,
    SASRecTrainConfig,
    TrainWindows,
    collate_train,
    evaluate_sasrec,
    pad_histories,
)
from genrec.model.sasrec import SASRec, SASRecConfig
from conftest import require_shared

N_ITEMS = 37          # items 0..30 follow a pattern; 31..36 are held out (validation/test targets only)
N_REGULAR = 31
HELD_OUT = np.arange(N_REGULAR, N_ITEMS)
STEP = 3              # each user walks item -> item + STEP (mod N_REGULAR)
N_USERS = 53

TINY = dict(d_model=8, n_layers=1, n_heads=2, dropout=0.2, train_max_len=6, eval_max_items=5, batch_size=16,
            max_epochs=3, progress_bar=False, seed=3)


def make_dataset(sequences: list[np.ndarray], folder: Path, n_items: int = N_ITEMS) -> Dataset:
    items = pl.DataFrame({"item_id": np.arange(n_items, dtype=np.int32)})
    return Dataset(folder=folder, manifest={"name": "synthetic"}, items=items,
                   sequences=[np.asarray(s, dtype=np.int64) for s in sequences], timestamps=[None] * len(sequences))


def walks(seed: int, n_users: int = N_USERS) -> list[np.ndarray]:
    """Pattern walks of 5..10 items over the regular items."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_users):
        start, length = rng.integers(N_REGULAR), rng.integers(5, 11)
        out.append((start + STEP * np.arange(length)) % N_REGULAR)
    return out


def with_heldout_targets(prefixes: list[np.ndarray], seed: int, valid_seed: int | None = None) -> list[np.ndarray]:
    """Append a held-out validation target and a held-out test target to each prefix."""
    test_rng = np.random.default_rng(seed)
    valid_rng = np.random.default_rng(seed if valid_seed is None else valid_seed)
    return [np.concatenate([p, valid_rng.choice(HELD_OUT, 1), test_rng.choice(HELD_OUT, 1)]) for p in prefixes]


# --------------------------------------------------------------------------- data windows


def test_train_windows_cut_long_prefixes_and_count_skips():
    seq = np.array([10, 11, 12, 13, 14, 15, 16])
    windows = TrainWindows([seq, np.array([5]), np.array([], dtype=np.int64), np.array([8, 9])], max_len=3)
    # 7 items, windows of <= 3 inputs: [13..16] then [10..13]; every transition exactly once
    assert [w.tolist() for w in windows.windows] == [[13, 14, 15, 16], [10, 11, 12, 13], [8, 9]]
    assert windows.n_transitions == 6 + 1
    assert windows.n_skipped_users == 2


def test_prefix_examples_are_one_window_per_transition_scored_at_its_end():
    """cornac-style training (training_examples="prefix"): each target once, after its last max_len items."""
    seq = np.array([10, 11, 12, 13, 14])
    windows = TrainWindows([seq, np.array([5]), np.array([8, 9])], max_len=2, prefix=True)
    assert [w.tolist() for w in windows.windows] == [[10, 11], [10, 11, 12], [11, 12, 13], [12, 13, 14], [8, 9]]
    assert windows.n_transitions == 5 and windows.n_skipped_users == 1 and windows.last_only
    inputs, targets = collate_train(windows.windows[:2], N_ITEMS, last_only=True)
    assert inputs.tolist() == [[10, N_ITEMS], [10, 11]]
    assert targets.tolist() == [[11, IGNORE_INDEX], [IGNORE_INDEX, 12]]
    with pytest.raises(ValueError, match="training_examples"):
        SASRecTrainConfig(training_examples="sessions")


def test_collate_and_pad_histories_by_hand():
    pad = N_ITEMS
    inputs, targets = collate_train([np.array([4, 5, 6]), np.array([7, 8])], pad)
    assert inputs.tolist() == [[4, 5], [7, pad]]
    assert targets.tolist() == [[5, 6], [8, IGNORE_INDEX]]
    hist = pad_histories([np.array([1, 2, 3, 4, 5, 6]), np.array([9])], max_items=4, pad_id=pad)
    assert hist.tolist() == [[3, 4, 5, 6], [9, pad, pad, pad]]
    with pytest.raises(ValueError, match="empty history"):
        pad_histories([np.array([], dtype=np.int64)], max_items=4, pad_id=pad)


def test_length_buckets_cover_every_window_once_and_group_lengths():
    lengths = [2, 9, 3, 9, 2, 5, 5, 3, 9, 2, 7]
    sasrec = dict(pool_batches=None, reseed_each_epoch=False)     # SASRecDataModule's parameters
    sampler = LengthBucketBatchSampler(lengths, batch_size=3, seed=1, **sasrec)
    for _ in range(2):  # two epochs, different orders, same coverage
        batches = list(sampler)
        assert len(batches) == len(sampler) == 4
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        # after sorting by length, each batch spans consecutive lengths: [2,2,2] [3,3,5] [5,7,9] [9,9]
        spans = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches)
        assert spans == [(2, 2), (3, 5), (5, 9), (9, 9)]
    first = list(LengthBucketBatchSampler(lengths, 3, seed=1, **sasrec))
    assert first == list(LengthBucketBatchSampler(lengths, 3, seed=1, **sasrec))


# --------------------------------------------------------------------------- leakage


def test_training_batches_never_contain_validation_or_test_targets(tmp_path):
    prefixes = walks(seed=0)
    dataset = make_dataset(with_heldout_targets(prefixes, seed=1), tmp_path)
    config = SASRecTrainConfig(**TINY)
    data = SASRecDataModule(dataset.split, dataset.n_items, config)
    for _ in range(2):
        seen_inputs, seen_targets = [], []
        for inputs, targets in data.train_dataloader():
            seen_inputs.append(inputs[inputs != N_ITEMS].numpy())
            seen_targets.append(targets[targets != IGNORE_INDEX].numpy())
        inputs_, targets_ = np.concatenate(seen_inputs), np.concatenate(seen_targets)
        assert not np.isin(inputs_, HELD_OUT).any() and not np.isin(targets_, HELD_OUT).any()
        # exactly the training transitions, each once per epoch
        expected = np.sort(np.concatenate([p[1:] for p in prefixes]))
        np.testing.assert_array_equal(np.sort(targets_), expected)


@pytest.mark.parametrize("loss", ["ce", "bce", "sampled"])
def test_weights_do_not_depend_on_validation_or_test_targets(tmp_path, loss):
    prefixes = walks(seed=0)
    a = make_dataset(with_heldout_targets(prefixes, seed=1), tmp_path / "a")
    b = make_dataset(with_heldout_targets(prefixes, seed=2), tmp_path / "b")
    assert (a.split.valid.targets != b.split.valid.targets).any()
    assert (a.split.test.targets != b.split.test.targets).any()
    config = SASRecTrainConfig(**TINY, loss=loss, n_negatives=3, early_stopping=False)
    ra, rb = train_sasrec(a, config), train_sasrec(b, config)
    assert ra.epochs == rb.epochs == config.max_epochs
    for (name, wa), wb in zip(ra.model.state_dict().items(), rb.model.state_dict().values()):
        assert torch.equal(wa, wb), f"{name} differs: training saw validation/test targets"
    np.testing.assert_array_equal(ra.item_embeddings, rb.item_embeddings)
    assert not ra.seen_in_training[HELD_OUT].any() and ra.seen_in_training[:N_REGULAR].all()


def test_early_stopped_model_does_not_depend_on_test_targets(tmp_path):
    prefixes = walks(seed=4)
    a = make_dataset(with_heldout_targets(prefixes, seed=5, valid_seed=9), tmp_path / "a")
    b = make_dataset(with_heldout_targets(prefixes, seed=6, valid_seed=9), tmp_path / "b")
    np.testing.assert_array_equal(a.split.valid.targets, b.split.valid.targets)
    assert (a.split.test.targets != b.split.test.targets).any()
    config = SASRecTrainConfig(**(TINY | {"max_epochs": 6}), patience=2)
    ra, rb = train_sasrec(a, config), train_sasrec(b, config)
    assert (ra.best_epoch, ra.epochs, ra.best_val) == (rb.best_epoch, rb.epochs, rb.best_val)
    for wa, wb in zip(ra.model.state_dict().values(), rb.model.state_dict().values()):
        assert torch.equal(wa, wb)


def test_popularity_counts_only_the_training_part(tmp_path):
    dataset = make_dataset(with_heldout_targets(walks(seed=0), seed=1), tmp_path)
    counts = popularity_counts(dataset.split.train, N_ITEMS)
    assert counts[HELD_OUT].sum() == 0
    assert counts.sum() == sum(len(p) for p in walks(seed=0))
    # held-out items are never recommended by popularity, so it scores exactly zero here
    _, metrics = evaluate_popularity(dataset.split, dataset.split.test, N_ITEMS)
    assert metrics["recall@20"] == 0.0


# --------------------------------------------------------------------------- popularity by hand


def test_popularity_ranking_by_hand():
    counts = popularity_counts([np.array([1, 2, 1]), np.array([2, 4, 0]), np.array([1])], n_items=6)
    assert counts.tolist() == [1, 3, 2, 0, 1, 0]
    # ties (items 0 and 4; 3 and 5) break toward the lower id
    assert popularity_ranked(counts, [np.array([9])] * 2, k=6).tolist() == [[1, 2, 0, 4, 3, 5]] * 2
    ranked = popularity_ranked(counts, [np.array([2, 0]), np.array([0, 1, 2, 3, 4])], k=5, exclude_history=True)
    assert ranked.tolist() == [[1, 4, 3, 5, -1], [5, -1, -1, -1, -1]]
    with pytest.raises(ValueError, match="outside"):
        popularity_counts([np.array([6])], n_items=6)


# --------------------------------------------------------------------------- learning and artifacts


def pattern_dataset(folder: Path) -> Dataset:
    """Walks whose validation and test targets continue the pattern (learnable from the training part)."""
    return make_dataset(walks(seed=7, n_users=97), folder)


def test_sasrec_learns_the_pattern_and_beats_popularity(tmp_path):
    dataset = pattern_dataset(tmp_path / "run")
    config = SASRecTrainConfig(**(TINY | {"d_model": 16, "max_epochs": 40, "batch_size": 32}), lr=5e-3, patience=5)
    out = tmp_path / "sasrec"
    result = train_sasrec(dataset, config, out)
    _, pop_val = evaluate_popularity(dataset.split, dataset.split.valid, N_ITEMS)
    # every target is the last item + STEP: a working model nearly always ranks it first
    assert result.best_val["ndcg@10"] > 0.8 > pop_val["ndcg@10"] + 0.5
    # Lightning's validation and evaluate_sasrec are the same computation
    _, again = evaluate_sasrec(result.model, dataset.split.valid, N_ITEMS, config.eval_max_items, batch_size=7)
    assert again == pytest.approx(result.best_val, abs=1e-12)
    ranked, test = evaluate_sasrec(result.model, dataset.split.test, N_ITEMS, config.eval_max_items, 64)
    assert ranked.shape == (dataset.n_users, 20) and test["recall@20"] > 0.9
    assert 0 <= result.best_epoch < result.epochs <= config.max_epochs and result.train_samples_per_second > 0
    # artifacts: checkpoint reloads to the same scores, per-epoch CSV log written
    reloaded = load_sasrec(out / CHECKPOINT)
    history = torch.tensor([[1, 4, 7]])
    torch.testing.assert_close(reloaded.score_last(history), result.model.score_last(history))
    log = next((out / "logs").rglob("metrics.csv"))
    assert "val/ndcg@10" in log.read_text().splitlines()[0]


def test_sampled_softmax_sasrec_learns_the_pattern(tmp_path):
    """loss="sampled" with a few popularity-drawn negatives (fewer than the catalogue) still learns the walks."""
    dataset = pattern_dataset(tmp_path / "run")
    config = SASRecTrainConfig(**(TINY | {"d_model": 16, "max_epochs": 40, "batch_size": 32}), lr=5e-3, patience=5,
                               loss="sampled", n_negatives=9, logq_correction=True)
    result = train_sasrec(dataset, config)
    assert result.best_val["ndcg@10"] > 0.8


def test_exclude_history_removes_history_items(tmp_path):
    dataset = pattern_dataset(tmp_path / "run")
    result = train_sasrec(dataset, SASRecTrainConfig(**(TINY | {"max_epochs": 1})))
    valid = dataset.split.valid
    ranked, _ = evaluate_sasrec(result.model, valid, N_ITEMS, 5, 32, exclude_history=True)
    for row, history in zip(ranked, valid.histories):
        assert not np.isin(row, history).any()
        assert (row >= 0).sum() == min(20, N_ITEMS - len(np.unique(history)))


def test_collab_features_matrix_and_info(tmp_path):
    prefixes = walks(seed=0)
    dataset = make_dataset(with_heldout_targets(prefixes, seed=1), tmp_path)
    matrix, info = collab_features(dataset, SASRecTrainConfig(**(TINY | {"max_epochs": 2})))
    assert matrix.shape == (N_ITEMS, TINY["d_model"]) and matrix.dtype == np.float32 and np.isfinite(matrix).all()
    assert info["unseen_item_ids"] == HELD_OUT.tolist() and info["trained_on"] == "split.train"
    assert info["coverage"] == pytest.approx(N_REGULAR / N_ITEMS)
    json.dumps(info)  # goes into the features manifest


def test_small_catalogue_pads_ranked_lists_and_checks_sizes():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=7, max_len=4, d_model=6, n_layers=1, n_heads=2)).eval()
    histories = [np.array([1, 2]), np.array([6]), np.array([0, 3, 5, 4, 2])]
    examples = EvalExamples(np.arange(3), histories, np.array([3, 0, 6]))
    ranked, metrics = evaluate_sasrec(model, examples, n_items=7, max_items=4, batch_size=2)
    assert ranked.shape == (3, 20) and (ranked[:, 7:] == -1).all()
    assert all(sorted(row[:7]) == list(range(7)) for row in ranked)
    assert metrics["recall@20"] == 1.0  # every item is ranked when the catalogue is smaller than 20
    with pytest.raises(ValueError, match="built for 7 items"):
        evaluate_sasrec(model, examples, n_items=8, max_items=4, batch_size=2)


def test_warmup_ramps_the_learning_rate_linearly():
    module = LitSASRec(SASRecTrainConfig(**TINY, warmup_steps=4, lr=2e-3), n_items=N_ITEMS)
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(6):
        lrs.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([5e-4, 1e-3, 1.5e-3, 2e-3, 2e-3, 2e-3])


def test_config_validation():
    with pytest.raises(ValueError, match="loss"):
        SASRecTrainConfig(loss="bpr")
    with pytest.raises(ValueError, match="divisible"):
        SASRecTrainConfig(d_model=10, n_heads=3)
    with pytest.raises(ValueError, match="patience"):
        SASRecTrainConfig(patience=0)
    assert SASRecTrainConfig(train_max_len=50, eval_max_items=20).model_config(5).max_len == 50


# --------------------------------------------------------------------------- real data


def load_office(folder: Path, run: Path) -> Dataset:
    from genrec.data.dataset import load_dataset
    from genrec.data.prepare import PrepareConfig, prepare

    prepare(folder, run, PrepareConfig(progress=False))
    return load_dataset(run)


# A short schedule (~40 s on 2 cores): validation NDCG@10 is within ~.002 of its early-stopped peak by epoch 8.
# The library defaults train on until early stopping (about 13 epochs on Office).
OFFICE_SMOKE = dict(max_epochs=8, batch_size=64, progress_bar=False)


@pytest.mark.realdata
@pytest.mark.slow
def test_office_sasrec_clearly_beats_popularity(tmp_path, record_property):
    dataset = load_office(require_shared("Office"), tmp_path / "run")
    assert (dataset.n_users, dataset.n_items) == (4905, 2420)
    start = time.perf_counter()
    result = train_sasrec(dataset, SASRecTrainConfig(**OFFICE_SMOKE))
    _, pop = evaluate_popularity(dataset.split, dataset.split.valid, dataset.n_items)
    sasrec = result.best_val["ndcg@10"]
    line = (f"Office valid NDCG@10: SASRec {sasrec:.4f} vs popularity {pop['ndcg@10']:.4f} "
            f"({result.epochs} epochs, {time.perf_counter() - start:.0f} s, "
            f"{result.train_samples_per_second:.0f} windows/s)")
    print(line)
    record_property("office_valid_ndcg10", {"sasrec": sasrec, "popularity": pop["ndcg@10"]})
    assert sasrec > max(3 * pop["ndcg@10"], pop["ndcg@10"] + 0.02), line
