"""Import precomputed per-item feature matrices (``.npy`` or raw float32 files such as DeCoRec's ``.feat1CLS``).

The row order of such a file belongs to whoever made it, so the mapping is always explicit:
``row_map="item_id"`` says row i is dense item id i of this dataset; otherwise ``row_map`` is a
file of ``<source_id><TAB><row>`` lines (e.g. ``Scientific.item2index``). Items absent from the
map get ``mask = False`` and a NaN row; they are counted, never dropped silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

ITEM_ID_ROWS = "item_id"  # row_map value: row i of the file is item_id i
RAW_DTYPES = ("float32", "float16", "float64")
MODALITY_NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # becomes a file name: features/<name>.npy


@dataclass
class PrecomputedConfig:
    """One imported feature matrix."""

    name: str                 # modality name, written as features/<name>.npy; "text"/"image" replace that encoder
    path: str                 # a .npy file, or a raw little-endian matrix (any other suffix)
    row_map: str = ITEM_ID_ROWS  # "item_id" (rows are dense item ids) or a "<source_id>\t<row>" file
    dim: int | None = None    # columns; required for raw files, checked against .npy files when given
    dtype: str = "float32"    # element type of a raw file

    def __post_init__(self) -> None:
        if not MODALITY_NAME.match(self.name):
            raise ValueError(
                f"PrecomputedConfig.name {self.name!r} must match {MODALITY_NAME.pattern} (it becomes a file name)"
            )
        if self.dtype not in RAW_DTYPES:
            raise ValueError(f"PrecomputedConfig.dtype must be one of {RAW_DTYPES}, got {self.dtype!r}")
        if self.dim is not None and self.dim < 1:
            raise ValueError(f"PrecomputedConfig.dim must be >= 1, got {self.dim}")
        if not self.path.endswith(".npy") and self.dim is None:
            raise ValueError(
                f"PrecomputedConfig for {self.path}: a raw matrix file needs `dim` (columns), e.g. dim=512 for "
                "DeCoRec .feat1CLS files; only .npy files carry their own shape."
            )

    @classmethod
    def from_spec(cls, spec: str) -> "PrecomputedConfig":
        """Parse the command-line form ``name=text;path=a.feat1CLS;dim=512;row_map=a.item2index``."""
        fields: dict[str, str | int] = {}
        for pair in filter(None, (p.strip() for p in spec.split(";"))):
            key, sep, value = pair.partition("=")
            if not sep or key not in ("name", "path", "row_map", "dim", "dtype"):
                raise ValueError(
                    f"precomputed spec {spec!r}: {pair!r} is not key=value with key in name/path/row_map/dim/dtype; "
                    "example: 'name=text;path=Scientific.feat1CLS;dim=512;row_map=Scientific.item2index'"
                )
            fields[key] = int(value) if key == "dim" else value
        if "name" not in fields or "path" not in fields:
            raise ValueError(f"precomputed spec {spec!r} needs at least name=...;path=...")
        return cls(**fields)


@dataclass
class PrecomputedResult:
    features: np.ndarray    # (n_items, dim) float32, NaN rows where mask is False
    mask: np.ndarray        # (n_items,) bool, True = the item has a row in the file
    info: dict              # counts and provenance for the manifest


def read_matrix(config: PrecomputedConfig) -> np.ndarray:
    """The file as a 2-D float32 array, shape-checked."""
    path = Path(config.path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"precomputed features '{config.name}': {path} not found; fix its `path`.")
    if path.suffix == ".npy":
        try:
            matrix = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise ValueError(
                f"{path}: not a plain numeric .npy file ({e}); save it with np.save(path, float_array)."
            ) from e
        if matrix.ndim != 2:
            raise ValueError(f"{path}: expected a 2-D (rows, dim) array, got shape {matrix.shape}")
        if config.dim is not None and matrix.shape[1] != config.dim:
            raise ValueError(f"{path}: has {matrix.shape[1]} columns but the config says dim={config.dim}")
    else:
        itemsize = np.dtype(config.dtype).itemsize
        size = path.stat().st_size
        row_bytes = itemsize * config.dim
        if size == 0 or size % row_bytes:
            raise ValueError(
                f"{path}: {size} bytes is not a whole number of rows of {config.dim} x {config.dtype} "
                f"({row_bytes} bytes per row); check `dim` and `dtype` for this file."
            )
        matrix = np.fromfile(path, dtype=np.dtype(config.dtype).newbyteorder("<")).reshape(-1, config.dim)
    matrix = matrix.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if len(bad):
        raise ValueError(f"{path}: {len(bad)} rows contain NaN/inf (first at row {bad[0]}); fix or drop them upstream.")
    return matrix


def read_row_map(path: Path) -> dict[str, int]:
    """``source_id -> row`` from a ``<source_id><whitespace><row>`` file; blank lines ignored."""
    if not path.is_file():
        raise FileNotFoundError(
            f"row_map file {path} not found; give a '<source_id>\\t<row>' file or row_map='item_id'."
        )
    out: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise ValueError(f"{path}:{lineno}: expected '<source_id>\\t<row>', got {line.rstrip()!r}")
            if parts[0] in out:
                raise ValueError(f"{path}:{lineno}: source id {parts[0]!r} appears twice (first row {out[parts[0]]})")
            out[parts[0]] = int(parts[1])
    return out


def load_precomputed(config: PrecomputedConfig, items: pl.DataFrame) -> PrecomputedResult:
    """Align an imported matrix to the dataset's dense item ids (``items`` in ITEM_SCHEMA, row i = item i)."""
    matrix = read_matrix(config)
    n_rows, dim = matrix.shape
    n_items = items.height
    if config.row_map == ITEM_ID_ROWS:
        if n_rows != n_items:
            raise ValueError(
                f"{config.path}: {n_rows} rows but the dataset has {n_items} items, so rows cannot be dense item ids; "
                "give row_map=<file of source_id\\trow> that maps the file's rows to items."
            )
        rows = np.arange(n_items)
        unmapped: list[str] = []
    else:
        map_path = Path(config.row_map).expanduser()
        mapping = read_row_map(map_path)
        out_of_range = {s: r for s, r in mapping.items() if not 0 <= r < n_rows}
        if out_of_range:
            s, r = next(iter(out_of_range.items()))
            raise ValueError(
                f"{map_path}: {len(out_of_range)} rows outside [0, {n_rows}) of {config.path} (e.g. {s!r} -> {r}); "
                "the map and the matrix do not belong together."
            )
        sources = items["source_id"].to_list()
        rows = np.array([mapping.get(str(s), -1) for s in sources], dtype=np.int64)
        unmapped = [str(s) for s, r in zip(sources, rows) if r < 0]
    mask = rows >= 0
    features = np.full((n_items, dim), np.nan, dtype=np.float32)
    features[mask] = matrix[rows[mask]]
    info = {
        "source": "precomputed",
        "path": str(Path(config.path).expanduser().resolve()),
        "row_map": config.row_map,
        "rows_in_file": int(n_rows),
        "dim": int(dim),
        "items_mapped": int(mask.sum()),
        "items_unmapped": int((~mask).sum()),
        "unmapped_examples": unmapped[:5],
        "file_rows_unused": int(n_rows - len(np.unique(rows[mask]))),
    }
    return PrecomputedResult(features=features, mask=mask, info=info)
