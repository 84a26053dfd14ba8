"""Stage reuse in `genrec pipeline` / `python train.py`: what exists is reused only while it is current."""

from __future__ import annotations

from dataclasses import asdict, replace

import pytest

from genrec.cli import main
from genrec.io import sha256_file, write_json_atomic
from genrec.pipeline import PipelineConfig, ensure_stages, stale_stages


def _fake_run(tmp_path, config: PipelineConfig):
    """Three stage manifests chained by checksums, as prepare -> embed -> tokenize write them."""
    run = tmp_path / "run"
    write_json_atomic(run / "dataset" / "manifest.json", {"stage": "prepare", "config": asdict(config.prepare),
                                                          "files": {"items.parquet": "a"}})
    features = {"stage": "embed", "config": asdict(config.embed), "files": {"fused.npy": "b"},
                "dataset": {"manifest_sha256": sha256_file(run / "dataset" / "manifest.json")}}
    write_json_atomic(run / "features" / "manifest.json", features)
    write_json_atomic(run / "sid" / "manifest.json", {"stage": "tokenize", "config": config.tokenize.to_dict(),
                                                      "features_manifest_files": features["files"]})
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


def test_changed_input_is_stale_even_without_a_config(tmp_path):
    run = _fake_run(tmp_path, PipelineConfig())
    write_json_atomic(run / "features" / "manifest.json", {"stage": "embed", "files": {"fused.npy": "other"},
                                                           "dataset": {"manifest_sha256": sha256_file(
                                                               run / "dataset" / "manifest.json")}})
    assert stale_stages(run) == {"tokenize": "features/ changed since the semantic IDs were built"}
    # train.py does not know the stage settings, so it refuses instead of rebuilding with defaults
    with pytest.raises(ValueError, match=r"sid is out of date: features/ changed.*genrec tokenize --run"):
        ensure_stages(run)


def test_a_real_source_needs_its_own_run_folder(tmp_path):
    (tmp_path / "src").mkdir()
    for command in ("prepare", "pipeline"):
        with pytest.raises(SystemExit, match="--run RUN is required with a SOURCE folder"):
            main([command, str(tmp_path / "src")])
