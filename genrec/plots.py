"""Shared plotting helper: headless matplotlib, PNG written atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

from genrec.io import atomic_path  # noqa: E402

DPI = 110


def save_png(fig, out: Path) -> Path:
    """Lay out, write ``fig`` to ``out`` atomically as PNG, and free it."""
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    plt.close(fig)
    return out
