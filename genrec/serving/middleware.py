"""ASGI middleware around every request: limits and timeouts on the body, client-gone cancellation,
metrics and one JSON log line.

For a POST it, in order:
1. refuses a body whose Content-Length is over the limit (413) before reading anything, so a
   client that sent ``Expect: 100-continue`` gets the 413 instead of a 100 Continue;
2. sheds a recommend request while the batcher's queue is full (503 + Retry-After), before
   reading or parsing its body;
3. reads the body within ``body_timeout_s`` (else 408, connection closed) and at most
   ``max_body_bytes`` (else 413);
4. runs the app while watching the connection: when the client disconnects before its response,
   the request is cancelled, and with it its queries waiting in the batcher.
"""

from __future__ import annotations

import asyncio
import logging
import time

from genrec.serving.batching import FairBatcher
from genrec.serving.config import ServeConfig
from genrec.serving.metrics import ServerMetrics
from genrec.serving.routes import RECOMMEND_PATHS
from genrec.serving.schemas import ApiError

log = logging.getLogger("genrec.serving")

CLIENT_GONE = 499     # logged (never sent) for a request whose client left before its response
_BODY_METHODS = ("POST", "PUT", "PATCH")


class _Stop(Exception):
    """Reading the body ended early: an error to send, or None when the client is gone."""

    def __init__(self, error: ApiError | None, close: bool = False):
        self.error, self.close = error, close


class RequestMiddleware:
    def __init__(self, app, *, batcher: FairBatcher, config: ServeConfig, metrics: ServerMetrics):
        self.app = app
        self.batcher = batcher
        self.config = config
        self.metrics = metrics
        self.count = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        self.count += 1
        start = time.perf_counter()
        state = scope.setdefault("state", {})
        state["request_id"] = self.count
        state["deadline"] = loop.time() + self.config.request_timeout_s
        response = {"status": None, "complete": False}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                response["status"] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                response["complete"] = True
            await send(message)

        compute = scope["method"] == "POST" and scope["path"] in RECOMMEND_PATHS
        if compute:
            self.batcher.arriving += 1
            state["arrival_open"] = True
        self.metrics.in_flight.inc()
        try:
            if scope["method"] in _BODY_METHODS:
                await self._with_body(scope, receive, send_wrapper, compute, response)
            else:
                await self.app(scope, receive, send_wrapper)
        except Exception:
            response["status"] = response["status"] or 500   # the outer error handler sends the 500
            raise
        finally:
            if state.pop("arrival_open", False):
                self.batcher.arriving -= 1
            self.metrics.in_flight.dec()
            self._finish(scope, state, response, time.perf_counter() - start)

    # ------------------------------------------------------------------ body
    async def _with_body(self, scope, receive, send, compute: bool, response: dict) -> None:
        try:
            self._check_head(scope, compute)
            body = await self._read_body(receive)
        except _Stop as stop:
            if stop.error is not None:
                await _send_error(send, stop.error, close=stop.close)
            else:
                self.metrics.client_gone.inc()
            return
        gone = asyncio.Event()
        watcher = asyncio.get_running_loop().create_task(self._watch(receive, gone))
        await asyncio.sleep(0)       # let the watcher notice a client that left while its body was queued
        if gone.is_set():
            self.metrics.client_gone.inc()
            return
        app = asyncio.get_running_loop().create_task(self.app(scope, _replay(body, gone), send))
        try:
            await asyncio.wait({app, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not app.done() and gone.is_set() and response["status"] is None:
                app.cancel()             # the client left: stop parsing, drop its queued queries
                self.metrics.client_gone.inc()
                try:
                    await app
                except asyncio.CancelledError:
                    pass
                return
            await app
        finally:
            for task in (app, watcher):
                if not task.done():
                    task.cancel()

    def _check_head(self, scope, compute: bool) -> None:
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.config.max_body_bytes:
            # Expect: 100-continue means the body is not on its way: close rather than wait for it.
            raise _Stop(self._too_large(), close=headers.get(b"expect", b"").lower() == b"100-continue")
        if compute and self.batcher.full:
            raise _Stop(self.batcher.overloaded())

    def _too_large(self) -> ApiError:
        return ApiError(413, "body_too_large", f"request body is larger than {self.config.max_body_bytes} bytes "
                        "(--max-body-bytes); send fewer ids (split a batch into several requests)")

    async def _read_body(self, receive) -> bytes:
        loop = asyncio.get_running_loop()
        until = loop.time() + self.config.body_timeout_s
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, until - loop.time()))
            except asyncio.TimeoutError:
                raise _Stop(ApiError(408, "body_timeout", f"the request body did not arrive within "
                                     f"{self.config.body_timeout_s} s (--body-timeout-s)"), close=True) from None
            if message["type"] == "http.disconnect":
                raise _Stop(None)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.config.max_body_bytes:
                raise _Stop(self._too_large())
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    async def _watch(receive, gone: asyncio.Event) -> None:
        """Returns when the connection reports a disconnect (uvicorn also reports one once the response is sent)."""
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    # ------------------------------------------------------------------ accounting
    def _finish(self, scope, state: dict, response: dict, seconds: float) -> None:
        status = response["status"] or CLIENT_GONE
        route = scope.get("route")
        label = getattr(route, "path", None) or "unmatched"   # route templates only: bounded label values
        self.metrics.requests.labels(label, scope["method"], str(status)).inc()
        self.metrics.latency.labels(label).observe(seconds)
        if log.isEnabledFor(logging.INFO) or status >= 500:
            fields = {"request_id": state["request_id"], "method": scope["method"], "path": scope["path"],
                      "status": status, "ms": round(seconds * 1000, 3)}
            fields.update(state.get("log", {}))
            log.log(logging.ERROR if status >= 500 and status != CLIENT_GONE else logging.INFO, "request",
                    extra={"fields": fields})


def _replay(body: bytes, gone: asyncio.Event):
    """The app's receive: the body once, then http.disconnect when the watcher saw the client go."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    return replay


async def _send_error(send, error: ApiError, close: bool = False) -> None:
    body = error.body()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
