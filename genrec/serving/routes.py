"""The HTTP endpoints: request -> prepare -> fair micro-batcher -> respond, plus health, metrics and docs,
and the item browser (GET /ui, a static page calling /recommend; /items*, /codes).

Endpoints read the server's parts from ``request.app.state.serving`` (:class:`Serving`), so this
module holds plain functions instead of one closure per app.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import functools
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import quote

import numpy as np
from fastapi import APIRouter, FastAPI, Query as Param, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.staticfiles import StaticFiles

from genrec.serving.batching import FairBatcher
from genrec.serving.config import ServeConfig
from genrec.serving.metrics import ServerMetrics
from genrec.serving.runtime import ExportRuntime, Query
from genrec.io import MANIFEST, ArtifactError
from genrec.serving.schemas import (COMMON_ERRORS, RECOMMEND_ERRORS, ApiError, BatchRequest, BatchResponse,
                                    CategoriesResponse, CodesResponse, ItemCard, ItemSearchResponse, ItemsResponse,
                                    RecommendedItem, RecommendRequest, RecommendResponse)

RECOMMEND_PATHS = ("/recommend", "/recommend/batch")
YIELD_EVERY = 32     # a batch request gives the event loop back every this many requests it prepares or encodes


@dataclass
class Serving:
    """What the endpoints need; one per app (per worker process)."""

    runtime: ExportRuntime
    config: ServeConfig
    batcher: FairBatcher
    metrics: ServerMetrics
    name: str                                        # model name reported by /health
    started: float = field(default_factory=time.time)
    ready: bool = False                              # the model answered its warm-up query
    catalogue: Catalogue = field(init=False)         # item metadata for /items*, /codes and /ui
    codes_body: bytes | None = field(default=None, init=False)   # GET /codes, computed on first use

    export: dict = field(init=False)                 # identity of the loaded export (/health, X-Genrec-Export)
    reloads: int = 0                                 # exports swapped in since start (SIGHUP or --watch)

    def __post_init__(self):
        self.catalogue = Catalogue.load(self.runtime)
        self.export = export_identity(self.runtime)

    def swap(self, runtime: ExportRuntime, catalogue: "Catalogue") -> None:
        """Serve ``runtime`` from now on. No await in here, so every request sees the old export or the new
        one whole; requests already holding the old runtime finish on it (the batcher decodes each with its own)."""
        self.runtime, self.catalogue, self.codes_body = runtime, catalogue, None
        self.batcher.runtime = runtime
        self.name = runtime.manifest.get("name") or runtime.folder.name
        self.export = export_identity(runtime)
        self.reloads += 1


EXPORT_HEADER = "X-Genrec-Export"     # the loaded export's manifest digest (12 hex), on /health and /readyz


def manifest_digest(manifest: dict) -> str:
    """sha256 of a manifest's content (key order independent): what the server compares to see a new export."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, default=str).encode()).hexdigest()


def export_identity(runtime: ExportRuntime) -> dict:
    m = runtime.manifest
    return {"name": m.get("name") or runtime.folder.name, "created": m.get("created"), "n_items": runtime.n_items,
            "manifest_sha256": manifest_digest(m),
            "loaded_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


@dataclass
class Catalogue:
    """The export's optional items_meta.json (category, popularity, thumbnail per item), ready to search.

    An export without it still serves /items* and /codes: categories and images are then null and items
    are listed in item order.
    """

    categories: list[str | None]
    popularity: np.ndarray | None                    # (n_items,) training interactions, or None
    images: list[str | None]                         # data: URIs of the thumbnails
    order: np.ndarray                                # item ids, most popular first (item order without popularity)
    lowered: list[str]                               # titles in lower case, for search
    by_category: dict[str, np.ndarray]               # category -> its item ids in ``order``

    @classmethod
    def load(cls, runtime: ExportRuntime) -> "Catalogue":
        n = runtime.n_items
        meta: dict[str, Any] = {}
        entry = runtime.manifest.get("items_meta")
        if entry:
            path = runtime.folder / entry["file"]
            try:
                meta = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                raise ArtifactError(f"{path}: cannot read it ({e}); it is listed in {runtime.folder / MANIFEST}. "
                                    "Re-run `genrec export`.") from e
            if not isinstance(meta, dict):
                raise ArtifactError(f"{path}: expected a JSON object with category, popularity and image lists, got "
                                    f"a {type(meta).__name__}; re-run `genrec export`.")
            entry_ok = {"category": lambda v: v is None or isinstance(v, str),
                        "image": lambda v: v is None or isinstance(v, str),
                        "popularity": lambda v: isinstance(v, int) and not isinstance(v, bool)}
            bad = [k for k, ok in entry_ok.items() if k in meta and (
                not isinstance(meta[k], list) or len(meta[k]) != n or not all(map(ok, meta[k])))]
            if bad:
                raise ArtifactError(f"{path}: fields {bad} must be lists with one entry per item ({n}): category and "
                                    "image strings or null, popularity integers; re-run `genrec export`.")
        popularity = np.asarray(meta["popularity"], np.int64) if "popularity" in meta else None
        order = np.arange(n) if popularity is None else np.lexsort((np.arange(n), -popularity))
        categories = meta.get("category") or [None] * n
        members: dict[str, list[int]] = {}
        for i in order.tolist():
            if categories[i] is not None:
                members.setdefault(categories[i], []).append(i)
        return cls(categories=categories, popularity=popularity, images=meta.get("image") or [None] * n,
                   order=order, lowered=[(t or "").lower() for t in runtime.titles],
                   by_category={c: np.array(ids, np.int64) for c, ids in members.items()})

    def search(self, q: str, category: str | None, runtime: ExportRuntime) -> list[int]:
        """Items whose title holds every word of ``q`` (and an exact source id match first), in ``order``."""
        pool = self.order if category is None else self.by_category.get(category, np.zeros(0, np.int64))
        words = q.lower().split()
        hits = [i for i in pool.tolist() if all(w in self.lowered[i] for w in words)]
        exact, _ = runtime.to_internal([q.strip()])
        if exact and (category is None or self.categories[exact[0]] == category):
            hits = exact + [i for i in hits if i != exact[0]]
        return hits

    def card(self, i: int, runtime: ExportRuntime) -> ItemCard:
        sid = runtime.source_ids[i]
        return ItemCard(item_id=sid, title=runtime.titles[i], category=self.categories[i],
                        semantic_id=runtime.item_codes[i].tolist(),
                        image=f"/items/{quote(sid, safe='')}/image" if self.images[i] else None,
                        popularity=None if self.popularity is None else int(self.popularity[i]))


def serving(request: Request) -> Serving:
    return request.app.state.serving


def _close_arrival(request: Request, batcher: FairBatcher) -> None:
    """The request is queued (or refused): the batcher no longer waits for it."""
    if request.scope.get("state", {}).pop("arrival_open", False):
        batcher.arriving -= 1


def _deadline(request: Request) -> float:
    return request.scope["state"]["deadline"]


def _json(model) -> Response:
    # Serialized once by pydantic; FastAPI would validate the returned model a second time.
    return Response(content=model.model_dump_json(), media_type="application/json")


# ---------------------------------------------------------------------- request preparation
@dataclass
class Prepared:
    query: Query
    unknown_history: list[str]
    unknown_candidates: list[str]
    history_used: int
    truncated: bool
    warnings: list[str] = field(default_factory=list)


def prepare(req: RecommendRequest, runtime: ExportRuntime, config: ServeConfig, where: str = "") -> Prepared:
    """Map ids, apply limits and truncation; raises a 422 ApiError with a fix-it message."""
    k_limit = min(runtime.n_items, config.max_k)
    if req.k > k_limit:
        why = (f"the catalogue has {runtime.n_items} items" if runtime.n_items <= config.max_k
               else f"this server caps k at {config.max_k} (--max-k)")
        raise ApiError(422, "invalid_request", f"{where}k={req.k} is too large: {why}; ask for k <= {k_limit}")
    for name, ids in (("history", req.history), ("candidates", req.candidates)):
        if ids is not None and len(ids) > config.max_history:
            raise ApiError(422, "invalid_request", f"{where}{name} has {len(ids)} ids; send at most "
                           f"{config.max_history} (only the last {runtime.max_items} history items are read anyway)")
    known, unknown = runtime.to_internal(req.history)
    if not known:
        raise ApiError(422, "invalid_request", f"{where}history: none of its {len(req.history)} ids are in this "
                       f"model's catalogue (first unknown: {unknown[0]!r}); send source item ids the model was "
                       "trained on")
    candidates, unknown_cands = None, []
    if req.candidates is not None:
        candidates, unknown_cands = runtime.to_internal(req.candidates)
        if not candidates:
            raise ApiError(422, "invalid_request", f"{where}candidates: none of its {len(req.candidates)} ids are "
                           f"in this model's catalogue (first unknown: {unknown_cands[0]!r}); send known source "
                           "item ids or omit candidates")
    used = min(len(known), runtime.max_items)
    truncated = len(known) > runtime.max_items
    warnings = []
    if unknown:
        warnings.append(f"{len(unknown)} history ids are not in the catalogue and were skipped")
    if truncated:
        warnings.append(f"history has {len(known)} known items; only the most recent {runtime.max_items} "
                        "(max_items) were read" + (f"; all {len(known)} are still excluded from the results"
                                                   if req.exclude_history else ""))
    if unknown_cands:
        warnings.append(f"{len(unknown_cands)} candidate ids are not in the catalogue and were skipped")
    query = Query(history=known, k=req.k, exclude_history=req.exclude_history, candidates=candidates)
    return Prepared(query, unknown, unknown_cands, used, truncated, warnings)


def respond(prepared: Prepared, items: Sequence[int], scores: Sequence[float],
            runtime: ExportRuntime) -> RecommendResponse:
    out = [RecommendedItem(item_id=runtime.source_ids[i], title=runtime.titles[i],
                           score=float(s) if math.isfinite(s) else None)
           for i, s in zip(items, scores) if i >= 0]
    warnings = list(prepared.warnings)
    if len(out) < prepared.query.k:
        warnings.append(f"only {len(out)} of k={prepared.query.k} items could be returned: the rest of the "
                        "catalogue is excluded by the history or not among the candidates")
    return RecommendResponse(items=out, unknown_history_items=prepared.unknown_history,
                             unknown_candidate_items=prepared.unknown_candidates, history_used=prepared.history_used,
                             history_truncated=prepared.truncated, warnings=warnings)


# ---------------------------------------------------------------------- recommend
router = APIRouter()


@router.post("/recommend", response_model=RecommendResponse, responses=RECOMMEND_ERRORS)
async def recommend(req: RecommendRequest, request: Request) -> Response:
    """Top-k catalogue items for one history: exact scoring of every item (parallel head) or
    trie-constrained beam search (autoregressive head, its items optionally re-scored: decoding "rerank");
    either way only real items come out."""
    s = serving(request)
    runtime = s.runtime      # one export for the whole request, even if the server reloads meanwhile
    try:
        prepared = prepare(req, runtime, s.config)
    finally:
        _close_arrival(request, s.batcher)
    (result,) = await s.batcher.submit([prepared.query], _deadline(request), runtime)
    request.state.log = {"k": req.k, "n_history": len(req.history), "n_unknown": len(prepared.unknown_history),
                         "truncated": prepared.truncated, "batch": result.batch, "passes": result.passes}
    return _json(respond(prepared, result.items, result.scores, runtime))


@router.post("/recommend/batch", response_model=BatchResponse, responses=RECOMMEND_ERRORS)
async def recommend_batch(req: BatchRequest, request: Request) -> Response:
    """Several independent requests in one call; each result is the same as from POST /recommend.
    Its queries are decoded in turn with other clients' requests, so a large batch does not hold
    up small requests."""
    s = serving(request)
    runtime = s.runtime      # one export for the whole request, even if the server reloads meanwhile
    try:
        if len(req.requests) > s.config.max_batch_requests:
            raise ApiError(422, "invalid_request", f"requests has {len(req.requests)} entries; send at most "
                           f"{s.config.max_batch_requests} per call (--max-batch-requests)")
        if s.batcher.queued + len(req.requests) > s.batcher.max_queued:
            raise s.batcher.overloaded(len(req.requests))     # before the id mapping work
        prepared = []
        for i, r in enumerate(req.requests):
            prepared.append(prepare(r, runtime, s.config, where=f"requests[{i}]."))
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)    # let small requests through the event loop
    finally:
        _close_arrival(request, s.batcher)
    results = await s.batcher.submit([p.query for p in prepared], _deadline(request), runtime)
    request.state.log = {"n_requests": len(prepared), "batch": max(r.batch for r in results),
                         "passes": max(r.passes for r in results)}
    out = []
    for i, (p, r) in enumerate(zip(prepared, results)):
        out.append(respond(p, r.items, r.scores, runtime))
        if i % YIELD_EVERY == YIELD_EVERY - 1:
            await asyncio.sleep(0)
    return _json(BatchResponse(results=out))


# ---------------------------------------------------------------------- health
@router.get("/health", responses=COMMON_ERRORS)
@router.head("/health", include_in_schema=False)
async def health(request: Request) -> JSONResponse:
    """Liveness with figures: 200 while the model is loaded and the batching worker runs, else 503."""
    s = serving(request)
    ok = s.batcher.alive
    return JSONResponse(status_code=200 if ok else 503, content={
        "status": "ok" if ok else "worker stopped", "model": s.name, "n_items": s.runtime.n_items,
        "ready": s.ready, "pid": os.getpid(), "uptime_s": round(time.time() - s.started, 3),
        "queries_served": s.batcher.queries, "batches": s.batcher.batches, "queued_queries": s.batcher.queued,
        "export": s.export, "reloads": s.reloads},
        headers={EXPORT_HEADER: s.export["manifest_sha256"][:12]})


@router.get("/livez", responses=COMMON_ERRORS)
@router.head("/livez", include_in_schema=False)
async def livez(request: Request) -> JSONResponse:
    """Liveness probe: 200 while the event loop answers and the batching worker runs; 503 means restart me."""
    ok = serving(request).batcher.alive
    return JSONResponse(status_code=200 if ok else 503, content={"status": "alive" if ok else "worker stopped"})


@router.get("/readyz", responses=COMMON_ERRORS)
@router.head("/readyz", include_in_schema=False)
async def readyz(request: Request) -> JSONResponse:
    """Readiness probe: 200 when new requests would be served now; 503 (with the reason) before the
    warm-up query has run, when the worker stopped, or while the queue is full (requests are shed)."""
    s = serving(request)
    reason = ("warming up" if not s.ready else "worker stopped" if not s.batcher.alive
              else "queue full" if s.batcher.full else None)
    if reason is None:
        return JSONResponse({"status": "ready"}, headers={EXPORT_HEADER: s.export["manifest_sha256"][:12]})
    headers = {"Retry-After": str(s.batcher.retry_after_s())} if reason == "queue full" else None
    return JSONResponse(status_code=503, content={"status": reason}, headers=headers)


@router.get("/metadata")
async def metadata(request: Request) -> dict:
    """The model, catalogue size, semantic-ID shape, versions and the server's limits."""
    s = serving(request)
    c = s.config
    return s.runtime.metadata() | {"server": {
        "max_batch": c.max_batch, "batch_wait_ms": c.batch_wait_ms, "max_k": min(c.max_k, s.runtime.n_items),
        "max_history": c.max_history, "max_batch_requests": c.max_batch_requests,
        "max_queued_queries": c.max_queued_queries, "request_timeout_s": c.request_timeout_s,
        "max_body_bytes": c.max_body_bytes, "intra_op_threads": c.intra_op_threads,
        "inter_op_threads": c.inter_op_threads, "workers": c.workers}}


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
async def metrics(request: Request) -> Response:
    """Prometheus metrics of this process: requests by route and status, latency, pass sizes, queue
    depth, shed requests, dropped queries, open connections."""
    body, content_type = serving(request).metrics.exposition()
    return Response(content=body, media_type=content_type)


# ---------------------------------------------------------------------- item browser (GET /ui) and what it reads
UI_DIR = Path(__file__).resolve().parent / "ui"
UI_STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
# The page loads nothing from elsewhere; the browser enforces it.
UI_HEADERS = {"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                                         "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
                                         "form-action 'none'",
              "Cache-Control": "no-cache"}
SEARCH_LIMIT = 20      # matches returned by /items/search unless `limit` says otherwise
MAX_QUERY_CHARS = 200  # longest search text


@functools.lru_cache(maxsize=None)
def _ui_file(name: str) -> bytes:
    return (UI_DIR / name).read_bytes()


def _int_param(name: str, text: str | None, default: int, low: int, high: int) -> int:
    """A query parameter as an int in [low, high]; a 422 naming it otherwise.

    Query parameters are read as text here: FastAPI's own validation error would be answered as a
    body problem by the app's handler.
    """
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ApiError(422, "invalid_request", f"{name}={text!r}: send an integer in [{low}, {high}]")
    return value


@router.get("/ui", include_in_schema=False)
async def ui() -> Response:
    """The item browser: search, build a history, see /recommend's answer (genrec/serving/ui)."""
    return Response(_ui_file("index.html"), media_type="text/html; charset=utf-8", headers=UI_HEADERS)


@router.get("/ui/static/{name}", include_in_schema=False)
async def ui_static(name: str) -> Response:
    if name not in UI_STATIC:
        raise ApiError(404, "not_found", f"no file {name!r} under /ui/static (files: {', '.join(UI_STATIC)})")
    return Response(_ui_file(name), media_type=UI_STATIC[name], headers=UI_HEADERS)


@router.get("/items/search", response_model=ItemSearchResponse, responses=COMMON_ERRORS)
async def items_search(request: Request, q: str = Param("", description="words that must all occur in the title "
                                                                        "(case-insensitive), or an exact item id"),
                       category: str | None = Param(None, description="only items of this category"),
                       limit: str | None = Param(None, description=f"most matches returned (default {SEARCH_LIMIT}, "
                                                                   "at most the server's max_history)")) -> Response:
    """Search the catalogue by title; most popular first."""
    s = serving(request)
    if len(q) > MAX_QUERY_CHARS:
        raise ApiError(422, "invalid_request", f"q has {len(q)} characters; send at most {MAX_QUERY_CHARS}")
    if category is not None and category not in s.catalogue.by_category:
        raise ApiError(422, "invalid_request", f"category {category!r} is not in this export; GET /items/categories "
                       "lists them")
    n = _int_param("limit", limit, SEARCH_LIMIT, 1, s.config.max_history)
    hits = s.catalogue.search(q, category, s.runtime)
    return _json(ItemSearchResponse(items=[s.catalogue.card(i, s.runtime) for i in hits[:n]], total=len(hits)))


@router.get("/items/categories", response_model=CategoriesResponse, responses=COMMON_ERRORS)
async def items_categories(request: Request) -> Response:
    """Every category of the export with its number of items (empty when the export has none)."""
    c = serving(request).catalogue
    counts = sorted(((name, len(ids)) for name, ids in c.by_category.items()), key=lambda t: (-t[1], t[0]))
    return _json(CategoriesResponse(categories=[{"category": name, "n_items": k} for name, k in counts],
                                    n_items_without_category=sum(cat is None for cat in c.categories)))


@router.get("/items", response_model=ItemsResponse, responses=COMMON_ERRORS)
async def items(request: Request, ids: list[str] = Param([], alias="id",
                                                        description="item ids (repeat the parameter: ?id=A&id=B)")
                ) -> Response:
    """Title, category, semantic ID and thumbnail path of the given items."""
    s = serving(request)
    if len(ids) > s.config.max_history:
        raise ApiError(422, "invalid_request", f"{len(ids)} ids; send at most {s.config.max_history} (--max-history)")
    known, unknown = s.runtime.to_internal(ids)
    return _json(ItemsResponse(items=[s.catalogue.card(i, s.runtime) for i in known], unknown_items=unknown))


@router.get("/items/{item_id}/image", responses=COMMON_ERRORS | {
    200: {"content": {"image/png": {}, "image/jpeg": {}}, "description": "the item's thumbnail"},
    404: {"description": "unknown item, or no image for it in this export"}})
async def item_image(item_id: str, request: Request) -> Response:
    """The item's thumbnail, as stored by `genrec export` (ExportConfig.thumbnail_size)."""
    s = serving(request)
    known, _ = s.runtime.to_internal([item_id])
    if not known:
        raise ApiError(404, "not_found", f"item {item_id!r} is not in this model's catalogue")
    uri = s.catalogue.images[known[0]]
    if not uri:
        raise ApiError(404, "not_found", f"item {item_id!r} has no image in this export")
    head, _, data = uri.partition(",")
    try:
        content = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(404, "not_found", f"the stored image of item {item_id!r} is not valid base64; "
                       "re-run `genrec export`") from None
    media = head.removeprefix("data:").split(";")[0] or "application/octet-stream"
    return Response(content, media_type=media, headers={"Cache-Control": "public, max-age=3600"})


@router.get("/codes", response_model=CodesResponse, responses=COMMON_ERRORS)
async def codes(request: Request) -> Response:
    """Per digit of the semantic IDs: each used code's size, most popular items and most frequent categories,
    and category purity against random codes of the same sizes (what `genrec explain` shows for a run)."""
    s = serving(request)
    body = s.codes_body
    if body is None:
        runtime, catalogue = s.runtime, s.catalogue    # one export throughout, even if a reload swaps it meanwhile
        body = await asyncio.to_thread(_codes_body, runtime, catalogue)   # the event loop keeps serving meanwhile
        if s.runtime is runtime:
            s.codes_body = body                        # computed once per export
    return Response(content=body, media_type="application/json")


def _codes_body(runtime: ExportRuntime, c: Catalogue) -> bytes:
    from genrec.explain import ExplainConfig, code_table, codes_json

    defaults = ExplainConfig()
    table = code_table(runtime.item_codes, runtime.level_sizes, categories=c.categories, popularity=c.popularity,
                       top_items=defaults.top_items, top_categories=defaults.top_categories,
                       n_random=defaults.n_random, seed=defaults.seed)
    return CodesResponse(**codes_json(table, runtime.source_ids, runtime.titles)).model_dump_json().encode()


# ---------------------------------------------------------------------- docs (offline)
SWAGGER_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - API docs</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{url: "/docs/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
  validatorUrl: null, presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout"}});
</script>
</body>
</html>
"""


def swagger_assets() -> Path:
    """The Swagger UI files shipped by the swagger-ui-bundle package (no CDN, works offline)."""
    import swagger_ui_bundle

    return Path(swagger_ui_bundle.swagger_ui_path)


def openapi_30(spec: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's OpenAPI 3.1 document in the 3.0 dialect that the packaged Swagger UI (4.x) renders.

    Only what pydantic emits needs rewriting: ``anyOf: [X, {type: null}]`` -> X + ``nullable``,
    and a schema's ``examples`` list -> its first ``example``.
    """
    def convert(node):
        if isinstance(node, list):
            return [convert(v) for v in node]
        if not isinstance(node, dict):
            return node
        node = {k: convert(v) for k, v in node.items()}
        options = node.get("anyOf")
        if isinstance(options, list) and {"type": "null"} in options:
            rest = [o for o in options if o != {"type": "null"}]
            del node["anyOf"]
            if len(rest) == 1 and "$ref" not in rest[0]:
                node.update(rest[0])
            else:
                node["anyOf"] = rest
            node["nullable"] = True
        if isinstance(node.get("examples"), list) and node["examples"] and ("type" in node or "properties" in node):
            node["example"] = node.pop("examples")[0]
        return node

    out = convert(copy.deepcopy(spec))
    out["openapi"] = "3.0.3"
    return out


def add_docs(app: FastAPI) -> None:
    """/docs (Swagger UI from local files), /docs/openapi.json (the 3.0 copy it reads), /docs/assets/*."""
    page = SWAGGER_PAGE.format(title=app.title)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/docs/openapi.json", include_in_schema=False)
    async def docs_openapi() -> JSONResponse:
        return JSONResponse(openapi_30(app.openapi()))

    app.mount("/docs/assets", StaticFiles(directory=swagger_assets()), name="docs-assets")
