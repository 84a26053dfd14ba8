"""Fitting one tokenizer per modality: normalisation, k-means initialisation, and (RQ-VAE) training.

One fit function per method in :data:`FITTERS`, so adding a method is one entry here and,
if it has settings of its own, one section in ``config.py``. Fitting only builds models;
codes, collisions and the artifact are the stage's business.

Fewer items than ``codebook_size``: every level is capped at n_items codes, with a warning
and a report note (k-means cannot place more distinct centres than there are items).
"""

from __future__ import annotations

import csv
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from genrec.tokenizer.config import TokenizeConfig
from genrec.tokenizer.kmeans import residual_kmeans, sample_rows
from genrec.tokenizer.lit import train_rqvae
from genrec.tokenizer.pq import PQConfig, ProductQuantizer, fit_pq
from genrec.tokenizer.rqvae import RQVAE, RQVAEConfig

CONSTANT_DIM_STD = 1e-12     # a scale below this means constant input: it is centred, not divided by ~0


def input_stats(x: torch.Tensor, normalize: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (d,) and scale (d,) for ``normalize``; a constant input is centred and left unscaled.

    All but "none" give rows of mean squared norm 1 whatever the encoder's units (the regime the
    defaults were tuned in). "scale" changes nothing else, which measured best on Beauty (fewer
    collisions than "center" or "per_dim"); "per_dim" equalises every dimension, which also
    inflates near-constant ones.
    """
    d = x.shape[1]
    if normalize == "none":
        return torch.zeros(d), torch.ones(d)
    mean = torch.zeros(d) if normalize == "scale" else x.mean(dim=0)
    if normalize == "per_dim":
        scale = x.std(dim=0, unbiased=False) * d ** 0.5
    else:
        scale = (x - mean).pow(2).sum(dim=1).mean().sqrt().expand(d)
    return mean, torch.where(scale > CONSTANT_DIM_STD, scale, torch.ones_like(scale))


def kmeans_rows(n_items: int, config: TokenizeConfig, sizes: tuple[int, ...], seed: int) -> torch.Tensor:
    """The catalogue rows k-means fits on: ``kmeans_sample`` of them (at least the largest codebook), 0 = all."""
    size = 0 if config.kmeans_sample == 0 else max(config.kmeans_sample, max(sizes))
    return sample_rows(n_items, size, seed)


@torch.no_grad()
def init_codebooks(model: RQVAE, x: torch.Tensor, config: TokenizeConfig, seed: int, *,
                   batch_size: int | None) -> dict:
    """Residual k-means on the encoded catalogue sample; copy the centres into every level.

    The sample is drawn from the whole catalogue (``kmeans_sample`` rows, at least the largest
    codebook), so the codebooks span all of it, not whatever the first mini-batch holds.
    ``batch_size``: the training batch, in whose units the EMA usage counts are kept; None (no
    training follows) keeps the k-means counts on the sample.
    """
    sizes = model.config.codebook_sizes
    idx = kmeans_rows(x.shape[0], config, sizes, seed)
    z = model.encode(x[idx])                                          # (s, latent)
    centroids, codes = residual_kmeans(z, sizes, config.kmeans_config(seed))
    per_batch = len(idx) if batch_size is None else min(batch_size, x.shape[0])
    for level, c in enumerate(centroids):
        counts = torch.bincount(codes[:, level], minlength=sizes[level]).float()
        # EMA usage is counted per batch; start each code at its expected uses per batch
        model.set_codebook(level, c, counts * per_batch / len(idx))
    residual = z - model.codes_to_latent(codes)
    return {"sample_rows": int(len(idx)), "init_quantization_mse": float(residual.pow(2).mean())}


def last_epoch_metrics(metrics_csv: Path) -> dict:
    if not metrics_csv.exists():
        return {}
    with open(metrics_csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("loss")]
    return {k: float(v) for k, v in rows[-1].items() if v not in ("", None)} if rows else {}


def fit_rqvae(x: torch.Tensor, config: TokenizeConfig, *, sizes: tuple[int, ...], seed: int,
              log_dir: Path, name: str) -> tuple[RQVAE, dict]:
    """method="rqvae": k-means-initialised codebooks, then training (CSV log in ``log_dir/name``)."""
    options = config.rqvae
    model = RQVAE(options.model_config(x.shape[1], sizes))
    model.set_input_stats(*input_stats(x, config.normalize_input))
    model.eval()
    start = time.perf_counter()
    info = init_codebooks(model, x, config, seed, batch_size=options.batch_size)
    info["kmeans_seconds"] = round(time.perf_counter() - start, 2)
    if options.epochs > 0 or options.min_steps > 0:
        start = time.perf_counter()
        metrics_csv = train_rqvae(model, x, options.train_config(seed), log_dir=log_dir, name=name)
        info["train_seconds"] = round(time.perf_counter() - start, 2)
        info["train_log"] = str(metrics_csv.relative_to(log_dir.parent))
        info["final_epoch"] = last_epoch_metrics(metrics_csv)
    return model.eval(), info


def fit_rqkmeans(x: torch.Tensor, config: TokenizeConfig, *, sizes: tuple[int, ...], seed: int,
                 log_dir: Path, name: str) -> tuple[RQVAE, dict]:
    """method="rqkmeans": residual k-means on the normalised inputs (an RQVAE with identity encoder), no training."""
    d = x.shape[1]
    model = RQVAE(RQVAEConfig(input_dim=d, latent_dim=d, hidden_dims=(), codebook_sizes=sizes, autoencoder=False))
    model.set_input_stats(*input_stats(x, config.normalize_input))
    model.eval()
    start = time.perf_counter()
    info = init_codebooks(model, x, config, seed, batch_size=None)
    info["kmeans_seconds"] = round(time.perf_counter() - start, 2)
    return model.eval(), info


def fit_product_quantizer(x: torch.Tensor, config: TokenizeConfig, *, sizes: tuple[int, ...], seed: int,
                          log_dir: Path, name: str) -> tuple[ProductQuantizer, dict]:
    """method="pq": normalise, rotate, k-means per subspace on a catalogue sample (no training)."""
    model = ProductQuantizer(PQConfig(input_dim=x.shape[1], codebook_sizes=sizes))
    model.set_input_stats(*input_stats(x, config.normalize_input))
    model.set_rotation(seed)
    start = time.perf_counter()
    info = fit_pq(model, x, kmeans_rows(x.shape[0], config, sizes, seed), config.kmeans_config(seed))
    info["kmeans_seconds"] = round(time.perf_counter() - start, 2)
    return model.eval(), info


Fitter = Callable[..., tuple[RQVAE | ProductQuantizer, dict]]
FITTERS: dict[str, Fitter] = {"rqvae": fit_rqvae, "rqkmeans": fit_rqkmeans, "pq": fit_product_quantizer}


def fit_model(x_np: np.ndarray, config: TokenizeConfig, *, sizes: tuple[int, ...], seed: int,
              log_dir: Path, name: str) -> tuple[RQVAE | ProductQuantizer, dict]:
    """Build and fit one tokenizer of ``config.method`` on (n, d) features; returns it with fit info."""
    torch.manual_seed(seed)
    return FITTERS[config.method](torch.from_numpy(x_np), config, sizes=sizes, seed=seed, log_dir=log_dir, name=name)


def capped_sizes(n_items: int, config: TokenizeConfig, notes: list[str]) -> tuple[int, ...]:
    """Codebook size per level, capped at ``n_items`` (with a warning and a report note)."""
    k = config.codebook_size
    if n_items < k:
        msg = (f"only {n_items} items for codebook_size={k}: every level is capped at {n_items} codes "
               "(k-means cannot place more distinct centres than items)")
        warnings.warn(msg, stacklevel=3)
        notes.append(msg)
        k = n_items
    return (k,) * config.n_levels
