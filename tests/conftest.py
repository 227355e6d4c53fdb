"""Shared fixtures: the real test audio in tests/data and the bundled model."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA_DIR = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """tests/data: small real recordings (see tests/data/README.md for how each was made)."""
    return DATA_DIR


@pytest.fixture(scope="session")
def model():
    """The bundled model (weights may be an untrained placeholder), in eval mode on CPU."""
    from vadnet.model.checkpoint import load_model

    return load_model()
