"""A tiny export that `genrec add-items` can extend (tests/test_add_items.py, tests/serving/test_reload.py).

The tiny model of tests/tiny.py (37 items, codebooks 5/7/11 + a dedup digit of 3) with a parallel head, a
13-d content vector and a learned id embedding, shipped with what add-items needs: a featurizer whose text
modality is the bundled MiniLM (short max_length) and whose second modality ("collab") is absent for new
items, fused and PCA-projected to 13 dims; and an RQ-KMeans tokenizer with codebooks of 5/7/11 on those vectors.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

CONTENT_DIM = 13       # odd, and smaller than the 384 + 5 concatenation: exercises the PCA path
COLLAB_DIM = 5
TEXT_MAX_LENGTH = 32


def catalogue_titles() -> list[str | None]:
    """Distinct product titles; item 7 has none (its text modality is absent), as in tests/tiny.py."""
    kinds = ["stapler", "notebook", "pen", "desk lamp", "printer paper", "folder", "calculator", "ink cartridge",
             "whiteboard", "scissors", "tape", "envelope", "binder"]
    return [None if i == 7 else f"{kinds[i % len(kinds)]} model {i}" for i in range(37)]


def build_featurizer(seed: int = 0):
    """(featurizer, fused vectors of the 37 catalogue items)."""
    from genrec.catalog.featurizer import Featurizer, _pca_axes
    from genrec.features.text import TextConfig, TextEncoder

    text_cfg = TextConfig(max_length=TEXT_MAX_LENGTH)
    encoder = TextEncoder(text_cfg)
    titles = catalogue_titles()
    text = np.zeros((len(titles), encoder.dim))
    present = np.array([t is not None for t in titles])
    text[present], _ = encoder.encode([t for t in titles if t is not None], progress=False)
    text[~present] = text[present].mean(axis=0)
    collab = np.random.default_rng(seed).normal(size=(len(titles), COLLAB_DIM))
    settings = asdict(text_cfg)
    settings["template"] = list(settings["template"])
    feat = Featurizer(
        modalities={"text": {"new_items": "encode", "dim": encoder.dim, "weight": 1.0, "source": "encoder"},
                    "collab": {"new_items": "mean", "dim": COLLAB_DIM, "weight": 0.5, "source": "sasrec"}},
        tokenizer_inputs=["fused"], text={**settings, "fingerprint": encoder.fingerprint})
    raw, masks = {"text": text, "collab": collab}, {"text": present, "collab": np.ones(len(titles), bool)}
    for name, x in raw.items():
        feat.mean[name], feat.std[name] = x[masks[name]].mean(axis=0), x[masks[name]].std(axis=0)
    feat.pca = _pca_axes(feat._concat(raw, masks), CONTENT_DIM, whiten=False)
    return feat, feat.fuse(raw, masks)


def build_tokenizer(fused: np.ndarray, path: Path, seed: int = 0) -> Path:
    import torch

    from genrec.tokenizer.rqvae import RQVAE, RQVAEConfig
    from genrec.tokenizer.tokenizer import Tokenizer
    from tiny import LEVELS

    sizes = LEVELS[:-1]
    rq = RQVAE(RQVAEConfig(input_dim=CONTENT_DIM, latent_dim=CONTENT_DIM, hidden_dims=(), codebook_sizes=sizes,
                           autoencoder=False))
    rng = np.random.default_rng(seed)
    scale = float(np.abs(fused).mean())
    for level, k in enumerate(sizes):
        centroids = torch.as_tensor(rng.normal(scale=scale / (level + 1), size=(k, CONTENT_DIM)), dtype=torch.float32)
        rq.set_codebook(level, centroids, torch.ones(k))
    Tokenizer({"fused": rq}, "nearest").save(path)
    return path


# The attribute vocabulary of an export whose model reads item attributes (tests/tiny.py's N_ATTRIBUTES ids).
ATTRIBUTE_VOCAB = ["brand:Acme", "brand:Leaf", "category:Office", "category:Paper", "category:Tools"]


def build_addable_export(folder: Path, name: str = "addable", attributes: list[str] | None = None):
    """Write the export into ``folder`` (a new path); returns (export folder, module). ``attributes``: the
    model reads item attributes (tests/tiny.py's table) and the export ships this vocabulary."""
    import torch

    from genrec.catalog.featurizer import AddItemsAssets
    from genrec.export import ExportConfig, export_module
    from tiny import source_ids, tiny_module

    feat, fused = build_featurizer()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(fused, folder.parent / f"{name}-tokenizer.pt")
    module = tiny_module(content_dim=CONTENT_DIM, item_id_embedding=True, head="parallel",
                         attributes=attributes is not None)
    with torch.no_grad():
        module.genrec.content.copy_(torch.as_tensor(fused))
    popularity = list(range(37, 0, -1))
    categories = [["Office", "Paper"] if i % 2 else ["Office", "Tools"] for i in range(37)]
    # The legacy exporter keeps these tests fast (the dynamo path is covered by tests/export and bench/cold_start.py).
    export_module(module, folder, ExportConfig(name=name, thumbnail_size=0, exporter="legacy"), source_ids=source_ids(),
                  titles=catalogue_titles(), categories=[c[-1] for c in categories], popularity=popularity,
                  add_items=AddItemsAssets(tokenizer=tokenizer, featurizer=feat, attributes=attributes))
    return folder, module


NEW_ITEMS = [
    {"source_id": "NEW-1", "title": "ergonomic stapler deluxe", "brand": "Acme", "categories": ["Office", "Tools"]},
    {"parent_asin": "NEW-2", "title": "recycled notebook pack", "store": "Leaf", "categories": "Office, Paper",
     "price": "$4.99"},
    {"source_id": "NEW-3", "title": "fountain pen with ink", "description": ["Smooth", "refillable"]},
    {"source_id": "NEW-4"},                                         # no text at all: the text modality is absent
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
