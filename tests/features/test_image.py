"""Image features: key mapping + strict loading, pooled features, image sources and the missing mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image, ImageDraw

from genrec.features.cache import EmbeddingCache
from genrec.features.image import (
    DATA_URI, FILE_NOT_FOUND, NO_IMAGE, UNREADABLE, URL_OFFLINE, ImageConfig, ImageEncoder, ImageModelError,
    build_image_model, bundled_image_checkpoint, efficientnet_lite_to_timm, read_checkpoint, resolve_image_sources,
)


@pytest.fixture(scope="module")
def encoder() -> ImageEncoder:
    return ImageEncoder(ImageConfig(batch_size=4))


def render(kind: int, size: int = 96) -> Image.Image:
    im = Image.new("RGB", (size, size + 17), (250, 250, 250))  # not square: exercises resize + crop
    d = ImageDraw.Draw(im)
    if kind == 0:
        d.ellipse((10, 10, size - 10, size - 10), fill=(220, 30, 30))
    else:
        d.rectangle((20, 5, size - 20, size), fill=(20, 40, 200), outline=(0, 0, 0), width=3)
    return im


# ---------------------------------------------------------------- checkpoint mapping


def test_key_mapping_hand_checked_examples():
    sd = {"_blocks.0._bn2.bias": 0, "_blocks.2._depthwise_conv.weight": 1, "_blocks.3._expand_conv.weight": 2,
          "_blocks.15._project_conv.weight": 3, "_blocks.10._bn2.running_var": 4, "_bn1.weight": 5,
          "_fc.bias": 6, "_conv_stem.weight": 7}
    # starts of the stages: 0,1,3,5,8,11,15 -> block 2 = stage 1 #1, 3 = stage 2 #0, 10 = stage 4 #2, 15 = stage 6 #0
    assert efficientnet_lite_to_timm(sd) == {
        "blocks.0.0.bn2.bias": 0, "blocks.1.1.conv_dw.weight": 1, "blocks.2.0.conv_pw.weight": 2,
        "blocks.6.0.conv_pwl.weight": 3, "blocks.4.2.bn3.running_var": 4, "bn2.weight": 5,
        "classifier.bias": 6, "conv_stem.weight": 7,
    }


def test_bundled_checkpoint_maps_onto_every_timm_key():
    import timm

    mapped = read_checkpoint(bundled_image_checkpoint(), "auto")
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    expected = model.state_dict()
    assert set(mapped) == set(expected)
    assert all(mapped[k].shape == expected[k].shape for k in expected)


def test_unknown_checkpoint_key_is_reported():
    with pytest.raises(ImageModelError, match="_mystery"):
        efficientnet_lite_to_timm({"_mystery.weight": 0})
    with pytest.raises(ImageModelError, match="unknown layer"):
        efficientnet_lite_to_timm({"_blocks.4._squeeze.weight": 0})


def test_features_are_pooled_pre_logits(encoder):
    """Strict load succeeded (ImageEncoder built), and features @ W.T + b reproduce the classifier's logits."""
    import timm

    full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    full.load_state_dict(read_checkpoint(bundled_image_checkpoint(), "auto"), strict=True)
    full.eval()
    x = np.stack([encoder.preprocess(render(0)), encoder.preprocess(render(1))])
    feats = encoder.encode_arrays(x)                                       # (2, 1280)
    with torch.inference_mode():
        logits = full(torch.from_numpy(x)).numpy()                         # (2, 1000)
    w, b = full.classifier.weight.detach().numpy(), full.classifier.bias.detach().numpy()
    assert feats.shape == (2, 1280)
    np.testing.assert_allclose(feats @ w.T + b, logits, rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------- determinism and preprocessing


def test_rendered_image_gives_identical_features_twice(encoder):
    images = [render(0), render(1), render(0)]
    a = encoder.encode_images(images)
    b = ImageEncoder(ImageConfig(batch_size=4)).encode_images(images)   # a fresh model instance
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[0], a[2])
    assert not np.allclose(a[0], a[1])
    assert np.isfinite(a).all() and (a >= 0).all()  # ReLU6 activations averaged: non-negative


def test_preprocess_shape_normalisation_and_transparency(encoder):
    x = encoder.preprocess(render(1, size=300))
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    assert -1.0 <= x.min() and x.max() <= 1.0                   # mean 0.5, std 0.5
    clear = Image.new("RGBA", (40, 70), (0, 0, 0, 0))            # fully transparent -> white background
    np.testing.assert_allclose(encoder.preprocess(clear), 1.0)


def test_config_validation():
    with pytest.raises(ValueError, match="checkpoint is required"):
        ImageConfig(model="resnet10t")
    with pytest.raises(ValueError, match="key_map"):
        ImageConfig(key_map="guess")
    with pytest.raises(ValueError, match="crop_pct"):
        ImageConfig(crop_pct=0.0)


def test_other_timm_model_with_local_checkpoint(tmp_path):
    import timm

    src = timm.create_model("resnet10t", pretrained=False, num_classes=7)
    ckpt = tmp_path / "resnet10t.pth"
    torch.save({"state_dict": src.state_dict()}, ckpt)
    model, _ = build_image_model(ImageConfig(model="resnet10t", checkpoint=str(ckpt), image_size=64))
    assert model.num_features == 512
    with pytest.raises(ImageModelError, match="strict"):
        build_image_model(ImageConfig(model="resnet18", checkpoint=str(ckpt)))
    with pytest.raises(ImageModelError, match="not found"):
        build_image_model(ImageConfig(model="resnet10t", checkpoint=str(tmp_path / "absent.pth")))


# ---------------------------------------------------------------- sources, missing mask, cache


def test_image_sources_and_reasons(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    render(0).save(folder / "A.png")
    render(1).save(folder / "A.jpg")      # .jpg outranks .png for the same source id
    render(1).save(folder / "rel.png")
    items = pl.DataFrame({
        "source_id": ["A", "B", "C", "D", "E", "F"],
        "image": [str(folder / "A.png"), "https://x.org/b.jpg", None, "gone.png", "rel.png",
                  "data:image/png;base64,AA"],
    })
    paths, reasons = resolve_image_sources(items, ImageConfig(), base_dirs=[tmp_path, folder])
    assert paths == [folder / "A.png", None, None, None, folder / "rel.png", None]
    assert reasons == [None, URL_OFFLINE, NO_IMAGE, FILE_NOT_FOUND, None, DATA_URI]

    paths, reasons = resolve_image_sources(items, ImageConfig(image_dir=str(folder)))
    assert paths == [folder / "A.jpg", None, None, None, None, None]
    assert reasons == [None] + [NO_IMAGE] * 5

    with pytest.raises(FileNotFoundError, match="image_dir"):
        resolve_image_sources(items, ImageConfig(image_dir=str(tmp_path / "nope")))


def test_missing_and_unreadable_images_are_masked_not_zeroed(encoder, tmp_path):
    good = tmp_path / "good.png"
    render(0).save(good)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG but truncated")
    res = encoder.encode_files([good, None, broken, good], [None, URL_OFFLINE, None, None], progress=False)
    assert res.mask.tolist() == [True, False, False, True]
    assert res.missing_reasons == {URL_OFFLINE: 1, UNREADABLE: 1}
    assert np.isnan(res.features[[1, 2]]).all()                 # explicit, never silently zero
    np.testing.assert_array_equal(res.features[0], res.features[3])
    assert res.n_encoded == 1                                   # identical bytes are encoded once


def test_image_cache_rerun_does_no_work(encoder, tmp_path, monkeypatch):
    files = []
    for k in range(3):
        files.append(tmp_path / f"{k}.png")
        render(k % 2, size=80 + k).save(files[-1])
    cache = EmbeddingCache(tmp_path / "cache", "image", encoder.namespace)
    first = encoder.encode_files(files, cache=cache, progress=False)
    calls = []
    monkeypatch.setattr(ImageEncoder, "encode_arrays", lambda self, x: calls.append(len(x)))
    again = encoder.encode_files(files, cache=EmbeddingCache(tmp_path / "cache", "image", encoder.namespace),
                                 progress=False)
    assert calls == [] and again.n_cached == 3 and again.n_encoded == 0
    np.testing.assert_array_equal(first.features, again.features)


# ---------------------------------------------------------------- demo quality


def test_demo_same_leaf_category_is_closer_in_image_space(demo_dataset, category_separation, encoder):
    paths = [Path(p) for p in demo_dataset.items["image"].to_list()]

    def encode(idx):
        res = encoder.encode_files([paths[i] for i in idx], progress=False)
        assert res.mask.all(), res.missing_reasons
        return res.features - res.features.mean(axis=0)  # centre: raw CNN features share a large common direction

    intra, inter = category_separation(demo_dataset, 2, encode)
    print(f"demo image cosine (centred): same leaf {intra:.3f}, different leaf {inter:.3f}")
    assert intra > inter + 0.2
