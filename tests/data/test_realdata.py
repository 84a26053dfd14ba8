"""``prepare`` on the real data in ../shared/data: exact counts from each SOURCE.md and alignment checks.

Expected values are read from the source files here with plain Python, independent of the readers.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from conftest import require_shared

from genrec.data.dataset import load_dataset
from genrec.data.prepare import PrepareConfig, prepare

pytestmark = pytest.mark.realdata

QUIET = PrepareConfig(progress=False)

# folder -> (format detected, users, items, interactions), counts as stated in each SOURCE.md
EXPECTED = {
    "Beauty": ("s3rec", 22_363, 12_101, 198_502),
    "Office": ("rechorus", 4_905, 2_420, 53_258),
    "Scientific": ("lcrec", 8_317, 4_344, 58_492),
    "Scientific_DeCoRec_mm": ("recbole", 2_928, 1_585, 19_712),
    "Sports_and_Outdoors": ("s3rec", 35_598, 18_357, 296_337),
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict:
    """Prepare each available folder once for the whole module (auto-detected format, default config)."""
    cache: dict[str, tuple[dict, Path]] = {}

    def get(name: str) -> tuple[dict, Path]:
        if name not in cache:
            source = require_shared(name)
            run = tmp_path_factory.mktemp(name)
            cache[name] = (prepare(source, run, QUIET), run)
        return cache[name]

    return get


@pytest.mark.parametrize("name", list(EXPECTED))
def test_exact_counts(name: str, prepared) -> None:
    manifest, run = prepared(name)
    fmt, n_users, n_items, n_interactions = EXPECTED[name]
    assert manifest["format"] == fmt
    assert (manifest["n_users"], manifest["n_items"], manifest["n_interactions"]) == (n_users, n_items, n_interactions)
    assert manifest["n_skipped_lines"] == 0 and manifest["items_missing_metadata"] == 0
    assert manifest["filters"]["core_removed"] == 0  # the sources are already 5-core
    ds = load_dataset(run)
    assert ds.n_users == n_users and ds.n_items == n_items and sum(map(len, ds.sequences)) == n_interactions


def test_beauty_first_user_test_target(prepared) -> None:
    _, run = prepared("Beauty")
    source = require_shared("Beauty")
    first = (source / "Beauty.txt").read_text().split("\n", 1)[0].split()
    last_item = first[-1]
    asin = dict(line.split("\t")[::2] for line in (source / "Beauty_item_id2asin.tsv").read_text().splitlines()[1:])
    ds = load_dataset(run)
    target = int(ds.split.test.targets[0])
    assert ds.split.test.user_ids[0] == 0 and ds.manifest["has_timestamps"] is False
    assert target == int(last_item) - 1  # S3-Rec item k is item_id k-1 (the LC-Rec id)
    assert ds.items["source_id"][target] == asin[last_item]
    assert ds.sequences[0].tolist() == [int(t) - 1 for t in first[1:]]


def test_office_rechorus_forced_equals_detected_with_timestamps(prepared, tmp_path: Path) -> None:
    detected, run = prepared("Office")
    source = require_shared("Office")
    forced = prepare(source, tmp_path, PrepareConfig(progress=False), fmt="rechorus")
    for key in ("format", "n_users", "n_items", "n_interactions", "files"):
        assert forced[key] == detected[key]
    ds = load_dataset(run)
    assert all(t is not None and (t[1:] >= t[:-1]).all() for t in ds.timestamps)
    # Each user's last event is the test.csv row and the second-last the dev.csv row (by ASIN).
    asin = dict(reversed(line.split("\t")) for line in (source / "Office.item2index").read_text().splitlines())
    rows = {}
    for split in ("dev", "test"):
        for line in (source / f"{split}.csv").read_text().splitlines()[1:]:
            user, item, time = line.split("\t")[:3]
            rows[(split, user)] = (asin[item], int(time))
    source_ids = ds.items["source_id"].to_list()
    users = _source_users(run)
    for u, user in enumerate(users):
        seq, ts = ds.sequences[u], ds.timestamps[u]
        assert (source_ids[seq[-1]], int(ts[-1])) == rows[("test", user)]
        assert (source_ids[seq[-2]], int(ts[-2])) == rows[("dev", user)]


def test_office_temporal_split_counts(tmp_path: Path) -> None:
    """The README's Office figures for `genrec prepare --split temporal` (cuts at the 0.8 / 0.9 quantiles)."""
    manifest = prepare(require_shared("Office"), tmp_path, PrepareConfig(split="temporal", progress=False))
    spec = manifest["split"]
    assert (spec["n_train_events"], spec["n_valid_users"], spec["n_test_users"]) == (42_572, 2_282, 2_114)
    split = load_dataset(tmp_path).split
    assert all(len(h) > 0 for h in split.test.histories)   # every tested user has history before the cut


def test_decorec_last_items_match_test_file(prepared) -> None:
    _, run = prepared("Scientific_DeCoRec_mm")
    source = require_shared("Scientific_DeCoRec_mm")
    asin = dict(reversed(line.split("\t")) for line in (source / "Scientific.item2index").read_text().splitlines())
    reviewer = dict(reversed(line.split("\t")) for line in (source / "Scientific.user2index").read_text().splitlines())
    expected = {}
    for line in (source / "Scientific.test.inter").read_text().splitlines()[1:]:
        user, history, target = line.split("\t")
        expected[reviewer[user]] = [asin[i] for i in history.split()] + [asin[target]]
    ds = load_dataset(run)
    source_ids = ds.items["source_id"].to_list()
    users = _source_users(run)
    assert len(users) == len(expected)
    for u, user in enumerate(users):
        assert [source_ids[i] for i in ds.sequences[u]] == expected[user]


def _source_users(run: Path) -> list[str]:
    return pl.read_parquet(run / "dataset" / "sequences.parquet").sort("user_id")["source_user_id"].to_list()


def test_scientific_lcrec_ids_and_sequences_are_kept(prepared) -> None:
    _, run = prepared("Scientific")
    data = json.loads((require_shared("Scientific") / "Scientific.inter.json").read_text())
    ds = load_dataset(run)
    source_ids = ds.items["source_id"].to_list()
    assert _source_users(run) == list(data)
    assert all([source_ids[i] for i in seq] == [str(i) for i in data[user]]
               for seq, user in zip(ds.sequences, data))
    titles = json.loads((require_shared("Scientific") / "Scientific.item.json").read_text())
    assert ds.items["title"][0] == titles[source_ids[0]]["title"].strip()
