"""ONNX export of a trained genrec model (``genrec export``); the folder layout is in layout.py.

Importing this package does not import torch: the torch-free server reads
``genrec.export.layout``. ``ExportConfig``/``export``/``export_module`` are loaded on first use.
"""

from __future__ import annotations

__all__ = ["ExportConfig", "export", "export_module"]


def __getattr__(name: str):
    if name in __all__:
        from genrec.export import onnx

        return getattr(onnx, name)
    raise AttributeError(f"module 'genrec.export' has no attribute {name!r}")
