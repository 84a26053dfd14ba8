"""Fixtures for the embed-stage tests: a tiny hand-made dataset folder and the (small) demo dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image, ImageDraw

from genrec.data.dataset import DATASET_DIR, load_dataset
from genrec.data.schema import ITEM_SCHEMA, SEQUENCE_SCHEMA
from genrec.io import write_manifest

N_ITEMS = 37            # odd on purpose: off-by-one row mistakes show up
N_USERS = 23
LEAVES = ("Pens", "Tents", "Knives")
LEAF_COLOURS = {"Pens": (30, 60, 200), "Tents": (40, 160, 60), "Knives": (200, 40, 40)}
# Rows with a deliberately broken image reference, and why (expected reasons in the tests).
URL_ROW, MISSING_FILE_ROW, CORRUPT_ROW, NULL_IMAGE_ROW = 2, 4, 6, 8
EMPTY_TEXT_ROW = 11     # every text field null -> no text for this item


def draw_product(leaf: str, jitter: int, size: int = 48) -> Image.Image:
    """A tiny picture whose shape and colour depend on the leaf category."""
    im = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(im)
    c = LEAF_COLOURS[leaf]
    m = 6 + jitter % 5
    if leaf == "Pens":
        d.rectangle((size // 2 - 4, m, size // 2 + 4, size - m), fill=c)
    elif leaf == "Tents":
        d.polygon([(m, size - m), (size // 2, m), (size - m, size - m)], fill=c)
    else:
        d.ellipse((m, size // 3, size - m, 2 * size // 3), fill=c)
    return im


def write_tiny_dataset(run: Path, seed: int = 0) -> Path:
    """RUN/dataset with 37 items (3 leaves), PNG images with 4 broken references, 23 users; returns RUN."""
    rng = np.random.default_rng(seed)
    folder = run / DATASET_DIR
    img_dir = run / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(N_ITEMS):
        leaf = LEAVES[i % len(LEAVES)]
        sid = f"SRC{i:03d}"
        path = img_dir / f"{sid}.png"
        if i not in (URL_ROW, MISSING_FILE_ROW, CORRUPT_ROW, NULL_IMAGE_ROW):
            draw_product(leaf, i).save(path)
        image = {URL_ROW: "https://images.example.com/x.jpg", MISSING_FILE_ROW: str(img_dir / "gone.png"),
                 NULL_IMAGE_ROW: None}.get(i, str(path))
        if i == CORRUPT_ROW:
            path.write_bytes(b"this is not a png file")
        rows.append({
            "item_id": i, "source_id": sid,
            "title": None if i == EMPTY_TEXT_ROW else f"{leaf[:-1]} model {i}",
            "description": None if i in (EMPTY_TEXT_ROW, 7) else f"A good {leaf.lower()[:-1]} for everyday use.",
            "brand": None if i in (EMPTY_TEXT_ROW, 3) else ("Acme", "Zenith")[i % 2],
            "categories": None if i == EMPTY_TEXT_ROW else ["Root", leaf],
            "price": None if i in (EMPTY_TEXT_ROW, 5) else 3.0 + i,
            "image": image, "attributes": None,
        })
    items = pl.DataFrame(rows, schema=ITEM_SCHEMA)
    seqs = []
    for u in range(N_USERS):
        n = int(rng.integers(3, 7))
        seq = rng.choice(N_ITEMS, size=n, replace=False).astype(np.int32).tolist()
        seqs.append({"user_id": u, "source_user_id": f"U{u}", "item_ids": seq, "timestamps": None})
    sequences = pl.DataFrame(seqs, schema=SEQUENCE_SCHEMA)
    folder.mkdir(parents=True, exist_ok=True)
    items.write_parquet(folder / "items.parquet")
    sequences.write_parquet(folder / "sequences.parquet")
    write_manifest(folder, "prepare", files=["items.parquet", "sequences.parquet"], name="tiny",
                   n_users=N_USERS, n_items=N_ITEMS, n_interactions=int(sum(len(s["item_ids"]) for s in seqs)))
    return run


@pytest.fixture
def tiny_run(tmp_path: Path) -> Path:
    return write_tiny_dataset(tmp_path / "run")


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory):
    """A 300-item demo catalogue through the real 2018 reader (generator and prepare from genrec.data)."""
    try:
        from genrec.data.demo import DemoConfig, write_demo_source
        from genrec.data.prepare import PrepareConfig, prepare
    except ImportError as e:  # pragma: no cover - only before the data modules are merged
        pytest.skip(f"genrec.data.demo / genrec.data.prepare not importable ({e}); the demo test needs them")
    root = tmp_path_factory.mktemp("demo")
    source = write_demo_source(root / "source", seed=0, config=DemoConfig(n_items=300, n_users=600))
    prepare(source, root / "run", PrepareConfig(progress=False))
    return load_dataset(root / "run")


def leaf_sample(dataset, per_leaf: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``per_leaf`` random item ids from every leaf category (last element of `categories`), and their leaves."""
    leaves = np.array([c[-1] for c in dataset.items["categories"].to_list()])
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(leaves == leaf), per_leaf, replace=False)
                          for leaf in np.unique(leaves)])
    return idx, leaves[idx]


def intra_inter_cosine(x: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean cosine similarity of pairs with the same label (excluding self-pairs) and with different labels."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = x @ x.T
    same = labels[:, None] == labels[None, :]
    off_diag = ~np.eye(len(x), dtype=bool)
    return float(sim[same & off_diag].mean()), float(sim[~same].mean())


@pytest.fixture(scope="session")
def category_separation():
    """``f(dataset, per_leaf, encode) -> (intra, inter)`` on a leaf-stratified sample of ``dataset``."""

    def measure(dataset, per_leaf: int, encode) -> tuple[float, float]:
        idx, leaves = leaf_sample(dataset, per_leaf)
        return intra_inter_cosine(encode(idx), leaves)

    return measure
