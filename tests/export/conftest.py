"""Export tests: tiny models run on one torch thread (the exported tiny models are in tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="package", autouse=True)
def torch_single_thread():
    """Tiny models: one torch thread. On a shared 2-core machine a 2-thread pool makes every small op
    wait for a busy core (~12 ms each), which is most of these tests' time otherwise."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
