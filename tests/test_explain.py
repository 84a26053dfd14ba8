"""genrec.explain: purity against hand-computed values, the per-code table, PCA, and `genrec explain` on a
tiny synthetic run whose first digit is exactly the category."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from genrec.cli import main
from genrec.data.schema import ITEM_SCHEMA, SEQUENCE_SCHEMA
from genrec.explain import category_label, code_table, codes_json, pca_2d, purity, random_purity
from genrec.io import write_manifest
from genrec.tokenizer.semantic_ids import add_dedup_level, write_semantic_ids

CATEGORIES = ("Kettles", "Lamps", "Tents")
N_ITEMS = 41                 # odd: the categories hold 14/14/13 items
N_USERS = 23
SECOND_DIGIT = 7             # codebook size of the random second digit


# ---------------------------------------------------------------------- purity by hand
def test_purity_by_hand():
    groups = np.array([0, 0, 0, 1, 1])
    labels = np.array([0, 0, 1, 1, 1])                  # code 0: A A B, code 1: B B
    assert purity(groups, labels) == pytest.approx((2 + 2) / 5)
    assert purity(labels, labels) == 1.0                 # codes that are the categories
    assert purity(np.zeros(5, int), labels) == pytest.approx(3 / 5)    # one code: the largest category's share
    assert purity(groups, np.array([0, -1, 1, 1, -1])) == pytest.approx((1 + 1) / 3)   # unknown labels left out
    assert purity(groups, np.full(5, -1)) is None


def test_random_codes_keep_the_sizes_and_are_seeded():
    labels = np.repeat(np.arange(3), [14, 14, 13])
    mean, std = random_purity(labels, labels, 50, (0, 0))
    assert mean < 0.7 and std > 0                        # aligned codes: 1.0; shuffled: far lower
    assert random_purity(labels, labels, 50, (0, 0)) == (mean, std)          # the same seed, the same draws
    one = np.zeros(len(labels), int)
    assert random_purity(one, labels, 5, 1)[0] == pytest.approx(purity(one, labels))   # one code: nothing to shuffle


def test_category_label():
    assert category_label(["Demo", "Outdoors", "Tents"]) == "Tents"
    assert category_label(["Demo", "Outdoors", "Tents"], 1) == "Outdoors"
    assert category_label(["Demo"], 2) is None and category_label(None) is None and category_label([" "]) is None


def test_code_table_by_hand():
    codes = np.array([[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [2, 0]])     # 6 items, codebooks 3 and 5
    categories = ["A", "A", "B", None, "B", "B"]
    popularity = np.array([5, 9, 1, 0, 3, 3])
    table = code_table(codes, (3, 5), categories=categories, popularity=popularity, top_items=2, n_random=4)
    first, second = table["digits"]
    assert [c["code"] for c in first["codes"]] == [0, 1, 2] and first["used"] == 3 and second["used"] == 3
    c0 = first["codes"][0]
    assert c0["n_items"] == 3 and c0["purity"] == pytest.approx(2 / 3)
    assert c0["top_items"] == [1, 0]                                       # most popular first
    assert c0["top_categories"] == [{"category": "A", "n_items": 2}, {"category": "B", "n_items": 1}]
    assert (first["codes"][1]["purity"] == 1.0
            and first["codes"][1]["top_categories"] == [{"category": "B", "n_items": 1}])
    assert first["purity"] == pytest.approx((2 + 1 + 1) / 5)                 # item 3 has no category
    assert second["prefix_purity"] == 1.0 and second["dedup"] and not first["dedup"]
    assert table["n_categories"] == 2 and table["n_items_with_category"] == 5
    named = codes_json(table, ["a", "b", "c", "d", "e", "f"], ["TA", None, "TC", "TD", "TE", "TF"])
    assert named["digits"][0]["codes"][0]["top_items"] == [
        {"item_id": "b", "title": None}, {"item_id": "a", "title": "TA"}]
    tie = code_table(codes, (3, 5), categories=categories, top_items=3)["digits"][0]["codes"][0]
    assert tie["top_items"] == [0, 1, 2]                                    # no popularity: item order


def test_pca_2d_finds_the_planted_plane():
    rng = np.random.default_rng(3)
    plane = rng.normal(size=(200, 2)) * [5.0, 2.0]
    basis = np.linalg.qr(rng.normal(size=(9, 2)))[0]                          # 2 orthonormal directions in 9-d
    x = plane @ basis.T + 0.01 * rng.normal(size=(200, 9)) + 4.0
    xy = pca_2d(x)
    _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    reference = (x - x.mean(0)) @ vt[:2].T
    for axis in range(2):
        assert abs(np.corrcoef(xy[:, axis], reference[:, axis])[0, 1]) == pytest.approx(1.0, abs=1e-9)
    assert xy[:, 0].var() > xy[:, 1].var()
    assert np.array_equal(pca_2d(x), xy)
    assert pca_2d(np.arange(6.0).reshape(6, 1)).shape == (6, 2)               # one feature: second axis is 0


# ---------------------------------------------------------------------- the stage on a tiny run
def write_tiny_run(run: Path, features: bool = True) -> dict:
    """dataset/ (41 items in 3 categories, 23 users), sid/ (digit 0 = category, digit 1 random, dedup), features/."""
    rng = np.random.default_rng(0)
    category = np.arange(N_ITEMS) % len(CATEGORIES)
    titles = [f"{CATEGORIES[c][:-1]} model {i}" for i, c in enumerate(category)]
    items = pl.DataFrame([{"item_id": i, "source_id": f"S{i:03d}", "title": titles[i], "description": None,
                           "brand": None, "categories": ["Home", CATEGORIES[c]], "price": None, "image": None,
                           "attributes": None} for i, c in enumerate(category)], schema=ITEM_SCHEMA)
    seqs = [{"user_id": u, "source_user_id": f"U{u}", "timestamps": None,
             "item_ids": rng.choice(N_ITEMS, size=int(rng.integers(3, 8)), replace=False).tolist()}
            for u in range(N_USERS)]
    dataset = run / "dataset"
    dataset.mkdir(parents=True)
    items.write_parquet(dataset / "items.parquet")
    pl.DataFrame(seqs, schema=SEQUENCE_SCHEMA).write_parquet(dataset / "sequences.parquet")
    write_manifest(dataset, "prepare", files=["items.parquet", "sequences.parquet"], name="tiny",
                   n_users=N_USERS, n_items=N_ITEMS, n_interactions=sum(len(s["item_ids"]) for s in seqs))
    codes = add_dedup_level(np.stack([category, rng.integers(SECOND_DIGIT, size=N_ITEMS)], axis=1))
    (run / "sid").mkdir()
    write_semantic_ids(run / "sid", codes, (len(CATEGORIES), SECOND_DIGIT, int(codes[:, 2].max()) + 1),
                       extra_files=[], method="rqkmeans", modalities=["fused"])
    if features:
        (run / "features").mkdir()
        centres = rng.normal(size=(len(CATEGORIES), 6)) * 4
        np.save(run / "features" / "fused.npy", (centres[category] + rng.normal(size=(N_ITEMS, 6))).astype(np.float32))
    popularity = np.bincount(np.concatenate([s["item_ids"][:-2] for s in seqs]), minlength=N_ITEMS)
    return {"codes": codes, "titles": titles, "popularity": popularity, "category": category}


def test_explain_stage_writes_a_self_contained_page(tmp_path, capsys):
    run = tmp_path / "run"
    truth = write_tiny_run(run)
    assert main(["explain", "--run", str(run), "--n-random", "30"]) == 0
    page = (run / "explain.html").read_text(encoding="utf-8")
    data = json.loads((run / "explain.json").read_text(encoding="utf-8"))

    first, second, dedup = data["digits"]
    assert first["purity"] == 1.0 and first["random_purity"] < 0.7          # hand-checkable: codes = categories
    assert second["prefix_purity"] == 1.0 and dedup["dedup"]
    assert 0 < second["purity"] < 1 and data["n_random"] == 30
    code = next(c for c in first["codes"] if c["code"] == 1)
    members = np.flatnonzero(truth["codes"][:, 0] == 1)
    best = members[np.lexsort((members, -truth["popularity"][members]))][:5]
    assert [it["item_id"] for it in code["top_items"]] == [f"S{i:03d}" for i in best]
    assert code["top_categories"] == [{"category": "Lamps", "n_items": len(members)}]
    assert data["map_features"] == "fused"

    # One file: plots embedded, nothing loaded from elsewhere.
    assert page.count('src="data:image/png;base64,') == 2                  # purity plot and map
    assert "://" not in page and not re.search(r"""(src|href)=["'](?!data:)""", page)
    assert "<script" not in page
    assert "Lamps (14)" in page and truth["titles"][best[0]] in page
    assert "wrote" in capsys.readouterr().out


def test_explain_without_features_or_categories(tmp_path, capsys):
    run = tmp_path / "run"
    write_tiny_run(run, features=False)
    assert main(["explain", "--run", str(run), "--category-depth", "4", "--out", str(tmp_path / "x.html")]) == 0
    page = (tmp_path / "x.html").read_text(encoding="utf-8")
    assert "run <code>genrec embed</code> for the map" in page and "purity is not defined" in page
    assert json.loads((tmp_path / "x.json").read_text())["digits"][0]["purity"] is None
    capsys.readouterr()
    assert main(["explain", "--run", str(run), "--features", "text"]) == 2
    assert "features/text.npy not found" in capsys.readouterr().err


def test_explain_needs_semantic_ids(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["explain", "--run", str(tmp_path / "run")]) == 2
    assert "genrec tokenize" in capsys.readouterr().err
