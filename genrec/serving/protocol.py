"""Connection-level guards: uvicorn's h11 protocol plus the limits it lacks.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) and caps the size of an
incomplete request head (``h11_max_incomplete_event_size``), but it waits forever for the
first request on a new connection and for a half-sent head or body, lets connections pile up
until the process runs out of file descriptors, and answers an over-long URL with a bare 400
followed by a close that resets the client mid-upload. :class:`GuardedH11Protocol` adds:

- a head timeout from connect (and after each response): no complete request head in time ->
  408 (if part of one arrived) and close;
- a body backstop: a body still arriving ``BODY_GRACE_S`` after the middleware's body timeout
  (e.g. one the app already answered 413 and uvicorn is discarding) -> close;
- a connection limit: connections past ``max_connections`` get 503 + Retry-After and are closed;
- 414 for a request line longer than ``max_header_bytes``, 431 for a longer head, both JSON
  ErrorBody like every other error;
- lingering close after any of these: the response is written, our side half-closed, and what
  the client is still sending is read and discarded for up to ``LINGER_S``, so the client reads
  the response instead of a connection reset.

The limits and metrics come from the app's lifespan state (:data:`GUARD_KEY`), so each worker
process uses its own app's.
"""

from __future__ import annotations

import asyncio
import http
from dataclasses import dataclass

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from genrec.serving.metrics import ServerMetrics
from genrec.serving.schemas import error_json

GUARD_KEY = "genrec_connection_guard"


@dataclass
class ConnectionGuard:
    max_connections: int         # open connections; more get 503 and are closed
    header_timeout_s: float      # time for a whole request head, from connect or the previous response
    body_timeout_s: float        # the middleware's body timeout; the backstop fires BODY_GRACE_S later
    max_header_bytes: int        # longest request head (uvicorn's h11_max_incomplete_event_size)
    metrics: ServerMetrics


class GuardedH11Protocol(H11Protocol):
    LINGER_S = 2.0               # after an error response, discard client data for at most this long
    LINGER_BYTES = 8 << 20       # ... or this many bytes, then close
    BODY_GRACE_S = 1.0           # the middleware answers 408 first; this only closes what it cannot see

    def __init__(self, config, server_state, app_state, _loop=None):
        super().__init__(config, server_state, app_state, _loop)
        self.guard: ConnectionGuard | None = app_state.get(GUARD_KEY)
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._lingering = False
        self._discarded = 0

    # ------------------------------------------------------------------ connection
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if self.guard is None:
            return
        self.guard.metrics.connections.inc()
        if len(self.connections) > self.guard.max_connections:
            self.guard.metrics.shed.labels("connection_limit").inc()
            self._reject(503, "too_many_connections", f"the server has {self.guard.max_connections} open connections "
                         "(--max-connections); retry shortly, and reuse one keep-alive connection per client",
                         "connection_limit", retry_after=1)
            return
        self._arm_head_timer()

    def connection_lost(self, exc) -> None:
        self._cancel_timers()
        if self.guard is not None:
            self.guard.metrics.connections.dec()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._discarded += len(data)
            if self._discarded > self.LINGER_BYTES:
                self.transport.close()
            return
        if self.guard is not None and self.conn.their_state is h11.IDLE:
            # h11 limits only a head that is still incomplete; one that arrives whole is checked here
            pending = self.conn.trailing_data[0] + data
            limit = self.guard.max_header_bytes
            if len(pending) > limit and pending.find(b"\r\n\r\n", 0, limit + 4) == -1:
                self._head_too_long(pending)
                return
        super().data_received(data)
        if self.guard is not None and not self._lingering:
            self._follow_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.guard is not None and not self.transport.is_closing() and not self._lingering:
            self._arm_head_timer()       # the next request's head must arrive in time too

    # ------------------------------------------------------------------ timers
    def _follow_request(self) -> None:
        """After new data: stop the head timer once a head is in, run the body backstop while a body arrives."""
        state = self.conn.their_state
        if state is not h11.IDLE and self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if state is h11.SEND_BODY and self._body_timer is None:
            self._body_timer = self.loop.call_later(self.guard.body_timeout_s + self.BODY_GRACE_S, self._body_timeout)
        elif state is not h11.SEND_BODY and self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.guard.header_timeout_s, self._head_timeout)

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return                       # still answering the previous request
        if self.conn.trailing_data[0]:   # part of a head arrived
            self._reject(408, "header_timeout", f"the request head did not arrive within "
                         f"{self.guard.header_timeout_s} s (--header-timeout-s); send the whole head at once",
                         "header_timeout")
        else:                            # nothing sent: just an idle connection
            self.guard.metrics.closed.labels("header_timeout").inc()
            self.transport.close()

    def _body_timeout(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
            return
        self.guard.metrics.closed.labels("body_timeout").inc()
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            cycle.disconnected = True    # the app sees a disconnect and sends nothing after our 408
            cycle.message_event.set()
            self._reject(408, "body_timeout", f"the request body did not arrive within {self.guard.body_timeout_s} s "
                         "(--body-timeout-s)", None)
        else:
            self.transport.close()

    # ------------------------------------------------------------------ errors
    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to unparsable input; here 414 / 431 when the head is too long, else 400."""
        if self.guard is None:
            return super().send_400_response(msg)
        buffered = self.conn.trailing_data[0]
        if len(buffered) > self.guard.max_header_bytes:
            self._head_too_long(buffered)
        else:
            self._reject(400, "bad_request", f"the request is not valid HTTP/1.1 ({msg})", "bad_request")

    def _head_too_long(self, buffered: bytes) -> None:
        limit = self.guard.max_header_bytes
        if b"\r\n" not in buffered[:limit]:
            self._reject(414, "url_too_long", f"the request line is longer than {limit} bytes (--max-header-bytes); "
                         "send long inputs in a POST body", "url_too_long")
        else:
            self._reject(431, "headers_too_large", f"the request head is larger than {limit} bytes "
                         "(--max-header-bytes); send fewer or shorter headers", "headers_too_large")

    def _reject(self, status: int, code: str, message: str, reason: str | None, retry_after: int | None = None) -> None:
        """Write a JSON error with Connection: close, then linger-close (see the module docstring)."""
        if reason is not None:
            self.guard.metrics.closed.labels(reason).inc()
        body = error_json(code, message)
        head = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}", "content-type: application/json",
                f"content-length: {len(body)}", "connection: close"]
        if retry_after is not None:
            head.append(f"retry-after: {retry_after}")
        self._cancel_timers()
        self._lingering = True
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(self.LINGER_S, self.transport.close)
