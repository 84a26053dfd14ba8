"""The tiny model exported once per session, shared by test_export.py and test_server.py."""

from __future__ import annotations

import pytest

from .tiny import source_ids, tiny_module, titles


@pytest.fixture(scope="package", autouse=True)
def torch_single_thread():
    """Tiny models: one torch thread. On a shared 2-core machine a 2-thread pool makes every small op
    wait for a busy core (~12 ms each), which is most of these tests' time otherwise."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """(export folder, module): the default exporter (dynamo) with the export-time parity check on."""
    from genrec.export import ExportConfig, export_module

    module = tiny_module()
    out = tmp_path_factory.mktemp("export") / "tiny"
    export_module(module, out, ExportConfig(name="tiny"), source_ids=source_ids(), titles=titles())
    return out, module


@pytest.fixture(scope="session")
def tiger_export(tmp_path_factory):
    """(export folder, module) for a tiny TIGER T5, parity check on.

    The legacy exporter keeps the suite fast (the dynamo export of T5 takes ~15 s more here); the
    dynamo path of TIGER is exercised by bench/serve.py and guarded by its export-time parity check.
    """
    from genrec.export import ExportConfig, export_module

    module = tiny_module(arch="tiger")
    out = tmp_path_factory.mktemp("export") / "tiny-tiger"
    export_module(module, out, ExportConfig(name="tiny-tiger", exporter="legacy"), source_ids=source_ids(),
                  titles=titles())
    return out, module


@pytest.fixture(scope="session")
def parallel_export(tmp_path_factory):
    """(export folder, module) for the parallel (RPG-style) head: exact catalogue scoring, parity check on."""
    from genrec.export import ExportConfig, export_module

    module = tiny_module(head="parallel")
    out = tmp_path_factory.mktemp("export") / "tiny-parallel"
    export_module(module, out, ExportConfig(name="tiny-parallel"), source_ids=source_ids(), titles=titles())
    return out, module
