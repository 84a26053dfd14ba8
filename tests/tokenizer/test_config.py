"""TokenizeConfig's shape (shared fields + per-method sections), its flags and YAML, and the package layout."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

import genrec.tokenizer
from genrec.cli import main
from genrec.config import from_dict, load_yaml
from genrec.pipeline import load_stage_config
from genrec.tokenizer.config import METHODS, RQVAEMethodConfig, TokenizeConfig
from genrec.tokenizer.features import FeatureError
from genrec.tokenizer.semantic_ids import load_semantic_ids
from genrec.tokenizer.tokenizer import load_tokenizer

from .test_stage import FAST, clustered, write_features

REPO = Path(__file__).resolve().parents[2]


def test_rqvae_settings_with_another_method_are_refused_not_ignored():
    for method in ("pq", "rqkmeans"):
        with pytest.raises(ValueError, match=r"TokenizeConfig.rqvae.epochs is set, but rqvae.\* applies only to "
                                             f"method='rqvae' and method is '{method}'"):
            TokenizeConfig(method=method, rqvae=RQVAEMethodConfig(epochs=5))
        TokenizeConfig(method=method)                                   # untouched section: fine
    TokenizeConfig(method="rqvae", rqvae=RQVAEMethodConfig(epochs=5))


def test_config_validation_names_the_nested_field():
    with pytest.raises(ValueError, match="TokenizeConfig.rqvae.latent_dim"):
        RQVAEMethodConfig(latent_dim=0)
    with pytest.raises(ValueError, match="TokenizeConfig.rqvae.codebook_update"):
        RQVAEMethodConfig(codebook_update="adam")
    with pytest.raises(ValueError, match="TokenizeConfig.n_levels"):
        TokenizeConfig(n_levels=0)


def test_yaml_sections_nest_and_round_trip():
    cfg = from_dict(TokenizeConfig, {"method": "rqvae", "n_levels": 2, "rqvae": {"epochs": 3, "hidden_dims": [8, 4]}})
    assert cfg.rqvae == RQVAEMethodConfig(epochs=3, hidden_dims=(8, 4)) and cfg.n_levels == 2
    assert from_dict(TokenizeConfig, cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['epochs'\]"):   # the old flat key
        from_dict(TokenizeConfig, {"epochs": 3})


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_checked_in_configs_load(path):
    tokenize = load_stage_config(path).tokenize
    assert tokenize.method in METHODS
    assert tokenize == from_dict(TokenizeConfig, (load_yaml(path).get("stages") or {}).get("tokenize", {}))


def test_cli_flags_reach_the_nested_section_and_a_misplaced_one_is_an_error(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit):
        main(["tokenize", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--rqvae.epochs" in out and "--n-levels" in out and "dedup digit NOT counted" in out
    import genrec.tokenizer.stage as stage

    seen = {}
    monkeypatch.setattr(stage, "tokenize", lambda run, config: seen.setdefault("config", config))
    assert main(["tokenize", "--run", str(tmp_path), "--rqvae.epochs", "4", "--rqvae.hidden-dims", "8,4"]) == 0
    assert seen["config"].rqvae.epochs == 4 and seen["config"].rqvae.hidden_dims == (8, 4)
    assert main(["tokenize", "--run", str(tmp_path), "--method", "pq", "--rqvae.epochs", "4"]) != 0   # a user error
    assert "method is 'pq'" in capsys.readouterr().err


def _imports(path: Path, package: str) -> set[str]:
    """genrec.tokenizer modules ``path`` imports anywhere, inside functions included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n for n in names if n.startswith(package + ".") and n.count(".") == 2}
    return found


def test_no_import_cycle_inside_the_tokenizer_package():
    folder = Path(genrec.tokenizer.__file__).parent
    graph = {f"genrec.tokenizer.{p.stem}": _imports(p, "genrec.tokenizer") for p in folder.glob("*.py")}
    graph = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(m, path):
        if state.get(m) == 1:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
        if state.get(m) == 2:
            return
        state[m] = 1
        for d in sorted(graph[m]):
            visit(d, path + [m])
        state[m] = 2

    for m in sorted(graph):
        visit(m, [])
    assert "genrec.tokenizer.stage" not in graph["genrec.tokenizer.semantic_ids"]


def test_interrupted_tokenize_keeps_the_previous_sid_and_leaves_no_temp_folder(tmp_path, monkeypatch):
    import genrec.tokenizer.stage as stage

    run = write_features(tmp_path, fused=clustered(seed=11))
    stage.tokenize(run, TokenizeConfig(**FAST))
    before = load_semantic_ids(run).checksum

    def boom(report, path):
        raise KeyboardInterrupt

    monkeypatch.setattr(stage, "plot_report", boom)
    with pytest.raises(KeyboardInterrupt):
        stage.tokenize(run, TokenizeConfig(**{**FAST, "seed": 1}))
    assert load_semantic_ids(run).checksum == before
    assert sorted(p.name for p in run.iterdir()) == ["features", "sid"]


def test_checkpoint_refuses_pickled_code_and_unknown_kinds(tmp_path):
    path = tmp_path / "tokenizer.pt"
    torch.save({"format": 1, "last_level": "unique", "models": [], "hook": np.random.default_rng(0)}, path)
    with pytest.raises(Exception, match="Weights only load failed"):
        load_tokenizer(path)
    torch.save({"format": 1, "last_level": "unique", "models": [{"modality": "fused", "kind": "vqgan"}]}, path)
    with pytest.raises(FeatureError, match="unknown kind 'vqgan'"):
        load_tokenizer(path)
