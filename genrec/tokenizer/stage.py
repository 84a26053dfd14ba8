"""The ``tokenize`` stage: RUN/features/ -> RUN/sid/ (semantic IDs + frozen tokenizer + report).

config -> features -> fit one tokenizer per modality group -> codes -> last-level rule -> dedup
digit -> report -> artifact, published whole through ``io.write_folder_atomic``.

The default tokenizes ``fused.npy`` with one RQ-VAE; ``modalities="separate"`` fits one per
modality present and concatenates the codes (MSCGRec-style), followed by one shared dedup digit.
Identical vectors still tokenize: they share codes on the levels that cannot tell them apart,
and the last level ("unique") or the dedup digit separates them. Bad features: ``features.py``;
small catalogues: ``fit.py``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from genrec.io import write_folder_atomic, write_json_atomic
from genrec.tokenizer.config import TokenizeConfig
from genrec.tokenizer.features import FEATURES_DIR, Features, load_features, missing_notes
from genrec.tokenizer.fit import capped_sizes, fit_model
from genrec.tokenizer.report import REPORT_JSON, REPORT_PNG, build_report, format_report, plot_report
from genrec.tokenizer.semantic_ids import (
    CHECKPOINT_FILE,
    SID_DIR,
    add_dedup_level,
    resolve_last_level,
    write_semantic_ids,
)
from genrec.tokenizer.tokenizer import Tokenizer

__all__ = ["TokenizeConfig", "tokenize"]   # TokenizeConfig is re-exported for callers that import it from here

LOGS_DIR = "logs"


def tokenize(run: str | Path, config: TokenizeConfig = TokenizeConfig()) -> dict:
    """Learn semantic IDs for every item in RUN/features and write RUN/sid/; returns the report.

    The report (also sid/report.json and sid/report.png, and printed) gives codes used and
    perplexity per digit, the collision rate before dedup (with plain nearest codes and after
    the last-level rule), the largest collision group and the reconstruction error.
    """
    run = Path(run)
    threads = torch.get_num_threads()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    try:
        start = time.perf_counter()
        features = load_features(run, config.modalities)     # before any folder is created: bad input writes nothing
        report = write_folder_atomic(run / SID_DIR, lambda tmp: _write_sid(tmp, features, config, start))
    finally:
        torch.set_num_threads(threads)
    print(format_report(report))
    return report


def _write_sid(folder: Path, features: Features, config: TokenizeConfig, start: float) -> dict:
    notes = missing_notes(features)
    sizes = capped_sizes(features.n_items, config, notes)
    models, fit_info = {}, {}
    for i, (name, x) in enumerate(tqdm(features.matrices.items(), desc="tokenize", unit="modality",
                                       disable=len(features.matrices) == 1)):
        models[name], fit_info[name] = fit_model(x, config, sizes=sizes, seed=config.seed + i,
                                                 log_dir=folder / LOGS_DIR, name=name)
    tokenizer = Tokenizer(models, config.last_level)
    raw = tokenizer.raw_codes(features.matrices)
    semantic = raw
    if config.last_level == "unique":
        semantic = resolve_last_level(raw, tokenizer.last_level_distances(features.matrices, raw))
    codes = add_dedup_level(semantic)
    level_sizes = (*tokenizer.semantic_level_sizes, _dedup_size(codes, config))

    report = build_report(tokenizer, features.matrices, raw=raw, semantic=semantic, codes=codes,
                          level_sizes=level_sizes, fit=fit_info, notes=notes, config=config.to_dict())
    report["seconds"] = round(time.perf_counter() - start, 2)
    tokenizer.save(folder / CHECKPOINT_FILE)
    write_json_atomic(folder / REPORT_JSON, report)
    plot_report(report, folder / REPORT_PNG)
    write_semantic_ids(
        folder, codes, level_sizes,
        extra_files=[CHECKPOINT_FILE, REPORT_JSON, REPORT_PNG],
        n_levels=config.n_levels,
        method=config.method,
        modalities=list(models),
        inputs={f"{FEATURES_DIR}/{k}": v for k, v in features.checksums.items()},
        features_manifest_files=features.manifest.get("files", {}),
        config=config.to_dict(),
    )
    return report


def _dedup_size(codes: np.ndarray, config: TokenizeConfig) -> int:
    """The dedup digit's vocabulary: the largest collision group, or dedup_capacity when that is larger."""
    largest = int(codes[:, -1].max()) + 1
    if config.dedup_capacity and config.dedup_capacity < largest:
        raise ValueError(f"TokenizeConfig.dedup_capacity={config.dedup_capacity} is smaller than the largest "
                         f"collision group ({largest} items); raise it to >= {largest} or set 0 (automatic)")
    return max(largest, config.dedup_capacity)
