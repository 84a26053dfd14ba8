"""SASRec nn.Module: shapes, causality, padding, shared output table, config checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genrec.model.sasrec import SASRec, SASRecConfig

N_ITEMS = 37  # odd sizes so a transposed or offset index fails loudly
D_MODEL = 12
MAX_LEN = 7


def make_model(seed: int = 0, **overrides) -> SASRec:
    torch.manual_seed(seed)
    kwargs = dict(n_items=N_ITEMS, max_len=MAX_LEN, d_model=D_MODEL, n_layers=2, n_heads=3, ffn_mult=2, dropout=0.3)
    return SASRec(SASRecConfig(**(kwargs | overrides))).eval()


def test_shapes_and_shared_table():
    model = make_model()
    x = torch.tensor([[0, 5, 36, 2, 9], [3, 1, 4, 1, 5]])  # (2, 5)
    hidden = model(x)
    assert hidden.shape == (2, 5, D_MODEL)
    table = model.item_embeddings()
    assert table.shape == (N_ITEMS, D_MODEL)
    # the output table is the input table (no separate head), padding row excluded
    assert table.data_ptr() == model.item_emb.weight.data_ptr()
    scores = model.score_last(x)
    assert scores.shape == (2, N_ITEMS)
    torch.testing.assert_close(scores, hidden[:, -1] @ table.T)


def test_padding_row_is_zero_and_gets_no_gradient():
    model = make_model().train()
    pad = model.config.pad_id
    assert pad == N_ITEMS
    assert torch.count_nonzero(model.item_emb.weight[pad]) == 0
    x = torch.tensor([[4, 7, pad, pad], [8, 2, 6, pad]])
    model.logits(model(x)).sum().backward()
    assert torch.count_nonzero(model.item_emb.weight.grad[pad]) == 0


def test_causal_hidden_state_ignores_later_items():
    model = make_model()
    a = torch.tensor([[3, 14, 15, 9, 2, 6]])
    b = a.clone()
    b[0, 4:] = torch.tensor([30, 31])  # change only the last two positions
    ha, hb = model(a), model(b)
    torch.testing.assert_close(ha[:, :4], hb[:, :4])
    assert not torch.allclose(ha[:, 4:], hb[:, 4:])


def test_position_t_equals_scoring_the_prefix_alone():
    """Training position t and evaluating the history seq[:t+1] are the same computation."""
    model = make_model()
    seq = torch.tensor([[11, 22, 33, 5, 17, 29, 1]])  # (1, MAX_LEN)
    full = model.logits(model(seq))[0]  # (MAX_LEN, n_items)
    for t in range(seq.shape[1]):
        torch.testing.assert_close(model.score_last(seq[:, : t + 1])[0], full[t])


def test_right_padding_does_not_change_scores():
    model = make_model()
    pad = model.config.pad_id
    short = torch.tensor([[7, 19, 23]])
    long = torch.tensor([[1, 2, 3, 4, 5, 6]])
    batch = torch.tensor([[7, 19, 23, pad, pad, pad], [1, 2, 3, 4, 5, 6]])
    scores = model.score_last(batch)
    torch.testing.assert_close(scores[0], model.score_last(short)[0])
    torch.testing.assert_close(scores[1], model.score_last(long)[0])


def test_positions_from_end_are_the_reversed_table_and_ignore_right_padding():
    """positions="from_end" gives the newest item position 0: for histories of length L it is the default
    model with the first L rows of the position table reversed, and right padding changes no score."""
    ends, starts = make_model(positions="from_end"), make_model()
    long = torch.tensor([[11, 22, 33, 5, 17], [3, 1, 4, 1, 5]])   # L = 5
    with torch.no_grad():
        starts.pos_emb.weight[:5] = ends.pos_emb.weight[:5].flip(0)
    torch.testing.assert_close(ends(long), starts(long))
    pad = ends.config.pad_id
    short = torch.tensor([[7, 19, 23]])
    batch = torch.tensor([[7, 19, 23, pad, pad], [11, 22, 33, 5, 17]])
    scores = ends.score_last(batch)
    torch.testing.assert_close(scores[0], ends.score_last(short)[0])
    torch.testing.assert_close(scores[1], ends.score_last(long[:1])[0])
    assert not torch.allclose(ends.score_last(short), starts.score_last(short))   # a different encoding


def test_eval_is_deterministic_and_dropout_acts_in_training():
    model = make_model()
    x = torch.tensor([[5, 6, 7, 8]])
    torch.testing.assert_close(model(x), model(x))
    model.train()
    torch.manual_seed(1)
    first = model(x)
    assert not torch.allclose(first, model(x))


def test_same_seed_same_weights():
    a, b = make_model(seed=4), make_model(seed=4)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_too_long_input_and_empty_history_are_rejected():
    model = make_model()
    with pytest.raises(ValueError, match="max_len"):
        model(torch.zeros((1, MAX_LEN + 1), dtype=torch.long))
    with pytest.raises(ValueError, match="empty history"):
        model.score_last(torch.full((2, 3), model.config.pad_id))


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"d_model": 10, "n_heads": 3}, "divisible"),
        ({"dropout": 1.0}, "dropout"),
        ({"n_layers": 0}, "n_layers"),
        ({"n_items": 0}, "n_items"),
        ({"init_std": 0.0}, "init_std"),
        ({"positions": "left"}, "positions"),
    ],
)
def test_config_validation(overrides, match):
    kwargs = dict(n_items=N_ITEMS) | overrides
    with pytest.raises(ValueError, match=match):
        SASRecConfig(**kwargs)


def test_ranking_in_row_chunks_equals_one_batch(monkeypatch):
    """rank_histories caps rows x items per forward pass (SCORE_CELLS); the chunks give the same top-k."""
    import genrec.lit.sasrec as lit_sasrec

    torch.manual_seed(3)
    model = SASRec(SASRecConfig(n_items=53, max_len=8, d_model=16, n_heads=2, n_layers=1, dropout=0.0))
    rng = np.random.default_rng(3)
    histories = [rng.integers(0, 53, rng.integers(1, 12)) for _ in range(23)]
    whole = lit_sasrec.rank_histories(model, histories, 8, k=10, exclude_history=True)
    monkeypatch.setattr(lit_sasrec, "SCORE_CELLS", 53 * 4)              # 4 histories per pass
    batches = []
    score_last = model.score_last
    monkeypatch.setattr(model, "score_last", lambda x: batches.append(len(x)) or score_last(x))
    np.testing.assert_array_equal(lit_sasrec.rank_histories(model, histories, 8, k=10, exclude_history=True), whole)
    assert batches == [4, 4, 4, 4, 4, 3]
