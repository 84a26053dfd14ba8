"""End-to-end ``prepare`` on small fixtures: dense ids, files, manifest, atomic writes, determinism."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import genrec.data.prepare as prep
from genrec.data.dataset import load_dataset
from genrec.data.prepare import FORMATS, PrepareConfig, detect_format, format_summary, prepare
from genrec.data.readers import DataFormatError
from genrec.data.schema import ITEM_SCHEMA, SEQUENCE_SCHEMA
from genrec.io import sha256_file

NO_CORE = PrepareConfig(user_core=0, item_core=0, min_seq_len=3, progress=False)

# (user, item, unix time) in file order. Worked by hand (see test_prepare_end_to_end):
# users by first appearance: U2, U1, U3, U4; U4 has 2 events and is dropped by min_seq_len=3.
REVIEWS = [("U2", "B5", 30), ("U1", "B3", 20), ("U1", "B1", 10), ("U2", "B3", 10), ("U1", "B2", 20),
           ("U2", "B4", 20), ("U3", "B1", 5), ("U3", "B9", 6), ("U4", "B8", 1), ("U3", "B3", 7),
           ("U4", "B1", 2), ("U2", "B2", 40)]
META = {f"B{k}": {"title": f"Item {k}", "price": f"${k}.50", "category": ["Shop", f"Aisle {k % 2}"]}
        for k in (1, 2, 3, 4, 5, 7, 8)}  # no B9 (reviewed, missing), B7 (never reviewed), B8 (filtered out)


def gz_lines(path: Path, lines: list[str]) -> None:
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    gz_lines(folder / "Shop_5.json.gz", [json.dumps({"reviewerID": u, "asin": i, "unixReviewTime": t})
                                         for u, i, t in REVIEWS])
    gz_lines(folder / "meta_Shop.json.gz", [json.dumps({"asin": k, **v}) for k, v in META.items()])
    return folder


def test_prepare_end_to_end(source: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    manifest = prepare(source, run, NO_CORE)
    assert detect_format(source) == "raw2018" and "raw2018" in FORMATS
    # Dense items, walking U2 [B3 B4 B5 B2], U1 [B1 B3 B2] (B3 and B2 tie at t=20: file order), U3 [B1 B9 B3]:
    # B3->0 B4->1 B5->2 B2->3 B1->4 B9->5
    ds = load_dataset(run)
    assert [s.tolist() for s in ds.sequences] == [[0, 1, 2, 3], [4, 0, 3], [4, 5, 0]]
    assert [t.tolist() for t in ds.timestamps] == [[10, 20, 30, 40], [10, 20, 20], [5, 6, 7]]
    items = ds.items
    assert items.schema == pl.Schema(ITEM_SCHEMA)
    assert items["item_id"].to_list() == list(range(6))
    assert items["source_id"].to_list() == ["B3", "B4", "B5", "B2", "B1", "B9"]
    assert items["title"].to_list() == ["Item 3", "Item 4", "Item 5", "Item 2", "Item 1", None]
    assert items["price"].to_list() == [3.5, 4.5, 5.5, 2.5, 1.5, None]
    assert items.row(5, named=True) == {"item_id": 5, "source_id": "B9", **{k: None for k in list(ITEM_SCHEMA)[2:]}}
    seq = pl.read_parquet(run / "dataset" / "sequences.parquet")
    assert seq.schema == pl.Schema(SEQUENCE_SCHEMA)
    assert seq["source_user_id"].to_list() == ["U2", "U1", "U3"]

    assert (manifest["n_users"], manifest["n_items"], manifest["n_interactions"]) == (3, 6, 10)
    assert manifest["seq_len"] == {"mean": round(10 / 3, 4), "min": 3, "max": 4}
    assert manifest["stage"] == "prepare" and manifest["format"] == "raw2018" and manifest["name"] == "src"
    assert manifest["items_missing_metadata"] == 1
    assert manifest["metadata_coverage"]["title"] == 5 and manifest["metadata_coverage"]["attributes"] == 0
    assert manifest["filters"] == {"n_input": 12, "dedup_removed": 0, "core_removed": 2, "removed_users": 1,
                                   "removed_items": 1, "rounds": 2}
    assert manifest["config"] == {"user_core": 0, "item_core": 0, "min_seq_len": 3, "dedup_consecutive": False,
                                  "split": "leave_one_out", "valid_from": 0.8, "test_from": 0.9, "max_items": 20,
                                  "max_text_chars": 50_000, "on_error": "raise", "progress": False}
    assert manifest["split"] == {"kind": "leave_one_out"} and manifest["max_items"] == 20
    assert manifest["has_timestamps"] and manifest["timestamp_unit"] == "unix seconds"
    # The source files are the inputs (outside the run folder, so keyed by absolute path).
    assert manifest["inputs"] == {str((source / n).resolve()): sha256_file(source / n)
                                  for n in ("Shop_5.json.gz", "meta_Shop.json.gz")}
    assert any("1 of 6 items" in n and "no metadata" in n for n in manifest["notes"])
    assert any("1 metadata rows describe items not in the final dataset" in n for n in manifest["notes"])  # B8
    assert any("without reviews" in n for n in manifest["notes"])  # B7
    assert manifest["versions"]["polars"] == pl.__version__
    on_disk = json.loads((run / "dataset" / "manifest.json").read_text())
    assert on_disk["files"] == manifest["files"] and set(manifest["files"]) == {"items.parquet", "sequences.parquet"}


def test_default_filters_k_core(source: Path, tmp_path: Path) -> None:
    # Default user_core = item_core = 5: nobody here has 5 events, so nothing is left and the error says why.
    with pytest.raises(ValueError, match="no interactions left after filtering .*Lower the thresholds"):
        prepare(source, tmp_path / "run", PrepareConfig(progress=False))
    assert not (tmp_path / "run" / "dataset").exists()


def test_rerun_is_byte_identical(source: Path, tmp_path: Path) -> None:
    a = prepare(source, tmp_path / "a", NO_CORE)
    b = prepare(source, tmp_path / "b", NO_CORE)
    c = prepare(source, tmp_path / "a", NO_CORE)  # over an existing dataset
    for name in ("items.parquet", "sequences.parquet"):
        assert (tmp_path / "a" / "dataset" / name).read_bytes() == (tmp_path / "b" / "dataset" / name).read_bytes()
    assert a["files"] == b["files"] == c["files"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["dataset"]  # no temp folders left behind


def test_failure_while_writing_leaves_no_dataset(source: Path, tmp_path: Path, monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(prep, "write_manifest", boom)
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="disk full"):
        prepare(source, run, NO_CORE)
    assert list(run.iterdir()) == []


def test_failure_keeps_the_old_dataset(source: Path, tmp_path: Path, monkeypatch) -> None:
    run = tmp_path / "run"
    prepare(source, run, NO_CORE)
    before = {p.name: p.read_bytes() for p in (run / "dataset").iterdir()}
    real = prep.write_manifest

    def write_then_fail(folder, *args, **kwargs):
        real(folder, *args, **kwargs)  # the new folder is complete ...
        raise KeyboardInterrupt        # ... but the run is interrupted before the swap

    monkeypatch.setattr(prep, "write_manifest", write_then_fail)
    with pytest.raises(KeyboardInterrupt):
        prepare(source, run, PrepareConfig(user_core=0, item_core=0, min_seq_len=4, progress=False))
    assert {p.name: p.read_bytes() for p in (run / "dataset").iterdir()} == before
    assert sorted(p.name for p in run.iterdir()) == ["dataset"]


def test_replacing_a_dataset_with_new_filters(source: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    prepare(source, run, NO_CORE)
    manifest = prepare(source, run, PrepareConfig(user_core=0, item_core=0, min_seq_len=4, progress=False))
    assert (manifest["n_users"], manifest["n_interactions"]) == (1, 4)
    assert load_dataset(run).sequences[0].tolist() == [0, 1, 2, 3]  # U2: B3 B4 B5 B2
    assert sorted(p.name for p in run.iterdir()) == ["dataset"]


def test_skip_mode_counts_and_reports_bad_lines(source: Path, tmp_path: Path, capsys) -> None:
    lines = gzip.decompress((source / "Shop_5.json.gz").read_bytes()).decode().splitlines()
    lines.insert(2, json.dumps({"reviewerID": "U9", "unixReviewTime": 3}))
    gz_lines(source / "Shop_5.json.gz", lines)
    with pytest.raises(DataFormatError, match=r"Shop_5\.json\.gz, line 3: field 'asin'"):
        prepare(source, tmp_path / "run", NO_CORE)
    config = PrepareConfig(user_core=0, item_core=0, on_error="skip", progress=True)
    manifest = prepare(source, tmp_path / "run", config)
    assert manifest["skipped"] == {"Shop_5.json.gz: missing asin": 1} and manifest["n_skipped_lines"] == 1
    assert manifest["n_interactions"] == 10
    out = capsys.readouterr().out
    assert "Shop_5.json.gz: missing asin" in out and "skipped lines: 1" in out and "interactions" in out
    assert format_summary(manifest, tmp_path / "run" / "dataset") in out


def test_dedup_option(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "Toys.txt").write_text("1 1 1 2 3\n2 3 3 3 1 2\n")  # user 1: [1 1 2 3], user 2: [3 3 3 1 2]
    on = prepare(src, tmp_path / "on", PrepareConfig(user_core=0, item_core=0, dedup_consecutive=True, progress=False))
    off = prepare(src, tmp_path / "off", NO_CORE)
    assert (on["n_interactions"], on["filters"]["dedup_removed"]) == (6, 3)
    assert off["n_interactions"] == 9 and off["filters"]["dedup_removed"] == 0
    assert [s.tolist() for s in load_dataset(tmp_path / "on").sequences] == [[0, 1, 2], [2, 0, 1]]


def test_s3rec_ids_shift_to_zero_based(tmp_path: Path) -> None:
    # S3-Rec numbers items by first appearance; prepare must reproduce it 0-based (item k -> k - 1).
    rng = np.random.default_rng(7)
    lines, next_item, seen = [], 1, []
    for user in range(1, 12):
        seq = []
        for _ in range(int(rng.integers(3, 8))):
            if seen and rng.random() < 0.5:
                seq.append(int(rng.choice(seen)))
            else:
                seq.append(next_item)
                seen.append(next_item)
                next_item += 1
        lines.append(" ".join(map(str, [user, *seq])))
    src = tmp_path / "src"
    src.mkdir()
    (src / "Toys.txt").write_text("\n".join(lines) + "\n")
    prepare(src, tmp_path / "run", NO_CORE)
    ds = load_dataset(tmp_path / "run")
    expected = [[int(t) - 1 for t in line.split()[1:]] for line in lines]
    assert [s.tolist() for s in ds.sequences] == expected
    assert ds.items["source_id"].to_list() == [str(k) for k in range(1, next_item)]
    assert ds.timestamps == [None] * len(lines) and ds.manifest["timestamp_unit"] is None


def test_forced_format_and_files_listed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "Toys.txt").write_text("1 1 2 3\n2 2 3 1\n")
    (src / "Toys.inter.json").write_text(json.dumps({"0": [0, 1, 2], "1": [1, 2, 0]}))
    auto = prepare(src, tmp_path / "auto", NO_CORE)
    forced = prepare(src, tmp_path / "forced", NO_CORE, fmt="lcrec", name="toys")
    assert auto["format"] == "s3rec" and [Path(f).name for f in auto["inputs"]] == ["Toys.txt"]
    assert forced["format"] == "lcrec" and forced["name"] == "toys"
    assert [Path(f).name for f in forced["inputs"]] == ["Toys.inter.json"]
    assert load_dataset(tmp_path / "forced").sequences[1].tolist() == [1, 2, 0]
    with pytest.raises(DataFormatError, match=r"no 'rechorus' files found.*\(found: s3rec\)"):
        prepare(src, tmp_path / "x", NO_CORE, fmt="rechorus")


def test_temporal_split_cuts_one_time_line(source: Path, tmp_path: Path) -> None:
    # Event times 5 6 7 10 10 20 20 20 30 40: the 0.5 and 0.8 quantiles ("higher") are 20 and 30.
    # U2 [0 1 2 3] at 10 20 30 40: trains on [0], validates 1 after [0], is tested on 2 after [0 1].
    # U1 [4 0 3] at 10 20 20: trains on [4], validates 0 after [4], has no event at or after 30.
    # U3 [4 5 0] at 5 6 7: all training.
    manifest = prepare(source, tmp_path / "run", replace(NO_CORE, split="temporal", valid_from=0.5, test_from=0.8))
    assert manifest["split"] == {"kind": "temporal", "valid_from": 0.5, "test_from": 0.8, "valid_cut": 20,
                                 "test_cut": 30, "n_train_events": 5, "n_valid_users": 2, "n_test_users": 1}
    split = load_dataset(tmp_path / "run").split
    assert [s.tolist() for s in split.train] == [[0], [4], [4, 5, 0]]
    assert split.valid.user_ids.tolist() == [0, 1] and split.valid.targets.tolist() == [1, 0]
    assert [h.tolist() for h in split.valid.histories] == [[0], [4]]
    assert split.test.user_ids.tolist() == [0] and split.test.targets.tolist() == [2]
    assert [h.tolist() for h in split.test.histories] == [[0, 1]]


def test_temporal_split_needs_timestamps(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "Toys.txt").write_text("1 1 2 3\n2 2 3 1\n")   # S3-Rec: order only
    with pytest.raises(ValueError, match=r"split 'temporal' needs a timestamp.*s3rec.*--split leave_one_out"):
        prepare(src, tmp_path / "run", replace(NO_CORE, split="temporal"))
    assert not (tmp_path / "run" / "dataset").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"split": "random"}, "split must be one of"),
    ({"valid_from": 0.9, "test_from": 0.8}, "0 < valid_from <= test_from < 1"),
    ({"test_from": 1.0}, "0 < valid_from <= test_from < 1"),
    ({"user_core": -1}, "user_core must be an integer >= 0"),
    ({"item_core": 2.5}, "item_core must be an integer >= 0"),
    ({"min_seq_len": 0}, "min_seq_len must be >= 1"),
    ({"on_error": "ignore"}, "on_error must be one of"),
    ({"dedup_consecutive": "yes"}, "dedup_consecutive must be true or false"),
])
def test_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PrepareConfig(**kwargs)


def test_max_items_is_recorded_for_the_models(source: Path, tmp_path: Path) -> None:
    manifest = prepare(source, tmp_path / "run", replace(NO_CORE, max_items=9))
    assert manifest["max_items"] == 9 and manifest["config"]["max_items"] == 9
    assert load_dataset(tmp_path / "run").max_items == 9
    with pytest.raises(ValueError, match="max_items must be >= 1"):
        PrepareConfig(max_items=0)


def test_long_texts_are_cut_and_counted(tmp_path: Path, capsys) -> None:
    items = pl.DataFrame({"title": ["a" * 12, "short", None], "description": ["b" * 11, "c" * 10, "d"],
                          "brand": ["e", None, "f"]})
    cut, counts = prep.cap_text(items, 10)
    assert counts == {"title": 1, "description": 1}
    assert (cut["title"].to_list() == ["a" * 10, "short", None]
            and cut["description"].to_list() == ["b" * 10, "c" * 10, "d"])
    assert prep.cap_text(items, 0) == (items, {})   # 0 = no cap
    with pytest.raises(ValueError, match="max_text_chars must be an integer >= 0"):
        PrepareConfig(max_text_chars=-1)
