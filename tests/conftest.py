"""Shared test set-up: 8 simulated CPU devices, the real data folder and checkpoint."""

import os

# Must run before jax is imported anywhere, so every test sees 8 CPU devices.
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from fsl_jax.checkpoints.resolve import resolve_checkpoint  # noqa: E402
from fsl_jax.data.paths import DATA_DIR_ENV, default_data_dir  # noqa: E402


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = default_data_dir()
    if not (path / "SST-2").is_dir():
        raise FileNotFoundError(
            f"Benchmark data not found at {path}. Set {DATA_DIR_ENV} to the data folder."
        )
    return path


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return resolve_checkpoint("all-MiniLM-L6-v2")
