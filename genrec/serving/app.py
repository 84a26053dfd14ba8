"""HTTP server over an export folder: FastAPI + uvicorn + onnxruntime, no torch.

    python serve.py --export export/demo [--host 127.0.0.1 --port 8000 --workers 1]

Endpoints: POST /recommend, POST /recommend/batch, GET|HEAD /health, /livez, /readyz,
GET /metadata, GET /metrics (Prometheus), /docs (Swagger UI from local files) and /openapi.json.
Request ids are the catalogue's source ids (e.g. ASINs).

Request path: connection guard (protocol.py: head timeout, connection limit, 414/431) ->
middleware (middleware.py: body limit and timeout, shedding, client-gone cancellation, metrics,
one JSON log line) -> pydantic validation (schemas.py) -> prepare (routes.py: map ids, truncate,
check k) -> fair micro-batcher (batching.py: round-robin across requests, bounded queue,
deadline) -> one worker thread runs batched onnxruntime + beam search -> response. Every error
is one JSON shape (schemas.ErrorBody) whose message says what to fix; nothing a client sends can
make the server fail.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import datetime, timezone

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from genrec.config import add_config_args, config_from_args
from genrec.io import ArtifactError
from genrec.serving.batching import FairBatcher
from genrec.serving.config import ServeConfig
from genrec.serving.metrics import MULTIPROC_ENV, ServerMetrics
from genrec.serving.middleware import RequestMiddleware
from genrec.serving.protocol import GUARD_KEY, ConnectionGuard, GuardedH11Protocol
from genrec.serving.routes import Serving, add_docs, router
from genrec.serving.runtime import ExportRuntime, Query, RuntimeConfig
from genrec.serving.schemas import BAD_JSON, ApiError, validation_error

LOGGER = "genrec.serving"
CONFIG_ENV = "GENREC_SERVE_CONFIG"     # ServeConfig as JSON, for worker processes (--workers > 1)
log = logging.getLogger(LOGGER)


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


# ---------------------------------------------------------------------- errors
def _error_response(request: Request, error: ApiError) -> Response:
    request.state.log = {"error": error.message[:200], "code": error.code}
    return Response(content=error.body(), status_code=error.status, media_type="application/json",
                    headers=error.headers)


async def _on_api_error(request: Request, exc: ApiError) -> Response:
    return _error_response(request, exc)


async def _on_validation(request: Request, exc: RequestValidationError) -> Response:
    content_type = request.headers.get("content-type", "")
    if "json" not in content_type.lower():   # FastAPI parses JSON bodies only when the header says so
        return _error_response(request, ApiError(
            415, "unsupported_media_type", f"Content-Type {content_type or '(none)'!r} is not JSON; send the body "
            "as JSON with the header Content-Type: application/json"))
    return _error_response(request, validation_error(exc.errors()))


async def _on_http(request: Request, exc: StarletteHTTPException) -> Response:
    code, message = {400: ("invalid_json", BAD_JSON), 404: ("not_found", "unknown path; see /docs for the endpoints"),
                     405: ("method_not_allowed", "method not allowed for this path; see /docs")
                     }.get(exc.status_code, ("http_error", str(exc.detail)))
    return _error_response(request, ApiError(exc.status_code, code, message, headers=exc.headers))


async def _on_bug(request: Request, exc: Exception) -> Response:
    log.error("internal error", exc_info=exc, extra={"fields": {"path": request.url.path}})
    return _error_response(request, ApiError(500, "internal_error", "internal error; it was logged"))


# ---------------------------------------------------------------------- app
def create_app(runtime: ExportRuntime, config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI app serving ``runtime``; the micro-batcher starts (and warms up) with the app's lifespan."""
    config = config or ServeConfig(export=runtime.folder)
    metrics = ServerMetrics()
    batcher = FairBatcher(runtime, max_batch=config.max_batch, wait_ms=config.batch_wait_ms,
                          max_queued=config.max_queued_queries, metrics=metrics)
    name = runtime.manifest.get("name") or runtime.folder.name
    state = Serving(runtime=runtime, config=config, batcher=batcher, metrics=metrics, name=name)
    guard = ConnectionGuard(max_connections=config.max_connections, header_timeout_s=config.header_timeout_s,
                            body_timeout_s=config.body_timeout_s, max_header_bytes=config.max_header_bytes,
                            metrics=metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import asyncio

        batcher.start()
        # One query through the whole path: onnxruntime's first run allocates, so /readyz waits for it.
        loop = asyncio.get_running_loop()
        await batcher.submit([Query(history=[0], k=1)], loop.time() + max(config.request_timeout_s, 60.0))
        state.ready = True
        log.info("ready", extra={"fields": {"export": str(runtime.folder), "n_items": runtime.n_items, "pid": os.getpid(),
                                            "max_batch": config.max_batch, "batch_wait_ms": config.batch_wait_ms}})
        yield {GUARD_KEY: guard}       # the lifespan state uvicorn hands to each connection's protocol
        state.ready = False
        await batcher.stop()

    app = FastAPI(title="genrec", version=str(runtime.manifest.get("versions", {}).get("genrec")),
                  description=f"Generative recommendations from the export `{name}` ({runtime.n_items} items). "
                              "Ids are the catalogue's source ids. Every error is an ErrorBody.",
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.serving = state
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_bug)
    app.include_router(router)
    add_docs(app)
    app.add_middleware(RequestMiddleware, batcher=batcher, config=config, metrics=metrics)
    return app


def app_from_env() -> FastAPI:
    """App factory of each worker process (--workers > 1): the ServeConfig comes in CONFIG_ENV."""
    config = ServeConfig(**json.loads(os.environ[CONFIG_ENV]))
    configure_logging(config.log_level)
    return create_app(ExportRuntime(config.export, RuntimeConfig(config.intra_op_threads, config.inter_op_threads)),
                      config)


# ---------------------------------------------------------------------- command line
def add_serve_args(parser: argparse.ArgumentParser) -> None:
    """Add the server's flags: one per ServeConfig field, its comment as the help text."""
    add_config_args(parser, ServeConfig)


def serve_from_args(args: argparse.Namespace) -> None:
    """Load the export folder named by ``args`` and serve it with uvicorn until SIGTERM/SIGINT."""
    try:
        config = config_from_args(ServeConfig, args)
        if config.export is None:
            raise ValueError("--export is required: the folder written by `genrec export`")
        configure_logging(config.log_level)
        runtime = ExportRuntime(config.export, RuntimeConfig(config.intra_op_threads, config.inter_op_threads))
    except (ValueError, ArtifactError) as e:   # bad flags or a bad folder: a message, not a traceback
        raise SystemExit(f"serve: error: {e}") from e
    runtime = runtime if config.workers == 1 else None   # checked here; each worker loads its own copy
    serve(config, runtime)


def serve(config: ServeConfig, runtime: ExportRuntime | None = None) -> None:
    """Run uvicorn with the connection guard; N workers each load the export (``runtime`` is used when N = 1)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    options = dict(host=config.host, port=config.port, http=GuardedH11Protocol, log_level=config.log_level.lower(),
                   access_log=False, timeout_keep_alive=config.keep_alive_s,
                   timeout_graceful_shutdown=config.shutdown_timeout_s,
                   h11_max_incomplete_event_size=config.max_header_bytes)
    if config.workers == 1:
        app = create_app(runtime or ExportRuntime(config.export, RuntimeConfig(config.intra_op_threads,
                                                                               config.inter_op_threads)), config)
        uvicorn.Server(uvicorn.Config(app, **options)).run()
        return
    os.environ[CONFIG_ENV] = json.dumps(asdict(config), default=str)
    own_dir = not os.environ.get(MULTIPROC_ENV)
    if own_dir:      # the workers' metrics files, summed by every /metrics scrape
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="genrec-metrics-")
    try:
        uv_config = uvicorn.Config("genrec.serving.app:app_from_env", factory=True, workers=config.workers, **options)
        Multiprocess(uv_config, sockets=[uv_config.bind_socket()]).run()
    finally:
        if own_dir:
            shutil.rmtree(os.environ.pop(MULTIPROC_ENV), ignore_errors=True)
