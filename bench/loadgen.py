"""A light HTTP/1.1 load generator (stdlib asyncio) for load tests and bench/serve.py.

    python bench/loadgen.py --url http://127.0.0.1:8000 --history B0001,B0002 --clients 8 --requests 2000
    python bench/loadgen.py ... --flood-queries 256    # the same, alone and then beside a flooding client

General-purpose clients (httpx, requests) spend more CPU per request than this server does,
so on a 2-core machine they measure the client. This one keeps one connection per client,
writes pre-encoded requests and reads responses by Content-Length: little more than the
socket work. Loopback benchmarking only; it does not implement chunked responses.
"""

from __future__ import annotations

import argparse
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


# ---------------------------------------------------------------------- light clients beside a flood
async def _flood(host: str, port: int, payload: bytes, stop: asyncio.Event, statuses: Counter) -> None:
    """Send ``payload`` back to back on one connection until ``stop``; Retry-After is ignored (worst case)."""
    reader = writer = None
    while not stop.is_set():
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            writer.write(payload)
            status, _ = await _read_response(reader)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError):
            status = 0
            if writer is not None:
                writer.close()
            reader = writer = None
        statuses[status] += 1
    if writer is not None:
        writer.close()


async def _beside_flood(url: str, bodies: list[dict | bytes], clients: int, path: str, flood_body: dict | bytes,
                        flood_path: str, flooders: int, head_start_s: float) -> tuple[LoadResult, Counter]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    payload = _request_bytes(host, flood_path, flood_body)
    stop, statuses = asyncio.Event(), Counter()
    flood = [asyncio.create_task(_flood(host, port, payload, stop, statuses)) for _ in range(flooders)]
    await asyncio.sleep(head_start_s)            # the flood is under way before the first light request
    try:
        light = await _run(url, bodies, clients, path, keep_bodies=False)
    finally:
        stop.set()
        await asyncio.gather(*flood)
    return light, statuses


def flood_figure(url: str, bodies: list[dict | bytes], flood_body: dict | bytes, *, clients: int = 8,
                 flooders: int = 1, path: str = "/recommend", flood_path: str = "/recommend/batch",
                 head_start_s: float = 0.5) -> dict:
    """Light clients' latency alone, then the same requests while ``flooders`` clients loop ``flood_body``.

    Returns {"alone": {...}, "beside_flood": {...}, "flood": {...}} with p50/p99 in ms, errors and statuses.
    """
    alone = run_load(url, bodies, clients=clients)
    beside, flood_statuses = asyncio.run(_beside_flood(url, bodies, clients, path, flood_body, flood_path, flooders,
                                                       head_start_s))
    flood_bytes = len(flood_body if isinstance(flood_body, bytes) else json.dumps(flood_body).encode())

    def figures(r: LoadResult) -> dict:
        return {"requests": r.n_requests, "p50_ms": round(r.percentile_ms(50), 2),
                "p99_ms": round(r.percentile_ms(99), 2),
                "errors": r.n_errors, "statuses": {str(k): v for k, v in sorted(r.statuses.items())}}

    return {"light_clients": clients, "alone": figures(alone), "beside_flood": figures(beside),
            "flood": {"clients": flooders, "body_kb": round(flood_bytes / 1024, 1),
                      "requests": sum(flood_statuses.values()),
                      "statuses": {str(k): v for k, v in sorted(flood_statuses.items())}}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="POST one /recommend body from N keep-alive clients and print "
                                                 "latency percentiles (loopback benchmarking).")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL (default: %(default)s)")
    parser.add_argument("--history", required=True, help="comma-separated source item ids of the request's history")
    parser.add_argument("--k", type=int, default=10, help="items per request (default: %(default)s)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent keep-alive clients (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=1000, help="requests in all (default: %(default)s)")
    parser.add_argument("--flood-queries", type=int, default=0,
                        help="if > 0: run again beside one client looping /recommend/batch with this many queries")
    a = parser.parse_args(argv)
    body = {"history": a.history.split(","), "k": a.k}
    if a.flood_queries:
        print(json.dumps(flood_figure(a.url, [body] * a.requests, {"requests": [body] * a.flood_queries},
                                      clients=a.clients), indent=2))
        return
    r = run_load(a.url, [body] * a.requests, clients=a.clients)
    print(f"{r.requests_per_s:.0f} req/s, p50 {r.percentile_ms(50):.2f} ms, p99 {r.percentile_ms(99):.2f} ms, "
          f"statuses {dict(r.statuses)}")


if __name__ == "__main__":
    main()
