"""Product quantization (tokenize method "pq"): the quantizer itself and the stage end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genrec.tokenizer.pq import PQConfig, ProductQuantizer
from genrec.tokenizer.semantic_ids import load_semantic_ids
from genrec.tokenizer.stage import TokenizeConfig, tokenize
from genrec.tokenizer.tokenizer import assign_new_items, load_tokenizer

from .test_stage import N_ITEMS, check_codes, clustered, write_features

PQ = dict(method="pq", n_levels=4, codebook_size=5, kmeans_sample=0, kmeans_iters=10)


@pytest.fixture(scope="module")
def pq_run(tmp_path_factory):
    run = write_features(tmp_path_factory.mktemp("run"), fused=clustered())   # 13 dims: subspaces 4, 3, 3, 3
    return run, tokenize(run, TokenizeConfig(**PQ))


def test_subspaces_split_the_input_as_evenly_as_possible():
    assert PQConfig(input_dim=13, codebook_sizes=(5,) * 4).subspace_dims == [4, 3, 3, 3]
    assert PQConfig(input_dim=12, codebook_sizes=(5,) * 4).subspace_dims == [3, 3, 3, 3]
    with pytest.raises(ValueError, match="fewer levels"):
        PQConfig(input_dim=3, codebook_sizes=(5,) * 4)


def test_rotation_is_orthogonal_and_seeded():
    pq = ProductQuantizer(PQConfig(input_dim=13, codebook_sizes=(5,) * 4))
    pq.set_rotation(3)
    r = pq.rotation
    assert torch.allclose(r.T @ r, torch.eye(13), atol=1e-5)
    again = ProductQuantizer(PQConfig(input_dim=13, codebook_sizes=(5,) * 4))
    again.set_rotation(3)
    assert torch.equal(r, again.rotation)


def test_quantize_picks_the_nearest_centroid_of_each_subspace():
    pq = ProductQuantizer(PQConfig(input_dim=4, codebook_sizes=(2, 3)))
    pq.set_codebook(0, torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    pq.set_codebook(1, torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]]))
    z = torch.tensor([[9.0, 9.0, 0.0, 4.0], [1.0, 0.0, 4.0, 1.0]])   # identity rotation, no normalisation
    codes = pq.quantize(pq.encode(z))
    assert codes.tolist() == [[1, 2], [0, 1]]
    # squared error per dimension: row 0: (1 + 1 + 0 + 1) / 4, row 1: (1 + 0 + 1 + 1) / 4
    assert torch.allclose(pq.reconstruction_error(z, codes), torch.tensor([0.75, 0.75]))


def test_pq_stage_writes_flat_codes_plus_the_dedup_level(pq_run):
    run, report = pq_run
    sid = load_semantic_ids(run)
    check_codes(sid)
    assert sid.level_sizes[:4] == (5, 5, 5, 5) and sid.n_digits == 5 and sid.n_levels == 4
    assert sid.method == sid.manifest["method"] == "pq"
    assert report["config"]["method"] == "pq"
    assert 0 < report["reconstruction"]["fused"]["relative"] < 1      # better than predicting the mean
    model = load_tokenizer(sid.folder / "tokenizer.pt").models["fused"]
    assert isinstance(model, ProductQuantizer)
    # the frozen quantizer reproduces the codes of every item the last-level rule did not move
    x = torch.from_numpy(np.load(run / "features" / "fused.npy"))
    raw = model.quantize(model.encode(x)).numpy()
    assert (raw[:, :3] == sid.codes[:, :3]).all()
    assert (raw[:, 3] != sid.codes[:, 3]).sum() == report["n_items_moved_by_last_level"]


def test_pq_is_deterministic_and_places_new_items(pq_run, tmp_path):
    run, _ = pq_run
    x = np.load(run / "features" / "fused.npy")
    again = write_features(tmp_path, fused=x)
    tokenize(again, TokenizeConfig(**PQ))
    sid = load_semantic_ids(run)
    assert load_semantic_ids(again).checksum == sid.checksum
    new = assign_new_items(sid, x[[0, 0]])              # two copies of item 0: both need free tuples
    assert len(np.unique(np.vstack([sid.codes, new]), axis=0)) == N_ITEMS + 2
