"""Torch-free inference: onnxruntime over an export folder (runtime.py) behind FastAPI (app.py)."""
