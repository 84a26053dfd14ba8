"""The ``tokenize`` stage: RUN/features/ -> RUN/sid/ (semantic IDs + frozen tokenizer + report).

config -> features -> fit one tokenizer per modality group -> codes -> collisions -> dedup -> artifact.

Inputs (written by ``genrec embed``): ``features/manifest.json`` and ``fused.npy``, optionally
``text.npy``/``image.npy``/``collab.npy``; row i of each is item_id i. The default tokenizes
``fused.npy`` with one RQ-VAE; ``modalities="separate"`` fits one per modality present and
concatenates the codes (MSCGRec-style), followed by one shared dedup level.

Degenerate input, and what happens:
- NaN/inf in any row, a non-2-D matrix, zero rows or columns, or matrices whose row counts
  disagree: ``FeatureError`` naming the file, the offending rows and the fix. Nothing is skipped.
- Fewer items than ``codebook_size``: every level is capped at n_items codes, with a warning
  and a note in report.json (k-means cannot place more distinct centres than there are items).
- Identical vectors: tokenizing still works; they receive the same codes on the levels that
  cannot tell them apart, and the last level ("unique") or the dedup level separates them.
"""

from __future__ import annotations

import csv
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from genrec.io import atomic_path, publish_folder, read_manifest, sha256_file, temp_folder_beside, write_json_atomic
from genrec.tokenizer.kmeans import KMEANS_INITS, KMeansConfig, residual_kmeans, sample_rows, squared_distances
from genrec.tokenizer.lit import TrainConfig, train_rqvae
from genrec.tokenizer.pq import PQConfig, ProductQuantizer, fit_pq
from genrec.tokenizer.rqvae import CODEBOOK_UPDATES, RQVAE, RQVAEConfig
from genrec.tokenizer.semantic_ids import (
    CHECKPOINT_FILE,
    SID_DIR,
    add_dedup_level,
    collision_stats,
    level_usage,
    resolve_last_level,
    write_semantic_ids,
)

FEATURES_DIR = "features"
FEATURES_STAGE = "embed"
FUSED = "fused"
SEPARATE_MODALITIES = ("text", "image", "collab")   # the modalities "separate" mode looks for if the manifest lists none
MASK_SUFFIX = "_mask"        # <m>_mask.npy from embed: True = item has modality m (absent rows hold the mean)
METHODS = ("rqvae", "rqkmeans", "pq")
MODALITY_MODES = ("fused", "separate")
LAST_LEVEL_RULES = ("nearest", "unique")
NORMALIZATIONS = ("scale", "center", "per_dim", "none")
REPORT_JSON = "report.json"
REPORT_PNG = "report.png"
LOGS_DIR = "logs"
CHECKPOINT_FORMAT = 1
ENCODE_BLOCK = 8192          # rows per forward pass when encoding the catalogue
CONSTANT_DIM_STD = 1e-12     # a scale below this means constant input: it is centred, not divided by ~0


class FeatureError(ValueError):
    """The features folder cannot be tokenized as it is; the message names the file and the fix."""


@dataclass(frozen=True, kw_only=True)
class TokenizeConfig:
    method: str = "rqvae"             # "rqvae" (trained autoencoder), "rqkmeans" (residual k-means), "pq" (product quantization: flat digits for model.head=parallel)
    modalities: str = "fused"         # "fused": one tokenizer on fused.npy; "separate": one per text/image/collab present
    n_levels: int = 3                 # semantic levels per tokenizer (the dedup level comes on top)
    codebook_size: int = 256          # codes per semantic level (capped at n_items, with a warning)
    latent_dim: int = 32              # RQ-VAE latent width
    hidden_dims: tuple[int, ...] = (256, 128)  # RQ-VAE encoder MLP widths; the decoder mirrors them
    normalize_input: str = "scale"    # "scale": divide by the RMS row norm (geometry kept, units fixed); "center":
                                      # centre first; "per_dim": z-score each dimension; "none". Kept in the checkpoint.
    epochs: int = 30                  # RQ-VAE training passes over the catalogue
    min_steps: int = 600              # at least this many RQ-VAE steps, so small catalogues still converge
    batch_size: int = 512             # items per RQ-VAE optimisation step
    lr: float = 2e-3                  # AdamW peak learning rate (cosine decay)
    weight_decay: float = 1e-4        # AdamW weight decay
    commitment_weight: float = 0.25   # beta of the commitment loss at every level
    codebook_update: str = "ema"      # "ema" or "learnable" codebooks
    ema_decay: float = 0.95           # EMA decay of codebook statistics
    dead_code_threshold: float = 0.1  # re-seed a code from batch residuals when its EMA uses/batch fall below this
    kmeans_sample: int = 20000        # catalogue rows for k-means codebook init; 0 = all items
    kmeans_iters: int = 30            # Lloyd iterations per level
    kmeans_init: str = "kmeans++"     # "kmeans++" or "random"
    last_level: str = "unique"        # "unique": colliding items take the nearest free last-level code; "nearest": plain
    dedup_capacity: int = 0           # dedup-level vocabulary; 0 = largest collision group (>= it when set)
    seed: int = 0                     # model init, sampling, k-means, shuffling
    num_threads: int = 1              # torch CPU threads while tokenizing; 0 = keep torch's setting. The matrices
                                      # are small, so one thread beats two on a shared 2-core machine (sync overhead)

    def __post_init__(self):
        object.__setattr__(self, "hidden_dims", tuple(int(h) for h in self.hidden_dims))
        choices = {"method": METHODS, "modalities": MODALITY_MODES, "codebook_update": CODEBOOK_UPDATES,
                   "last_level": LAST_LEVEL_RULES, "kmeans_init": KMEANS_INITS,
                   "normalize_input": NORMALIZATIONS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"TokenizeConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        positive = ("n_levels", "codebook_size", "latent_dim", "batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"TokenizeConfig.{name} must be >= 1, got {getattr(self, name)}")
        non_negative = ("epochs", "min_steps", "num_threads", "kmeans_sample", "kmeans_iters", "dedup_capacity", "weight_decay",
                        "commitment_weight", "dead_code_threshold")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ValueError(f"TokenizeConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0 or not 0 < self.ema_decay < 1:
            raise ValueError(f"TokenizeConfig: lr must be > 0 and ema_decay in (0, 1), got {self.lr}, {self.ema_decay}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden_dims"] = list(self.hidden_dims)
        return d

    def model_config(self, input_dim: int, codebook_sizes: tuple[int, ...]) -> RQVAEConfig:
        autoencoder = self.method == "rqvae"
        return RQVAEConfig(
            input_dim=input_dim,
            latent_dim=self.latent_dim if autoencoder else input_dim,
            hidden_dims=self.hidden_dims if autoencoder else (),
            codebook_sizes=codebook_sizes,
            autoencoder=autoencoder,
            commitment_weight=self.commitment_weight,
            codebook_update=self.codebook_update,
            ema_decay=self.ema_decay,
            dead_code_threshold=self.dead_code_threshold,
        )

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, min_steps=self.min_steps, batch_size=self.batch_size, lr=self.lr,
                           weight_decay=self.weight_decay, seed=seed)

    def kmeans_config(self, seed: int) -> KMeansConfig:
        return KMeansConfig(n_iter=self.kmeans_iters, init=self.kmeans_init, seed=seed)


# ---- features ----------------------------------------------------------------------------

@dataclass
class Features:
    folder: Path
    manifest: dict
    matrices: dict[str, np.ndarray]                       # name -> (n_items, d) float32, in code order
    checksums: dict[str, str] = field(default_factory=dict)  # file name -> sha256 of the file read
    missing: dict[str, int] = field(default_factory=dict)    # modality -> items its <m>_mask.npy marks absent

    @property
    def n_items(self) -> int:
        return next(iter(self.matrices.values())).shape[0]


def check_matrix(x: np.ndarray, where: str, *, expected_dim: int | None = None) -> np.ndarray:
    """Validate one (n, d) feature matrix; return it as float32 or raise FeatureError."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise FeatureError(f"{where}: expected a non-empty 2-D (n_items, dim) matrix, got shape {x.shape}; re-run `genrec embed`")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise FeatureError(f"{where}: expected real numbers, got dtype {x.dtype}")
    if expected_dim is not None and x.shape[1] != expected_dim:
        raise FeatureError(f"{where}: expected {expected_dim} columns (the tokenizer's input width), got {x.shape[1]}")
    x = x.astype(np.float32, copy=False)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
        raise FeatureError(
            f"{where}: {len(rows)} of {x.shape[0]} rows contain NaN or inf (rows {shown}). Every item needs a finite "
            "vector: fix or re-run `genrec embed` (missing modalities must be imputed there, not here)"
        )
    return x


def load_features(run: str | Path, modalities: str = "fused") -> Features:
    """Read and validate the matrices ``tokenize`` needs from RUN/features (or a features folder)."""
    folder = Path(run)
    if (folder / FEATURES_DIR).is_dir():
        folder = folder / FEATURES_DIR
    manifest = read_manifest(folder, FEATURES_STAGE)
    if modalities == "fused":
        names = [FUSED]
    else:
        # the embed manifest's modalities, a JSON object and so in sorted order (collab, image, text);
        # the order only decides which digits come first, and the sid manifest records it
        listed_modalities = list(manifest.get("modalities") or SEPARATE_MODALITIES)
        names = [m for m in listed_modalities if m != FUSED and (folder / f"{m}.npy").exists()]
    if not names:
        raise FeatureError(f"{folder}: modalities='separate' needs at least one of "
                           f"{[m + '.npy' for m in SEPARATE_MODALITIES]}; re-run `genrec embed` or use modalities='fused'")
    listed = manifest.get("files", {})
    matrices, checksums, missing = {}, {}, {}
    for name in names:
        path = folder / f"{name}.npy"
        if not path.exists():
            raise FeatureError(f"{path} not found; run `genrec embed --run RUN` first")
        checksums[path.name] = sha256_file(path)
        if path.name in listed and listed[path.name] != checksums[path.name]:
            raise FeatureError(f"{path}: checksum differs from {folder / 'manifest.json'}; the file changed after "
                               "`genrec embed` wrote it: re-run `genrec embed`")
        matrices[name] = check_matrix(np.load(path, allow_pickle=False), str(path))
        mask_path = folder / f"{name}{MASK_SUFFIX}.npy"
        if mask_path.exists():
            missing[name] = int((~np.load(mask_path, allow_pickle=False).astype(bool)).sum())
    rows = {name: m.shape[0] for name, m in matrices.items()}
    if len(set(rows.values())) > 1:
        raise FeatureError(f"{folder}: feature matrices disagree on the number of items {rows}; re-run `genrec embed`")
    expected = manifest.get("n_items")
    if expected is not None and int(expected) != next(iter(rows.values())):
        raise FeatureError(f"{folder}: manifest says n_items={expected} but the matrices have {rows}; re-run `genrec embed`")
    return Features(folder=folder, manifest=manifest, matrices=matrices, checksums=checksums, missing=missing)


# ---- the frozen tokenizer ----------------------------------------------------------------

class Tokenizer:
    """One RQ-VAE (or RQ-KMeans, or product quantizer) per modality group; codes are concatenated in dict order."""

    def __init__(self, models: dict[str, RQVAE | ProductQuantizer], last_level: str):
        self.models = models
        self.last_level = last_level
        for m in models.values():
            m.eval()

    @property
    def semantic_level_sizes(self) -> tuple[int, ...]:
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
            raise FeatureError(f"{source}: missing matrices for {sorted(missing)} (tokenizer modalities: {list(self.models)})")
        out = {name: check_matrix(features[name], f"{source}[{name!r}]", expected_dim=m.config.input_dim)
               for name, m in self.models.items()}
        if len({x.shape[0] for x in out.values()}) > 1:
            raise FeatureError(f"{source}: matrices disagree on the number of items {[x.shape[0] for x in out.values()]}")
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
            "models": [{"modality": name, "kind": "pq" if isinstance(m, ProductQuantizer) else "rqvae",
                        "config": m.config.to_dict(), "state_dict": m.state_dict()}
                       for name, m in self.models.items()],
        }

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            torch.save(self.state(), tmp)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Rebuild the frozen tokenizer from ``sid/tokenizer.pt``."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise FeatureError(f"{path}: unknown tokenizer checkpoint format {state.get('format')!r}; re-run `genrec tokenize`")
    models = {}
    for entry in state["models"]:
        if entry.get("kind", "rqvae") == "pq":
            model = ProductQuantizer(PQConfig.from_dict(entry["config"]))
        else:
            model = RQVAE(RQVAEConfig.from_dict(entry["config"]))
        model.load_state_dict(entry["state_dict"])
        models[entry["modality"]] = model
    return Tokenizer(models, state["last_level"])


# ---- fitting -----------------------------------------------------------------------------

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
def init_codebooks(model: RQVAE, x: torch.Tensor, config: TokenizeConfig, seed: int) -> dict:
    """Residual k-means on the encoded catalogue sample; copy the centres into every level.

    The sample is drawn from the whole catalogue (``kmeans_sample`` rows, at least the largest
    codebook), so the codebooks span all of it, not whatever the first mini-batch holds.
    """
    sizes = model.config.codebook_sizes
    idx = kmeans_rows(x.shape[0], config, sizes, seed)
    z = model.encode(x[idx])                                          # (s, latent)
    centroids, codes = residual_kmeans(z, sizes, config.kmeans_config(seed))
    for level, c in enumerate(centroids):
        counts = torch.bincount(codes[:, level], minlength=sizes[level]).float()
        # EMA usage is counted per batch; start each code at its expected uses per batch
        model.set_codebook(level, c, counts * min(config.batch_size, x.shape[0]) / len(idx))
    residual = z - model.codes_to_latent(codes)
    return {"sample_rows": int(len(idx)), "init_quantization_mse": float(residual.pow(2).mean())}


def fit_model(x_np: np.ndarray, config: TokenizeConfig, *, sizes: tuple[int, ...], seed: int,
              log_dir: Path, name: str) -> tuple[RQVAE | ProductQuantizer, dict]:
    """Build, initialise and (for method="rqvae") train one tokenizer on (n, d) features."""
    x = torch.from_numpy(x_np)
    torch.manual_seed(seed)
    if config.method == "pq":
        return fit_product_quantizer(x, config, sizes=sizes, seed=seed)
    model = RQVAE(config.model_config(x.shape[1], sizes))
    model.set_input_stats(*input_stats(x, config.normalize_input))
    model.eval()
    start = time.perf_counter()
    info = init_codebooks(model, x, config, seed)
    info["kmeans_seconds"] = round(time.perf_counter() - start, 2)
    if config.method == "rqvae" and (config.epochs > 0 or config.min_steps > 0):
        start = time.perf_counter()
        metrics_csv = train_rqvae(model, x, config.train_config(seed), log_dir=log_dir, name=name)
        info["train_seconds"] = round(time.perf_counter() - start, 2)
        info["train_log"] = str(metrics_csv.relative_to(log_dir.parent))
        info["final_epoch"] = last_epoch_metrics(metrics_csv)
    model.eval()
    return model, info


def fit_product_quantizer(x: torch.Tensor, config: TokenizeConfig, *, sizes: tuple[int, ...],
                          seed: int) -> tuple[ProductQuantizer, dict]:
    """method="pq": normalise, rotate, k-means per subspace on a catalogue sample (no training)."""
    model = ProductQuantizer(PQConfig(input_dim=x.shape[1], codebook_sizes=sizes))
    model.set_input_stats(*input_stats(x, config.normalize_input))
    model.set_rotation(seed)
    start = time.perf_counter()
    info = fit_pq(model, x, kmeans_rows(x.shape[0], config, sizes, seed), config.kmeans_config(seed))
    info["kmeans_seconds"] = round(time.perf_counter() - start, 2)
    return model.eval(), info


def last_epoch_metrics(metrics_csv: Path) -> dict:
    if not metrics_csv.exists():
        return {}
    with open(metrics_csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("loss")]
    return {k: float(v) for k, v in rows[-1].items() if v not in ("", None)} if rows else {}


def capped_sizes(n_items: int, config: TokenizeConfig, notes: list[str]) -> tuple[int, ...]:
    k = config.codebook_size
    if n_items < k:
        msg = (f"only {n_items} items for codebook_size={k}: every level is capped at {n_items} codes "
               "(k-means cannot place more distinct centres than items)")
        warnings.warn(msg, stacklevel=3)
        notes.append(msg)
        k = n_items
    return (k,) * config.n_levels


# ---- report ------------------------------------------------------------------------------

@torch.no_grad()
def reconstruction_report(tokenizer: Tokenizer, matrices: dict[str, np.ndarray], codes: np.ndarray) -> dict:
    """Per modality: MSE in normalised input space, and the same relative to the input variance."""
    out, col = {}, 0
    for name, model in tokenizer.models.items():
        own = torch.from_numpy(codes[:, col:col + model.config.n_levels])
        col += model.config.n_levels
        x = torch.from_numpy(matrices[name])
        err = torch.cat([model.reconstruction_error(x[s:s + ENCODE_BLOCK], own[s:s + ENCODE_BLOCK])
                         for s in range(0, x.shape[0], ENCODE_BLOCK)])
        target = model.normalize(x)
        variance = float((target - target.mean(0)).pow(2).mean())
        mse = float(err.mean())
        out[name] = {"mse": mse, "relative": mse / variance if variance > 0 else 0.0}
    return out


def plot_report(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = report["levels"]
    names = [f"L{lv['level']}" + (" (dedup)" if lv["level"] == len(levels) - 1 else "") for lv in levels]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    ax = axes[0]
    ax.bar(names, [lv["used_fraction"] * 100 for lv in levels], color="tab:blue")
    ax.axhline(95, color="grey", ls="--", lw=1)
    ax.set_ylabel("% of codes used")
    ax.set_title("Code usage per level")
    ax = axes[1]
    ax.bar(names, [lv["perplexity"] for lv in levels], color="tab:orange", label="perplexity")
    ax.plot(names, [lv["size"] for lv in levels], "k_", ms=20, label="codebook size")
    ax.set_title("Perplexity per level")
    ax.legend()
    ax = axes[2]
    raw, final = report["collisions_raw"], report["collisions_before_dedup"]
    labels = ["nearest codes", f"after last_level={report['config']['last_level']}"]
    ax.bar(labels, [raw["n_colliding_items"], final["n_colliding_items"]], color=["tab:red", "tab:green"])
    ax.set_title(f"Colliding items before dedup (of {report['n_items']})\n"
                 f"largest group {raw['largest_group']} -> {final['largest_group']}")
    rec = ", ".join(f"{k}: {v['relative']:.3f}" for k, v in report["reconstruction"].items())
    fig.suptitle(f"{report['config']['method']} tokenizer, relative reconstruction error {rec}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def format_report(report: dict) -> str:
    lines = [f"tokenize: {report['n_items']} items, {report['config']['method']} on {list(report['reconstruction'])}, "
             f"level sizes {report['level_sizes']}, {report['seconds']:.1f}s"]
    for lv in report["levels"]:
        tag = " (dedup)" if lv["level"] == len(report["levels"]) - 1 else ""
        lines.append(f"  level {lv['level']}{tag}: {lv['used']}/{lv['size']} codes used ({lv['used_fraction']:.1%}), "
                     f"perplexity {lv['perplexity']:.1f}")
    raw, final = report["collisions_raw"], report["collisions_before_dedup"]
    lines.append(f"  collisions with nearest codes: {raw['n_colliding_items']} items ({raw['collision_rate']:.2%}), "
                 f"largest group {raw['largest_group']}")
    lines.append(f"  collisions before dedup (last_level={report['config']['last_level']}): "
                 f"{final['n_colliding_items']} items ({final['collision_rate']:.2%}), largest group {final['largest_group']}")
    for name, r in report["reconstruction"].items():
        lines.append(f"  reconstruction [{name}]: mse {r['mse']:.4f}, relative {r['relative']:.3f}")
    lines.extend(f"  note: {n}" for n in report["notes"])
    return "\n".join(lines)


# ---- the stage ---------------------------------------------------------------------------

def tokenize(run: str | Path, config: TokenizeConfig = TokenizeConfig()) -> dict:
    """Learn semantic IDs for every item in RUN/features and write RUN/sid/; returns the report.

    The report (also sid/report.json and sid/report.png, and printed) gives codes used and
    perplexity per level, the collision rate before dedup (with plain nearest codes and after
    the last-level rule), the largest collision group and the reconstruction error.
    """
    run = Path(run)
    threads = torch.get_num_threads()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    try:
        return _tokenize(run, config)
    finally:
        torch.set_num_threads(threads)


def _tokenize(run: Path, config: TokenizeConfig) -> dict:
    start = time.perf_counter()
    features = load_features(run, config.modalities)
    notes: list[str] = []
    for name, n_missing in features.missing.items():
        if n_missing:
            notes.append(f"{name}: {n_missing} items lack this modality (embed filled their rows with the mean), "
                         "so they share its codes" if name != FUSED else f"{name}: {n_missing} rows marked missing")
    sizes = capped_sizes(features.n_items, config, notes)
    tmp = temp_folder_beside(run / SID_DIR)
    try:
        models, fit_info = {}, {}
        for i, (name, x) in enumerate(tqdm(features.matrices.items(), desc="tokenize", unit="modality",
                                           disable=len(features.matrices) == 1)):
            models[name], fit_info[name] = fit_model(x, config, sizes=sizes, seed=config.seed + i,
                                                     log_dir=tmp / LOGS_DIR, name=name)
        tokenizer = Tokenizer(models, config.last_level)
        raw = tokenizer.raw_codes(features.matrices)
        semantic = raw
        if config.last_level == "unique":
            semantic = resolve_last_level(raw, tokenizer.last_level_distances(features.matrices, raw))
        codes = add_dedup_level(semantic)
        largest = int(codes[:, -1].max()) + 1
        if config.dedup_capacity and config.dedup_capacity < largest:
            raise ValueError(f"TokenizeConfig.dedup_capacity={config.dedup_capacity} is smaller than the largest "
                             f"collision group ({largest} items); raise it to >= {largest} or set 0 (automatic)")
        level_sizes = (*tokenizer.semantic_level_sizes, max(largest, config.dedup_capacity))

        report = {
            "n_items": features.n_items,
            "level_sizes": list(level_sizes),
            "levels": level_usage(codes, level_sizes),
            "collisions_raw": collision_stats(raw),
            "collisions_before_dedup": collision_stats(semantic),
            "n_items_moved_by_last_level": int((semantic != raw).any(axis=1).sum()),
            "reconstruction": reconstruction_report(tokenizer, features.matrices, semantic),
            "fit": fit_info,
            "notes": notes,
            "config": config.to_dict(),
            "seconds": round(time.perf_counter() - start, 2),
        }
        tokenizer.save(tmp / CHECKPOINT_FILE)
        write_json_atomic(tmp / REPORT_JSON, report)
        plot_report(report, tmp / REPORT_PNG)
        write_semantic_ids(
            tmp, codes, level_sizes,
            extra_files=[CHECKPOINT_FILE, REPORT_JSON, REPORT_PNG],
            inputs={f"{FEATURES_DIR}/{k}": v for k, v in features.checksums.items()},
            features_manifest_files=features.manifest.get("files", {}),
            modalities=list(models),
            n_semantic_levels=len(level_sizes) - 1,
            config=config.to_dict(),
        )
        publish_folder(tmp, run / SID_DIR)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    print(format_report(report))
    return report
