"""Each source-format reader on small fixtures written here, format detection, and bad-input handling."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from genrec.data.detect import PRIORITY, detect_format, locate
from genrec.data.readers import FORMATS, DataFormatError, read_source


def write(path: Path, lines: list[str]) -> Path:
    data = ("\n".join(lines) + "\n").encode("utf-8")
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    return path


def events(raw) -> list[tuple[str, str, int | None]]:
    return list(raw.interactions.select("user", "item", "ts").iter_rows())


def item_row(raw, key: str) -> dict:
    rows = raw.items.filter(pl.col("item") == key).to_dicts()
    assert len(rows) == 1, f"expected one metadata row for {key}, got {rows}"
    return rows[0]


# --------------------------------------------------------------------------------------------- raw 2014


def review_2014(user: str, item: str, ts: int) -> str:
    return json.dumps({"reviewerID": user, "asin": item, "unixReviewTime": ts, "overall": 5.0,
                       "reviewText": "ok", "reviewTime": "01 1, 2010"})


@pytest.fixture
def raw2014_dir(tmp_path: Path) -> Path:
    write(tmp_path / "reviews_Toys_5.json.gz", [
        review_2014("U1", "A1", 300), review_2014("U1", "A2", 100), review_2014("U2", "A2", 200),
    ])
    write(tmp_path / "meta_Toys.json.gz", [
        # Python literals: single quotes, an embedded double quote and apostrophe, None, nested lists.
        """{'asin': 'A1', 'title': "Kid's \\"best\\" toy", 'price': 3.5, 'imUrl': 'http://img/a1.jpg', """
        """'categories': [['Toys', 'Dolls'], ['Toys', 'Gifts']], 'brand': None, 'description': 'Soft.'}""",
        "{'asin': 'A2', 'title': 'Ball', 'salesRank': {'Toys': 12}, 'related': {'also_bought': ['A1']}}",
        "{'asin': 'UNUSED', 'title': 'Not reviewed'}",
    ])
    return tmp_path


def test_raw2014_reads_reviews_and_python_literal_meta(raw2014_dir: Path) -> None:
    files, raw = read_source(raw2014_dir, "raw2014", progress=False)
    assert files.category == "Toys" and set(files.files) == {"reviews", "meta"}
    assert events(raw) == [("U1", "A1", 300), ("U1", "A2", 100), ("U2", "A2", 200)]
    a1 = item_row(raw, "A1")
    assert a1["title"] == 'Kid\'s "best" toy'
    assert a1["brand"] is None  # Python None -> null, never the string "None"
    assert a1["categories"] == ["Toys", "Dolls", "Gifts"]  # union of the category paths, first path first
    assert a1["price"] == 3.5 and a1["image"] == "http://img/a1.jpg" and a1["description"] == "Soft."
    a2 = item_row(raw, "A2")
    assert a2["title"] == "Ball" and a2["price"] is None and a2["categories"] is None
    assert "UNUSED" not in raw.items["item"].to_list()
    assert any("describe items without reviews" in n for n in raw.notes)
    assert raw.skipped == {}
    assert sorted(Path(p).name for p in raw.files_used) == ["meta_Toys.json.gz", "reviews_Toys_5.json.gz"]


@pytest.mark.parametrize("malicious", [
    "__import__('os').system('touch {marker}')",
    "{{'asin': 'A1', 'title': __import__('os').system('touch {marker}')}}",
])
def test_raw2014_meta_code_is_rejected_not_executed(raw2014_dir: Path, malicious: str) -> None:
    marker = raw2014_dir / "PWNED"
    meta = raw2014_dir / "meta_Toys.json.gz"
    lines = gzip.decompress(meta.read_bytes()).decode().splitlines()
    write(meta, lines[:1] + [malicious.format(marker=marker)] + lines[1:])
    with pytest.raises(DataFormatError) as err:
        read_source(raw2014_dir, "raw2014", progress=False)
    msg = str(err.value)
    assert "meta_Toys.json.gz" in msg and "line 2" in msg and "Python dict literal" in msg and "skip" in msg
    assert not marker.exists()
    _, raw = read_source(raw2014_dir, "raw2014", on_error="skip", progress=False)
    assert raw.skipped == {"meta_Toys.json.gz: not a dict": 1}
    assert not marker.exists()
    assert item_row(raw, "A2")["title"] == "Ball"


def test_raw2014_bad_review_lines_name_file_line_and_field(raw2014_dir: Path) -> None:
    reviews = raw2014_dir / "reviews_Toys_5.json.gz"
    write(reviews, [
        review_2014("U1", "A1", 300),
        json.dumps({"reviewerID": "U1", "unixReviewTime": 5}),                # no item
        json.dumps({"reviewerID": "U2", "asin": "A2", "unixReviewTime": "soon"}),  # bad time
        "{not json",
        json.dumps({"asin": "A2", "unixReviewTime": 7}),                      # no user
        review_2014("U2", "A2", 200),
    ])
    with pytest.raises(DataFormatError, match=r"reviews_Toys_5\.json\.gz, line 2: field 'asin'.*--skip-bad-lines"):
        read_source(raw2014_dir, "raw2014", progress=False)
    _, raw = read_source(raw2014_dir, "raw2014", on_error="skip", progress=False)
    assert events(raw) == [("U1", "A1", 300), ("U2", "A2", 200)]
    assert raw.skipped == {
        "reviews_Toys_5.json.gz: missing asin": 1, "reviews_Toys_5.json.gz: bad unixReviewTime": 1,
        "reviews_Toys_5.json.gz: not a JSON object": 1, "reviews_Toys_5.json.gz: missing reviewerID": 1,
    }


def test_truncated_gzip_is_reported(raw2014_dir: Path) -> None:
    reviews = raw2014_dir / "reviews_Toys_5.json.gz"
    reviews.write_bytes(reviews.read_bytes()[:-12])
    with pytest.raises(DataFormatError, match="reviews_Toys_5.json.gz: cannot read past line .*truncated"):
        read_source(raw2014_dir, "raw2014", progress=False)


# --------------------------------------------------------------------------------------------- raw 2018


def test_raw2018_prices_descriptions_and_local_images(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "B1.png").write_bytes(b"\x89PNG")
    write(tmp_path / "Demo_5.json.gz", [
        json.dumps({"reviewerID": u, "asin": i, "unixReviewTime": t, "overall": 4.0})
        for u, i, t in [("R1", "B1", 10), ("R1", "B2", 20), ("R2", "B3", 15)]
    ])
    write(tmp_path / "meta_Demo.json.gz", [
        json.dumps({"asin": "B1", "title": "One", "price": "$1,299.99", "category": ["Demo", "Toys"],
                    "description": ["Line a.", "", "Line b."], "brand": "Acme",
                    "imageURLHighRes": ["images/B1.png"], "imageURL": ["images/small.png"]}),
        json.dumps({"asin": "B2", "title": "Two", "price": "$1.00 - $5.00", "imageURL": ["https://x/b2.jpg"],
                    "description": []}),
        json.dumps({"asin": "B3", "title": "  ", "price": "", "imageURLHighRes": ["images/none.png"]}),
    ])
    assert detect_format(tmp_path) == "raw2018"
    _, raw = read_source(tmp_path, "raw2018", progress=False)
    b1, b2, b3 = (item_row(raw, k) for k in ("B1", "B2", "B3"))
    assert b1["price"] == 1299.99 and b1["description"] == "Line a. Line b." and b1["brand"] == "Acme"
    assert b1["image"] == str((tmp_path / "images" / "B1.png").resolve())
    assert b1["categories"] == ["Demo", "Toys"]
    assert b2["price"] is None and b2["image"] == "https://x/b2.jpg" and b2["description"] is None
    assert b3["title"] is None and b3["price"] is None and b3["image"] == "images/none.png"
    assert any("1 price values" in n and "$1.00 - $5.00" in n for n in raw.notes)
    assert any("1 image entries" in n for n in raw.notes)


# --------------------------------------------------------------------------------------------- raw 2023


def test_raw2023_parent_asin_and_millisecond_timestamps(tmp_path: Path) -> None:
    write(tmp_path / "All_Beauty.jsonl", [
        json.dumps({"user_id": "AE1", "asin": "C1v", "parent_asin": "C1", "timestamp": 1588687728923, "rating": 5}),
        json.dumps({"user_id": "AE1", "asin": "C2", "parent_asin": "C2", "timestamp": 1588687728000, "rating": 3}),
    ])
    write(tmp_path / "meta_All_Beauty.jsonl.gz", [
        json.dumps({"parent_asin": "C1", "title": "Serum", "store": "Glow", "categories": [], "price": None,
                    "description": ["Light."], "images": [{"thumb": "t.jpg", "large": "l.jpg", "hi_res": None}]}),
        json.dumps({"parent_asin": "C2", "title": "Cream", "store": None, "categories": ["Beauty", "Skin"],
                    "price": 7.25, "images": [{"hi_res": "h2.jpg", "large": "l2.jpg"}]}),
    ])
    assert detect_format(tmp_path) == "raw2023"
    _, raw = read_source(tmp_path, "raw2023", progress=False)
    assert events(raw) == [("AE1", "C1", 1588687728), ("AE1", "C2", 1588687728)]
    c1, c2 = item_row(raw, "C1"), item_row(raw, "C2")
    assert (c1["brand"], c1["image"], c1["price"], c1["categories"]) == ("Glow", "l.jpg", None, None)
    assert (c2["image"], c2["price"], c2["categories"]) == ("h2.jpg", 7.25, ["Beauty", "Skin"])


def test_raw2023_detection_ignores_other_jsonl(tmp_path: Path) -> None:
    write(tmp_path / "Beauty.idgen_text.jsonl", [json.dumps({"item_id": 1, "asin": "X", "idgen_text": "a b"})])
    with pytest.raises(DataFormatError, match="no known source format"):
        detect_format(tmp_path)


# --------------------------------------------------------------------------------------------- S3-Rec


@pytest.fixture
def s3rec_dir(tmp_path: Path) -> Path:
    write(tmp_path / "Toys.txt", ["1 1 2 3", "2 4 2 5 1", "3 3 5 4"])
    (tmp_path / "Toys_item2attributes.json").write_text(json.dumps({"1": [7, 9], "2": [9], "5": [], "9": [1]}))
    write(tmp_path / "Toys_item_id2asin.tsv", ["s3rec_item_id\tlcrec_item_id\tasin"] +
          [f"{k}\t{k - 1}\tASIN{k}" for k in range(1, 6)])
    write(tmp_path / "Toys.idgen_text.jsonl", [
        json.dumps({"item_id": k, "asin": f"ASIN{k}", "idgen_text": "" if k == 4 else f"kw {k}"}) for k in range(1, 6)
    ])
    write(tmp_path / "user_sequence.txt", ["UA ASIN1 ASIN2 ASIN3"])  # GRAM file: not S3-Rec, must be ignored
    return tmp_path


def test_s3rec_with_asin_map_attributes_and_keyword_text(s3rec_dir: Path) -> None:
    files, raw = read_source(s3rec_dir, "s3rec", progress=False)
    assert files.files["sequences"].name == "Toys.txt"
    assert events(raw)[:4] == [("1", "ASIN1", None), ("1", "ASIN2", None), ("1", "ASIN3", None), ("2", "ASIN4", None)]
    assert raw.interactions.height == 10 and raw.interactions["pos"].to_list() == list(range(10))
    assert item_row(raw, "ASIN1")["attributes"] == ["attr_7", "attr_9"]
    assert item_row(raw, "ASIN5")["attributes"] is None
    assert item_row(raw, "ASIN2")["title"] == "kw 2"
    assert item_row(raw, "ASIN4")["title"] is None  # empty keyword text is null, not ""
    assert any("not the raw titles" in n for n in raw.notes)
    assert any("missing from the ASIN map" in n for n in raw.notes)  # attribute key 9


def test_s3rec_without_companions_keys_by_id(tmp_path: Path) -> None:
    write(tmp_path / "Toys.txt.gz", ["1 1 2 3", "2 3 1"])
    _, raw = read_source(tmp_path, "s3rec", progress=False)
    assert events(raw) == [("1", "1", None), ("1", "2", None), ("1", "3", None), ("2", "3", None), ("2", "1", None)]
    assert raw.items.height == 0


def test_s3rec_bad_lines(tmp_path: Path) -> None:
    write(tmp_path / "Toys.txt", ["1 1 2 3", "2 4 x 5", "3", "1 5 6"])
    with pytest.raises(DataFormatError, match=r"Toys\.txt, line 2: expected 'user_id item_id item_id \.\.\.'"):
        read_source(tmp_path, "s3rec", progress=False)
    _, raw = read_source(tmp_path, "s3rec", on_error="skip", progress=False)
    assert raw.interactions.height == 3
    assert raw.skipped == {"Toys.txt: not 'user item ...' integers": 2, "Toys.txt: repeated user": 1}


# --------------------------------------------------------------------------------------------- LC-Rec


@pytest.fixture
def lcrec_dir(tmp_path: Path) -> Path:
    (tmp_path / "Office.inter.json").write_text(json.dumps({"0": [0, 1, 2], "1": [2, 3], "2": [1, 0, 3]}, indent=1))
    (tmp_path / "Office.item.json").write_text(json.dumps({
        "0": {"title": "Pen", "description": "", "brand": "Bic", "categories": "Office, Writing,Pens"},
        "1": {"title": "Ink", "description": "Blue ink.", "brand": "", "categories": ""},
        "2": {"title": "Pad", "description": ".", "brand": "Acme", "categories": "Office"},
    }))
    return tmp_path


def test_lcrec_reads_sequences_and_comma_categories(lcrec_dir: Path) -> None:
    _, raw = read_source(lcrec_dir, "lcrec", progress=False)
    assert [(u, i) for u, i, _ in events(raw)] == [("0", "0"), ("0", "1"), ("0", "2"), ("1", "2"), ("1", "3"),
                                                   ("2", "1"), ("2", "0"), ("2", "3")]
    pen, ink, pad = (item_row(raw, k) for k in "012")
    assert pen["categories"] == ["Office", "Writing", "Pens"] and pen["description"] is None
    assert ink["brand"] is None and ink["categories"] is None and ink["description"] == "Blue ink."
    assert pad["description"] is None  # a lone "." is a placeholder, not a description


def test_lcrec_broken_json_names_line(lcrec_dir: Path) -> None:
    path = lcrec_dir / "Office.inter.json"
    path.write_text(path.read_text().replace('"1": [', '"1" [', 1))
    with pytest.raises(DataFormatError, match=r"Office\.inter\.json, line \d+ column \d+: not valid JSON"):
        read_source(lcrec_dir, "lcrec", progress=False)


def test_lcrec_bad_entry_is_named_and_skippable(lcrec_dir: Path) -> None:
    (lcrec_dir / "Office.inter.json").write_text(json.dumps({"0": [0, 1, 2], "1": "2 3", "2": [1, None]}))
    with pytest.raises(DataFormatError, match=r"key '1': expected a non-empty list of item ids"):
        read_source(lcrec_dir, "lcrec", progress=False)
    _, raw = read_source(lcrec_dir, "lcrec", on_error="skip", progress=False)
    assert raw.interactions.height == 3
    assert raw.skipped == {"Office.inter.json: not a list of item ids": 2}


# --------------------------------------------------------------------------------------------- RecBole


@pytest.fixture
def recbole_split_dir(tmp_path: Path) -> Path:
    head = "user_id:token\titem_id_list:token_seq\titem_id:token"
    # user 0: 0 1 2 3 4 ; user 1: 5 2 6
    write(tmp_path / "Sci.train.inter", [head, "0\t0 1\t2", "0\t0\t1", "1\t5\t2"])
    write(tmp_path / "Sci.valid.inter", [head, "0\t0 1 2\t3", "1\t5\t2"])
    write(tmp_path / "Sci.test.inter", [head, "0\t0 1 2 3\t4", "1\t5 2\t6"])
    write(tmp_path / "Sci.item2index", [f"ASIN{i}\t{i}" for i in range(7)])
    write(tmp_path / "Sci.user2index", ["RA\t0", "RB\t1"])
    write(tmp_path / "Sci.text", ["item_id:token\ttext:token_seq", "ASIN0\tGlue. Tapes. Gorilla.", "ASIN6\tLid."])
    return tmp_path


def test_recbole_presplit_rebuilds_full_sequences(recbole_split_dir: Path) -> None:
    files, raw = read_source(recbole_split_dir, "recbole", progress=False)
    assert {"train", "valid", "test", "text", "item2index", "user2index"} <= set(files.files)
    assert [(u, i) for u, i, _ in events(raw)] == [("RA", f"ASIN{i}") for i in range(5)] + [
        ("RB", "ASIN5"), ("RB", "ASIN2"), ("RB", "ASIN6")]
    assert item_row(raw, "ASIN0")["title"] == "Glue. Tapes. Gorilla."
    assert raw.interactions["ts"].null_count() == 3 + 5


def test_recbole_truncated_history_is_an_error(recbole_split_dir: Path) -> None:
    head = "user_id:token\titem_id_list:token_seq\titem_id:token"
    write(recbole_split_dir / "Sci.test.inter", [head, "0\t1 2 3\t4", "1\t5 2\t6"])  # history cut to 3
    # The cut test row (length 4) is no longer than the valid row, so it is the one reported.
    with pytest.raises(DataFormatError, match=r"Sci\.test\.inter, line 2: user RA's history \+ target is not a prefix"):
        read_source(recbole_split_dir, "recbole", progress=False)


def test_recbole_single_inter_with_timestamps_and_item_file(tmp_path: Path) -> None:
    write(tmp_path / "ml.inter", ["user_id:token\titem_id:token\trating:float\ttimestamp:float",
                                  "u1\ti1\t4\t978300760", "u1\ti2\t5\t978300000.0", "u2\ti1\t3\tnever"])
    write(tmp_path / "ml.item", ["item_id:token\ttitle:token_seq\tprice:float\tyear:token",
                                 "i1\tToy Story\t\t1995", "i2\tJumanji\t9.5\t1995"])
    with pytest.raises(DataFormatError, match=r"ml\.inter, line 4: field 'timestamp'"):
        read_source(tmp_path, "recbole", progress=False)
    _, raw = read_source(tmp_path, "recbole", on_error="skip", progress=False)
    assert events(raw) == [("u1", "i1", 978300760), ("u1", "i2", 978300000)]
    assert item_row(raw, "i2")["price"] == 9.5 and item_row(raw, "i1")["title"] == "Toy Story"
    assert any("columns not used: year" in n for n in raw.notes)


# --------------------------------------------------------------------------------------------- ReChorus


@pytest.fixture
def rechorus_dir(tmp_path: Path) -> Path:
    write(tmp_path / "train.csv", ["user_id\titem_id\ttime", "1\t1\t100", "2\t2\t90", "1\t3\t50", "1\t2\t100"])
    write(tmp_path / "dev.csv", ["user_id\titem_id\ttime\tneg_items", "1\t4\t200\t[2, 3]", "2\t1\t95\t[3]"])
    write(tmp_path / "test.csv", ["user_id\titem_id\ttime\tneg_items", "1\t1\t300\t[2]", "2\t4\t95\t[3]"])
    write(tmp_path / "item_meta.csv", ["item_id\ti_category\ti_brand\tr_complement", "1\t3\t0\t[2]", "2\t0\t0\t[]"])
    write(tmp_path / "Office.item2index", ["ASINA\t1", "ASINB\t2", "ASINC\t3", "ASIND\t4"])
    write(tmp_path / "Office.text", ["id\ttext", "ASINA\tStapler Office Acme", "ASINC\tTape"])
    return tmp_path


def test_rechorus_reads_splits_in_order_with_metadata(rechorus_dir: Path) -> None:
    files, raw = read_source(rechorus_dir, "rechorus", progress=False)
    assert files.category == "Office"
    assert events(raw) == [("1", "ASINA", 100), ("2", "ASINB", 90), ("1", "ASINC", 50), ("1", "ASINB", 100),
                           ("1", "ASIND", 200), ("2", "ASINA", 95), ("1", "ASINA", 300), ("2", "ASIND", 95)]
    a, b = item_row(raw, "ASINA"), item_row(raw, "ASINB")
    assert a["attributes"] == ["i_category_3"] and a["title"] == "Stapler Office Acme"
    assert b["attributes"] is None and b["title"] is None
    assert item_row(raw, "ASINC")["title"] == "Tape"


def test_rechorus_bad_time(rechorus_dir: Path) -> None:
    write(rechorus_dir / "dev.csv", ["user_id\titem_id\ttime\tneg_items", "1\t4\t2x\t[2, 3]", "2\t1\t95\t[3]"])
    with pytest.raises(DataFormatError, match=r"dev\.csv, line 2: field 'time' is '2x'; expected an integer"):
        read_source(rechorus_dir, "rechorus", progress=False)
    _, raw = read_source(rechorus_dir, "rechorus", on_error="skip", progress=False)
    assert raw.skipped == {"dev.csv: bad time": 1} and raw.interactions.height == 7


# --------------------------------------------------------------------------------------------- detection


def test_every_format_has_a_detection_rank() -> None:
    assert {fmt for fmt, _ in PRIORITY} == set(FORMATS)
    assert set(FORMATS) == {"raw2014", "raw2018", "raw2023", "s3rec", "lcrec", "recbole", "rechorus"}


@pytest.mark.parametrize("fixture, fmt", [("raw2014_dir", "raw2014"), ("s3rec_dir", "s3rec"), ("lcrec_dir", "lcrec"),
                                          ("recbole_split_dir", "recbole"), ("rechorus_dir", "rechorus")])
def test_detect_each_fixture(fixture: str, fmt: str, request: pytest.FixtureRequest) -> None:
    assert detect_format(request.getfixturevalue(fixture)) == fmt


def test_detection_priority_between_formats_of_the_same_data(s3rec_dir: Path) -> None:
    # S3-Rec + LC-Rec interactions only: S3-Rec has attributes/ASINs, so it wins.
    (s3rec_dir / "Toys.inter.json").write_text(json.dumps({"0": [0, 1, 2]}))
    assert detect_format(s3rec_dir) == "s3rec"
    # With LC-Rec item text it is the richer source.
    (s3rec_dir / "Toys.item.json").write_text(json.dumps({"0": {"title": "t"}}))
    assert detect_format(s3rec_dir) == "lcrec"
    # ReChorus (timestamps) beats LC-Rec.
    write(s3rec_dir / "train.csv", ["user_id\titem_id\ttime", "1\t1\t5"])
    assert detect_format(s3rec_dir) == "rechorus"


def test_detection_failure_lists_expected_files(tmp_path: Path) -> None:
    write(tmp_path / "notes.txt", ["hello world"])
    with pytest.raises(DataFormatError) as err:
        detect_format(tmp_path)
    msg = str(err.value)
    assert "notes.txt" in msg and "--format" in msg
    for fmt in FORMATS:
        assert fmt in msg
    assert "reviews_<Cat>_5.json" in msg and "train.csv" in msg


def test_two_categories_in_one_folder_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "reviews_Toys_5.json.gz", [review_2014("U", "A", 1)])
    write(tmp_path / "reviews_Games_5.json.gz", [review_2014("U", "A", 1)])
    with pytest.raises(DataFormatError, match="its own folder"):
        locate(tmp_path)


def test_not_a_folder(tmp_path: Path) -> None:
    path = write(tmp_path / "Toys.txt", ["1 1 2"])
    with pytest.raises(DataFormatError, match="Pass the folder that contains it"):
        detect_format(path)


def test_forced_format_without_its_files(tmp_path: Path) -> None:
    write(tmp_path / "Toys.txt", ["1 1 2"])
    with pytest.raises(DataFormatError, match=r"no files of format 'rechorus'.*train\.csv"):
        read_source(tmp_path, "rechorus", progress=False)
    with pytest.raises(ValueError, match="unknown format 'csv'"):
        read_source(tmp_path, "csv", progress=False)


def test_blank_lines_and_invalid_utf8(tmp_path: Path) -> None:
    (tmp_path / "Toys.txt").write_bytes(b"1 1 2 3\n\n2 3 \xff 1\n3 2 3\n")
    with pytest.raises(DataFormatError, match=r"Toys\.txt, line 3: not valid UTF-8"):
        read_source(tmp_path, "s3rec", progress=False)
    _, raw = read_source(tmp_path, "s3rec", on_error="skip", progress=False)
    assert raw.skipped == {"Toys.txt: blank line": 1, "Toys.txt: not UTF-8": 1}
    assert raw.interactions.height == 5


# --------------------------------------------------------------------------------------------- robustness


def test_detection_survives_a_bad_first_line(tmp_path: Path) -> None:
    good = [json.dumps({"user_id": "U1", "parent_asin": f"C{i}", "timestamp": 1000 * i}) for i in range(3)]
    write(tmp_path / "All_Beauty.jsonl", ["{not json"] + good)
    assert detect_format(tmp_path) == "raw2023"
    with pytest.raises(DataFormatError, match=r"All_Beauty\.jsonl, line 1: expected a JSON object.*--skip-bad-lines"):
        read_source(tmp_path, "raw2023", progress=False)
    _, raw = read_source(tmp_path, "raw2023", on_error="skip", progress=False)
    assert raw.skipped == {"All_Beauty.jsonl: not a JSON object": 1} and raw.interactions.height == 3
    # S3-Rec likewise
    write(tmp_path / "Toys.txt", ["1 x 2", "2 1 2 3"])
    assert locate(tmp_path).format == "raw2023"   # still the richer source ...
    (tmp_path / "All_Beauty.jsonl").unlink()
    assert detect_format(tmp_path) == "s3rec"     # ... and S3-Rec is found past its bad first line


@pytest.mark.parametrize("content, problem", [
    (b"", "the file is empty"),
    (b"\n\n", "the file is empty"),
    (b'{"rating": 5, "asin": "A"}\n', "line 1: a JSON object without 'user_id' (it has rating, asin)"),
    (b"[1, 2]\n", "line 1: not a JSON object"),
])
def test_a_broken_jsonl_is_named_instead_of_no_known_format(tmp_path: Path, content: bytes, problem: str) -> None:
    (tmp_path / "Cat.jsonl").write_bytes(content)
    with pytest.raises(DataFormatError) as err:
        detect_format(tmp_path)
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'Cat.jsonl'} is named like raw2023 reviews") and problem in msg
    assert "\n" not in msg and "--format" in msg
    with pytest.raises(DataFormatError, match="is named like raw2023 reviews"):
        read_source(tmp_path, "raw2023", progress=False)


def test_a_broken_file_beside_a_readable_format_is_noted(s3rec_dir: Path) -> None:
    write(s3rec_dir / "Toys.jsonl", ["oops"])
    files = locate(s3rec_dir)
    assert files.format == "s3rec"
    assert files.notes == (f"not read: {s3rec_dir / 'Toys.jsonl'} is named like raw2023 reviews (<Cat>.jsonl[.gz]) "
                           "but line 1: not a JSON object ('oops'); fix the file, or remove it if it holds other data",)


def test_only_the_first_lines_are_sniffed(tmp_path: Path) -> None:
    from genrec.data.readers.common import SNIFF_LINES

    good = json.dumps({"user_id": "U1", "parent_asin": "C1", "timestamp": 1})
    write(tmp_path / "Cat.jsonl", ["junk"] * SNIFF_LINES + [good])
    with pytest.raises(DataFormatError, match=rf"line 1: not a JSON object \('junk'\) \(nor do the next "
                                              rf"{SNIFF_LINES - 1} lines fit\)"):
        detect_format(tmp_path)


def test_out_of_range_timestamps_are_bad_lines_in_every_timed_format(tmp_path: Path, rechorus_dir: Path) -> None:
    write(rechorus_dir / "dev.csv", ["user_id\titem_id\ttime", f"1\t4\t{10 ** 30}", "2\t1\t95"])
    with pytest.raises(DataFormatError, match=r"dev\.csv, line 2: field 'time' .*int64 range"):
        read_source(rechorus_dir, "rechorus", progress=False)
    _, raw = read_source(rechorus_dir, "rechorus", on_error="skip", progress=False)
    assert raw.skipped == {"dev.csv: bad time": 1}

    folder = tmp_path / "recbole"
    folder.mkdir()
    write(folder / "ml.inter", ["user_id:token\titem_id:token\ttimestamp:float", "u1\ti1\t1e30", "u1\ti2\t5.9"])
    with pytest.raises(DataFormatError, match=r"ml\.inter, line 2: field 'timestamp'.*int64 range"):
        read_source(folder, "recbole", progress=False)
    _, raw = read_source(folder, "recbole", on_error="skip", progress=False)
    assert events(raw) == [("u1", "i2", 5)]

    folder = tmp_path / "raw2018"
    folder.mkdir()
    write(folder / "Toys_5.json", [json.dumps({"reviewerID": "U", "asin": "A", "unixReviewTime": -(2 ** 64)})])
    with pytest.raises(DataFormatError, match=r"Toys_5\.json, line 1: field 'unixReviewTime'.*int64 range"):
        read_source(folder, "raw2018", progress=False)


def test_deep_nesting_is_a_bad_line_or_a_named_file_error(tmp_path: Path, lcrec_dir: Path) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    write(tmp_path / "Toys_5.json", [review_2014("U1", "A1", 1), deep, review_2014("U1", "A2", 2)])
    with pytest.raises(DataFormatError, match=r"Toys_5\.json, line 2: expected a JSON object"):
        read_source(tmp_path, "raw2018", progress=False)
    _, raw = read_source(tmp_path, "raw2018", on_error="skip", progress=False)
    assert raw.skipped == {"Toys_5.json: not a JSON object": 1} and raw.interactions.height == 2
    (lcrec_dir / "Office.item.json").write_text('{"0": ' + deep + "}")
    with pytest.raises(DataFormatError, match=r"Office\.item\.json: JSON nested deeper"):
        read_source(lcrec_dir, "lcrec", progress=False)


# --------------------------------------------------------------------------------------------- RecBole fast path


@pytest.mark.parametrize("lines", [
    ["user_id:token\titem_id:token\ttimestamp:float", " u1 \ti1\t978300760", "u1\ti2\t978300000.9", "u2\ti1\t-5.5",
     "u2\ti3\t1e3", "u3\ti2\t7\r"],                                              # spaces, fractions, CRLF
    ["item_id:token\tuser_id:token", "i1\tu1", "i2\tu1", "i1\tu2"],              # no timestamp, other column order
])
def test_recbole_polars_path_equals_the_line_reader(tmp_path: Path, lines: list[str]) -> None:
    """A well-formed .inter takes the polars path (prepare at 10M events in seconds); it must give the line
    reader's rows, values and order exactly."""
    from genrec.data.readers import ReadContext
    from genrec.data.readers.recbole import _read_single, _read_single_fast

    path = write(tmp_path / "x.inter", lines)
    fast = _read_single_fast(path, ReadContext(progress=False))
    assert fast is not None
    slow = _read_single(path, ReadContext(progress=False), lambda u: u, lambda i, p, n: i).frame()
    assert fast.schema == slow.schema and fast.to_dicts() == slow.to_dicts()
    for gz in (False, True):
        name = "y.inter.gz" if gz else "y.inter"
        sub = tmp_path / name.replace(".", "_")
        sub.mkdir()
        write(sub / name, lines)
        _, raw = read_source(sub, "recbole", progress=False)
        assert raw.interactions.to_dicts() == slow.to_dicts() and raw.skipped == {}


@pytest.mark.parametrize("bad", ["u9\t\t5", "u9\ti1", "u9\ti1\t5\t6", "u9\ti1\tnan", "u9\ti1\t1e30", ""])
def test_recbole_lines_the_polars_path_cannot_read_go_to_the_line_reader(tmp_path: Path, bad: str) -> None:
    """An empty id, a ragged row, a non-finite or out-of-range time, a blank line: the line reader's error
    (file + line) or, with on_error=skip, its count, exactly as before the polars path existed."""
    from genrec.data.readers import ReadContext
    from genrec.data.readers.recbole import _read_single_fast

    write(tmp_path / "x.inter", ["user_id:token\titem_id:token\ttimestamp:float", "u1\ti1\t1", bad, "u2\ti2\t2"])
    assert _read_single_fast(tmp_path / "x.inter", ReadContext(progress=False)) is None
    _, raw = read_source(tmp_path, "recbole", on_error="skip", progress=False)
    assert events(raw) == [("u1", "i1", 1), ("u2", "i2", 2)] and sum(raw.skipped.values()) == 1
    if bad:
        with pytest.raises(DataFormatError, match=r"x\.inter, line 3"):
            read_source(tmp_path, "recbole", progress=False)


# --------------------------------------------------------------------------------------------- JSON-lines fast path
GOOD_2023 = ['{"rating": 5.0, "user_id": " U1 ", "parent_asin": "B01", "asin": "x", "timestamp": 1588687728923, '
             '"images": [{"small_image_url": "u"}], "text": "has \\"user_id\\": in it"}',
             '{"user_id":"U2","parent_asin":"B02","timestamp":-1500}',       # negative ms floor like //
             '{"user_id": "U1", "parent_asin": "B02", "timestamp": 1588687728000}\r',
             '{"timestamp": 7, "parent_asin": "B01", "user_id": "U3"}']


@pytest.mark.parametrize("gz", [False, True])
def test_raw2023_polars_path_equals_the_line_reader(tmp_path: Path, gz: bool) -> None:
    from genrec.data.readers import ReadContext
    from genrec.data.readers.amazon_raw import _R2023, _read_reviews, _read_reviews_fast

    path = write(tmp_path / ("Cat.jsonl.gz" if gz else "Cat.jsonl"), GOOD_2023)
    fast = _read_reviews_fast(_R2023, path, ReadContext(progress=False))
    assert fast is not None
    slow = _read_reviews(_R2023, path, ReadContext(progress=False)).frame()
    assert fast.schema == slow.schema and fast.to_dicts() == slow.to_dicts()
    assert events(read_source(tmp_path, "raw2023", progress=False)[1])[:2] == [
        ("U1", "B01", 1588687728), ("U2", "B02", -2)]


@pytest.mark.parametrize("bad", ['{"user_id": 5, "parent_asin": "B9", "timestamp": 1}',       # id as a number
                                 '{"user_id": true, "parent_asin": "B9", "timestamp": 1}',
                                 '{"user_id": " ", "parent_asin": "B9", "timestamp": 1}',
                                 '{"user_id": "U9", "asin": "B9", "timestamp": 1}',
                                 '{"user_id": "U9", "parent_asin": "B9", "timestamp": "1"}',   # time as a string
                                 '{"user_id": "U9", "parent_asin": "B9", "timestamp": 1.5}',
                                 '{"user_id": "U9", "parent_asin": "B9"}',
                                 '[1, 2]', "not json", ""])
def test_raw2023_lines_the_polars_path_cannot_read_go_to_the_line_reader(tmp_path: Path, bad: str) -> None:
    """Whatever the polars path would coerce or reject, the line reader decides, exactly as before."""
    from genrec.data.readers import ReadContext
    from genrec.data.readers.amazon_raw import _R2023, _read_reviews, _read_reviews_fast

    path = write(tmp_path / "Cat.jsonl", [GOOD_2023[1], bad, GOOD_2023[3]])
    assert _read_reviews_fast(_R2023, path, ReadContext(progress=False)) is None
    ctx = ReadContext(progress=False, on_error="skip")
    slow = _read_reviews(_R2023, path, ctx)
    _, raw = read_source(tmp_path, "raw2023", on_error="skip", progress=False)
    assert events(raw) == list(slow.frame().select("user", "item", "ts").iter_rows())
