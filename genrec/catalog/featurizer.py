"""What `genrec add-items` needs from a run, shipped in an export: the new-item reader and the featurizer.

``genrec export`` writes (listed in the export's manifest.json, entry ``add_items``):

    add_items/model.pt          the GenRec (config + weights; torch.load(weights_only=True))
    add_items/tokenizer.pt      the run's frozen tokenizer (sid/tokenizer.pt)
    add_items/featurizer.json   encoder settings (text template and model fingerprint, image settings),
                                modality order, fusion weights, which vectors the tokenizer reads
    add_items/<m>_mean.npy ...  per-modality statistics of the fusion (and the PCA axes, if any)
    add_items/attributes.json   the attribute vocabulary, when the model reads item attributes
                                (data.use_attributes): a new item's tags map into it

A new item has no interactions, so the modalities learned from them (the SASRec table, imported
matrices) are *absent* for it and get the mean of the present rows, exactly as ``genrec embed``
treats a catalogue item that lacks a modality.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from genrec.io import MANIFEST, ArtifactError, read_manifest, save_npy_atomic, write_json_atomic

ADD_ITEMS_DIR = "add_items"
MODEL_FILE = f"{ADD_ITEMS_DIR}/model.pt"
TOKENIZER_FILE = f"{ADD_ITEMS_DIR}/tokenizer.pt"
FEATURIZER_FILE = f"{ADD_ITEMS_DIR}/featurizer.json"
ATTRIBUTES_FILE = f"{ADD_ITEMS_DIR}/attributes.json"
FUSED = "fused"
# Largest |featurizer(run rows) - RUN/features/fused.npy| the export accepts: the fusion is re-done in
# float64 from the stored statistics, so anything beyond float32 rounding means the statistics are wrong.
FUSE_PARITY_TOLERANCE = 1e-4
ID_KEYS = ("source_id", "parent_asin", "asin", "item_id")     # the first one present names the item (JSONL)
PREDATES = ("this export predates add-items (manifest.json has no 'add_items' entry); re-export with "
            "`genrec export --run RUN --out {dir}` to ship the model, tokenizer and encoder settings it needs")


# ---------------------------------------------------------------------- new items: the SOURCE file
def read_new_items(path: str | Path) -> pl.DataFrame:
    """The items of ``path`` as a frame (source_id, title, description, brand, categories, price, image).

    Two formats genrec's readers already parse:
      - ``*.jsonl`` / ``*.jsonl.gz``: one JSON object per line, e.g. an Amazon 2023 ``meta_<Cat>.jsonl``
        line; the id is the first of source_id / parent_asin / asin / item_id; brand or store;
        categories as a list or a comma-joined string; image a path (relative to the file) or URL,
        or a 2023 ``images`` list;
      - ``<Cat>.item.json``: LC-Rec's item table ``{"<id>": {"title", "description", "brand", "categories"}}``.
    A malformed line or entry, or an id given twice, stops with its file, line and field.
    """
    from genrec.data.readers.amazon_raw import _first_image_2023
    from genrec.data.readers.common import (
        DataFormatError, ImageResolver, ItemBuffer, PriceParser, ReadContext, excerpt, iter_lines, load_json_file,
        parse_json_line, split_categories, text_value,
    )

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; SOURCE is a .jsonl file of items or an LC-Rec <Cat>.item.json")
    ctx = ReadContext(on_error="raise", progress=False)
    items, price, image = ItemBuffer(), PriceParser(), ImageResolver(path.parent)

    def add(item: str, fields: dict, where: str) -> None:
        if item in items:
            raise DataFormatError(f"{path}, {where}: item {item!r} appears twice; give each new item once")
        img = fields.get("image") or fields.get("imUrl")
        if img is None and isinstance(fields.get("images"), list):
            img = _first_image_2023(fields)
        items.add(item, title=text_value(fields.get("title")), description=text_value(fields.get("description")),
                  brand=text_value(fields.get("brand") or fields.get("store")),
                  categories=split_categories(fields.get("categories") or fields.get("category")),
                  price=price(fields.get("price")), image=image(img))

    name = path.name.lower()
    if name.endswith(".item.json"):
        table = load_json_file(path, ctx)
        if not isinstance(table, dict):
            raise DataFormatError(f"{path}: expected a JSON object {{item id: {{title, ...}}}} (LC-Rec .item.json), "
                                  f"got {type(table).__name__}; fix the file or give a .jsonl of items")
        for item, fields in table.items():
            if not isinstance(fields, dict) or not str(item).strip():
                raise DataFormatError(f"{path}, key {item!r}: expected an object with title/description/brand/"
                                      f"categories, got {excerpt(fields)}; fix that entry")
            add(str(item).strip(), fields, f"key {item!r}")
    elif name.endswith((".jsonl", ".jsonl.gz", ".json.gz", ".ndjson")):
        for lineno, line in iter_lines(path, ctx):
            obj = parse_json_line(line)
            if obj is None:
                raise DataFormatError(f"{path}, line {lineno}: expected one JSON object per line, got {excerpt(line)}; "
                                      "fix that line")
            key = next((k for k in ID_KEYS if k in obj), None)
            item = None if key is None else text_value(obj[key])
            if item is None:
                raise DataFormatError(f"{path}, line {lineno}: field 'source_id' (or parent_asin / asin / item_id) is "
                                      f"missing or empty; expected the new item's id, e.g. "
                                      '{"source_id": "B000123", "title": "..."}')
            add(item, obj, f"line {lineno}")
    else:
        raise DataFormatError(f"{path}: unknown SOURCE format; expected a .jsonl file (one item per line) or an LC-Rec "
                              "<Cat>.item.json; see docs/data.md")
    if not len(items):
        raise DataFormatError(f"{path}: holds no items; nothing to add")
    frame = items.frame().rename({"item": "source_id"})
    return frame.with_columns(pl.col("source_id").cast(pl.Utf8))


# ---------------------------------------------------------------------- the run's featurizer
@dataclass
class Featurizer:
    """Item metadata -> the vectors the run's tokenizer and model read, as ``genrec embed`` computed them.

    ``modalities`` is in fused-vector order: name -> {"new_items": "encode" | "mean", "dim", "weight"}.
    Fusion per modality (genrec.features.fuse): (x - mean) / std (constant columns 0), absent rows 0,
    row L2-normalised, times sqrt(weight); concatenated; optionally (x - center) @ axes (/ scale).
    """

    modalities: dict[str, dict]
    tokenizer_inputs: list[str]                 # ["fused"] or the modality names the tokenizer reads
    text: dict | None = None                    # TextConfig fields, plus the model fingerprint seen at embed time
    image: dict | None = None                   # ImageConfig fields, plus the checkpoint sha256
    eps: float = 1e-6
    mean: dict[str, np.ndarray] = field(default_factory=dict)     # (d,) mean of the present rows
    std: dict[str, np.ndarray] = field(default_factory=dict)      # (d,) std of the present rows
    pca: dict[str, np.ndarray] = field(default_factory=dict)      # center (D,), axes (D, k), scale (k,) if whitened

    # ------------------------------------------------------------ fitting from a run
    @classmethod
    def from_run(cls, run: str | Path) -> "Featurizer":
        """Statistics and settings of RUN/features (and which vectors RUN/sid's tokenizer read)."""
        from genrec.tokenizer.features import MASK_SUFFIX

        features = Path(run) / "features"
        manifest = read_manifest(features, "embed")
        sid = read_manifest(Path(run) / "sid", "tokenize")
        fused = manifest["fused"]
        blocks = fused["blocks"]
        # Fused-vector order; modalities with weight 0 (not in the fused vector) last:
        # a per-modality tokenizer may read them.
        order = sorted(blocks, key=lambda m: blocks[m][0]) + sorted(set(manifest["modalities"]) - set(blocks))
        config = manifest.get("config", {})
        mods, raw, masks = {}, {}, {}
        for name in order:
            entry = manifest["modalities"][name]
            x = np.load(features / entry["file"], allow_pickle=False).astype(np.float64)
            mask_path = features / f"{name}{MASK_SUFFIX}.npy"
            masks[name] = (np.load(mask_path, allow_pickle=False).astype(bool) if mask_path.exists()
                           else np.ones(len(x), bool))
            raw[name] = x
            how = "encode" if entry.get("source") == "encoder" and name in ("text", "image") else "mean"
            weight = float(fused["modalities"][name]["weight"]) if name in blocks else 0.0
            mods[name] = {"new_items": how, "dim": int(x.shape[1]), "weight": weight, "source": entry.get("source")}
        text = image = None
        if mods.get("text", {}).get("new_items") == "encode":
            text = {**config["text"], "fingerprint": manifest["modalities"]["text"].get("fingerprint")}
        if mods.get("image", {}).get("new_items") == "encode":
            image = {**config["image"], "checkpoint_sha256": manifest["modalities"]["image"].get("checkpoint_sha256")}
        self = cls(modalities=mods, tokenizer_inputs=list(sid.get("modalities") or [FUSED]), text=text, image=image,
                   eps=float(config.get("fuse", {}).get("eps", 1e-6)))
        for name in order:
            present = raw[name][masks[name]]
            self.mean[name], self.std[name] = present.mean(axis=0), present.std(axis=0)
        if "projection" in fused:
            self.pca = _pca_axes(self._concat(raw, masks), int(fused["projection"]["dim"]),
                                 fused["projection"]["method"] == "pca-whiten")
        expected = np.load(features / fused["file"], allow_pickle=False)
        diff = float(np.abs(self.fuse(raw, masks) - expected).max()) if len(expected) else 0.0
        if not diff <= FUSE_PARITY_TOLERANCE:
            raise ArtifactError(f"{features / fused['file']}: re-fusing the run's matrices from their statistics "
                                f"differs by {diff:.2e} (> {FUSE_PARITY_TOLERANCE}); the features folder changed "
                                "after embed. Re-run `genrec embed` (and the later stages) before exporting")
        return self

    # ------------------------------------------------------------ fusion
    def _concat(self, raw: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> np.ndarray:
        parts = []
        for name, info in self.modalities.items():
            if info["weight"] == 0:
                continue
            x = np.asarray(raw[name], np.float64)
            std = self.std[name]
            constant = std < self.eps
            z = (x - self.mean[name]) / np.where(constant, 1.0, std)
            z[:, constant] = 0.0
            z[~masks[name]] = 0.0
            norms = np.linalg.norm(z, axis=1, keepdims=True)
            z = np.divide(z, norms, out=np.zeros_like(z), where=norms > 0)
            # float32 from here on, exactly as genrec.features.fuse: the PCA axes then come out identical
            parts.append(z.astype(np.float32) * np.float32(np.sqrt(info["weight"])))
        return np.concatenate(parts, axis=1)

    def fuse(self, raw: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> np.ndarray:
        """(n, D) float32 fused vectors of rows ``raw[m]`` (present where ``masks[m]``)."""
        x = self._concat(raw, masks)
        if self.pca:
            x = (x.astype(np.float64) - self.pca["center"]) @ self.pca["axes"]
            if "scale" in self.pca:
                x = x / self.pca["scale"]
        return x.astype(np.float32)

    # ------------------------------------------------------------ new items
    def embed(self, items: pl.DataFrame, base_dirs: list[Path], progress: bool = False) -> tuple[dict, dict, dict]:
        """(raw matrices, presence masks, counts) for ``items``: text and image through the run's encoders,
        every other modality absent (filled with its mean, as embed fills an item that lacks it)."""
        n = items.height
        raw, masks, counts = {}, {}, {}
        for name, info in self.modalities.items():
            x, mask = np.zeros((n, info["dim"])), np.zeros(n, bool)
            if info["new_items"] == "encode" and name == "text":
                x, mask = self._text(items, progress)
            elif info["new_items"] == "encode" and name == "image":
                x, mask = self._image(items, base_dirs, progress)
            x = np.array(x, np.float64)
            x[~mask] = self.mean[name]
            raw[name], masks[name] = x, mask
            counts[name] = {"present": int(mask.sum()), "filled_with_mean": int((~mask).sum())}
        return raw, masks, counts

    def _text(self, items: pl.DataFrame, progress: bool) -> tuple[np.ndarray, np.ndarray]:
        from genrec.features.text import TextConfig, TextEncoder, item_texts

        settings = {k: v for k, v in self.text.items() if k != "fingerprint"}
        config = TextConfig(**settings)
        encoder = TextEncoder(config)
        if self.text.get("fingerprint") and encoder.fingerprint != self.text["fingerprint"]:
            raise ArtifactError(f"text model {config.model!r} at {encoder.folder} is not the one the run embedded with "
                                f"(fingerprint {encoder.fingerprint[:12]}…, run {self.text['fingerprint'][:12]}…); "
                                "install the same model (or re-run the pipeline with this one)")
        texts = item_texts(items, config)
        mask = np.array([bool(t) for t in texts])
        x = np.zeros((items.height, self.modalities["text"]["dim"]), np.float32)
        if mask.any():
            x[mask], _ = encoder.encode([t for t in texts if t], cache=None, progress=progress)
        return x, mask

    def _image(self, items: pl.DataFrame, base_dirs: list[Path], progress: bool) -> tuple[np.ndarray, np.ndarray]:
        from genrec.features.image import ImageConfig, ImageEncoder, resolve_image_sources
        from genrec.io import sha256_file

        config = ImageConfig(**{k: v for k, v in self.image.items() if k != "checkpoint_sha256"})
        paths, reasons = resolve_image_sources(items, config, base_dirs)
        if not any(p is not None for p in paths):
            return np.zeros((items.height, self.modalities["image"]["dim"])), np.zeros(items.height, bool)
        encoder = ImageEncoder(config)
        want = self.image.get("checkpoint_sha256")
        if want and sha256_file(encoder.checkpoint) != want:
            raise ArtifactError(f"image checkpoint {encoder.checkpoint} is not the one the run embedded with; "
                                "install the same weights (or re-run the pipeline with these)")
        res = encoder.encode_files(paths, reasons, cache=None, progress=progress)
        return np.nan_to_num(res.features), res.mask

    def tokenizer_features(self, raw: dict[str, np.ndarray], fused: np.ndarray) -> dict[str, np.ndarray]:
        return {name: (fused if name == FUSED else raw[name]).astype(np.float32) for name in self.tokenizer_inputs}

    # ------------------------------------------------------------ files
    def save(self, folder: Path) -> list[str]:
        """Write featurizer.json and its arrays into ``folder/add_items``; returns the files (relative to folder)."""
        out = folder / ADD_ITEMS_DIR
        out.mkdir(parents=True, exist_ok=True)
        arrays = ({f"{m}_mean": self.mean[m] for m in self.modalities}
                  | {f"{m}_std": self.std[m] for m in self.modalities})
        arrays |= {f"pca_{k}": v for k, v in self.pca.items()}
        for name, value in arrays.items():
            save_npy_atomic(out / f"{name}.npy", np.asarray(value, np.float64))
        # JSON objects are written with sorted keys: "order" keeps the fused-vector order of the modalities.
        write_json_atomic(out / "featurizer.json", {"modalities": self.modalities, "order": list(self.modalities),
                                                    "tokenizer_inputs": self.tokenizer_inputs,
                                                    "text": self.text, "image": self.image, "eps": self.eps,
                                                    "arrays": sorted(arrays)})
        return [FEATURIZER_FILE] + [f"{ADD_ITEMS_DIR}/{name}.npy" for name in sorted(arrays)]

    @classmethod
    def load(cls, folder: Path) -> "Featurizer":
        path = folder / FEATURIZER_FILE
        spec = json.loads(path.read_text(encoding="utf-8"))
        arrays = {name: np.load(folder / ADD_ITEMS_DIR / f"{name}.npy", allow_pickle=False) for name in spec["arrays"]}
        mods = {name: spec["modalities"][name] for name in spec["order"]}
        return cls(modalities=mods, tokenizer_inputs=spec["tokenizer_inputs"], text=spec["text"], image=spec["image"],
                   eps=spec["eps"], mean={m: arrays[f"{m}_mean"] for m in mods},
                   std={m: arrays[f"{m}_std"] for m in mods},
                   pca={k[4:]: v for k, v in arrays.items() if k.startswith("pca_")})


def _pca_axes(x: np.ndarray, dim: int, whiten: bool) -> dict[str, np.ndarray]:
    """genrec.features.fuse.pca_project's axes (same maths, same sign rule), kept to project new rows."""
    n = x.shape[0]
    center = x.mean(axis=0)             # float32 mean of the float32 concatenation, as pca_project takes it
    xc = x.astype(np.float64) - center
    cov = xc.T @ xc / max(n - 1, 1)
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1][:dim]
    evals, evecs = np.clip(evals[order], 0.0, None), evecs[:, order]
    flip = np.sign(evecs[np.abs(evecs).argmax(axis=0), np.arange(dim)])
    out = {"center": center, "axes": evecs * np.where(flip == 0, 1.0, flip)}
    if whiten:
        out["scale"] = np.sqrt(np.maximum(evals, np.finfo(np.float64).eps))
    return out


# ---------------------------------------------------------------------- what an export ships
@dataclass
class AddItemsAssets:
    """What `genrec export` ships for add-items besides the model: the frozen tokenizer, the featurizer and,
    for a model that reads item attributes, the attribute vocabulary (genrec.data.attributes)."""

    tokenizer: Path | None = None        # sid/tokenizer.pt
    featurizer: Featurizer | None = None
    reason: str | None = None            # why the featurizer could not be built (recorded in the manifest)
    attributes: list[str] | None = None  # attribute vocabulary: id i + 1 is attributes[i]

    @classmethod
    def from_run(cls, run: str | Path, attributes: bool = True) -> "AddItemsAssets":
        """The run's assets; ``attributes``: also its attribute vocabulary (for a model that reads attributes,
        so an export of any other model does not read the catalogue's tags for nothing)."""
        from genrec.data.attributes import attribute_vocab, item_tags
        from genrec.data.dataset import dataset_dir
        from genrec.tokenizer.semantic_ids import CHECKPOINT_FILE, SID_DIR

        run = Path(run)
        tokenizer = run / SID_DIR / CHECKPOINT_FILE
        featurizer, reason = None, None
        if (run / "features" / MANIFEST).exists() and (run / SID_DIR / MANIFEST).exists():
            try:
                featurizer = Featurizer.from_run(run)
            except (ArtifactError, KeyError, ValueError) as e:     # the export itself must not fail over add-items
                reason = f"{type(e).__name__}: {e}"
                print(f"genrec export: warning: add-items support left out: {reason}", flush=True)
        items = dataset_dir(run) / "items.parquet"    # the vocabulary training built (genrec.lit.data), rebuilt
        vocab = attribute_vocab(item_tags(pl.read_parquet(items))) if attributes and items.exists() else None
        return cls(tokenizer=tokenizer if tokenizer.exists() else None, featurizer=featurizer, reason=reason,
                   attributes=vocab)

    def write(self, folder: Path, module) -> tuple[list[str], dict]:
        """Write add_items/ into the export being built; returns (files, the manifest's add_items entry)."""
        (folder / ADD_ITEMS_DIR).mkdir(exist_ok=True)
        module.save(folder / MODEL_FILE)
        files, entry = [MODEL_FILE], {"model": MODEL_FILE}
        if self.tokenizer is not None:
            shutil.copyfile(self.tokenizer, folder / TOKENIZER_FILE)
            files.append(TOKENIZER_FILE)
            entry["tokenizer"] = TOKENIZER_FILE
        if self.featurizer is not None:
            files += self.featurizer.save(folder)
            entry["featurizer"] = FEATURIZER_FILE
        missing = [k for k in ("tokenizer", "featurizer") if k not in entry]
        if missing:
            entry["missing"] = missing
        if self.reason:
            entry["reason"] = self.reason
        if module.config.attributes_per_item:
            n_attributes = int(module.config.backbone.n_attributes)
            if self.attributes is not None and len(self.attributes) == n_attributes:
                write_json_atomic(folder / ATTRIBUTES_FILE, {"vocab": list(self.attributes)})
                files.append(ATTRIBUTES_FILE)
                entry["attributes"] = ATTRIBUTES_FILE
            else:      # add-items still works; its new items then get no attribute embedding (it says so)
                entry["attributes_missing"] = (
                    "no attribute vocabulary was given" if self.attributes is None else
                    f"the vocabulary has {len(self.attributes)} tags but the model reads {n_attributes}")
        return files, entry
