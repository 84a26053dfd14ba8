"""Fair micro-batching: concurrent requests share decode passes, and no request can starve another.

Each HTTP request submits a :class:`Job` (its queries, one per history). One worker thread
decodes passes of up to ``max_batch`` queries, taken **round-robin, one query per request per
turn, each request at most an equal share of the pass**: a 256-query batch request is decoded in
chunks, and a one-query request that arrives meanwhile rides in the very next (short) pass
instead of waiting behind the whole batch.

Bounded and abandonable:
- at most ``max_queued`` queries wait; a request that would exceed it is refused at once with
  503 and a Retry-After estimated from the measured decode speed (load shedding);
- every job has a deadline: queries still waiting when it passes are dropped and the request
  gets 504;
- a job whose request was cancelled (its client disconnected) drops its waiting queries, so
  abandoned work is never decoded (only the pass already running finishes).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

from genrec.serving.metrics import ServerMetrics
from genrec.serving.runtime import ExportRuntime, Query, recommend_queries
from genrec.serving.schemas import ApiError

log = logging.getLogger("genrec.serving")



class Result(NamedTuple):
    """One decoded query."""

    batch: int            # queries in the pass it ran in
    passes: int           # passes finished between queueing its request and decoding it (its own included)
    items: list[int]      # internal item ids, best first
    scores: list[float]


@dataclass(eq=False)
class Job:
    """One request's queries on their way through the batcher."""

    queries: list[Query]
    deadline: float                    # event-loop time after which waiting queries are dropped (504)
    future: asyncio.Future             # the request's results, set when every query is decoded
    results: list[Result | None] = field(init=False)
    next: int = 0                      # first query not yet taken into a pass
    pending: int = field(init=False)   # queries not yet decoded
    closed: bool = False               # dropped (deadline, client gone, error): nothing more is decoded
    first_pass: int = 0                # batcher.batches when it was queued
    runtime: ExportRuntime | None = None   # the export its ids refer to (a reload swaps the batcher's, not this)

    def __post_init__(self):
        self.results = [None] * len(self.queries)
        self.pending = len(self.queries)

    @property
    def waiting(self) -> int:
        return len(self.queries) - self.next


class FairBatcher:
    """Round-robin micro-batcher over one onnxruntime worker thread.

    A pass waits up to ``wait_ms`` for more work only while other HTTP requests have arrived
    but are not queued yet (``arriving``), so a lone request is never delayed and a burst is
    decoded together.
    """

    _POLL_S = 0.0002          # granularity of the wait window
    _EWMA = 0.2               # weight of the newest pass in the seconds-per-query estimate
    MAX_RETRY_AFTER_S = 60

    def __init__(self, runtime: ExportRuntime, *, max_batch: int, wait_ms: float, max_queued: int,
                 metrics: ServerMetrics):
        self.runtime = runtime
        self.max_batch = max_batch
        self.wait_s = wait_ms / 1000.0
        self.max_queued = max_queued
        self.metrics = metrics
        self.arriving = 0             # recommend requests received but not yet queued (or refused)
        self.queued = 0               # queries of live jobs not yet taken into a pass
        self.batches = 0              # passes decoded so far
        self.queries = 0              # queries decoded so far
        self.seconds_per_query = 0.0  # running estimate, for Retry-After
        self._jobs: deque[Job] = deque()   # jobs with waiting queries, in round-robin order
        self._work: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genrec-infer")

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._work = asyncio.Event()
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="genrec-batcher")

    async def stop(self) -> None:
        """Stop the worker; requests still queued (only after the shutdown grace period) get 503."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        for job in list(self._jobs):
            self._fail(job, ApiError(503, "shutting_down", "the server is shutting down; retry on another instance"),
                       "shutdown")
        self._executor.shutdown(wait=True)

    @property
    def alive(self) -> bool:
        return self._worker is not None and not self._worker.done()

    @property
    def full(self) -> bool:
        return self.queued >= self.max_queued

    def retry_after_s(self) -> int:
        """Seconds until the current queue is likely decoded (at least 1)."""
        estimate = math.ceil(self.queued * self.seconds_per_query) if self.seconds_per_query else 1
        return min(max(1, estimate), self.MAX_RETRY_AFTER_S)

    def overloaded(self, n: int | None = None) -> ApiError:
        """The 503 for a request of ``n`` queries (None: not parsed yet) that the queue cannot take."""
        self.metrics.shed.labels("queue_full").inc()
        wait = self.retry_after_s()
        adds = f", this request adds {n}" if n is not None else ""
        return ApiError(503, "overloaded", f"the server is at capacity ({self.queued} queries queued, limit "
                        f"{self.max_queued}{adds}); retry in {wait} s", headers={"Retry-After": str(wait)})

    # ------------------------------------------------------------------ requests
    async def submit(self, queries: list[Query], deadline: float, runtime: ExportRuntime | None = None) -> list[Result]:
        """Queue ``queries`` and wait for them; one Result per query.

        ``runtime``: the export the queries' ids were mapped with (default: the current one); they are
        decoded with it even if the server reloads meanwhile.

        Raises ApiError 503 when the queue cannot take them and 504 when ``deadline`` (event-loop
        time) passes first. Cancelling the caller (client gone) drops the waiting queries.
        """
        if self.queued + len(queries) > self.max_queued:
            raise self.overloaded(len(queries))
        loop = asyncio.get_running_loop()
        job = Job(queries, deadline, loop.create_future(), first_pass=self.batches, runtime=runtime or self.runtime)
        self._jobs.append(job)
        self.queued += len(queries)
        self._gauges()
        self._work.set()
        try:
            return await asyncio.wait_for(job.future, max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            self._close(job, "deadline")
            raise self._deadline_error(job) from None
        except asyncio.CancelledError:
            self._close(job, "client_gone")
            raise

    def _deadline_error(self, job: Job) -> ApiError:
        done = len(job.queries) - job.pending
        return ApiError(504, "deadline_exceeded", f"not answered within the server's compute deadline "
                        f"(--request-timeout-s; {done} of {len(job.queries)} queries were decoded); "
                        "the server is busy: retry later or send fewer queries per request",
                        headers={"Retry-After": str(self.retry_after_s())})

    def _close(self, job: Job, reason: str) -> None:
        """Drop the job's waiting queries (idempotent)."""
        if job.closed:
            return
        job.closed = True
        dropped = job.waiting
        job.next = len(job.queries)
        if dropped:
            self.queued -= dropped
            self.metrics.dropped.labels(reason).inc(dropped)
        try:
            self._jobs.remove(job)
        except ValueError:
            pass
        self._gauges()

    def _fail(self, job: Job, error: BaseException, reason: str) -> None:
        self._close(job, reason)
        if not job.future.done():
            job.future.set_exception(error)

    def _gauges(self) -> None:
        self.metrics.queue_queries.set(self.queued)
        self.metrics.queue_requests.set(len(self._jobs))

    # ------------------------------------------------------------------ worker
    def _take(self, now: float) -> list[tuple[Job, int]]:
        """The next pass: (job, query index) pairs, one per job per turn, each job at most an equal share.

        The share is max_batch / (jobs waiting): alone, a batch request fills whole passes; beside
        light requests it gets its share and the pass stays short, because a light request waits
        for the pass already running and then its own. Unused shares are not handed to the heavy
        job for the same reason.
        """
        for job in [j for j in self._jobs if j.deadline <= now]:
            self._fail(job, self._deadline_error(job), "deadline")
        if not self._jobs:
            return []
        share = math.ceil(self.max_batch / len(self._jobs))
        taken: dict[Job, int] = {}
        picked: list[tuple[Job, int]] = []
        while self._jobs and len(picked) < self.max_batch:
            job = self._jobs[0]
            if taken.get(job, 0) >= share:
                break                        # every job still waiting has had its share of this pass
            self._jobs.popleft()
            picked.append((job, job.next))
            job.next += 1
            taken[job] = taken.get(job, 0) + 1
            if job.waiting:
                self._jobs.append(job)      # back of the line: everyone else gets a query in first
        self.queued -= len(picked)
        self._gauges()
        return picked

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._work.wait()
            wait_until = loop.time() + self.wait_s
            while self.queued < self.max_batch and self.arriving > 0 and loop.time() < wait_until:
                await asyncio.sleep(self._POLL_S)
            picked = self._take(loop.time())
            if not self._jobs:
                self._work.clear()
            if not picked:
                continue
            start = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, _decode_pinned, picked)
            except Exception as e:  # a bug, not bad input (inputs are validated before queuing)
                log.exception("batch failed", extra={"fields": {"batch": len(picked)}})
                for job in {job for job, _ in picked}:
                    self._fail(job, e, "error")
                continue
            seconds = time.perf_counter() - start
            self._record(len(picked), seconds)
            for (job, i), (items, scores) in zip(picked, results):
                if job.future.done():        # timed out or client gone while this pass ran
                    continue
                job.results[i] = Result(len(picked), self.batches - job.first_pass, items, scores)
                job.pending -= 1
                if job.pending == 0:
                    job.future.set_result(job.results)

    def _record(self, n: int, seconds: float) -> None:
        self.batches += 1
        self.queries += n
        per_query = seconds / n
        self.seconds_per_query = per_query if not self.seconds_per_query else (
            (1 - self._EWMA) * self.seconds_per_query + self._EWMA * per_query)
        self.metrics.queries.inc(n)
        self.metrics.batch_size.observe(n)
        self.metrics.batch_seconds.observe(seconds)


def _decode_pinned(picked: list[tuple[Job, int]]) -> list[tuple[list[int], list[float]]]:
    """recommend_queries per export: queued before a reload, a job is decoded with the export it was mapped with."""
    runtimes: dict[int, ExportRuntime] = {}
    rows: dict[int, list[int]] = {}
    for row, (job, _) in enumerate(picked):
        runtimes[id(job.runtime)] = job.runtime
        rows.setdefault(id(job.runtime), []).append(row)
    out: list = [None] * len(picked)
    for key, members in rows.items():
        results = recommend_queries(runtimes[key], [picked[r][0].queries[picked[r][1]] for r in members])
        for r, result in zip(members, results):
            out[r] = result
    return out
