"""Shared test helpers. Real-data tests read ../shared/data beside the repo and skip when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return (REPO_ROOT / ".." / "shared" / "data").resolve()


def require_shared(name: str) -> Path:
    """Path to ../shared/data/<name>, or skip the test with the reason."""
    path = shared_data_dir() / name
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (CI provides ../shared/data beside the repo)")
    return path
