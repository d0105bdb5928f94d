"""Classification metrics: accuracy, macro-F1 and the confusion matrix.

Two forms compute the same numbers:

* numpy functions over whole prediction arrays, with an optional validity mask, for
  saved per-example predictions;
* `metric_sums`, a jit-friendly jnp function that turns one batch into additive
  counts, and `finalize`, which turns the counts summed over batches into metrics.
  Padding rows (`example_mask == 0`) add nothing, so a padded last batch counts each
  real example once.

Macro-F1 is the unweighted mean of the per-class F1 scores over the classes that
occur among the counted labels or predictions. A class that occurs in neither has no
defined F1 and is left out, as scikit-learn's `f1_score(average="macro")` does when
`labels` is not given. A class that occurs only in the labels scores 0.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

ArrayLike = np.ndarray | jax.Array | list | tuple


# ------------------------------------------------------------------------------
# Input checks.
# ------------------------------------------------------------------------------


def _as_class_indices(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class indices, got shape {array.shape}.")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.floating) or not np.all(array == np.round(array)):
            raise ValueError(
                f"{name} must contain integer class indices, got dtype {array.dtype}. "
                "Take the argmax of the logits first."
            )
    array = array.astype(np.int64)
    if array.size and array.min() < 0:
        raise ValueError(f"{name} contains the negative class index {array.min()}.")
    return array


def _select_examples(
    predictions: ArrayLike, labels: ArrayLike, mask: ArrayLike | None
) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes and return the predictions and labels of the real examples."""
    predictions = _as_class_indices(predictions, "predictions")
    labels = _as_class_indices(labels, "labels")
    if predictions.shape != labels.shape:
        raise ValueError(
            f"predictions and labels must have the same shape, got {predictions.shape} "
            f"and {labels.shape}."
        )
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != labels.shape:
            raise ValueError(
                f"mask must have the shape of labels {labels.shape}, got {mask.shape}."
            )
        keep = mask.astype(bool)
        predictions, labels = predictions[keep], labels[keep]
    if labels.size == 0:
        raise ValueError("No examples to score: labels is empty or the mask selects no example.")
    return predictions, labels


def _resolve_num_classes(
    predictions: np.ndarray, labels: np.ndarray, num_classes: int | None
) -> int:
    observed = int(max(predictions.max(), labels.max())) + 1
    if num_classes is None:
        return observed
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}.")
    if observed > num_classes:
        raise ValueError(
            f"Found class index {observed - 1}, outside [0, {num_classes}) for "
            f"num_classes={num_classes}."
        )
    return num_classes


# ------------------------------------------------------------------------------
# numpy metrics over whole arrays.
# ------------------------------------------------------------------------------


def confusion_matrix(
    predictions: ArrayLike,
    labels: ArrayLike,
    num_classes: int | None = None,
    mask: ArrayLike | None = None,
) -> np.ndarray:
    """Count examples per (label, prediction) pair.

    Returns an int64 array `[C, C]` whose row is the true class and column the
    predicted class, the layout scikit-learn uses. `C` is `num_classes`, or one more
    than the largest index seen. Only examples where `mask` is nonzero count.

    Raises:
      ValueError: shapes differ, there are no examples, or an index is out of range.
    """
    predictions, labels = _select_examples(predictions, labels, mask)
    num_classes = _resolve_num_classes(predictions, labels, num_classes)
    flat_index = labels * num_classes + predictions
    counts = np.bincount(flat_index, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def accuracy(predictions: ArrayLike, labels: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Compute the fraction of examples (where `mask` is nonzero) predicted correctly."""
    predictions, labels = _select_examples(predictions, labels, mask)
    return float(np.mean(predictions == labels))


def macro_f1_from_confusion(confusion: np.ndarray) -> float:
    """Compute macro-F1 from a `[C, C]` confusion matrix (rows true, columns predicted).

    Per class, F1 = 2 TP / (2 TP + FP + FN). Classes with no true and no predicted
    example are left out of the mean (see the module docstring).
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion must be a square matrix, got shape {confusion.shape}.")
    true_positives = np.diag(confusion)
    false_positives = confusion.sum(axis=0) - true_positives
    false_negatives = confusion.sum(axis=1) - true_positives
    denominator = 2 * true_positives + false_positives + false_negatives
    present = denominator > 0
    if not np.any(present):
        raise ValueError("confusion matrix is all zeros, so macro-F1 is undefined.")
    f1_per_class = 2 * true_positives[present] / denominator[present]
    return float(np.mean(f1_per_class))


def macro_f1(
    predictions: ArrayLike,
    labels: ArrayLike,
    num_classes: int | None = None,
    mask: ArrayLike | None = None,
) -> float:
    """Compute the macro-averaged F1 score (see the module docstring for absent classes)."""
    return macro_f1_from_confusion(confusion_matrix(predictions, labels, num_classes, mask))


def classification_metrics(
    predictions: ArrayLike,
    labels: ArrayLike,
    num_classes: int | None = None,
    mask: ArrayLike | None = None,
) -> dict[str, float]:
    """Compute accuracy, macro-F1 and the number of examples in one pass."""
    confusion = confusion_matrix(predictions, labels, num_classes, mask)
    return {
        "accuracy": float(np.trace(confusion) / confusion.sum()),
        "macro_f1": macro_f1_from_confusion(confusion),
        "num_examples": int(confusion.sum()),
    }


# ------------------------------------------------------------------------------
# jnp counts for the eval step.
# ------------------------------------------------------------------------------


def metric_sums(
    logits: jax.Array, labels: jax.Array, example_mask: jax.Array
) -> dict[str, jax.Array]:
    """Count one eval batch as sums to add across batches. Works under `jax.jit`.

    Args:
      logits: float `[B, C]`.
      labels: int `[B]`, class indices (any value in padding rows).
      example_mask: `[B]`, nonzero for real examples and 0 for padding rows.

    Returns:
      A dict of arrays to add across batches (see `accumulate_sums`):
      `count` and `correct` (int32 scalars), `confusion` (int32 `[C, C]`, rows true,
      columns predicted) and `cross_entropy` (float32 sum of per-example losses).
      Int32 counts are exact up to 2**31 - 1 examples. A real row whose label is
      outside [0, C) adds to `count` but to no `confusion` cell, and `finalize`
      reports it.

    Raises:
      ValueError: at trace time, when the shapes do not fit together.
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape [batch, classes], got {logits.shape}.")
    batch_size, num_classes = logits.shape
    if labels.shape != (batch_size,):
        raise ValueError(
            f"labels must have shape ({batch_size},) to match logits {logits.shape}, "
            f"got {labels.shape}."
        )
    if example_mask.shape != (batch_size,):
        raise ValueError(
            f"example_mask must have shape ({batch_size},) to match logits "
            f"{logits.shape}, got {example_mask.shape}."
        )

    is_real = (example_mask != 0).astype(jnp.int32)
    predictions = jnp.argmax(logits, axis=-1)
    label_one_hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.int32)
    prediction_one_hot = jax.nn.one_hot(predictions, num_classes, dtype=jnp.int32)

    # An einsum instead of a scatter-add keeps the reduction over the batch axis a
    # plain sum, which XLA turns into a cross-device sum when the batch is sharded.
    confusion = jnp.einsum("b,bi,bj->ij", is_real, label_one_hot, prediction_one_hot)

    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    label_log_prob = jnp.sum(log_probs * label_one_hot, axis=-1)
    cross_entropy = -jnp.sum(jnp.where(is_real == 1, label_log_prob, 0.0))

    return {
        "count": jnp.sum(is_real),
        "correct": jnp.sum(is_real * (predictions == labels).astype(jnp.int32)),
        "confusion": confusion,
        "cross_entropy": cross_entropy,
    }


def accumulate_sums(
    total: Mapping[str, jax.Array] | None, sums: Mapping[str, jax.Array]
) -> dict[str, jax.Array]:
    """Add one batch's `metric_sums` to a running total (`None` starts a new total)."""
    if total is None:
        return dict(sums)
    if set(total) != set(sums):
        raise ValueError(
            f"Cannot add metric sums with keys {sorted(sums)} to a total with keys {sorted(total)}."
        )
    return {key: total[key] + sums[key] for key in total}


def finalize(sums: Mapping[str, jax.Array | np.ndarray]) -> dict[str, float]:
    """Turn summed counts into `accuracy`, `macro_f1`, `cross_entropy` and `num_examples`.

    Runs on the host, so call it once after the last batch, outside `jax.jit`.

    Raises:
      ValueError: no real example was counted, or some real label was outside
        [0, C) (those rows reach `count` but no confusion cell).
    """
    host = jax.device_get(dict(sums))
    count = int(host["count"])
    if count == 0:
        raise ValueError(
            "No examples were counted: every example_mask entry was 0, or no batch was added."
        )
    confusion = np.asarray(host["confusion"])
    if int(confusion.sum()) != count:
        raise ValueError(
            f"{count - int(confusion.sum())} of {count} real examples have a label "
            f"outside [0, {confusion.shape[0]}). Check the label mapping of the dataset."
        )
    return {
        "accuracy": int(host["correct"]) / count,
        "macro_f1": macro_f1_from_confusion(confusion),
        "cross_entropy": float(host["cross_entropy"]) / count,
        "num_examples": count,
    }
