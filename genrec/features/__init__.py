"""Item features (stage ``embed``): text, image, collaborative and imported matrices, fused per item.

text.py         item text template + transformers sentence encoder (bundled all-MiniLM-L6-v2)
image.py        local image files + timm CNN pooled features (bundled EfficientNet-Lite0 weights)
precomputed.py  import .npy / raw float32 matrices with an explicit row mapping
collab.py       SASRec item table trained on the training split only
cache.py        content-hash embedding cache shared by the encoders
fuse.py         standardise, L2-normalise, weight, concatenate, optional PCA
stage.py        ``embed(run, EmbedConfig)`` writes RUN/features/ with a manifest
"""

from genrec.features.fuse import FuseConfig, fuse
from genrec.features.image import ImageConfig, ImageEncoder
from genrec.features.precomputed import PrecomputedConfig, load_precomputed
from genrec.features.text import TextConfig, TextEncoder, item_texts

__all__ = [
    "EmbedConfig", "FuseConfig", "ImageConfig", "ImageEncoder", "PrecomputedConfig", "TextConfig", "TextEncoder",
    "embed", "fuse", "item_texts", "load_precomputed",
]


def __getattr__(name: str):
    # The stage module imports Lightning (for the SASRec config); load it only when asked for.
    if name in ("EmbedConfig", "embed"):
        from genrec.features import stage

        return getattr(stage, name)
    raise AttributeError(f"module 'genrec.features' has no attribute {name!r}")
