"""`genrec report RUN_DIR`: one run's artifacts as a markdown report with plots.

Reads whatever stages have finished (dataset, features, sid, checkpoints/logs, metrics.json),
draws a metrics-per-system bar chart, and links the plots the stages wrote (codebook usage,
training curve). Missing stages are listed as such, not silently left out.
"""

from __future__ import annotations

import json
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
        lines += [f"| {lv['level']} | {lv['size']} | {lv['used']} ({lv['used_fraction']:.0%}) | {lv['perplexity']:.1f} |"
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
    else:
        lines += ["not evaluated yet (`genrec evaluate`)", ""]
    return "\n".join(lines)


def write_report(run: str | Path, out: str | Path | None = None) -> Path:
    run = Path(run)
    if not run.exists():
        raise FileNotFoundError(f"run folder {run} does not exist")
    out = Path(out) if out else run / "report.md"
    write_text_atomic(out, build_report(run))
    print(f"wrote {out}")
    return out
