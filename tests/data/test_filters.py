"""Filters (chronological order, consecutive dedup, iterated k-core) and the splits, on hand-worked examples."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genrec.data.filters import apply_filters, chronological, dedup_consecutive
from genrec.data.schema import conform_interactions
from genrec.data.split import leave_one_out, temporal, training_items


def frame(rows: list[tuple]) -> pl.DataFrame:
    """Rows of (user, item) or (user, item, ts); pos is the row order."""
    cols = {"user": [r[0] for r in rows], "item": [r[1] for r in rows]}
    if rows and len(rows[0]) == 3:
        cols["ts"] = [r[2] for r in rows]
    return conform_interactions(pl.DataFrame(cols, schema={k: (pl.Int64 if k == "ts" else pl.Utf8) for k in cols}))


def seqs(df: pl.DataFrame) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for user, item in df.select("user", "item").iter_rows():
        out.setdefault(user, []).append(item)
    return out


def test_chronological_orders_by_time_then_source_position() -> None:
    df = frame([("b", "x", 5), ("a", "y", 9), ("b", "z", 1), ("a", "w", 9), ("b", "v", 5)])
    out = chronological(df)
    # users by first appearance (b first); b: z(1), x(5, pos 0), v(5, pos 4); a: y, w tie at 9 -> source order
    assert out.select("user", "item").rows() == [("b", "z"), ("b", "x"), ("b", "v"), ("a", "y"), ("a", "w")]


def test_chronological_order_only_source_keeps_positions() -> None:
    df = frame([("b", "x"), ("a", "y"), ("b", "z")])
    assert chronological(df).select("user", "item").rows() == [("b", "x"), ("b", "z"), ("a", "y")]


def test_dedup_drops_only_immediate_repeats() -> None:
    df = chronological(frame([("u", "a"), ("u", "a"), ("u", "b"), ("u", "a"), ("v", "a"), ("v", "a")]))
    assert seqs(dedup_consecutive(df)) == {"u": ["a", "b", "a"], "v": ["a"]}


def test_k_core_iterates_until_stable() -> None:
    # k = 2 for users and items. Worked by hand, one pass = user filter then item filter:
    # pass 1: u5 (1 event) goes; e then has 1 event (u4) and goes -> u4 = [d]
    # pass 2: u4 goes; d then has 1 event (u3) and goes          -> u3 = [c]
    # pass 3: u3 goes; c then has 1 event (u1) and goes          -> u1 = [a, b]
    # pass 4: nothing changes. A single pass would have kept u3, u4, c and d.
    rows = [("u1", "a"), ("u1", "b"), ("u1", "c"), ("u2", "a"), ("u2", "b"), ("u3", "c"), ("u3", "d"),
            ("u4", "d"), ("u4", "e"), ("u5", "e")]
    out, report = apply_filters(frame(rows), dedup=False, user_core=2, item_core=2, min_seq_len=1)
    assert seqs(out) == {"u1": ["a", "b"], "u2": ["a", "b"]}
    assert (report.n_input, report.core_removed, report.removed_users, report.removed_items, report.rounds) == (
        10, 6, 3, 3, 4)


def test_thresholds_zero_and_one_are_off() -> None:
    rows = [("u1", "a"), ("u2", "b"), ("u2", "a")]
    for k in (0, 1):
        out, report = apply_filters(frame(rows), dedup=False, user_core=k, item_core=k, min_seq_len=1)
        assert out.height == 3 and report.core_removed == 0 and report.rounds == 1


def test_min_seq_len_runs_inside_the_loop() -> None:
    # The length threshold and the item core feed each other until nothing is left.
    rows = [("u", "x"), ("u", "y"), ("u", "x"), ("u", "z"), ("v", "y"), ("v", "q"),
            ("w", "z"), ("w", "q2"), ("w", "z")]
    out, report = apply_filters(frame(rows), dedup=False, user_core=0, item_core=2, min_seq_len=3)
    # pass 1: v goes (2 < 3); items: y 1, q 0, q2 1 -> y, q2 go: u=[x, x, z], w=[z, z]
    # pass 2: w goes (2 < 3); items: z now 1 -> goes: u=[x, x]
    # pass 3: u goes (2 < 3) -> empty
    assert out.height == 0 and report.removed_users == 3 and report.rounds == 4


def test_dedup_inside_the_loop_catches_repeats_made_adjacent_by_k_core() -> None:
    # "rare" has one event; when item_core=2 removes it, u's two "a" events become adjacent.
    rows = [("u", "a"), ("u", "rare"), ("u", "a"), ("u", "b"), ("v", "a"), ("v", "b"), ("v", "b2"), ("w", "b2")]
    out, report = apply_filters(frame(rows), dedup=True, user_core=0, item_core=2, min_seq_len=1)
    assert seqs(out) == {"u": ["a", "b"], "v": ["a", "b", "b2"], "w": ["b2"]}
    assert report.dedup_removed == 1 and report.core_removed == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 8), st.integers(0, 6)), min_size=1, max_size=60),
       st.integers(0, 3), st.integers(0, 3), st.integers(1, 4), st.booleans())
def test_filters_reach_a_fixed_point(pairs, user_core, item_core, min_len, dedup) -> None:
    df = frame([(f"u{u}", f"i{i}") for u, i in pairs])
    out, report = apply_filters(df, dedup=dedup, user_core=user_core, item_core=item_core, min_seq_len=min_len)
    if out.height:
        assert out.group_by("user").len()["len"].min() >= max(user_core, min_len)
        assert out.group_by("item").len()["len"].min() >= item_core
    if dedup:
        assert all(a != b for s in seqs(out).values() for a, b in zip(s, s[1:]))
    # Idempotent: filtering the result again removes nothing and keeps every user's sequence. (The order
    # of *users* may change: users are ordered by their first event in the source, and a filter can
    # remove a user's first event, e.g. pairs [(0, 0), (1, 1), (0, 1)] with item_core 2.)
    again, rep2 = apply_filters(out, dedup=dedup, user_core=user_core, item_core=item_core, min_seq_len=min_len)
    assert sorted(again.rows()) == sorted(out.rows()) and seqs(again) == seqs(out) and rep2.rounds == 1
    assert report.n_input - report.dedup_removed - report.core_removed == out.height
    # Surviving events keep their relative source order within each user.
    for s in out.group_by("user", maintain_order=True).agg("pos")["pos"].to_list():
        assert s == sorted(s)


# --------------------------------------------------------------------------------------------- splits


def test_leave_one_out_by_hand() -> None:
    split = leave_one_out([np.array([0, 1, 2, 3]), np.array([4, 5, 6])])
    assert [s.tolist() for s in split.train] == [[0, 1], [4]]
    assert split.valid.targets.tolist() == [2, 5] and [h.tolist() for h in split.valid.histories] == [[0, 1], [4]]
    assert split.test.targets.tolist() == [3, 6] and [h.tolist() for h in split.test.histories] == [[0, 1, 2], [4, 5]]
    assert split.test.user_ids.tolist() == [0, 1] and len(split.test) == 2
    assert training_items(split).tolist() == [0, 1, 4]


def test_leave_one_out_rejects_short_sequences() -> None:
    with pytest.raises(ValueError, match="user 1 has 2 interactions.*min_seq_len >= 3"):
        leave_one_out([np.array([0, 1, 2]), np.array([3, 4])])


def test_temporal_split_by_hand() -> None:
    sequences = [np.array([0, 1, 2, 3]), np.array([4, 5])]
    timestamps = [np.array([1, 5, 10, 20]), np.array([12, 25])]
    split = temporal(sequences, timestamps, valid_cut=10, test_cut=20)
    # user 0: train [0, 1] (t < 10), valid target 2 (t = 10), test target 3 (t = 20, history [0, 1, 2])
    # user 1: nothing before 10 -> no train, no valid (no history); test target 5 with history [4]
    assert [s.tolist() for s in split.train] == [[0, 1], []]
    assert split.valid.user_ids.tolist() == [0] and split.valid.targets.tolist() == [2]
    assert split.test.user_ids.tolist() == [0, 1] and split.test.targets.tolist() == [3, 5]
    assert [h.tolist() for h in split.test.histories] == [[0, 1, 2], [4]]
