"""Prometheus metrics of the server (GET /metrics), in a registry per app.

A registry per app (not the global default) lets tests build several apps in one process.
With --workers N the workers write their values to files in PROMETHEUS_MULTIPROC_DIR (set by
`serve` before they start) and every scrape sums all workers, whichever one answers it.
"""

from __future__ import annotations

import os

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               disable_created_metrics, generate_latest)
from prometheus_client.multiprocess import MultiProcessCollector

disable_created_metrics()   # no `*_created` timestamp series: they double the output and nobody graphs them

LATENCY_BUCKETS = (.002, .005, .01, .02, .05, .1, .2, .5, 1.0, 2.0, 5.0, 10.0, 30.0)   # seconds
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)                                      # queries per pass
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"   # prometheus-client's switch to file-backed, summed values


class ServerMetrics:
    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        r = self.registry = CollectorRegistry()
        self.requests = Counter("genrec_http_requests", "HTTP requests answered, by route template, method and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("genrec_http_request_duration_seconds",
                                 "time from request arrival to response, by route",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("genrec_http_requests_in_flight", "requests being read, queued, decoded or answered",
                               registry=r, multiprocess_mode="livesum")
        self.queries = Counter("genrec_queries", "queries decoded by the model", registry=r)
        self.batch_size = Histogram("genrec_batch_queries", "queries decoded together in one pass",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("genrec_batch_duration_seconds", "time of one decode pass",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.queue_queries = Gauge("genrec_queue_queries", "queries waiting for the model", registry=r,
                                   multiprocess_mode="livesum")
        self.queue_requests = Gauge("genrec_queue_requests", "requests with queries waiting for the model", registry=r,
                                    multiprocess_mode="livesum")
        self.shed = Counter("genrec_shed_requests", "requests refused with 503 to protect latency, by reason "
                            "(queue_full, connection_limit)", ["reason"], registry=r)
        self.dropped = Counter("genrec_dropped_queries", "queued queries dropped before decoding, by reason "
                               "(client_gone, deadline, error, shutdown)", ["reason"], registry=r)
        self.client_gone = Counter("genrec_client_disconnects", "requests whose client left before the response",
                                   registry=r)
        self.connections = Gauge("genrec_connections_open", "open client connections", registry=r,
                                 multiprocess_mode="livesum")
        self.closed = Counter("genrec_connections_closed", "connections the server closed, by reason (header_timeout, "
                              "body_timeout, connection_limit, url_too_long, headers_too_large, bad_request)",
                              ["reason"], registry=r)
        self.reloads = Counter("genrec_reloads", "export reloads (SIGHUP or --watch), by result (ok, failed)",
                               ["result"], registry=r)

        # Known label values start at 0, so a scrape shows every series before its first event.
        for reason in ("queue_full", "connection_limit"):
            self.shed.labels(reason)
        for reason in ("client_gone", "deadline", "error", "shutdown"):
            self.dropped.labels(reason)
        for reason in ("header_timeout", "body_timeout", "connection_limit", "url_too_long", "headers_too_large",
                       "bad_request"):
            self.closed.labels(reason)
        for result in ("ok", "failed"):
            self.reloads.labels(result)

    def exposition(self) -> tuple[bytes, str]:
        """(body, content type) of the Prometheus text format."""
        if not self.multiprocess:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        merged = CollectorRegistry()
        MultiProcessCollector(merged)          # every worker's files, summed
        return generate_latest(merged), CONTENT_TYPE_LATEST
