"""Metric writers: JSON lines and TensorBoard events, written by process 0 only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np

from fsl_jax.train.event_file import ScalarEventWriter


def _to_python(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray, jax.Array)):
        value = np.asarray(value)
        return value.item() if value.ndim == 0 else value.tolist()
    return value


class MetricWriter:
    """Append metrics to <workdir>/metrics.jsonl and TensorBoard under <workdir>/tensorboard.

    Each JSON line is {"seed", "model", "step", <metric>: value, ...}. The numbers
    also go to TensorBoard, tagged "<model>/<metric>", in one event file per writer
    under tensorboard/<model>_seed<seed>/.
    """

    def __init__(self, workdir: str | Path, model: str, seed: int):
        self.model = model
        self.seed = seed
        self.active = jax.process_index() == 0
        self._tensorboard = None
        if not self.active:
            return
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self._jsonl = workdir / "metrics.jsonl"
        self._tensorboard = ScalarEventWriter(workdir / "tensorboard" / f"{model}_seed{seed}")

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.active:
            return
        record = {"seed": self.seed, "model": self.model, "step": int(step)}
        record.update({key: _to_python(value) for key, value in metrics.items()})
        with self._jsonl.open("a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        scalars = {
            f"{self.model}/{key}": value
            for key, value in record.items()
            if key not in ("seed", "model", "step") and isinstance(value, (int, float))
        }
        self._tensorboard.add_scalars(int(step), scalars)

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
