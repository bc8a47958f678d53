"""Shared fixtures: one real embedded model per test session.

Loading SmolLM2-135M-Instruct takes a few seconds from the converted cache
(about 20 s the first time on a new machine, while it is dequantised), so
every test that needs the real model shares one copy.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
LOCOMO_DIR = REPO.parent / "shared" / "data" / "locomo"


def pytest_configure(config: pytest.Config) -> None:
    # Two cores are shared by the model and the database servers the tests use.
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def model_and_tokenizer():
    """The embedded default model, loaded once per test session."""
    from sidecar_memory import load_default_model

    return load_default_model()


@pytest.fixture(scope="session")
def locomo_dir() -> Path:
    """Folder of the shared LoCoMo conversations."""
    if not LOCOMO_DIR.is_dir():
        pytest.fail(f"LoCoMo data not found at {LOCOMO_DIR}; the repository expects ../shared/data/locomo beside it")
    return LOCOMO_DIR
