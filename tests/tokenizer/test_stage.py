"""The tokenize stage end to end on tiny odd-sized catalogues (37 items, codebooks of 7)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_shared

from genrec.io import ArtifactError, save_npy_atomic, sha256_file, write_manifest
from genrec.tokenizer.config import RQVAEMethodConfig
from genrec.tokenizer.features import FeatureError
from genrec.tokenizer.fit import fit_model
from genrec.tokenizer.semantic_ids import collision_stats, load_semantic_ids
from genrec.tokenizer.stage import TokenizeConfig, tokenize
from genrec.tokenizer.tokenizer import assign_new_items, load_tokenizer

N_ITEMS = 37
# Tiny but real: 3 levels of 7 codes, a few optimisation steps.
SHARED = dict(codebook_size=7, n_levels=3, kmeans_sample=0, kmeans_iters=10)
FAST_RQVAE = RQVAEMethodConfig(latent_dim=4, hidden_dims=(16,), epochs=2, min_steps=0, batch_size=16)
FAST = dict(SHARED, rqvae=FAST_RQVAE)


def clustered(n: int = N_ITEMS, d: int = 13, n_clusters: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d)) * 3
    return (centres[np.arange(n) % n_clusters] + rng.normal(size=(n, d))).astype(np.float32)


def write_features(run: Path, **matrices: np.ndarray) -> Path:
    folder = run / "features"
    folder.mkdir(parents=True)
    for name, x in matrices.items():
        save_npy_atomic(folder / f"{name}.npy", x)
    write_manifest(folder, "embed", files=[f"{k}.npy" for k in matrices], n_items=len(next(iter(matrices.values()))))
    return run


@pytest.fixture(scope="module")
def fused_run(tmp_path_factory):
    run = write_features(tmp_path_factory.mktemp("run"), fused=clustered())
    report = tokenize(run, TokenizeConfig(**FAST))
    return run, report


def check_codes(sid):
    assert sid.codes.shape == (sid.n_items, len(sid.level_sizes))
    assert (sid.codes >= 0).all() and (sid.codes < np.asarray(sid.level_sizes)).all()
    assert len(np.unique(sid.codes, axis=0)) == sid.n_items


def test_tokenize_writes_a_complete_sid_folder(fused_run):
    run, report = fused_run
    sid = load_semantic_ids(run)
    check_codes(sid)
    assert sid.n_items == N_ITEMS and sid.n_digits == 4 and sid.n_levels == 3 and sid.level_sizes[:3] == (7, 7, 7)
    assert sid.level_sizes[3] == int(sid.codes[:, 3].max()) + 1         # dedup level = largest group
    m = sid.manifest
    assert m["stage"] == "tokenize" and m["method"] == "rqvae" and m["modalities"] == ["fused"]
    assert (m["n_levels"], m["n_digits"], m["dedup_digit"]) == (3, 4, 3) and sid.method == "rqvae"
    assert m["inputs"] == {"features/fused.npy": sha256_file(run / "features" / "fused.npy")}
    assert (m["config"]["codebook_size"] == 7 and m["config"]["rqvae"]["hidden_dims"] == [16]
            and m["vocab"]["total"] == sum(sid.level_sizes))
    assert (run / "sid" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run / "sid" / "logs" / "fused" / "version_0" / "metrics.csv").exists()
    assert json.loads((run / "sid" / "report.json").read_text()) == json.loads(json.dumps(report))
    assert not [p for p in run.iterdir() if p.name.startswith(".sid")]   # no temporary folders left
    # the report's numbers are the artifact's numbers
    assert [lv["used"] for lv in report["levels"]] == [len(np.unique(sid.codes[:, i])) for i in range(4)]
    assert report["collisions_before_dedup"] == collision_stats(sid.codes[:, :3])
    assert report["reconstruction"]["fused"]["mse"] > 0


def test_frozen_tokenizer_codes_decode_to_the_quantized_latent(fused_run):
    run, _ = fused_run
    sid = load_semantic_ids(run)
    model = load_tokenizer(sid.folder / "tokenizer.pt").models["fused"]
    x = torch.from_numpy(np.load(run / "features" / "fused.npy"))
    with torch.no_grad():
        out = model(x)                                                 # eval mode
    assert torch.allclose(model.rvq.get_output_from_indices(out.codes), out.z_q, atol=1e-5)
    # items the last-level rule did not move keep exactly the frozen model's nearest codes
    kept = (sid.codes[:, :2] == out.codes[:, :2].numpy()).all(1)
    assert kept.all()                                                  # only the last level may move
    moved = (sid.codes[:, 2] != out.codes[:, 2].numpy()).sum()
    assert moved == json.loads((sid.folder / "report.json").read_text())["n_items_moved_by_last_level"]


def test_tokenize_is_deterministic_under_a_seed(fused_run, tmp_path):
    run, _ = fused_run
    again = write_features(tmp_path, fused=np.load(run / "features" / "fused.npy"))
    tokenize(again, TokenizeConfig(**FAST))
    assert load_semantic_ids(again).checksum == load_semantic_ids(run).checksum


def test_tokenize_prints_the_report(tmp_path, capsys):
    run = write_features(tmp_path, fused=clustered(seed=1))
    tokenize(run, TokenizeConfig(**SHARED, method="rqkmeans"))
    out = capsys.readouterr().out
    assert "codes used" in out and "perplexity" in out and "collisions before dedup" in out and "reconstruction" in out


def test_rqkmeans_end_to_end_without_training(tmp_path):
    run = write_features(tmp_path, fused=clustered(seed=2))
    report = tokenize(run, TokenizeConfig(**SHARED, method="rqkmeans"))
    sid = load_semantic_ids(run)
    check_codes(sid)
    assert "train_seconds" not in report["fit"]["fused"] and not (run / "sid" / "logs").exists()
    model = load_tokenizer(sid.folder / "tokenizer.pt").models["fused"]
    assert not model.config.autoencoder and model.config.latent_dim == 13
    # 5 well-separated clusters, 7 codes: every cluster gets its own level-0 code
    assert len({int(sid.codes[i, 0]) for i in range(5)}) == 5


def test_separate_modalities_concatenate_codes(tmp_path):
    text, image = clustered(d=13, seed=3), clustered(d=11, seed=4)
    run = write_features(tmp_path, fused=np.hstack([text, image]), text=text, image=image)
    report = tokenize(run, TokenizeConfig(**{**FAST, "modalities": "separate", "n_levels": 2}))
    sid = load_semantic_ids(run)
    check_codes(sid)
    assert sid.n_digits == 5 and sid.level_sizes[:4] == (7, 7, 7, 7)
    # 2 levels x 2 modalities + dedup
    assert sid.n_levels == sid.manifest["n_levels"] == 2 and sid.manifest["n_digits"] == 5
    assert sid.manifest["modalities"] == ["text", "image"] and set(report["reconstruction"]) == {"text", "image"}
    tok = load_tokenizer(sid.folder / "tokenizer.pt")
    assert list(tok.models) == ["text", "image"]
    # the text half of the ID depends only on the text features
    text_codes = tok.models["text"].quantize(tok.models["text"].encode(torch.from_numpy(text))).numpy()
    assert np.array_equal(sid.codes[:, :2], text_codes)
    new = assign_new_items(sid, {"text": text[:2], "image": image[:2]})
    assert new.shape == (2, 5)
    with pytest.raises(FeatureError, match="pass a dict"):
        assign_new_items(sid, text[:2])


def test_new_items_get_free_codes_and_never_change_existing_ones(fused_run):
    run, _ = fused_run
    sid = load_semantic_ids(run)
    before = sid.codes.copy()
    x = np.load(run / "features" / "fused.npy")
    new = assign_new_items(sid, np.vstack([x[[3, 3]], x[:1] + 0.01]))  # two exact copies of item 3
    assert np.array_equal(load_semantic_ids(run).codes, before)
    assert new.shape == (3, 4)
    assert len(np.unique(np.vstack([before, new]), axis=0)) == N_ITEMS + 3
    assert (new < np.asarray(sid.level_sizes)).all()
    with pytest.raises(FeatureError, match="expected 13 columns"):
        assign_new_items(sid, x[:2, :5])
    with pytest.raises(FeatureError, match="NaN"):
        assign_new_items(sid, np.full((1, 13), np.nan, dtype=np.float32))


def test_colliding_new_item_gets_the_next_dedup_code(tmp_path):
    x = clustered(seed=5)
    run = write_features(tmp_path, fused=x)
    tokenize(run, TokenizeConfig(**{**FAST, "last_level": "nearest", "dedup_capacity": 50}))
    sid = load_semantic_ids(run)
    assert sid.level_sizes[-1] == 50
    item = 7
    same = (sid.codes[:, :3] == sid.codes[item, :3]).all(1)
    new = assign_new_items(sid, x[[item, item]])
    assert new[0, :3].tolist() == sid.codes[item, :3].tolist()
    assert new[0, 3] == same.sum() and new[1, 3] == same.sum() + 1    # next free dedup codes, in order


def test_new_item_beyond_the_dedup_capacity_is_refused(tmp_path):
    x = np.repeat(clustered(n=5, seed=6), 2, axis=0)   # every item twice: groups of 2 under last_level="nearest"
    run = write_features(tmp_path, fused=x)
    tokenize(run, TokenizeConfig(**{**FAST, "last_level": "nearest"}))
    sid = load_semantic_ids(run)
    assert sid.level_sizes[-1] == 2
    with pytest.raises(ValueError, match="dedup_capacity"):
        assign_new_items(sid, x[:1])


def test_kmeans_init_spans_the_catalogue_sample_not_the_first_batch(tmp_path):
    # the first 16 rows (one batch) all come from cluster 0; the other 6 clusters follow
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(7, 13)) * 10
    labels = np.r_[np.zeros(16, dtype=int), np.repeat(np.arange(1, 7), 5)]
    x = (centres[labels] + 0.05 * rng.normal(size=(len(labels), 13))).astype(np.float32)
    cfg = TokenizeConfig(**SHARED, rqvae=replace(FAST_RQVAE, epochs=0))
    model, info = fit_model(x, cfg, sizes=(7, 7, 7), seed=0, log_dir=tmp_path, name="fused")
    assert info["sample_rows"] == len(x)
    codes = model.quantize(model.encode(torch.from_numpy(x))).numpy()
    assert len(set(codes[:, 0])) == 7                                   # one level-0 code per cluster
    assert all(len(set(codes[labels == c, 0])) == 1 for c in range(7))


def test_fewer_items_than_codes_caps_the_codebooks(tmp_path):
    run = write_features(tmp_path, fused=clustered(n=5, seed=8))
    with pytest.warns(UserWarning, match="capped at 5"):
        report = tokenize(run, TokenizeConfig(**FAST))
    sid = load_semantic_ids(run)
    check_codes(sid)
    assert sid.level_sizes[:3] == (5, 5, 5) and any("capped" in n for n in report["notes"])


def test_identical_vectors_are_told_apart_by_the_last_and_dedup_levels(tmp_path):
    run = write_features(tmp_path, fused=np.ones((N_ITEMS, 13), dtype=np.float32))
    report = tokenize(run, TokenizeConfig(**FAST))
    sid = load_semantic_ids(run)
    check_codes(sid)
    assert report["collisions_raw"]["largest_group"] == N_ITEMS
    # one item keeps the shared last code, 6 take the 6 free ones, the other 30 need the dedup level
    assert sorted(np.bincount(sid.codes[:, 2]).tolist()) == [1, 1, 1, 1, 1, 1, 31]
    assert sid.level_sizes[-1] == 31


@pytest.mark.parametrize(
    "matrices, match",
    [
        (dict(fused=np.ones(N_ITEMS, dtype=np.float32)), "2-D"),
        (dict(fused=np.zeros((0, 13), dtype=np.float32)), "non-empty"),
        (dict(fused=np.where(np.arange(N_ITEMS)[:, None] % 17 == 4, np.inf, clustered())),
         r"2 of 37 rows .*rows 4, 21"),
    ],
)
def test_bad_features_are_clear_errors_and_write_nothing(tmp_path, matrices, match):
    run = write_features(tmp_path, **matrices)
    with pytest.raises(FeatureError, match=match) as err:
        tokenize(run, TokenizeConfig(**FAST))
    assert "fused.npy" in str(err.value)
    assert sorted(p.name for p in run.iterdir()) == ["features"]


def test_modalities_with_different_item_counts_are_refused(tmp_path):
    run = write_features(tmp_path, fused=clustered(), text=clustered(), image=clustered(n=36))
    with pytest.raises(FeatureError, match="disagree on the number of items"):
        tokenize(run, TokenizeConfig(**{**FAST, "modalities": "separate"}))


def test_missing_or_changed_features_are_refused(tmp_path):
    with pytest.raises(ArtifactError, match="genrec embed"):
        tokenize(tmp_path, TokenizeConfig(**FAST))
    run = write_features(tmp_path, fused=clustered())
    np.save(run / "features" / "fused.npy", clustered(seed=9))
    with pytest.raises(FeatureError, match="checksum differs"):
        tokenize(run, TokenizeConfig(**FAST))


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="TokenizeConfig.method"):
        TokenizeConfig(method="vqgan")
    with pytest.raises(ValueError, match="TokenizeConfig.codebook_size"):
        TokenizeConfig(codebook_size=0)
    with pytest.raises(ValueError, match="TokenizeConfig.normalize_input"):
        TokenizeConfig(normalize_input="l2")


def test_too_small_dedup_capacity_is_a_clear_error(tmp_path):
    run = write_features(tmp_path, fused=np.ones((N_ITEMS, 13), dtype=np.float32))
    with pytest.raises(ValueError, match="dedup_capacity=3 is smaller than the largest collision group"):
        tokenize(run, TokenizeConfig(**{**FAST, "dedup_capacity": 3}))


@pytest.mark.realdata
def test_real_scientific_text_features_use_95_percent_of_codes(tmp_path):
    path = require_shared("Scientific_DeCoRec_mm") / "Scientific.feat1CLS"
    x = np.fromfile(path, dtype=np.float32).reshape(-1, 512)        # 1,585 items, 512-d text features
    run = write_features(tmp_path, fused=x)
    # defaults except a shorter schedule, to keep the test near 15 s on 2 shared cores
    report = tokenize(run, TokenizeConfig(rqvae=RQVAEMethodConfig(min_steps=200)))
    sid = load_semantic_ids(run)
    check_codes(sid)
    print({k: report[k] for k in ("collisions_raw", "collisions_before_dedup", "seconds")},
          [(lv["used"], round(lv["perplexity"])) for lv in report["levels"]])
    assert all(lv["used_fraction"] >= 0.95 for lv in report["levels"][:-1])
    assert report["collisions_raw"]["collision_rate"] < 0.15
    assert report["collisions_before_dedup"]["n_colliding_items"] == 0
