"""The demo source generator: determinism, 2018 raw format, 5-core, caching and learnable structure.

Files are parsed directly with gzip/json here, independent of the readers in genrec/data/readers/.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genrec.data import demo
from genrec.data.demo import DEMO_CATEGORY, DemoConfig, demo_source_dir, write_demo_source
from genrec.data.split import leave_one_out
from genrec.metrics import recall_at_k, topk_from_scores

# Small odd-sized config so a typo'd index or an off-by-one shows up; images tiny to stay fast.
SMALL = DemoConfig(n_items=37, n_users=50, n_top_categories=3, leaves_per_top=3, brands_per_top=2,
                   mean_seq_len=7.0, max_seq_len=13, image_size=24)

REVIEW_KEYS = {"overall": float, "verified": bool, "reviewTime": str, "reviewerID": str, "asin": str,
               "reviewerName": str, "unixReviewTime": int}
META_KEYS = ("asin", "title", "brand", "category", "price", "description", "imageURLHighRes", "imageURL")


def read_lines(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def all_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def user_sequences(reviews: list[dict], asin_index: dict[str, int]) -> list[np.ndarray]:
    """Chronological item ids per user, users in reviewerID order."""
    by_user: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for r in reviews:
        by_user[r["reviewerID"]].append((r["unixReviewTime"], asin_index[r["asin"]]))
    return [np.array([i for _, i in sorted(v)], dtype=np.int64) for _, v in sorted(by_user.items())]


@pytest.fixture(scope="module")
def small_source(tmp_path_factory) -> Path:
    return write_demo_source(tmp_path_factory.mktemp("small") / "src", seed=3, config=SMALL)


@pytest.fixture(scope="module")
def default_source(tmp_path_factory) -> Path:
    return write_demo_source(tmp_path_factory.mktemp("default") / "src", seed=0)


# ---------------------------------------------------------------------------------------------- determinism


def test_same_seed_gives_byte_identical_files(small_source, tmp_path):
    again = write_demo_source(tmp_path / "again", seed=3, config=SMALL)
    first, second = all_files(small_source), all_files(again)
    assert sorted(first) == sorted(second)
    assert len(first) == 2 + SMALL.n_items
    for name in first:
        assert first[name] == second[name], f"{name} differs between two runs with the same seed"


def test_gzip_header_has_no_mtime_or_name(small_source):
    for name in (demo.REVIEWS_FILE, demo.META_FILE):
        header = (small_source / name).read_bytes()[:10]
        assert header[3] & 0x08 == 0, f"{name}: FNAME flag set"
        assert header[4:8] == b"\0\0\0\0", f"{name}: mtime is not 0"


def test_different_seed_differs(small_source, tmp_path):
    other = all_files(write_demo_source(tmp_path / "other", seed=4, config=SMALL))
    first = all_files(small_source)
    assert first[demo.REVIEWS_FILE] != other[demo.REVIEWS_FILE]
    assert first[demo.META_FILE] != other[demo.META_FILE]


# ---------------------------------------------------------------------------------------------- format


def test_review_lines_have_2018_fields(small_source):
    reviews = read_lines(small_source / demo.REVIEWS_FILE)
    assert len(reviews) >= SMALL.n_users * SMALL.min_seq_len
    for r in reviews:
        for key, typ in REVIEW_KEYS.items():
            assert isinstance(r[key], typ), f"{key}={r.get(key)!r} is not {typ.__name__}"
        assert r["overall"] in (1.0, 2.0, 3.0, 4.0, 5.0)
        assert re.fullmatch(r"A[A-Z0-9]{13}", r["reviewerID"])
        assert re.fullmatch(r"B0[A-Z0-9]{8}", r["asin"])
        # reviewTime is the same day as unixReviewTime (midnight UTC), written "MM D, YYYY".
        day = datetime.fromtimestamp(r["unixReviewTime"], tz=timezone.utc)
        assert (day.hour, day.minute, day.second) == (0, 0, 0)
        assert r["reviewTime"] == f"{day.month:02d} {day.day}, {day.year}"


def test_meta_lines_and_images(small_source):
    meta = read_lines(small_source / demo.META_FILE)
    assert len(meta) == SMALL.n_items
    assert len({m["asin"] for m in meta}) == SMALL.n_items
    leaves = set()
    for m in meta:
        assert all(k in m for k in META_KEYS), f"missing {[k for k in META_KEYS if k not in m]}"
        cat = m["category"]
        assert len(cat) == 3 and cat[0] == DEMO_CATEGORY
        leaves.add(tuple(cat))
        assert m["brand"] in m["title"]
        assert re.fullmatch(r"\$\d+\.\d\d", m["price"])
        assert isinstance(m["description"], list) and m["description"][0]
        assert m["imageURL"] == m["imageURLHighRes"] == [f"images/{m['asin']}.png"]
        path = small_source / m["imageURL"][0]  # relative to the source folder
        with Image.open(path) as img:
            assert img.format == "PNG" and img.mode == "RGB"
            assert img.size == (SMALL.image_size, SMALL.image_size)
    assert len(leaves) == SMALL.n_top_categories * SMALL.leaves_per_top


def test_reviews_and_meta_cover_the_same_items(small_source):
    reviewed = {r["asin"] for r in read_lines(small_source / demo.REVIEWS_FILE)}
    assert reviewed == {m["asin"] for m in read_lines(small_source / demo.META_FILE)}


@pytest.mark.parametrize("source", ["small_source", "default_source"])
def test_sequences_are_five_core_and_chronological(source, request):
    folder = request.getfixturevalue(source)
    cfg = SMALL if source == "small_source" else DemoConfig()
    reviews = read_lines(folder / demo.REVIEWS_FILE)
    times: dict[str, list[int]] = defaultdict(list)
    pairs = set()
    for r in reviews:
        times[r["reviewerID"]].append(r["unixReviewTime"])
        pairs.add((r["reviewerID"], r["asin"]))
    assert len(times) == cfg.n_users
    assert len(pairs) == len(reviews), "a user reviewed the same item twice"
    for user, ts in times.items():
        assert len(ts) >= cfg.min_seq_len, f"{user} has {len(ts)} reviews"
        assert len(set(ts)) == len(ts), f"{user} has two reviews on one day"
    item_counts = np.unique([r["asin"] for r in reviews], return_counts=True)[1]
    assert len(item_counts) == cfg.n_items and item_counts.min() >= cfg.min_item_count


def leaf_pictures(folder: Path) -> dict[tuple, set[bytes]]:
    pictures: dict[tuple, set[bytes]] = defaultdict(set)
    for m in read_lines(folder / demo.META_FILE):
        pictures[tuple(m["category"])].add((folder / m["imageURL"][0]).read_bytes())
    return pictures


def test_jitter_zero_gives_one_picture_per_leaf(small_source, tmp_path):
    flat_config = dataclasses.replace(SMALL, image_jitter=0.0)
    flat = leaf_pictures(write_demo_source(tmp_path / "flat", seed=3, config=flat_config))
    assert all(len(p) == 1 for p in flat.values())
    assert len(set.union(*flat.values())) == len(flat), "two leaves share a picture"
    # With jitter the pictures within a leaf differ.
    assert all(len(p) > 1 for p in leaf_pictures(small_source).values())


# ---------------------------------------------------------------------------------------------- folder handling


def test_write_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="busy"):
        write_demo_source(tmp_path / "busy", config=SMALL)
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"], "a temporary folder was left behind"


def test_demo_source_dir_writes_once_and_rewrites_on_change(tmp_path, monkeypatch):
    folder = demo_source_dir(tmp_path, seed=3, config=SMALL)
    assert folder == tmp_path / demo.DEMO_SOURCE_DIR
    assert (folder / demo.MARKER_FILE).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [demo.DEMO_SOURCE_DIR]
    files = all_files(folder)

    def must_not_write(*args, **kwargs):
        raise AssertionError("a matching cached copy was regenerated")

    with monkeypatch.context() as m:
        m.setattr(demo, "_write", must_not_write)
        assert demo_source_dir(tmp_path, seed=3, config=SMALL) == folder

    demo_source_dir(tmp_path, seed=5, config=SMALL)   # other seed: the stale copy is replaced
    assert all_files(folder)[demo.REVIEWS_FILE] != files[demo.REVIEWS_FILE]
    demo_source_dir(tmp_path, seed=3, config=SMALL)
    assert all_files(folder) == files
    assert sorted(p.name for p in tmp_path.iterdir()) == [demo.DEMO_SOURCE_DIR]


def test_demo_source_dir_redoes_an_incomplete_copy(tmp_path):
    folder = demo_source_dir(tmp_path, seed=3, config=SMALL)
    (folder / demo.MARKER_FILE).unlink()  # as if the copy was never finished
    (folder / demo.META_FILE).unlink()
    demo_source_dir(tmp_path, seed=3, config=SMALL)
    assert (folder / demo.META_FILE).exists() and (folder / demo.MARKER_FILE).exists()


@pytest.mark.parametrize("field, value", [
    ("n_top_categories", 0), ("n_top_categories", 11), ("leaves_per_top", 4), ("min_seq_len", 2),
    ("mean_seq_len", 5.0), ("n_users", 5), ("p_complement", 1.5), ("p_explore", -0.1), ("n_items", 8),
    ("first_day", "2018-13-01"), ("last_day", "2011-01-01"), ("image_size", 8),
])
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"DemoConfig.{field}"):
        DemoConfig(**{field: value})


# ---------------------------------------------------------------------------------------------- structure


@pytest.fixture(scope="module")
def default_data(default_source):
    reviews = read_lines(default_source / demo.REVIEWS_FILE)
    meta = read_lines(default_source / demo.META_FILE)
    asin_index = {m["asin"]: i for i, m in enumerate(meta)}
    return meta, user_sequences(reviews, asin_index)


def test_default_size_and_long_tail(default_data):
    meta, seqs = default_data
    cfg = DemoConfig()
    lengths = np.array([len(s) for s in seqs])
    assert 8.0 <= lengths.mean() <= 12.0
    counts = np.sort(np.bincount(np.concatenate(seqs), minlength=cfg.n_items))[::-1]
    # Long tail: the top 10% of items take a large share; the median item is near the 5-core floor.
    assert counts[: cfg.n_items // 10].sum() / counts.sum() > 0.3
    assert np.median(counts) < counts.mean()
    assert len({tuple(m["category"]) for m in meta}) == cfg.n_top_categories * cfg.leaves_per_top


def test_users_concentrate_on_few_categories(default_data):
    meta, seqs = default_data
    top = np.array([m["category"][1] for m in meta])
    # Share of each user's items in their two most frequent top categories (10 categories exist).
    shares = []
    for s in seqs:
        counts = np.sort(np.unique(top[s], return_counts=True)[1])[::-1]
        shares.append(counts[:2].sum() / len(s))
    assert np.mean(shares) > 0.75


def test_last_item_transitions_beat_popularity(default_data):
    """A "last item -> most frequent next item" model clearly beats popularity on validation Recall@10."""
    meta, seqs = default_data
    n_items = len(meta)
    split = leave_one_out(seqs)
    popularity = np.bincount(np.concatenate(split.train), minlength=n_items).astype(np.float64)
    transitions = np.zeros((n_items, n_items))  # (from item, to item) counts in the training part
    for s in split.train:
        np.add.at(transitions, (s[:-1], s[1:]), 1.0)
    last = np.array([h[-1] for h in split.valid.histories])
    k = 10
    pop_top = topk_from_scores(np.tile(popularity, (len(last), 1)), k, split.valid.histories)
    # Popularity (scaled below 1) breaks ties and fills items never seen after the last one.
    trans_top = topk_from_scores(transitions[last] + popularity / (popularity.max() + 1.0), k, split.valid.histories)
    pop_recall = recall_at_k(pop_top, split.valid.targets, k)
    trans_recall = recall_at_k(trans_top, split.valid.targets, k)
    assert pop_recall > 0.01, "popularity should still find something on a long-tailed catalogue"
    assert trans_recall > 3.0 * pop_recall and trans_recall - pop_recall > 0.2, (pop_recall, trans_recall)



def test_prepare_reads_the_demo_unchanged(small_source, tmp_path):
    """Through the 2018 reader: nothing is filtered, sequences equal the files parsed by hand, images resolve."""
    prepare_mod = pytest.importorskip("genrec.data.prepare", reason="the prepare stage is not available")
    pl = pytest.importorskip("polars")

    manifest = prepare_mod.prepare(small_source, tmp_path / "run", prepare_mod.PrepareConfig(progress=False))
    reviews = read_lines(small_source / demo.REVIEWS_FILE)
    assert (manifest["n_users"], manifest["n_items"], manifest["n_interactions"]) == (
        SMALL.n_users, SMALL.n_items, len(reviews))
    dataset = tmp_path / "run" / "dataset"
    items = pl.read_parquet(dataset / "items.parquet").sort("item_id")
    expected = user_sequences(reviews, {a: i for i, a in enumerate(items["source_id"].to_list())})
    got = pl.read_parquet(dataset / "sequences.parquet").sort("source_user_id")["item_ids"].to_list()
    assert got == [s.tolist() for s in expected]
    assert all(Path(p).is_file() for p in items["image"].to_list())
