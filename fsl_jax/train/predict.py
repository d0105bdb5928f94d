"""Run an eval step over a whole dataset and return one output row per example."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from fsl_jax.train.mesh import to_global_batch


def predict_outputs(
    eval_step: Callable[[Any, dict], dict],
    params: Any,
    batches: Iterable[dict],
    mesh: Mesh,
    num_examples: int,
    key: str | Sequence[str] = "logits",
) -> np.ndarray | dict[str, np.ndarray]:
    """Return the eval step's output `key` (float32 [num_examples, ...]) in dataset order.

    With a sequence of keys, returns a dict of such arrays. Rows are placed by
    batch["example_index"]; padding rows (example_mask 0) are skipped. Raises
    ValueError when an example is missing or seen twice, so an evaluation never
    silently drops or double-counts rows.
    """
    keys = [key] if isinstance(key, str) else list(key)
    rows: dict[str, np.ndarray] = {}
    seen = np.zeros(num_examples, np.int64)
    for batch in batches:
        outputs = jax.device_get(eval_step(params, to_global_batch(batch, mesh)))
        real = batch["example_mask"] > 0
        indices = batch["example_index"][real]
        for name in keys:
            if name not in rows:
                # A packed batch has [rows, sentence slots] example axes, a padded one [rows].
                example_shape = outputs[name].shape[real.ndim :]
                rows[name] = np.zeros((num_examples, *example_shape), np.float32)
            rows[name][indices] = outputs[name][real]
        np.add.at(seen, indices, 1)
    if not rows or not np.all(seen == 1):
        missing = int(np.sum(seen == 0))
        repeated = int(np.sum(seen > 1))
        raise ValueError(
            f"Evaluation covered {int(np.sum(seen == 1))} of {num_examples} examples "
            f"({missing} missing, {repeated} seen more than once); the batch iterator must "
            "yield every example exactly once."
        )
    return rows[key] if isinstance(key, str) else rows
