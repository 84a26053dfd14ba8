"""Fusion: values worked out by hand, missing rows, weights, PCA/whitening, errors."""

from __future__ import annotations

import numpy as np
import pytest

from genrec.features.fuse import FuseConfig, fuse, impute_missing, pca_project, standardize_normalize

R2 = np.sqrt(2.0)
A = np.array([[1, 10], [3, 10], [5, 10], [7, 10]], dtype=np.float32)   # column 2 is constant
B = np.array([[0, 0], [2, 0], [0, 2], [99, 99]], dtype=np.float32)      # row 3 is "missing"
B_MASK = np.array([True, True, True, False])


def test_hand_computed_fusion():
    # A: column 1 z-scores are (-3, -1, 1, 3)/sqrt(5), column 2 is constant -> 0; after L2 only the sign is left.
    # B (present rows 0-2): mean 2/3, std 2*sqrt(2)/3 per column ->
    #   z = (-1/r2, -1/r2), (r2, -1/r2), (-1/r2, r2); L2 -> (-1,-1)/r2, (2,-1)/sqrt(5), (-1,2)/sqrt(5); row 3 -> 0.
    # Weights 4 and 1 scale the blocks by sqrt(4) = 2 and 1.
    out = fuse({"a": A, "b": B}, {"b": B_MASK}, FuseConfig(weights={"a": 4.0}))
    s5 = np.sqrt(5.0)
    expected = np.array([
        [-2, 0, -1 / R2, -1 / R2],
        [-2, 0, 2 / s5, -1 / s5],
        [2, 0, -1 / s5, 2 / s5],
        [2, 0, 0, 0],
    ])
    np.testing.assert_allclose(out.fused, expected, atol=1e-6)
    assert out.fused.dtype == np.float32
    assert out.blocks == {"a": (0, 2), "b": (2, 4)}
    info_b = out.info["modalities"]["b"]
    assert info_b["missing_rows"] == 1 and info_b["present_rows"] == 3
    assert out.info["modalities"]["a"]["constant_columns"] == 1


def test_missing_rows_are_zero_and_imputation_uses_present_mean():
    z, _ = standardize_normalize(B, B_MASK, eps=1e-6)
    np.testing.assert_array_equal(z[3], 0.0)          # the 99s never leak in
    filled = impute_missing(B, B_MASK)
    np.testing.assert_allclose(filled[3], [2 / 3, 2 / 3], rtol=1e-6)
    np.testing.assert_array_equal(filled[:3], B[:3])
    np.testing.assert_array_equal(impute_missing(A, np.ones(4, bool)), A)


def test_weight_zero_excludes_a_modality():
    out = fuse({"a": A, "b": B}, {"b": B_MASK}, FuseConfig(weights={"b": 0.0}))
    assert out.fused.shape == (4, 2) and out.blocks == {"a": (0, 2)}
    assert out.info["modalities"]["b"] == {"weight": 0.0, "included": False}


def test_pca_recovers_low_rank_structure_and_is_sign_stable():
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(41, 2)) @ rng.normal(size=(2, 7)) + 1e-3 * rng.normal(size=(41, 7))).astype(np.float32)
    y, info = pca_project(x, 2, whiten=False)
    assert y.shape == (41, 2) and info["explained_variance_ratio"] > 0.999
    perm = rng.permutation(41)
    y_perm, _ = pca_project(x[perm], 2, whiten=False)
    np.testing.assert_allclose(y_perm, y[perm], atol=1e-4)   # row order does not flip component signs
    w, _ = pca_project(x, 2, whiten=True)
    np.testing.assert_allclose(w.var(axis=0, ddof=1), 1.0, rtol=1e-4)
    assert abs(np.corrcoef(w.T)[0, 1]) < 1e-4


def test_fuse_with_pca_dim():
    rng = np.random.default_rng(0)
    out = fuse({"a": rng.normal(size=(29, 5)), "b": rng.normal(size=(29, 3))}, config=FuseConfig(pca_dim=4))
    assert out.fused.shape == (29, 4) and out.info["concat_dim"] == 8
    assert out.info["projection"]["method"] == "pca"


@pytest.mark.parametrize("kwargs, match", [
    (dict(weights={"a": -1.0}), "must be >= 0"),
    (dict(pca_dim=0), "pca_dim"),
    (dict(whiten=True), "whiten needs pca_dim"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FuseConfig(**kwargs)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="different row counts"):
        fuse({"a": A, "b": B[:3]})
    with pytest.raises(ValueError, match="not among the modalities"):
        fuse({"a": A}, config=FuseConfig(weights={"image": 1.0}))
    with pytest.raises(ValueError, match="'b'.*no present rows"):
        fuse({"a": A, "b": B}, {"b": np.zeros(4, bool)})
    with pytest.raises(ValueError, match="NaN"):
        fuse({"b": np.where(B_MASK[:, None], B, np.nan)})          # NaN rows not marked missing
    with pytest.raises(ValueError, match="pca_dim=9 exceeds"):
        fuse({"a": A}, config=FuseConfig(pca_dim=9))
    with pytest.raises(ValueError, match="weight 0"):
        fuse({"a": A}, config=FuseConfig(weights={"a": 0.0}))
