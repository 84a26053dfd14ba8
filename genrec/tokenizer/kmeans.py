"""Seeded, batched k-means and residual k-means (RQ-KMeans) in torch.

Two uses:
- codebook initialisation of the RQ-VAE: residual k-means on the encoded *sample of the whole
  catalogue* (not on the first mini-batch, which is what vector-quantize-pytorch's
  ``kmeans_init`` would do);
- the RQ-KMeans tokenizer itself (GRID): residual k-means on the input vectors, no gradients.

Everything runs on the CPU in float32; distances are computed in row blocks so memory stays
bounded at ``block_size × k`` floats whatever the catalogue size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

KMEANS_INITS = ("kmeans++", "random")


@dataclass(frozen=True, kw_only=True)
class KMeansConfig:
    n_iter: int = 30             # maximum Lloyd iterations
    init: str = "kmeans++"       # "kmeans++" (D² seeding) or "random" (distinct random rows)
    tol: float = 1e-4            # stop when the relative drop in inertia is below this
    block_size: int = 8192       # rows per distance block (memory: block_size × k floats)
    seed: int = 0                # seeds the init and the re-seeding of empty clusters

    def __post_init__(self):
        if self.n_iter < 0:
            raise ValueError(f"KMeansConfig.n_iter must be >= 0, got {self.n_iter}")
        if self.init not in KMEANS_INITS:
            raise ValueError(f"KMeansConfig.init must be one of {KMEANS_INITS}, got {self.init!r}")
        if self.tol < 0:
            raise ValueError(f"KMeansConfig.tol must be >= 0, got {self.tol}")
        if self.block_size < 1:
            raise ValueError(f"KMeansConfig.block_size must be >= 1, got {self.block_size}")


@dataclass(frozen=True)
class KMeansResult:
    centroids: torch.Tensor   # (k, d)
    labels: torch.Tensor      # (n,) int64, index of the nearest centroid
    counts: torch.Tensor      # (k,) int64, rows per centroid
    inertia: float            # sum of squared distances to the assigned centroid
    n_iter: int               # Lloyd iterations actually run
    n_reseeded: int           # empty clusters re-seeded over all iterations


def squared_distances(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """(n, d), (k, d) -> (n, k) squared Euclidean distances, clamped at 0 against round-off."""
    return (x.pow(2).sum(1, keepdim=True) - 2.0 * x @ c.T + c.pow(2).sum(1)).clamp_min_(0.0)


def nearest(x: torch.Tensor, c: torch.Tensor, block_size: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of and squared distance to the nearest centroid for every row, in row blocks."""
    labels = torch.empty(x.shape[0], dtype=torch.long)
    dists = torch.empty(x.shape[0], dtype=x.dtype)
    for start in range(0, x.shape[0], block_size):
        d = squared_distances(x[start:start + block_size], c)  # (b, k)
        dists[start:start + block_size], labels[start:start + block_size] = d.min(dim=1)
    return labels, dists


def _init_centroids(x: torch.Tensor, k: int, config: KMeansConfig, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    if config.init == "random":
        return x[torch.randperm(n, generator=gen)[:k]].clone()
    # k-means++: each new centre is drawn with probability proportional to D(x)², the squared
    # distance to the closest centre chosen so far.
    centroids = torch.empty(k, x.shape[1], dtype=x.dtype)
    centroids[0] = x[torch.randint(n, (1,), generator=gen)]
    closest = squared_distances(x, centroids[:1]).squeeze(1)  # (n,)
    for i in range(1, k):
        total = closest.sum()
        if total <= 0:  # fewer distinct rows than k: every row is already a centre
            idx = torch.randint(n, (1,), generator=gen)
        else:
            idx = torch.multinomial(closest / total, 1, generator=gen)
        centroids[i] = x[idx]
        closest = torch.minimum(closest, squared_distances(x, centroids[i:i + 1]).squeeze(1))
    return centroids


def kmeans(x: torch.Tensor, k: int, config: KMeansConfig = KMeansConfig()) -> KMeansResult:
    """Lloyd's k-means on the rows of ``x`` (n, d) with ``k`` centres; deterministic under config.seed.

    An empty cluster is re-seeded with the row farthest from its centre (so it splits the worst-fit
    cluster). With fewer distinct rows than ``k`` some centres coincide and stay empty: callers that
    need every code used must cap ``k`` (the tokenize stage does, with a warning).
    """
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"kmeans expects a non-empty (n, d) matrix, got shape {tuple(x.shape)}")
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"kmeans needs 1 <= k <= n rows, got k={k} for n={x.shape[0]}; lower k")
    if not torch.isfinite(x).all():
        raise ValueError("kmeans input contains NaN or inf; clean the features first")
    x = x.detach().float()
    gen = torch.Generator().manual_seed(config.seed)
    centroids = _init_centroids(x, k, config, gen)
    prev_inertia = float("inf")
    n_reseeded = 0
    it = 0
    for it in range(1, config.n_iter + 1):
        labels, dists = nearest(x, centroids, config.block_size)
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)  # (k, d)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled].unsqueeze(1).to(x.dtype)
        empty = (~filled).nonzero().squeeze(1)
        if len(empty):
            # farthest rows first; ties broken by row index, so the result is deterministic
            far = torch.argsort(dists, descending=True, stable=True)[: len(empty)]
            centroids[empty] = x[far]
            n_reseeded += len(empty)
        inertia = float(dists.sum())
        converged = prev_inertia < float("inf") and prev_inertia - inertia <= config.tol * max(prev_inertia, 1e-12)
        if converged and not len(empty):
            break
        prev_inertia = inertia
    labels, _ = nearest(x, centroids, config.block_size)
    return KMeansResult(
        centroids=centroids,
        labels=labels,
        counts=torch.bincount(labels, minlength=k),
        # exact, not the expanded |x|^2 - 2xc + |c|^2 form `nearest` ranks with (it cancels digits)
        inertia=float(((x - centroids[labels]) ** 2).sum()),
        n_iter=it,
        n_reseeded=n_reseeded,
    )


def residual_kmeans(
    x: torch.Tensor, sizes: tuple[int, ...] | list[int], config: KMeansConfig = KMeansConfig()
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """RQ-KMeans: k-means per level on what the previous levels left over.

    Returns the per-level centroids [(k_l, d)] and the codes (n, L). Level l uses seed
    ``config.seed + l`` so levels do not share random draws.
    """
    residual = x.detach().float().clone()
    codebooks: list[torch.Tensor] = []
    codes = torch.empty(x.shape[0], len(sizes), dtype=torch.long)
    for level, k in enumerate(sizes):
        result = kmeans(residual, k, replace(config, seed=config.seed + level))
        codebooks.append(result.centroids)
        codes[:, level] = result.labels
        residual -= result.centroids[result.labels]
    return codebooks, codes


def sample_rows(n: int, size: int, seed: int) -> torch.Tensor:
    """Sorted indices of ``min(size, n)`` distinct rows drawn uniformly (all rows when size is 0)."""
    if size <= 0 or size >= n:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed)
    return torch.sort(torch.randperm(n, generator=gen)[:size]).values
