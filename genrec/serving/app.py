"""HTTP server over an export folder: FastAPI + uvicorn + onnxruntime, no torch.

    python serve.py --export export/demo [--host 127.0.0.1 --port 8000]

Endpoints: POST /recommend, POST /recommend/batch, GET /health, GET /metadata, OpenAPI at
/docs (and /openapi.json). Request ids are the catalogue's source ids (e.g. ASINs).

Request path: ASGI middleware (body size limit, one JSON log line per request) -> pydantic
validation -> prepare (map ids, truncate, check k) -> micro-batcher queue -> one worker thread
runs batched onnxruntime + beam search -> response. Every input error is a 4xx whose message
says what to fix; nothing a client sends can make the server fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt
from starlette.exceptions import HTTPException as StarletteHTTPException

from genrec.io import ArtifactError
from genrec.serving.runtime import ExportRuntime, Query, RuntimeConfig, recommend_queries

LOGGER = "genrec.serving"
log = logging.getLogger(LOGGER)


# ---------------------------------------------------------------------- config
@dataclass
class ServeConfig:
    export: Path = Path("export/demo")   # export folder written by `genrec export`
    host: str = "127.0.0.1"              # interface to bind (loopback by default; 0.0.0.0 exposes it)
    port: int = 8000                     # TCP port (0 = any free port)
    intra_op_threads: int = 1            # onnxruntime threads inside one operator
    inter_op_threads: int = 1            # onnxruntime threads across independent operators
    max_batch: int = 32                  # most requests decoded together in one micro-batch
    batch_wait_ms: float = 2.0           # longest a micro-batch waits for requests that are already arriving
    max_k: int = 100                     # largest k a request may ask for (also capped by the catalogue size)
    max_history: int = 1000              # most ids accepted in one history or candidate list (longer: 422)
    max_batch_requests: int = 256        # most requests in one POST /recommend/batch
    max_body_bytes: int = 1 << 20        # larger request bodies are refused with 413
    log_level: str = "info"              # info logs one JSON line per request; warning keeps only problems

    def __post_init__(self):
        self.export = Path(self.export)
        for name in ("intra_op_threads", "inter_op_threads", "max_batch", "max_k", "max_history",
                     "max_batch_requests", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if self.batch_wait_ms < 0:
            raise ValueError(f"batch_wait_ms must be >= 0, got {self.batch_wait_ms}")
        if self.log_level.lower() not in ("debug", "info", "warning", "error", "critical"):
            raise ValueError(f"log_level must be debug, info, warning, error or critical, got {self.log_level!r}")


_FLAG_HELP = {
    "export": "export folder written by `genrec export` (required)",
    "host": "interface to bind; the default 127.0.0.1 is loopback only",
    "port": "TCP port",
    "intra_op_threads": "onnxruntime threads inside one operator",
    "inter_op_threads": "onnxruntime threads across independent operators",
    "max_batch": "most requests decoded together in one micro-batch",
    "batch_wait_ms": "longest a micro-batch waits for requests that are already arriving (ms)",
    "max_k": "largest k a request may ask for (also capped by the catalogue size)",
    "max_history": "most ids accepted in one history or candidate list",
    "max_batch_requests": "most requests in one POST /recommend/batch",
    "max_body_bytes": "larger request bodies are refused with 413",
    "log_level": "debug | info (one JSON line per request) | warning | error",
}


def add_serve_args(parser: argparse.ArgumentParser) -> None:
    """Add the server's flags (one per ServeConfig field) to ``parser``."""
    defaults = ServeConfig()
    for name, help_text in _FLAG_HELP.items():
        default = getattr(defaults, name)
        kind = type(default) if not isinstance(default, Path) else Path
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, required=name == "export",
                            default=None if name == "export" else default,
                            help=f"{help_text}" + ("" if name == "export" else f" (default: {default})"))


def serve_from_args(args: argparse.Namespace) -> None:
    """Load the export folder named by ``args`` and serve it with uvicorn until stopped."""
    import uvicorn

    try:
        config = ServeConfig(**{name: getattr(args, name) for name in _FLAG_HELP})
        configure_logging(config.log_level)
        runtime = ExportRuntime(config.export, RuntimeConfig(config.intra_op_threads, config.inter_op_threads))
    except (ValueError, ArtifactError) as e:   # bad flags or a bad folder: a message, not a traceback
        raise SystemExit(f"serve: error: {e}") from e
    uvicorn.run(create_app(runtime, config), host=config.host, port=config.port,
                log_level=config.log_level.lower(), access_log=False)


# ---------------------------------------------------------------------- logging
class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, message, plus the record's ``fields`` dict."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
               "level": record.levelname.lower(), "event": record.getMessage()}
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    log.handlers[:] = [handler]
    log.setLevel(level.upper())
    log.propagate = False


# ---------------------------------------------------------------------- schema
# Ids are the catalogue's source ids; numbers are accepted and read as their decimal string.
ItemId = str


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True,
                              json_schema_extra={"examples": [{"history": ["B0001", "B0002"], "k": 10}]})

    history: list[ItemId] = Field(..., min_length=1,
                                  description="the user's past items, oldest first (source ids); the last "
                                              "max_items known ids are read, unknown ids are reported and skipped")
    k: StrictInt = Field(10, ge=1, description="number of items to return (1 .. min(catalogue size, server max_k))")
    exclude_history: StrictBool = Field(True, description="never recommend an item that is in the history")
    candidates: list[ItemId] | None = Field(None, min_length=1,
                                            description="optional: recommend only among these items (source ids)")


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: list[RecommendRequest] = Field(..., min_length=1, description="independent recommendation requests")


class RecommendedItem(BaseModel):
    item_id: str = Field(description="the item's source id")
    title: str | None = Field(description="item title from the catalogue (null when unknown)")
    score: float | None = Field(description="log-probability of the item's semantic ID given the history "
                                            "(higher is better; null if it underflows)")


class RecommendResponse(BaseModel):
    items: list[RecommendedItem] = Field(description="best first; fewer than k when fewer items are allowed")
    unknown_history_items: list[str] = Field(description="history ids not in the catalogue (skipped)")
    unknown_candidate_items: list[str] = Field(default_factory=list, description="candidate ids not in the catalogue (skipped)")
    history_used: int = Field(description="number of history items the model read (at most max_items)")
    history_truncated: bool = Field(description="true when the known history was longer than max_items and "
                                                "only its most recent max_items items were read")
    warnings: list[str] = Field(default_factory=list, description="what was adjusted in the request, in words")


class BatchResponse(BaseModel):
    results: list[RecommendResponse]


class ErrorResponse(BaseModel):
    error: str = Field(description="what is wrong and how to fix it")
    details: list[dict[str, Any]] = Field(default_factory=list, description="one entry per invalid field")


class RequestError(Exception):
    """A request the server understood but cannot answer; becomes a 4xx with this message."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


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
    """Map ids, apply limits and truncation; raises RequestError with a fix-it message."""
    k_limit = min(runtime.n_items, config.max_k)
    if req.k > k_limit:
        why = (f"the catalogue has {runtime.n_items} items" if runtime.n_items <= config.max_k
               else f"this server caps k at {config.max_k} (--max-k)")
        raise RequestError(f"{where}k={req.k} is too large: {why}; ask for k <= {k_limit}")
    for name, ids in (("history", req.history), ("candidates", req.candidates)):
        if ids is not None and len(ids) > config.max_history:
            raise RequestError(f"{where}{name} has {len(ids)} ids; send at most {config.max_history} "
                               f"(only the last {runtime.max_items} history items are read anyway)")
    known, unknown = runtime.to_internal(req.history)
    if not known:
        raise RequestError(f"{where}history: none of its {len(req.history)} ids are in this model's catalogue "
                           f"(first unknown: {unknown[0]!r}); send source item ids the model was trained on")
    candidates, unknown_cands = None, []
    if req.candidates is not None:
        candidates, unknown_cands = runtime.to_internal(req.candidates)
        if not candidates:
            raise RequestError(f"{where}candidates: none of its {len(req.candidates)} ids are in this model's "
                               f"catalogue (first unknown: {unknown_cands[0]!r}); send known source item ids or "
                               "omit candidates")
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


def respond(prepared: Prepared, items: Sequence[int], scores: Sequence[float], runtime: ExportRuntime) -> RecommendResponse:
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


# ---------------------------------------------------------------------- micro-batching
class MicroBatcher:
    """Collects concurrent queries into batches that one worker thread decodes together.

    A batch starts with the first waiting query and takes every query already queued. It waits
    up to ``wait_ms`` for more only while other HTTP requests have arrived but not yet been queued
    (``arriving``), so a lone request is never delayed and a burst is decoded in one pass.
    """

    _POLL_S = 0.0002   # granularity of the wait window

    def __init__(self, runtime: ExportRuntime, max_batch: int, wait_ms: float):
        self.runtime = runtime
        self.max_batch = max_batch
        self.wait_s = wait_ms / 1000.0
        self.arriving = 0          # recommend requests received but not yet queued
        self.batches = 0           # batches decoded so far
        self.queries = 0           # queries decoded so far
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genrec-infer")

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="genrec-microbatcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    @property
    def alive(self) -> bool:
        return self._worker is not None and not self._worker.done()

    async def submit(self, queries: list[Query]) -> list[tuple[int, list[int], list[float]]]:
        """Queue ``queries`` and wait for them: per query (size of the batch it ran in, item ids, scores)."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in queries]
        for query, fut in zip(queries, futures):
            self._queue.put_nowait((query, fut))
        return list(await asyncio.gather(*futures))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.wait_s
            while len(batch) < self.max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                elif self.arriving > 0 and loop.time() < deadline:
                    await asyncio.sleep(self._POLL_S)
                else:
                    break
            batch = [(q, f) for q, f in batch if not f.done()]   # drop queries whose client went away
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(self._executor, self._decode, [q for q, _ in batch])
            except Exception as e:  # a bug, not bad input (inputs are validated before queuing)
                log.exception("batch failed", extra={"fields": {"batch": len(batch)}})
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            self.batches += 1
            self.queries += len(batch)
            for (_, fut), (items, scores) in zip(batch, results):
                if not fut.done():
                    fut.set_result((len(batch), items, scores))

    def _decode(self, queries: list[Query]):
        return recommend_queries(self.runtime, queries)


# ---------------------------------------------------------------------- ASGI middleware
class RequestMiddleware:
    """Body size limit, arrival counting for the batcher, and one structured log line per request."""

    def __init__(self, app, batcher: MicroBatcher, max_body_bytes: int):
        self.app = app
        self.batcher = batcher
        self.max_body = max_body_bytes
        self.count = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self.count += 1
        start = time.perf_counter()
        state = scope.setdefault("state", {})
        state["request_id"] = self.count
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        recommend = scope["path"].startswith("/recommend")
        if recommend:
            self.batcher.arriving += 1
            state["arrival_open"] = True
        try:
            body = await self._read_body(receive) if scope["method"] in ("POST", "PUT", "PATCH") else None
            if body is None and scope["method"] in ("POST", "PUT", "PATCH"):
                await _send_json(send_wrapper, 413, {
                    "error": f"request body is larger than {self.max_body} bytes; send fewer ids "
                             "(split a batch into several requests)", "details": []})
            else:
                await self.app(scope, _replay(body, receive) if body is not None else receive, send_wrapper)
        finally:
            if state.pop("arrival_open", False):
                self.batcher.arriving -= 1
            if log.isEnabledFor(logging.INFO) or status["code"] >= 500:
                fields = {"request_id": self.count, "method": scope["method"], "path": scope["path"],
                          "status": status["code"], "ms": round((time.perf_counter() - start) * 1000, 3)}
                fields.update(state.get("log", {}))
                log.log(logging.ERROR if status["code"] >= 500 else logging.INFO, "request", extra={"fields": fields})

    async def _read_body(self, receive) -> bytes | None:
        """The whole body, or None when it exceeds the limit."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_json(send, status: int, payload: dict) -> None:
    data = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


# ---------------------------------------------------------------------- errors
def _field_name(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    name = ""
    for p in parts:
        name += f"[{p}]" if p.isdigit() else (f".{p}" if name else p)
    return name or "body"


_BAD_JSON = 'request body is not valid JSON; send a JSON object such as {"history": ["ITEM_ID"], "k": 10}'

# Fix-it messages for common validation errors, by (field, pydantic error type) or error type alone.
_HINTS = {
    ("history", "too_short"): "is empty; send at least one source item id, oldest first",
    ("candidates", "too_short"): "is empty; omit candidates to rank the whole catalogue",
    ("requests", "too_short"): "is empty; send at least one request",
    ("k", "greater_than_equal"): "must be >= 1; ask for at least one item",
    ("k", "int_type"): "must be a JSON integer such as 10",
    ("exclude_history", "bool_type"): "must be true or false",
    "extra_forbidden": "unknown field; check its spelling",
    "missing": "required field is missing",
    "string_type": "must be a source item id (a string or a number)",
    "list_type": "must be a JSON list",
    "model_attributes_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
}


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        err = next(e for e in errors if e.get("type") == "json_invalid")
        reason = (err.get("ctx") or {}).get("error", "invalid JSON")
        return JSONResponse(status_code=400, content={"error": f"{_BAD_JSON} ({reason})", "details": []})
    details = []
    for e in errors:
        field_name = _field_name(e.get("loc", ()))
        kind = e.get("type", "")
        last = field_name.rsplit(".", 1)[-1]
        entry = {"field": field_name, "problem": _HINTS.get((last, kind)) or _HINTS.get(kind) or e.get("msg", "invalid value")}
        if "input" in e and e.get("type") not in ("missing",):
            text = json.dumps(e["input"], default=str)
            entry["got"] = text if len(text) <= 80 else text[:77] + "..."
        details.append(entry)
    summary = "; ".join(f"{d['field']}: {d['problem']}" for d in details[:3])
    more = f" (and {len(details) - 3} more)" if len(details) > 3 else ""
    return JSONResponse(status_code=422, content={"error": f"invalid request: {summary}{more} (schema: /docs)",
                                                  "details": details})


# ---------------------------------------------------------------------- app
def create_app(runtime: ExportRuntime, config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI app serving ``runtime``; the micro-batcher starts with the app's lifespan."""
    config = config or ServeConfig(export=runtime.folder)
    batcher = MicroBatcher(runtime, config.max_batch, config.batch_wait_ms)
    started = time.time()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        log.info("ready", extra={"fields": {"export": str(runtime.folder), "n_items": runtime.n_items,
                                            "max_batch": config.max_batch, "batch_wait_ms": config.batch_wait_ms}})
        yield
        await batcher.stop()

    name = runtime.manifest.get("name") or runtime.folder.name
    app = FastAPI(title="genrec", version=str(runtime.manifest.get("versions", {}).get("genrec")),
                  description=f"Generative recommendations from the export `{name}` ({runtime.n_items} items). "
                              "Ids are the catalogue's source ids.", lifespan=lifespan)
    app.state.runtime, app.state.batcher, app.state.config = runtime, batcher, config
    errors = {422: {"model": ErrorResponse, "description": "invalid request; the message says what to fix"},
              400: {"model": ErrorResponse, "description": "malformed JSON"},
              413: {"model": ErrorResponse, "description": "body too large"}}

    def close_arrival(request: Request) -> None:
        if request.scope.get("state", {}).pop("arrival_open", False):
            batcher.arriving -= 1

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError):
        content_type = request.headers.get("content-type", "")
        if "json" not in content_type.lower():   # FastAPI parses JSON bodies only when the header says so
            response = JSONResponse(status_code=415, content={
                "error": f"Content-Type {content_type or '(none)'!r} is not JSON; send the body as JSON with the "
                         "header Content-Type: application/json", "details": []})
        else:
            response = _validation_response(exc)
        request.state.log = {"error": json.loads(response.body)["error"][:200]}
        return response

    @app.exception_handler(RequestError)
    async def on_request_error(request: Request, exc: RequestError):
        request.state.log = {"error": str(exc)[:200]}
        return JSONResponse(status_code=exc.status, content={"error": str(exc), "details": []})

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException):
        hint = {400: _BAD_JSON, 404: "unknown path; see /docs for the endpoints",
                405: "method not allowed for this path; see /docs"}.get(exc.status_code, str(exc.detail))
        return JSONResponse(status_code=exc.status_code, content={"error": hint, "details": []})

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception):
        log.error("internal error", exc_info=exc, extra={"fields": {"path": request.url.path}})
        return JSONResponse(status_code=500, content={"error": "internal error; it was logged", "details": []})

    @app.post("/recommend", response_model=RecommendResponse, responses=errors)
    async def recommend(req: RecommendRequest, request: Request) -> RecommendResponse:
        """Top-k catalogue items for one history: exact scoring of every item (parallel head) or
        trie-constrained beam search (autoregressive head); either way only real items come out."""
        try:
            prepared = prepare(req, runtime, config)
        finally:
            close_arrival(request)
        ((batch, items, scores),) = await batcher.submit([prepared.query])
        request.state.log = {"k": req.k, "n_history": len(req.history), "n_unknown": len(prepared.unknown_history),
                             "truncated": prepared.truncated, "batch": batch}
        return respond(prepared, items, scores, runtime)

    @app.post("/recommend/batch", response_model=BatchResponse, responses=errors)
    async def recommend_batch(req: BatchRequest, request: Request) -> BatchResponse:
        """Several independent requests in one call; each result is the same as from POST /recommend."""
        try:
            if len(req.requests) > config.max_batch_requests:
                raise RequestError(f"requests has {len(req.requests)} entries; send at most "
                                   f"{config.max_batch_requests} per call (--max-batch-requests)")
            prepared = [prepare(r, runtime, config, where=f"requests[{i}].") for i, r in enumerate(req.requests)]
        finally:
            close_arrival(request)
        results = await batcher.submit([p.query for p in prepared])
        request.state.log = {"n_requests": len(prepared), "batch": max(b for b, _, _ in results)}
        return BatchResponse(results=[respond(p, items, scores, runtime)
                                      for p, (_, items, scores) in zip(prepared, results)])

    @app.get("/health")
    async def health() -> JSONResponse:
        """Liveness: 200 while the model is loaded and the batching worker runs, else 503."""
        ok = batcher.alive
        return JSONResponse(status_code=200 if ok else 503, content={
            "status": "ok" if ok else "worker stopped", "model": name, "n_items": runtime.n_items,
            "uptime_s": round(time.time() - started, 3), "queries_served": batcher.queries,
            "batches": batcher.batches})

    @app.get("/metadata")
    async def metadata() -> dict:
        """The model, catalogue size, semantic-ID shape, versions and the server's limits."""
        return runtime.metadata() | {"server": {
            "max_batch": config.max_batch, "batch_wait_ms": config.batch_wait_ms, "max_k": min(config.max_k, runtime.n_items),
            "max_history": config.max_history, "max_batch_requests": config.max_batch_requests,
            "intra_op_threads": config.intra_op_threads, "inter_op_threads": config.inter_op_threads}}

    app.add_middleware(RequestMiddleware, batcher=batcher, max_body_bytes=config.max_body_bytes)
    return app
