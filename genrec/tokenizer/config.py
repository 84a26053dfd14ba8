"""``TokenizeConfig``: the tokenize stage's settings, with one nested section per method that has its own.

Shared fields apply to every method. Settings only one method reads live in that method's
section (today only ``rqvae:``; RQ-KMeans and PQ are fitted by k-means alone and have no
settings beyond the shared ones), and a section changed from its defaults while another
method is selected is an error, so no flag is silently ignored.

Terms, the same in the config, the sid manifest and :class:`~genrec.tokenizer.semantic_ids.SemanticIDs`:
a *level* is one quantization step of one tokenizer (a residual level, or a PQ subspace), and
``n_levels`` counts them per tokenizer, without the dedup digit. A *digit* is one column of an
item's semantic ID: ``n_digits = n_levels * n_modalities + 1`` (the last one is the dedup digit).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from genrec.tokenizer.kmeans import KMEANS_INITS, KMeansConfig
from genrec.tokenizer.lit import TrainConfig
from genrec.tokenizer.rqvae import CODEBOOK_UPDATES, RQVAEConfig

METHODS = ("rqvae", "rqkmeans", "pq")
MODALITY_MODES = ("fused", "separate")
LAST_LEVEL_RULES = ("nearest", "unique")
NORMALIZATIONS = ("scale", "center", "per_dim", "none")


def _check(owner: str, config, choices: dict, positive: tuple = (), non_negative: tuple = ()) -> None:
    for name, allowed in choices.items():
        if getattr(config, name) not in allowed:
            raise ValueError(f"{owner}.{name} must be one of {allowed}, got {getattr(config, name)!r}")
    for name in positive:
        if getattr(config, name) < 1:
            raise ValueError(f"{owner}.{name} must be >= 1, got {getattr(config, name)}")
    for name in non_negative:
        if getattr(config, name) < 0:
            raise ValueError(f"{owner}.{name} must be >= 0, got {getattr(config, name)}")


@dataclass(frozen=True, kw_only=True)
class RQVAEMethodConfig:
    """method="rqvae" only: the autoencoder, its quantizer and its training schedule."""

    latent_dim: int = 32              # RQ-VAE latent width
    hidden_dims: tuple[int, ...] = (256, 128)  # RQ-VAE encoder MLP widths; the decoder mirrors them
    epochs: int = 30                  # RQ-VAE training passes over the catalogue
    min_steps: int = 600              # at least this many RQ-VAE steps, so small catalogues still converge
    batch_size: int = 512             # items per RQ-VAE optimisation step
    lr: float = 2e-3                  # AdamW peak learning rate (cosine decay)
    weight_decay: float = 1e-4        # AdamW weight decay
    commitment_weight: float = 0.25   # beta of the commitment loss at every level
    codebook_update: str = "ema"      # "ema" or "learnable" codebooks
    ema_decay: float = 0.95           # EMA decay of codebook statistics
    dead_code_threshold: float = 0.1  # re-seed a code from batch residuals when its EMA uses/batch fall below this

    def __post_init__(self):
        object.__setattr__(self, "hidden_dims", tuple(int(h) for h in self.hidden_dims))
        _check("TokenizeConfig.rqvae", self, {"codebook_update": CODEBOOK_UPDATES},
               positive=("latent_dim", "batch_size"),
               non_negative=("epochs", "min_steps", "weight_decay", "commitment_weight", "dead_code_threshold"))
        if self.lr <= 0 or not 0 < self.ema_decay < 1:
            raise ValueError("TokenizeConfig.rqvae: lr must be > 0 and ema_decay in (0, 1), "
                             f"got {self.lr}, {self.ema_decay}")

    def model_config(self, input_dim: int, codebook_sizes: tuple[int, ...]) -> RQVAEConfig:
        return RQVAEConfig(input_dim=input_dim, latent_dim=self.latent_dim, hidden_dims=self.hidden_dims,
                           codebook_sizes=codebook_sizes, commitment_weight=self.commitment_weight,
                           codebook_update=self.codebook_update, ema_decay=self.ema_decay,
                           dead_code_threshold=self.dead_code_threshold)

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, min_steps=self.min_steps, batch_size=self.batch_size, lr=self.lr,
                           weight_decay=self.weight_decay, seed=seed)


# The sections of TokenizeConfig and the one method each belongs to.
METHOD_SECTIONS = {"rqvae": "rqvae"}


@dataclass(frozen=True, kw_only=True)
class TokenizeConfig:
    method: str = "rqvae"             # "rqvae" (trained autoencoder), "rqkmeans" (residual k-means), "pq" (product
                                      # quantization: flat digits for model.head=parallel)
    modalities: str = "fused"         # "fused": one tokenizer on fused.npy; "separate": one per
                                      # text/image/collab present
    n_levels: int = 3                 # code levels per tokenizer (PQ: subspaces), dedup digit NOT counted; an item's ID
                                      # has n_levels x (tokenizers: 1, or modalities with "separate") + 1 dedup digit
    codebook_size: int = 256          # codes per level (capped at n_items, with a warning)
    normalize_input: str = "scale"    # "scale": divide by the RMS row norm (geometry kept, units fixed); "center":
                                      # centre first; "per_dim": z-score each dimension; "none". Kept in the checkpoint.
    kmeans_sample: int = 20000        # catalogue rows k-means fits on (every method); 0 = all items
    kmeans_iters: int = 30            # Lloyd iterations per level
    kmeans_init: str = "kmeans++"     # "kmeans++" or "random"
    last_level: str = "unique"        # "unique": colliding items take the nearest free last-level code;
                                      # "nearest": plain
    dedup_capacity: int = 0           # dedup-digit vocabulary; 0 = largest collision group (>= it when set)
    seed: int = 0                     # model init, sampling, k-means, shuffling
    num_threads: int = 1              # torch CPU threads while tokenizing; 0 = keep torch's setting. The matrices
                                      # are small, so one thread beats two on a shared 2-core machine (sync overhead)
    rqvae: RQVAEMethodConfig = field(default_factory=RQVAEMethodConfig)  # method="rqvae" only

    def __post_init__(self):
        _check("TokenizeConfig", self,
               {"method": METHODS, "modalities": MODALITY_MODES, "last_level": LAST_LEVEL_RULES,
                "kmeans_init": KMEANS_INITS, "normalize_input": NORMALIZATIONS},
               positive=("n_levels", "codebook_size"),
               non_negative=("num_threads", "kmeans_sample", "kmeans_iters", "dedup_capacity"))
        for section, method in METHOD_SECTIONS.items():
            given = getattr(self, section)
            default = type(given)()
            changed = [f.name for f in fields(given) if getattr(given, f.name) != getattr(default, f.name)]
            if method != self.method and changed:
                raise ValueError(
                    f"TokenizeConfig.{section}.{changed[0]} is set, but {section}.* applies only to "
                    f"method={method!r} and method is {self.method!r}: remove the {section} settings "
                    f"({', '.join(changed)}) or set method: {method}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["rqvae"]["hidden_dims"] = list(self.rqvae.hidden_dims)
        return d

    def kmeans_config(self, seed: int) -> KMeansConfig:
        return KMeansConfig(n_iter=self.kmeans_iters, init=self.kmeans_init, seed=seed)
