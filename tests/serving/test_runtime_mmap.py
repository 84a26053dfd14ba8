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


def test_item_table_is_external_data_and_decodes_as_the_inlined_graph(tiny_export, tmp_path, monkeypatch):
    """Below layout.EXTERNAL_DATA_BYTES the table stays inline; above it, it moves to encoder.onnx.data
    (checksummed in the manifest), and the served top-k is the same."""
    import json

    from genrec.export import ExportConfig, export_module, layout
    from genrec.io import sha256_file
    from tiny import source_ids, tiny_module

    inline, _ = tiny_export
    assert not (inline / (layout.ENCODER_FILE + layout.EXTERNAL_DATA_SUFFIX)).exists()
    monkeypatch.setattr(layout, "EXTERNAL_DATA_BYTES", 1024)      # the tiny (37, 24) table is 3.5 kB
    folder = tmp_path / "external"
    export_module(tiny_module(), folder, ExportConfig(name="tiny"), source_ids=source_ids())
    data = layout.ENCODER_FILE + layout.EXTERNAL_DATA_SUFFIX
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["files"][data] == sha256_file(folder / data)
    assert (folder / data).stat().st_size >= 37 * 24 * 4
    assert (folder / layout.ENCODER_FILE).stat().st_size < (inline / layout.ENCODER_FILE).stat().st_size
    histories = [[1, 2, 3], [4], [5, 6, 7, 8, 9, 10, 11, 12]]
    a, b = ExportRuntime(inline).recommend(histories, 10), ExportRuntime(folder).recommend(histories, 10)
    assert np.array_equal(a.items, b.items) and np.allclose(a.scores, b.scores, atol=1e-6)


def test_workers_share_the_item_table_pages(tmp_path):
    """A 38 MB item table: loading the export adds file-backed (shared) pages, not private memory."""
    import subprocess
    import sys

    import torch

    from genrec.export import ExportConfig, export_module
    from genrec.lit.data import ModelDims
    from genrec.lit.module import GenRecModule

    n, levels = 60_000, (64, 64, 15)
    torch.manual_seed(0)
    module = GenRecModule(dims=ModelDims(levels, n, 0, "test", max_items=8), d_model=160, n_layers=1, n_heads=2,
                          d_ff=64, dropout=0.0, item_id_embedding=True)
    ids = np.arange(n)
    module.item_codes.copy_(torch.as_tensor(np.stack([ids % 64, (ids // 64) % 64, ids // 4096], 1)))
    folder = tmp_path / "export"
    export_module(module.eval(), folder, ExportConfig(name="big", parity_check=False, add_items=False))
    table_mb = n * 160 * 4 / 2**20
    probe = ("import sys, numpy as np\n"
             "from genrec.serving.runtime import ExportRuntime\n"
             "def rss(key):\n"
             "    return next(int(l.split()[1]) / 1024 for l in open('/proc/self/status') if l.startswith(key))\n"
             "import onnxruntime\n"
             "before = rss('RssAnon')\n"
             "runtime = ExportRuntime(sys.argv[1])\n"
             "runtime.recommend([list(range(1, 9))], 10)\n"
             "print(rss('RssAnon') - before)\n")
    out = subprocess.run([sys.executable, "-c", probe, str(folder)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    private_mb = float(out.stdout.split()[-1])
    assert private_mb < table_mb / 2, (private_mb, table_mb)


def test_int8_trial_keeps_external_data_consistent(tmp_path, monkeypatch):
    """--int8 on an export with external data: whether or not the quantized weights are kept, every file
    the manifest lists matches its checksum and the export decodes."""
    import json

    from genrec.export import ExportConfig, export_module, layout
    from genrec.io import sha256_file
    from tiny import source_ids, tiny_module

    monkeypatch.setattr(layout, "EXTERNAL_DATA_BYTES", 1024)
    folder = tmp_path / "int8"
    manifest = export_module(tiny_module(), folder, ExportConfig(name="tiny", int8=True), source_ids=source_ids())
    assert manifest["int8"]["reason"]
    listed = json.loads((folder / "manifest.json").read_text())["files"]
    assert layout.ENCODER_FILE + layout.EXTERNAL_DATA_SUFFIX in listed
    assert all(sha256_file(folder / name) == digest for name, digest in listed.items())
    assert (ExportRuntime(folder).recommend([[1, 2, 3]], 5).items >= 0).all()
