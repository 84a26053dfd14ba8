"""Item attributes as model inputs: each item's tags as ids into one vocabulary.

An item's tags are its ``attributes`` (S3-Rec's category and brand ids), its ``categories`` and its
``brand`` from ``items.parquet``, each kind prefixed so equal strings of two kinds stay apart. They are
catalogue metadata, not interactions, so building the vocabulary from every item leaks nothing from a
test split. A rare item shares its tags with popular ones, which is what the model's attribute
embedding (``data.use_attributes``) is for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

PAD = 0   # attribute id of an empty slot; tag i of the vocabulary is id i + 1


def item_tags(items: pl.DataFrame) -> list[list[str]]:
    """Every item's distinct tags in ``items.parquet`` order: "attr:<a>", "category:<c>", "brand:<b>"."""
    n = items.height

    def column(name: str) -> list:
        return items[name].to_list() if name in items.columns else [None] * n

    tags = []
    for attrs, cats, brand in zip(column("attributes"), column("categories"), column("brand")):
        row = [f"attr:{a}" for a in attrs or ()] + [f"category:{c}" for c in cats or ()]
        if brand:
            row.append(f"brand:{brand}")
        tags.append(list(dict.fromkeys(row)))      # distinct, first occurrence kept
    return tags


@dataclass
class AttributeTable:
    ids: np.ndarray          # (N, A) int64 attribute ids, PAD-filled on the right; A = the most tags of an item
    vocab: list[str]         # id i + 1 is vocab[i]

    @property
    def n_attributes(self) -> int:
        return len(self.vocab)

    @property
    def items_without(self) -> int:
        return int((self.ids == PAD).all(axis=1).sum())


def attribute_table(items: pl.DataFrame) -> AttributeTable:
    """The catalogue's tags as an (N, A) id table over a sorted vocabulary (deterministic for one dataset)."""
    tags = item_tags(items)
    vocab = attribute_vocab(tags)
    ids, _ = attribute_ids(tags, vocab, max((len(row) for row in tags), default=0))
    return AttributeTable(ids, vocab)


def attribute_vocab(tags: list[list[str]]) -> list[str]:
    """The sorted distinct tags of a catalogue (``item_tags``): id i + 1 is vocab[i]."""
    return sorted({t for row in tags for t in row})


def attribute_ids(tags: list[list[str]], vocab: list[str], width: int) -> tuple[np.ndarray, dict]:
    """Each item's tags as ids into ``vocab`` (id i + 1 is vocab[i]): an (N, width) table, PAD-filled on the
    right, and counts of what did not fit. A tag outside the vocabulary has no learned embedding, so it is
    left out; tags past ``width`` (the model's attributes per item) are cut, in the item's tag order."""
    index = {t: i + 1 for i, t in enumerate(vocab)}
    ids = np.full((len(tags), width), PAD, dtype=np.int64)
    unknown = cut = 0
    for i, row in enumerate(tags):
        known = [index[t] for t in row if t in index]
        unknown += len(row) - len(known)
        cut += max(len(known) - width, 0)
        ids[i, :min(len(known), width)] = known[:width]
    counts = {"items_with_tags": int((ids != PAD).any(axis=1).sum()) if width else 0,
              "unknown_tags": unknown, "tags_over_width": cut}
    return ids, counts
