"""The RQ-VAE: MLP encoder -> residual vector quantizer -> MLP decoder.

Model only: no I/O, no training loop (see ``lit.py``), no codebook initialisation policy
(see ``kmeans.py`` and ``fit.py``). The residual quantizer is vector-quantize-pytorch's
``ResidualVQ``; its own ``kmeans_init`` is *off*, because it initialises on the first
forward call (even in eval mode) from whatever batch that happens to be. Codebooks are set
explicitly with :meth:`RQVAE.set_codebook` instead.

With ``autoencoder=False`` the encoder and decoder are identities, so the same module
holds an RQ-KMeans tokenizer (codebooks from residual k-means on the inputs, no training).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from vector_quantize_pytorch import ResidualVQ

from genrec.tokenizer.kmeans import squared_distances

CODEBOOK_UPDATES = ("ema", "learnable")


@dataclass(frozen=True, kw_only=True)
class RQVAEConfig:
    input_dim: int                                  # width of the item feature vector
    latent_dim: int = 32                            # width of the quantized latent
    hidden_dims: tuple[int, ...] = (256, 128)       # encoder MLP widths (decoder mirrors them)
    codebook_sizes: tuple[int, ...] = (256, 256, 256)  # codes per residual level
    autoencoder: bool = True                        # False: identity encoder/decoder (RQ-KMeans)
    commitment_weight: float = 0.25                 # beta on ||z - sg(q)||² per level
    codebook_update: str = "ema"                    # "ema" (k-means-like running means) or "learnable"
    ema_decay: float = 0.95                         # EMA decay of codebook statistics (ema only)
    dead_code_threshold: float = 0.1                # re-seed a code whose EMA batch count drops below this; 0 = never

    def __post_init__(self):
        object.__setattr__(self, "hidden_dims", tuple(int(h) for h in self.hidden_dims))
        object.__setattr__(self, "codebook_sizes", tuple(int(k) for k in self.codebook_sizes))
        if self.input_dim < 1:
            raise ValueError(f"RQVAEConfig.input_dim must be >= 1, got {self.input_dim}")
        if self.latent_dim < 1:
            raise ValueError(f"RQVAEConfig.latent_dim must be >= 1, got {self.latent_dim}")
        if any(h < 1 for h in self.hidden_dims):
            raise ValueError(f"RQVAEConfig.hidden_dims must be positive, got {self.hidden_dims}")
        if not self.codebook_sizes or min(self.codebook_sizes) < 1:
            raise ValueError(f"RQVAEConfig.codebook_sizes must be a non-empty tuple of positive ints, "
                             f"got {self.codebook_sizes}")
        if not self.autoencoder and (self.latent_dim != self.input_dim or self.hidden_dims):
            raise ValueError(
                "RQVAEConfig: autoencoder=False (RQ-KMeans) quantizes the input itself; "
                f"set latent_dim=input_dim ({self.input_dim}) and hidden_dims=() "
                f"(got {self.latent_dim}, {self.hidden_dims})"
            )
        if self.codebook_update not in CODEBOOK_UPDATES:
            raise ValueError(f"RQVAEConfig.codebook_update must be one of {CODEBOOK_UPDATES}, "
                             f"got {self.codebook_update!r}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"RQVAEConfig.ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.commitment_weight < 0 or self.dead_code_threshold < 0:
            raise ValueError("RQVAEConfig.commitment_weight and dead_code_threshold must be >= 0")

    @property
    def n_levels(self) -> int:
        return len(self.codebook_sizes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden_dims"] = list(self.hidden_dims)
        d["codebook_sizes"] = list(self.codebook_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RQVAEConfig":
        return cls(**d)


def mlp(widths: list[int]) -> nn.Module:
    """Linear layers with SiLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


@dataclass
class RQVAEOutput:
    target: torch.Tensor        # (b, input_dim) normalised input: what the decoder reconstructs
    recon: torch.Tensor         # (b, input_dim)
    z: torch.Tensor             # (b, latent_dim) encoder output
    z_q: torch.Tensor           # (b, latent_dim) quantized latent
    codes: torch.Tensor         # (b, L) int64
    commit_losses: torch.Tensor  # (L,) already weighted by commitment_weight (zero in eval mode)


class RQVAE(nn.Module):
    def __init__(self, config: RQVAEConfig):
        super().__init__()
        self.config = config
        # Input standardisation, part of the model so new items go through the same transform.
        self.register_buffer("input_mean", torch.zeros(config.input_dim))
        self.register_buffer("input_scale", torch.ones(config.input_dim))
        if config.autoencoder:
            self.encoder = mlp([config.input_dim, *config.hidden_dims, config.latent_dim])
            self.decoder = mlp([config.latent_dim, *reversed(config.hidden_dims), config.input_dim])
        else:
            self.encoder = nn.Identity()
            self.decoder = nn.Identity()
        ema = config.codebook_update == "ema"
        self.rvq = ResidualVQ(
            dim=config.latent_dim,
            codebook_size=config.codebook_sizes,
            kmeans_init=False,  # we initialise explicitly from a catalogue sample
            decay=config.ema_decay,
            ema_update=ema,
            learnable_codebook=not ema,
            commitment_weight=config.commitment_weight,
            threshold_ema_dead_code=config.dead_code_threshold,
        )

    # ---- pieces -------------------------------------------------------------------------

    def set_input_stats(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        """Standardise inputs as (x - mean) / scale from now on; both (input_dim,)."""
        self.input_mean.copy_(mean)
        self.input_scale.copy_(scale)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.input_mean) / self.input_scale

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(b, input_dim) raw features -> (b, latent_dim)."""
        return self.encoder(self.normalize(x))

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """(b, latent_dim) -> (b, input_dim) reconstruction of the *normalised* input."""
        return self.decoder(z_q)

    @property
    def codebooks(self) -> list[torch.Tensor]:
        """Per level (k_l, latent_dim) code vectors."""
        return [layer.codebook for layer in self.rvq.layers]

    @torch.no_grad()
    def set_codebook(self, level: int, centroids: torch.Tensor, cluster_size: torch.Tensor) -> None:
        """Overwrite level ``level``'s codes (k, latent_dim) and its EMA usage statistics (k,).

        ``cluster_size`` is in the units the dead-code rule uses: expected uses per batch.
        """
        cb = self.rvq.layers[level]._codebook
        k = self.config.codebook_sizes[level]
        if centroids.shape != (k, self.config.latent_dim) or cluster_size.shape != (k,):
            raise ValueError(
                f"level {level}: expected centroids ({k}, {self.config.latent_dim}) and cluster_size ({k},), "
                f"got {tuple(centroids.shape)} and {tuple(cluster_size.shape)}"
            )
        cb.embed.data.copy_(centroids.unsqueeze(0))
        cb.cluster_size.data.copy_(cluster_size.unsqueeze(0))
        cb.embed_avg.data.copy_(centroids.unsqueeze(0) * cluster_size.view(1, k, 1))
        cb.initted.data.fill_(True)

    @torch.no_grad()
    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """(b, latent_dim) -> (b, L) nearest-code indices, level by level (never touches codebooks)."""
        residual = z.clone()
        codes = []
        for cb in self.codebooks:
            idx = squared_distances(residual, cb).argmin(dim=1)  # (b,)
            codes.append(idx)
            residual -= cb[idx]
        return torch.stack(codes, dim=1)

    @torch.no_grad()
    def residual_before(self, z: torch.Tensor, codes: torch.Tensor, level: int) -> torch.Tensor:
        """(b, latent_dim) residual left for level ``level`` after the first ``level`` codes."""
        residual = z.clone()
        for lv in range(level):
            residual -= self.codebooks[lv][codes[:, lv]]
        return residual

    def codes_to_latent(self, codes: torch.Tensor) -> torch.Tensor:
        """(b, L) codes -> (b, latent_dim) sum of their code vectors."""
        return self.rvq.get_output_from_indices(codes)

    # ---- full pass ----------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> RQVAEOutput:
        target = self.normalize(x)                       # (b, input_dim)
        z = self.encoder(target)                         # (b, latent_dim)
        z_q, codes, commit_losses = self.rvq(z)          # (b, latent_dim), (b, L), (L,)
        recon = self.decoder(z_q)                        # (b, input_dim)
        return RQVAEOutput(target=target, recon=recon, z=z, z_q=z_q, codes=codes, commit_losses=commit_losses)

    def reconstruction_error(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """(b,) mean squared error per item between the normalised input and its decoded codes."""
        recon = self.decode(self.codes_to_latent(codes))
        return F.mse_loss(recon, self.normalize(x), reduction="none").mean(dim=1)
