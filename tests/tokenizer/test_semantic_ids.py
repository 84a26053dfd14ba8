"""Semantic-ID bookkeeping: collisions, the dedup level, new items, the sid/ artifact (numpy only)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genrec.io import ArtifactError, read_manifest, write_json_atomic
from genrec.tokenizer.semantic_ids import (
    CODE_TO_ITEM_FILE,
    CODES_FILE,
    add_dedup_level,
    collision_stats,
    dedup_level,
    level_usage,
    load_semantic_ids,
    place_new_items,
    resolve_last_level,
    write_semantic_ids,
)

# 6 items, 2 levels: {1,2} x3 (items 0,2,3), {0,0} x2 (items 1,4), {3,3} x1 (item 5)
CODES = np.array([[1, 2], [0, 0], [1, 2], [1, 2], [0, 0], [3, 3]])


def test_dedup_level_ranks_items_by_id_within_their_tuple():
    assert dedup_level(CODES).tolist() == [0, 0, 1, 2, 1, 0]
    full = add_dedup_level(CODES)
    assert full.shape == (6, 3)
    assert len(np.unique(full, axis=0)) == 6


def test_dedup_level_of_unique_codes_is_zero_and_of_no_items_is_empty():
    assert dedup_level(np.array([[0, 1], [1, 0], [4, 4]])).tolist() == [0, 0, 0]
    assert dedup_level(np.zeros((0, 3), dtype=np.int64)).shape == (0,)


def test_collision_stats_by_hand():
    stats = collision_stats(CODES)
    assert stats["n_colliding_items"] == 5          # all but item 5
    assert stats["collision_rate"] == pytest.approx(5 / 6)
    assert stats["largest_group"] == 3
    assert stats["n_collision_groups"] == 2
    assert stats["n_unique_tuples"] == 3
    assert stats["n_duplicates"] == 3               # items needing a dedup code > 0: two of {1,2}, one of {0,0}


def test_level_usage_perplexity_by_hand():
    codes = np.array([[0, 0], [0, 1], [1, 2], [1, 3]])
    usage = level_usage(codes, (4, 5))
    assert usage[0]["used"] == 2 and usage[0]["used_fraction"] == pytest.approx(0.5)
    assert usage[0]["perplexity"] == pytest.approx(2.0)    # two codes, equally likely
    assert usage[1]["used"] == 4 and usage[1]["perplexity"] == pytest.approx(4.0)


def test_resolve_last_level_moves_only_the_losers_to_the_nearest_free_code():
    # prefix 0: items 0,1 both nearest to last code 1; item 0 is closer so it keeps it.
    # code 0 is used by item 2 (same prefix), so item 1 must go to its next nearest free code: 3.
    codes = np.array([[0, 1], [0, 1], [0, 0], [1, 1]])
    dists = np.array([
        [5.0, 0.1, 9.0, 9.0],
        [0.2, 0.3, 0.9, 0.5],   # nearest is 0 (taken by item 2), then 1 (taken by item 0), then 3
        [0.0, 9.0, 9.0, 9.0],
        [9.0, 0.0, 9.0, 9.0],
    ])
    out = resolve_last_level(codes, dists)
    assert out.tolist() == [[0, 1], [0, 3], [0, 0], [1, 1]]
    assert collision_stats(out)["n_colliding_items"] == 0


def test_resolve_last_level_falls_back_to_dedup_when_the_prefix_is_full():
    # 3 identical items, only 2 last-level codes: one collision must remain for the dedup level
    codes = np.zeros((3, 2), dtype=np.int64)
    dists = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    out = resolve_last_level(codes, dists)
    assert out[:, 1].tolist() == [0, 1, 0]         # item 0 keeps 0, item 1 takes 1, item 2 has no room
    assert dedup_level(out).tolist() == [0, 0, 1]


def test_new_items_never_change_existing_codes_and_take_the_next_dedup_code():
    existing = add_dedup_level(CODES)
    before = existing.copy()
    raw = np.array([[1, 2], [3, 3], [2, 2], [2, 2]])
    new = place_new_items(existing, raw, None, dedup_capacity=5)
    assert np.array_equal(existing, before)
    # (1,2) already has dedup 0,1,2 -> 3; (3,3) has 0 -> 1; (2,2) is new -> 0, then 1 for the second copy
    assert new.tolist() == [[1, 2, 3], [3, 3, 1], [2, 2, 0], [2, 2, 1]]
    assert len(np.unique(np.vstack([existing, new]), axis=0)) == len(existing) + len(new)


def test_new_item_under_unique_rule_takes_nearest_free_last_code():
    existing = add_dedup_level(np.array([[0, 0], [0, 1]]))
    raw = np.array([[0, 0]])                          # collides with item 0
    dists = np.array([[0.0, 0.1, 0.5, 0.2]])          # 0 and 1 are taken under prefix 0 -> 3
    assert place_new_items(existing, raw, dists, dedup_capacity=1).tolist() == [[0, 3, 0]]


def test_new_item_beyond_dedup_capacity_is_a_clear_error():
    existing = add_dedup_level(np.array([[0, 0], [1, 1]]))
    with pytest.raises(ValueError, match="dedup_capacity"):
        place_new_items(existing, np.array([[0, 0]]), None, dedup_capacity=1)


def test_write_and_load_roundtrip(tmp_path):
    codes = add_dedup_level(CODES)
    sizes = (4, 5, 3)
    folder = tmp_path / "sid"
    folder.mkdir()
    (folder / "tokenizer.pt").write_bytes(b"weights")
    manifest = write_semantic_ids(folder, codes, sizes, extra_files=["tokenizer.pt"], config={"a": 1})
    assert manifest["stage"] == "tokenize"
    assert (manifest["n_levels"], manifest["n_digits"], manifest["dedup_digit"]) == (2, 3, 2)   # one tokenizer
    assert manifest["vocab"] == {"level_offsets": [0, 4, 9], "total": 12}
    sid = load_semantic_ids(tmp_path)            # a run folder works as well as the sid folder
    assert np.array_equal(sid.codes, codes)
    assert sid.level_sizes == sizes and sid.n_digits == 3 and sid.n_levels == 2 and sid.n_items == 6
    assert sid.level_offsets == (0, 4, 9)
    assert sid.checksum == read_manifest(folder)["files"][CODES_FILE]
    code_to_item = json.loads((folder / CODE_TO_ITEM_FILE).read_text())
    assert code_to_item["1-2-2"] == 3 and sid.code_to_item()[(0, 0, 1)] == 4


def test_load_rejects_tampered_or_inconsistent_artifacts(tmp_path):
    codes = add_dedup_level(CODES)
    write_semantic_ids(tmp_path, codes, (4, 5, 3), extra_files=[])
    np.save(tmp_path / CODES_FILE, codes[::-1].copy())
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_semantic_ids(tmp_path)
    with pytest.raises(ArtifactError, match="outside"):
        write_semantic_ids(tmp_path, codes, (4, 3, 3), extra_files=[])   # level 1 has code 3 >= 3
    with pytest.raises(ArtifactError, match="not unique"):
        write_semantic_ids(tmp_path, np.zeros((2, 2), dtype=np.int64), (1, 1), extra_files=[])
    with pytest.raises(ArtifactError, match="not found"):
        load_semantic_ids(tmp_path / "nowhere")


def test_manifest_counts_levels_per_tokenizer_and_digits_separately(tmp_path):
    codes = add_dedup_level(CODES)                                   # 2 semantic digits + dedup = 3
    m = write_semantic_ids(tmp_path, codes, (4, 5, 3), extra_files=[], n_levels=1, modalities=["text", "image"],
                           method="pq")
    assert (m["n_levels"], m["n_digits"], m["dedup_digit"], m["method"]) == (1, 3, 2, "pq")
    sid = load_semantic_ids(tmp_path)
    assert (sid.n_levels, sid.n_digits, sid.modalities, sid.method) == (1, 3, ["text", "image"], "pq")
    with pytest.raises(ArtifactError, match="3 digits cannot be 1 tokenizer"):
        write_semantic_ids(tmp_path, codes, (4, 5, 3), extra_files=[], n_levels=1)


def test_manifest_written_before_n_digits_is_read_with_the_new_meaning(tmp_path):
    m = write_semantic_ids(tmp_path, add_dedup_level(CODES), (4, 5, 3), extra_files=[])
    # the old shape: n_levels counted every digit, the method only inside config
    old = {k: v for k, v in m.items() if k not in ("n_digits", "dedup_digit")} | {
        "n_levels": 3, "config": {"method": "pq"}}
    write_json_atomic(tmp_path / "manifest.json", old)
    sid = load_semantic_ids(tmp_path)
    assert (sid.n_levels, sid.n_digits, sid.method) == (2, 3, "pq")
    write_json_atomic(tmp_path / "manifest.json", m | {"n_digits": 4})
    with pytest.raises(ArtifactError, match="n_digits=4 but level_sizes has 3 entries"):
        load_semantic_ids(tmp_path)


def test_modality_weights_become_one_weight_per_digit(tmp_path):
    """Per-modality codes (PQ, modalities separate): each modality's n_levels digits take its weight, the dedup
    digit 1; unnamed modalities 1; nothing named -> None (decode unweighted)."""
    codes = add_dedup_level(np.concatenate([CODES, CODES[:, ::-1]], axis=1))       # 2 modalities x 2 levels + dedup
    write_semantic_ids(tmp_path, codes, (4, 4, 4, 4, 3), extra_files=[], n_levels=2, modalities=["collab", "text"],
                       method="pq")
    sid = load_semantic_ids(tmp_path)
    assert sid.level_weights({"text": 0.25}) == [1.0, 1.0, 0.25, 0.25, 1.0]
    assert sid.level_weights({"collab": 2, "text": 0.5}) == [2.0, 2.0, 0.5, 0.5, 1.0]
    assert sid.level_weights(None) is None and sid.level_weights({}) is None
    with pytest.raises(ValueError, match=r"names \['image'\], but .* has digits for \['collab', 'text'\]"):
        sid.level_weights({"image": 0.5})


def test_modality_weights_on_fused_codes_say_how_to_get_per_modality_digits(tmp_path):
    write_semantic_ids(tmp_path, add_dedup_level(CODES), (4, 5, 3), extra_files=[])
    with pytest.raises(ValueError, match="tokenize with `--modalities separate`"):
        load_semantic_ids(tmp_path).level_weights({"text": 0.5})
