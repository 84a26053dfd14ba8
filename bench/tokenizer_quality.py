"""Tokenizer quality on real data: codes used per level, collisions, training time.

    python bench/tokenizer_quality.py --dataset Beauty      # writes bench/results/tokenizer_Beauty.json

Runs prepare -> embed (text only: the tokenizer's quality is about the content space) ->
tokenize, and puts the reference semantic IDs shipped beside the data (if any, e.g.
../shared/data/Beauty/semantic_ids/*/Beauty.index.json) through the same collision count.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared" / "data").resolve()


def reference_collisions(dataset: str) -> dict[str, dict]:
    """Collision stats of third-party semantic-ID indexes ({item: ["<a_1>", ...]}) shipped with the data."""
    from genrec.tokenizer.semantic_ids import collision_stats

    out = {}
    for path in sorted((SHARED / dataset / "semantic_ids").glob("*/*.index.json")):
        index = json.loads(path.read_text())
        codes = np.array([[int(tok.strip("<>").split("_")[1]) for tok in index[k]] for k in sorted(index, key=int)])
        out[path.parent.name] = collision_stats(codes) | {"n_levels": int(codes.shape[1])}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/tokenizer_quality.py", description=__doc__.strip().splitlines()[0])
    p.add_argument("--dataset", required=True, help="folder in ../shared/data, e.g. Beauty or Office")
    p.add_argument("--n-levels", type=int, default=3, help="semantic levels before the dedup level")
    p.add_argument("--run-dir", type=Path, default=None, help="default bench/runs/tokenize_NAME")
    a = p.parse_args(argv)
    from genrec.data.prepare import PrepareConfig, prepare
    from genrec.features.image import ImageConfig
    from genrec.features.stage import EmbedConfig, embed
    from genrec.io import machine_info, write_json_atomic
    from genrec.tokenizer.stage import TokenizeConfig, tokenize

    run = a.run_dir or REPO / "bench" / "runs" / f"tokenize_{a.dataset}"
    prepare(SHARED / a.dataset, run, PrepareConfig(progress=False), name=a.dataset)
    t0 = time.perf_counter()
    embed(run, EmbedConfig(image=ImageConfig(enabled=False), collab=False))
    embed_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = tokenize(run, TokenizeConfig(n_levels=a.n_levels))
    tok_s = time.perf_counter() - t0
    result = {
        "dataset": a.dataset, "machine": machine_info(), "embed_seconds": round(embed_s, 1),
        "tokenize_seconds": round(tok_s, 1), "levels": report["levels"],
        "collisions_raw": report["collisions_raw"], "collisions_before_dedup": report["collisions_before_dedup"],
        "reconstruction": report["reconstruction"], "references": reference_collisions(a.dataset),
    }
    out = REPO / "bench" / "results" / f"tokenizer_{a.dataset}.json"
    write_json_atomic(out, result)
    shutil.copyfile(run / "sid" / "report.png", out.with_suffix(".png"))  # codebook usage plot for the README
    used = ", ".join(f"L{lv['level']} {lv['used_fraction']:.0%}" for lv in report["levels"])
    print(f"{a.dataset}: codes used {used}; colliding items with nearest codes "
          f"{report['collisions_raw']['n_colliding_items']} (duplicates {report['collisions_raw']['n_duplicates']}), "
          f"before dedup {report['collisions_before_dedup']['n_colliding_items']}; tokenize {tok_s:.0f} s")
    for name, ref in result["references"].items():
        print(f"  reference {name}: {ref['n_colliding_items']} colliding items, duplicates {ref['n_duplicates']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
