"""The server's one typed config; `python serve.py` / `genrec serve` flags come from its fields.

Each field's trailing comment is its --help text (genrec.config.add_config_args), so a flag
and its documentation cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
DECODINGS = ("auto", "beam")          # ServeConfig/RuntimeConfig.decoding (here: this module imports no onnxruntime)


@dataclass
class ServeConfig:
    export: Path | None = None          # export folder written by `genrec export` (required)
    host: str = "127.0.0.1"             # interface to bind (loopback by default; 0.0.0.0 exposes it)
    port: int = 8000                    # TCP port (0 = any free port)
    workers: int = 1                    # server processes sharing the port, each with its own model and micro-batcher
    intra_op_threads: int = 1           # onnxruntime threads inside one operator
    inter_op_threads: int = 1           # onnxruntime threads across independent operators
    decoding: str = "auto"              # "auto": the export's (exact scoring for a parallel head); "beam": trie beam
                                        # search instead (approximate top-k, cost flat in catalogue size)
    max_batch: int = 8                  # most queries per decode pass: a small request waits for at most the
                                        # pass already running, so short passes bound its tail latency
    batch_wait_ms: float = 2.0          # longest a pass waits for requests that are already arriving (ms)
    max_queued_queries: int = 1024      # queries waiting for the model, all requests together; more gets
                                        # 503 + Retry-After
    request_timeout_s: float = 10.0     # compute deadline from arrival; a request not answered by then gets 504
    max_k: int = 100                    # largest k a request may ask for (also capped by the catalogue size)
    max_history: int = 1000             # most ids in one history or candidate list (longer: 422)
    max_batch_requests: int = 256       # most requests in one POST /recommend/batch
    max_body_bytes: int = 1 << 20       # larger request bodies get 413 (at once when Content-Length says so)
    max_header_bytes: int = 16384       # request line + headers; a longer URL gets 414, longer headers 431
    max_connections: int = 1000         # open connections; more are answered 503 and closed (keep it under `ulimit -n`)
    header_timeout_s: float = 10.0      # a connection that has not sent a whole request head within this is
                                        # closed (408)
    body_timeout_s: float = 10.0        # a request body not received within this gets 408 and the connection closes
    keep_alive_s: float = 5.0           # an idle keep-alive connection is closed after this
    shutdown_timeout_s: float = 30.0    # on SIGTERM/SIGINT: stop accepting, let in-flight requests finish for this long
    log_level: str = "info"             # info logs one JSON line per request; warning keeps only problems
    watch: bool = False                 # poll EXPORT/manifest.json and serve a new export once it changes (`--watch`
                                        # alone = true); SIGHUP reloads either way
    watch_interval_s: float = 2.0       # seconds between two --watch checks of the manifest

    def __post_init__(self):
        if self.export is not None:
            self.export = Path(self.export)
        for name in ("workers", "intra_op_threads", "inter_op_threads", "max_batch", "max_queued_queries", "max_k",
                     "max_history", "max_batch_requests", "max_body_bytes", "max_header_bytes", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("request_timeout_s", "header_timeout_s", "body_timeout_s", "keep_alive_s", "watch_interval_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if self.batch_wait_ms < 0 or self.shutdown_timeout_s < 0:
            raise ValueError(f"batch_wait_ms and shutdown_timeout_s must be >= 0, got {self.batch_wait_ms} and "
                             f"{self.shutdown_timeout_s}")
        if self.max_queued_queries < self.max_batch_requests:
            raise ValueError(f"max_queued_queries ({self.max_queued_queries}) must be >= max_batch_requests "
                             f"({self.max_batch_requests}), or a full batch request could never be queued")
        if self.max_header_bytes < 1024:
            raise ValueError(f"max_header_bytes must be >= 1024 (a normal request head), got {self.max_header_bytes}")
        if self.decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {', '.join(DECODINGS)}, got {self.decoding!r}")
        if self.log_level.lower() not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
