// genrec item browser: search the catalogue, build a history, show what POST /recommend returns.
// Plain JS, no build step and no external asset; every request goes to this server.
"use strict";

const SEARCH_LIMIT = 30;        // matches listed under the search box
const SEARCH_DELAY_MS = 150;    // wait this long after a keystroke before searching

const state = {
  meta: null,                   // GET /metadata
  history: [],                  // source ids, oldest first
  cards: new Map(),             // source id -> ItemCard (title, category, semantic_id, image)
  categoryIds: new Map(),       // category -> its item ids (the candidates when restricted)
  seq: 0,                       // number of the latest recommend call; older answers are dropped
};

const $ = (id) => document.getElementById(id);

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    throw new Error(body && body.error ? body.error : `${response.status} ${response.statusText}`);
  }
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function remember(cards) {
  for (const card of cards) state.cards.set(card.item_id, card);
}

async function ensureCards(ids) {
  const missing = [...new Set(ids)].filter((id) => !state.cards.has(id));
  if (!missing.length) return;
  const query = missing.map((id) => "id=" + encodeURIComponent(id)).join("&");
  remember((await api("/items?" + query)).items);
}

// ------------------------------------------------------------------ rendering
function thumb(card) {
  if (card && card.image) return el("img", {class: "thumb", src: card.image, alt: "", loading: "lazy"});
  const label = card && card.category ? card.category.slice(0, 3) : "—";
  return el("div", {class: "thumb", text: label});
}

// The semantic ID; digits shared with a recent history item are highlighted (the dedup digit never is).
function semanticId(codes, recent) {
  const span = el("span", {class: "sid"});
  const last = codes.length - 1;
  codes.forEach((code, digit) => {
    if (digit > 0) span.append(el("span", {class: "sep", text: "-"}));
    const sharers = digit === last ? [] : recent.filter((c) => c.semantic_id[digit] === code);
    const cls = digit === last ? "digit dedup" : sharers.length ? "digit shared" : "digit";
    const title = digit === last ? "dedup digit"
      : sharers.length ? `digit ${digit} = ${code}, shared with: ${sharers.map(label).join("; ")}` : `digit ${digit}`;
    span.append(el("span", {class: cls, text: String(code), title, "data-digit": String(digit)}));
  });
  return span;
}

function label(card) {
  return card.title || card.item_id;
}

// The longest run of leading digits the item shares with one recent history item.
function sharedPrefix(codes, recent) {
  let best = null;
  for (const other of recent) {
    let n = 0;
    while (n < codes.length - 1 && other.semantic_id[n] === codes[n]) n += 1;
    if (n > 0 && (!best || n > best.n)) best = {n, card: other};
  }
  return best;
}

function itemCard(card, {onClick, side, extra, recent = []} = {}) {
  const li = el("li", {class: "card" + (onClick ? " clickable" : ""), "data-item-id": card.item_id});
  const body = el("div", {},
    el("div", {class: "title", text: label(card), title: label(card)}),
    el("div", {class: "sub"}, `${card.category || "no category"} · ${card.item_id} · `, semanticId(card.semantic_id, recent)),
    extra || null);
  li.append(thumb(card), body, side || el("span"));
  if (onClick) {
    li.tabIndex = 0;
    li.addEventListener("click", onClick);
    li.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); onClick(); } });
  }
  return li;
}

function renderResults(result) {
  remember(result.items);
  $("results").replaceChildren(...result.items.map((card) => itemCard(card, {onClick: () => addToHistory(card.item_id)})));
  $("search-status").textContent = result.total > result.items.length
    ? `${result.total} matches, the ${result.items.length} most popular shown`
    : `${result.total} match${result.total === 1 ? "" : "es"}`;
}

function renderHistory() {
  const list = $("history");
  list.replaceChildren(...state.history.map((id, i) => {
    const card = state.cards.get(id);
    const remove = el("button", {class: "remove", type: "button", text: "×", title: "remove from the history"});
    remove.addEventListener("click", () => { state.history.splice(i, 1); historyChanged(); });
    const li = itemCard(card, {side: remove});
    li.prepend(el("span", {class: "rank", text: String(i + 1)}));
    return li;
  }));
  list.dataset.history = state.history.join("\n");
  $("history-empty").hidden = state.history.length > 0;
}

function renderRecs(request, response) {
  const recent = state.history.slice(-state.meta.max_items).map((id) => state.cards.get(id));
  const list = $("recs");
  list.replaceChildren(...response.items.map((item, i) => {
    const card = state.cards.get(item.item_id);
    const score = el("div", {class: "side"},
      el("span", {class: "rank", text: `#${i + 1}`}), " ",
      el("span", {class: "score", text: item.score == null ? "–" : item.score.toFixed(3), title: "log p(semantic ID | history) (+ the item logit for a rerank export)"}));
    const prefix = sharedPrefix(card.semantic_id, recent);
    const why = prefix ? el("div", {class: "why", text: `shares its first ${prefix.n} digit${prefix.n > 1 ? "s" : ""} with “${label(prefix.card)}”`}) : null;
    const li = itemCard(card, {onClick: () => addToHistory(item.item_id), side: score, extra: why, recent});
    li.dataset.score = item.score == null ? "" : String(item.score);
    return li;
  }));
  list.dataset.request = JSON.stringify(request);
  list.dataset.state = "done";
  const notes = [...response.warnings];
  $("recs-status").textContent = `${response.items.length} items for a history of ${request.history.length}` +
    (response.history_truncated ? ` (the model read the last ${response.history_used})` : "") +
    (notes.length ? " · " + notes.join(" · ") : "");
  $("recs-status").classList.remove("error");
  $("raw-request").textContent = JSON.stringify(request, null, 1);
  $("raw-response").textContent = JSON.stringify(response, null, 1);
}

function showError(message) {
  const list = $("recs");
  list.replaceChildren();
  list.dataset.state = "error";
  $("recs-status").textContent = message;
  $("recs-status").classList.add("error");
}

// ------------------------------------------------------------------ actions
function addToHistory(id) {
  state.history.push(id);
  historyChanged();
}

function historyChanged() {
  renderHistory();
  recommend();
}

async function candidatesOf(category) {
  if (!state.categoryIds.has(category)) {
    const limit = state.meta.server.max_history;
    const result = await api(`/items/search?category=${encodeURIComponent(category)}&limit=${limit}`);
    if (result.total > result.items.length) {
      throw new Error(`category “${category}” has ${result.total} items; this server takes at most ${limit} ` +
                      "candidates (--max-history)");
    }
    remember(result.items);
    state.categoryIds.set(category, result.items.map((c) => c.item_id));
  }
  return state.categoryIds.get(category);
}

async function recommend() {
  const seq = ++state.seq;
  const list = $("recs");
  if (!state.history.length) {
    list.replaceChildren();
    list.dataset.state = "empty";
    delete list.dataset.request;
    $("recs-status").textContent = "Add items to the history to get recommendations.";
    $("recs-status").classList.remove("error");
    return;
  }
  list.dataset.state = "loading";
  $("recs-status").textContent = "asking /recommend…";
  const maxK = state.meta.server.max_k;
  const k = Math.max(1, Math.min(maxK, parseInt($("k").value, 10) || 10));
  const request = {history: state.history.slice(), k, exclude_history: $("exclude").checked};
  try {
    const category = $("category").value;
    if (category) request.candidates = await candidatesOf(category);
    const response = await api("/recommend", {method: "POST", headers: {"content-type": "application/json"},
                                              body: JSON.stringify(request)});
    await ensureCards(response.items.map((item) => item.item_id));
    if (seq === state.seq) renderRecs(request, response);
  } catch (error) {
    if (seq === state.seq) showError(error.message);
  }
}

let searchTimer = null;
let searchSeq = 0;

async function search() {
  const seq = ++searchSeq;
  const q = $("search").value;
  try {
    const result = await api(`/items/search?q=${encodeURIComponent(q)}&limit=${SEARCH_LIMIT}`);
    if (seq === searchSeq) renderResults(result);
  } catch (error) {
    if (seq === searchSeq) $("search-status").textContent = error.message;
  }
}

async function start() {
  state.meta = await api("/metadata");
  const m = state.meta;
  $("model").textContent = `${m.name} · ${m.arch} · ${m.n_items.toLocaleString()} items · semantic IDs of ` +
    `${m.semantic_id.n_levels} digits (${m.semantic_id.level_sizes.join("/")}) · reads the last ${m.max_items} items`;
  $("k").max = String(m.server.max_k);
  $("k").value = String(Math.min(10, m.server.max_k));
  const categories = await api("/items/categories");
  for (const c of categories.categories) {
    $("category").append(el("option", {value: c.category, text: `${c.category} (${c.n_items})`}));
  }
  $("category").disabled = categories.categories.length === 0;
  $("search").addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(search, SEARCH_DELAY_MS); });
  $("clear").addEventListener("click", () => { state.history = []; historyChanged(); });
  for (const id of ["k", "exclude", "category"]) $(id).addEventListener("change", recommend);
  renderHistory();
  await search();
  await recommend();
  document.body.dataset.ready = "true";
}

start().catch((error) => showError("could not start: " + error.message));
