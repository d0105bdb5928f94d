"""File names and formats inside a run's workdir (described in docs/outputs.md).

Every reader and writer of `results.json`, `predictions/` and `metrics.jsonl` goes
through this module, so the training job, the reports and the analysis notebook
cannot disagree about a format.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple

import numpy as np

RESULTS_JSON = "results.json"
RESULTS_MARKDOWN = "results.md"
PREDICTIONS_DIR = "predictions"
METRICS_JSONL = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
CHECKPOINTS_DIR = "checkpoints"

# Model and variant names become parts of file names.
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class SeedPredictions(NamedTuple):
    """Per-example test predictions of one model and seed, in test-set order."""

    predictions: np.ndarray  # int32 [N], predicted class index
    labels: np.ndarray  # int32 [N], true class index


def validate_name(name: str, kind: str = "model") -> str:
    """Return `name` unchanged, or raise ValueError if it cannot be part of a file name."""
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise ValueError(
            f"Invalid {kind} name {name!r}: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit."
        )
    return name


def checkpoint_dir(workdir: str | os.PathLike, seed: int) -> Path:
    """Return `<workdir>/checkpoints/seed_<seed>`, the checkpoint folder of one seed."""
    return Path(workdir) / CHECKPOINTS_DIR / f"seed_{int(seed)}"


# ------------------------------------------------------------------------------
# JSON helpers.
# ------------------------------------------------------------------------------


def to_jsonable(value: Any) -> Any:
    """Convert numpy and jax scalars and arrays, paths and tuples to JSON types.

    Non-finite floats become None, because JSON has no NaN or infinity.

    Raises:
      TypeError: the value (or a nested one) has no JSON form.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    if hasattr(value, "__array__"):  # numpy and jax arrays
        return to_jsonable(np.asarray(value).tolist())
    raise TypeError(f"Cannot convert a value of type {type(value).__name__} to JSON: {value!r}.")


def write_json_atomic(path: str | os.PathLike, payload: Any) -> Path:
    """Write `payload` as indented JSON through a temporary file and a rename.

    On POSIX the rename is atomic, so a reader or a crash finds the old file or the
    new one, not a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(to_jsonable(payload), indent=2, allow_nan=False) + "\n"
    write_text_atomic(path, text)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        # mkstemp creates the file readable by its owner only; results are shared.
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


# ------------------------------------------------------------------------------
# predictions/<model>_seed<seed>.npz
# ------------------------------------------------------------------------------


def predictions_path(workdir: str | os.PathLike, model: str, seed: int) -> Path:
    """Return `<workdir>/predictions/<model>_seed<seed>.npz`."""
    return Path(workdir) / PREDICTIONS_DIR / f"{validate_name(model)}_seed{int(seed)}.npz"


def write_predictions(
    workdir: str | os.PathLike,
    model: str,
    seed: int,
    predictions: Any,
    labels: Any,
    logits: Any | None = None,
) -> Path:
    """Save one model's per-example test predictions for one seed.

    `predictions` and `labels` are int `[N]` in test-set order, and `logits`, if
    given, float `[N, C]` in the same order. The file is an uncompressed `.npz`
    with arrays `predictions`, `labels` and optionally `logits`.

    Raises:
      ValueError: the arrays are not 1-D and of one length, or logits do not match.
    """
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    if predictions.ndim != 1 or predictions.shape != labels.shape:
        raise ValueError(
            f"predictions and labels must be 1-D arrays of one length, got shapes "
            f"{predictions.shape} and {labels.shape} for model {model!r} seed {seed}."
        )
    arrays = {
        "predictions": predictions.astype(np.int32),
        "labels": labels.astype(np.int32),
    }
    if logits is not None:
        logits = np.asarray(logits, dtype=np.float32)
        if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
            raise ValueError(
                f"logits must have shape [{labels.shape[0]}, classes], got {logits.shape} "
                f"for model {model!r} seed {seed}."
            )
        arrays["logits"] = logits

    path = predictions_path(workdir, model, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    # np.savez appends ".npz" to a name without it, so the temporary name keeps it.
    temporary = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(temporary, **arrays)
    os.replace(temporary, path)
    return path


def load_predictions(
    workdir: str | os.PathLike, model: str, seeds: Iterable[int]
) -> dict[int, SeedPredictions]:
    """Load `predictions/<model>_seed<seed>.npz` for each seed.

    Raises:
      FileNotFoundError: a seed has no predictions file; the message names the path.
    """
    loaded = {}
    for seed in seeds:
        path = predictions_path(workdir, model, seed)
        if not path.is_file():
            raise FileNotFoundError(
                f"Predictions for model {model!r} seed {seed} not found at {path}. "
                "The training job writes them after the test evaluation of each seed."
            )
        with np.load(path) as arrays:
            loaded[int(seed)] = SeedPredictions(arrays["predictions"], arrays["labels"])
    return loaded


# ------------------------------------------------------------------------------
# metrics.jsonl
# ------------------------------------------------------------------------------


def append_metrics(
    workdir: str | os.PathLike, *, seed: int, model: str, step: int, **values: Any
) -> None:
    """Append one line `{"seed", "model", "step", **values}` to `<workdir>/metrics.jsonl`.

    Typical values are `train_loss`, `dev_accuracy` and `learning_rate`. Leave out a
    key that was not measured at this step. A NaN or infinite value is written as
    null, because JSON has no such numbers. The file is opened, appended and closed
    on each call, so a crash loses at most the line being written, and a resumed run
    appends after the existing lines.
    """
    record = {"seed": int(seed), "model": validate_name(model), "step": int(step)}
    for key, value in values.items():
        record[key] = to_jsonable(value)
    path = Path(workdir) / METRICS_JSONL
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, allow_nan=False)
    with open(path, "a", encoding="utf-8") as file:
        file.write(line + "\n")
        file.flush()


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read every line of a `metrics.jsonl` file (or of `<path>/metrics.jsonl`), in order.

    A missing trailing newline is accepted, because a crash can cut the last line.
    A cut last line that is not valid JSON is skipped.

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: a line other than the last is not valid JSON, or a line lacks
        `seed`, `model` or `step`.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_JSONL
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number} is not valid JSON: {error}.") from error
        missing = {"seed", "model", "step"} - set(record)
        if missing:
            raise ValueError(f"{path}:{number} is missing the keys {sorted(missing)}.")
        records.append(record)
    return records


def learning_curves(
    records: Iterable[Mapping[str, Any]], key: str
) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
    """Group metrics.jsonl records into one curve of `key` per (model, seed).

    Returns `{(model, seed): (steps, values)}` sorted by step, with only the lines
    that contain `key` and a non-null value. When a step appears twice, as after a
    resumed run, the later line wins.
    """
    by_run: dict[tuple[str, int], dict[int, float]] = {}
    for record in records:
        value = record.get(key)
        if value is None:
            continue
        run = (str(record["model"]), int(record["seed"]))
        by_run.setdefault(run, {})[int(record["step"])] = float(value)
    curves = {}
    for run, values_by_step in sorted(by_run.items()):
        steps = np.array(sorted(values_by_step), dtype=np.int64)
        values = np.array([values_by_step[step] for step in steps], dtype=np.float64)
        curves[run] = (steps, values)
    return curves
