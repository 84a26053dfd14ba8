"""Stage ``embed``: ``RUN/dataset/`` -> ``RUN/features/`` (per-modality matrices, fused matrix, manifest).

    text.npy     (n_items, d_text)   item text through the text encoder (or an imported matrix)
    image.npy    (n_items, d_image)  item image through the image encoder (or an imported matrix)
    collab.npy   (n_items, d_model)  SASRec item table, trained on the training split only
    <name>.npy   further imported matrices
    fused.npy    (n_items, D)        genrec.features.fuse of the above
    <m>_mask.npy (n_items,) bool     True = item has modality m; written when some item lacks it
    sasrec/      the SASRec checkpoint (the baseline of the results tables) and its training log
    manifest.json

Row i is item_id i everywhere, float32. A row whose mask is False holds the mean of the present rows
of that modality (and is zero in the fused block after standardisation), so nothing is silently zero.
The folder is built in a temporary sibling and renamed into place only when complete.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from genrec.data.dataset import Dataset, load_dataset
from genrec.features.cache import EmbeddingCache, default_cache_dir
from genrec.features.fuse import FuseConfig, fuse, impute_missing
from genrec.features.image import ImageConfig, ImageEncoder, resolve_image_sources
from genrec.features.precomputed import PrecomputedConfig, load_precomputed
from genrec.features.text import TextConfig, TextEncoder, item_texts
from genrec.io import MANIFEST, input_checksums, save_npy_atomic, sha256_file, write_manifest
from genrec.lit.sasrec import SASRecTrainConfig  # a real import: the CLI resolves the config's type hints

FEATURES_DIR = "features"
FUSED = "fused"
SASREC_DIR = "sasrec"
BUILTIN_ORDER = ("text", "image", "collab")  # modality order in the fused vector; imports follow
MASK_SUFFIX = "_mask"


@dataclass
class EmbedConfig:
    """What the embed stage computes and how it fuses it."""

    text: TextConfig = field(default_factory=TextConfig)     # text template and encoder (text.enabled=False: none)
    image: ImageConfig = field(default_factory=ImageConfig)  # image source and encoder (image.enabled=False: none)
    precomputed: tuple[PrecomputedConfig, ...] = ()  # imported matrices; "text"/"image" replace that encoder
    collab: bool = True                      # train SASRec on the training split and use its item table
    sasrec: SASRecTrainConfig = field(default_factory=SASRecTrainConfig)  # SASRec settings (its own seed)
    fuse: FuseConfig = field(default_factory=FuseConfig)  # per-modality weights, optional PCA/whitening
    cache_dir: str | None = None             # embedding cache root; None = $GENREC_CACHE_DIR or ~/.cache/genrec
    use_cache: bool = True                   # False: encode everything and write nothing to the cache
    seed: int = 0                            # seeds python/numpy/torch before any encoder runs
    progress: bool = True                    # progress bars and the printed summary

    def __post_init__(self) -> None:
        # Accept plain dicts (JSON/YAML) for the nested configs.
        if isinstance(self.text, dict):
            self.text = TextConfig(**self.text)
        if isinstance(self.image, dict):
            self.image = ImageConfig(**self.image)
        if isinstance(self.fuse, dict):
            self.fuse = FuseConfig(**self.fuse)
        if isinstance(self.sasrec, dict):
            self.sasrec = SASRecTrainConfig(**self.sasrec)
        self.precomputed = tuple(
            PrecomputedConfig(**p) if isinstance(p, dict)
            else PrecomputedConfig.from_spec(p) if isinstance(p, str)
            else p
            for p in self.precomputed
        )
        names = [p.name for p in self.precomputed]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"EmbedConfig.precomputed names must be unique; {sorted(dup)} appear more than once")
        if "collab" in names and self.collab:
            raise ValueError(
                "EmbedConfig.precomputed has a 'collab' matrix and collab=True; set collab=False to use the import"
            )
        if FUSED in names:
            raise ValueError(f"EmbedConfig.precomputed name {FUSED!r} is reserved for the fused matrix")


@dataclass
class _Modality:
    matrix: np.ndarray                # (n_items, d) float32, NaN or stale rows where mask is False
    mask: np.ndarray                  # (n_items,) bool, True = present
    info: dict                        # manifest entry


def features_dir(run: str | Path) -> Path:
    return Path(run) / FEATURES_DIR


def embed(run: str | Path, config: EmbedConfig | None = None) -> dict:
    """Compute the item features of ``RUN/dataset`` into ``RUN/features``; returns the manifest written."""
    from genrec.io import write_folder_atomic

    config = config or EmbedConfig()
    run = Path(run)
    _seed_everything(config.seed)
    dataset = load_dataset(run)
    cache_root = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()
    imports = {p.name: p for p in config.precomputed}
    notes: list[str] = []
    cache = cache_root if config.use_cache else None

    def build(tmp: Path) -> dict:
        modalities: dict[str, _Modality] = {}
        for p in config.precomputed:
            modalities[p.name] = _precomputed(p, dataset)
        if config.text.enabled and "text" not in imports:
            modalities["text"] = _text(dataset, config.text, cache, config.progress)
        if config.image.enabled and "image" not in imports:
            modalities["image"] = _image(dataset, config.image, cache, config.progress)
        if config.collab:
            modalities["collab"] = _collab(dataset, config, tmp / SASREC_DIR)
        for name in [m for m, mod in modalities.items() if not mod.mask.any()]:
            reasons = modalities.pop(name).info.get("missing_reasons")
            notes.append(f"{name} modality skipped: no item has it ({reasons})")
        if not modalities:
            raise ValueError("EmbedConfig produces no modality: enable text, image, collab or add a precomputed matrix")
        order = [m for m in BUILTIN_ORDER if m in modalities] + [m for m in modalities if m not in BUILTIN_ORDER]
        modalities = {m: modalities[m] for m in order}
        return _write(tmp, dataset, config, modalities, notes)

    manifest = write_folder_atomic(features_dir(run), build)
    if config.progress:
        print(format_summary(manifest, features_dir(run)))
    return manifest


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _precomputed(p: PrecomputedConfig, dataset: Dataset) -> _Modality:
    t0 = time.perf_counter()
    res = load_precomputed(p, dataset.items)
    return _Modality(res.features, res.mask, {**res.info, "encoder": f"precomputed:{Path(p.path).name}",
                                              "seconds": round(time.perf_counter() - t0, 3)})


def _text(dataset: Dataset, cfg: TextConfig, cache_root: Path | None, progress: bool) -> _Modality:
    t0 = time.perf_counter()
    texts = item_texts(dataset.items, cfg)
    present = np.array([bool(t) for t in texts], dtype=bool)
    encoder = TextEncoder(cfg)
    cache = EmbeddingCache(cache_root, "text", encoder.namespace) if cache_root is not None else None
    matrix = np.full((dataset.n_items, encoder.dim), np.nan, dtype=np.float32)
    idx = np.flatnonzero(present)
    vectors, stats = encoder.encode([texts[i] for i in idx], cache=cache, progress=progress)
    matrix[idx] = vectors
    lengths = [len(t) for t in texts if t]
    info = {
        "source": "encoder", "encoder": cfg.model, **encoder.describe(), "template": list(cfg.template),
        "missing_reasons": {"empty_text": int((~present).sum())} if not present.all() else {},
        "n_unique_texts": stats.n_unique, "n_cached": stats.n_cached, "n_encoded": stats.n_encoded,
        "mean_text_chars": round(float(np.mean(lengths)), 1) if lengths else 0.0,
        "example_text": texts[int(idx[0])] if len(idx) else None,
        "seconds": round(time.perf_counter() - t0, 3), "encode_seconds": round(stats.encode_seconds, 3),
        "texts_per_second": None if stats.texts_per_second is None else round(stats.texts_per_second, 1),
    }
    return _Modality(matrix, present, info)


def _image(dataset: Dataset, cfg: ImageConfig, cache_root: Path | None, progress: bool) -> _Modality:
    t0 = time.perf_counter()
    base_dirs = [dataset.folder, dataset.folder.parent]
    if dataset.manifest.get("source"):
        base_dirs.append(Path(dataset.manifest["source"]))
    paths, reasons = resolve_image_sources(dataset.items, cfg, base_dirs)
    if not any(p is not None for p in paths):
        # Nothing to encode: do not load the CNN, just report why every image is missing.
        counts: dict[str, int] = {}
        for r in reasons:
            counts[r] = counts.get(r, 0) + 1
        info = {"source": "encoder", "encoder": cfg.model, "missing_reasons": counts,
                "seconds": round(time.perf_counter() - t0, 3)}
        return _Modality(np.zeros((dataset.n_items, 0), np.float32), np.zeros(dataset.n_items, bool), info)
    encoder = ImageEncoder(cfg)
    cache = EmbeddingCache(cache_root, "image", encoder.namespace) if cache_root is not None else None
    res = encoder.encode_files(paths, reasons, cache=cache, progress=progress)
    info = {
        "source": "encoder", "encoder": cfg.model, **encoder.describe(),
        "image_dir": cfg.image_dir, "missing_reasons": res.missing_reasons, "missing_examples": res.examples,
        "n_cached": res.n_cached, "n_encoded": res.n_encoded,
        "seconds": round(time.perf_counter() - t0, 3), "encode_seconds": round(res.encode_seconds, 3),
        "images_per_second": None if res.images_per_second is None else round(res.images_per_second, 1),
    }
    return _Modality(res.features, res.mask, info)


def _collab(dataset: Dataset, config: EmbedConfig, out_dir: Path) -> _Modality:
    from genrec.features.collab import collab_features

    t0 = time.perf_counter()
    matrix, info = collab_features(dataset, config.sasrec, out_dir)
    unseen = np.asarray(info.pop("unseen_item_ids", []), dtype=np.int64)
    mask = np.ones(dataset.n_items, dtype=bool)
    mask[unseen] = False  # never in a training prefix: the row is an untrained init, treat it as missing
    missing = {"not_in_training_split": int(len(unseen))} if len(unseen) else {}
    info = {"source": "sasrec", **info, "missing_reasons": missing, "unseen_examples": unseen[:5].tolist(),
            "seconds": round(time.perf_counter() - t0, 3)}
    return _Modality(np.asarray(matrix, dtype=np.float32), mask, info)


def _write(tmp: Path, dataset: Dataset, config: EmbedConfig, modalities: dict[str, _Modality],
           notes: list[str]) -> dict:
    files: list[str] = []
    entries: dict[str, dict] = {}
    for name, m in modalities.items():
        if m.matrix.shape[0] != dataset.n_items:
            raise ValueError(f"modality {name!r} has {m.matrix.shape[0]} rows, the dataset {dataset.n_items} items")
        filled = impute_missing(m.matrix, m.mask) if m.mask.any() else m.matrix
        save_npy_atomic(tmp / f"{name}.npy", filled.astype(np.float32))
        files.append(f"{name}.npy")
        entry = {**m.info, "file": f"{name}.npy", "dim": int(m.matrix.shape[1]),
                 "coverage": round(float(m.mask.mean()), 6) if dataset.n_items else 0.0,
                 "n_present": int(m.mask.sum()), "n_missing": int((~m.mask).sum())}
        if not m.mask.all():
            save_npy_atomic(tmp / f"{name}{MASK_SUFFIX}.npy", m.mask)
            files.append(f"{name}{MASK_SUFFIX}.npy")
            entry["mask_file"] = f"{name}{MASK_SUFFIX}.npy"
            entry["missing_rows_filled_with"] = "mean of the present rows (see mask_file; True = present)"
        entries[name] = entry

    weights = {k: v for k, v in config.fuse.weights.items() if k in modalities}
    for k in sorted(set(config.fuse.weights) - set(modalities)):
        notes.append(f"fuse weight for {k!r} ignored: that modality was not produced")
    fuse_cfg = FuseConfig(weights=weights, pca_dim=config.fuse.pca_dim, whiten=config.fuse.whiten, eps=config.fuse.eps)
    t0 = time.perf_counter()
    fused = fuse({k: m.matrix for k, m in modalities.items()}, {k: m.mask for k, m in modalities.items()}, fuse_cfg)
    save_npy_atomic(tmp / f"{FUSED}.npy", fused.fused)
    files.append(f"{FUSED}.npy")
    sasrec_ckpt = Path(SASREC_DIR) / "sasrec.pt"
    if (tmp / sasrec_ckpt).exists():
        files.append(str(sasrec_ckpt))

    ds_manifest = dataset.folder / MANIFEST
    # Inputs: the dataset folder (its manifest holds the split) and every imported matrix / row map.
    imported = [f for p in config.precomputed for f in (p.path, p.row_map) if f != "item_id"]
    return write_manifest(
        tmp, "embed", files=files,
        inputs=input_checksums(dataset.folder.parent, [ds_manifest, *(dataset.folder / f for f in
                                                                      dataset.manifest.get("files", {})), *imported]),
        config=asdict(config),  # nested configs (SASRec's included) become plain dicts
        dataset={"folder": str(dataset.folder.resolve()), "name": dataset.name,
                 "manifest_sha256": sha256_file(ds_manifest), "files": dataset.manifest.get("files", {})},
        n_items=dataset.n_items,
        modalities=entries,
        fused={"file": f"{FUSED}.npy", "dim": int(fused.fused.shape[1]),
               "blocks": {k: list(v) for k, v in fused.blocks.items()},
               "seconds": round(time.perf_counter() - t0, 3), **fused.info},
        notes=notes,
    )


def format_summary(manifest: dict, folder: Path | None = None) -> str:
    """A plain-text table of an embed manifest."""
    where = f" -> {folder}" if folder is not None else ""
    lines = [f"features for {manifest['dataset']['name']!r} ({manifest['n_items']:,} items){where}",
             f"  {'modality':<10}{'source':<28}{'dim':>6}{'coverage':>10}{'seconds':>9}  throughput / missing"]
    blocks = manifest["fused"]["blocks"]
    # JSON keys come back sorted; list the modalities in their fused-vector order instead.
    order = sorted(manifest["modalities"], key=lambda m: (blocks.get(m, [float("inf")])[0], m))
    for name in order:
        e = manifest["modalities"][name]
        rate = ""
        if e.get("texts_per_second"):
            rate = f"{e['texts_per_second']:.0f} texts/s ({e['n_encoded']:,} encoded, {e['n_cached']:,} cached)"
        elif e.get("images_per_second"):
            rate = f"{e['images_per_second']:.1f} images/s ({e['n_encoded']:,} encoded, {e['n_cached']:,} cached)"
        elif "n_cached" in e:
            rate = f"all {e['n_cached']:,} from cache"
        elif e.get("best_val"):
            rate = f"valid ndcg@10 {e['best_val']['ndcg@10']:.4f} after {e['epochs']} epochs"
        missing = ", ".join(f"{k}: {v:,}" for k, v in (e.get("missing_reasons") or {}).items())
        lines.append(f"  {name:<10}{str(e.get('encoder'))[:27]:<28}{e['dim']:>6}{100 * e['coverage']:>9.1f}%"
                     f"{e['seconds']:>9.1f}  {rate}{'; missing ' + missing if missing else ''}")
    f = manifest["fused"]
    proj = ""
    if "projection" in f:
        proj = f" after {f['projection']['method']} ({f['projection']['explained_variance_ratio']:.1%} variance)"
    weights = ", ".join(f"{k}={f['modalities'][k]['weight']:g}" for k in order if k in f["modalities"])
    lines.append(f"  fused     dim {f['dim']}{proj}; weights {weights}")
    for note in manifest.get("notes", []):
        lines.append(f"  note: {note}")
    return "\n".join(lines)
