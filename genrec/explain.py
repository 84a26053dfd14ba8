"""`genrec explain --run RUN`: what the semantic IDs mean, as one self-contained page, RUN/explain.html.

For every digit of the items' semantic IDs (a digit is one column of ``sid/codes.npy``, the last
one being the dedup digit):

- each code's most popular items (training-split interactions) and most frequent categories;
- **purity**: the share of items whose category is the most frequent category of their code,
  against random codes with the same code sizes (the digit's column shuffled across items,
  ``n_random`` seeded draws), for the digit alone and for the prefix up to it;
- a 2-D map of the items (PCA of the fused or text features, numpy only) coloured by first code,
  beside the same map coloured by category.

The per-code data is also written as RUN/explain.json. The server's ``GET /codes`` computes the
same data from an export folder with :func:`code_table` and :func:`codes_json`, so this module
imports numpy only at the top (the serving path must not import torch or polars).
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

EXPLAIN_HTML = "explain.html"
AUTO_FEATURES = ("fused", "text")     # features="auto" maps the first of these the run has
MAP_LABELLED_CODES = 12               # first codes whose label is written at their centroid on the map
MAP_CATEGORIES = 12                   # categories with their own colour on the map (the rest are grey)


@dataclass
class ExplainConfig:
    top_items: int = 5              # most popular items listed per code
    top_categories: int = 3         # most frequent categories listed per code
    n_random: int = 20              # random code assignments averaged for the purity baseline
    seed: int = 0                   # seed of the random baselines and of the map's subsample
    category_depth: int = -1        # entry of an item's category path that labels it (-1 = the leaf, 1 = the second)
    features: str = "auto"          # map features: auto (fused, else text) or a RUN/features/<name>.npy name
    max_codes_shown: int = 64       # largest codes per digit listed in the HTML (explain.json has all of them)
    map_points: int = 20000         # most items drawn on the map (a seeded subsample beyond that)

    def __post_init__(self):
        for name in ("top_items", "top_categories", "n_random", "max_codes_shown", "map_points"):
            if getattr(self, name) < 1:
                raise ValueError(f"ExplainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.features or "/" in self.features:
            raise ValueError(f"ExplainConfig.features must be 'auto' or a file name in RUN/features without .npy "
                             f"(e.g. fused, text), got {self.features!r}")


# ---------------------------------------------------------------------- categories
def category_label(path: Sequence[str] | None, depth: int = -1) -> str | None:
    """One category per item: entry ``depth`` of its category path (None when the path is shorter)."""
    if not path:
        return None
    if not -len(path) <= depth < len(path):
        return None
    label = path[depth]
    return str(label) if label is not None and str(label).strip() else None


def encode_labels(labels: Sequence[str | None]) -> tuple[np.ndarray, list[str]]:
    """Strings -> (n,) int64 ids into a sorted vocabulary, -1 for None."""
    names = sorted({lab for lab in labels if lab is not None})
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[lab] if lab is not None else -1 for lab in labels], dtype=np.int64), names


# ---------------------------------------------------------------------- purity
def _majority(groups: np.ndarray, labels: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For labelled items (labels >= 0): (group ids, largest label count, labelled count) per non-empty group."""
    keep = labels >= 0
    g, lab = groups[keep], labels[keep]
    if not len(g):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    pairs, counts = np.unique(g * n_labels + lab, return_counts=True)     # sorted, so each group is contiguous
    pair_group = pairs // n_labels
    starts = np.r_[0, np.flatnonzero(np.diff(pair_group)) + 1]
    largest = np.maximum.reduceat(counts, starts)
    sizes = np.add.reduceat(counts, starts)
    return pair_group[starts], largest, sizes


def purity(groups: np.ndarray, labels: np.ndarray) -> float | None:
    """Share of labelled items whose label is the most frequent one of their group (None without labels).

    groups: (n,) int group (code) per item; labels: (n,) int label per item, -1 = unknown.
    One group holding everything gives the share of the most frequent label; groups that each hold
    one label give 1.0.
    """
    groups, labels = np.asarray(groups, np.int64), np.asarray(labels, np.int64)
    n_labels = int(labels.max()) + 1 if len(labels) else 0
    _, largest, sizes = _majority(groups, labels, max(n_labels, 1))
    return float(largest.sum() / sizes.sum()) if sizes.sum() else None


def random_purity(groups: np.ndarray, labels: np.ndarray, n_random: int, seed: Sequence[int] | int
                  ) -> tuple[float | None, float | None]:
    """(mean, std) purity of random groups of the same sizes: ``groups`` shuffled across items, seeded."""
    rng = np.random.default_rng(seed)
    values = [purity(rng.permutation(groups), labels) for _ in range(n_random)]
    if values[0] is None:
        return None, None
    return float(np.mean(values)), float(np.std(values))


# ---------------------------------------------------------------------- per-code table
def code_table(codes: np.ndarray, level_sizes: Sequence[int], *, categories: Sequence[str | None] | None = None,
               popularity: np.ndarray | None = None, top_items: int = 5, top_categories: int = 3,
               n_random: int = 20, seed: int = 0) -> dict:
    """Per digit and per used code: size, purity, most popular items (internal ids), most frequent categories.

    codes: (n_items, D) int, the last column the dedup digit. categories: one label per item (None =
    unknown) or None. popularity: (n_items,) training interactions; without it items are listed in
    item order. Returns plain JSON types (item ids are internal; see :func:`codes_json`).
    """
    codes = np.asarray(codes, dtype=np.int64)
    n, n_digits = codes.shape
    if len(level_sizes) != n_digits:
        raise ValueError(f"level_sizes has {len(level_sizes)} entries but codes have {n_digits} digits")
    labels, names = encode_labels(categories if categories is not None else [None] * n)
    if len(labels) != n:
        raise ValueError(f"categories has {len(labels)} entries, expected one per item ({n})")
    pop = np.zeros(n, np.int64) if popularity is None else np.asarray(popularity, np.int64)
    n_labels = max(len(names), 1)
    digits = []
    for d in range(n_digits):
        column = codes[:, d]
        prefix = np.unique(codes[:, : d + 1], axis=0, return_inverse=True)[1].reshape(-1)
        rand, rand_std = random_purity(column, labels, n_random, (seed, d))
        rand_prefix, _ = random_purity(prefix, labels, n_random, (seed, n_digits + d))
        order = np.lexsort((np.arange(n), -pop, column))                  # by code, then most popular, then id
        used, starts, sizes = np.unique(column[order], return_index=True, return_counts=True)
        group_ids, largest, labelled = _majority(column, labels, n_labels)
        by_code = {int(c): (int(m), int(s)) for c, m, s in zip(group_ids, largest, labelled)}
        rows = []
        for code, start, size in zip(used.tolist(), starts.tolist(), sizes.tolist()):
            members = order[start:start + size]
            member_labels = labels[members]
            cats, counts = np.unique(member_labels[member_labels >= 0], return_counts=True)
            top = np.lexsort((cats, -counts))[:top_categories]
            most, labelled_here = by_code.get(code, (0, 0))
            rows.append({"code": code, "n_items": size,
                         "purity": most / labelled_here if labelled_here else None,
                         "top_items": members[:top_items].tolist(),
                         "top_categories": [{"category": names[cats[i]], "n_items": int(counts[i])} for i in top]})
        digits.append({"digit": d, "size": int(level_sizes[d]), "used": len(rows), "dedup": d == n_digits - 1,
                       "purity": purity(column, labels), "random_purity": rand, "random_purity_std": rand_std,
                       "prefix_purity": purity(prefix, labels), "random_prefix_purity": rand_prefix,
                       "codes": rows})
    return {"n_items": n, "level_sizes": [int(k) for k in level_sizes], "n_categories": len(names),
            "n_items_with_category": int((labels >= 0).sum()), "has_popularity": popularity is not None,
            "n_random": n_random, "seed": seed, "digits": digits}


def codes_json(table: dict, source_ids: Sequence[str], titles: Sequence[str | None]) -> dict:
    """:func:`code_table` with internal item ids replaced by ``{"item_id": source id, "title": ...}``."""
    out = dict(table, digits=[])
    for digit in table["digits"]:
        rows = [dict(row, top_items=[{"item_id": str(source_ids[i]), "title": titles[i]} for i in row["top_items"]])
                for row in digit["codes"]]
        out["digits"].append(dict(digit, codes=rows))
    return out


# ---------------------------------------------------------------------- 2-D map
def pca_2d(x: np.ndarray) -> np.ndarray:
    """(n, d) -> (n, 2): projection on the two leading principal axes (numpy eigh of the covariance).

    Each axis' sign is fixed so its largest-magnitude loading is positive, so reruns draw the same map.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"pca_2d needs an (n >= 2, d) matrix, got shape {x.shape}")
    x = x - x.mean(axis=0)
    if x.shape[1] < 2:
        x = np.concatenate([x, np.zeros((len(x), 2 - x.shape[1]))], axis=1)
    _, vectors = np.linalg.eigh(x.T @ x)
    axes = vectors[:, ::-1][:, :2]                                     # largest eigenvalues last in eigh
    signs = np.sign(axes[np.abs(axes).argmax(axis=0), [0, 1]])
    return x @ (axes * np.where(signs == 0, 1.0, signs))


def _png(fig) -> bytes:
    from genrec.plots import DPI, plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def plot_map(xy: np.ndarray, first_code: np.ndarray, labels: np.ndarray, names: list[str], title: str) -> bytes:
    """Two scatter panels of the same 2-D map: coloured by first code, and by category."""
    from genrec.plots import plt

    n_panels = 2 if names else 1
    fig, axes = plt.subplots(1, n_panels, figsize=(6.2 * n_panels + 1.6 * (n_panels - 1), 5.6), squeeze=False)
    ax = axes[0, 0]
    codes, sizes = np.unique(first_code, return_counts=True)
    # Hues by golden-ratio steps: neighbouring code values get distant colours, however many codes there are.
    hue = (first_code * 0.618033988749895) % 1.0
    colours = plt.cm.hsv(hue)
    colours[:, :3] *= 0.85
    ax.scatter(xy[:, 0], xy[:, 1], c=colours, s=6, linewidths=0, alpha=0.8)
    for code in codes[np.argsort(-sizes, kind="stable")][:MAP_LABELLED_CODES]:
        centre = np.median(xy[first_code == code], axis=0)
        ax.annotate(str(code), centre, fontsize=8, ha="center", va="center", weight="bold",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.7, "lw": 0})
    ax.set(title=f"coloured by first code ({len(codes)} codes; largest labelled)", xlabel="PC 1", ylabel="PC 2")
    if names:
        ax = axes[0, 1]
        ids, counts = np.unique(labels[labels >= 0], return_counts=True)
        shown = ids[np.argsort(-counts, kind="stable")][:MAP_CATEGORIES]
        other = ~np.isin(labels, shown)
        ax.scatter(xy[other, 0], xy[other, 1], c="#cccccc", s=5, linewidths=0, label="other / none")
        palette = plt.cm.tab20(np.linspace(0, 1, 20))
        for i, lab in enumerate(shown):
            member = labels == lab
            ax.scatter(xy[member, 0], xy[member, 1], color=palette[(2 * i) % 20 + (i // 10) % 2], s=6,
                       linewidths=0, label=names[lab][:28])
        ax.legend(fontsize=7, markerscale=2.5, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        ax.set(title=f"coloured by category ({len(shown)} largest)", xlabel="PC 1", ylabel="PC 2")
    fig.suptitle(title, fontsize=10)
    return _png(fig)


def plot_purity(table: dict) -> bytes:
    """Bars per digit: code purity and its random baseline; lines: prefix purity and its baseline."""
    from genrec.plots import plt

    digits = table["digits"]
    x = np.arange(len(digits))
    value = lambda key: [np.nan if d[key] is None else d[key] for d in digits]  # noqa: E731
    fig, ax = plt.subplots(figsize=(max(7.0, 0.55 * len(digits) + 4.5), 3.6))
    ax.bar(x - 0.2, value("purity"), 0.4, label="code purity")
    ax.bar(x + 0.2, value("random_purity"), 0.4, yerr=value("random_purity_std"), color="#bbbbbb",
           label=f"random codes, same sizes ({table['n_random']} draws)")
    ax.plot(x, value("prefix_purity"), "o-", color="C3", label="prefix purity (digits 0..d)")
    ax.plot(x, value("random_prefix_purity"), "o--", color="#888888", label="random prefixes")
    ax.set_xticks(x, [f"{d['digit']}" + (" (dedup)" if d["dedup"] else "") for d in digits], fontsize=8)
    ax.set(xlabel="digit", ylabel="purity", ylim=(0, 1.05), title="category purity of the codes")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _png(fig)


# ---------------------------------------------------------------------- the run
@dataclass
class RunTables:
    codes: np.ndarray                 # (n_items, D) int64, sid/codes.npy
    level_sizes: list[int]
    source_ids: list[str]
    titles: list[str | None]
    categories: list[str | None]      # one label per item (ExplainConfig.category_depth)
    popularity: np.ndarray            # (n_items,) training-split interactions
    features: np.ndarray | None       # (n_items, d) map features, or None
    features_name: str | None
    sid_manifest: dict


def load_run(run: str | Path, config: ExplainConfig) -> RunTables:
    """The run's semantic IDs, item metadata, training popularity and map features."""
    from genrec.data.dataset import load_dataset
    from genrec.io import ArtifactError
    from genrec.tokenizer.semantic_ids import load_semantic_ids

    run = Path(run)
    sid = load_semantic_ids(run)
    dataset = load_dataset(run)
    if dataset.n_items != sid.n_items:
        raise ArtifactError(f"{sid.folder / 'codes.npy'} has {sid.n_items} items but {dataset.folder}/items.parquet "
                            f"has {dataset.n_items}; re-run `genrec tokenize --run {run}`.")
    items = dataset.items.sort("item_id")
    paths = items["categories"].to_list() if "categories" in items.columns else [None] * dataset.n_items
    train = [np.asarray(s, np.int64) for s in dataset.split.train if len(s)]
    popularity = (np.bincount(np.concatenate(train), minlength=dataset.n_items) if train
                  else np.zeros(dataset.n_items, np.int64))
    features, name = _load_features(run, config.features, dataset.n_items)
    return RunTables(codes=sid.codes, level_sizes=list(sid.level_sizes), source_ids=items["source_id"].to_list(),
                     titles=items["title"].to_list(),
                     categories=[category_label(p, config.category_depth) for p in paths],
                     popularity=popularity, features=features, features_name=name, sid_manifest=sid.manifest)


def _load_features(run: Path, which: str, n_items: int) -> tuple[np.ndarray | None, str | None]:
    from genrec.io import ArtifactError

    folder = run / "features"
    names = AUTO_FEATURES if which == "auto" else (which,)
    for name in names:
        path = folder / f"{name}.npy"
        if path.exists():
            x = np.load(path, allow_pickle=False)
            if x.ndim != 2 or len(x) != n_items:
                raise ArtifactError(f"{path}: expected shape ({n_items}, d), got {x.shape}; re-run `genrec embed`.")
            if x.shape[1] == 0:
                continue
            return x, name
    if which != "auto":
        raise ArtifactError(f"{folder / (which + '.npy')} not found; run `genrec embed --run {run}` or pass "
                            "--features auto (fused, else text)")
    return None, None


def explain(run: str | Path, config: ExplainConfig | None = None, out: str | Path | None = None) -> Path:
    """Write RUN/explain.html (``out``) and RUN/explain.json beside it; returns the HTML path."""
    from genrec.io import write_json_atomic, write_text_atomic

    config = config or ExplainConfig()
    run = Path(run)
    tables = load_run(run, config)
    table = code_table(tables.codes, tables.level_sizes, categories=tables.categories, popularity=tables.popularity,
                       top_items=config.top_items, top_categories=config.top_categories,
                       n_random=config.n_random, seed=config.seed)
    out = Path(out) if out else run / EXPLAIN_HTML
    data = codes_json(table, tables.source_ids, tables.titles) | {"config": asdict(config),
                                                                  "map_features": tables.features_name}
    write_json_atomic(out.with_suffix(".json"), data)
    write_text_atomic(out, render_html(run, tables, table, config))
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return out


# ---------------------------------------------------------------------- HTML
_STYLE = ("body{font-family:system-ui,sans-serif;max-width:72em;margin:2em auto;padding:0 1em;color:#222}"
          "table{border-collapse:collapse;margin:.5em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.2em .5em;"
          "vertical-align:top;text-align:left}td.n{text-align:right}img{max-width:100%}.muted{color:#777}"
          "code{background:#f3f3f3;padding:0 .2em}details{margin:.6em 0}summary{cursor:pointer;font-weight:600}")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _img(png: bytes, alt: str) -> str:
    return f'<p><img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="{html.escape(alt)}"></p>'


def render_html(run: Path, tables: RunTables, table: dict, config: ExplainConfig) -> str:
    """The page: summary, purity table and plot, the 2-D map, and one table of codes per digit."""
    e = html.escape
    sid = tables.sid_manifest
    labels, names = encode_labels(tables.categories)
    depth = "leaf" if config.category_depth == -1 else f"entry {config.category_depth}"
    parts = [f"<h1>Semantic IDs of <code>{e(str(run))}</code></h1>",
             "<ul>",
             f"<li>{table['n_items']:,} items, {len(tables.level_sizes)} digits, codebook sizes "
             f"{e(str(tables.level_sizes))} (the last digit is the dedup digit)</li>",
             f"<li>tokenizer: {e(str(sid.get('method', '?')))} over {e(', '.join(sid.get('modalities') or ['fused']))}"
             "</li>",
             f"<li>categories: the {depth} of each item's category path; {len(names):,} categories, "
             f"{table['n_items_with_category']:,} items with one</li>",
             "<li>most popular items = most training-split interactions</li>", "</ul>"]

    parts += ["<h2>Purity by digit</h2>",
              "<p>Purity is the share of items whose category is the most frequent category of their code. "
              f"Random codes keep each code's size and shuffle the digit across items ({table['n_random']} draws, "
              f"seed {table['seed']}). Prefix purity groups items by digits 0..d together.</p>"]
    if table["n_items_with_category"]:
        rows = "".join(
            f"<tr><td>{d['digit']}{' (dedup)' if d['dedup'] else ''}</td><td class=n>{d['used']} / {d['size']}</td>"
            f"<td class=n>{_fmt(d['purity'])}</td><td class=n>{_fmt(d['random_purity'])} ± "
            f"{_fmt(d['random_purity_std'])}</td><td class=n>{_fmt(d['prefix_purity'])}</td>"
            f"<td class=n>{_fmt(d['random_prefix_purity'])}</td></tr>" for d in table["digits"])
        parts += ["<table><thead><tr><th>digit</th><th>codes used</th><th>code purity</th><th>random codes</th>"
                  f"<th>prefix purity</th><th>random prefixes</th></tr></thead><tbody>{rows}</tbody></table>",
                  _img(plot_purity(table), "purity by digit")]
    else:
        parts.append("<p class=muted>No item has a category at this depth, so purity is not defined "
                     "(try --category-depth).</p>")

    parts.append("<h2>Map of the items</h2>")
    if tables.features is not None:
        keep = np.arange(table["n_items"])
        if len(keep) > config.map_points:
            keep = np.sort(np.random.default_rng(config.seed).choice(keep, config.map_points, replace=False))
        xy = pca_2d(tables.features[keep])
        parts += [f"<p>PCA of <code>features/{e(tables.features_name)}.npy</code> ({len(keep):,} items"
                  f"{' sampled' if len(keep) < table['n_items'] else ''}).</p>",
                  _img(plot_map(xy, tables.codes[keep, 0], labels[keep], names,
                                f"{tables.features_name} features, PCA"), "map of the items")]
    else:
        parts.append("<p class=muted>No fused or text features in RUN/features; run <code>genrec embed</code> "
                     "for the map.</p>")

    parts.append("<h2>Codes per digit</h2>")
    for digit in table["digits"]:
        rows_sorted = sorted(digit["codes"], key=lambda r: (-r["n_items"], r["code"]))
        shown = rows_sorted[: config.max_codes_shown]
        rows = []
        for r in shown:
            cats = ", ".join(f"{e(c['category'])} ({c['n_items']})" for c in r["top_categories"]) or "–"
            items = "; ".join(e(tables.titles[i] or tables.source_ids[i]) for i in r["top_items"])
            rows.append(f"<tr><td class=n>{r['code']}</td><td class=n>{r['n_items']}</td>"
                        f"<td class=n>{_fmt(r['purity'], 2)}</td><td>{cats}</td><td>{items}</td></tr>")
        more = len(rows_sorted) - len(shown)
        note = (" (dedup digit: it only separates items whose other digits are equal)" if digit["dedup"] else "")
        parts += [f"<details{' open' if digit['digit'] == 0 else ''}><summary>digit {digit['digit']}: "
                  f"{digit['used']} of {digit['size']} codes used, purity {_fmt(digit['purity'])} "
                  f"(random {_fmt(digit['random_purity'])}){e(note)}</summary>",
                  "<table><thead><tr><th>code</th><th>items</th><th>purity</th><th>top categories</th>"
                  f"<th>most popular items</th></tr></thead><tbody>{''.join(rows)}</tbody></table>",
                  f"<p class=muted>{more} smaller codes not shown (all are in explain.json).</p>" if more else "",
                  "</details>"]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>genrec explain: {e(str(run))}'
            f"</title><style>{_STYLE}</style></head><body>\n" + "\n".join(p for p in parts if p) + "\n</body></html>\n")
