"""genrec.data.attributes: every item's tags (attributes, categories, brand) as ids into one vocabulary."""

from __future__ import annotations

import numpy as np
import polars as pl

from genrec.data.attributes import PAD, attribute_ids, attribute_table, item_tags


def _items() -> pl.DataFrame:
    return pl.DataFrame({
        "item_id": [0, 1, 2, 3],
        "brand": ["acme", None, "acme", None],
        "categories": [["Beauty", "Nails"], ["Beauty"], None, None],
        "attributes": [["attr_4", "attr_4"], None, ["attr_17"], None],
    }, schema_overrides={"item_id": pl.Int32})


def test_an_items_tags_are_its_attributes_categories_and_brand_kept_apart_and_distinct():
    assert item_tags(_items()) == [["attr:attr_4", "category:Beauty", "category:Nails", "brand:acme"],
                                   ["category:Beauty"], ["attr:attr_17", "brand:acme"], []]
    assert item_tags(pl.DataFrame({"item_id": [0], "brand": ["x"]})) == [["brand:x"]]   # absent columns: none


def test_the_table_pads_on_the_right_and_shares_ids_across_items():
    table = attribute_table(_items())
    assert table.vocab == sorted(table.vocab) and table.n_attributes == 5
    index = {t: i + 1 for i, t in enumerate(table.vocab)}
    assert table.ids.shape == (4, 4) and table.ids.dtype == np.int64
    np.testing.assert_array_equal(table.ids[1], [index["category:Beauty"], PAD, PAD, PAD])
    assert table.ids[0, 3] == table.ids[2, 1] == index["brand:acme"]          # one brand, one id
    assert (table.ids[3] == PAD).all() and table.items_without == 1


def test_new_items_map_into_a_fixed_vocabulary_without_unknown_tags_and_cut_to_the_width():
    """What `genrec add-items` gives a new item: ids of its known tags in tag order, worked by hand."""
    vocab = ["brand:acme", "category:Beauty", "category:Nails"]          # ids 1, 2, 3
    tags = [["category:Nails", "category:Garden", "brand:acme", "category:Beauty"],   # 1 unknown, 1 over width 2
            ["brand:zenith"],                                                        # nothing known
            ["category:Beauty"]]
    ids, counts = attribute_ids(tags, vocab, width=2)
    np.testing.assert_array_equal(ids, [[3, 1], [PAD, PAD], [2, PAD]])
    assert counts == {"items_with_tags": 2, "unknown_tags": 2, "tags_over_width": 1}
    # the catalogue's own table is the same mapping over its own vocabulary
    table = attribute_table(_items())
    np.testing.assert_array_equal(attribute_ids(item_tags(_items()), table.vocab, 4)[0], table.ids)
