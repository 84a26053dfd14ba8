"""GET /ui in a real headless Chromium (Debian's package, driven by Playwright), and what the page reads:
/items/search, /items, /items/categories, /items/{id}/image, /codes; items_meta.json in the export.

The export is demo-like: the tiny random model (37 items, codebooks 5/7/11/3) over 37 items of the demo
generator (titles, category paths, pictures, review counts as popularity). Its codes follow the
categories on purpose: digit 0 = top category, digit 1 = leaf within it, so the prefix of two digits is
exactly the leaf (prefix purity 1.0) and shared digits mean something on the page.

`GENREC_UI_SCREENSHOT=docs/ui.png pytest tests/serving/test_ui.py -k chromium` also writes the page's
screenshot there.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from genrec.export import layout
from genrec.explain import code_table, codes_json
from genrec.serving.app import create_app
from genrec.serving.runtime import ExportRuntime

from .live import running_server
from tiny import LEVELS, N_ITEMS, source_ids, tiny_module

CHROMIUM = Path("/usr/bin/chromium")
# As the machine notes say: no background connections (the network is closed), a fresh profile per run.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
BROWSER_TIMEOUT_MS = 60_000    # generous: a loaded 2-core machine
THUMBNAIL = 32                 # thumbnail side of the UI export (the demo pictures are 64 px)


# ---------------------------------------------------------------------- the demo-like export
def demo_like_catalogue(folder: Path) -> dict:
    """N_ITEMS items of the demo generator: ids, titles, category paths, picture files, review counts."""
    from genrec.data.demo import META_FILE, REVIEWS_FILE, DemoConfig, write_demo_source

    source = write_demo_source(folder, config=DemoConfig(n_items=N_ITEMS, n_users=60, n_top_categories=4,
                                                         max_seq_len=12, mean_seq_len=7))
    meta = [json.loads(line) for line in gzip.open(source / META_FILE, "rt", encoding="utf-8")]
    reviews = Counter(json.loads(line)["asin"] for line in gzip.open(source / REVIEWS_FILE, "rt", encoding="utf-8"))
    return {"source_ids": [m["asin"] for m in meta], "titles": [m["title"] for m in meta],
            "paths": [m["category"] for m in meta], "images": [source / m["imageURL"][0] for m in meta],
            "popularity": [reviews[m["asin"]] for m in meta]}


def category_codes(paths: list[list[str]], seed: int = 0) -> np.ndarray:
    """(N, 4) distinct codes: top category, leaf within it, then a random free (digit 2, digit 3) pair."""
    rng = np.random.default_rng(seed)
    tops = sorted({p[1] for p in paths})
    leaves = {top: sorted({p[2] for p in paths if p[1] == top}) for top in tops}
    codes, taken = [], set()
    for p in paths:
        head = (tops.index(p[1]), leaves[p[1]].index(p[2]))
        free = [(a, b) for a in range(LEVELS[2]) for b in range(LEVELS[3]) if (*head, a, b) not in taken]
        tail = free[rng.integers(len(free))]
        taken.add((*head, *tail))
        codes.append((*head, *tail))
    return np.array(codes, dtype=np.int64)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    return demo_like_catalogue(tmp_path_factory.mktemp("demo") / "source")


@pytest.fixture(scope="module")
def ui_export(catalogue, tmp_path_factory):
    import torch

    from genrec.export import ExportConfig, export_module

    module = tiny_module()
    module.item_codes.copy_(torch.as_tensor(category_codes(catalogue["paths"])))
    out = tmp_path_factory.mktemp("export") / "demo-tiny"
    export_module(module, out, ExportConfig(name="demo-tiny", exporter="legacy", thumbnail_size=THUMBNAIL),
                  source_ids=catalogue["source_ids"], titles=catalogue["titles"],
                  categories=[p[-1] for p in catalogue["paths"]], popularity=catalogue["popularity"],
                  images=catalogue["images"])
    return out


@pytest.fixture(scope="module")
def client(ui_export):
    with TestClient(create_app(ExportRuntime(ui_export))) as c:
        yield c


@pytest.fixture(scope="module")
def plain_client(tiny_export):
    """The conftest's tiny export: no items_meta.json (titles only)."""
    with TestClient(create_app(ExportRuntime(tiny_export[0]))) as c:
        yield c


# ---------------------------------------------------------------------- the export's item metadata
def test_items_meta_is_listed_and_checked(ui_export, catalogue):
    manifest = json.loads((ui_export / "manifest.json").read_text())
    assert manifest["format_version"] == layout.FORMAT_VERSION and "items_meta.json" in manifest["files"]
    info = manifest["items_meta"]
    assert info["file"] == "items_meta.json" and info["fields"] == ["category", "image", "popularity"]
    assert info["n_images"] == N_ITEMS and info["n_categorised"] == N_ITEMS and info["thumbnail_size"] == THUMBNAIL
    original = (ui_export / "items_meta.json").read_bytes()
    meta = json.loads(original)
    assert meta["category"] == [p[-1] for p in catalogue["paths"]] and meta["popularity"] == catalogue["popularity"]
    for uri in meta["image"]:
        head, data = uri.split(",", 1)
        assert head in ("data:image/png;base64", "data:image/jpeg;base64")
        with Image.open(io.BytesIO(base64.b64decode(data))) as img:
            assert max(img.size) == THUMBNAIL            # the 64 px demo pictures, shrunk
    # Listed with a checksum, so a modified file is refused like any other.
    (ui_export / "items_meta.json").write_text(json.dumps(dict(meta, popularity=[0] * N_ITEMS)))
    try:
        with pytest.raises(Exception, match="items_meta.json: checksum mismatch"):
            ExportRuntime(ui_export)
    finally:
        (ui_export / "items_meta.json").write_bytes(original)
    assert ExportRuntime(ui_export).n_items == N_ITEMS


@pytest.mark.parametrize("change", [lambda m: [m], lambda m: dict(m, popularity=["many"] * N_ITEMS),
                                    lambda m: dict(m, category=[["a", "b"]] * N_ITEMS),
                                    lambda m: dict(m, popularity=[True] * N_ITEMS),
                                    lambda m: dict(m, image=[3] * N_ITEMS)])
def test_malformed_items_meta_is_one_line_naming_the_file(ui_export, change):
    """With checksums off (RuntimeConfig.verify_checksums), a hand-edited file still gets one clear line."""
    from genrec.io import ArtifactError
    from genrec.serving.routes import Catalogue
    from genrec.serving.runtime import RuntimeConfig

    original = (ui_export / "items_meta.json").read_bytes()
    try:
        (ui_export / "items_meta.json").write_text(json.dumps(change(json.loads(original))))
        runtime = ExportRuntime(ui_export, RuntimeConfig(verify_checksums=False))
        with pytest.raises(ArtifactError, match=r"items_meta\.json: .*re-run `genrec export`"):
            Catalogue.load(runtime)
    finally:
        (ui_export / "items_meta.json").write_bytes(original)


# ---------------------------------------------------------------------- endpoints
def test_search_by_title_most_popular_first(client, catalogue):
    word = catalogue["titles"][0].split()[-1]                       # a product noun, e.g. "Holder"
    body = client.get("/items/search", params={"q": word.upper()}).json()
    expected = [i for i, t in enumerate(catalogue["titles"]) if word.lower() in t.lower()]
    assert body["total"] == len(expected) >= 1
    assert sorted(c["item_id"] for c in body["items"]) == sorted(catalogue["source_ids"][i] for i in expected)
    pops = [c["popularity"] for c in body["items"]]
    assert pops == sorted(pops, reverse=True)
    first = body["items"][0]
    i = catalogue["source_ids"].index(first["item_id"])
    assert first["title"] == catalogue["titles"][i] and first["category"] == catalogue["paths"][i][-1]
    assert first["image"] == f"/items/{first['item_id']}/image" and len(first["semantic_id"]) == len(LEVELS)

    words = catalogue["titles"][5].split()[:2]                      # every word must occur
    hits = client.get("/items/search", params={"q": " ".join(words)}).json()["items"]
    assert catalogue["source_ids"][5] in [c["item_id"] for c in hits]
    assert all(all(w.lower() in c["title"].lower() for w in words) for c in hits)
    exact = client.get("/items/search", params={"q": catalogue["source_ids"][9]}).json()
    assert exact["items"][0]["item_id"] == catalogue["source_ids"][9]

    everything = client.get("/items/search", params={"limit": 2}).json()
    assert everything["total"] == N_ITEMS and len(everything["items"]) == 2
    assert everything["items"][0]["popularity"] == max(catalogue["popularity"])


def test_category_listing_and_filter(client, catalogue):
    cats = client.get("/items/categories").json()
    counts = Counter(p[-1] for p in catalogue["paths"])
    assert {c["category"]: c["n_items"] for c in cats["categories"]} == counts
    assert cats["n_items_without_category"] == 0
    leaf, n = counts.most_common(1)[0]
    body = client.get("/items/search", params={"category": leaf, "limit": 100}).json()
    assert body["total"] == n and {c["category"] for c in body["items"]} == {leaf}
    r = client.get("/items/search", params={"category": "Nope"})
    assert r.status_code == 422 and "GET /items/categories" in r.json()["error"]


@pytest.mark.parametrize("params,message", [({"limit": "0"}, "limit='0': send an integer in [1, 1000]"),
                                            ({"limit": "ten"}, "limit='ten'"),
                                            ({"q": "x" * 201}, "send at most 200")])
def test_search_validation(client, params, message):
    r = client.get("/items/search", params=params)
    assert r.status_code == 422 and message in r.json()["error"] and r.json()["code"] == "invalid_request"


def test_lookup_and_images(client, catalogue, ui_export):
    ids = [catalogue["source_ids"][i] for i in (3, 0, 20)]
    body = client.get("/items", params={"id": ids + ["ghost"]}).json()
    runtime = ExportRuntime(ui_export)
    assert [c["item_id"] for c in body["items"]] == ids and body["unknown_items"] == ["ghost"]
    assert body["items"][0]["semantic_id"] == runtime.item_codes[3].tolist()

    r = client.get(f"/items/{ids[0]}/image")
    assert r.status_code == 200 and r.headers["content-type"] in ("image/png", "image/jpeg")
    with Image.open(io.BytesIO(r.content)) as img:
        assert max(img.size) == THUMBNAIL
    r = client.get("/items/ghost/image")
    assert r.status_code == 404 and "not in this model's catalogue" in r.json()["error"]


def test_codes_match_explain_and_follow_the_categories(client, ui_export, catalogue):
    body = client.get("/codes").json()
    runtime = ExportRuntime(ui_export)
    leaves = [p[-1] for p in catalogue["paths"]]
    table = code_table(runtime.item_codes, runtime.level_sizes, categories=leaves,
                       popularity=np.array(catalogue["popularity"]))
    assert body == json.loads(json.dumps(codes_json(table, runtime.source_ids, runtime.titles)))
    first, second = body["digits"][0], body["digits"][1]
    # digit 0 is the top category: each code holds 3 leaves, so it is purer than random but below 1;
    # digits 0-1 together are the leaf: prefix purity exactly 1.0.
    assert first["random_purity"] < first["purity"] < 1.0
    assert second["prefix_purity"] == 1.0 and second["random_prefix_purity"] < 1.0
    assert body["digits"][-1]["dedup"] and body["has_popularity"]
    code = first["codes"][0]
    members = [i for i in range(N_ITEMS) if runtime.item_codes[i, 0] == code["code"]]
    best = max(members, key=lambda i: (catalogue["popularity"][i], -i))
    assert code["n_items"] == len(members) and code["top_items"][0]["item_id"] == catalogue["source_ids"][best]
    assert sum(c["n_items"] for c in code["top_categories"]) <= code["n_items"]


def test_an_export_without_item_metadata_still_serves_the_item_endpoints(plain_client):
    ids = source_ids()
    hits = plain_client.get("/items/search", params={"q": "product 1"}).json()
    assert [c["item_id"] for c in hits["items"]][:2] == [ids[1], ids[10]]     # item order without popularity
    assert all(c["category"] is None and c["image"] is None and c["popularity"] is None for c in hits["items"])
    assert plain_client.get("/items/categories").json() == {"categories": [], "n_items_without_category": N_ITEMS}
    r = plain_client.get(f"/items/{ids[1]}/image")
    assert r.status_code == 404 and "has no image" in r.json()["error"]
    codes = plain_client.get("/codes").json()
    assert codes["n_categories"] == 0 and codes["digits"][0]["purity"] is None and not codes["has_popularity"]
    row = codes["digits"][0]["codes"][0]
    item_codes = plain_client.app.state.serving.runtime.item_codes
    assert row["top_items"][0]["item_id"] == ids[min(i for i in range(N_ITEMS) if item_codes[i, 0] == row["code"])]


def test_ui_files_are_served_and_load_nothing_from_elsewhere(client):
    page = client.get("/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert '<script src="/ui/static/app.js"' in page.text and 'href="/ui/static/style.css"' in page.text
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        r = client.get(f"/ui/static/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
    for text in (page.text, client.get("/ui/static/app.js").text, client.get("/ui/static/style.css").text):
        assert "://" not in text and "//cdn" not in text                # no external URL anywhere
    assert client.get("/ui/static/../routes.py").status_code == 404
    assert client.get("/ui/static/secret.txt").json()["code"] == "not_found"


# ---------------------------------------------------------------------- the page in Chromium
@pytest.fixture(scope="module")
def browser_page(ui_export, tmp_path_factory):
    """(page, base url, requests the page made, its console errors): a real server and Debian's Chromium
    driven by Playwright."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium; .ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (pip install -e '.[dev]')")
    log = tmp_path_factory.mktemp("ui-serve") / "server.log"
    with running_server(ui_export, log, "--log-level", "info") as (url, _, _proc):
        with sync_api.sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), headless=True,
                args=CHROMIUM_FLAGS, viewport={"width": 1440, "height": 900})
            context.set_default_timeout(BROWSER_TIMEOUT_MS)
            page = context.new_page()
            requested: list[str] = []
            errors: list[str] = []        # script errors and Content-Security-Policy violations
            page.on("request", lambda req: requested.append(req.url))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url + "/ui")
            page.wait_for_selector("body[data-ready=true]")
            try:
                yield page, url, requested, errors
            finally:
                context.close()


def _rendered(page, history: list[str], exclude: bool, candidates: list[str] | None = None) -> list[dict]:
    """Wait until #recs shows the answer to this request; its cards (id, score, shared digits) in order."""
    expected = {"history": history, "exclude_history": exclude} | ({"candidates": candidates} if candidates else {})
    page.wait_for_function("""expected => {
        const recs = document.getElementById('recs');
        if (recs.dataset.state !== 'done') return false;
        const sent = JSON.parse(recs.dataset.request);
        return Object.entries(expected).every(([key, value]) => JSON.stringify(sent[key]) === JSON.stringify(value));
    }""", arg=expected)
    return page.eval_on_selector_all("#recs > li", """items => items.map(li => ({
        id: li.dataset.itemId, score: li.dataset.score,
        shared: [...li.querySelectorAll('.digit.shared')].map(d => Number(d.dataset.digit))}))""")


def _add_by_search(page, query: str, item_id: str) -> None:
    page.fill("#search", query)
    card = page.locator(f"#results > li[data-item-id='{item_id}']")
    card.wait_for()
    card.click()


def test_ui_in_chromium_shows_what_recommend_returns(browser_page, catalogue, ui_export):
    page, url, requested, errors = browser_page
    ids, titles = catalogue["source_ids"], catalogue["titles"]
    picks = [4, 30, 11]
    for n, i in enumerate(picks, 1):
        _add_by_search(page, " ".join(titles[i].split()[:2]), ids[i])
        page.wait_for_function("n => document.getElementById('history').children.length === n", arg=n)
    history = [ids[i] for i in picks]
    assert page.eval_on_selector("#history", "h => h.dataset.history") == "\n".join(history)
    codes = ExportRuntime(ui_export).item_codes

    with httpx.Client(base_url=url, timeout=30) as http:
        def direct(**body) -> list[dict]:
            r = http.post("/recommend", json={"history": history, "k": 10, **body})
            assert r.status_code == 200, r.text
            return r.json()["items"]

        shown = _rendered(page, history, True)
        answer = direct(exclude_history=True)
        assert [c["id"] for c in shown] == [it["item_id"] for it in answer] and len(shown) == 10
        assert [float(c["score"]) for c in shown] == pytest.approx([it["score"] for it in answer], abs=1e-5)
        # Shared digits: a digit (not the dedup one) equal to that digit of a history item.
        for card in shown:
            row = codes[ids.index(card["id"])]
            want = [d for d in range(len(LEVELS) - 1) if any(codes[i, d] == row[d] for i in picks)]
            assert card["shared"] == want, card

        page.uncheck("#exclude")
        shown = _rendered(page, history, False)
        assert [c["id"] for c in shown] == [it["item_id"] for it in direct(exclude_history=False)]

        leaf = catalogue["paths"][picks[0]][-1]
        members = http.get("/items/search", params={"category": leaf, "limit": 1000}).json()["items"]
        page.select_option("#category", leaf)
        shown = _rendered(page, history, False, [m["item_id"] for m in members])
        answer = direct(exclude_history=False, candidates=[m["item_id"] for m in members])
        assert [c["id"] for c in shown] == [it["item_id"] for it in answer]
        assert {c["id"] for c in shown} <= {m["item_id"] for m in members}
        page.select_option("#category", "")
        page.check("#exclude")
        _rendered(page, history, True)

    assert page.locator("#recs img.thumb").count() == 10      # the demo pictures, from /items/{id}/image
    assert all(u.startswith(url + "/") for u in requested), [u for u in requested if not u.startswith(url)]
    assert errors == []
    shot = os.environ.get("GENREC_UI_SCREENSHOT")
    if shot:
        page.fill("#search", "")                                # the most popular items under the search box
        page.wait_for_function("n => document.getElementById('search-status').textContent.startsWith(n + ' matches')",
                               arg=N_ITEMS)
        page.screenshot(path=shot, full_page=False)
