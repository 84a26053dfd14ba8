"""The frozen tokenizer: fitted quantizers -> codes, and its checkpoint ``sid/tokenizer.pt``.

Separate from fitting because it outlives it: placing new items after tokenize only needs
this module and the checkpoint.

Checkpoint format 1 (a ``torch.save`` of plain containers, read back with
``torch.load(weights_only=True)``, so loading never unpickles code)::

    {"format": 1, "last_level": "unique" | "nearest",
     "models": [{"modality": str, "kind": "rqvae" | "pq", "config": <model config as a dict>,
                 "state_dict": {name: tensor}}, ...]}      # in digit order

``kind`` picks the module class from :data:`MODEL_KINDS` (an RQ-KMeans tokenizer is an
``RQVAE`` with ``autoencoder=False``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from genrec.io import atomic_path
from genrec.tokenizer.features import FeatureError, check_matrix
from genrec.tokenizer.kmeans import squared_distances
from genrec.tokenizer.pq import PQConfig, ProductQuantizer
from genrec.tokenizer.rqvae import RQVAE, RQVAEConfig
from genrec.tokenizer.semantic_ids import CHECKPOINT_FILE, SemanticIDs, place_new_items

CHECKPOINT_FORMAT = 1
ENCODE_BLOCK = 8192          # rows per forward pass when encoding the catalogue
MODEL_KINDS = {"rqvae": (RQVAE, RQVAEConfig),
               "pq": (ProductQuantizer, PQConfig)}   # checkpoint kind -> (module, config)


def model_kind(model: RQVAE | ProductQuantizer) -> str:
    return next(kind for kind, (cls, _) in MODEL_KINDS.items() if isinstance(model, cls))


class Tokenizer:
    """One RQ-VAE (or RQ-KMeans, or product quantizer) per modality group; codes are concatenated in dict order."""

    def __init__(self, models: dict[str, RQVAE | ProductQuantizer], last_level: str):
        self.models = models
        self.last_level = last_level
        for m in models.values():
            m.eval()

    @property
    def semantic_level_sizes(self) -> tuple[int, ...]:
        """Codebook size of every digit before the dedup digit."""
        return tuple(k for m in self.models.values() for k in m.config.codebook_sizes)

    def check_inputs(self, features: np.ndarray | Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
        """Validate new inputs against the trained input widths; a bare array means the single model."""
        if not isinstance(features, Mapping):
            if len(self.models) != 1:
                raise FeatureError(f"{source}: this tokenizer has one model per modality {list(self.models)}; "
                                   "pass a dict modality -> matrix")
            features = {next(iter(self.models)): features}
        missing = set(self.models) - set(features)
        if missing:
            raise FeatureError(f"{source}: missing matrices for {sorted(missing)} "
                               f"(tokenizer modalities: {list(self.models)})")
        out = {name: check_matrix(features[name], f"{source}[{name!r}]", expected_dim=m.config.input_dim)
               for name, m in self.models.items()}
        if len({x.shape[0] for x in out.values()}) > 1:
            raise FeatureError(f"{source}: matrices disagree on the number of items "
                               f"{[x.shape[0] for x in out.values()]}")
        return out

    @torch.no_grad()
    def encode(self, name: str, x: np.ndarray) -> torch.Tensor:
        """(n, d) -> (n, latent) for modality ``name``, in blocks."""
        model = self.models[name]
        return torch.cat([model.encode(torch.from_numpy(x[s:s + ENCODE_BLOCK]))
                          for s in range(0, x.shape[0], ENCODE_BLOCK)])

    def raw_codes(self, matrices: dict[str, np.ndarray]) -> np.ndarray:
        """(n, L_total) nearest-code tuples, modalities concatenated."""
        parts = [self.models[name].quantize(self.encode(name, matrices[name])) for name in self.models]
        return torch.cat(parts, dim=1).numpy().astype(np.int64)

    @torch.no_grad()
    def last_level_distances(self, matrices: dict[str, np.ndarray], codes: np.ndarray) -> np.ndarray:
        """(n, K_last) squared distances of each item's last-level residual to every last-level code."""
        name = list(self.models)[-1]
        model = self.models[name]
        n_last = model.config.n_levels
        own = torch.from_numpy(codes[:, codes.shape[1] - n_last:])
        z = self.encode(name, matrices[name])
        residual = model.residual_before(z, own, n_last - 1)
        return squared_distances(residual, model.codebooks[-1]).numpy()

    def state(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "last_level": self.last_level,
            "models": [{"modality": name, "kind": model_kind(m), "config": m.config.to_dict(),
                        "state_dict": m.state_dict()}
                       for name, m in self.models.items()],
        }

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            torch.save(self.state(), tmp)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Rebuild the frozen tokenizer from ``sid/tokenizer.pt`` (tensors and plain containers only)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise FeatureError(f"{path}: unknown tokenizer checkpoint format {state.get('format')!r}; "
                           "re-run `genrec tokenize`")
    models = {}
    for entry in state["models"]:
        kind = entry.get("kind", "rqvae")
        if kind not in MODEL_KINDS:
            raise FeatureError(f"{path}: model {entry.get('modality')!r} has unknown kind {kind!r} "
                               f"(known: {list(MODEL_KINDS)}); re-run `genrec tokenize`")
        module, config = MODEL_KINDS[kind]
        model = module(config.from_dict(entry["config"]))
        model.load_state_dict(entry["state_dict"])
        models[entry["modality"]] = model
    return Tokenizer(models, state["last_level"])


def assign_new_items(sid: SemanticIDs, new_features: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
    """Codes (m, n_digits) for items added after tokenize, from the frozen tokenizer in ``sid``.

    new_features: an (m, d) array for a single-tokenizer (fused) artifact, or a mapping
    modality -> (m, d_modality) for a per-modality one. Existing items' codes never change;
    the new items are meant to get item_ids n_items, n_items+1, ... in the given order.
    """
    tokenizer = load_tokenizer(sid.folder / CHECKPOINT_FILE)
    matrices = tokenizer.check_inputs(new_features, source="new_features")
    raw = tokenizer.raw_codes(matrices)
    dists = tokenizer.last_level_distances(matrices, raw) if tokenizer.last_level == "unique" else None
    return place_new_items(sid.codes, raw, dists, dedup_capacity=sid.level_sizes[-1])
