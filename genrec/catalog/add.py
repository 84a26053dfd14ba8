"""`genrec add-items`: new items into an export folder without retraining.

    add_items(export_dir, source, out=None, AddItemsConfig())     # -> the new export's manifest

source file (featurizer.read_new_items) -> the run's encoders (text, image) and fusion -> frozen
tokenizer -> codes (existing items' codes never change) -> the model with N + m items ->
``export_module`` (graphs, trie, postings, items.json, items_meta.json, checksums, parity check) ->
a new folder published atomically (temporary sibling + rename), at ``out`` or in place of ``export_dir``.

A new item's learned item-id embedding row (and free output row, `item_output` "free") is the mean of the
trained rows: the id term then adds the component every trained item shares, so a new item's input vector
stays where the model has seen item vectors (a zero row would shift it by minus that mean). Its content
row is its fused vector, its popularity 0. For a model that reads item attributes (``data.use_attributes``)
a new item's categories and brand map into the vocabulary the export ships (add_items/attributes.json);
tags the catalogue never had have no learned embedding and are left out (the add manifest counts them).

With ``run`` (``--run RUN``, the run the export came from), a new item borrows what it cannot have from its
``neighbours`` nearest catalogue items by text (cosine of RUN/features/text.npy): the mean of their
SASRec-table rows (and of any other modality it lacks) and of their learned id-embedding rows. Its
collaborative digits then point where similar items' do, instead of to one shared "average item" code
that the model rarely predicts (bench/cold_start.py measures both).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from genrec.catalog.featurizer import PREDATES, TOKENIZER_FILE, AddItemsAssets, Featurizer, read_new_items
from genrec.io import ArtifactError, read_manifest, sha256_file


@dataclass
class AddItemsConfig:
    skip_existing: bool = False      # items already in the export: skip them (counted) instead of stopping
    overwrite: bool = False          # replace an existing --out folder (an in-place add always replaces DIR)
    parity_check: bool | None = None  # ONNX vs torch check of the new export (None = as the export was made)
    progress: bool = False           # encoder progress bars
    run: Path | None = None          # the export's run folder: fill absent modalities and id rows from text neighbours
    neighbours: int = 10             # catalogue items a new item borrows from (with ``run``)

    def __post_init__(self):
        if self.neighbours < 1:
            raise ValueError(f"neighbours must be >= 1, got {self.neighbours}")



def add_items(export_dir: str | Path, source: str | Path, out: str | Path | None = None,
              config: AddItemsConfig | None = None) -> dict:
    """Add the items of ``source`` to the export at ``export_dir``; write the result to ``out`` (default: in
    place, replacing ``export_dir`` atomically). Returns the new manifest; its ``added_items`` entry has the counts."""
    import torch

    from genrec.export.onnx import ExportConfig, export_module
    from genrec.model.genrec import GenRec
    from genrec.tokenizer.semantic_ids import place_new_items
    from genrec.tokenizer.tokenizer import load_tokenizer

    config = config or AddItemsConfig()
    start = time.perf_counter()
    folder, source = Path(export_dir), Path(source)
    out = folder if out is None else Path(out)
    manifest = read_manifest(folder, "export", verify=True)
    entry = manifest.get("add_items")
    if not entry:
        raise ArtifactError(f"{folder}: " + PREDATES.format(dir=folder))
    if entry.get("missing"):
        raise ArtifactError(f"{folder}: this export has no {' and no '.join(entry['missing'])} for add-items (it was "
                            "exported from an in-memory model, not a run"
                            + (f"; {entry['reason']}" if entry.get("reason") else "") + "); re-export with "
                            f"`genrec export --run RUN --out {folder}`")
    if out != folder and out.exists() and not config.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it, or choose another --out")

    items = json.loads((folder / "items.json").read_text(encoding="utf-8"))
    known = set(items["source_id"])
    new = read_new_items(source)
    existing = [s for s in new["source_id"].to_list() if s in known]
    if existing and not config.skip_existing:
        shown = ", ".join(existing[:5]) + (", ..." if len(existing) > 5 else "")
        raise ValueError(f"{source}: {len(existing)} of {new.height} items are already in {folder} ({shown}); "
                         "remove them, or pass --skip-existing to skip them (they are counted)")
    new = new.filter(~pl.col("source_id").is_in(list(known)))
    if new.height == 0:
        raise ValueError(f"{source}: every item is already in {folder}; nothing to add")

    model = GenRec.from_checkpoint(folder / entry["model"])
    featurizer = Featurizer.load(folder)
    tokenizer = load_tokenizer(folder / entry["tokenizer"])
    raw, masks, counts = featurizer.embed(new, [source.parent.resolve()], config.progress)
    nearest = None
    if config.run is not None:
        nearest = borrow_from_neighbours(Path(config.run), raw, masks, counts, int(manifest["n_items"]),
                                         config.neighbours)
    fused = featurizer.fuse(raw, masks)

    level_sizes = tuple(manifest["level_sizes"])
    if tuple(tokenizer.semantic_level_sizes) != level_sizes[:-1]:
        raise ArtifactError(f"{folder / TOKENIZER_FILE}: digits {list(tokenizer.semantic_level_sizes)} "
                            f"do not match the export's level_sizes {list(level_sizes)} (without the dedup digit); "
                            "re-export the run")
    matrices = tokenizer.check_inputs(featurizer.tokenizer_features(raw, fused), source=str(source))
    raw_codes = tokenizer.raw_codes(matrices)
    dists = tokenizer.last_level_distances(matrices, raw_codes) if tokenizer.last_level == "unique" else None
    old_codes = np.load(folder / "codes.npy", allow_pickle=False)
    codes = place_new_items(old_codes, raw_codes, dists, dedup_capacity=level_sizes[-1])

    vocab, new_attributes, attributes_fill = _new_item_attributes(folder, entry, model, new)
    grown = grow_model(model, codes, fused, nearest, new_attributes)
    meta = _items_meta(folder, manifest, new)
    export_config = ExportConfig(**{**manifest["config"], "overwrite": True,
                                    **({} if config.parity_check is None else {"parity_check": config.parity_check})})
    export_config.name = manifest.get("name")
    added = {"n_added": new.height, "n_skipped_existing": len(existing), "source": str(source.resolve()),
             "source_sha256": sha256_file(source),
             "base": {"name": manifest.get("name"), "created": manifest.get("created"), "n_items": manifest["n_items"]},
             "modalities": counts,
             "id_embedding_fill": None if not grown.item_id_embedding else (
                 "mean of the trained rows" if nearest is None else
                 f"mean of the {config.neighbours} nearest items' rows by text (mean of all rows without text)"),
             "attributes_fill": attributes_fill,
             "first_new_item_id": int(manifest["n_items"])}
    source_info = {**manifest.get("source", {}),
                   "added_items": [*manifest.get("source", {}).get("added_items", []), added]}
    assets = AddItemsAssets(tokenizer=folder / entry["tokenizer"], featurizer=featurizer, attributes=vocab)
    with torch.no_grad():
        new_manifest = export_module(grown, out, export_config,
                                     source_ids=items["source_id"] + new["source_id"].to_list(),
                                     titles=items["title"] + new["title"].to_list(), source=source_info,
                                     add_items=assets, **meta)
    added["seconds"] = round(time.perf_counter() - start, 2)
    tags = (f"; attributes: {attributes_fill['items_with_tags']} with known tags, {attributes_fill['unknown_tags']} "
            "unknown tags left out" if isinstance(attributes_fill, dict) else "")
    print(f"added {new.height} items to {folder.name} -> {out} ({new_manifest['n_items']} items"
          + (f"; {len(existing)} already present, skipped" if existing else "") + tags + f"; {added['seconds']} s)")
    return new_manifest


def borrow_from_neighbours(run: Path, raw: dict, masks: dict, counts: dict, n_old: int, k: int) -> np.ndarray:
    """Fill each new item's absent modalities (in place) with the mean of its ``k`` nearest catalogue items'
    rows by text cosine -> (m, k) neighbour ids, -1 rows for new items without text (they keep the mean fill)."""
    from genrec.io import MANIFEST

    features = run / "features"
    try:
        listed = json.loads((features / MANIFEST).read_text())["modalities"]
    except (OSError, ValueError, KeyError) as err:
        raise ArtifactError(f"{features / MANIFEST}: cannot read the run's feature manifest ({err}); pass the "
                            "--run the export was made from") from None
    if "text" not in listed or "text" not in raw:
        raise ArtifactError(f"{features}: neighbours are found by text, and this run or export has no text modality; "
                            "drop --run")

    def load(name: str) -> tuple[np.ndarray, np.ndarray]:
        x = np.load(features / listed[name]["file"], allow_pickle=False)
        if x.shape[0] != n_old:
            raise ArtifactError(f"{features / listed[name]['file']}: {x.shape[0]} rows but the export has {n_old} "
                                "items; pass the --run this export was made from")
        mask_file = listed[name].get("mask_file")
        present = np.load(features / mask_file) if mask_file else np.ones(n_old, bool)
        return x.astype(np.float32), present.astype(bool)

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    old_text, old_has_text = load("text")
    has_text = masks["text"]
    sims = unit(raw["text"][has_text].astype(np.float32)) @ unit(old_text).T       # (m', N)
    sims[:, ~old_has_text] = -np.inf

    def top(s: np.ndarray) -> np.ndarray:
        kk = min(k, s.shape[1])
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        return np.take_along_axis(part, np.argsort(-np.take_along_axis(s, part, axis=1), axis=1), axis=1)

    nearest = np.full((len(has_text), min(k, n_old)), -1, np.int64)
    nearest[has_text] = top(sims)
    for name in raw:
        absent = ~masks[name] & has_text
        if name not in listed or name in ("text", "image") or not absent.any():
            continue
        old, old_present = load(name)
        s = sims[absent[has_text]].copy()
        s[:, ~old_present] = -np.inf       # borrow only real rows, not the run's own mean fill
        raw[name][absent] = old[top(s)].mean(axis=1)
        masks[name] = masks[name] | absent
        counts[name] = {**counts[name], "filled_with_mean": int((~masks[name]).sum()),
                        f"from_{k}_text_neighbours": int(absent.sum())}
    return nearest


def _new_item_attributes(folder: Path, entry: dict, model, new: pl.DataFrame):
    """(vocabulary, (m, A) attribute ids, the manifest's note) for a model that reads attributes, else Nones."""
    from genrec.data.attributes import attribute_ids, item_tags

    width = model.config.attributes_per_item
    if not width:
        return None, None, None
    if not entry.get("attributes"):
        return None, None, ("none: new items get no attribute embedding (this export ships no attribute "
                            f"vocabulary: {entry.get('attributes_missing', 'it predates add_items/attributes.json')}"
                            "; re-export the run to ship it)")
    path = folder / entry["attributes"]
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))["vocab"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ArtifactError(f"{path}: cannot read the attribute vocabulary ({err}); re-export the run") from None
    ids, counts = attribute_ids(item_tags(new), vocab, width)
    return vocab, ids, {"vocabulary": len(vocab), **counts}


def grow_model(model, new_codes: np.ndarray, new_content: np.ndarray, nearest: np.ndarray | None = None,
               new_attributes: np.ndarray | None = None):
    """A GenRec with the same weights and ``len(new_codes)`` more items (ids N, N+1, ...); ``nearest`` (m, k)
    catalogue ids give each new item the mean of their id-embedding rows (-1 rows: the mean of all rows);
    ``new_attributes`` (m, A) are their attribute ids (None: none, all padding)."""
    import copy

    import torch

    from genrec.model.genrec import GenRec, GenRecConfig

    n, m = model.n_items, len(new_codes)
    cfg = model.config.to_dict()
    cfg["n_items"] = n + m
    for rows in ("n_items", "n_output_items"):  # a learned id embedding / free output table: one row per item
        if cfg["backbone"].get(rows):
            cfg["backbone"][rows] = n + m
    state = model.state_dict()
    grown_state = copy.copy(state)
    grown_state["item_codes"] = torch.cat([state["item_codes"], torch.as_tensor(new_codes, dtype=torch.long)])
    if model.config.content_dim:
        if new_content.shape[1] != model.config.content_dim:
            raise ArtifactError(f"the model reads {model.config.content_dim}-d content vectors but the featurizer "
                                f"gives {new_content.shape[1]}-d ones; re-export the run")
        grown_state["content"] = torch.cat([state["content"], torch.as_tensor(new_content, dtype=torch.float32)])
    for key in ("model.item_emb.weight", "model.item_out_emb.weight"):
        if key not in state:
            continue
        emb = state[key]     # no learned signal for a new item: the mean row (see the module docstring)
        rows = emb.mean(dim=0, keepdim=True).expand(m, -1).clone()
        if nearest is not None:
            found = torch.as_tensor(nearest[:, 0] >= 0)
            rows[found] = emb[torch.as_tensor(nearest[nearest[:, 0] >= 0])].mean(dim=1)
        grown_state[key] = torch.cat([emb, rows])
    if model.config.attributes_per_item:
        width = model.config.attributes_per_item
        rows = (state["item_attributes"].new_zeros(m, width) if new_attributes is None
                else torch.as_tensor(np.asarray(new_attributes), dtype=torch.long))
        if tuple(rows.shape) != (m, width):
            raise ValueError(f"new_attributes must be ({m}, {width}) attribute ids, got {tuple(rows.shape)}")
        grown_state["item_attributes"] = torch.cat([state["item_attributes"], rows])
    grown = GenRec(GenRecConfig(**cfg))
    grown.load_state_dict(grown_state)   # strict: any other per-item tensor would fail here, loudly
    return grown.eval()


def _items_meta(folder: Path, manifest: dict, new: pl.DataFrame) -> dict:
    """export_module's categories/popularity/images for old + new items (old thumbnails are kept as they are)."""
    from genrec.explain import category_label
    from genrec.features.image import ImageConfig, resolve_image_sources

    info = manifest.get("items_meta")
    if not info:
        return {}
    meta = json.loads((folder / info["file"]).read_text(encoding="utf-8"))
    out: dict[str, Any] = {}
    depth = int(manifest.get("config", {}).get("category_depth", -1))
    if "category" in meta:
        out["categories"] = meta["category"] + [category_label(c, depth) for c in new["categories"].to_list()]
    if "popularity" in meta:
        out["popularity"] = meta["popularity"] + [0] * new.height      # no training interactions
    if "image" in meta:
        paths, _ = resolve_image_sources(new, ImageConfig(enabled=True), [])
        out["images"] = meta["image"] + paths
    return out
