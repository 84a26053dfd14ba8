"""Torch-free inference: onnxruntime over an export folder (runtime.py) behind FastAPI (app.py).

config.py (ServeConfig) -> protocol.py (connection guard) -> middleware.py (body limits,
cancellation, metrics, logs) -> routes.py (endpoints) -> batching.py (fair micro-batcher) ->
runtime.py (onnxruntime + beam search); schemas.py holds every request, response and error body.
"""
