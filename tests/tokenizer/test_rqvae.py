"""The RQ-VAE module and the k-means it is initialised with (odd tiny sizes: 37 items, codebooks 5/7/11)."""

from __future__ import annotations

import pytest
import torch

from genrec.tokenizer.kmeans import KMeansConfig, kmeans, residual_kmeans, sample_rows
from genrec.tokenizer.rqvae import RQVAE, RQVAEConfig

SIZES = (5, 7, 11)


def make_model(sizes=SIZES, **kw) -> RQVAE:
    torch.manual_seed(0)
    return RQVAE(RQVAEConfig(input_dim=13, latent_dim=6, hidden_dims=(9,), codebook_sizes=sizes, **kw))


@pytest.mark.parametrize("sizes", [SIZES, (7, 7, 7)])  # uneven sizes and the stacked-codebook path
@pytest.mark.parametrize("update", ["ema", "learnable"])
def test_codes_decode_back_to_the_quantized_latent(sizes, update):
    model = make_model(sizes, codebook_update=update).eval()
    x = torch.randn(37, 13)
    out = model(x)
    assert out.codes.shape == (37, 3)
    for level, k in enumerate(sizes):
        assert 0 <= int(out.codes[:, level].min()) and int(out.codes[:, level].max()) < k
    assert torch.allclose(model.rvq.get_output_from_indices(out.codes), out.z_q, atol=1e-6)
    assert torch.equal(model.quantize(out.z), out.codes)       # our nearest-code pass agrees with ResidualVQ
    assert torch.allclose(model.codes_to_latent(out.codes), out.z_q, atol=1e-6)


def test_forward_in_train_mode_returns_one_weighted_commit_loss_per_level():
    model = make_model(commitment_weight=0.5, dead_code_threshold=0.0).train()
    codebook0 = model.codebooks[0].clone()          # the EMA update moves the codes during forward
    out = model(torch.randn(37, 13))
    assert out.commit_losses.shape == (3,)
    # level 0 by hand: beta * mean ||z - q||^2 over the latent entries, q from the codes used
    q0 = codebook0[out.codes[:, 0]]
    assert out.commit_losses[0].item() == pytest.approx(0.5 * (out.z - q0).pow(2).mean().item(), rel=1e-5)


def test_eval_forward_does_not_touch_explicitly_set_codebooks():
    # vector-quantize-pytorch's own kmeans_init would overwrite codebooks on the first forward call
    model = make_model().eval()
    centroids = torch.arange(5 * 6, dtype=torch.float32).reshape(5, 6) / 10
    model.set_codebook(0, centroids, torch.full((5,), 3.0))
    model(torch.randn(37, 13))
    assert torch.equal(model.codebooks[0], centroids)
    assert torch.equal(model.rvq.layers[0]._codebook.cluster_size[0], torch.full((5,), 3.0))
    with pytest.raises(ValueError, match="expected centroids"):
        model.set_codebook(1, centroids, torch.ones(5))          # level 1 has 7 codes


def test_input_standardisation_is_part_of_the_model():
    model = make_model()
    model.set_input_stats(torch.full((13,), 2.0), torch.full((13,), 4.0))
    x = torch.full((1, 13), 6.0)
    assert torch.allclose(model.normalize(x), torch.ones(1, 13))
    assert "input_mean" in model.state_dict() and "input_scale" in model.state_dict()


def test_identity_autoencoder_quantizes_the_input_itself():
    model = RQVAE(RQVAEConfig(input_dim=4, latent_dim=4, hidden_dims=(), codebook_sizes=(3,), autoencoder=False))
    model.set_codebook(0, torch.eye(3, 4), torch.ones(3))
    x = torch.tensor([[0.9, 0.0, 0.1, 0.0], [0.0, 0.2, 0.8, 0.0]])
    assert model.quantize(model.encode(x)).squeeze(1).tolist() == [0, 2]


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="codebook_update"):
        RQVAEConfig(input_dim=4, codebook_update="sgd")
    with pytest.raises(ValueError, match="latent_dim=input_dim"):
        RQVAEConfig(input_dim=4, latent_dim=2, hidden_dims=(), autoencoder=False)
    with pytest.raises(ValueError, match="codebook_sizes"):
        RQVAEConfig(input_dim=4, codebook_sizes=())
    cfg = RQVAEConfig(input_dim=13, codebook_sizes=[5, 7, 11])
    assert RQVAEConfig.from_dict(cfg.to_dict()) == cfg


# ---- k-means -----------------------------------------------------------------------------

def four_clusters(n_per: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    gen = torch.Generator().manual_seed(3)
    x = centres.repeat_interleave(n_per, 0) + 0.1 * torch.randn(4 * n_per, 2, generator=gen)
    return x, centres


@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_kmeans_finds_separated_clusters_and_their_means(init):
    x, centres = four_clusters()
    res = kmeans(x, 4, KMeansConfig(init=init, seed=1))
    assert sorted(res.counts.tolist()) == [9, 9, 9, 9]
    # every centroid is the mean of its 9 points
    for c in range(4):
        assert torch.allclose(res.centroids[c], x[res.labels == c].mean(0), atol=1e-5)
    assert torch.cdist(centres, res.centroids).min(1).values.max() < 0.2
    assert res.inertia == pytest.approx(float(((x - res.centroids[res.labels]) ** 2).sum()), rel=1e-4)


def test_kmeans_is_deterministic_under_a_seed():
    x = torch.randn(37, 3, generator=torch.Generator().manual_seed(0))
    a, b = kmeans(x, 7, KMeansConfig(seed=5)), kmeans(x, 7, KMeansConfig(seed=5))
    assert torch.equal(a.centroids, b.centroids) and torch.equal(a.labels, b.labels)


def test_kmeans_degenerate_inputs():
    with pytest.raises(ValueError, match="lower k"):
        kmeans(torch.randn(5, 2), 7)
    with pytest.raises(ValueError, match="NaN"):
        kmeans(torch.tensor([[0.0, float("nan")], [1.0, 1.0]]), 1)
    # fewer distinct rows than k: no crash, the duplicates just leave codes empty
    x = torch.tensor([[1.0, 1.0]] * 6 + [[5.0, 5.0]] * 5)
    res = kmeans(x, 4)
    assert int((res.counts > 0).sum()) == 2 and res.inertia == pytest.approx(0.0)


def test_residual_kmeans_codes_reconstruct_the_input_when_k_equals_n():
    x = torch.randn(11, 4, generator=torch.Generator().manual_seed(2))
    codebooks, codes = residual_kmeans(x, (11, 5))
    assert [tuple(c.shape) for c in codebooks] == [(11, 4), (5, 4)]
    assert codes.shape == (11, 2)
    assert torch.allclose(codebooks[0][codes[:, 0]], x, atol=1e-6)   # one centre per row: exact
    assert torch.allclose(codebooks[1], torch.zeros(5, 4), atol=1e-6)  # nothing left to quantize


def test_sample_rows():
    assert sample_rows(10, 0, seed=0).tolist() == list(range(10))
    s = sample_rows(37, 11, seed=4)
    assert len(set(s.tolist())) == 11 and s.tolist() == sorted(s.tolist())
    assert torch.equal(s, sample_rows(37, 11, seed=4))
