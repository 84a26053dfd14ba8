"""Stage reuse in `genrec pipeline` / `python train.py`: what exists is reused only while it is current."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from conftest import REPO_ROOT as REPO, require_shared

from genrec.cli import main
from genrec.config import load_yaml
from genrec.io import sha256_file, write_json_atomic
from genrec.pipeline import PipelineConfig, ensure_stages, load_stage_config, stale_stages


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


@pytest.mark.parametrize("name", ["office", "scientific", "beauty", "sports"])
def test_each_real_data_config_names_the_bench_stage_settings(name):
    """train.py --config configs/NAME.yaml --data.source ... builds what bench/run.py builds."""
    train_cfg = load_yaml(REPO / "configs" / f"{name}.yaml")
    stages_path = train_cfg["data"]["stages"]
    assert load_yaml(REPO / stages_path)["train_config"] == f"configs/{name}.yaml"
    cfg = load_stage_config(stages_path)
    assert (cfg.tokenize.method, cfg.tokenize.modalities) == ("pq", "separate")
    assert train_cfg["model"]["head"] == "parallel"   # which needs PQ codes


def test_stage_config_paths_resolve_inside_the_repository_from_any_directory(tmp_path, monkeypatch):
    require_shared("Scientific_DeCoRec_mm")
    monkeypatch.chdir(tmp_path)
    cfg = load_stage_config("configs/bench/Scientific_DeCoRec_mm.yaml")
    (image,) = cfg.embed.precomputed
    assert Path(image.path).is_absolute() and Path(image.path).is_file()
    assert Path(image.row_map).is_file()
    with pytest.raises(FileNotFoundError, match="stage config configs/bench/Nope.yaml not found"):
        load_stage_config("configs/bench/Nope.yaml")


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
