"""A light HTTP/1.1 load generator (stdlib asyncio) for load tests and bench/serve.py.

General-purpose clients (httpx, requests) spend more CPU per request than this server does,
so on a 2-core machine they measure the client. This one keeps one connection per client,
writes pre-encoded requests and reads responses by Content-Length: little more than the
socket work. Loopback benchmarking only; it does not implement chunked responses.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np


@dataclass
class LoadResult:
    n_requests: int                      # requests sent
    seconds: float                       # wall time from first send to last response
    statuses: Counter = field(default_factory=Counter)   # HTTP status -> count (0 = connection error)
    latencies: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (n,) seconds per request
    bodies: list[bytes] | None = None    # response bodies in request order, when kept

    @property
    def requests_per_s(self) -> float:
        return self.n_requests / self.seconds if self.seconds > 0 else float("inf")

    @property
    def n_errors(self) -> int:
        """Responses that are not 2xx, plus connection failures."""
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000) if len(self.latencies) else float("nan")


def _request_bytes(host: str, path: str, body: dict | bytes) -> bytes:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return status, await reader.readexactly(length)


async def _client(host: str, port: int, requests: list[tuple[int, bytes]], result: LoadResult) -> None:
    reader = writer = None
    for index, payload in requests:
        start = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            writer.write(payload)
            status, body = await _read_response(reader)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError):
            status, body = 0, b""
            if writer is not None:
                writer.close()
            reader = writer = None          # reconnect for the next request
        result.latencies[index] = time.perf_counter() - start
        result.statuses[status] += 1
        if result.bodies is not None:
            result.bodies[index] = body
    if writer is not None:
        writer.close()


async def _run(url: str, bodies: list[dict | bytes], clients: int, path: str, keep_bodies: bool) -> LoadResult:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    payloads = [(i, _request_bytes(host, path, b)) for i, b in enumerate(bodies)]
    result = LoadResult(n_requests=len(bodies), seconds=0.0, latencies=np.zeros(len(bodies)),
                        bodies=[b""] * len(bodies) if keep_bodies else None)
    start = time.perf_counter()
    await asyncio.gather(*(_client(host, port, payloads[c::clients], result) for c in range(clients)))
    result.seconds = time.perf_counter() - start
    return result


def run_load(url: str, bodies: list[dict | bytes], *, clients: int, path: str = "/recommend",
             keep_bodies: bool = False) -> LoadResult:
    """POST each body to ``url + path`` from ``clients`` concurrent keep-alive connections."""
    if clients < 1:
        raise ValueError(f"clients must be >= 1, got {clients}")
    return asyncio.run(_run(url, bodies, clients, path, keep_bodies))
