"""Export tests: tiny models run on one torch thread (the exported tiny models are in tests/conftest.py)."""

from __future__ import annotations

import pytest
from conftest import one_torch_thread

torch_single_thread = pytest.fixture(scope="package", autouse=True)(one_torch_thread)
