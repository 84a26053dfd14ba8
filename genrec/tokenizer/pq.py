"""Product quantization: long, flat semantic IDs for the parallel code head (RPG-style).

The normalised item vector is rotated by a fixed random orthogonal matrix, so that every
subspace carries a similar share of the variance (a cheap stand-in for OPQ's learned
rotation), split into D contiguous subspaces, and each subspace is quantized on its own by
k-means. Item i's semantic ID is the D nearest-centroid indices. Unlike residual codes the
digits are not a coarse-to-fine path, so they suit a model that predicts all of them at once
(``model.head: parallel``) and scores every item exactly.

Model only: the codebooks are fitted by :func:`fit_pq` (k-means from ``kmeans.py``). The
module has the interface the tokenize stage uses for an RQ-VAE (``encode``, ``quantize``,
``residual_before``, ``codebooks``, ``reconstruction_error``), so collisions, the dedup level,
the artifact and the report work unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from genrec.tokenizer.kmeans import KMeansConfig, kmeans, nearest


@dataclass(frozen=True, kw_only=True)
class PQConfig:
    input_dim: int                                  # width of the item feature vector
    codebook_sizes: tuple[int, ...] = (256,) * 16   # codes per subspace; one subspace per level (digit)
    kind: str = "pq"                                # tells a checkpoint reader which module to build

    def __post_init__(self):
        object.__setattr__(self, "codebook_sizes", tuple(int(k) for k in self.codebook_sizes))
        if not self.codebook_sizes or min(self.codebook_sizes) < 1:
            raise ValueError(f"PQConfig.codebook_sizes must be a non-empty tuple of positive ints, "
                             f"got {self.codebook_sizes}")
        if self.input_dim < len(self.codebook_sizes):
            raise ValueError(f"PQConfig: {len(self.codebook_sizes)} subspaces need input_dim >= that many dimensions, "
                             f"got input_dim={self.input_dim}; use fewer levels (--n-levels)")

    @property
    def n_levels(self) -> int:
        return len(self.codebook_sizes)

    @property
    def subspace_dims(self) -> list[int]:
        """Widths of the D subspaces: as equal as possible, the first ones one wider when D does not divide."""
        base, extra = divmod(self.input_dim, self.n_levels)
        return [base + (i < extra) for i in range(self.n_levels)]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["codebook_sizes"] = list(self.codebook_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PQConfig":
        return cls(**d)


class ProductQuantizer(nn.Module):
    def __init__(self, config: PQConfig):
        super().__init__()
        self.config = config
        d = config.input_dim
        self.register_buffer("input_mean", torch.zeros(d))
        self.register_buffer("input_scale", torch.ones(d))
        self.register_buffer("rotation", torch.eye(d))
        for level, (k, width) in enumerate(zip(config.codebook_sizes, config.subspace_dims)):
            self.register_buffer(f"codebook_{level}", torch.zeros(k, width))

    # ---- fitting hooks ----------------------------------------------------------------------
    def set_input_stats(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        self.input_mean.copy_(mean)
        self.input_scale.copy_(scale)

    def set_rotation(self, seed: int) -> None:
        """A seeded random orthogonal matrix (QR of a Gaussian, signs fixed so it is unique)."""
        g = torch.Generator().manual_seed(seed)
        q, r = torch.linalg.qr(torch.randn(self.config.input_dim, self.config.input_dim, generator=g,
                                           dtype=torch.float64))
        self.rotation.copy_((q * torch.sign(torch.diagonal(r))).float())

    def set_codebook(self, level: int, centroids: torch.Tensor) -> None:
        getattr(self, f"codebook_{level}").copy_(centroids)

    # ---- the interface the tokenize stage uses ----------------------------------------------
    @property
    def codebooks(self) -> list[torch.Tensor]:
        return [getattr(self, f"codebook_{level}") for level in range(self.config.n_levels)]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.input_mean) / self.input_scale

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(n, input_dim) -> (n, input_dim) rotated, normalised vectors (subspaces are column blocks)."""
        return self.normalize(x) @ self.rotation

    def subspaces(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return z.split(self.config.subspace_dims, dim=1)

    @torch.no_grad()
    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """(n, input_dim) encoded -> (n, D) nearest centroid per subspace."""
        return torch.stack([nearest(part.contiguous(), c)[0] for part, c in zip(self.subspaces(z), self.codebooks)], 1)

    def residual_before(self, z: torch.Tensor, codes: torch.Tensor, level: int) -> torch.Tensor:
        """What level ``level`` quantizes: its own subspace (the other digits do not change it)."""
        return self.subspaces(z)[level]

    def codes_to_latent(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.cat([c[codes[:, level]] for level, c in enumerate(self.codebooks)], dim=1)

    @torch.no_grad()
    def reconstruction_error(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """(n,) squared error in normalised input space (the rotation is orthogonal, so distances are kept)."""
        return (self.encode(x) - self.codes_to_latent(codes)).pow(2).sum(dim=1) / self.config.input_dim


@torch.no_grad()
def fit_pq(model: ProductQuantizer, x: torch.Tensor, sample: torch.Tensor, kmeans_config: KMeansConfig) -> dict:
    """Fit each subspace's codebook by k-means on the encoded ``x[sample]``; returns fit info."""
    z = model.encode(x[sample])
    inertia = 0.0
    for level, (part, k) in enumerate(zip(model.subspaces(z), model.config.codebook_sizes)):
        result = kmeans(part.contiguous(), k,
                        KMeansConfig(**{**asdict(kmeans_config), "seed": kmeans_config.seed + level}))
        model.set_codebook(level, result.centroids)
        inertia += result.inertia
    return {"sample_rows": int(len(sample)), "init_quantization_mse": inertia / z.numel()}
