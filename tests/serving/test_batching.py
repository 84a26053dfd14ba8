"""FairBatcher without HTTP: round-robin shares, cancellation, deadlines and the bounded queue.

Decoding is replaced by a recorder whose passes can be held open, so each test controls exactly
which requests are queued while a pass runs (no timing involved).
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from genrec.serving import batching
from genrec.serving.batching import FairBatcher
from genrec.serving.metrics import ServerMetrics
from genrec.serving.runtime import Query
from genrec.serving.schemas import ApiError

FAR = 1e9   # a deadline that never passes


class Recorder:
    """Stands in for recommend_queries: records each pass (as query k values) and can hold one open."""

    def __init__(self):
        self.passes: list[list[int]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()

    def __call__(self, runtime, queries):
        self.passes.append([q.k for q in queries])
        self.entered.set()
        self.hold.wait(10)
        return [([q.k], [0.0]) for q in queries]


@pytest.fixture
def recorder(monkeypatch):
    rec = Recorder()
    monkeypatch.setattr(batching, "recommend_queries", rec)
    return rec


def queries(k: int, n: int) -> list[Query]:
    """n queries tagged with k, so a pass shows whose queries it held."""
    return [Query(history=[1], k=k) for _ in range(n)]


def make(max_batch=8, max_queued=100) -> FairBatcher:
    b = FairBatcher(runtime=None, max_batch=max_batch, wait_ms=0, max_queued=max_queued, metrics=ServerMetrics())
    b.start()
    return b


async def hold_first_pass(b: FairBatcher, rec: Recorder) -> asyncio.Task:
    """Start a one-query job and keep its pass running until rec.hold is set."""
    rec.hold.clear()
    task = asyncio.create_task(b.submit(queries(99, 1), FAR))
    await asyncio.get_running_loop().run_in_executor(None, rec.entered.wait, 5)
    return task


def test_small_requests_ride_the_next_pass_beside_a_large_one(recorder):
    async def main():
        b = make(max_batch=8)
        first = await hold_first_pass(b, recorder)
        heavy = asyncio.create_task(b.submit(queries(1, 40), FAR))      # a 40-query batch request
        await asyncio.sleep(0)
        light = [asyncio.create_task(b.submit(queries(2 + i, 1), FAR)) for i in range(3)]
        await asyncio.sleep(0)
        recorder.hold.set()
        results = await asyncio.gather(first, heavy, *light)
        await b.stop()
        return results

    results = asyncio.run(main())
    second = recorder.passes[1]
    # share = ceil(8 / 4 jobs) = 2: the heavy job gets 2 of this pass, each light request its one query
    assert sorted(second) == [1, 1, 2, 3, 4]
    assert all(len(p) <= 8 for p in recorder.passes)
    assert sum(len(p) for p in recorder.passes) == 1 + 40 + 3
    assert [r[0].passes for r in results[2:]] == [2, 2, 2]       # the running pass, then their own
    assert results[1][-1].passes == len(recorder.passes)          # the heavy one waited for all the rest


def test_a_request_alone_fills_whole_passes(recorder):
    async def main():
        b = make(max_batch=8)
        await b.submit(queries(1, 20), FAR)
        await b.stop()

    asyncio.run(main())
    assert [len(p) for p in recorder.passes] == [8, 8, 4]


def test_a_cancelled_request_drops_its_waiting_queries(recorder):
    async def main():
        b = make(max_batch=4)
        first = await hold_first_pass(b, recorder)
        gone = asyncio.create_task(b.submit(queries(7, 30), FAR))     # its client will disconnect
        await asyncio.sleep(0)
        assert b.queued == 30
        gone.cancel()
        await asyncio.sleep(0)
        recorder.hold.set()
        await first
        await b.stop()
        return b

    b = asyncio.run(main())
    assert 7 not in sum(recorder.passes, [])                        # not one of its queries was decoded
    assert b.queued == 0
    assert b.metrics.registry.get_sample_value("genrec_dropped_queries_total", {"reason": "client_gone"}) == 30


def test_deadline_gives_504_and_skips_the_work(recorder):
    async def main():
        b = make()
        first = await hold_first_pass(b, recorder)
        late = asyncio.create_task(b.submit(queries(5, 10), asyncio.get_running_loop().time() + 0.05))
        await asyncio.sleep(0.2)
        recorder.hold.set()
        await first
        with pytest.raises(ApiError) as info:
            await late
        await b.stop()
        return info.value

    error = asyncio.run(main())
    assert error.status == 504 and error.code == "deadline_exceeded" and "--request-timeout-s" in error.message
    assert 5 not in sum(recorder.passes, [])


def test_full_queue_sheds_with_retry_after(recorder):
    async def main():
        b = make(max_queued=50)
        first = await hold_first_pass(b, recorder)
        waiting = asyncio.create_task(b.submit(queries(1, 40), FAR))
        await asyncio.sleep(0)
        with pytest.raises(ApiError) as info:
            await b.submit(queries(2, 11), FAR)                     # 40 + 11 > 50
        fits = asyncio.create_task(b.submit(queries(3, 10), FAR))   # 40 + 10 = 50 still fits
        await asyncio.sleep(0)
        recorder.hold.set()
        await asyncio.gather(first, waiting, fits)
        await b.stop()
        return info.value, b

    error, b = asyncio.run(main())
    assert error.status == 503 and error.code == "overloaded"
    assert int(error.headers["Retry-After"]) >= 1
    assert b.metrics.registry.get_sample_value("genrec_shed_requests_total", {"reason": "queue_full"}) == 1
