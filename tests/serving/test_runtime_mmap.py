"""The export loads memory-mapped, so N server workers on one folder share its large tables (issue 21)."""

from __future__ import annotations

import numpy as np

from genrec.serving.runtime import ExportRuntime


def mapped(array) -> bool:
    return isinstance(array, np.memmap) or isinstance(getattr(array, "base", None), np.memmap)


def test_every_large_array_of_an_exact_export_is_a_memory_map(parallel_export):
    folder, _ = parallel_export
    runtime = ExportRuntime(folder)
    assert runtime.exact
    trie = runtime.trie
    assert mapped(runtime.item_codes) and mapped(trie.order)
    assert trie._postings is not None and mapped(trie._postings.items)    # shipped with the export, not rebuilt
    result = runtime.recommend([[1, 2, 3], [4]], 5)
    assert (result.items >= 0).all()
    # exact decoding reads codes and posting lists only: the trie's node tables are never built
    assert not trie.node_tables_built


def test_a_beam_export_maps_its_codes_and_builds_node_tables_on_first_request(tiny_export):
    folder, _ = tiny_export
    runtime = ExportRuntime(folder)
    assert not runtime.exact and mapped(runtime.item_codes) and mapped(runtime.trie.order)
    assert not runtime.trie.node_tables_built
    runtime.recommend([[1, 2, 3]], 5)
    assert runtime.trie.node_tables_built
