"""Scaling from 10k to 1M items: every pipeline stage's time and memory, and top-k latency per decoding path.

    python bench/scale.py --smoke                           # seconds; tests/test_bench_scale.py runs it
    python bench/scale.py --sizes 10000 100000 1000000      # the issue's sizes (decode rows: ~4 min in all;
                                                            # stage rows at 1M: ~30 min on 2 cores)
    python bench/scale.py --stages-only --sizes 1000000     # only the stage rows (keeps the decode rows and the
                                                            # stage rows of other sizes already in scale.json)
    python bench/scale.py --serve-only --sizes 1000000 --work DIR   # re-serve the export a --stages-only --work DIR
                                                            # run kept, at this commit (a decoding change, same model)

Pipeline stages (``rows``), per catalogue size N: a seeded synthetic RecBole catalogue (``synth.inter``,
users of 20 events, ~10 interactions per item) and its clustered item vectors, imported by the embed
stage as precomputed "text" features (no encoder runs). Then prepare (5-core, leave-one-out), the
collaborative SASRec table (one epoch, the sampled loss where genrec has it), embed (import + fuse),
tokenize (configs/sparse.yaml's PQ, one tokenizer per modality), one epoch of genrec training
(configs/sparse.yaml), export, and the server runtime loading the export and decoding users' test histories.
The serve stage times each decoding path of that export in process, at batch 1 and batched: its exact
scoring and trie beam search (``--decoding beam``); then a ``serve.py`` process per path takes loopback HTTP
load from 32 clients (req/s, latency, the server's RSS). Those are the ``source: "export"`` rows of
``serving``. Each stage runs in a fresh child process: its row holds the wall time and the child's peak RSS
(``ru_maxrss``, python and torch imports included). Training stages measure at most ``--train-steps``
steps and extrapolate the epoch from their step time (``extrapolated_from_steps`` in the row);
validation runs on a fixed subset of users (the epoch is what is timed).

Decode layer (``serving``), per N (all seeded): clustered item vectors (super-clusters -> clusters -> items),
~10 interactions per item from users who mostly stay in one cluster; two tokenizations of the vectors,
fitted on a sample and applied to every item:
- PQ codes (16 subspaces x 256 + a dedup digit): what the parallel head decodes, exactly, by
  ``score_catalogue`` (every item) or ``pruned_search`` (posting lists, same top-k);
- RQ codes (3 residual levels x 256 + a dedup digit): what trie beam search (beam 20) decodes.
Per-digit log-probs come from a fixed linear head over a user state (the mean of the user's last
history items plus noise): the digit's codebook, as ParallelHead's ``query @ code_emb.T``, plus a fixed
random matrix, softmaxed at a temperature with a 1% floor (label smoothing's residue: without a floor a
temperature only rescales every gap and changes no pruning work). How peaked that is: the mean top-1
probability and perplexity per digit, in the JSON. Requests exclude their history (the server's
default), k = 10.

Measured: wall time and peak RSS of building the trie + posting lists; in-process p50/p99 of
``score_catalogue``, ``pruned_search`` and ``beam_search`` at batch 1 and 32 (the head's step calls
included); items scored per request; and that pruned == full on every timed request. Below
genrec.decode.pruned.MIN_ITEMS (64k) the pruned path is a dense pass by design. A second table compares
the two exact pruned methods (posting lists vs trie walk) on PQ and RQ codes, peaked and flat heads.
Writes bench/results/scale.json, scale.md and scale.png; the machine's load average is recorded with them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from run import git_commit, write_outputs  # noqa: E402  (bench/run.py: the shared bench conventions)

from genrec.decode import Trie, beam_search, exclude_mask, score_catalogue  # noqa: E402
from genrec.decode.pruned import PrunedResult, pruned_search  # noqa: E402
from genrec.io import machine_info, package_versions  # noqa: E402

RESULTS = REPO / "bench" / "results"
PATHS = ("full", "pruned", "beam")     # decoding paths timed per size
PATH_LABELS = {"full": "exact, every item (score_catalogue)", "pruned": "exact, pruned (posting lists)",
               "beam": "beam search, width 20 (RQ codes)"}


@dataclass
class ScaleConfig:
    sizes: list[int] = field(default_factory=lambda: [10_000, 100_000, 1_000_000])   # catalogue sizes
    dim: int = 64                   # item vector dimension
    items_per_cluster: int = 200    # mean cluster size (clusters = N / this)
    interactions_per_item: int = 10  # synthetic interactions per item
    history: int = 20               # items per user history (and per request)
    pq_digits: int = 16             # PQ subspaces (configs' pq tokenizer: 2 modalities x 8 levels)
    rq_levels: int = 3              # residual levels of the beam path's codes (TIGER's 3 x 256)
    codebook_size: int = 256        # codes per PQ subspace / RQ level
    fit_sample: int = 32_768        # items the codebooks are fitted on (k-means), then applied to all
    kmeans_iters: int = 8           # Lloyd iterations per codebook
    temperature: float = 0.15       # head temperature ("peaked": a few codes per digit carry the mass)
    flat_temperature: float = 2.0   # the "flat" head of the method comparison
    smoothing: float = 0.01         # probability floor mixed into every digit (label smoothing's residue)
    random_head: float = 0.3        # weight of the fixed random matrix in the head (what a model has not fit)
    k: int = 10                     # items returned per request
    beam_width: int = 20            # beam search width
    batch: int = 32                 # the batched setting (batch 1 is always timed)
    n_requests: int = 200           # timed batch-1 requests per path (fewer if the time budget runs out)
    n_batches: int = 12             # timed batches per path
    budget_s: float = 20.0          # time budget per path and batch size (at least 5 timed calls)
    compare_size: int = 100_000     # catalogue size of the pruned-methods comparison (0: skip it)
    seed: int = 0
    out: str = "bench/results"      # where scale.json / .md / .png go

    def __post_init__(self):
        for name in ("dim", "items_per_cluster", "interactions_per_item", "history", "pq_digits", "rq_levels",
                     "codebook_size", "fit_sample", "kmeans_iters", "k", "beam_width", "batch", "n_requests",
                     "n_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.dim % self.pq_digits:
            raise ValueError(f"dim ({self.dim}) must be a multiple of pq_digits ({self.pq_digits})")
        if any(n < 2 * self.history for n in self.sizes):
            raise ValueError(f"every size must be >= 2 * history ({2 * self.history}), got {self.sizes}")
        if self.k > self.beam_width:
            raise ValueError(f"k ({self.k}) must be <= beam_width ({self.beam_width})")


# --smoke: one small-vector catalogue just above genrec.decode.pruned.MIN_ITEMS, so the pruned search runs
SMOKE = dict(sizes=[70_000], dim=16, pq_digits=4, rq_levels=2, codebook_size=32, fit_sample=2000, kmeans_iters=4,
             n_requests=20, n_batches=2, batch=8, budget_s=1.0, compare_size=70_000, items_per_cluster=200)


# ---------------------------------------------------------------------- catalogue
@dataclass
class Catalogue:
    vectors: np.ndarray        # (N, dim) float32
    users: np.ndarray          # (U,) int64 user of each interaction
    items: np.ndarray          # (U,) int64 item of each interaction (users' rows contiguous, oldest first)
    n_users: int


def synthetic_catalogue(n_items: int, cfg: ScaleConfig, rng: np.random.Generator) -> Catalogue:
    """Clustered item vectors and ~interactions_per_item interactions per item, vectorised."""
    n_clusters = max(4, n_items // cfg.items_per_cluster)
    n_super = max(2, int(np.sqrt(n_clusters)))
    super_centres = rng.normal(size=(n_super, cfg.dim)).astype(np.float32)
    centres = super_centres[rng.integers(0, n_super, n_clusters)] + 0.5 * rng.normal(size=(n_clusters, cfg.dim))
    # uneven cluster sizes (a Dirichlet draw), every cluster non-empty
    share = rng.dirichlet(np.ones(n_clusters))
    sizes = 1 + rng.multinomial(n_items - n_clusters, share)
    cluster = np.repeat(np.arange(n_clusters), sizes)
    rng.shuffle(cluster)
    vectors = (centres[cluster] + 0.35 * rng.normal(size=(n_items, cfg.dim))).astype(np.float32)
    # users: a favourite cluster (by size), 80% of interactions inside it, the rest anywhere
    n_users = max(1, n_items * cfg.interactions_per_item // cfg.history)
    members = np.argsort(cluster, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    fav = rng.choice(n_clusters, n_users, p=sizes / n_items)
    users = np.repeat(np.arange(n_users), cfg.history)
    inside = rng.random(len(users)) < 0.8
    c = fav[users]
    in_cluster = members[starts[c] + (rng.random(len(users)) * sizes[c]).astype(np.int64)]
    items = np.where(inside, in_cluster, rng.integers(0, n_items, len(users)))
    return Catalogue(vectors=vectors, users=users, items=items, n_users=n_users)


def kmeans(x: np.ndarray, k: int, iters: int, rng: np.random.Generator) -> np.ndarray:
    """(k, d) centroids of x (n, d) by Lloyd's algorithm from k random points (empty clusters keep theirs)."""
    centroids = x[rng.choice(len(x), k, replace=len(x) < k)].copy()
    for _ in range(iters):
        assign = nearest(x, centroids)
        counts = np.bincount(assign, minlength=k)
        sums = np.zeros_like(centroids)
        np.add.at(sums, assign, x)
        full = counts > 0
        centroids[full] = sums[full] / counts[full, None]
    return centroids


def nearest(x: np.ndarray, centroids: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """(n,) index of the nearest centroid of each row of x, in chunks of rows."""
    half_norm = 0.5 * (centroids ** 2).sum(axis=1)
    out = np.empty(len(x), dtype=np.int64)
    for start in range(0, len(x), chunk):
        out[start:start + chunk] = np.argmax(x[start:start + chunk] @ centroids.T - half_norm, axis=1)
    return out


def with_dedup(codes: np.ndarray) -> tuple[np.ndarray, int]:
    """Append the dedup digit (rank among items sharing the tuple, in item order) and return its size."""
    order = np.lexsort(codes.T[::-1])
    sorted_codes = codes[order]
    new_group = np.concatenate([[True], (sorted_codes[1:] != sorted_codes[:-1]).any(axis=1)])
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(len(codes)), 0))
    dedup = np.empty(len(codes), dtype=np.int64)
    dedup[order] = np.arange(len(codes)) - group_start    # lexsort is stable: item order within a group
    return np.concatenate([codes, dedup[:, None]], axis=1), int(dedup.max()) + 1


@dataclass
class Codes:
    codes: np.ndarray                 # (N, D) including the dedup digit
    level_sizes: tuple[int, ...]
    codebooks: list[np.ndarray]       # PQ: per subspace (K, dim / S); RQ: per level (K, dim)


def pq_codes(vectors: np.ndarray, cfg: ScaleConfig, rng: np.random.Generator) -> Codes:
    sub = cfg.dim // cfg.pq_digits
    sample = vectors[rng.choice(len(vectors), min(cfg.fit_sample, len(vectors)), replace=False)]
    books, digits = [], []
    for s in range(cfg.pq_digits):
        cols = slice(s * sub, (s + 1) * sub)
        books.append(kmeans(sample[:, cols], cfg.codebook_size, cfg.kmeans_iters, rng))
        digits.append(nearest(vectors[:, cols], books[-1]))
    codes, dedup = with_dedup(np.stack(digits, axis=1))
    return Codes(codes, (cfg.codebook_size,) * cfg.pq_digits + (dedup,), books)


def rq_codes(vectors: np.ndarray, cfg: ScaleConfig, rng: np.random.Generator) -> Codes:
    pick = rng.choice(len(vectors), min(cfg.fit_sample, len(vectors)), replace=False)
    residual_fit = vectors[pick].copy()
    residual = vectors.copy()
    books, digits = [], []
    for _ in range(cfg.rq_levels):
        books.append(kmeans(residual_fit, cfg.codebook_size, cfg.kmeans_iters, rng))
        residual_fit -= books[-1][nearest(residual_fit, books[-1])]
        digits.append(nearest(residual, books[-1]))
        residual -= books[-1][digits[-1]]
    codes, dedup = with_dedup(np.stack(digits, axis=1))
    return Codes(codes, (cfg.codebook_size,) * cfg.rq_levels + (dedup,), books)


def request_states(cat: Catalogue, n: int, cfg: ScaleConfig, rng: np.random.Generator
                   ) -> tuple[np.ndarray, list[np.ndarray]]:
    """n user states (n, dim) and histories: a random user's history; state = mean of its last 5 items + noise."""
    users = rng.integers(0, cat.n_users, n)
    histories = [cat.items[u * cfg.history:(u + 1) * cfg.history] for u in users]
    states = np.stack([cat.vectors[h[-5:]].mean(axis=0) for h in histories])
    states += 0.25 * rng.normal(size=states.shape).astype(np.float32)
    return states.astype(np.float32), histories


# ---------------------------------------------------------------------- heads (StepFns)
def log_probs(logits: np.ndarray, temperature: float, smoothing: float) -> np.ndarray:
    """log((1 - smoothing) * softmax(logits / temperature) + smoothing / K): a softmax head with a floor, as
    label smoothing leaves one. Without the floor the temperature would only scale every gap between codes
    and cost no pruning work; with it, a flat head keeps most codes near the floor."""
    z = logits / temperature
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    return np.log((1 - smoothing) * p + smoothing / logits.shape[-1])


class ParallelHead:
    """Per-digit log-probs from one user state (prefix-independent, as ParallelHead's ``query @ code_emb.T``):
    digit d reads its view of the state (its PQ subspace, or the whole state for RQ codes) through the
    digit's codebook (``u . c - |c|^2 / 2``: minus half the squared distance) plus a fixed random linear
    map of the whole state (what a model has not fit). The dedup digit is uniform."""

    def __init__(self, codes: Codes, cfg: ScaleConfig, temperature: float, rng: np.random.Generator):
        self.books, self.sizes, self.t, self.smoothing = codes.codebooks, codes.level_sizes, temperature, cfg.smoothing
        width = self.books[0].shape[1]
        self.views = [slice(d * width, (d + 1) * width) if width < cfg.dim else slice(None)
                      for d in range(len(self.books))]
        self.noise = [cfg.random_head * rng.normal(size=(cfg.dim, len(b))).astype(np.float32) / np.sqrt(cfg.dim)
                      for b in self.books]
        self.states = np.zeros((0, cfg.dim), dtype=np.float32)

    def bind(self, states: np.ndarray) -> "ParallelHead":
        self.states = states
        return self

    def __call__(self, level, parent_rows, last_codes):
        self._requests = np.asarray(parent_rows) if level == 0 else self._requests[parent_rows]
        rows = self.states[self._requests]
        if level == len(self.books):    # the dedup digit
            return np.full((len(rows), self.sizes[level]), -np.log(self.sizes[level]))
        book = self.books[level]
        logits = rows[:, self.views[level]] @ book.T - 0.5 * (book ** 2).sum(axis=1) + rows @ self.noise[level]
        return log_probs(logits, self.t, self.smoothing)


class ResidualHead:
    """Prefix-dependent log-probs for RQ codes: level l scores codes against the state's residual after the
    beam's chosen codes (what an autoregressive code head learns), plus the same kind of random map."""

    def __init__(self, codes: Codes, cfg: ScaleConfig, temperature: float, rng: np.random.Generator):
        self.books, self.sizes, self.t, self.smoothing = codes.codebooks, codes.level_sizes, temperature, cfg.smoothing
        self.noise = [cfg.random_head * rng.normal(size=(cfg.dim, len(b))).astype(np.float32) / np.sqrt(cfg.dim)
                      for b in self.books]
        self.states = np.zeros((0, cfg.dim), dtype=np.float32)

    def bind(self, states: np.ndarray) -> "ResidualHead":
        self.states = states
        return self

    def __call__(self, level, parent_rows, last_codes):
        if level == 0:
            self._residual = self.states[parent_rows]
        else:
            self._residual = self._residual[parent_rows] - self.books[level - 1][last_codes]
        if level == len(self.books):
            return np.full((len(self._residual), self.sizes[level]), -np.log(self.sizes[level]))
        book = self.books[level]
        logits = self._residual @ book.T - 0.5 * (book ** 2).sum(axis=1) + self._residual @ self.noise[level]
        return log_probs(logits, self.t, self.smoothing)


class CountingStep:
    """Wraps a StepFn to count the work of a beam search (untimed replay): log-probs computed, and the
    leaf candidates (beam x allowed last code) whose full path score it compared."""

    def __init__(self, step, trie: Trie):
        self.step, self.trie = step, trie
        self.codes_scored = 0
        self.leaf_candidates = 0

    def __call__(self, level, parent_rows, last_codes):
        self.nodes = (np.zeros(len(parent_rows), dtype=np.int64) if level == 0
                      else self.trie.child(level - 1, self.nodes[parent_rows], last_codes))
        out = self.step(level, parent_rows, last_codes)
        self.codes_scored += out.size
        if level == self.trie.depth - 1:
            first = self.trie.child_start[level]
            self.leaf_candidates += int((first[self.nodes + 1] - first[self.nodes]).sum())
        return out


def head_stats(step, trie: Trie, states: np.ndarray) -> dict:
    """How peaked the head is: mean top-1 probability and perplexity per digit (dedup digit excluded)."""
    rows = np.arange(len(states))
    tables = [step.bind(states)(d, rows, None if d == 0 else np.zeros(len(rows), dtype=np.int64))
              for d in range(trie.depth - 1)]
    top1 = np.mean([np.exp(t.max(axis=1)).mean() for t in tables])
    perplexity = np.mean([np.exp(-(np.exp(t) * t).sum(axis=1)).mean() for t in tables])
    return {"top1_prob": round(float(top1), 3), "perplexity": round(float(perplexity), 1)}


# ---------------------------------------------------------------------- measurement helpers
def _status(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux clear_refs), so the next peak belongs to what follows."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def rss_mb() -> float:
    return round(_status("VmRSS"), 1)


def peak_rss_mb() -> float:
    return round(_status("VmHWM"), 1)


def latency(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"n": len(a), "p50_ms": round(float(np.percentile(a, 50)), 3),
            "p99_ms": round(float(np.percentile(a, 99)), 3),
            "mean_ms": round(float(a.mean()), 3)}


def timed_calls(fn, inputs: list, budget_s: float, min_calls: int = 5) -> tuple[list[float], list]:
    """Milliseconds and outputs of fn(x) over inputs, after one untimed call; stops when the budget runs out."""
    fn(inputs[0])
    out_ms, outputs = [], []
    start_all = time.perf_counter()
    for x in inputs:
        start = time.perf_counter()
        outputs.append(fn(x))
        out_ms.append((time.perf_counter() - start) * 1000)
        if len(out_ms) >= min_calls and time.perf_counter() - start_all > budget_s:
            break
    return out_ms, outputs


# ---------------------------------------------------------------------- one catalogue size
@dataclass
class Prepared:
    n_items: int
    pq: Codes
    rq: Codes
    states: np.ndarray                 # (R, dim) request user states
    histories: list[np.ndarray]        # R histories (excluded from the results)
    n_interactions: int
    seconds: dict


def prepare(n_items: int, cfg: ScaleConfig, n_states: int) -> Prepared:
    rng = np.random.default_rng(cfg.seed + n_items)
    seconds = {}
    start = time.perf_counter()
    cat = synthetic_catalogue(n_items, cfg, rng)
    seconds["catalogue"] = time.perf_counter() - start
    start = time.perf_counter()
    pq = pq_codes(cat.vectors, cfg, rng)
    rq = rq_codes(cat.vectors, cfg, rng)
    seconds["codes"] = time.perf_counter() - start
    states, histories = request_states(cat, n_states, cfg, rng)
    out = Prepared(n_items, pq, rq, states, histories, len(cat.items), {k: round(v, 2) for k, v in seconds.items()})
    del cat                            # the item vectors are not part of decoding: free them before measuring
    return out


def build_rows(data: Prepared) -> tuple[list[dict], Trie, Trie]:
    """Time and peak RSS of the decode-side structures each path needs, built from the codes."""
    rows = []
    built = {}
    for name, codes, with_postings in (("pq", data.pq, True), ("rq", data.rq, False)):
        reset_peak_rss()
        before = rss_mb()
        start = time.perf_counter()
        trie = Trie(codes.codes, codes.level_sizes)
        if not with_postings:
            trie.node_start          # beam search walks the node tables (built on first use); exact decoding does not
        trie_s = time.perf_counter() - start
        index_bytes = trie.nbytes
        if with_postings:
            index_bytes += trie.postings.nbytes
        seconds = time.perf_counter() - start
        rows.append({"stage": "decode_index", "n_items": data.n_items, "codes": name,
                     "what": "codes + posting lists" if with_postings else "trie (node tables)",
                     "level_sizes": list(codes.level_sizes), "seconds": round(seconds, 3),
                     "trie_seconds": round(trie_s, 3),
                     "postings_seconds": round(seconds - trie_s, 3), "index_mb": round(index_bytes / 2**20, 1),
                     "rss_before_mb": before, "peak_rss_mb": peak_rss_mb()})
        built[name] = trie
    return rows, built["pq"], built["rq"]


def run_path(path: str, batch: int, data: Prepared, tries: dict, heads: dict, cfg: ScaleConfig,
             n_calls: int) -> tuple[dict, list]:
    """Time one decoding path at one batch size; returns its serving row and its results (for the equality check)."""
    n = data.n_items
    starts = [(i * batch) % (len(data.states) - batch + 1) for i in range(n_calls)]
    inputs = [(data.states[s:s + batch], exclude_mask(data.histories[s:s + batch], n)) for s in starts]
    if path == "full":
        def call(x):
            return score_catalogue(heads["pq"].bind(x[0]), tries["pq"], batch, cfg.k, item_mask=x[1])
    elif path == "pruned":
        def call(x):
            return pruned_search(heads["pq"].bind(x[0]), tries["pq"], batch, cfg.k, item_mask=x[1])
    else:
        def call(x):
            return beam_search(heads["rq"].bind(x[0]), tries["rq"], batch, cfg.beam_width, cfg.k, item_mask=x[1])
    reset_peak_rss()
    ms, outputs = timed_calls(call, inputs, cfg.budget_s)
    row = {"n_items": n, "decoding": path, "batch": batch, **latency(ms), "rss_mb": peak_rss_mb()}
    if path == "full":
        row["items_scored"] = n
        row["index_mb"] = round(tries["pq"].nbytes / 2**20, 1)
    elif path == "pruned":
        res: list[PrunedResult] = outputs
        paths = np.concatenate([r.path for r in res])
        scored = np.concatenate([r.items_scored for r in res])
        row["items_scored"] = round(float(np.mean(scored)), 1)
        row["items_scored_p50"] = round(float(np.median(scored)), 1)    # the mean counts fallbacks as N
        row["entries_read"] = round(float(np.mean(np.concatenate([r.entries_read for r in res]))), 1)
        row["fallback_full_share"] = round(float(np.mean(paths == "full")), 3)
        row["index_mb"] = round((tries["pq"].nbytes + tries["pq"].postings.nbytes) / 2**20, 1)
        outputs = [r.result for r in res]
    else:
        counter = CountingStep(heads["rq"].bind(inputs[0][0]), tries["rq"])
        beam_search(counter, tries["rq"], batch, cfg.beam_width, cfg.k, item_mask=inputs[0][1])
        row["items_scored"] = round(counter.leaf_candidates / batch, 1)
        row["codes_scored"] = round(counter.codes_scored / batch, 1)
        row["index_mb"] = round(tries["rq"].nbytes / 2**20, 1)
    return row, outputs


def same_topk(a, b) -> bool:
    return (np.array_equal(a.items, b.items) and np.array_equal(a.scores, b.scores)
            and np.array_equal(a.codes, b.codes))


def measure_size(n_items: int, cfg: ScaleConfig) -> dict:
    print(f"--- {n_items:,} items: catalogue and codes ...", flush=True)
    n_states = max(cfg.n_requests, cfg.batch * cfg.n_batches) + cfg.batch
    data = prepare(n_items, cfg, n_states)
    build, trie_pq, trie_rq = build_rows(data)
    for r in build:
        print(f"  build {r['what']} ({r['codes']}): {r['seconds']:.2f} s, peak RSS {r['peak_rss_mb']:.0f} MB, "
              f"{r['index_mb']} MB", flush=True)
    rng = np.random.default_rng(cfg.seed)
    heads = {"pq": ParallelHead(data.pq, cfg, cfg.temperature, rng),
             "rq": ResidualHead(data.rq, cfg, cfg.temperature, rng)}
    tries = {"pq": trie_pq, "rq": trie_rq}
    serving, equal = [], {}
    for batch, n_calls in ((1, cfg.n_requests), (cfg.batch, cfg.n_batches)):
        outputs = {}
        for path in PATHS:
            row, outputs[path] = run_path(path, batch, data, tries, heads, cfg, n_calls)
            serving.append(row)
            print(f"  batch {batch:>2} {path:>6}: p50 {row['p50_ms']:9.2f} ms  p99 {row['p99_ms']:9.2f} ms  "
                  f"items scored/request {row['items_scored']:>10}  (n={row['n']})", flush=True)
        common = min(len(outputs["full"]), len(outputs["pruned"]))
        equal[f"batch_{batch}"] = {"compared_calls": common,
                                   "equal": all(same_topk(a, b) for a, b in zip(outputs["full"][:common],
                                                                                outputs["pruned"][:common]))}
    return {"build": build, "serving": serving, "pruned_equals_full": equal,
            "setting": {"n_items": n_items, "n_interactions": data.n_interactions,
                        "pq_level_sizes": list(data.pq.level_sizes),
                        "rq_level_sizes": list(data.rq.level_sizes), "synthesis_seconds": data.seconds,
                        "pq_head": head_stats(heads["pq"], trie_pq, data.states[:64]),
                        "rq_head_level0": head_stats(ParallelHead(data.rq, cfg, cfg.temperature, rng), trie_rq,
                                                     data.states[:64])}}


# ---------------------------------------------------------------------- pruned methods compared
def compare_methods(n_items: int, cfg: ScaleConfig) -> list[dict]:
    """Posting lists vs trie walk on PQ and RQ codes, peaked and flat parallel heads: batch-1 p50 and work."""
    print(f"--- method comparison at {n_items:,} items ...", flush=True)
    n_req = max(10, cfg.n_requests // 4)
    data = prepare(n_items, cfg, n_req)
    rows = []
    rng = np.random.default_rng(cfg.seed + 1)
    for code_name, codes in (("pq", data.pq), ("rq", data.rq)):
        trie = Trie(codes.codes, codes.level_sizes)
        trie.postings
        for regime, temperature in (("peaked", cfg.temperature), ("flat", cfg.flat_temperature)):
            head = ParallelHead(codes, cfg, temperature, rng)
            inputs = [(data.states[i:i + 1], exclude_mask(data.histories[i:i + 1], n_items)) for i in range(n_req)]
            full_ms, full = timed_calls(lambda x: score_catalogue(head.bind(x[0]), trie, 1, cfg.k, item_mask=x[1]),
                                        inputs, cfg.budget_s / 4)
            for method in ("postings", "trie"):
                ms, res = timed_calls(lambda x: pruned_search(head.bind(x[0]), trie, 1, cfg.k, item_mask=x[1],
                                                              method=method), inputs, cfg.budget_s / 4)
                paths = np.concatenate([r.path for r in res])
                row = {"n_items": n_items, "codes": code_name, "head": regime,
                       **head_stats(head, trie, data.states[:32]),
                       "method": method, "p50_ms": latency(ms)["p50_ms"], "p99_ms": latency(ms)["p99_ms"],
                       "full_p50_ms": latency(full_ms)["p50_ms"],
                       "items_scored": round(float(np.mean([r.items_scored[0] for r in res])), 1),
                       "entries_read": round(float(np.mean([r.entries_read[0] for r in res])), 1),
                       "fallback_full_share": round(float(np.mean(paths == "full")), 3), "n": len(ms),
                       "equals_full": all(same_topk(r.result, f) for r, f in zip(res, full))}
                rows.append(row)
                print(f"  {code_name} {regime:>6} {method:>8}: p50 {row['p50_ms']:8.2f} ms "
                      f"(full {row['full_p50_ms']:.2f}), "
                      f"scored {row['items_scored']:>9}, read {row['entries_read']:>10}, "
                      f"fell back {row['fallback_full_share']:.0%}", flush=True)
    return rows


# ---------------------------------------------------------------------- pipeline stages (rows)
# The stages timed per size, in order; each runs in a fresh child process (its own peak RSS).
STAGES = ("prepare", "collab", "embed", "tokenize", "train", "export", "serve")
STAGE_LABELS = {"prepare": "prepare (read RecBole .inter, 5-core, split, write)",
                "collab": "collaborative table (SASRec, one epoch)", "embed": "embed (import + fuse, no encoder)",
                "tokenize": "tokenize (PQ, one per modality, + dedup)", "train": "train genrec (one epoch)",
                "item_grad_steps": "training steps, item table dense vs sparse",
                "export": "export (ONNX + decode tables)", "serve": "server load + 32 requests"}


@dataclass
class StageConfig:
    """Settings of the pipeline-stage rows (the ``rows`` of scale.json besides decode_index)."""

    sizes: list[int] = field(default_factory=lambda: [10_000, 100_000, 1_000_000])   # catalogue sizes
    dim: int = 64                      # dimension of the clustered item vectors (imported as the "text" modality)
    items_per_cluster: int = 200       # mean cluster size
    interactions_per_item: int = 10    # interactions per item (users of `history` events each)
    history: int = 20                  # events per synthetic user
    n_levels: int = 8                  # PQ subspaces per modality (configs/sparse.yaml)
    codebook_size: int = 256           # codes per subspace (configs/sparse.yaml)
    kmeans_iters: int = 30             # TokenizeConfig's default
    train_config: str = "configs/sparse.yaml"  # genrec's training YAML (model and data sections)
    # ... less its hybrid item logit, whose serving is a dense pass over every item per request: the code-only
    # layout is what scales to 10^6 items (no item loss, so no free output table nor item-logit weight)
    train_overrides: list[str] = field(default_factory=lambda: ["--model.item_loss_weight=0", "--model.search=beam",
                                                                "--model.item_output=token",
                                                                "--model.item_logit_weight=1"])
    train_steps: int = 300             # measure at most this many training steps, then extrapolate to the epoch
    collab_steps: int = 300            # the same for the collaborative SASRec
    collab_negatives: int = 0          # negatives of the collaborative SASRec's sampled loss (0: the loss's default)
    val_users: int = 512               # validation users of both trainings (a fixed subset: the epoch is timed)
    serve_requests: int = 200          # batch-1 requests the "serve" stage decodes after loading
                                       # (users' test histories)
    serve_batch: int = 32              # the batched in-process setting of the serve stage (requests per call)
    http_clients: int = 32             # concurrent loopback clients of the HTTP load test, per decoding path
    http_requests: int = 2000          # requests of that load test (after a warm-up of 2 per client)
    item_grad: str = "auto"            # both trainings' item-table update (genrec.lit.optim): auto, dense, sparse
    item_grad_steps: int = 0           # > 0: after the stages, time this many steps of each training with the
                                       # item table dense and sparse (``item_grad_steps`` in scale.json)
    seed: int = 0
    work: str = ""                     # scratch folder ("" = a temporary one, removed afterwards)

    def __post_init__(self):
        for name in ("dim", "items_per_cluster", "interactions_per_item", "history", "n_levels", "codebook_size",
                     "train_steps", "collab_steps", "val_users", "serve_requests", "serve_batch", "http_clients",
                     "http_requests"):
            if getattr(self, name) < 1:
                raise ValueError(f"StageConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.dim % self.n_levels:
            raise ValueError(f"StageConfig.dim ({self.dim}) must be a multiple of n_levels ({self.n_levels})")


SERVE_HISTORIES = "serve_histories.json"   # in the stage work folder: the serve stage's request histories

# --smoke --stages-only: a tiny catalogue through every stage (each child imports torch: ~5 s apiece)
STAGE_SMOKE = dict(sizes=[600], dim=16, n_levels=2, codebook_size=16, kmeans_iters=5, train_steps=5,
                   collab_steps=5, collab_negatives=8, val_users=32, serve_requests=4, serve_batch=2, http_clients=4,
                   http_requests=40)


def write_source(n_items: int, cfg: StageConfig, folder: Path) -> dict:
    """A RecBole atomic catalogue (``synth.inter``) and its item vectors (``vectors.npy`` + a row map) in ``folder``."""
    import polars as pl

    rng = np.random.default_rng(cfg.seed)
    cat = synthetic_catalogue(n_items, ScaleConfig(sizes=[n_items], dim=cfg.dim,
                                                   items_per_cluster=cfg.items_per_cluster,
                                                   interactions_per_item=cfg.interactions_per_item,
                                                   history=cfg.history, pq_digits=1), rng)
    src = folder / "source"
    src.mkdir(parents=True, exist_ok=True)
    # one event per row; each user's events one day apart, users interleaved in time
    ts = 1_600_000_000 + 86_400 * (np.arange(len(cat.users)) % cfg.history) + cat.users
    events = pl.DataFrame({"u": cat.users, "i": cat.items, "t": ts}).select(
        pl.concat_str(pl.lit("u"), pl.col("u").cast(pl.Utf8)).alias("user_id:token"),
        pl.concat_str(pl.lit("i"), pl.col("i").cast(pl.Utf8)).alias("item_id:token"),
        pl.col("t").alias("timestamp:float"))
    events.write_csv(src / "synth.inter", separator="\t")
    np.save(folder / "vectors.npy", cat.vectors)
    rows = pl.DataFrame({"row": np.arange(n_items)})
    rows.select(pl.concat_str(pl.lit("i"), pl.col("row").cast(pl.Utf8)).alias("id"), "row").write_csv(
        folder / "vectors.item2row", separator="\t", include_header=False)
    return {"n_items": n_items, "n_interactions": int(len(cat.items)), "n_users": cat.n_users}


def _sub_valid(dataset, n: int, seed: int):
    """``dataset`` whose validation examples are a fixed random subset of ``n`` users (the epoch is what is timed)."""
    from genrec.evaluate import subset

    split = dataset.split
    dataset.__dict__["split"] = type(split)(train=split.train, valid=subset(split.valid, n, seed), test=split.test)
    return dataset


def _steps_callback():
    """A Lightning callback timing each training step (batch start to end) and counting them."""
    import lightning as L

    class StepTimer(L.Callback):
        def __init__(self):
            self.steps, self.seconds, self._t0 = 0, 0.0, 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self._t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.steps += 1
            self.seconds += time.perf_counter() - self._t0

    return StepTimer()


def _epoch_fields(timer, batches_per_epoch: int, wall: float) -> dict:
    """seconds of one epoch: the child's wall time, with the measured steps replaced by a whole epoch of them
    when fewer were run (``extrapolated_from_steps``)."""
    per_step = timer.seconds / max(timer.steps, 1)
    out = {"steps_per_epoch": batches_per_epoch, "steps_measured": timer.steps,
           "seconds_per_step": round(per_step, 5), "train_seconds_measured": round(timer.seconds, 2)}
    if timer.steps < batches_per_epoch:
        out["extrapolated_from_steps"] = timer.steps
        out["seconds"] = round(wall - timer.seconds + batches_per_epoch * per_step, 2)
    return out


def stage_child(stage: str, work: Path) -> dict:
    """Run one stage on ``work``'s run folder (in this process); returns extra fields for its row."""
    spec = json.loads((work / "spec.json").read_text())
    cfg = StageConfig(**spec["config"])
    run, t0 = work / "run", time.perf_counter()
    if stage == "prepare":
        from genrec.data.prepare import PrepareConfig, prepare

        m = prepare(work / "source", run, PrepareConfig(progress=False), fmt="recbole", name="synth")
        return {"prepared_items": m["n_items"], "prepared_users": m["n_users"],
                "prepared_interactions": m["n_interactions"]}
    if stage == "collab":
        return _collab_child(cfg, work, t0)
    if stage == "embed":
        from genrec.features.stage import EmbedConfig, embed

        embed(run, EmbedConfig(text={"enabled": False}, image={"enabled": False}, collab=False, progress=False,
                               use_cache=False, precomputed=(
                                   {"name": "text", "path": str(work / "vectors.npy"),
                                    "row_map": str(work / "vectors.item2row")},
                                   {"name": "collab", "path": str(work / "collab.npy")})))
        return {}
    if stage == "tokenize":
        from genrec.tokenizer.config import TokenizeConfig
        from genrec.tokenizer.stage import tokenize

        report = tokenize(run, TokenizeConfig(method="pq", modalities="separate", n_levels=cfg.n_levels,
                                              codebook_size=cfg.codebook_size, kmeans_iters=cfg.kmeans_iters,
                                              seed=cfg.seed))
        return {"level_sizes": report.get("level_sizes") if isinstance(report, dict) else None}
    if stage == "train":
        return _train_child(cfg, work, t0)
    if stage == "export":
        from genrec.export.onnx import ExportConfig, export

        export(run, work / "export", ExportConfig(checkpoint="last", thumbnail_size=0))
        files = [p for p in (work / "export").rglob("*") if p.is_file()]
        sizes = {p.name: p.stat().st_size for p in files}
        return {"export_mb": round(sum(sizes.values()) / 2**20, 1),
                "largest_files_mb": {k: round(v / 2**20, 1) for k, v in sorted(sizes.items(), key=lambda x: -x[1])[:6]}}
    if stage == "serve":
        return _serve_child(cfg, work)
    raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")


def _collab_child(cfg: StageConfig, work: Path, t0: float) -> dict:
    """The collaborative SASRec of the embed stage (genrec.features.collab's model, data and settings), one epoch
    on a Trainer that can stop after collab_steps; its item table goes to collab.npy for the embed stage."""
    import dataclasses
    import warnings

    import lightning as L
    import torch

    from genrec.data.dataset import load_dataset
    from genrec.lit.callbacks import quiet_lightning
    from genrec.lit.sasrec import LitSASRec, SASRecDataModule, SASRecTrainConfig

    dataset = _sub_valid(load_dataset(work / "run"), cfg.val_users, cfg.seed)
    common = dict(progress_bar=False, max_epochs=1, eval_max_items=dataset.max_items, eval_batch_size=32)
    if cfg.collab_negatives:
        common["n_negatives"] = cfg.collab_negatives
    try:    # the sampled softmax (in-batch + shared negatives) where this genrec has it, else BCE
        train_cfg = SASRecTrainConfig(loss="sampled", item_grad=cfg.item_grad, **common)
    except (ValueError, TypeError):
        train_cfg = SASRecTrainConfig(loss="bce", **common)
    torch.set_num_threads(train_cfg.num_threads or torch.get_num_threads())
    L.seed_everything(train_cfg.seed, workers=True, verbose=False)
    data = SASRecDataModule(dataset.split, dataset.n_items, train_cfg)
    counts = {"item_counts": data.item_counts} if hasattr(data, "item_counts") else {}   # the sampled loss's
    module = LitSASRec(train_cfg, dataset.n_items, **counts)
    n_batches = -(-len(data.train_windows) // train_cfg.batch_size)
    timer = _steps_callback()
    quiet_lightning()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1,
                        limit_train_batches=min(cfg.collab_steps, n_batches),
                        callbacks=[timer], logger=False, enable_checkpointing=False, enable_model_summary=False,
                        enable_progress_bar=False, num_sanity_val_steps=0, deterministic=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(module, datamodule=data)
    np.save(work / "collab.npy", module.model.item_embeddings().detach().numpy().astype(np.float32))
    return {"loss": train_cfg.loss, "item_grad": "sparse" if getattr(module, "sparse_items", False) else "dense",
            "n_negatives": train_cfg.n_negatives, "batch_size": train_cfg.batch_size,
            **_epoch_fields(timer, n_batches, time.perf_counter() - t0)}


def _train_child(cfg: StageConfig, work: Path, t0: float) -> dict:
    """genrec's training (the YAML's model and data, Lightning CLI), one epoch or its first train_steps."""
    from genrec.pipeline import train_run

    probe = _steps_callback()
    args = ["--trainer.max_epochs=1", f"--trainer.limit_train_batches={cfg.train_steps}",
            "--trainer.limit_val_batches=1", f"--data.val_max_users={cfg.val_users}",
            "--trainer.enable_progress_bar=false",
            # exact validation holds (batch, n_items) masks and scores: 64 rows keep that ~0.5 GB at 1M items
            f"--data.eval_batch_size={min(64, cfg.val_users)}",
            "--trainer.logger=false", f"--model.item_id_grad={cfg.item_grad}", *cfg.train_overrides]
    import genrec.lit.cli as lit_cli

    # the step timer joins the CLI's callbacks (GenRecCLI.instantiate_trainer adds its own to these)
    original = lit_cli.GenRecCLI.instantiate_trainer

    def with_timer(self, **kwargs):
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), probe]
        return original(self, **kwargs)

    lit_cli.GenRecCLI.instantiate_trainer = with_timer
    cli = train_run(work / "run", cfg.train_config, args)
    n_batches = len(cli.datamodule.train_dataloader())
    if cfg.train_steps >= n_batches:    # the limit did not cut the epoch
        probe.steps = max(probe.steps, n_batches)
    return {"batch_size": cli.datamodule.batch_size, "item_grad": "sparse" if cli.model.sparse_item_ids else "dense",
            **_epoch_fields(probe, n_batches, time.perf_counter() - t0)}


def write_serve_histories(work: Path, cfg: StageConfig) -> None:
    """``serve_requests`` seeded users' test histories (every event before the held-out one, the last ``history``
    of them) from the prepared run, for the serve stage: requests a trained model has seen the like of, not
    random items. Read here, in the parent, so the serve stage's RSS holds the server and nothing else."""
    import polars as pl

    seqs = pl.scan_parquet(work / "run" / "dataset" / "sequences.parquet")
    n_users = seqs.select(pl.len()).collect().item()
    users = np.random.default_rng(cfg.seed).choice(n_users, min(cfg.serve_requests, n_users), replace=False)
    rows = seqs.filter(pl.col("user_id").is_in(users.tolist())).select("item_ids").collect()["item_ids"].to_list()
    (work / SERVE_HISTORIES).write_text(json.dumps([list(s[:-1][-cfg.history:]) for s in rows if len(s) > 1]))


def _serve_child(cfg: StageConfig, work: Path) -> dict:
    """The server's runtime: load the export, decode the users' test histories one request at a time (batch 1);
    RSS after load and after, latency, and for exact decoding the share of requests that took the dense pass."""
    import genrec.decode.exhaustive as exhaustive
    from genrec.serving.runtime import ExportRuntime

    t0 = time.perf_counter()
    runtime = ExportRuntime(work / "export")
    load_s = time.perf_counter() - t0
    rss_loaded = current_rss_mb()
    paths, reads = [], []
    search = exhaustive.pruned_search

    recording = [True]

    def recorded(*args, **kwargs):          # the runtime's exact search, its per-request path and reads kept
        out = search(*args, **kwargs)
        if recording[0]:
            paths.extend(out.path.tolist())
            reads.extend(out.entries_read.tolist())
        return out

    exhaustive.pruned_search = recorded
    histories = json.loads((work / SERVE_HISTORIES).read_text())
    # A parallel export's encoder returns every level's log-probs (one graph call per request); the same
    # requests are also decoded, interleaved, with decoder_step.onnx run once per level, as before format 6.
    fused = runtime.one_call
    encode = runtime.encode

    def stepped_encode(histories_):
        return {k: v for k, v in encode(histories_).items() if k != "level_log_probs"}

    ms, ms_stepped = [], []
    for hist in histories:
        t = time.perf_counter()
        runtime.recommend([hist], 10)
        ms.append(1000 * (time.perf_counter() - t))
        if fused:
            runtime.encode, recording[0] = stepped_encode, False
            t = time.perf_counter()
            runtime.recommend([hist], 10)
            ms_stepped.append(1000 * (time.perf_counter() - t))
            runtime.encode, recording[0] = encode, True
    # RssAnon is each worker's own memory; RssFile is page cache (the memory-mapped tables), shared by workers
    out = {"load_seconds": round(load_s, 2), "rss_after_load_mb": rss_loaded, "rss_after_requests_mb": current_rss_mb(),
           "rss_anon_mb": round(_status("RssAnon"), 1), "rss_file_mb": round(_status("RssFile"), 1),
           "requests": len(ms), "requests_from": "users' test histories",
           "p50_ms": round(float(np.median(ms)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
           "decoding": runtime.decoding, "memory_mapped": memmapped_arrays(runtime)}
    if ms_stepped:
        out["per_level_steps"] = {"p50_ms": round(float(np.median(ms_stepped)), 2),
                                  "p99_ms": round(float(np.percentile(ms_stepped, 99)), 2)}
    if paths:
        pruned = np.asarray(paths) == "pruned"
        out["dense_pass_share"] = round(float(np.mean(np.asarray(paths) == "full")), 3)
        if pruned.any():    # how much of the catalogue the bound let through, on the requests it pruned
            out["pruned_entries_read_p50"] = float(np.median(np.asarray(reads)[pruned]))
    recording[0] = False
    out["paths"] = decoding_paths(runtime, work, cfg, histories)
    return out


def decoding_paths(runtime, work: Path, cfg: StageConfig, histories: list[list[int]]) -> list[dict]:
    """In-process p50/p99 of each decoding path on one export, at batch 1 and at ``serve_batch``: the export's own
    (exact scoring for a parallel head) and trie beam search (``--decoding beam``) over the same per-level
    log-probs. Batches cycle through the users' histories (at least 12 batched calls)."""
    from genrec.serving.runtime import ExportRuntime, RuntimeConfig

    rows = []
    b = cfg.serve_batch
    n_calls = max(12, len(histories) // b)
    batches = [[histories[(i * b + j) % len(histories)] for j in range(b)] for i in range(n_calls)]
    runtimes = [runtime]
    if runtime.exact:
        runtimes.append(ExportRuntime(work / "export", RuntimeConfig(decoding="beam", verify_checksums=False)))
    for rt in runtimes:
        t = time.perf_counter()
        rt.recommend([histories[0]], 10)             # a beam runtime builds the trie's node tables on its first call
        first_ms = 1000 * (time.perf_counter() - t)
        for batch, calls in ((1, [[h] for h in histories]), (b, batches)):
            ms = []
            for call in calls:
                t = time.perf_counter()
                rt.recommend(call, 10)
                ms.append(1000 * (time.perf_counter() - t))
            rows.append({"decoding": "exact" if rt.exact else "beam", "batch": batch, "calls": len(ms),
                         "p50_ms": round(float(np.median(ms)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
                         "first_call_ms": round(first_ms, 1)})
    return rows


def http_load(work: Path, cfg: StageConfig, decodings: list[str]) -> dict[str, dict]:
    """Per decoding path: a `serve.py --decoding ...` process on the export, ``http_clients`` loopback clients
    sending ``http_requests`` users' test histories to POST /recommend (k = 10); req/s, latency, errors, and the
    server's RSS after the load (VmRSS) and at its peak (VmHWM)."""
    from loadgen import run_load
    from serve import rss_mb as process_rss
    from serve import start_server, stop_server

    histories = json.loads((work / SERVE_HISTORIES).read_text())
    ids = json.loads((work / "export" / "items.json").read_text())["source_id"]
    rng = np.random.default_rng(cfg.seed)
    bodies = [{"history": [ids[i] for i in histories[j]], "k": 10}
              for j in rng.integers(0, len(histories), cfg.http_requests)]
    out = {}
    for decoding in decodings:
        flag = "beam" if decoding == "beam" else "auto"
        proc, url = start_server(work / "export", work / f"server_{decoding}.log", "--decoding", flag)
        try:
            run_load(url, bodies[: 2 * cfg.http_clients], clients=cfg.http_clients)     # warm-up
            load = run_load(url, bodies, clients=cfg.http_clients)
            memory, alive = process_rss(proc.pid), proc.poll() is None
        finally:
            stop_server(proc)
        out[decoding] = {"clients": cfg.http_clients, "requests": load.n_requests,
                         "req_per_s": round(load.requests_per_s, 1), "p50_ms": round(load.percentile_ms(50), 2),
                         "p99_ms": round(load.percentile_ms(99), 2), "errors": load.n_errors,
                         "alive_after_load": alive, **memory}
        print(f"  HTTP {decoding:>5}: {out[decoding]['req_per_s']:8.1f} req/s with {cfg.http_clients} clients, "
              f"p50 {out[decoding]['p50_ms']} ms, server RSS {memory['rss_mb']:.0f} MB", flush=True)
    return out


def export_serving_rows(rows: list[dict]) -> list[dict]:
    """scale.json ``serving`` rows of the exported model (``source: "export"``), from each size's serve stage row:
    per decoding path and batch size, the in-process p50/p99, and the HTTP server's req/s and RSS."""
    out = []
    for r in rows:
        if r["stage"] != "serve" or "paths" not in r or "http" not in r:
            continue
        for p in r["paths"]:
            http = r["http"][p["decoding"]]
            out.append({"source": "export", "n_items": r["n_items"], "decoding": p["decoding"], "batch": p["batch"],
                        "p50_ms": p["p50_ms"], "p99_ms": p["p99_ms"], "rss_mb": http["rss_mb"],
                        "peak_rss_mb": http["peak_rss_mb"], "req_per_s": http["req_per_s"],
                        "http_clients": http["clients"], "http_p50_ms": http["p50_ms"], "http_p99_ms": http["p99_ms"],
                        "http_errors": http["errors"], "git_commit": r.get("git_commit")})
    return out


def current_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return -1.0


def memmapped_arrays(runtime) -> dict[str, bool]:
    """Whether each large array of a loaded runtime is a memory map (shared by every worker on the export)."""
    trie = runtime.trie
    arrays = {"item_codes": runtime.item_codes, "trie_order": trie.order}
    if trie._postings is not None:
        arrays["postings"] = trie._postings.items
    return {k: isinstance(v, np.memmap) or isinstance(getattr(v, "base", None), np.memmap) for k, v in arrays.items()}


def run_stage(stage: str, work: Path) -> tuple[float, float, dict]:
    """(wall seconds, peak RSS MB, extra fields) of ``stage`` in a fresh child process."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--stage-child", stage, str(work)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    with open(work / f"{stage}.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        tail = (work / f"{stage}.log").read_text()[-4000:]
        raise RuntimeError(f"stage {stage} failed (exit {proc.returncode}); its log ends:\n{tail}")
    extra = json.loads((work / f"{stage}.json").read_text())
    return seconds, usage.ru_maxrss / 1024, extra       # ru_maxrss is in KiB on Linux


def measure_stages(n_items: int, cfg: StageConfig) -> list[dict]:
    import shutil
    import tempfile

    work = Path(cfg.work) / str(n_items) if cfg.work else Path(tempfile.mkdtemp(prefix=f"scale{n_items}_"))
    if work.exists() and cfg.work:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    try:
        print(f"--- {n_items:,} items: pipeline stages in {work}", flush=True)
        t0 = time.perf_counter()
        info = write_source(n_items, cfg, work)
        (work / "spec.json").write_text(json.dumps({"config": asdict(cfg)}))
        rows = [{"n_items": n_items, "n_interactions": info["n_interactions"], "stage": "synthesize",
                 "seconds": round(time.perf_counter() - t0, 2), "peak_rss_mb": round(peak_rss_mb(), 1)}]
        for stage in STAGES:
            if stage == "serve":
                write_serve_histories(work, cfg)
            seconds, rss, extra = run_stage(stage, work)
            if stage == "serve":
                extra["http"] = http_load(work, cfg, [p["decoding"] for p in extra["paths"] if p["batch"] == 1])
            row = {"n_items": n_items, "n_interactions": info["n_interactions"], "stage": stage,
                   "seconds": round(seconds, 2), "peak_rss_mb": round(rss, 1), **extra}
            row["seconds"] = extra.get("seconds", row["seconds"])
            rows.append(row)
            note = (f" (extrapolated from {row['extrapolated_from_steps']} steps)"
                    if "extrapolated_from_steps" in row else "")
            print(f"  {stage:>9}: {row['seconds']:9.1f} s{note}, peak RSS {row['peak_rss_mb']:7.0f} MB", flush=True)
        return rows + item_grad_rows(n_items, info["n_interactions"], cfg, work)
    finally:
        if not cfg.work:
            shutil.rmtree(work, ignore_errors=True)


def item_grad_rows(n_items: int, n_interactions: int, cfg: StageConfig, work: Path) -> list[dict]:
    """Step time of both trainings with the item table updated densely (AdamW over every row) and sparsely
    (SparseAdam over the rows a batch read), on the run the stages just built (stage ``item_grad_steps``)."""
    rows = []
    for mode in ("dense", "sparse") if cfg.item_grad_steps else ():
        spec = asdict(cfg) | {"item_grad": mode, "train_steps": cfg.item_grad_steps,
                              "collab_steps": cfg.item_grad_steps}
        (work / "spec.json").write_text(json.dumps({"config": spec}))
        for stage in ("collab", "train"):
            seconds, rss, extra = run_stage(stage, work)
            rows.append({"n_items": n_items, "n_interactions": n_interactions, "stage": "item_grad_steps",
                         "training": stage, "item_grad": extra["item_grad"], "seconds": round(seconds, 2),
                         "peak_rss_mb": round(rss, 1), "seconds_per_step": extra["seconds_per_step"],
                         "steps_measured": extra["steps_measured"]})
            print(f"  {stage:>9} step, {mode} item table: {extra['seconds_per_step'] * 1000:8.0f} ms "
                  f"({extra['steps_measured']} steps), peak RSS {rss:7.0f} MB", flush=True)
    (work / "spec.json").write_text(json.dumps({"config": asdict(cfg)}))   # a kept --work folder: the stages' spec
    return rows


def serve_again(previous: dict, cfg: StageConfig) -> list[dict]:
    """The rows of ``previous`` with each size's serve row re-measured on the export kept in ``cfg.work``/SIZE
    (the row records the commit the export was built at as ``export_git_commit``)."""
    rows = list(previous.get("rows", []))
    for n_items in cfg.sizes:
        work = Path(cfg.work) / str(n_items)
        if not (work / "export").is_dir() or not (work / SERVE_HISTORIES).exists():
            raise SystemExit(f"{work}: no export/ and {SERVE_HISTORIES} to serve; run bench/scale.py --stages-only "
                             f"--sizes {n_items} --work {cfg.work} first")
        old = next((r for r in rows if r["stage"] == "serve" and r["n_items"] == n_items), None)
        if old is None:
            raise SystemExit(f"scale.json has no serve row for {n_items:,} items to replace; run --stages-only first")
        (work / "spec.json").write_text(json.dumps({"config": asdict(cfg)}))
        seconds, rss, extra = run_stage("serve", work)
        extra["http"] = http_load(work, cfg, [p["decoding"] for p in extra["paths"] if p["batch"] == 1])
        row = {"n_items": n_items, "n_interactions": old["n_interactions"], "stage": "serve",
               "seconds": round(seconds, 2),
               "peak_rss_mb": round(rss, 1), **extra, "git_commit": git_commit(),
               "export_git_commit": old.get("export_git_commit", old.get("git_commit"))}
        rows[rows.index(old)] = row
        print(f"  serve at {n_items:,} items: p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms", flush=True)
    return rows


def stage_child_main(stage: str, work: Path) -> None:
    out = stage_child(stage, work)
    (work / f"{stage}.json").write_text(json.dumps(out, default=str))


# ---------------------------------------------------------------------- report
SERVING_KEYS = ("n_items", "decoding", "batch", "p50_ms", "p99_ms", "rss_mb", "items_scored")
# the exported model's rows (source "export"): in-process latency per batch size, the HTTP server's req/s and RSS
EXPORT_SERVING_KEYS = ("n_items", "batch", "p50_ms", "p99_ms", "rss_mb", "req_per_s")


def validate(out: dict) -> None:
    """The scale.json schema: raises ValueError naming the first missing or malformed field. ``rows`` are
    per-stage measurements (``stage`` + ``n_items``; this script writes "decode_index", later ones may add
    prepare/tokenize/train/export), ``serving`` one row per size, decoding path and batch size."""
    for key in ("git_commit", "rows", "serving", "pruned_equals_full", "config", "wall_time_s"):
        if key not in out:
            raise ValueError(f"scale.json is missing '{key}'")
    for i, row in enumerate(out["rows"]):
        for key in ("stage", "n_items"):
            if key not in row:
                raise ValueError(f"rows[{i}] is missing '{key}'")
        if row["stage"] != "decode_index":
            for key in ("n_interactions", "seconds", "peak_rss_mb"):
                if not isinstance(row.get(key), (int, float)) or row[key] < 0:
                    raise ValueError(f"rows[{i}] ({row['stage']}).{key} must be a non-negative number, "
                                     f"got {row.get(key)!r}")
    for i, row in enumerate(out["serving"]):
        if row.get("source") == "export":
            for key in EXPORT_SERVING_KEYS:
                if not isinstance(row.get(key), (int, float)) or row[key] < 0:
                    raise ValueError(f"serving[{i}] (export).{key} must be a non-negative number, got {row.get(key)!r}")
            if row["decoding"] not in ("exact", "beam"):
                raise ValueError(f"serving[{i}] (export).decoding must be exact or beam, got {row['decoding']!r}")
            continue
        for key in SERVING_KEYS:
            if key not in row:
                raise ValueError(f"serving[{i}] is missing '{key}'")
        if row["decoding"] not in PATHS:
            raise ValueError(f"serving[{i}].decoding must be one of {PATHS}, got {row['decoding']!r}")
        for key in ("p50_ms", "p99_ms", "rss_mb", "items_scored"):
            if not isinstance(row[key], (int, float)) or row[key] < 0:
                raise ValueError(f"serving[{i}].{key} must be a non-negative number, got {row[key]!r}")


def decode_rows(out: dict) -> list[dict]:
    """``serving`` rows of the decode layer alone (synthetic heads; rows from before ``source`` existed included)."""
    return [r for r in out["serving"] if r.get("source", "decode") == "decode"]


def export_rows(out: dict) -> list[dict]:
    """``serving`` rows of the exported model (ONNX runtime in process, and the HTTP server)."""
    return [r for r in out["serving"] if r.get("source") == "export"]


def export_table(out: dict) -> list[str]:
    """The exported model's serving rows as a markdown section, with the p50 growth across sizes."""
    rows = export_rows(out)
    if not rows:
        return []
    lines = ["", "## Serving the exported model", "",
             "The serve stage's export (configs/sparse.yaml's parallel head) loaded by the server runtime: in-process "
             "p50/p99 per call over users' test histories (top-10, history excluded) at batch 1 and batched, for "
             "the export's exact scoring and for trie beam search on the same export (`serve.py --decoding beam`); "
             "then a `serve.py` process per path under loopback HTTP load (k = 10). "
             "RSS is that server's, after the load.", "",
             "| items | decoding | batch | p50 ms | p99 ms | HTTP req/s | HTTP p50 / p99 ms | server RSS MB (peak) |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['n_items']:,} | {r['decoding']} | {r['batch']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                     f"{r['req_per_s']:,.0f} ({r['http_clients']} clients) | {r['http_p50_ms']:.1f} / "
                     f"{r['http_p99_ms']:.1f} | {r['rss_mb']:,.0f} ({r['peak_rss_mb']:,.0f}) |")
    sizes = sorted({r["n_items"] for r in rows})
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        lines += ["", f"In-process p50 from {lo:,} to {hi:,} items:", ""]
        for (path, batch) in sorted({(r["decoding"], r["batch"]) for r in rows}):
            a = [r for r in rows if (r["n_items"], r["decoding"], r["batch"]) == (lo, path, batch)]
            b = [r for r in rows if (r["n_items"], r["decoding"], r["batch"]) == (hi, path, batch)]
            if a and b:
                lines.append(f"- {path}, batch {batch}: {a[0]['p50_ms']:.2f} -> {b[0]['p50_ms']:.2f} ms "
                             f"({b[0]['p50_ms'] / a[0]['p50_ms']:.1f}x)")
    return lines


def markdown(out: dict) -> str:
    lines = ["# Scaling (bench/scale.py)", "",
             f"commit {str(out['git_commit'])[:10]}; {out['machine'].get('cpu_count', '?')} cores shared; "
             f"bench wall time "
             f"{out['wall_time_s']:.0f} s; load average before/after {out['load_avg_before']} / "
             f"{out['load_avg_after']}.",
             *stage_table(out),
             *export_table(out),
             "", "## Serving: in-process decode latency", "",
             f"(decode rows measured at commit {str(out.get('decode_git_commit') or out['git_commit'])[:10]}) "
             "Synthetic clustered catalogues; PQ codes (parallel head, exact) and RQ codes (beam 20); k = 10; "
             "history excluded.", "",
             "| items | decoding | batch | p50 ms | p99 ms | items scored / request | peak RSS MB | index MB |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in decode_rows(out):
        scored = f"{r['items_scored']:,.0f}"
        if r["decoding"] == "pruned":
            scored += f" (median {r['items_scored_p50']:,.0f}; {r['fallback_full_share']:.0%} scored every item)"
        lines.append(f"| {r['n_items']:,} | {PATH_LABELS[r['decoding']]} | {r['batch']} | {r['p50_ms']:.2f} | "
                     f"{r['p99_ms']:.2f} | {scored} | {r['rss_mb']:.0f} | {r['index_mb']} |")
    sizes = sorted({r["n_items"] for r in decode_rows(out)})
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        lines += ["", f"p50 growth from {lo:,} to {hi:,} items ({hi // lo}x the catalogue):", ""]
        for batch in sorted({r["batch"] for r in decode_rows(out)}):
            for path in PATHS:
                a = [r for r in decode_rows(out)
                     if r["n_items"] == lo and r["decoding"] == path and r["batch"] == batch]
                b = [r for r in decode_rows(out)
                     if r["n_items"] == hi and r["decoding"] == path and r["batch"] == batch]
                if a and b:
                    lines.append(f"- batch {batch}, {PATH_LABELS[path]}: "
                                 f"{a[0]['p50_ms']:.2f} -> {b[0]['p50_ms']:.2f} ms "
                                 f"({b[0]['p50_ms'] / a[0]['p50_ms']:.1f}x)")
    lines += ["", "## Building the decode index", "",
              "| items | codes | structure | seconds | peak RSS MB | index MB |", "|---:|---|---|---:|---:|---:|"]
    for r in out["rows"]:
        if r["stage"] == "decode_index":
            lines.append(f"| {r['n_items']:,} | {r['codes']} {r['level_sizes'][0]}x{len(r['level_sizes']) - 1}+dedup | "
                         f"{r['what']} | {r['seconds']:.2f} | {r['peak_rss_mb']:.0f} | {r['index_mb']} |")
    eq = out["pruned_equals_full"]
    lines += ["", "pruned == full on every compared request: "
              + ", ".join(f"{int(n):,} items {'yes' if all(v['equal'] for v in e.values()) else 'NO'} "
                          f"({sum(v['compared_calls'] for v in e.values())} calls)" for n, e in eq.items())]
    if out.get("methods"):
        lines += ["", "## Exact pruned methods compared (batch 1)", "",
                  "| items | codes | head (top-1 p, perplexity) | method | p50 ms | p99 ms | full p50 ms "
                  "| items scored "
                  "| entries read | fell back | = full |",
                  "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
        for r in out["methods"]:
            lines.append(f"| {r['n_items']:,} | {r['codes']} | {r['head']} ({r['top1_prob']}, {r['perplexity']}) | "
                         f"{r['method']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['full_p50_ms']:.2f} | "
                         f"{r['items_scored']:,.0f} | {r['entries_read']:,.0f} | {r['fallback_full_share']:.0%} | "
                         f"{'yes' if r['equals_full'] else 'NO'} |")
        lines += ["", "entries read: posting-list entries (postings) or trie nodes (trie); items scored include "
                  "the seed's; a request that falls back scores every item."]
    return "\n".join(lines) + "\n"


def measured_at(rows: list[dict], default: str) -> str:
    """The commit(s) stage rows were measured at, e.g.
    "44c1fbbea5 (10,000, 100,000 items), dbf02969d4 (1,000,000 items)"."""
    sizes: dict[str, list[int]] = {}
    for r in rows:
        at = sizes.setdefault(str(r.get("git_commit") or default)[:10], [])
        if r["n_items"] not in at:
            at.append(r["n_items"])
    if len(sizes) == 1:
        return next(iter(sizes))
    return ", ".join(f"{c} ({', '.join(f'{n:,}' for n in ns)} items)" for c, ns in sizes.items())


def stage_table(out: dict) -> list[str]:
    """The pipeline-stage rows as a markdown section (none when the results hold no stage rows)."""
    rows = [r for r in out["rows"] if r["stage"] != "decode_index"]
    if not rows:
        return []
    lines = ["", "## Pipeline stages", "",
             f"(measured at commit {measured_at(rows, out.get('stages_git_commit') or out['git_commit'])}) "
             f"A seeded synthetic "
             "RecBole catalogue (~10 interactions per item, users of 20 events), clustered item vectors imported as "
             "the text modality (no encoder runs), configs/sparse.yaml's layout (PQ separate + parallel head; "
             f"training overrides {' '.join(out.get('stage_config', {}).get('train_overrides', [])) or 'none'}). Each "
             "stage runs in a fresh process: peak RSS is its ru_maxrss (python + torch imports included).", "",
             "| items | interactions | stage | seconds | peak RSS MB | notes |", "|---:|---:|---|---:|---:|---|"]
    for r in rows:
        notes = []
        if "extrapolated_from_steps" in r:
            notes.append(f"extrapolated from {r['extrapolated_from_steps']} of {r['steps_per_epoch']:,} steps "
                         f"({1000 * r['seconds_per_step']:.0f} ms/step)")
        elif "steps_per_epoch" in r:
            notes.append(f"{r['steps_per_epoch']:,} steps ({1000 * r['seconds_per_step']:.0f} ms/step)")
        if "loss" in r:
            notes.append(f"loss {r['loss']}, {r['n_negatives']} negatives")
        if r["stage"] == "item_grad_steps":
            notes.append(f"{r['training']}: {r['steps_measured']} steps, {1000 * r['seconds_per_step']:.0f} ms/step")
        if "item_grad" in r:
            notes.append(f"{r['item_grad']} item-table update")
        if "prepared_items" in r:
            notes.append(f"{r['prepared_items']:,} items after 5-core")
        if "export_mb" in r:
            notes.append(f"export {r['export_mb']:,} MB on disk")
        if "rss_after_load_mb" in r:
            notes.append(f"RSS after load {r['rss_after_load_mb']:,.0f} MB, "
                         f"after requests {r['rss_after_requests_mb']:,.0f} MB "
                         f"(own {r.get('rss_anon_mb', float('nan')):,.0f}, memory-mapped files "
                         f"{r.get('rss_file_mb', float('nan')):,.0f}); p50 {r['p50_ms']} ms"
                         + (f", p99 {r['p99_ms']} ms over {r['requests']} users' histories" if "p99_ms" in r else "")
                         + (f", {100 * r['dense_pass_share']:.0f}% took the dense pass"
                            if "dense_pass_share" in r else "")
                         + (f"; with decoder_step.onnx once per level instead of the encoder's level log-probs, "
                            f"interleaved: p50 {r['per_level_steps']['p50_ms']} ms, "
                            f"p99 {r['per_level_steps']['p99_ms']} ms"
                            if "per_level_steps" in r else "")
                         + (f"; served at {str(r['git_commit'])[:7]} "
                            f"from the export built at {str(r['export_git_commit'])[:7]}"
                            if r.get("export_git_commit") not in (None, r.get("git_commit")) else "")
                         + f" ({r['decoding']})")
        lines.append(f"| {r['n_items']:,} | {r['n_interactions']:,} | {STAGE_LABELS.get(r['stage'], r['stage'])} | "
                     f"{r['seconds']:,.1f} | {r['peak_rss_mb']:,.0f} | {'; '.join(notes)} |")
    return lines


def plot(out: dict, path: Path) -> None:
    from genrec.plots import plt, save_png   # headless (Agg) pyplot

    stage_rows = [r for r in out["rows"] if r["stage"] in STAGES]
    if stage_rows:
        fig, (ax, ax_stages) = plt.subplots(1, 2, figsize=(14, 4.8))
        for stage in STAGES:
            rows = sorted((r for r in stage_rows if r["stage"] == stage), key=lambda r: r["n_items"])
            if rows:
                ax_stages.plot([r["n_items"] for r in rows], [r["seconds"] for r in rows], marker="o", label=stage)
        ax_stages.set_xscale("log")
        ax_stages.set_yscale("log")
        ax_stages.set_xlabel("catalogue size (items; ~10 interactions each)")
        ax_stages.set_ylabel("wall time (s)")
        ax_stages.set_title("pipeline stage time vs catalogue size")
        ax_stages.grid(alpha=0.3, which="both")
        ax_stages.legend(fontsize=7)
    else:
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colours = {"full": "tab:red", "pruned": "tab:green", "beam": "tab:blue"}
    for batch, style in ((1, "-"), (out["config"].get("batch", ScaleConfig.batch), "--")):
        for p in PATHS:
            rows = sorted((r for r in decode_rows(out) if r["decoding"] == p and r["batch"] == batch),
                          key=lambda r: r["n_items"])
            if rows:
                x = [r["n_items"] for r in rows]
                ax.plot(x, [r["p50_ms"] for r in rows], style, marker="o", color=colours[p],
                        label=f"{PATH_LABELS[p]}, batch {batch}")
                ax.scatter(x, [r["p99_ms"] for r in rows], marker="_", s=80, color=colours[p])
    for p, colour in (("exact", "tab:purple"), ("beam", "tab:cyan")):     # the exported model, batch 1
        rows = sorted((r for r in export_rows(out) if r["decoding"] == p and r["batch"] == 1),
                      key=lambda r: r["n_items"])
        if rows:
            x = [r["n_items"] for r in rows]
            ax.plot(x, [r["p50_ms"] for r in rows], ":", marker="s", color=colour,
                    label=f"exported model, {p}, batch 1 (ONNX + decode)")
            ax.scatter(x, [r["p99_ms"] for r in rows], marker="_", s=80, color=colour)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("catalogue size (items)")
    ax.set_ylabel("decode latency per call, p50 (ms); ticks: p99")
    ax.set_title("top-10 decode latency vs catalogue size (in process)")
    ax.grid(alpha=0.3, which="both")
    if out["serving"]:           # a --stages-only run without earlier decode rows has nothing to label
        ax.legend(fontsize=7)
    save_png(fig, path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="catalogue sizes (default 10000 100000 1000000)")
    parser.add_argument("--smoke", action="store_true", help="one tiny catalogue, short budgets (seconds)")
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    parser.add_argument("--compare-size", type=int, default=None,
                        help="catalogue size of the pruned-methods comparison (0 skips it; default 100000)")
    parser.add_argument("--budget-s", type=float, default=None, help="time budget per path and batch size (s)")
    parser.add_argument("--seed", type=int, default=None)
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--stages-only", action="store_true",
                      help="only the pipeline-stage rows (keeps the decode rows already in scale.json)")
    only.add_argument("--serving-only", action="store_true",
                      help="only the decode rows (keeps the stage rows already in scale.json)")
    only.add_argument("--serve-only", action="store_true",
                      help="only the serve stage, on the exports a previous --stages-only --work DIR run kept "
                           "(DIR/SIZE/export and serve_histories.json): a decoding change measured on the same "
                           "trained models without re-running the pipeline; every other row is kept")
    parser.add_argument("--train-steps", type=int, default=None,
                        help="training steps measured per training stage before extrapolating (default 300)")
    parser.add_argument("--item-grad-steps", type=int, default=None,
                        help="also time this many steps of each training with a dense and a sparse item table")
    parser.add_argument("--work", default=None,
                        help="keep the stage runs in this folder (default: a removed temp folder)")
    parser.add_argument("--stage-child", nargs=2, metavar=("STAGE", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage_child:
        stage_child_main(args.stage_child[0], Path(args.stage_child[1]))
        return {}
    values = dict(SMOKE) if args.smoke else {}
    for key in ("sizes", "out", "compare_size", "budget_s", "seed"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    cfg = ScaleConfig(**values)
    stage_values = dict(STAGE_SMOKE) if args.smoke else {}
    if args.sizes is not None:
        stage_values["sizes"] = args.sizes
    for key, name in (("seed", "seed"), ("work", "work"), ("train_steps", "train_steps"),
                      ("train_steps", "collab_steps"),
                      ("item_grad_steps", "item_grad_steps")):
        if getattr(args, key) is not None:
            stage_values[name] = getattr(args, key)
    stage_cfg = StageConfig(**stage_values)
    results = Path(cfg.out) if Path(cfg.out).is_absolute() else REPO / cfg.out
    # A partial run (--stages-only / --serving-only) keeps the other part of an existing scale.json.
    previous = json.loads((results / "scale.json").read_text()) if (results / "scale.json").exists() else {}

    load_before = [round(x, 2) for x in os.getloadavg()]
    start = time.perf_counter()
    out: dict = {"git_commit": git_commit(), "rows": [], "serving": [], "pruned_equals_full": {}, "settings": []}
    if args.serve_only:
        if not args.work:
            parser.error("--serve-only needs --work DIR, the folder a previous --stages-only --work DIR run kept")
        out = {**previous, "git_commit": out["git_commit"], "rows": serve_again(previous, stage_cfg)}
    elif args.stages_only:
        for key in ("serving", "pruned_equals_full", "settings", "methods", "config"):
            if key in previous:
                out[key] = previous[key]
        out["rows"] = [r for r in previous.get("rows", []) if r["stage"] == "decode_index"]
        out["decode_git_commit"] = previous.get("decode_git_commit", previous.get("git_commit"))
    else:
        for n_items in cfg.sizes:
            measured = measure_size(n_items, cfg)
            out["rows"] += measured["build"]
            out["serving"] += measured["serving"]
            out["pruned_equals_full"][str(n_items)] = measured["pruned_equals_full"]
            out["settings"].append(measured["setting"])
        out["methods"] = compare_methods(cfg.compare_size, cfg) if cfg.compare_size else []
        out["config"] = asdict(cfg)
        out["decode_git_commit"] = out["git_commit"]
    if args.serve_only:
        pass
    elif args.serving_only:
        out["rows"] += [r for r in previous.get("rows", []) if r["stage"] != "decode_index"]
        if "stage_config" in previous:
            out["stage_config"], out["stages_git_commit"] = previous["stage_config"], previous.get("stages_git_commit")
    else:
        stage_rows = []
        for n_items in stage_cfg.sizes:
            stage_rows += measure_stages(n_items, stage_cfg)
        # rows of sizes not re-measured now stay (a 1M run added to the 10k / 100k rows)
        measured = set(stage_cfg.sizes)
        for r in stage_rows:
            r["git_commit"] = out["git_commit"]
        kept = [r for r in previous.get("rows", []) if r["stage"] != "decode_index" and r["n_items"] not in measured]
        for r in kept:      # rows from before rows carried their commit: the previous run's
            r.setdefault("git_commit", previous.get("stages_git_commit") or previous.get("git_commit"))
        out["rows"] += sorted(kept + stage_rows, key=lambda r: r["n_items"])
        out["stage_config"], out["stages_git_commit"] = asdict(stage_cfg), out["git_commit"]
    out.update({"wall_time_s": round(time.perf_counter() - start, 1), "load_avg_before": load_before,
                "load_avg_after": [round(x, 2) for x in os.getloadavg()], "machine": machine_info(),
                "versions": package_versions()})
    out.setdefault("config", asdict(cfg))
    # the exported model's rows follow the serve stage rows they come from (kept or re-measured)
    out["serving"] = ([r for r in out["serving"] if r.get("source", "decode") == "decode"]
                      + export_serving_rows(out["rows"]))
    validate(out)
    write_outputs(results, "scale", out, markdown(out), lambda p: plot(out, p))
    print(f"wrote {results / 'scale.json'}, scale.md and scale.png in {out['wall_time_s']:.0f} s")
    return out


if __name__ == "__main__":
    main()
