"""Load an export folder and recommend with onnxruntime + genrec.decode's beam search.

No torch: this module imports numpy, onnxruntime and genrec's numpy/stdlib modules only
(genrec.decode, genrec.io, genrec.export.layout), so a server can run without torch installed.

Item ids here are the dense internal ids 0..n_items-1 (row i of codes.npy / items.json).
Mapping the catalogue's source ids to them is :meth:`ExportRuntime.to_internal`'s job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from genrec.data.split import left_pad
from genrec.decode import (BeamResult, Trie, candidate_mask, check_level_weights, exclude_mask, rerank_search,
                           score_catalogue, top_items, weighted_step)
from genrec.export import layout
from genrec.registry import get_arch, resolve
from genrec.io import MANIFEST, ArtifactError, read_manifest, verify_files
from genrec.serving.config import DECODINGS


@dataclass
class RuntimeConfig:
    intra_op_threads: int = 1       # onnxruntime threads inside one operator (1 = no thread pool)
    inter_op_threads: int = 1       # onnxruntime threads running independent operators in parallel
    verify_checksums: bool = True   # check every file's sha256 against manifest.json when loading
    decoding: str = "auto"          # "auto": the export's own; "beam": trie beam search even for a parallel head
                                    # (approximate, cost flat in catalogue size, instead of exact scoring)

    def __post_init__(self):
        if self.intra_op_threads < 1 or self.inter_op_threads < 1:
            raise ValueError(f"intra_op_threads and inter_op_threads must be >= 1, got "
                             f"{self.intra_op_threads} and {self.inter_op_threads}")
        if self.decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {DECODINGS}, got {self.decoding!r}")


def session_options(config: RuntimeConfig) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = config.intra_op_threads
    opts.inter_op_num_threads = config.inter_op_threads
    opts.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if config.inter_op_threads > 1
                           else ort.ExecutionMode.ORT_SEQUENTIAL)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # No busy-waiting between operators: the cores are shared with the HTTP server's event loop.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3   # errors only; ORT's warnings about unused initializers are noise here
    return opts


class OnnxCausalStep:
    """genrec.decode StepFn over decoder_step.onnx; the decoding cache is the (rows, d) state.

    Level 0 starts from the encoder's states; each later level gathers the parent beams' states
    (``state[parent_rows]``) and lets the graph add the chosen code's embedding.
    """

    def __init__(self, session: ort.InferenceSession, state: np.ndarray, level_sizes: Sequence[int],
                 level_log_probs: np.ndarray | None = None):
        self.session = session
        self.state = state                      # (B, d) float32, then (R, d) per level
        self.level_sizes = tuple(level_sizes)
        # parallel heads: every level's log-probs (B, D, K_max) from the encoder call, so a step is a gather
        # by the request each row belongs to (``origin``) and decoder_step.onnx is never run
        self.level_log_probs = level_log_probs
        self.origin = np.arange(len(state))

    @classmethod
    def from_export(cls, session, encoded: dict[str, np.ndarray], level_sizes: Sequence[int], model: dict):
        """The step for one batch of encoder outputs (the registry's ``onnx_step`` entry point)."""
        return cls(session, encoded["state"], level_sizes, encoded.get("level_log_probs"))

    def __call__(self, level: int, parent_rows: np.ndarray, last_codes: np.ndarray | None) -> np.ndarray:
        if self.level_log_probs is not None:
            if level > 0:
                self.origin = self.origin[parent_rows]
                self.state = self.state[parent_rows]
            return self.level_log_probs[self.origin, level, : self.level_sizes[level]]
        state = self.state if level == 0 else self.state[parent_rows]
        codes = np.zeros(len(state), dtype=np.int64) if last_codes is None else np.asarray(last_codes, dtype=np.int64)
        log_probs, self.state = self.session.run(
            None, {"state": state, "last_code": codes, "level": np.array(level, dtype=np.int64)})
        return log_probs[:, : self.level_sizes[level]]   # (R, K_level): drop the -inf padding columns


class OnnxTigerStep:
    """genrec.decode StepFn over TIGER's decoder_step.onnx.

    The graph takes beams laid out as (batch, beams): each request's live beams fill the first slots
    of its row (the width is the largest beam count of this level) and the rest are padding with a
    zero cache whose outputs are dropped. Per-beam state is the self-attention cache, gathered by
    parent beam before each step; the encoder's cross-attention keys/values stay (L, batch, ...)
    for the whole search and are shared by every beam of a request.
    """

    def __init__(self, session: ort.InferenceSession, encoded: dict[str, np.ndarray], level_sizes: Sequence[int],
                 n_layers: int, n_heads: int, d_kv: int):
        self.session = session
        self.encoded = encoded                                   # cross_keys, cross_values, encoder_bias
        self.level_sizes = tuple(level_sizes)
        self.batch = encoded["encoder_bias"].shape[0]
        self.cache_tail = (n_heads, len(self.level_sizes), d_kv)
        self.n_layers = n_layers
        self.keys = self.values = np.zeros((n_layers, self.batch, 1, *self.cache_tail), dtype=np.float32)
        self.slots = np.arange(self.batch)                       # flat (batch * width) slot of each returned row
        self.width = 1

    @classmethod
    def from_export(cls, session, encoded: dict[str, np.ndarray], level_sizes: Sequence[int], model: dict):
        """The step for one batch of encoder outputs (the registry's ``onnx_step`` entry point)."""
        return cls(session, encoded, level_sizes, int(model["n_decoder_layers"]), int(model["n_heads"]),
                   int(model["d_kv"]))

    def __call__(self, level: int, parent_rows: np.ndarray, last_codes: np.ndarray | None) -> np.ndarray:
        if level == 0:
            codes = np.zeros((self.batch, 1), dtype=np.int64)
            keys, values, slots, width = self.keys, self.values, self.slots, 1
        else:
            parents = self.slots[parent_rows]                                 # parent slots in the last layout
            requests = parents // self.width
            count = np.bincount(requests, minlength=self.batch)
            width = int(count.max())
            rank = np.arange(len(parents)) - (np.cumsum(count) - count)[requests]
            slots = requests * width + rank
            shape = (self.n_layers, self.batch * width, *self.cache_tail)
            keys, values = np.zeros(shape, dtype=np.float32), np.zeros(shape, dtype=np.float32)
            flat = (self.n_layers, self.batch * self.width, *self.cache_tail)
            keys[:, slots] = self.keys.reshape(flat)[:, parents]
            values[:, slots] = self.values.reshape(flat)[:, parents]
            keys = keys.reshape(self.n_layers, self.batch, width, *self.cache_tail)
            values = values.reshape(self.n_layers, self.batch, width, *self.cache_tail)
            codes = np.zeros(self.batch * width, dtype=np.int64)
            codes[slots] = last_codes
            codes = codes.reshape(self.batch, width)
        log_probs, self.keys, self.values = self.session.run(None, {
            "last_code": codes, "level": np.array(level, dtype=np.int64), "self_keys": keys, "self_values": values,
            **self.encoded})
        self.slots, self.width = slots, width
        return log_probs.reshape(self.batch * width, -1)[slots, : self.level_sizes[level]]   # (R, K_level)


class ExportRuntime:
    """An export folder loaded for inference: onnxruntime sessions, trie, item tables."""

    def __init__(self, folder: str | Path, config: RuntimeConfig | None = None):
        self.folder = Path(folder)
        self.config = config or RuntimeConfig()
        if not self.folder.is_dir():
            raise ArtifactError(f"export folder {self.folder} does not exist; create it with "
                                "`genrec export --run RUN --out FOLDER`")
        self.manifest = read_manifest(self.folder, layout.STAGE, verify=False)
        self._check_manifest()
        if self.config.verify_checksums:
            verify_files(self.folder, self.manifest["files"])
        self.arch: str = self.manifest["arch"]
        self.level_sizes: tuple[int, ...] = tuple(int(k) for k in self.manifest["level_sizes"])
        self.max_items: int = int(self.manifest["max_items"])
        self.beam_width: int = int(self.manifest["beam_width"])
        self.decoding: str = self.manifest["decoding"]            # layout.DECODINGS
        try:   # per-digit weights of the log-probs (genrec.decode.weighted); null: all 1
            weights = self.manifest.get("level_weights")
            self.level_weights = None if weights is None else check_level_weights(weights, len(self.level_sizes))
        except (TypeError, ValueError) as e:
            raise ArtifactError(f"{self.folder / MANIFEST}: {e}; re-run `genrec export`.") from e
        # Every large table is memory-mapped (read-only): N server workers on one export share one copy
        # through the page cache. Exact exports never build the trie's node tables (beam exports do, once).
        self.trie = Trie.load(self.folder)
        self.item_codes = self.trie.item_codes                                    # (N, D) int64
        if self.trie.level_sizes != self.level_sizes:
            raise ArtifactError(f"{self.folder / MANIFEST}: level_sizes {list(self.level_sizes)} disagree with the "
                                f"trie tables ({list(self.trie.level_sizes)}); re-run `genrec export`.")
        # decoding "rerank": the item vectors each beam item's state logit is scored against (rows read per request)
        self.item_table = (self._load_item_table() if self.decoding == "rerank" else None)
        self.source_ids, self.titles = self._load_items()
        self._index = {sid: i for i, sid in enumerate(self.source_ids)}
        opts = session_options(self.config)
        self.encoder = self._session(layout.ENCODER_FILE, opts, "encoder")
        self.decoder_step = self._session(layout.DECODER_STEP_FILE, opts, "decoder_step")
        self._encoder_outputs = [o.name for o in self.encoder.get_outputs()]
        # Score every item (a parallel head: its encoder returns every level's log-probs), else trie beam search.
        # A parallel "rerank" export adds the item logit to every item's score, so it is exact too.
        # --decoding beam: a parallel export's levels read as a beam search's steps instead.
        self.exact: bool = self.config.decoding != "beam" and (
            self.decoding == "exact" or (self.decoding == "rerank" and self.one_call))
        self._step = resolve(get_arch(self.arch).onnx_step)   # genrec.registry: no torch imported

    @property
    def one_call(self) -> bool:
        """True for a parallel head's export (format 6): encoder.onnx returns every level's log-probs, so a
        request is one graph call and decoder_step.onnx is never run."""
        return "level_log_probs" in self._encoder_outputs

    # ------------------------------------------------------------------ loading
    def _check_manifest(self) -> None:
        path = self.folder / MANIFEST
        m = self.manifest
        version = m.get("format_version")
        if version != layout.FORMAT_VERSION:
            raise ArtifactError(f"{path}: format_version {version!r}, this server reads {layout.FORMAT_VERSION}; "
                                "re-export with this genrec version (`genrec export`).")
        missing = [key for key in ("arch", "level_sizes", "max_items", "beam_width", "n_items", "files", "graphs",
                                   "model", "decoding") if key not in m]
        if missing:
            raise ArtifactError(f"{path}: missing fields {missing}; the manifest is incomplete, "
                                "re-run `genrec export`.")
        if m["decoding"] not in layout.DECODINGS:
            raise ArtifactError(f"{path}: decoding {m['decoding']!r} is not one this server runs "
                                f"({layout.DECODINGS}); re-export with this genrec version (`genrec export`).")
        if m["decoding"] == "rerank" and m["arch"] != "causal":
            raise ArtifactError(f"{path}: decoding 'rerank' needs arch 'causal', got {m['arch']!r}; "
                                "re-run `genrec export`.")
        if m["decoding"] == "rerank" and layout.ITEM_TABLE_FILE not in m["files"]:
            raise ArtifactError(f"{path}: decoding 'rerank' needs {layout.ITEM_TABLE_FILE}, which the manifest does "
                                "not list; the folder is incomplete, re-run `genrec export`.")
        if m["arch"] not in layout.SUPPORTED_ARCHS:
            raise ArtifactError(f"{path}: arch {m['arch']!r} cannot be served (supported: {layout.SUPPORTED_ARCHS}).")
        unlisted = [name for name in layout.EXPORT_FILES if name not in m["files"]]
        if unlisted:
            raise ArtifactError(f"{path}: files {unlisted} are not listed with a checksum; the folder is incomplete, "
                                "re-run `genrec export`.")

    def _load_item_table(self) -> np.ndarray:
        path = self.folder / layout.ITEM_TABLE_FILE
        table = np.load(path, mmap_mode="r", allow_pickle=False)
        d = self.manifest["model"].get("d_model")
        if table.ndim != 2 or table.shape[0] != self.trie.n_items or table.dtype != np.float32 or table.shape[1] != d:
            raise ArtifactError(f"{path}: expected a ({self.trie.n_items}, {d}) float32 table, got {table.shape} "
                                f"{table.dtype}; the folder mixes files from different exports. "
                                "Re-run `genrec export`.")
        return table

    def _load_items(self) -> tuple[list[str], list[str | None]]:
        path = self.folder / layout.ITEMS_FILE
        try:
            items = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ArtifactError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); re-run `genrec export`.") from e
        source_ids, titles = items.get("source_id"), items.get("title")
        n = len(self.item_codes)
        if not isinstance(source_ids, list) or not isinstance(titles, list) or len(source_ids) != n or len(titles) != n:
            raise ArtifactError(f"{path}: expected lists 'source_id' and 'title' with {n} entries (one per item); "
                                "re-run `genrec export`.")
        if len(set(source_ids)) != n:
            raise ArtifactError(f"{path}: source ids are not unique; re-run `genrec prepare` and `genrec export`.")
        if int(self.manifest["n_items"]) != n:
            raise ArtifactError(f"{self.folder / MANIFEST}: n_items {self.manifest['n_items']} but the tables hold "
                                f"{n} items; re-run `genrec export`.")
        return [str(s) for s in source_ids], titles

    def _session(self, file: str, opts: ort.SessionOptions, graph: str) -> ort.InferenceSession:
        path = self.folder / file
        try:
            session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise ArtifactError(f"{path}: onnxruntime cannot load it ({e}); re-run `genrec export`.") from e
        spec = self.manifest["graphs"][graph]
        got = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
        want = ([i["name"] for i in spec["inputs"]], [o["name"] for o in spec["outputs"]])
        if got != want:
            raise ArtifactError(f"{path}: graph inputs/outputs {got} differ from the manifest's {want}; "
                                "re-run `genrec export`.")
        return session

    # ------------------------------------------------------------------ ids
    @property
    def n_items(self) -> int:
        return len(self.source_ids)

    def to_internal(self, source_ids: Sequence[str]) -> tuple[list[int], list[str]]:
        """Catalogue source ids -> (known internal ids in order, unknown source ids in order)."""
        known, unknown = [], []
        for sid in source_ids:
            idx = self._index.get(sid)
            if idx is None:
                unknown.append(sid)
            else:
                known.append(idx)
        return known, unknown

    # ------------------------------------------------------------------ inference
    def encode(self, histories: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        """encoder.onnx's outputs by name for histories of internal ids (only the last max_items are read).

        causal: {"state": (B, d)}; tiger: {"cross_keys", "cross_values", "encoder_bias"}.
        """
        outputs = self.encoder.run(None, {"history": left_pad(histories, self.max_items)})
        return dict(zip(self._encoder_outputs, outputs))

    def step_fn(self, histories: Sequence[Sequence[int]]):
        """A genrec.decode StepFn that decodes ``histories`` with decoder_step.onnx."""
        step = self._step.from_export(self.decoder_step, self.encode(histories), self.level_sizes,
                                      self.manifest["model"])
        return weighted_step(step, self.level_weights)

    def recommend(self, histories: Sequence[Sequence[int]], k: int, *,
                  exclude_history: bool | Sequence[bool] = True,
                  candidates: Sequence[Sequence[int] | None] | None = None,
                  beam_width: int | None = None) -> BeamResult:
        """Top-k items per history (internal ids, oldest first) by trie-constrained beam search
        (or exact scoring of every item, for a parallel-head export).

        exclude_history: never return an item of the request's (whole) history; one flag or one per request.
        candidates: per request, None or the only items it may receive.
        beam_width: defaults to max(manifest beam_width, k).
        """
        batch = len(histories)
        if batch == 0:
            raise ValueError("recommend needs at least one history")
        for row, hist in enumerate(histories):
            if len(hist) == 0:
                raise ValueError(f"histories[{row}] is empty: pass at least one item id")
            self._check_ids(hist, f"histories[{row}]")
        for row, cands in enumerate(candidates or []):
            if cands is not None:
                self._check_ids(cands, f"candidates[{row}]")
        if not 1 <= k <= self.n_items:
            raise ValueError(f"k must be in [1, {self.n_items}] (the catalogue size), got {k}")
        width = max(beam_width or self.beam_width, k)
        mask = self.item_mask(histories, exclude_history, candidates)
        step = self.step_fn(histories)
        if self.decoding == "rerank" and self.exact:
            # parallel head: every item's code score plus its item logit (float32 dot, as the torch model)
            logits = (step.state @ self.item_table.T).astype(np.float64)
            return score_catalogue(step, self.trie, batch, k, item_mask=mask, item_scores=logits)
        if self.decoding == "rerank":
            # the encoder's state, read before the first step replaces it, scored against the beam's items
            return rerank_search(step, self.trie, batch, k, beam_width=width, state=step.state,
                                 item_table=self.item_table, item_mask=mask)
        return top_items(step, self.trie, batch, k, exact=self.exact, beam_width=width, item_mask=mask)

    def _check_ids(self, ids: Sequence[int], what: str) -> None:
        arr = np.asarray(ids)
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer) and len(arr):
            raise ValueError(f"{what} must be a flat sequence of integer item ids")
        if len(arr) and (arr.min() < 0 or arr.max() >= self.n_items):
            raise ValueError(f"{what} holds ids outside 0..{self.n_items - 1}; map source ids with to_internal first")

    def item_mask(self, histories: Sequence[Sequence[int]], exclude_history: bool | Sequence[bool],
                  candidates: Sequence[Sequence[int] | None] | None) -> np.ndarray | None:
        """(B, N) bool of the items each request may receive, or None when every item is allowed."""
        batch = len(histories)
        exclude = ([bool(exclude_history)] * batch if isinstance(exclude_history, (bool, np.bool_))
                   else list(exclude_history))
        cands = list(candidates) if candidates is not None else [None] * batch
        if len(exclude) != batch or len(cands) != batch:
            raise ValueError(f"exclude_history and candidates need one entry per history ({batch})")
        if not any(exclude) and all(c is None for c in cands):
            return None
        # the same masks as `genrec evaluate`, applied to the rows that asked for them
        mask = np.ones((batch, self.n_items), dtype=bool)
        restricted = [row for row in range(batch) if cands[row] is not None]
        if restricted:
            mask[restricted] = candidate_mask([cands[row] for row in restricted], self.n_items)
        excluding = [row for row in range(batch) if exclude[row]]
        if excluding:   # cleared in place: one (B, N) mask per request batch, not two (0.1 ms at 1M items)
            exclude_mask([histories[row] for row in excluding], self.n_items, out=mask, rows=excluding)
        return mask

    def metadata(self) -> dict:
        """What the server reports at GET /metadata."""
        m = self.manifest
        return {
            "name": m.get("name"), "arch": self.arch, "n_items": self.n_items,
            "semantic_id": {"n_levels": len(self.level_sizes), "level_sizes": list(self.level_sizes),
                            "level_weights": None if self.level_weights is None else list(self.level_weights)},
            "max_items": self.max_items, "beam_width": self.beam_width,
            "decoding": self.decoding, "search": "exact" if self.exact else "beam", "opset": m.get("opset"),
            "exporter": m.get("exporter"), "created": m.get("created"), "versions": m.get("versions", {}),
            "model": m.get("model", {}), "format_version": m.get("format_version"),
        }


@dataclass
class Query:
    """One recommendation request in internal ids (what the server's micro-batcher queues)."""

    history: list[int]                      # oldest first; only the last max_items are read
    k: int                                  # items to return
    exclude_history: bool = True            # never return an item of ``history``
    candidates: list[int] | None = None     # only these items may be returned


def recommend_queries(runtime: ExportRuntime, queries: Sequence[Query]) -> list[tuple[list[int], list[float]]]:
    """Decode many queries in as few beam searches as possible; per query (item ids, scores), best first.

    Queries that need the same beam width (max(beam_width, k)) share one batched search with the
    group's largest k; each query then keeps its own first k, which is what a search of its own
    would return (the ranking is by score, then item id, and does not depend on k).
    """
    groups: dict[int, list[int]] = {}
    for i, q in enumerate(queries):
        groups.setdefault(max(runtime.beam_width, q.k), []).append(i)
    out: list[tuple[list[int], list[float]]] = [([], [])] * len(queries)
    for width, members in groups.items():
        batch = [queries[i] for i in members]
        result = runtime.recommend([q.history for q in batch], max(q.k for q in batch),
                                   exclude_history=[q.exclude_history for q in batch],
                                   candidates=[q.candidates for q in batch], beam_width=width)
        for row, (i, q) in enumerate(zip(members, batch)):
            found = result.items[row, : q.k] >= 0
            out[i] = (result.items[row, : q.k][found].tolist(), result.scores[row, : q.k][found].tolist())
    return out
