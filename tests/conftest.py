"""Shared fixtures. Real data is read from ../shared/data beside the project (never copied)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

# Tests never reach the hub: fail fast instead of retrying for a minute per request.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
GOQA_CSV = SHARED_DATA / "globalopinionqa_partial" / "goqa_partial_hf_schema.csv"
OPTION_MAP = SHARED_DATA / "gdpo_option_map" / "option_map.json"

warnings.filterwarnings("ignore", message=".*gradient checkpointing.*", category=FutureWarning)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data; tests that need real data fail loudly when it is missing."""
    if not SHARED_DATA.exists():
        pytest.fail(f"real test data not found at {SHARED_DATA} (the shared/ folder beside the project)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def goqa_csv(shared_data) -> Path:
    return GOQA_CSV


@pytest.fixture(scope="session")
def option_map_path(shared_data) -> Path:
    return OPTION_MAP


@pytest.fixture()
def tmp_cfg(tmp_path):
    """A default RunConfig whose outputs go to a temporary folder."""
    from gdpolib.config import load_config
    return load_config(overrides={"output_root": str(tmp_path / "outputs")})
