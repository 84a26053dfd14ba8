"""Stage reuse in `genrec pipeline` / `python train.py`: what exists is reused only while it is current."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from conftest import REPO_ROOT as REPO, require_shared

from genrec.cli import main
from genrec.config import load_yaml
from genrec.io import input_checksums, write_json_atomic, write_manifest
from genrec.pipeline import PipelineConfig, ensure_stages, load_stage_config, stale_stages


def _fake_run(tmp_path, config: PipelineConfig, source: Path | None = None):
    """Three stage folders whose manifests chain by input checksums, as prepare -> embed -> tokenize write them."""
    run = tmp_path / "run"
    dataset, features, sid = run / "dataset", run / "features", run / "sid"
    for folder in (dataset, features, sid):
        folder.mkdir(parents=True)
    (dataset / "items.parquet").write_bytes(b"items")
    write_manifest(dataset, "prepare", files=["items.parquet"], config=asdict(config.prepare),
                   inputs=input_checksums(run, [source] if source else []))
    (features / "fused.npy").write_bytes(b"fused")
    write_manifest(features, "embed", files=["fused.npy"], config=asdict(config.embed),
                   inputs=input_checksums(run, [dataset / "manifest.json", dataset / "items.parquet"]))
    write_manifest(sid, "tokenize", files=[], config=config.tokenize.to_dict(),
                   inputs=input_checksums(run, [features / "fused.npy"]))
    return run


def test_a_current_run_has_nothing_stale(tmp_path):
    run = _fake_run(tmp_path, PipelineConfig())
    assert stale_stages(run) == {}
    assert stale_stages(run, PipelineConfig()) == {}
    ensure_stages(run)   # nothing to build, nothing raised


def test_missing_stages_and_everything_after_them_are_listed(tmp_path):
    run = _fake_run(tmp_path, PipelineConfig())
    (run / "features" / "manifest.json").unlink()
    assert stale_stages(run) == {"embed": "missing", "tokenize": "embed is rebuilt"}


def test_a_changed_setting_marks_its_stage_and_not_the_earlier_ones(tmp_path):
    run = _fake_run(tmp_path, PipelineConfig())
    wanted = PipelineConfig()
    wanted.tokenize = replace(wanted.tokenize, method="pq" if wanted.tokenize.method != "pq" else "rqvae")
    reasons = stale_stages(run, wanted)
    assert list(reasons) == ["tokenize"]
    assert reasons["tokenize"].startswith("config changed (method:")


def test_an_embed_setting_change_rebuilds_the_semantic_ids_too(tmp_path):
    run = _fake_run(tmp_path, PipelineConfig())
    wanted = PipelineConfig()
    wanted.embed.image.image_size = 96
    reasons = stale_stages(run, wanted)
    assert list(reasons) == ["embed", "tokenize"]
    assert reasons == {"embed": "config changed (image.image_size: 224 -> 96)", "tokenize": "embed is rebuilt"}


def test_settings_that_do_not_change_the_output_rebuild_nothing(tmp_path):
    run = _fake_run(tmp_path, PipelineConfig())
    wanted = PipelineConfig()
    wanted.prepare.progress, wanted.embed.progress, wanted.embed.use_cache = False, False, False
    wanted.embed.cache_dir = str(tmp_path / "elsewhere")
    assert stale_stages(run, wanted) == {}


def test_changed_input_is_stale_even_without_a_config(tmp_path):
    run = _fake_run(tmp_path, PipelineConfig())
    (run / "features" / "fused.npy").write_bytes(b"other features")
    assert stale_stages(run) == {"tokenize": "features/fused.npy changed since sid/ was built"}
    # train.py does not know the stage settings, so it refuses instead of rebuilding with defaults
    with pytest.raises(ValueError, match=r"sid is out of date: features/fused.npy changed.*genrec tokenize --run"):
        ensure_stages(run)


def test_every_stage_is_judged_by_the_same_input_checksums(tmp_path):
    """The same rule for every stage: the dataset's manifest for embed, a source file for prepare."""
    run = _fake_run(tmp_path, PipelineConfig())
    manifest = json.loads((run / "dataset" / "manifest.json").read_text())
    write_json_atomic(run / "dataset" / "manifest.json", {**manifest, "n_items": 99})
    assert stale_stages(run) == {"embed": "dataset/manifest.json changed since features/ was built",
                                 "tokenize": "embed is rebuilt"}

    source = tmp_path / "src" / "Toys.txt"
    source.parent.mkdir()
    source.write_text("1 1 2 3\n")
    run = _fake_run(tmp_path / "b", PipelineConfig(), source=source)
    assert stale_stages(run) == {}
    source.write_text("1 1 2 3 4\n")
    reasons = stale_stages(run)
    assert reasons["prepare"] == f"{source.resolve()} changed since dataset/ was built"
    with pytest.raises(ValueError, match=r"dataset is out of date: .*Toys.txt changed.*genrec prepare SOURCE --run"):
        ensure_stages(run)
    # A source that is gone (a run folder copied to another machine) cannot be checked: not a reason to rebuild.
    source.unlink()
    assert stale_stages(run) == {}


def test_a_real_source_needs_its_own_run_folder(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    for command in ("prepare", "pipeline"):
        assert main([command, str(tmp_path / "src")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"genrec {command}: error: --run RUN is required with a SOURCE folder" in err


# ---- data.stages: the settings train.py builds missing stages with -------------------------


def test_missing_stages_are_built_with_the_stage_config(tmp_path, monkeypatch):
    import genrec.tokenizer.stage as tokenizer_stage

    run = _fake_run(tmp_path, PipelineConfig())
    (run / "sid" / "manifest.json").unlink()
    stages_yaml = tmp_path / "stages.yaml"
    stages_yaml.write_text("tokenize: {method: pq, modalities: separate, n_levels: 8}\ntrain_config: x.yaml\n")
    built = {}
    monkeypatch.setattr(tokenizer_stage, "tokenize", lambda run, config: built.setdefault("tokenize", config))
    ensure_stages(run, missing_config=str(stages_yaml))
    assert (built["tokenize"].method, built["tokenize"].modalities, built["tokenize"].n_levels) == ("pq", "separate", 8)


def test_the_stage_config_is_not_read_when_nothing_is_missing(tmp_path):
    run = _fake_run(tmp_path, PipelineConfig())
    ensure_stages(run, missing_config=str(tmp_path / "absent.yaml"))   # would raise FileNotFoundError if read


@pytest.mark.parametrize("name", ["text_rich", "multimodal", "sparse", "smoke", "demo"])
def test_each_config_family_is_one_file_that_parses(name):
    """One YAML per kind of data: the training settings and the stages it builds (--source) in one file, and
    the Lightning CLI accepts it as it is."""
    path = REPO / "configs" / f"{name}.yaml"
    load_stage_config(path)                                   # the stages section builds a PipelineConfig
    out = subprocess.run([sys.executable, str(REPO / "train.py"), "fit", "--config", str(path), "--print_config"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "stages:" in out.stdout


def test_the_bench_families_share_one_setting_per_kind_of_data():
    """Beauty and Sports run the same settings, as do Office and Scientific (bench/run.py CONFIGS)."""
    sys.path.insert(0, str(REPO / "bench"))
    from run import CONFIGS

    assert CONFIGS["Beauty"] == CONFIGS["Sports_and_Outdoors"] == "configs/sparse.yaml"
    assert CONFIGS["Office"] == CONFIGS["Scientific"] == "configs/text_rich.yaml"
    for name in ("text_rich", "sparse", "multimodal"):
        cfg = load_stage_config(REPO / "configs" / f"{name}.yaml")
        assert (cfg.tokenize.method, cfg.tokenize.modalities) == ("pq", "separate")   # the parallel head's codes


def test_stage_config_paths_resolve_inside_the_repository_from_any_directory(tmp_path, monkeypatch):
    require_shared("Scientific_DeCoRec_mm")
    monkeypatch.chdir(tmp_path)
    cfg = load_stage_config("configs/multimodal.yaml")
    (image,) = cfg.embed.precomputed
    assert Path(image.path).is_absolute() and Path(image.path).is_file()
    assert Path(image.row_map).is_file()
    with pytest.raises(FileNotFoundError, match="stage config configs/nope.yaml not found"):
        load_stage_config("configs/nope.yaml")


def test_a_setting_added_after_a_stage_was_built_counts_at_its_default(tmp_path):
    run = _fake_run(tmp_path, PipelineConfig())
    manifest = json.loads((run / "dataset" / "manifest.json").read_text())
    for new_field in ("split", "valid_from", "test_from"):
        del manifest["config"][new_field]
    write_json_atomic(run / "dataset" / "manifest.json", manifest)
    reasons = stale_stages(run, PipelineConfig())
    assert "prepare" not in reasons   # (embed is stale only because the dataset manifest's bytes changed)
    wanted = PipelineConfig()
    wanted.prepare.split = "temporal"
    assert stale_stages(run, wanted)["prepare"] == "config changed (split: 'leave_one_out' -> 'temporal')"


def test_ensure_stages_locks_the_run_only_to_build(tmp_path):
    from conftest import start_lock_holder

    from genrec.io import RunLockedError

    run = _fake_run(tmp_path, PipelineConfig())
    holder = start_lock_holder(run)
    try:
        ensure_stages(run)     # a finished run is only read: fine while another command holds the lock
        (run / "sid" / "manifest.json").unlink()
        with pytest.raises(RunLockedError, match=f"in use by pid {holder.pid} \\(`genrec embed --run R`"):
            ensure_stages(run)
    finally:
        holder.kill()
        holder.wait()


# ---- one manifest shape for every stage ------------------------------------------------------

MANIFEST_KEYS = {"stage", "inputs", "config", "versions", "created", "files"}


def test_prepare_and_embed_write_the_same_manifest_shape(tmp_path):
    """stage / inputs {path: sha256} / config / versions / created / files, plus the stage's own fields;
    stale_stages reads only the shared ones, the same way for each stage."""
    import numpy as np

    from genrec.data.prepare import PrepareConfig, prepare
    from genrec.features.image import ImageConfig
    from genrec.features.precomputed import PrecomputedConfig
    from genrec.features.stage import EmbedConfig, embed
    from genrec.features.text import TextConfig
    from genrec.io import sha256_file

    src = tmp_path / "src"
    src.mkdir()
    (src / "Toys.txt").write_text("1 1 2 3\n2 2 3 1 4\n3 4 1 2\n")
    run = tmp_path / "run"
    prepare_config = PrepareConfig(user_core=0, item_core=0, max_items=7, progress=False)
    dataset = prepare(src, run, prepare_config)
    matrix = tmp_path / "vectors.npy"
    np.save(matrix, np.arange(4 * 5, dtype=np.float32).reshape(4, 5))
    embed_config = EmbedConfig(text=TextConfig(enabled=False), image=ImageConfig(enabled=False), collab=False,
                               precomputed=(PrecomputedConfig(name="vec", path=str(matrix)),), progress=False)
    features = embed(run, embed_config)

    for manifest in (dataset, features):
        assert MANIFEST_KEYS <= set(manifest)
        assert json.loads((run / STAGE_DIR[manifest["stage"]] / "manifest.json").read_text()) == manifest
    assert dataset["inputs"] == {str((src / "Toys.txt").resolve()): sha256_file(src / "Toys.txt")}
    assert dataset["config"] == asdict(prepare_config)
    assert features["inputs"] == {
        "dataset/items.parquet": sha256_file(run / "dataset" / "items.parquet"),
        "dataset/manifest.json": sha256_file(run / "dataset" / "manifest.json"),
        "dataset/sequences.parquet": sha256_file(run / "dataset" / "sequences.parquet"),
        str(matrix.resolve()): sha256_file(matrix),
    }
    assert features["config"]["collab"] is False and features["config"]["precomputed"][0]["name"] == "vec"

    # the protocol's history length travels with the dataset
    from genrec.data.dataset import load_dataset

    assert dataset["max_items"] == 7 and load_dataset(run).max_items == 7

    # an imported matrix is an input like any other: changing it makes features/ (and what follows) stale
    wanted = PipelineConfig(prepare=prepare_config, embed=embed_config)
    assert list(stale_stages(run, wanted)) == ["tokenize"]           # (not built here)
    np.save(matrix, np.ones((4, 5), dtype=np.float32))
    assert stale_stages(run, wanted) == {"embed": f"{matrix.resolve()} changed since features/ was built",
                                         "tokenize": "missing"}


STAGE_DIR = {"prepare": "dataset", "embed": "features", "tokenize": "sid"}
