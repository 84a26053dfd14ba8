"""Importing precomputed matrices: explicit row maps, shape validation, the DeCoRec .feat files."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from conftest import require_shared
from genrec.features.precomputed import ITEM_ID_ROWS, PrecomputedConfig, load_precomputed, read_row_map

DECOREC = "Scientific_DeCoRec_mm"
DECOREC_DIM = 512


def items_of(source_ids: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"item_id": list(range(len(source_ids))), "source_id": source_ids})


def test_npy_with_dense_item_rows(tmp_path):
    m = np.arange(15, dtype=np.float64).reshape(5, 3)
    np.save(tmp_path / "f.npy", m)
    res = load_precomputed(PrecomputedConfig("extra", str(tmp_path / "f.npy")), items_of(list("abcde")))
    np.testing.assert_array_equal(res.features, m.astype(np.float32))
    assert res.features.dtype == np.float32 and res.mask.all()
    with pytest.raises(ValueError, match="4 rows but the dataset has 5 items"):
        np.save(tmp_path / "g.npy", m[:4])
        load_precomputed(PrecomputedConfig("extra", str(tmp_path / "g.npy")), items_of(list("abcde")))
    with pytest.raises(ValueError, match="has 3 columns but the config says dim=4"):
        load_precomputed(PrecomputedConfig("extra", str(tmp_path / "f.npy"), dim=4), items_of(list("abcde")))


def test_raw_file_with_row_map_and_unmapped_items(tmp_path):
    m = np.arange(28, dtype=np.float32).reshape(7, 4)                  # 7 rows in the source's own order
    m.tofile(tmp_path / "x.feat")
    (tmp_path / "map.tsv").write_text("s0\t6\ns1\t0\n\ns2\t3\ns9\t1\n")  # s9 is not in the dataset
    items = items_of(["s2", "s0", "absent", "s1"])
    res = load_precomputed(PrecomputedConfig("image", str(tmp_path / "x.feat"), row_map=str(tmp_path / "map.tsv"),
                                             dim=4), items)
    np.testing.assert_array_equal(res.features[[0, 1, 3]], m[[3, 6, 0]])
    assert res.mask.tolist() == [True, True, False, True]
    assert np.isnan(res.features[2]).all()
    assert res.info["items_unmapped"] == 1 and res.info["unmapped_examples"] == ["absent"]
    assert res.info["rows_in_file"] == 7 and res.info["file_rows_unused"] == 4


def test_shape_and_map_errors_name_file_and_line(tmp_path):
    np.zeros(10, np.float32).tofile(tmp_path / "bad.feat")              # 40 bytes: not rows of 3 floats
    with pytest.raises(ValueError, match=r"40 bytes is not a whole number of rows of 3 x float32"):
        load_precomputed(PrecomputedConfig("t", str(tmp_path / "bad.feat"), dim=3), items_of(["a"]))
    with pytest.raises(ValueError, match="needs `dim`"):
        PrecomputedConfig("t", str(tmp_path / "bad.feat"))
    with pytest.raises(ValueError, match="must match"):
        PrecomputedConfig("Text Features", "x.npy")
    (tmp_path / "m1.tsv").write_text("a\t0\nb zero\n")
    with pytest.raises(ValueError, match=r"m1.tsv:2: expected"):
        read_row_map(tmp_path / "m1.tsv")
    (tmp_path / "m2.tsv").write_text("a\t0\na\t1\n")
    with pytest.raises(ValueError, match=r"m2.tsv:2: source id 'a' appears twice"):
        read_row_map(tmp_path / "m2.tsv")
    np.zeros((2, 2), np.float32).tofile(tmp_path / "two.feat")
    (tmp_path / "m3.tsv").write_text("a\t5\n")
    with pytest.raises(ValueError, match=r"outside \[0, 2\)"):
        load_precomputed(PrecomputedConfig("t", str(tmp_path / "two.feat"), row_map=str(tmp_path / "m3.tsv"), dim=2),
                         items_of(["a"]))
    np.save(tmp_path / "nan.npy", np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="NaN/inf .* row 0"):
        load_precomputed(PrecomputedConfig("t", str(tmp_path / "nan.npy")), items_of(["a"]))
    with pytest.raises(FileNotFoundError, match="fix its `path`"):
        load_precomputed(PrecomputedConfig("t", str(tmp_path / "absent.npy")), items_of(["a"]))


def test_command_line_spec():
    cfg = PrecomputedConfig.from_spec("name=text; path=a.feat1CLS; dim=512; row_map=a.item2index")
    assert cfg == PrecomputedConfig("text", "a.feat1CLS", row_map="a.item2index", dim=512)
    with pytest.raises(ValueError, match="key=value"):
        PrecomputedConfig.from_spec("name=text;colour=red")
    with pytest.raises(ValueError, match="needs at least"):
        PrecomputedConfig.from_spec("name=text")


@pytest.mark.realdata
def test_decorec_feature_files_align_by_asin():
    folder = require_shared(DECOREC)
    index = read_row_map(folder / "Scientific.item2index")
    raw = np.fromfile(folder / "Scientific.feat3CLS", dtype=np.float32).reshape(-1, DECOREC_DIM)
    asins = sorted(index)[::61] + ["B000NOTREAL"]                      # a subset in another order + a stranger
    res = load_precomputed(PrecomputedConfig("image", str(folder / "Scientific.feat3CLS"),
                                             row_map=str(folder / "Scientific.item2index"), dim=DECOREC_DIM),
                           items_of(asins))
    assert res.features.shape == (len(asins), DECOREC_DIM)
    np.testing.assert_array_equal(res.features[:-1], raw[[index[a] for a in asins[:-1]]])
    assert res.mask.tolist() == [True] * (len(asins) - 1) + [False]
    assert res.info["rows_in_file"] == 1585
    with pytest.raises(ValueError, match="rows cannot be dense item ids"):
        load_precomputed(PrecomputedConfig("image", str(folder / "Scientific.feat3CLS"), row_map=ITEM_ID_ROWS,
                                           dim=DECOREC_DIM), items_of(asins))
    with pytest.raises(ValueError, match="check `dim`"):
        load_precomputed(PrecomputedConfig("image", str(folder / "Scientific.feat3CLS"), dim=500), items_of(asins))
