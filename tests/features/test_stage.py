"""The embed stage end to end on a 37-item run folder (real encoders), plus imports, collab and atomicity."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import require_shared
from genrec.data.dataset import load_dataset
from genrec.data.split import training_items
from genrec.features.image import FILE_NOT_FOUND, NO_IMAGE, UNREADABLE, URL_OFFLINE, ImageConfig
from genrec.features.precomputed import PrecomputedConfig
from genrec.features.stage import EmbedConfig, FuseConfig, embed, features_dir
from genrec.features.text import TextConfig, TextEncoder, item_texts
from genrec.io import read_manifest, sha256_file

from .conftest import CORRUPT_ROW, EMPTY_TEXT_ROW, MISSING_FILE_ROW, N_ITEMS, NULL_IMAGE_ROW, URL_ROW

TEXT = TextConfig(max_length=32)  # short texts here; keeps the encoder fast
NO_IMAGES = ImageConfig(enabled=False)


def load(run: Path, name: str) -> np.ndarray:
    return np.load(features_dir(run) / f"{name}.npy")


def test_embed_text_and_image_end_to_end(tiny_run, tmp_path, capsys):
    cache = str(tmp_path / "cache")
    manifest = embed(tiny_run, EmbedConfig(text=TEXT, collab=False, cache_dir=cache))
    out = features_dir(tiny_run)
    read_manifest(out, "embed", verify=True)  # every listed file matches its checksum
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["text.npy", "text_mask.npy", "image.npy", "image_mask.npy", "fused.npy", "manifest.json"])
    assert "text" in capsys.readouterr().out  # the summary table was printed

    text, image, fused = load(tiny_run, "text"), load(tiny_run, "image"), load(tiny_run, "fused")
    assert text.shape == (N_ITEMS, 384) and image.shape == (N_ITEMS, 1280) and fused.shape == (N_ITEMS, 384 + 1280)
    assert text.dtype == image.dtype == fused.dtype == np.float32

    # Row i is item i: re-encode two items directly and compare.
    texts = item_texts(load_dataset(tiny_run).items, TEXT)
    direct, _ = TextEncoder(TEXT).encode([texts[5], texts[30]], progress=False)
    np.testing.assert_allclose(text[[5, 30]], direct, atol=1e-5)

    # Missing images: masked, counted by reason, filled with the mean of the present rows (never zero).
    image_mask = np.load(out / "image_mask.npy")
    broken = [URL_ROW, MISSING_FILE_ROW, CORRUPT_ROW, NULL_IMAGE_ROW]
    assert np.flatnonzero(~image_mask).tolist() == sorted(broken)
    np.testing.assert_allclose(image[URL_ROW], image[image_mask].mean(axis=0), rtol=1e-5)
    entry = manifest["modalities"]["image"]
    assert entry["missing_reasons"] == {URL_OFFLINE: 1, FILE_NOT_FOUND: 1, UNREADABLE: 1, NO_IMAGE: 1}
    assert entry["coverage"] == pytest.approx((N_ITEMS - 4) / N_ITEMS, abs=1e-6)
    assert entry["model"] == "tf_efficientnet_lite0" and entry["dim"] == 1280 and entry["images_per_second"] > 0
    assert manifest["modalities"]["text"]["missing_reasons"] == {"empty_text": 1}
    assert np.flatnonzero(~np.load(out / "text_mask.npy")).tolist() == [EMPTY_TEXT_ROW]
    # In the fused vector a missing modality is the zero block (its mean after standardisation).
    assert manifest["fused"]["blocks"] == {"text": [0, 384], "image": [384, 1664]}
    np.testing.assert_array_equal(fused[URL_ROW, 384:], 0.0)
    np.testing.assert_array_equal(fused[EMPTY_TEXT_ROW, :384], 0.0)
    assert manifest["dataset"]["manifest_sha256"] == sha256_file(tiny_run / "dataset" / "manifest.json")
    assert manifest["stage"] == "embed" and manifest["n_items"] == N_ITEMS

    # Re-run: everything comes from the cache and the files are identical.
    again = embed(tiny_run, EmbedConfig(text=TEXT, collab=False, cache_dir=cache, progress=False))
    assert again["modalities"]["text"]["n_encoded"] == 0 and again["modalities"]["image"]["n_encoded"] == 0
    assert again["files"] == manifest["files"]

    # Determinism without the cache: a second run folder, encoders run again, same bytes.
    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    shutil.rmtree(other / "features")
    fresh = embed(other, EmbedConfig(text=TEXT, collab=False, use_cache=False, progress=False))
    assert fresh["modalities"]["text"]["n_encoded"] == N_ITEMS - 1
    assert fresh["files"] == manifest["files"]


def test_precomputed_replaces_encoder_and_failures_leave_old_features(tiny_run, monkeypatch):
    rng = np.random.default_rng(1)
    np.save(tiny_run / "mine.npy", rng.normal(size=(N_ITEMS, 6)).astype(np.float32))
    monkeypatch.setattr(TextEncoder, "__init__", lambda *a, **k: pytest.fail("text encoder must not be built"))
    cfg = EmbedConfig(image=NO_IMAGES, collab=False,
                      precomputed=(PrecomputedConfig("text", str(tiny_run / "mine.npy")),),
                      fuse=FuseConfig(weights={"text": 2.0, "image": 1.0}, pca_dim=5), progress=False)
    manifest = embed(tiny_run, cfg)
    assert manifest["modalities"]["text"]["source"] == "precomputed"
    np.testing.assert_array_equal(load(tiny_run, "text"), np.load(tiny_run / "mine.npy"))
    assert load(tiny_run, "fused").shape == (N_ITEMS, 5) and manifest["fused"]["projection"]["method"] == "pca"
    assert any("'image' ignored" in n for n in manifest["notes"])

    before = (features_dir(tiny_run) / "manifest.json").read_text()
    bad = EmbedConfig(image=NO_IMAGES, collab=False, progress=False,
                      precomputed=(PrecomputedConfig("text", str(tiny_run / "absent.npy")),))
    with pytest.raises(FileNotFoundError, match="absent.npy"):
        embed(tiny_run, bad)
    assert (features_dir(tiny_run) / "manifest.json").read_text() == before
    assert [p.name for p in tiny_run.iterdir() if p.name.startswith(".features")] == []


def test_image_modality_skipped_when_no_item_has_a_local_image(tiny_run, tmp_path):
    empty = tmp_path / "no_images"
    empty.mkdir()
    manifest = embed(tiny_run, EmbedConfig(text=TEXT, image=ImageConfig(image_dir=str(empty)), collab=False,
                                           cache_dir=str(tmp_path / "cache"), progress=False))
    assert list(manifest["modalities"]) == ["text"]
    assert any("image modality skipped" in n and "no_image" in n for n in manifest["notes"])
    assert not (features_dir(tiny_run) / "image.npy").exists()


def test_collab_modality_from_sasrec(tiny_run):
    from genrec.lit.sasrec import SASRecTrainConfig

    sasrec = SASRecTrainConfig(d_model=16, n_layers=1, max_epochs=2, batch_size=8, progress_bar=False)
    cfg = EmbedConfig(text=TextConfig(enabled=False), image=NO_IMAGES, sasrec=sasrec, progress=False)
    manifest = embed(tiny_run, cfg)
    collab = load(tiny_run, "collab")
    assert collab.shape == (N_ITEMS, 16) and np.isfinite(collab).all()
    seen = np.zeros(N_ITEMS, bool)
    seen[training_items(load_dataset(tiny_run).split)] = True
    entry = manifest["modalities"]["collab"]
    assert not seen.all()  # the fixture has items that only occur as validation/test targets
    assert entry["source"] == "sasrec" and entry["n_missing"] == int((~seen).sum())
    np.testing.assert_array_equal(np.load(features_dir(tiny_run) / "collab_mask.npy"), seen)
    assert "sasrec/sasrec.pt" in manifest["files"]
    assert {"recall@10", "ndcg@10"} <= set(entry["best_val"])


def test_config_validation_and_dicts():
    cfg = EmbedConfig(text={"max_length": 16}, precomputed=({"name": "clip", "path": "a.npy"}, "name=b;path=b.npy"),
                      fuse={"pca_dim": 8}, sasrec={"d_model": 32})
    assert cfg.text.max_length == 16 and cfg.precomputed[0].name == "clip" and cfg.fuse.pca_dim == 8
    assert cfg.sasrec.d_model == 32 and cfg.precomputed[1] == PrecomputedConfig("b", "b.npy")
    with pytest.raises(ValueError, match="unique"):
        EmbedConfig(precomputed=(PrecomputedConfig("x", "a.npy"), PrecomputedConfig("x", "b.npy")))
    with pytest.raises(ValueError, match="reserved"):
        EmbedConfig(precomputed=(PrecomputedConfig("fused", "a.npy"),))


@pytest.mark.realdata
def test_decorec_text_and_image_matrices_through_the_stage(tmp_path):
    from genrec.data.prepare import PrepareConfig, prepare

    source = require_shared("Scientific_DeCoRec_mm")
    run = tmp_path / "run"
    prepare(source, run, PrepareConfig(progress=False))
    imports = tuple(
        PrecomputedConfig(name, str(source / f"Scientific.{suffix}"), row_map=str(source / "Scientific.item2index"),
                          dim=512)
        for name, suffix in (("text", "feat1CLS"), ("image", "feat3CLS"))
    )
    manifest = embed(run, EmbedConfig(precomputed=imports, collab=False, progress=False))
    assert manifest["modalities"]["text"]["coverage"] == 1.0 and manifest["modalities"]["image"]["coverage"] == 1.0
    assert manifest["fused"]["dim"] == 1024
    items = load_dataset(run).items
    raw = np.fromfile(source / "Scientific.feat1CLS", dtype=np.float32).reshape(-1, 512)
    index = dict(line.split() for line in (source / "Scientific.item2index").read_text().splitlines())
    rows = [int(index[s]) for s in items["source_id"].to_list()]
    np.testing.assert_array_equal(load(run, "text"), raw[rows])
