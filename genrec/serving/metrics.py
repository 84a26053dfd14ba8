"""Prometheus metrics of one server process (GET /metrics), in a registry of its own.

A registry per app (not the global default) lets tests build several apps in one process.
With --workers N each worker counts its own traffic: a scrape reads the worker that answered.
"""

from __future__ import annotations

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics,
                               generate_latest)

disable_created_metrics()   # no `*_created` timestamp series: they double the output and nobody graphs them

LATENCY_BUCKETS = (.002, .005, .01, .02, .05, .1, .2, .5, 1.0, 2.0, 5.0, 10.0, 30.0)   # seconds
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)                                      # queries per pass


class ServerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("genrec_http_requests", "HTTP requests answered, by route template, method and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("genrec_http_request_duration_seconds", "time from request arrival to response, by route",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("genrec_http_requests_in_flight", "requests being read, queued, decoded or answered",
                               registry=r)
        self.queries = Counter("genrec_queries", "queries decoded by the model", registry=r)
        self.batch_size = Histogram("genrec_batch_queries", "queries decoded together in one pass",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("genrec_batch_duration_seconds", "time of one decode pass",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.queue_queries = Gauge("genrec_queue_queries", "queries waiting for the model", registry=r)
        self.queue_requests = Gauge("genrec_queue_requests", "requests with queries waiting for the model", registry=r)
        self.shed = Counter("genrec_shed_requests", "requests refused with 503 to protect latency, by reason "
                            "(queue_full, connection_limit)", ["reason"], registry=r)
        self.dropped = Counter("genrec_dropped_queries", "queued queries dropped before decoding, by reason "
                               "(client_gone, deadline, error, shutdown)", ["reason"], registry=r)
        self.client_gone = Counter("genrec_client_disconnects", "requests whose client left before the response",
                                   registry=r)
        self.connections = Gauge("genrec_connections_open", "open client connections", registry=r)
        self.closed = Counter("genrec_connections_closed", "connections the server closed, by reason (header_timeout, "
                              "body_timeout, connection_limit, url_too_long, headers_too_large, bad_request)",
                              ["reason"], registry=r)

        # Known label values start at 0, so a scrape shows every series before its first event.
        for reason in ("queue_full", "connection_limit"):
            self.shed.labels(reason)
        for reason in ("client_gone", "deadline", "error", "shutdown"):
            self.dropped.labels(reason)
        for reason in ("header_timeout", "body_timeout", "connection_limit", "url_too_long", "headers_too_large",
                       "bad_request"):
            self.closed.labels(reason)

    def exposition(self) -> tuple[bytes, str]:
        """(body, content type) of the Prometheus text format."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
