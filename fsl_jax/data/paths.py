"""Location of the benchmark data folder."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "FSL_JAX_DATA_DIR"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def default_data_dir() -> Path:
    """Return the data folder: $FSL_JAX_DATA_DIR, else ../shared/data beside the project root."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override).expanduser().resolve()
    return (PROJECT_ROOT.parent / "shared" / "data").resolve()
