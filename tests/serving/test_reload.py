"""Server reload: SIGHUP or --watch swaps in a new export (e.g. after `genrec add-items --in-place`) without
failing a request; a folder that cannot be loaded leaves the old export serving."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from addable import NEW_ITEMS, build_addable_export, write_jsonl
from fastapi.testclient import TestClient

from genrec.catalog.add import AddItemsConfig, add_items
from genrec.io import publish_folder
from genrec.serving.app import _on_sighup, create_app
from genrec.serving.batching import Job, _decode_pinned
from genrec.serving.config import ServeConfig
from genrec.serving.runtime import ExportRuntime, Query, recommend_queries

from .live import running_server

RELOAD_TIMEOUT_S = 120     # generous: a loaded 2-core machine exports and loads slowly


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """(base export with 37 items, the same with NEW_ITEMS added: 41 items)."""
    tmp = tmp_path_factory.mktemp("reload")
    base, _ = build_addable_export(tmp / "base")
    add_items(base, write_jsonl(tmp / "new.jsonl", NEW_ITEMS), tmp / "grown", AddItemsConfig(parity_check=False))
    return base, tmp / "grown"


def replace(folder: Path, new: Path) -> None:
    """Put a copy of ``new`` in place of ``folder`` the way add-items --in-place does (temporary sibling + rename)."""
    tmp = folder.parent / f".{folder.name}.copy"
    shutil.copytree(new, tmp)
    publish_folder(tmp, folder)


def recommend_new(client, **kw):
    return client.post("/recommend", json={"history": ["SKU-001", "NEW-2"], "k": 2, "candidates": ["NEW-1", "NEW-3"]},
                       **kw)


def test_reload_swaps_in_the_new_export(exports, tmp_path):
    base, grown = exports
    live = tmp_path / "live"
    shutil.copytree(base, live)
    app = create_app(ExportRuntime(live), ServeConfig(export=live))
    with TestClient(app) as client:
        before = client.get("/health").json()
        assert before["export"]["n_items"] == 37 and before["reloads"] == 0
        assert recommend_new(client).status_code == 422               # the new ids are unknown so far
        replace(live, grown)
        assert client.portal.call(app.state.reloader.reload, "sighup") is True
        after = client.get("/health").json()
        assert after["export"]["n_items"] == 41 and after["reloads"] == 1
        assert after["export"]["manifest_sha256"] != before["export"]["manifest_sha256"]
        assert client.get("/readyz").headers["X-Genrec-Export"] == after["export"]["manifest_sha256"][:12]
        r = recommend_new(client)
        assert r.status_code == 200 and sorted(i["item_id"] for i in r.json()["items"]) == ["NEW-1", "NEW-3"]
        assert client.get("/items", params={"id": "NEW-2"}).json()["items"][0]["title"] == "recycled notebook pack"
        assert 'genrec_reloads_total{result="ok"} 1.0' in client.get("/metrics").text


def test_failed_reload_keeps_serving_the_old_export(exports, tmp_path):
    base, grown = exports
    live = tmp_path / "live"
    shutil.copytree(base, live)
    app = create_app(ExportRuntime(live), ServeConfig(export=live))
    with TestClient(app) as client:
        before = client.get("/health").json()["export"]
        replace(live, grown)
        with open(live / "codes.npy", "r+b") as f:     # a file no longer matching its checksum
            f.seek(-8, os.SEEK_END)
            f.write(b"\xff" * 8)
        reloader = app.state.reloader
        assert reloader.changed() is not None
        assert client.portal.call(reloader.reload, "watch") is False
        assert client.get("/health").json()["export"] == before
        r = client.post("/recommend", json={"history": ["SKU-001"], "k": 3})
        assert r.status_code == 200 and len(r.json()["items"]) == 3
        assert 'genrec_reloads_total{result="failed"} 1.0' in client.get("/metrics").text


def test_queued_queries_decode_with_the_export_they_were_mapped_with(exports):
    """The batcher decodes each job with its own runtime, so requests in flight at a swap finish on the old one."""
    old, new = ExportRuntime(exports[0]), ExportRuntime(exports[1])
    loop = asyncio.new_event_loop()
    try:
        jobs = [Job([Query(history=[1, 2], k=5), Query(history=[30], k=3)], 0.0, loop.create_future(), runtime=rt)
                for rt in (old, new, old)]
    finally:
        loop.close()
    picked = [(jobs[0], 0), (jobs[1], 0), (jobs[2], 1), (jobs[1], 1)]
    got = _decode_pinned(picked)
    for (job, i), result in zip(picked, got):
        (expected,) = recommend_queries(job.runtime, [job.queries[i]])
        assert result[0] == expected[0]                             # same items (scores up to batching round-off)
        np.testing.assert_allclose(result[1], expected[1], rtol=1e-5, atol=1e-5)
    # and the two exports do differ here: the new one may rank a new item
    assert recommend_queries(new, [Query(history=[37, 38], k=3)])[0][0]


def test_sighup_handler_triggers_a_reload():
    calls = []

    class Recorder:
        async def reload(self, trigger):
            calls.append(trigger)

    loop = asyncio.new_event_loop()
    try:
        assert _on_sighup(loop, Recorder())      # main thread: the handler is installed (else SIGHUP would kill us)
        os.kill(os.getpid(), signal.SIGHUP)
        loop.run_until_complete(asyncio.sleep(0.2))
        loop.remove_signal_handler(signal.SIGHUP)
    finally:
        loop.close()
    assert calls == ["sighup"]


def test_watch_swaps_an_in_place_add_without_failing_requests(exports, tmp_path):
    """`serve --watch` + `genrec add-items --in-place` while clients keep sending requests."""
    base, _ = exports
    live = tmp_path / "live"
    shutil.copytree(base, live)
    source = write_jsonl(tmp_path / "new.jsonl", NEW_ITEMS)
    with running_server(live, tmp_path / "server.log", "--watch", "--watch-interval-s", "0.3") as (url, log, _):
        statuses: list[int] = []
        stop = threading.Event()

        def client_loop():
            with httpx.Client(base_url=url, timeout=60) as c:
                while not stop.is_set():
                    statuses.append(c.post("/recommend", json={"history": ["SKU-001", "SKU-004"], "k": 5}).status_code)

        threads = [threading.Thread(target=client_loop) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            add_items(live, source, None, AddItemsConfig(parity_check=False))      # --in-place
            deadline = time.time() + RELOAD_TIMEOUT_S
            while httpx.get(url + "/health", timeout=30).json()["export"]["n_items"] != 41:
                assert time.time() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            n_at_swap = len(statuses)
            time.sleep(1.0)
        finally:
            stop.set()
            for t in threads:
                t.join()
        with httpx.Client(base_url=url, timeout=60) as c:
            r = recommend_new(c)
        assert r.status_code == 200 and sorted(i["item_id"] for i in r.json()["items"]) == ["NEW-1", "NEW-3"]
        assert statuses and set(statuses) == {200}, f"{len(statuses)} requests: {sorted(set(statuses))}"
        assert len(statuses) > n_at_swap          # requests kept flowing after the swap
        events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        reloaded = [e for e in events if e.get("event") == "reloaded"]
        assert len(reloaded) == 1 and reloaded[0]["trigger"] == "watch" and reloaded[0]["n_items"] == 41
        assert not [e for e in events if e.get("event") == "reload failed"]
    np.testing.assert_array_equal(np.load(live / "codes.npy")[:37], np.load(base / "codes.npy"))
