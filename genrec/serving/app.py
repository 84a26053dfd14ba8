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

Reload (:class:`Reloader`): on SIGHUP, or with ``--watch`` when EXPORT/manifest.json changes (e.g. after
`genrec add-items --in-place`), the new export is loaded, checked and warmed up beside the old one in a
thread, then swapped in with one assignment; requests already mapped to the old export finish on it. A
failed load logs one line and the old export keeps serving. /health and the X-Genrec-Export header
name the loaded export; ``genrec_reloads_total{result}`` counts reloads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import time
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
from genrec.io import MANIFEST, ArtifactError
from genrec.serving.batching import FairBatcher
from genrec.serving.config import ServeConfig
from genrec.serving.metrics import MULTIPROC_ENV, ServerMetrics
from genrec.serving.middleware import RequestMiddleware
from genrec.serving.protocol import GUARD_KEY, ConnectionGuard, GuardedH11Protocol
from genrec.serving.routes import Catalogue, Serving, add_docs, manifest_digest, router
from genrec.serving.runtime import ExportRuntime, Query, RuntimeConfig, recommend_queries
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


# ---------------------------------------------------------------------- reload
class Reloader:
    """Swaps a new export into a running app without dropping requests (see the module docstring)."""

    def __init__(self, state: Serving, config: ServeConfig, metrics: ServerMetrics):
        self.state, self.config, self.metrics = state, config, metrics
        self.folder = config.export if config.export is not None else state.runtime.folder
        self._lock: asyncio.Lock | None = None
        self._failed: str | None = None      # digest of a manifest that failed to load: --watch does not retry it

    def _load(self) -> tuple[ExportRuntime, Catalogue]:
        runtime = ExportRuntime(self.folder, runtime_config(self.config))
        catalogue = Catalogue.load(runtime)
        recommend_queries(runtime, [Query(history=[0], k=1)])   # onnxruntime's first run allocates: not on a request
        return runtime, catalogue

    async def reload(self, trigger: str) -> bool:
        """Load the export folder again and serve it; False (old export kept, one log line) when it cannot be loaded."""
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            start = time.perf_counter()
            old = self.state.export
            try:
                runtime, catalogue = await asyncio.to_thread(self._load)
            except Exception as e:   # whatever is wrong with the new folder, the old export keeps serving
                self.metrics.reloads.labels("failed").inc()
                log.error("reload failed; still serving the previous export", extra={"fields": {
                    "trigger": trigger, "export": str(self.folder), "serving": old["manifest_sha256"][:12],
                    "error": " ".join(f"{type(e).__name__}: {e}".split())[:500]}})
                return False
            self.state.swap(runtime, catalogue)
            self.metrics.reloads.labels("ok").inc()
            new = self.state.export
            log.info("reloaded", extra={"fields": {
                "trigger": trigger, "export": str(self.folder), "from": old["manifest_sha256"][:12],
                "to": new["manifest_sha256"][:12], "n_items": new["n_items"],
                "seconds": round(time.perf_counter() - start, 3)}})
            return True

    def changed(self) -> str | None:
        """The digest of EXPORT/manifest.json when it differs from the served export's (and has not failed before)."""
        try:
            digest = manifest_digest(json.loads((self.folder / MANIFEST).read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return None      # mid-replacement (the folder is renamed into place): look again next time
        return None if digest in (self.state.export["manifest_sha256"], self._failed) else digest

    async def watch(self) -> None:
        """--watch: check the manifest every watch_interval_s and reload when it changed."""
        while True:
            await asyncio.sleep(self.config.watch_interval_s)
            digest = self.changed()
            if digest is not None and not await self.reload("watch"):
                self._failed = digest


def _on_sighup(loop: asyncio.AbstractEventLoop, reloader: Reloader) -> bool:
    """Reload on SIGHUP; False where the loop cannot take signal handlers (not the main thread, Windows)."""
    running: set[asyncio.Task] = set()     # the loop keeps only weak references to tasks

    def on_signal() -> None:
        task = loop.create_task(reloader.reload("sighup"))
        running.add(task)
        task.add_done_callback(running.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, on_signal)
    except (ValueError, RuntimeError, NotImplementedError, AttributeError):
        return False
    return True


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

    reloader = Reloader(state, config, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        # One query through the whole path: onnxruntime's first run allocates, so /readyz waits for it.
        loop = asyncio.get_running_loop()
        await batcher.submit([Query(history=[0], k=1)], loop.time() + max(config.request_timeout_s, 60.0))
        state.ready = True
        sighup = _on_sighup(loop, reloader)
        watcher = loop.create_task(reloader.watch(), name="genrec-watch") if config.watch else None
        log.info("ready", extra={"fields": {"export": str(runtime.folder), "n_items": runtime.n_items,
                                            "pid": os.getpid(), "max_batch": config.max_batch,
                                            "batch_wait_ms": config.batch_wait_ms,
                                            "export_sha256": state.export["manifest_sha256"][:12],
                                            "sighup_reload": sighup,
                                            "watch_s": config.watch_interval_s if config.watch else None}})
        yield {GUARD_KEY: guard}       # the lifespan state uvicorn hands to each connection's protocol
        state.ready = False
        if watcher is not None:
            watcher.cancel()
        if sighup:
            loop.remove_signal_handler(signal.SIGHUP)
        await batcher.stop()

    app = FastAPI(title="genrec", version=str(runtime.manifest.get("versions", {}).get("genrec")),
                  description=f"Generative recommendations from the export `{name}` ({runtime.n_items} items). "
                              "Ids are the catalogue's source ids. Every error is an ErrorBody.",
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.serving = state
    app.state.reloader = reloader
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_bug)
    app.include_router(router)
    add_docs(app)
    app.add_middleware(RequestMiddleware, batcher=batcher, config=config, metrics=metrics)
    return app


def runtime_config(config: ServeConfig) -> RuntimeConfig:
    """The runtime settings a ServeConfig carries (threads, decoding)."""
    return RuntimeConfig(config.intra_op_threads, config.inter_op_threads, decoding=config.decoding)


def app_from_env() -> FastAPI:
    """App factory of each worker process (--workers > 1): the ServeConfig comes in CONFIG_ENV."""
    config = ServeConfig(**json.loads(os.environ[CONFIG_ENV]))
    configure_logging(config.log_level)
    return create_app(ExportRuntime(config.export, runtime_config(config)),
                      config)


# ---------------------------------------------------------------------- command line
def add_serve_args(parser: argparse.ArgumentParser) -> None:
    """Add the server's flags: one per ServeConfig field, its comment as the help text."""
    add_config_args(parser, ServeConfig)
    watch = parser._option_string_actions["--watch"]
    watch.nargs, watch.const = "?", True     # `--watch` alone turns it on (`--watch false` still works)


def serve_from_args(args: argparse.Namespace) -> None:
    """Load the export folder named by ``args`` and serve it with uvicorn until SIGTERM/SIGINT."""
    try:
        config = config_from_args(ServeConfig, args)
        if config.export is None:
            raise ValueError("--export is required: the folder written by `genrec export`")
        configure_logging(config.log_level)
        runtime = ExportRuntime(config.export, runtime_config(config))
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
        app = create_app(runtime or ExportRuntime(config.export, runtime_config(config)), config)
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
