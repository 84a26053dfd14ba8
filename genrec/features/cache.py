"""Content-addressed embedding cache shared by the text and image encoders.

A vector is stored under ``sha256(namespace + content)``, where the namespace fingerprints
everything that changes the output (model weights, max_length, preprocessing). A re-run with
the same content and model therefore finds every vector and does no encoder work.

Layout: ``ROOT/<kind>/<namespace[:16]>/shard-<n>.npz`` with arrays ``keys`` (hex digests) and
``vectors`` (float32). Shards are append-only and written atomically; once there are more than
``MAX_SHARDS`` they are merged into one, so lookups stay a handful of file reads.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from genrec.io import atomic_path

CACHE_ENV = "GENREC_CACHE_DIR"       # overrides the default cache root
MAX_SHARDS = 16                      # merge shards beyond this many to keep lookups cheap
KEY_DTYPE = "S64"                    # a sha256 hex digest


def default_cache_dir() -> Path:
    """``$GENREC_CACHE_DIR`` if set, else ``~/.cache/genrec``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "genrec"


def content_key(namespace: str, content: bytes) -> str:
    """The cache key of one item: sha256 over the namespace and the raw content."""
    h = hashlib.sha256(namespace.encode("utf-8"))
    h.update(b"\0")
    h.update(content)
    return h.hexdigest()


class EmbeddingCache:
    """Vectors of one (kind, namespace) pair, e.g. ("text", fingerprint of model + max_length)."""

    def __init__(self, root: str | os.PathLike, kind: str, namespace: str):
        self.namespace = namespace
        self.folder = Path(root) / kind / namespace[:16]
        self._store: dict[bytes, np.ndarray] | None = None

    def _load(self) -> dict[bytes, np.ndarray]:
        if self._store is None:
            self._store = {}
            for shard in self._shards():
                try:
                    with np.load(shard, allow_pickle=False) as z:
                        keys, vectors = z["keys"], z["vectors"]
                except (OSError, ValueError, KeyError) as e:
                    # A corrupt shard only costs recomputation; say so instead of failing the stage.
                    print(f"warning: ignoring unreadable embedding cache shard {shard} ({e}); "
                          "delete it to silence this")
                    continue
                self._store.update(zip(keys.tolist(), vectors))
        return self._store

    def _shards(self) -> list[Path]:
        return sorted(self.folder.glob("shard-*.npz")) if self.folder.exists() else []

    def lookup(self, keys: list[str]) -> dict[str, np.ndarray]:
        """The cached vectors among ``keys`` (missing keys are absent from the result)."""
        store = self._load()
        found = {}
        for k in keys:
            v = store.get(k.encode("ascii"))
            if v is not None:
                found[k] = v
        return found

    def add(self, keys: list[str], vectors: np.ndarray) -> None:
        """Persist ``vectors`` (len(keys), d) as a new shard; merge shards when there are too many."""
        if not keys:
            return
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape[0] != len(keys):
            raise ValueError(f"cache add: {len(keys)} keys but {vectors.shape[0]} vectors")
        store = self._load()
        store.update(zip((k.encode("ascii") for k in keys), vectors))
        self.folder.mkdir(parents=True, exist_ok=True)
        shards = self._shards()
        if len(shards) >= MAX_SHARDS:
            all_keys = list(store)
            self._write_shard(0, all_keys, np.stack([store[k] for k in all_keys]))
            for old in shards[1:]:
                old.unlink(missing_ok=True)
        else:
            next_id = int(shards[-1].stem.split("-")[1]) + 1 if shards else 0
            self._write_shard(next_id, [k.encode("ascii") for k in keys], vectors)

    def _write_shard(self, shard_id: int, keys: list[bytes], vectors: np.ndarray) -> None:
        with atomic_path(self.folder / f"shard-{shard_id:06d}.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, keys=np.asarray(keys, dtype=KEY_DTYPE), vectors=vectors.astype(np.float32))
