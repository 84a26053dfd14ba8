"""Fuse per-modality item matrices into one vector per item.

Per modality m with matrix X_m (n, d_m) and presence mask M_m (n,):
  1. standardise each column with the mean/std of the *present* rows;
  2. set absent rows to 0 — after standardisation that is exactly the modality mean, so an item
     without an image sits at the centre of image space instead of at an arbitrary point;
  3. L2-normalise each row (a zero row stays zero);
  4. scale by sqrt(w_m), so w_m scales the modality's share of a dot product / squared distance linearly;
then concatenate in the given modality order and optionally project with PCA (or PCA-whitening).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class FuseConfig:
    """How the modalities are combined."""

    weights: dict[str, float] = field(default_factory=dict)  # modality -> weight (>= 0); unlisted ones get 1.0
    pca_dim: int | None = None   # project the concatenation to this many dims with PCA; None = keep all
    whiten: bool = False         # with pca_dim: divide each component by its std (unit variance)
    eps: float = 1e-6            # columns with std below this are constant: they become 0, not amplified noise

    def __post_init__(self) -> None:
        self.weights = {str(k): float(v) for k, v in dict(self.weights).items()}
        for name, w in self.weights.items():
            if not w >= 0:
                raise ValueError(f"FuseConfig.weights[{name!r}] must be >= 0, got {w}")
        if self.pca_dim is not None and self.pca_dim < 1:
            raise ValueError(f"FuseConfig.pca_dim must be >= 1 or None, got {self.pca_dim}")
        if self.whiten and self.pca_dim is None:
            raise ValueError("FuseConfig.whiten needs pca_dim (whitening is applied to the PCA components)")
        if self.eps <= 0:
            raise ValueError(f"FuseConfig.eps must be > 0, got {self.eps}")


@dataclass
class FuseResult:
    fused: np.ndarray              # (n, D) float32
    blocks: dict[str, tuple[int, int]]  # modality -> [start, stop) columns of the concatenation (before PCA)
    info: dict                     # per-modality stats and the projection, for the manifest


def impute_missing(features: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Copy of ``features`` with absent rows (mask False) set to the mean of the present rows."""
    out = np.array(features, dtype=np.float32, copy=True)
    if mask.all():
        return out
    if not mask.any():
        raise ValueError("cannot impute: no row is present")
    out[~mask] = out[mask].mean(axis=0)
    return out


def standardize_normalize(features: np.ndarray, mask: np.ndarray | None, eps: float) -> tuple[np.ndarray, dict]:
    """Steps 1-3 of the module docstring for one modality; returns (n, d) float32 and its stats."""
    x = np.asarray(features, dtype=np.float64)
    n = x.shape[0]
    mask = np.ones(n, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != (n,):
        raise ValueError(f"mask has shape {mask.shape}, expected ({n},)")
    if not mask.any():
        raise ValueError("modality has no present rows; drop it from the fusion")
    present = x[mask]
    if not np.isfinite(present).all():
        raise ValueError("present rows contain NaN/inf; mark those rows absent in the mask")
    mean = present.mean(axis=0)                  # (d,)
    std = present.std(axis=0)                    # (d,)
    constant = std < eps
    z = np.zeros_like(x)
    z[mask] = (present - mean) / np.where(constant, 1.0, std)
    z[:, constant] = 0.0
    norms = np.linalg.norm(z, axis=1, keepdims=True)  # (n, 1)
    z = np.divide(z, norms, out=np.zeros_like(z), where=norms > 0)
    stats = {
        "dim": int(x.shape[1]),
        "present_rows": int(mask.sum()),
        "missing_rows": int(n - mask.sum()),
        "missing_fill": "zero after standardisation (= the modality mean of present rows)",
        "constant_columns": int(constant.sum()),
        "zero_rows_after_standardisation": int((norms[mask] == 0).sum()),
    }
    return z.astype(np.float32), stats


def pca_project(x: np.ndarray, dim: int, whiten: bool) -> tuple[np.ndarray, dict]:
    """Project centred ``x`` (n, D) onto its top ``dim`` principal axes; signs fixed for determinism."""
    n, d = x.shape
    if dim > min(n, d):
        raise ValueError(f"FuseConfig.pca_dim={dim} exceeds min(n_items={n}, fused_dim={d}); lower it")
    xc = x.astype(np.float64) - x.mean(axis=0)
    cov = xc.T @ xc / max(n - 1, 1)              # (D, D)
    evals, evecs = np.linalg.eigh(cov)           # ascending
    order = np.argsort(evals)[::-1][:dim]
    evals, evecs = np.clip(evals[order], 0.0, None), evecs[:, order]  # (dim,), (D, dim)
    # Each axis's sign is arbitrary; make its largest-magnitude loading positive.
    flip = np.sign(evecs[np.abs(evecs).argmax(axis=0), np.arange(dim)])
    evecs = evecs * np.where(flip == 0, 1.0, flip)
    y = xc @ evecs                               # (n, dim)
    if whiten:
        y = y / np.sqrt(np.maximum(evals, np.finfo(np.float64).eps))
    total = float(np.clip(np.linalg.eigvalsh(cov), 0.0, None).sum()) or 1.0
    info = {"method": "pca-whiten" if whiten else "pca", "dim": dim,
            "explained_variance_ratio": float(evals.sum() / total)}
    return y.astype(np.float32), info


def fuse(
    modalities: dict[str, np.ndarray], masks: dict[str, np.ndarray | None] | None = None,
    config: FuseConfig | None = None,
) -> FuseResult:
    """Fuse ``modalities`` (name -> (n, d_m)) in their dict order; see the module docstring."""
    config = config or FuseConfig()
    masks = masks or {}
    unknown = set(config.weights) - set(modalities)
    if unknown:
        raise ValueError(
            f"FuseConfig.weights names {sorted(unknown)}, which are not among the modalities {list(modalities)}"
        )
    sizes = {name: m.shape[0] for name, m in modalities.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"modalities have different row counts {sizes}; every matrix needs one row per item")
    parts, blocks, info, start = [], {}, {"modalities": {}}, 0
    for name, matrix in modalities.items():
        w = config.weights.get(name, 1.0)
        if w == 0:
            info["modalities"][name] = {"weight": 0.0, "included": False}
            continue
        try:
            z, stats = standardize_normalize(matrix, masks.get(name), config.eps)
        except ValueError as e:
            raise ValueError(f"modality {name!r}: {e}") from e
        parts.append(z * np.float32(np.sqrt(w)))
        blocks[name] = (start, start + z.shape[1])
        start += z.shape[1]
        info["modalities"][name] = {"weight": w, "included": True, **stats}
    if not parts:
        raise ValueError("every modality has weight 0; at least one must be included in the fused vector")
    fused = np.concatenate(parts, axis=1)        # (n, sum d_m)
    info["concat_dim"] = int(fused.shape[1])
    if config.pca_dim is not None:
        fused, info["projection"] = pca_project(fused, config.pca_dim, config.whiten)
    info["dim"] = int(fused.shape[1])
    return FuseResult(fused=fused.astype(np.float32), blocks=blocks, info=info)
