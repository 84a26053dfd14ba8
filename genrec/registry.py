"""One registry of architectures: a new backbone is this entry, its model file, its export graphs and its server step.

Each entry names, as ``"module:attribute"`` strings resolved on first use (so importing the
registry imports neither torch, transformers nor onnxruntime: the torch-free server reads it too):
- ``config`` / ``model``: the backbone's config dataclass and its ``nn.Module``;
- ``step``: the torch decoding step (genrec.generate) that beam search and exact scoring call;
- ``export``: the function that writes the backbone's ONNX graphs (genrec.export.onnx);
- ``onnx_step``: the server's step over those graphs (genrec.serving.runtime).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    config: str        # backbone config dataclass
    model: str         # nn.Module built from that config
    step: str          # torch decoding step: step(genrec, hist, users) -> StepFn
    export: str        # ONNX writer: export(genrec, folder, export_config) -> graph signatures
    onnx_step: str     # server-side step over the exported graphs
    item_inputs: bool  # reads per-item input vectors (codes + content + ids): content features apply


ARCHS: dict[str, Arch] = {
    "causal": Arch(
        config="genrec.model.causal:CausalSIDConfig",
        model="genrec.model.causal:CausalSID",
        step="genrec.generate:CausalStep",
        export="genrec.export.onnx:export_causal",
        onnx_step="genrec.serving.runtime:OnnxCausalStep",
        item_inputs=True,
    ),
    "tiger": Arch(
        config="genrec.model.seq2seq:TigerConfig",
        model="genrec.model.seq2seq:Tiger",
        step="genrec.generate:TigerStep",
        export="genrec.export.onnx:export_tiger",
        onnx_step="genrec.serving.runtime:OnnxTigerStep",
        item_inputs=False,
    ),
}


def resolve(ref: str):
    """``"package.module:attr"`` -> the object."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def get_arch(name: str) -> Arch:
    if name not in ARCHS:
        raise ValueError(f"unknown arch {name!r}; registered: {sorted(ARCHS)}")
    return ARCHS[name]
