"""Shared test helpers. Real-data tests read ../shared/data beside the repo and skip when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return (REPO_ROOT / ".." / "shared" / "data").resolve()


def require_shared(name: str) -> Path:
    """Path to ../shared/data/<name>, or skip the test with the reason."""
    path = shared_data_dir() / name
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (CI provides ../shared/data beside the repo)")
    return path


def write_fake_run(tmp_path: Path, model, source_ids=None, titles=None) -> Path:
    """A run folder with dataset/, sid/ and checkpoints/best.ckpt for a GenRec (or GenRecModule) whose
    item codes are set, as the earlier stages write them (one user, items 0..N-1)."""
    import polars as pl

    from genrec.data.schema import ITEM_SCHEMA, SEQUENCE_SCHEMA
    from genrec.io import write_manifest
    from genrec.tokenizer.semantic_ids import write_semantic_ids

    model = getattr(model, "genrec", model)
    n = model.n_items
    run = tmp_path / "run"
    (run / "dataset").mkdir(parents=True)
    items = pl.DataFrame({"item_id": list(range(n)),
                          "source_id": source_ids or [f"B{i:06d}" for i in range(n)],
                          "title": titles or [f"Item {i}" for i in range(n)]})
    items = items.with_columns([pl.lit(None).cast(t).alias(c) for c, t in ITEM_SCHEMA.items()
                                if c not in items.columns])
    items.select([pl.col(c).cast(t) for c, t in ITEM_SCHEMA.items()]).write_parquet(run / "dataset" / "items.parquet")
    seqs = pl.DataFrame({"user_id": [0], "source_user_id": ["u0"], "item_ids": [[0, 1, 2]], "timestamps": [None]},
                        schema=SEQUENCE_SCHEMA)
    seqs.write_parquet(run / "dataset" / "sequences.parquet")
    write_manifest(run / "dataset", "prepare", files=["items.parquet", "sequences.parquet"], name="fake",
                   n_users=1, n_items=n, n_interactions=3)
    sid = write_semantic_ids(run / "sid", model.item_codes.numpy(), model.level_sizes, extra_files=[])
    (run / "checkpoints").mkdir()
    model.config.sid_checksum = sid["files"]["codes.npy"]
    model.save(run / "checkpoints" / "best.ckpt")
    return run


# ---------------------------------------------------------------------- tiny exports (export and serving tests)
# The tiny model of tests/tiny.py exported once per session.
@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """(export folder, module): the default exporter (dynamo) with the export-time parity check on."""
    from genrec.export import ExportConfig, export_module
    from tiny import source_ids, tiny_module, titles

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
    from tiny import source_ids, tiny_module, titles

    module = tiny_module(arch="tiger")
    out = tmp_path_factory.mktemp("export") / "tiny-tiger"
    export_module(module, out, ExportConfig(name="tiny-tiger", exporter="legacy"), source_ids=source_ids(),
                  titles=titles())
    return out, module


@pytest.fixture(scope="session")
def parallel_export(tmp_path_factory):
    """(export folder, module) for the parallel (RPG-style) head: exact catalogue scoring, parity check on."""
    from genrec.export import ExportConfig, export_module
    from tiny import source_ids, tiny_module, titles

    module = tiny_module(head="parallel")
    out = tmp_path_factory.mktemp("export") / "tiny-parallel"
    export_module(module, out, ExportConfig(name="tiny-parallel"), source_ids=source_ids(), titles=titles())
    return out, module


@pytest.fixture(scope="session")
def rerank_export(tmp_path_factory):
    """(export folder, module) decoding with search "rerank" (the beam re-scored by the item logit), parity on."""
    from genrec.export import ExportConfig, export_module
    from tiny import source_ids, tiny_module, titles

    module = tiny_module(item_loss_weight=1.0)
    out = tmp_path_factory.mktemp("export") / "tiny-rerank"
    export_module(module, out, ExportConfig(name="tiny-rerank", search="rerank"), source_ids=source_ids(),
                  titles=titles())
    return out, module


def one_torch_thread():
    """Tiny models: one torch thread. On a shared 2-core machine a 2-thread pool makes every small op
    wait for a busy core (~12 ms each), which is most of the export and serving tests' time otherwise.
    Those packages' conftests turn this into a package-scoped autouse fixture."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def start_lock_holder(run: Path):
    """A separate process that holds ``run``'s lock as `genrec embed --run R` (for up to 120 s); returns
    once it holds it. The caller ends it (kill) when done."""
    import subprocess
    import sys

    code = ("import sys, time; from genrec.io import run_lock\n"
            "with run_lock(sys.argv[1], 'genrec embed --run R'):\n"
            "    print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder
