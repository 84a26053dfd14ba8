"""The tokenize report: ``sid/report.json``, its plot ``sid/report.png`` and the printed summary.

Apart from the stage so the numbers (codes used and perplexity per digit, collisions with
plain nearest codes and after the last-level rule, reconstruction error) are computed in one
place and the stage only decides what to fit and where to write.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from genrec.io import atomic_path
from genrec.tokenizer.semantic_ids import collision_stats, level_usage
from genrec.tokenizer.tokenizer import ENCODE_BLOCK, Tokenizer

REPORT_JSON = "report.json"
REPORT_PNG = "report.png"


@torch.no_grad()
def reconstruction_report(tokenizer: Tokenizer, matrices: dict[str, np.ndarray], codes: np.ndarray) -> dict:
    """Per modality: MSE in normalised input space, and the same relative to the input variance."""
    out, col = {}, 0
    for name, model in tokenizer.models.items():
        own = torch.from_numpy(codes[:, col:col + model.config.n_levels])
        col += model.config.n_levels
        x = torch.from_numpy(matrices[name])
        err = torch.cat([model.reconstruction_error(x[s:s + ENCODE_BLOCK], own[s:s + ENCODE_BLOCK])
                         for s in range(0, x.shape[0], ENCODE_BLOCK)])
        target = model.normalize(x)
        variance = float((target - target.mean(0)).pow(2).mean())
        mse = float(err.mean())
        out[name] = {"mse": mse, "relative": mse / variance if variance > 0 else 0.0}
    return out


def build_report(tokenizer: Tokenizer, matrices: dict[str, np.ndarray], *, raw: np.ndarray, semantic: np.ndarray,
                 codes: np.ndarray, level_sizes: tuple[int, ...], **extra) -> dict:
    """The report of one tokenize run.

    raw: (n, L) nearest codes; semantic: (n, L) after the last-level rule; codes: (n, L+1) with
    the dedup digit; level_sizes: vocabulary per digit (L+1). ``extra`` (fit info, notes, config,
    seconds) is added as is.
    """
    return {
        "n_items": int(codes.shape[0]),
        "level_sizes": list(level_sizes),
        "levels": level_usage(codes, level_sizes),
        "collisions_raw": collision_stats(raw),
        "collisions_before_dedup": collision_stats(semantic),
        "n_items_moved_by_last_level": int((semantic != raw).any(axis=1).sum()),
        "reconstruction": reconstruction_report(tokenizer, matrices, semantic),
        **extra,
    }


def plot_report(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = report["levels"]
    names = [f"L{lv['level']}" + (" (dedup)" if lv["level"] == len(levels) - 1 else "") for lv in levels]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    ax = axes[0]
    ax.bar(names, [lv["used_fraction"] * 100 for lv in levels], color="tab:blue")
    ax.axhline(95, color="grey", ls="--", lw=1)
    ax.set_ylabel("% of codes used")
    ax.set_title("Code usage per level")
    ax = axes[1]
    ax.bar(names, [lv["perplexity"] for lv in levels], color="tab:orange", label="perplexity")
    ax.plot(names, [lv["size"] for lv in levels], "k_", ms=20, label="codebook size")
    ax.set_title("Perplexity per level")
    ax.legend()
    ax = axes[2]
    raw, final = report["collisions_raw"], report["collisions_before_dedup"]
    labels = ["nearest codes", f"after last_level={report['config']['last_level']}"]
    ax.bar(labels, [raw["n_colliding_items"], final["n_colliding_items"]], color=["tab:red", "tab:green"])
    ax.set_title(f"Colliding items before dedup (of {report['n_items']})\n"
                 f"largest group {raw['largest_group']} -> {final['largest_group']}")
    rec = ", ".join(f"{k}: {v['relative']:.3f}" for k, v in report["reconstruction"].items())
    fig.suptitle(f"{report['config']['method']} tokenizer, relative reconstruction error {rec}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def format_report(report: dict) -> str:
    lines = [f"tokenize: {report['n_items']} items, {report['config']['method']} on {list(report['reconstruction'])}, "
             f"level sizes {report['level_sizes']}, {report['seconds']:.1f}s"]
    for lv in report["levels"]:
        tag = " (dedup)" if lv["level"] == len(report["levels"]) - 1 else ""
        lines.append(f"  level {lv['level']}{tag}: {lv['used']}/{lv['size']} codes used ({lv['used_fraction']:.1%}), "
                     f"perplexity {lv['perplexity']:.1f}")
    raw, final = report["collisions_raw"], report["collisions_before_dedup"]
    lines.append(f"  collisions with nearest codes: {raw['n_colliding_items']} items ({raw['collision_rate']:.2%}), "
                 f"largest group {raw['largest_group']}")
    lines.append(f"  collisions before dedup (last_level={report['config']['last_level']}): "
                 f"{final['n_colliding_items']} items ({final['collision_rate']:.2%}), "
                 f"largest group {final['largest_group']}")
    for name, r in report["reconstruction"].items():
        lines.append(f"  reconstruction [{name}]: mse {r['mse']:.4f}, relative {r['relative']:.3f}")
    lines.extend(f"  note: {n}" for n in report["notes"])
    return "\n".join(lines)
