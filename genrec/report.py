"""`genrec report RUN_DIR`: one run's artifacts as a markdown report with plots, and the same report as
one self-contained HTML file (RUN/report.html: every plot embedded as a base64 PNG, no external URL),
which opens anywhere, is attached to a ticket or mailed as one file.

Reads whatever stages have finished (dataset, features, sid, checkpoints/logs, metrics.json),
draws a metrics-per-system bar chart (and NDCG@10 per target-popularity bucket), and links the
plots the stages wrote (codebook usage, training curve). Missing stages are listed as such, not
silently left out.
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

from genrec.io import write_text_atomic
from genrec.metrics import DEFAULT_KS


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def plot_metrics(systems: dict[str, dict], out: Path) -> Path:
    """Grouped bars: Recall and NDCG @5/10/20 for every system."""
    from genrec.plots import plt, save_png
    import numpy as np

    keys = [f"recall@{k}" for k in DEFAULT_KS] + [f"ndcg@{k}" for k in DEFAULT_KS]
    x = np.arange(len(keys))
    width = 0.8 / max(1, len(systems))
    fig, ax = plt.subplots(figsize=(9, 3.5))
    for i, (name, m) in enumerate(systems.items()):
        ax.bar(x + i * width, [m[k] for k in keys], width, label=name)
    ax.set_xticks(x + width * (len(systems) - 1) / 2, keys)
    ax.set(ylabel="value", title="test metrics per system (full ranking)")
    ax.legend()
    return save_png(fig, out)


def plot_buckets(systems: dict[str, dict], out: Path, metric: str = "ndcg@10") -> Path:
    """Grouped bars: ``metric`` per target-popularity bucket (and on cold targets) for every system."""
    from genrec.evaluate import bucket_order
    from genrec.plots import plt, save_png
    import numpy as np

    first = next(m["beyond"] for m in systems.values() if m.get("beyond"))
    buckets = bucket_order(first["by_target_popularity"])
    x = np.arange(len(buckets) + 1)
    width = 0.8 / max(1, len(systems))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for i, (name, m) in enumerate(systems.items()):
        beyond = m.get("beyond") or {}
        rows = ([(beyond.get("by_target_popularity") or {}).get(b, {}) for b in buckets]
                + [beyond.get("cold_targets") or {}])
        ax.bar(x + i * width, [row.get(metric, 0.0) for row in rows], width, label=name)
    ax.set_xticks(x + width * (len(systems) - 1) / 2, [*buckets, "cold"])
    ax.set(ylabel=metric, xlabel="target's interactions in the training split",
           title=f"{metric} by target popularity (empty bucket: no bar)")
    ax.legend()
    return save_png(fig, out)


def build_report(run: Path) -> str:
    run = Path(run)
    lines = [f"# genrec run report: `{run}`", ""]
    ds = _load(run / "dataset" / "manifest.json")
    if ds:
        seq = ds.get("seq_len", {})
        lines += ["## Dataset", "", f"- name: {ds.get('name')} (format {ds.get('format')})",
                  f"- users {ds['n_users']:,}, items {ds['n_items']:,}, interactions {ds['n_interactions']:,}",
                  f"- sequence length: {seq}", f"- skipped source lines: {ds.get('n_skipped_lines', 0)}", ""]
    else:
        lines += ["## Dataset", "", "not prepared yet (`genrec prepare`)", ""]
    feats = _load(run / "features" / "manifest.json")
    lines += ["## Features", ""]
    if feats:
        for name, info in sorted(feats.get("modalities", {}).items()):
            lines.append(f"- {name}: {json.dumps({k: v for k, v in info.items() if not isinstance(v, (dict, list))})}")
    else:
        lines.append("not embedded yet (`genrec embed`)")
    lines.append("")
    sid = _load(run / "sid" / "report.json")
    lines += ["## Semantic IDs", ""]
    if sid:
        lines += ["| level | size | used | perplexity |", "|---|---|---|---|"]
        lines += [f"| {lv['level']} | {lv['size']} | {lv['used']} ({lv['used_fraction']:.0%}) | "
                  f"{lv['perplexity']:.1f} |"
                  for lv in sid.get("levels", [])]
        raw, final = sid.get("collisions_raw", {}), sid.get("collisions_before_dedup", {})
        lines += ["", f"- collisions with nearest codes: {raw.get('n_colliding_items')} items "
                      f"(largest group {raw.get('largest_group')})",
                  f"- collisions before the dedup level: {final.get('n_colliding_items')} items",
                  "", "![codebook usage](sid/report.png)", ""]
    else:
        lines += ["not tokenized yet (`genrec tokenize`)", ""]
    lines += ["## Training", ""]
    curve = run / "plots" / "training_curve.png"
    lines += ["![training curve](plots/training_curve.png)", ""] if curve.exists() else ["no training curve yet", ""]
    metrics = _load(run / "metrics.json")
    lines += ["## Evaluation", ""]
    if metrics:
        from genrec.evaluate import markdown_table

        systems = metrics.get("systems", {})
        lines += [markdown_table(systems, title=f"{metrics.get('split')} split"), ""]
        plot_metrics(systems, run / "plots" / "metrics.png")
        lines += ["![metrics per system](plots/metrics.png)", ""]
        if any(m.get("beyond") for m in systems.values()):
            from genrec.evaluate import beyond_table, slices_table

            diversity = (metrics.get("beyond_protocol") or {}).get("diversity") or {}
            lines += ["## Beyond accuracy", "",
                      beyond_table(systems, title=f"what the top-k lists hold (diversity by "
                                                  f"{diversity.get('measure') or 'nothing'})"), "",
                      "- coverage: distinct recommended items / catalogue; novelty: mean -log2 of an item's share of "
                      "training interactions (bits); diversity: mean pairwise dissimilarity within a list; "
                      "avg_popularity: mean training interactions of the recommended items", "",
                      slices_table(systems, title="Recall and NDCG by how often the target occurs in training"), ""]
            plot_buckets(systems, run / "plots" / "by_target_popularity.png")
            lines += ["![NDCG@10 by target popularity](plots/by_target_popularity.png)", ""]
    else:
        lines += ["not evaluated yet (`genrec evaluate`)", ""]
    return "\n".join(lines)


_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)]+)\)")
_STYLE = ("body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em;color:#222}"
          "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em;"
          "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
          "code{background:#f3f3f3;padding:0 .2em}")


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def _image(alt: str, path: str, base: Path) -> str:
    """A PNG the report links, embedded as base64 so the HTML needs no other file."""
    file = base / path
    if not file.exists():
        return f"<p>(plot {html.escape(path)} is missing)</p>"
    data = base64.b64encode(file.read_bytes()).decode("ascii")
    return f'<p><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}"></p>'


def _table(rows: list[str]) -> str:
    cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows]
    body = [r for r in cells[1:] if not all(set(c) <= set("-:") for c in r)]      # drop the |---| row
    head = "".join(f"<th>{_inline(c)}</th>" for c in cells[0])
    rows_html = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows_html}</tbody></table>"


def markdown_to_html(text: str, base: Path, title: str = "genrec run report") -> str:
    """The report's markdown (headings, lists, tables, images, paragraphs; what build_report writes) as
    one HTML page; images are read from ``base`` and embedded."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line.strip():
            i += 1
            continue
        block = [line]
        if line.startswith("|") or line.startswith("- "):
            start = "|" if line.startswith("|") else "- "
            while i + 1 < len(lines) and lines[i + 1].startswith(start):
                i += 1
                block.append(lines[i].rstrip())
        i += 1
        if line.startswith("#"):
            level = min(6, len(line) - len(line.lstrip("#")))
            out.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.startswith("|"):
            out.append(_table(block))
        elif line.startswith("- "):
            out.append("<ul>" + "".join(f"<li>{_inline(b[2:])}</li>" for b in block) + "</ul>")
        elif image := _IMAGE.fullmatch(line.strip()):
            out.append(_image(image.group(1), image.group(2), base))
        else:
            out.append(f"<p>{_inline(line)}</p>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")


def write_report(run: str | Path, out: str | Path | None = None) -> Path:
    """Writes the markdown report (``out``, default RUN/report.md) and the same report as one
    self-contained HTML file beside it (same name, .html). Returns the markdown path."""
    run = Path(run)
    if not run.exists():
        raise FileNotFoundError(f"run folder {run} does not exist")
    out = Path(out) if out else run / "report.md"
    text = build_report(run)
    write_text_atomic(out, text)
    page = out.with_suffix(".html")
    write_text_atomic(page, markdown_to_html(text, run, title=f"genrec run report: {run}"))
    print(f"wrote {out} and {page} (plots embedded)")
    return out
