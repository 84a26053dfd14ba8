"""The real server (serve.py, uvicorn, loopback) on the tiny export: endpoints, validation, fuzz, load, no torch."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genrec.serving.runtime import ExportRuntime

from .live import REPO, running_server
from tiny import MAX_ITEMS, N_ITEMS, source_ids

sys.path.insert(0, str(REPO / "bench"))
from loadgen import run_load  # noqa: E402

LOAD_CLIENTS = 32          # concurrent clients in the load tests


@pytest.fixture(scope="module")
def server(tiny_export, tmp_path_factory):
    """`python serve.py --export DIR --port 0` in a subprocess; yields (base url, log file, process)."""
    log_path = tmp_path_factory.mktemp("serve") / "server.log"
    with running_server(tiny_export[0], log_path, "--log-level", "info", "--batch-wait-ms", "2") as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[0], timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def runtime(tiny_export):
    return ExportRuntime(tiny_export[0])


IDS = source_ids()


# ---------------------------------------------------------------------- endpoints
def test_every_endpoint(client, runtime):
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["n_items"] == N_ITEMS

    meta = client.get("/metadata").json()
    assert (meta["n_items"] == N_ITEMS
            and meta["semantic_id"] == {"n_levels": 4, "level_sizes": [5, 7, 11, 3], "level_weights": None})
    assert meta["arch"] == "causal" and meta["name"] == "tiny" and meta["versions"]["onnxruntime"]
    assert meta["decoding"] == "beam"
    assert meta["max_items"] == MAX_ITEMS and meta["server"]["max_k"] == N_ITEMS

    history = [IDS[4], IDS[30], IDS[11]]
    r = client.post("/recommend", json={"history": history, "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = runtime.recommend([[4, 30, 11]], 5)
    assert [it["item_id"] for it in body["items"]] == [IDS[i] for i in expected.items[0]]
    assert [it["score"] for it in body["items"]] == pytest.approx(expected.scores[0].tolist(), abs=1e-5)
    assert all(it["title"] == runtime.titles[IDS.index(it["item_id"])] for it in body["items"])
    assert not set(history) & {it["item_id"] for it in body["items"]}      # exclude_history defaults to true
    assert body["unknown_history_items"] == [] and body["history_used"] == 3 and body["history_truncated"] is False

    batch = client.post("/recommend/batch",
                        json={"requests": [{"history": history, "k": 5},
                                           {"history": [IDS[1]], "k": 2, "exclude_history": False}]})
    assert batch.status_code == 200, batch.text
    first, second = batch.json()["results"]
    # Same answer as POST /recommend; scores may move in the last float32 bits with the batch's size.
    assert [it["item_id"] for it in first["items"]] == [it["item_id"] for it in body["items"]]
    assert [it["score"] for it in first["items"]] == pytest.approx([it["score"] for it in body["items"]], abs=1e-5)
    assert len(second["items"]) == 2

    assert client.get("/openapi.json").json()["paths"].keys() >= {
        "/recommend", "/recommend/batch", "/health", "/metadata"}
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_candidates_and_numeric_ids(client, runtime):
    r = client.post("/recommend", json={"history": [IDS[3]], "k": 3, "candidates": [IDS[0], IDS[3], IDS[9], "nope"]})
    body = r.json()
    assert r.status_code == 200 and {it["item_id"] for it in body["items"]} <= {IDS[0], IDS[9]}
    assert body["unknown_candidate_items"] == ["nope"] and len(body["items"]) == 2
    assert any("only 2 of k=3" in w for w in body["warnings"])
    r = client.post("/recommend", json={"history": [12345], "k": 1})   # numbers are read as their string form
    assert r.status_code == 422 and "'12345'" in r.json()["error"]


def test_unknown_ids_are_skipped_and_long_histories_truncated(client, runtime):
    known = [2, 8, 15, 21, 26, 30, 33, 35, 1]                              # 9 known items > max_items (6)
    history = ["ghost-1"] + [IDS[i] for i in known[:4]] + ["ghost-2"] + [IDS[i] for i in known[4:]]
    r = client.post("/recommend", json={"history": history, "k": 10})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["unknown_history_items"] == ["ghost-1", "ghost-2"]
    assert body["history_truncated"] is True and body["history_used"] == MAX_ITEMS
    assert any("most recent 6" in w for w in body["warnings"]) and any("2 history ids" in w for w in body["warnings"])
    expected = runtime.recommend([known], 10)                               # the whole known history is excluded
    assert [it["item_id"] for it in body["items"]] == [IDS[i] for i in expected.items[0]]
    assert not {IDS[i] for i in known} & {it["item_id"] for it in body["items"]}


# ---------------------------------------------------------------------- validation
BAD = [
    ({"history": []}, 422, "history: is empty"),
    ({"history": [IDS[1]], "k": 0}, 422, "k: must be >= 1"),
    ({"history": [IDS[1]], "k": -3}, 422, "k: must be >= 1"),
    ({"history": [IDS[1]], "k": N_ITEMS + 1}, 422, f"k={N_ITEMS + 1} is too large: the catalogue has {N_ITEMS} items"),
    ({"history": [IDS[1]], "k": "ten"}, 422, "k: must be a JSON integer"),
    ({"history": [IDS[1]], "k": 2.5}, 422, "k: must be a JSON integer"),
    ({"history": IDS[1]}, 422, "history: must be a JSON list"),
    ({"history": [IDS[1], None]}, 422, "history[1]: must be a source item id"),
    ({"history": ["nope", "nada"]}, 422, "none of its 2 ids are in this model's catalogue"),
    ({"history": [IDS[1]], "candidates": ["nope"]}, 422, "candidates: none of its 1 ids"),
    ({"history": [IDS[1]], "candidates": []}, 422, "candidates: is empty"),
    ({"history": [IDS[1]], "exclude_history": "yes"}, 422, "exclude_history: must be true or false"),
    ({"histroy": [IDS[1]]}, 422, "histroy: unknown field"),
    ({}, 422, "history: required field is missing"),
    ([IDS[1]], 422, "body: must be a JSON object"),
    ({"history": ["x"] * 1001}, 422, "send at most 1000"),
]


@pytest.mark.parametrize("body,status,message", BAD, ids=[m for _, _, m in BAD])
def test_invalid_requests_say_what_to_fix(client, body, status, message):
    r = client.post("/recommend", json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_malformed_transport(client):
    r = client.post("/recommend", content=b'{"history": [', headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = client.post("/recommend", content=b'{"history": ["SKU-001"]}', headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["error"]
    r = client.post("/recommend", content=b"[" * 200_000, headers={"content-type": "application/json"})
    assert r.status_code == 400                                              # too deep for the JSON parser
    r = client.post("/recommend", content=b"x" * (2 << 20), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "larger than" in r.json()["error"]
    assert client.get("/recommend").status_code == 405
    assert client.get("/nowhere").json()["error"].startswith("unknown path")


def test_batch_validation_names_the_request(client):
    r = client.post("/recommend/batch", json={"requests": [{"history": [IDS[1]]}, {"history": [IDS[2]], "k": 99}]})
    assert r.status_code == 422 and r.json()["error"].startswith("requests[1].k=99 is too large")
    r = client.post("/recommend/batch", json={"requests": []})
    assert r.status_code == 422 and "requests: is empty" in r.json()["error"]
    r = client.post("/recommend/batch", json={"requests": [{"history": [IDS[1]]}] * 257})
    assert r.status_code == 422 and "at most 256" in r.json()["error"]


# ---------------------------------------------------------------------- fuzz
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=25)
IDS_OR_JUNK = st.lists(st.sampled_from(IDS[:5] + ["nope", "", "SKU-"]) | st.integers(-3, 40) | JSON_VALUES, max_size=12)
SHAPED = st.fixed_dictionaries({"history": IDS_OR_JUNK | JSON_VALUES}, optional={
    "k": st.integers(-5, 60) | JSON_VALUES, "exclude_history": st.booleans() | JSON_VALUES,
    "candidates": IDS_OR_JUNK | st.none() | JSON_VALUES, "extra": JSON_VALUES})


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(body=st.one_of(SHAPED, JSON_VALUES, st.binary(max_size=64)), batch=st.booleans())
def test_fuzz_never_5xx(client, body, batch):
    if isinstance(body, bytes):
        content = body
    else:
        content = json.dumps({"requests": [body, body]} if batch else body).encode()   # NaN/Infinity stay in
    r = client.post("/recommend/batch" if batch else "/recommend", content=content,
                    headers={"content-type": "application/json"})
    assert 200 <= r.status_code < 500, r.text
    if r.status_code >= 400:
        assert r.json()["error"]                                            # every error says something


def test_server_survived_the_fuzz(client, server):
    assert server[2].poll() is None
    assert client.get("/health").json()["status"] == "ok"


# ---------------------------------------------------------------------- concurrency
async def _fire(url: str, bodies: list[dict], clients: int) -> list[httpx.Response]:
    """Send ``bodies`` from ``clients`` concurrent keep-alive connections; responses in body order."""
    results: list[httpx.Response | None] = [None] * len(bodies)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:
        async def worker(start: int):
            for i in range(start, len(bodies), clients):
                results[i] = await c.post("/recommend", json=bodies[i])
        await asyncio.gather(*(worker(s) for s in range(clients)))
    return results


def test_concurrent_requests_are_micro_batched_with_the_same_answers(client, server):
    bodies = [{"history": [IDS[(7 * i + j) % N_ITEMS] for j in range(1 + i % 5)], "k": 1 + i % 10,
               "exclude_history": i % 3 > 0} for i in range(48)]
    alone = [client.post("/recommend", json=b).json() for b in bodies]
    before = client.get("/health").json()
    together = asyncio.run(_fire(server[0], bodies, clients=24))
    after = client.get("/health").json()
    assert all(r.status_code == 200 for r in together)
    for a, t in zip(alone, together):
        t = t.json()
        assert [i["item_id"] for i in a["items"]] == [i["item_id"] for i in t["items"]]
        assert [i["score"] for i in a["items"]] == pytest.approx([i["score"] for i in t["items"]], abs=1e-5)
    queries, batches = after["queries_served"] - before["queries_served"], after["batches"] - before["batches"]
    assert queries == len(bodies) and batches < queries, "concurrent requests should share batches"


def test_load_no_errors(server):
    """A bounded load test; bench/serve.py runs the issue's 20,000-request version and reports req/s."""
    n = 2000
    bodies = [{"history": [IDS[(i + j) % N_ITEMS] for j in range(1 + i % 9)], "k": 10} for i in range(n)]
    result = run_load(server[0], bodies, clients=LOAD_CLIENTS, keep_bodies=True)
    assert result.statuses == {200: n}, result.statuses
    assert all(len(json.loads(b)["items"]) == 10 for b in result.bodies)
    assert server[2].poll() is None
    print(f"{n} requests from {LOAD_CLIENTS} clients: {result.requests_per_s:.0f} req/s, 0 errors")


# ---------------------------------------------------------------------- ops
def test_one_structured_log_line_per_request(client, server):
    marker = {"history": [IDS[5], "log-marker-ghost"], "k": 4}
    n_before = _request_lines(server[1])
    client.post("/recommend", json=marker)
    client.post("/recommend", json={"history": []})
    deadline = time.time() + 5
    while len(_request_lines(server[1])) < len(n_before) + 2 and time.time() < deadline:
        time.sleep(0.05)
    new = _request_lines(server[1])[len(n_before):]
    assert len(new) == 2
    ok, bad = new
    assert ok["path"] == "/recommend" and ok["status"] == 200 and ok["k"] == 4 and ok["n_unknown"] == 1
    assert ok["ms"] > 0 and ok["batch"] >= 1 and ok["level"] == "info" and "ts" in ok
    assert bad["status"] == 422 and "history: is empty" in bad["error"]


def _request_lines(path: Path) -> list[dict]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == "request" and record.get("path") == "/recommend":
                lines.append(record)
    return lines


NO_TORCH = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = {"torch", "transformers", "lightning", "torchvision", "polars", "onnx", "genrec.lit", "genrec.model"}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name in BLOCKED or name.split(".")[0] in BLOCKED or ".".join(name.split(".")[:2]) in BLOCKED:
                raise ImportError(f"the serving path imported {name}")
            return None

    sys.meta_path.insert(0, Block())
    import uvicorn
    from fastapi.testclient import TestClient
    from genrec.serving.app import create_app
    from genrec.serving.runtime import ExportRuntime

    app = create_app(ExportRuntime(sys.argv[1]))
    with TestClient(app) as client:
        r = client.post("/recommend", json={"history": ["SKU-001", "SKU-002"], "k": 3})
        assert r.status_code == 200 and len(r.json()["items"]) == 3, r.text
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not leaked, leaked
    print("served without torch")
""")


@pytest.mark.parametrize("which", ["tiny_export", "tiger_export", "rerank_export"])
def test_serving_path_never_imports_torch(which, request):
    folder = request.getfixturevalue(which)[0]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, str(folder)], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "served without torch" in proc.stdout


def test_serve_cli(capsys, tmp_path):
    """Every ServeConfig field is a flag whose help is the field's comment (genrec.config.add_config_args)."""
    import argparse
    import dataclasses

    from genrec.cli import main
    from genrec.serving.app import add_serve_args, serve_from_args
    from genrec.serving.config import ServeConfig

    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for f in dataclasses.fields(ServeConfig):
        assert f"--{f.name.replace('_', '-')}" in text
    assert "compute deadline from arrival" in text and "(default: 1024)" in text   # comment + default
    parser = argparse.ArgumentParser()
    add_serve_args(parser)
    with pytest.raises(SystemExit, match="--export is required"):
        serve_from_args(parser.parse_args([]))
    with pytest.raises(SystemExit, match="missing does not exist"):
        serve_from_args(parser.parse_args(["--export", str(tmp_path / "missing")]))
    with pytest.raises(SystemExit, match="max_batch must be >= 1"):
        serve_from_args(parser.parse_args(["--export", str(tmp_path), "--max-batch", "0"]))
    with pytest.raises(SystemExit, match="max_queued_queries .* must be >= max_batch_requests"):
        serve_from_args(parser.parse_args(["--export", str(tmp_path), "--max-queued-queries", "10"]))
