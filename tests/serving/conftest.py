"""The tiny model exported once per session, shared by test_export.py and test_server.py."""

from __future__ import annotations

import pytest

from .tiny import source_ids, tiny_module, titles


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """(export folder, module): the default exporter (dynamo) with the export-time parity check on."""
    from genrec.export import ExportConfig, export_module

    module = tiny_module()
    out = tmp_path_factory.mktemp("export") / "tiny"
    export_module(module, out, ExportConfig(name="tiny"), source_ids=source_ids(), titles=titles())
    return out, module
