"""`genrec export`: a trained checkpoint -> a self-contained ONNX folder the torch-free server loads.

    export(run, out, ExportConfig())          # RUN/checkpoints/best.ckpt + RUN/dataset -> out/
    export_module(genrec, out, config, ...)    # the same from an in-memory GenRec (tests, benches)

The folder (see export/README.md and genrec/export/layout.py) is written into a temporary
sibling folder and renamed into place only when complete, so a stopped export leaves nothing
half-written under ``out``. Before the rename the exported graphs are loaded with the serving
runtime and checked against torch eager (parity); a failed check stops the export.

Optional item metadata for the server's page (/ui, /items, /codes) goes into ``items_meta.json``,
listed in the manifest (``files`` and ``items_meta``): per item its category, training-split
popularity and a small thumbnail (a data: URI). The runtime serves recommendations without it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from genrec.config import to_dict
from genrec.io import write_folder_atomic
from genrec.decode import Trie
from genrec.export import layout
from genrec.export.graphs import (CausalDecoderStep, CausalEncoder, ParallelDecoderStep, ParallelEncoder,
                                  TigerDecoderStep, TigerEncoder)
from genrec.registry import get_arch, resolve
from genrec.io import MANIFEST, ArtifactError, save_npy_atomic, sha256_file, write_json_atomic, write_manifest

EXPORTERS = ("dynamo", "legacy")
EXPORT_SEARCHES = ("auto", "beam", "rerank")   # what an export decodes with (manifest "decoding")
# Example sizes used to trace the graphs; odd and > 1 so no dynamic axis gets specialised to them.
_TRACE_BATCH, _TRACE_ROWS = 3, 7
# Batch sizes and history lengths the export-time parity check decodes (lengths past max_items test truncation).
_PARITY_BATCHES = (1, 4, 9)
# Optional item metadata (category, popularity, thumbnail per item) for the server's page; listed in the manifest.
ITEMS_META_FILE = "items_meta.json"
_THUMBNAIL_JPEG_QUALITY = 85     # a thumbnail is stored as PNG or JPEG at this quality, whichever is smaller


@dataclass
class ExportConfig:
    opset: int = 18                  # ONNX opset of both graphs
    exporter: str = "dynamo"         # "dynamo" (torch.export + onnxscript) or "legacy" (TorchScript tracer)
    checkpoint: str = "best"         # best | last | a path to a .ckpt (as in `genrec evaluate`)
    name: str | None = None          # model name reported by the server (default: the output folder's name)
    beam_width: int = 20             # default beam width the server decodes with (raised to k when k is larger)
    search: str = "auto"             # "beam" (parallel heads: every item scored exactly), or "rerank": the item logit
                                     # added to the code score of the beam's items (autoregressive) or of every
                                     # item (parallel), for models trained with item_loss_weight > 0, as `genrec
                                     # evaluate`; "auto": "rerank" for such a model, else "beam"
    int8: bool = False               # try dynamic int8 weight quantization; kept only if every parity top-k is
                                     # unchanged
    parity_check: bool = True        # decode random histories with torch eager and ONNX before publishing the folder
    parity_tolerance: float = 1e-4   # max |eager - onnx| for log-probs and states; scores (sums over levels) x levels
    parity_k: int = 10               # top-k compared by the parity check
    seed: int = 0                    # seed of the parity histories
    overwrite: bool = True           # replace an existing export folder at `out` (other folders are never replaced)
    thumbnail_size: int = 64         # longest side in pixels of the item thumbnails the server's /ui shows (0 = none)
    category_depth: int = -1         # entry of an item's category path stored as its category (-1 = the leaf)
    add_items: bool = True           # ship add_items/ (model weights, tokenizer, encoder settings) for
                                     # `genrec add-items`

    def __post_init__(self):
        if self.exporter not in EXPORTERS:
            raise ValueError(f"exporter must be one of {EXPORTERS}, got {self.exporter!r}")
        if not 14 <= self.opset <= 23:
            raise ValueError(f"opset must be in [14, 23] (scaled_dot_product_attention needs >= 14), got {self.opset}")
        if self.search not in EXPORT_SEARCHES:
            raise ValueError(f"search must be one of {EXPORT_SEARCHES}, got {self.search!r}")
        if self.beam_width < 1 or self.parity_k < 1:
            raise ValueError(f"beam_width and parity_k must be >= 1, got {self.beam_width} and {self.parity_k}")
        if self.parity_tolerance <= 0:
            raise ValueError(f"parity_tolerance must be > 0, got {self.parity_tolerance}")
        if not 0 <= self.thumbnail_size <= 512:
            raise ValueError(f"thumbnail_size must be in [0, 512] pixels (0 = no thumbnails), "
                             f"got {self.thumbnail_size}")


# ---------------------------------------------------------------------- entry points
def export(run: str | Path, out: str | Path, config: ExportConfig | None = None) -> dict:
    """Export RUN's checkpoint (config.checkpoint) with its dataset's item metadata to ``out``; returns the manifest."""
    from genrec.data.dataset import load_dataset
    from genrec.evaluate import load_genrec

    config = config or ExportConfig()
    run = Path(run)
    model, ckpt_path = load_genrec(run, config.checkpoint)
    dataset = load_dataset(run)
    items = dataset.items.sort("item_id")
    if items.height != model.n_items:
        raise ArtifactError(f"{dataset.folder}/items.parquet has {items.height} items but {ckpt_path} was trained on "
                            f"{model.n_items}; export with the run the checkpoint was trained in.")
    if items["source_id"].null_count():
        raise ArtifactError(f"{dataset.folder}/items.parquet has {items['source_id'].null_count()} items without a "
                            "source_id; the server needs one per item. Re-run `genrec prepare`.")
    source = {"run": str(run), "checkpoint": str(ckpt_path), "checkpoint_sha256": sha256_file(ckpt_path),
              "dataset": dataset.name, "sid_checksum": model.config.sid_checksum}
    categories, popularity, images = _run_item_meta(run, dataset, items, config)
    assets = None
    if config.add_items:
        from genrec.catalog.featurizer import AddItemsAssets

        assets = AddItemsAssets.from_run(run, attributes=bool(model.config.attributes_per_item))
    return export_module(model, out, config, source_ids=items["source_id"].to_list(),
                        titles=items["title"].to_list(), source=source, categories=categories,
                        popularity=popularity, images=images, add_items=assets)


def _run_item_meta(run: Path, dataset, items, config: ExportConfig):
    """Per item: category label, training-split interactions, and a local image file (or None)."""
    from genrec.explain import category_label
    from genrec.features.image import ImageConfig, resolve_image_sources

    paths = items["categories"].to_list() if "categories" in items.columns else [None] * items.height
    categories = [category_label(p, config.category_depth) for p in paths]
    train = [np.asarray(s, np.int64) for s in dataset.split.train if len(s)]
    popularity = (np.bincount(np.concatenate(train), minlength=items.height) if train
                  else np.zeros(items.height, np.int64))
    images = None
    if config.thumbnail_size:
        # The files the embed stage read: its image_dir if it had one, else the `image` column.
        feats = run / "features" / MANIFEST
        image_info = (json.loads(feats.read_text(encoding="utf-8")).get("modalities", {}).get("image", {})
                      if feats.exists() else {})
        base_dirs = [dataset.folder, dataset.folder.parent]
        if dataset.manifest.get("source"):
            base_dirs.append(Path(dataset.manifest["source"]))
        images, _ = resolve_image_sources(items, ImageConfig(image_dir=image_info.get("image_dir")), base_dirs)
    return categories, popularity.tolist(), images


def export_module(model, out: str | Path, config: ExportConfig | None = None, *,
                 source_ids: list[str] | None = None, titles: list[str | None] | None = None,
                 source: dict | None = None, categories: Sequence[str | None] | None = None,
                 popularity: Sequence[int] | None = None, images: Sequence[str | Path | None] | None = None,
                 add_items=None) -> dict:
    """Export an in-memory GenRec (``item_codes`` filled) to ``out``; returns the manifest.

    source_ids/titles: item metadata in item-id order (default: ids "0".."N-1", no titles).
    source: provenance recorded in the manifest (run, checkpoint and its checksum).
    categories/popularity/images: optional, one entry per item (a category label, training interactions,
    a local image file, or an already-made data: URI); any of them given -> items_meta.json (thumbnails of
    config.thumbnail_size).
    add_items: a genrec.catalog.featurizer.AddItemsAssets (the run's tokenizer and featurizer): with
    config.add_items they and the model's weights go into add_items/ (the manifest says what is missing).
    """
    config = config or ExportConfig()
    module = getattr(model, "genrec", model)   # a GenRecModule holds its GenRec as .genrec
    if module.arch not in layout.SUPPORTED_ARCHS:
        raise NotImplementedError(f"exporting arch {module.arch!r} is not supported; "
                                  f"supported: {layout.SUPPORTED_ARCHS}")
    out = Path(out)
    n_items = module.n_items
    source_ids = [str(i) for i in range(n_items)] if source_ids is None else [str(s) for s in source_ids]
    titles = [None] * n_items if titles is None else list(titles)
    if len(source_ids) != n_items or len(titles) != n_items:
        raise ValueError(f"source_ids and titles need one entry per item ({n_items}), "
                         f"got {len(source_ids)} and {len(titles)}")
    if len(set(source_ids)) != n_items:
        raise ValueError("source_ids must be unique: the server maps request ids to items by them")
    meta, meta_info = _items_meta(n_items, config, categories, popularity, images)
    files = list(layout.EXPORT_FILES) + ([ITEMS_META_FILE] if meta else [])
    _check_destination(out, config)

    module = module.cpu().eval()
    # "auto": a trained item logit is part of the model's ranking (configs/sparse.yaml's hybrid)
    config = replace(config, search=module.default_search(config.search))
    if config.search == "rerank":
        module.check_rerank()
        files.append(layout.ITEM_TABLE_FILE)

    def write(tmp: Path) -> dict:
        graphs = resolve(get_arch(module.arch).export)(module, tmp, config)
        files.extend(sorted(f for f in os.listdir(tmp) if f.endswith(layout.EXTERNAL_DATA_SUFFIX)))
        trie = Trie(module.item_codes.cpu().numpy(), module.level_sizes, source="model.item_codes")
        # Exact decoding reads posting lists of digit pairs; shipped in the export, the server memory-maps
        # them instead of building them on its first request.
        written = trie.save(tmp, postings=module.parallel)
        files.extend(sorted(set(written) - set(files)))
        if config.search == "rerank":
            with torch.no_grad():
                save_npy_atomic(tmp / layout.ITEM_TABLE_FILE, module.logit_table().float().numpy())
        write_json_atomic(tmp / layout.ITEMS_FILE, {"source_id": source_ids, "title": titles})
        if meta:
            write_json_atomic(tmp / ITEMS_META_FILE, meta)
        fields = _manifest_fields(module, out, config, graphs, source) | ({"items_meta": meta_info} if meta else {})
        if config.add_items and add_items is not None:
            shipped, fields["add_items"] = add_items.write(tmp, module)
            files.extend(shipped)
        manifest = write_manifest(tmp, layout.STAGE, files=files, **fields)
        if config.parity_check or config.int8:
            # The runtime reads the manifest, so the checks run on a first one; the final one adds their
            # results (and new checksums when int8 weights were kept).
            checks = _verify(module, tmp, config)
            manifest = write_manifest(tmp, layout.STAGE, files=files, **fields, **checks)
        _make_readable(tmp)
        return manifest

    manifest = write_folder_atomic(out, write)
    print(f"wrote {out} ({len(files) + 1} files, {n_items} items, arch {module.arch})")
    if meta:
        print(f"item metadata: {meta_info['n_categorised']} items with a category, {meta_info['n_images']} thumbnails"
              + (f" ({meta_info['n_unreadable_images']} image files could not be read)"
                 if meta_info["n_unreadable_images"] else ""))
    return manifest


def _items_meta(n_items: int, config: ExportConfig, categories, popularity, images) -> tuple[dict, dict]:
    """items_meta.json's content ({} when nothing was given) and its manifest entry."""
    given = {"category": categories, "popularity": popularity, "image": images if config.thumbnail_size else None}
    for name, values in given.items():
        if values is not None and len(values) != n_items:
            raise ValueError(f"{name}: expected one entry per item ({n_items}), got {len(values)}")
    meta: dict = {}
    if categories is not None:
        meta["category"] = [None if c is None else str(c) for c in categories]
    if popularity is not None:
        meta["popularity"] = [int(p) for p in popularity]
    unreadable = 0
    if given["image"] is not None:
        meta["image"] = []
        for path in images:
            if isinstance(path, str) and path.startswith("data:"):   # a thumbnail made by an earlier export
                meta["image"].append(path)
                continue
            uri = None if path is None else _thumbnail(Path(path), config.thumbnail_size)
            unreadable += path is not None and uri is None
            meta["image"].append(uri)
    info = {"file": ITEMS_META_FILE, "fields": sorted(meta), "thumbnail_size": config.thumbnail_size,
            "n_categorised": sum(c is not None for c in meta.get("category", [])),
            "n_images": sum(u is not None for u in meta.get("image", [])), "n_unreadable_images": unreadable}
    return meta, info


def _thumbnail(path: Path, size: int) -> str | None:
    """A data: URI of the image shrunk to at most ``size`` pixels a side (None if it cannot be read)."""
    import base64
    import io

    from PIL import Image

    try:
        with Image.open(path) as img:
            img.thumbnail((size, size))
            img = img.convert("RGBA")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    flat = Image.new("RGB", img.size, (255, 255, 255))
    flat.paste(img, mask=img.getchannel("A"))       # transparent pixels on white, as the embed stage sees them
    encoded = []
    for fmt, options in (("PNG", {"optimize": True}), ("JPEG", {"quality": _THUMBNAIL_JPEG_QUALITY})):
        buf = io.BytesIO()
        flat.save(buf, format=fmt, **options)
        encoded.append((len(buf.getvalue()), fmt.lower(), buf.getvalue()))
    _, fmt, data = min(encoded)
    return f"data:image/{fmt};base64,{base64.b64encode(data).decode('ascii')}"


# ---------------------------------------------------------------------- graphs
def export_causal(module, folder: Path, config: ExportConfig) -> dict:
    """Write CausalSID's encoder.onnx and decoder_step.onnx; returns their signatures for the manifest."""
    model = module.model
    cfg = model.cfg
    parallel = model.head.parallel
    encoder = (ParallelEncoder if parallel else CausalEncoder)(module).eval()
    step = (ParallelDecoderStep if parallel else CausalDecoderStep)(model).eval()
    d, k_max, depth = cfg.d_model, max(cfg.level_sizes), len(cfg.level_sizes)

    history = torch.full((_TRACE_BATCH, cfg.max_items), -1, dtype=torch.long)
    history[:, -2:] = torch.arange(2 * _TRACE_BATCH).view(_TRACE_BATCH, 2) % module.n_items
    _onnx_export(encoder, (history,), folder / layout.ENCODER_FILE, config,
                 inputs=layout.CAUSAL_ENCODER_INPUTS,
                 outputs=layout.PARALLEL_ENCODER_OUTPUTS if parallel else layout.CAUSAL_ENCODER_OUTPUTS,
                 dynamic={"history": {0: "batch"}, "state": {0: "batch"}}
                 | ({"level_log_probs": {0: "batch"}} if parallel else {}))
    step_args = (torch.zeros(_TRACE_ROWS, d), torch.zeros(_TRACE_ROWS, dtype=torch.long), torch.tensor(1))
    _onnx_export(step, step_args, folder / layout.DECODER_STEP_FILE, config,
                 inputs=layout.CAUSAL_STEP_INPUTS, outputs=layout.CAUSAL_STEP_OUTPUTS,
                 dynamic={"state": {0: "rows"}, "last_code": {0: "rows"}, "level": {},
                          "log_probs": {0: "rows"}, "new_state": {0: "rows"}})

    return {
        "encoder": {"file": layout.ENCODER_FILE,
                    "inputs": [_spec("history", ["batch", cfg.max_items], "int64")],
                    "outputs": [_spec("state", ["batch", d], "float32")]
                    + ([_spec("level_log_probs", ["batch", depth, k_max], "float32")] if parallel else [])},
        "decoder_step": {"file": layout.DECODER_STEP_FILE,
                         "inputs": [_spec("state", ["rows", d], "float32"), _spec("last_code", ["rows"], "int64"),
                                    _spec("level", [], "int64")],
                         "outputs": [_spec("log_probs", ["rows", k_max], "float32"),
                                     _spec("new_state", ["rows", d], "float32")],
                         "cache": "the (rows, d_model) state vector: gather it by parent_rows before each step"},
    }


def export_tiger(module, folder: Path, config: ExportConfig) -> dict:
    """Write TIGER's encoder.onnx and decoder_step.onnx (T5 with a tensor key/value cache)."""
    tiger = module.model
    if tiger.layout.n_user_buckets:
        raise NotImplementedError(
            f"this TIGER model reads a hashed user token ({tiger.layout.n_user_buckets} buckets) before the "
            "history, and requests carry no user id: export a model trained with n_user_buckets=0")
    t5cfg = tiger.t5.config
    n_layers, heads, d_kv = t5cfg.num_decoder_layers, t5cfg.num_heads, t5cfg.d_kv
    n_levels, k_max, max_items = tiger.layout.n_levels, max(tiger.layout.level_sizes), tiger.cfg.max_items
    encoder = TigerEncoder(tiger, module.item_codes).eval()
    step = TigerDecoderStep(tiger).eval()

    history = torch.full((_TRACE_BATCH, max_items), -1, dtype=torch.long)
    history[:, -2:] = torch.arange(2 * _TRACE_BATCH).view(_TRACE_BATCH, 2) % module.n_items
    _onnx_export(encoder, (history,), folder / layout.ENCODER_FILE, config,
                 inputs=layout.TIGER_ENCODER_INPUTS, outputs=layout.TIGER_ENCODER_OUTPUTS,
                 dynamic={"history": {0: "batch"}, "cross_keys": {1: "batch"}, "cross_values": {1: "batch"},
                          "encoder_bias": {0: "batch"}})
    with torch.no_grad():
        cross_keys, cross_values, bias = encoder(history)
    beams = _TRACE_ROWS
    cache = torch.zeros(n_layers, _TRACE_BATCH, beams, heads, n_levels, d_kv)
    step_args = (torch.zeros(_TRACE_BATCH, beams, dtype=torch.long), torch.tensor(1), cache, cache.clone(),
                 cross_keys, cross_values, bias)
    per_beam = {1: "batch", 2: "beams"}
    _onnx_export(step, step_args, folder / layout.DECODER_STEP_FILE, config,
                 inputs=layout.TIGER_STEP_INPUTS, outputs=layout.TIGER_STEP_OUTPUTS,
                 dynamic={"last_code": {0: "batch", 1: "beams"}, "level": {}, "self_keys": per_beam,
                          "self_values": per_beam, "cross_keys": {1: "batch", 3: "source"},
                          "cross_values": {1: "batch", 3: "source"}, "encoder_bias": {0: "batch", 1: "source"},
                          "log_probs": {0: "batch", 1: "beams"}, "new_self_keys": per_beam,
                          "new_self_values": per_beam})

    cross = [n_layers, "batch", heads, "source", d_kv]                  # source = max_items * D tokens
    self_cache = [n_layers, "batch", "beams", heads, n_levels, d_kv]
    return {
        "encoder": {"file": layout.ENCODER_FILE,
                    "inputs": [_spec("history", ["batch", max_items], "int64")],
                    "outputs": [_spec("cross_keys", cross, "float32"), _spec("cross_values", cross, "float32"),
                                _spec("encoder_bias", ["batch", "source"], "float32")],
                    "source_tokens": max_items * n_levels},
        "decoder_step": {"file": layout.DECODER_STEP_FILE,
                         "inputs": [_spec("last_code", ["batch", "beams"], "int64"), _spec("level", [], "int64"),
                                    _spec("self_keys", self_cache, "float32"),
                                    _spec("self_values", self_cache, "float32"),
                                    _spec("cross_keys", cross, "float32"), _spec("cross_values", cross, "float32"),
                                    _spec("encoder_bias", ["batch", "source"], "float32")],
                         "outputs": [_spec("log_probs", ["batch", "beams", k_max], "float32"),
                                     _spec("new_self_keys", self_cache, "float32"),
                                     _spec("new_self_values", self_cache, "float32")],
                         "cache": "self-attention keys/values per beam, D slots (gather by parent beam before each "
                                  "step); cross-attention keys/values per request, shared by its beams"},
    }


def _spec(name: str, shape: list, dtype: str) -> dict:
    return {"name": name, "shape": shape, "dtype": dtype}


def _onnx_export(wrapper: torch.nn.Module, args: tuple, path: Path, config: ExportConfig, *,
                 inputs: tuple[str, ...], outputs: tuple[str, ...], dynamic: dict[str, dict[int, str]]) -> None:
    with warnings.catch_warnings():
        # Expected noise: the legacy exporter's deprecation notice, and dynamo's note that axes sharing
        # one Dim (state/last_code rows) keep a single name.
        warnings.simplefilter("ignore", DeprecationWarning)
        # The tracer notes that qkv.split(d_model) uses a Python int: d_model is a constant of the model.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # Advanced indexing with negative indices would be wrong in the legacy graph; every index here is
        # clamped or a code id (>= 0).
        warnings.filterwarnings("ignore", message="Exporting aten::index operator", category=UserWarning)
        # onnx's constant folder evaluates T5's log-spaced position buckets, log(0) included, on a branch
        # that torch.where discards.
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="onnx.reference")
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used", category=UserWarning)
        _run_exporter(wrapper, args, path, config, inputs=inputs, outputs=outputs, dynamic=dynamic)
    if not path.exists():
        raise RuntimeError(f"torch.onnx.export did not write {path}; try --exporter legacy")
    _externalize_tables(path)


def _externalize_tables(path: Path) -> None:
    """Move ``path``'s initializers of layout.EXTERNAL_DATA_BYTES or more (the item table) into one
    ``<graph>.data`` file beside it (none for a small catalogue; export_module lists what is there).

    onnxruntime memory-maps external data on CPU, so server workers on one export share those pages
    (file-backed) instead of each copying an inlined (n_items, d) table into its own memory.
    """
    import onnx

    model = onnx.load(str(path))
    if any(len(t.raw_data) >= layout.EXTERNAL_DATA_BYTES for t in model.graph.initializer):
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + layout.EXTERNAL_DATA_SUFFIX, size_threshold=layout.EXTERNAL_DATA_BYTES)


def _run_exporter(wrapper: torch.nn.Module, args: tuple, path: Path, config: ExportConfig, *,
                  inputs: tuple[str, ...], outputs: tuple[str, ...], dynamic: dict[str, dict[int, str]]) -> None:
    names = list(inputs) + list(outputs)
    if config.exporter == "dynamo":
        from torch.export import Dim

        dims: dict[str, Dim] = {}
        shapes = {name: {axis: dims.setdefault(label, Dim(label)) for axis, label in dynamic.get(name, {}).items()}
                  or None for name in inputs}
        torch.onnx.export(wrapper, args, str(path), dynamo=True, external_data=False, verbose=False,
                          opset_version=config.opset, input_names=list(inputs), output_names=list(outputs),
                          dynamic_shapes=shapes)
    else:
        torch.onnx.export(wrapper, args, str(path), dynamo=False, opset_version=config.opset,
                          input_names=list(inputs), output_names=list(outputs),
                          dynamic_axes={n: dynamic[n] for n in names if dynamic.get(n)})


# ---------------------------------------------------------------------- checks
def _verify(module, folder: Path, config: ExportConfig) -> dict:
    """Parity against torch eager (and the int8 trial); raises when parity fails."""
    from genrec.export.parity import compare, random_histories
    from genrec.serving.runtime import ExportRuntime

    runtime = ExportRuntime(folder)
    max_items = runtime.max_items
    lengths = [1, max_items, max_items + 3, 2, max(1, max_items // 2), 3, max_items, 1, 5]
    batches, start = [], 0
    for b in _PARITY_BATCHES:
        batches.append(random_histories(runtime.n_items, [lengths[(start + i) % len(lengths)] for i in range(b)],
                                        config.seed + len(batches)))
        start += b
    k = min(config.parity_k, runtime.n_items)
    width = max(config.beam_width, k)
    checks: dict = {}
    if config.parity_check:
        results = [compare(module, runtime, hist, k=k, beam_width=width) for hist in batches]
        worst = {
            "n_histories": sum(r.n_histories for r in results),
            "batch_sizes": list(_PARITY_BATCHES),
            "same_items": all(r.same_items for r in results),
            "inf_pattern_equal": all(r.inf_pattern_equal for r in results),
            "max_score_diff": max(r.max_score_diff for r in results),
            "max_logit_diff": max(r.max_logit_diff for r in results),
            "max_state_diff": max(r.max_state_diff for r in results),
            "tolerance": config.parity_tolerance,
            "score_tolerance": results[0].score_tolerance(config.parity_tolerance),
            "k": k, "beam_width": width,
        }
        if not all(r.ok(config.parity_tolerance) for r in results):
            raise RuntimeError(f"ONNX parity check failed for {folder.name}: {worst}. The export is not published; "
                               "try --exporter legacy or a different --opset, and report the model config.")
        checks["parity"] = worst
    if config.int8:
        checks["int8"] = _try_int8(runtime, folder, batches, k, width)
    return checks


def _try_int8(runtime, folder: Path, batches: list[list[np.ndarray]], k: int, width: int) -> dict:
    """Quantize both graphs' weights to int8; keep them only if every parity history's top-k is unchanged."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from genrec.serving.runtime import ExportRuntime, RuntimeConfig

    reference = [runtime.recommend(h, k, exclude_history=False, beam_width=width).items for h in batches]
    trial = Path(tempfile.mkdtemp(prefix=".int8.", dir=folder))
    try:
        graphs = (layout.ENCODER_FILE, layout.DECODER_STEP_FILE)
        # a graph with external data keeps it external (its "<graph>.data" is rewritten beside it)
        external = [name for name in graphs if (folder / (name + layout.EXTERNAL_DATA_SUFFIX)).exists()]
        for name in graphs:
            # Matrix products only: embedding tables and the -inf code bias must stay float.
            quantize_dynamic(str(folder / name), str(trial / name), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gemm"], use_external_data_format=name in external)
        for name in os.listdir(folder):
            if (folder / name).is_file() and not (trial / name).exists():
                shutil.copy2(folder / name, trial / name)
        total = sum(len(h) for h in batches)
        try:
            quantized = ExportRuntime(trial, RuntimeConfig(verify_checksums=False))
            changed = sum(int((quantized.recommend(h, k, exclude_history=False, beam_width=width).items != ref)
                              .any(axis=1).sum()) for h, ref in zip(batches, reference))
        except (ValueError, ArtifactError) as e:   # e.g. NaN log-probs from a badly quantized layer
            return {"kept": False, "reason": f"the quantized graphs fail to decode: {e}"}
        if changed:
            return {"kept": False, "reason": f"top-{k} changed for {changed}/{total} parity histories"}
        for name in [*graphs, *(name + layout.EXTERNAL_DATA_SUFFIX for name in external)]:
            os.replace(trial / name, folder / name)
        return {"kept": True, "reason": f"top-{k} identical for {total} parity histories"}
    finally:
        shutil.rmtree(trial, ignore_errors=True)


# ---------------------------------------------------------------------- manifest and folder
def _model_fields(module) -> dict:
    cfg = module.model.cfg
    if module.arch == "causal":
        return {"d_model": cfg.d_model, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "d_ff": cfg.d_ff,
                "content_dim": cfg.content_dim, "item_id_embedding": cfg.n_items > 0}
    t5 = module.model.t5.config
    return {"d_model": t5.d_model, "n_layers": t5.num_layers, "n_decoder_layers": t5.num_decoder_layers,
            "n_heads": t5.num_heads, "d_kv": t5.d_kv, "d_ff": t5.d_ff, "vocab_size": t5.vocab_size}


def _manifest_fields(module, out: Path, config: ExportConfig, graphs: dict, source: dict | None) -> dict:
    cfg = module.model.cfg
    return {
        "format_version": layout.FORMAT_VERSION,
        "name": config.name or out.name,
        "arch": module.arch,
        "opset": config.opset,
        "exporter": config.exporter,
        "n_items": module.n_items,
        "level_sizes": list(cfg.level_sizes),
        "n_levels": len(cfg.level_sizes),
        "k_max": max(cfg.level_sizes),
        "max_items": cfg.max_items,
        "beam_width": config.beam_width,
        # "exact": score every item from per-level log-probs (parallel head); "beam": trie beam search;
        # "rerank": state . item_table (layout.ITEM_TABLE_FILE) added to the code score of the beam's items
        # (autoregressive head) or of every item (parallel head)
        "decoding": "rerank" if config.search == "rerank" else "exact" if module.parallel else config.search,
        "model": _model_fields(module),
        # each digit's log-prob times this weight before summing (None = all 1): genrec.decode.weighted
        "level_weights": module.config.level_weights,
        "graphs": graphs,
        "source": source or {"run": None, "checkpoint": None},
        "config": to_dict(config),
    }


def _is_export_folder(path: Path) -> bool:
    try:
        return json.loads((path / MANIFEST).read_text(encoding="utf-8")).get("stage") == layout.STAGE
    except (OSError, json.JSONDecodeError):
        return False


def _check_destination(out: Path, config: ExportConfig) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"{out} exists and is a file; choose another --out")
    if any(out.iterdir()):
        if not _is_export_folder(out):
            raise ValueError(f"{out} exists and is not an export folder; choose another --out "
                                  "(genrec export only replaces folders it wrote)")
        if not config.overwrite:
            raise ValueError(f"{out} already holds an export; pass --overwrite true to replace it")


def _make_readable(folder: Path) -> None:
    """Temporary files and folders are created private (0600/0700); an export is meant to be shared."""
    folder.chmod(0o755)
    for path in folder.iterdir():
        if path.is_dir():
            _make_readable(path)
        else:
            path.chmod(0o644)
