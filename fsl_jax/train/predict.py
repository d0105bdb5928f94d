"""Run an eval step over a whole dataset and return one row of logits per example."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import jax
import numpy as np
from jax.sharding import Mesh

from fsl_jax.train.mesh import to_global_batch


def predict_logits(
    eval_step: Callable[[Any, dict], dict],
    params: Any,
    batches: Iterable[dict],
    mesh: Mesh,
    num_examples: int,
) -> np.ndarray:
    """Return float32 logits [num_examples, C] in dataset order.

    Rows are placed by batch["example_index"]; padding rows (example_mask 0) are
    skipped. Raises ValueError when an example is missing or seen twice, so an
    evaluation never silently drops or double-counts rows.
    """
    logits = None
    seen = np.zeros(num_examples, np.int64)
    for batch in batches:
        outputs = jax.device_get(eval_step(params, to_global_batch(batch, mesh)))
        real = batch["example_mask"] > 0
        indices = batch["example_index"][real]
        if logits is None:
            logits = np.zeros((num_examples, outputs["logits"].shape[-1]), np.float32)
        logits[indices] = outputs["logits"][real]
        np.add.at(seen, indices, 1)
    if logits is None or not np.all(seen == 1):
        missing = int(np.sum(seen == 0))
        repeated = int(np.sum(seen > 1))
        raise ValueError(
            f"Evaluation covered {int(np.sum(seen == 1))} of {num_examples} examples "
            f"({missing} missing, {repeated} seen more than once); the batch iterator must "
            "yield every example exactly once."
        )
    return logits
