"""Static-shape batches: fixed batch size, sequence lengths from a small set of buckets."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence

import numpy as np
from absl import logging

from fsl_jax.data.encoding import TOKEN_KEYS, EncodedDataset
from fsl_jax.data.reports import Report

DEFAULT_BUCKETS = (32, 64, 128)


def validate_buckets(buckets: Sequence[int]) -> tuple[int, ...]:
    """Return the buckets as a sorted tuple; raise ValueError unless they are distinct positive ints."""
    values = tuple(buckets)
    if not values:
        raise ValueError("At least one length bucket is required.")
    if any(not isinstance(value, (int, np.integer)) or value < 1 for value in values):
        raise ValueError(f"Length buckets must be positive integers, got {values}.")
    if len(set(values)) != len(values):
        raise ValueError(f"Length buckets must be distinct, got {values}.")
    return tuple(sorted(int(value) for value in values))


def bucket_length(length: int, buckets: Sequence[int]) -> int:
    """Return the smallest bucket of at least `length` tokens, or the largest bucket."""
    for bucket in buckets:
        if length <= bucket:
            return bucket
    return buckets[-1]


def resolve_batch_size(batch_size: int, num_devices: int, pad_to_devices: bool = False) -> int:
    """Return the global batch size, checked (or rounded up) to split evenly over the devices.

    Raises:
      ValueError: `batch_size` is not a multiple of `num_devices` and `pad_to_devices` is
        False. The message names both numbers.
    """
    if batch_size < 1 or num_devices < 1:
        raise ValueError(
            f"Invalid batch_size={batch_size} or num_devices={num_devices}; both must be at least 1."
        )
    if batch_size % num_devices == 0:
        return batch_size
    if not pad_to_devices:
        raise ValueError(
            f"Batch size {batch_size} is not divisible by the {num_devices} devices. Use a "
            f"multiple of {num_devices}, or pass pad_to_devices=True to pad each batch to "
            f"{math.ceil(batch_size / num_devices) * num_devices} rows."
        )
    padded = math.ceil(batch_size / num_devices) * num_devices
    logging.info(
        "Padding batch size %d to %d rows for %d devices.", batch_size, padded, num_devices
    )
    return padded


def num_batches(num_examples: int, batch_size: int, drop_remainder: bool = False) -> int:
    if drop_remainder:
        return num_examples // batch_size
    return math.ceil(num_examples / batch_size)


def epoch_order(num_examples: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """Return the row order of one epoch; it depends only on (seed, epoch), so a resumed run repeats it."""
    if not shuffle:
        return np.arange(num_examples, dtype=np.int64)
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


@dataclasses.dataclass
class BucketReport(Report):
    """Rows per length bucket, and rows longer than the largest bucket (cut when batched)."""

    rows: int
    buckets: list[int]
    rows_per_bucket: dict[int, int]
    truncated_rows: int

    def summary(self) -> str:
        return (
            f"{self.rows} rows, per bucket {self.rows_per_bucket}, "
            f"{self.truncated_rows} longer than {self.buckets[-1]} tokens and truncated"
        )


def bucket_report(
    encoded: EncodedDataset, buckets: Sequence[int] = DEFAULT_BUCKETS
) -> BucketReport:
    buckets = validate_buckets(buckets)
    counts = dict.fromkeys(buckets, 0)
    for length in encoded.lengths:
        counts[bucket_length(int(length), buckets)] += 1
    return BucketReport(
        rows=len(encoded),
        buckets=list(buckets),
        rows_per_bucket=counts,
        truncated_rows=int((encoded.lengths > buckets[-1]).sum()),
    )


def _fit_width(array: np.ndarray, width: int, fill: int) -> np.ndarray:
    if array.shape[1] >= width:
        return array[:, :width].copy()
    padding = np.full((array.shape[0], width - array.shape[1]), fill, dtype=array.dtype)
    return np.concatenate([array, padding], axis=1)


def make_batch(
    encoded: EncodedDataset, rows: np.ndarray, batch_size: int, buckets: Sequence[int]
) -> dict[str, np.ndarray]:
    """Gather `rows` into one batch of `batch_size` rows and the smallest bucket that fits.

    Filler rows (when `rows` is short) have `example_mask` 0.0, `example_index` -1, label
    0 and an all-zero attention_mask. A row longer than the largest bucket is cut to it,
    and its last token becomes the separator token, as the tokenizer's truncation does.
    """
    if len(rows) > batch_size:
        raise ValueError(f"Got {len(rows)} rows for a batch of {batch_size}.")
    lengths = encoded.lengths[rows]
    width = bucket_length(int(lengths.max(initial=1)), buckets)

    fills = {"input_ids": encoded.pad_token_id, "attention_mask": 0, "token_type_ids": 0}
    batch = {}
    for key in TOKEN_KEYS:
        values = np.full((batch_size, width), fills[key], dtype=np.int32)
        values[: len(rows)] = _fit_width(getattr(encoded, key)[rows], width, fills[key])
        batch[key] = values
    cut = np.flatnonzero(lengths > width)
    batch["input_ids"][cut, width - 1] = encoded.sep_token_id

    batch["labels"] = np.zeros(batch_size, dtype=np.int32)
    if encoded.labels is not None:
        batch["labels"][: len(rows)] = encoded.labels[rows]
    batch["example_mask"] = np.zeros(batch_size, dtype=np.float32)
    batch["example_mask"][: len(rows)] = 1.0
    batch["example_index"] = np.full(batch_size, -1, dtype=np.int32)
    batch["example_index"][: len(rows)] = rows
    if encoded.soft_labels is not None:
        batch["soft_labels"] = np.zeros(
            (batch_size, encoded.soft_labels.shape[1]), dtype=np.float32
        )
        batch["soft_labels"][: len(rows)] = encoded.soft_labels[rows]
    return batch


def batch_iterator(
    encoded: EncodedDataset,
    batch_size: int,
    buckets: Sequence[int] = DEFAULT_BUCKETS,
    *,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    num_devices: int = 1,
    pad_to_devices: bool = False,
    drop_remainder: bool = False,
    start_batch: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
    """Yield the batches of one epoch as dicts of numpy arrays (the Batch table in docs/design.md).

    Every batch has `batch_size` rows (rounded up to a multiple of `num_devices` when
    `pad_to_devices`), and its length is the smallest bucket that fits its longest row.
    A jitted step therefore compiles once for each bucket used. With `shuffle` the
    order comes from (seed, epoch). Without it, rows keep dataset order for evaluation.
    The last partial batch is padded and masked, so every example appears exactly once
    per epoch, unless `drop_remainder` drops that batch. `start_batch` skips the first
    batches of the epoch, to resume a run mid-epoch with the same order.

    Raises:
      ValueError: invalid buckets, or a batch size that does not split over
        `num_devices` (see `resolve_batch_size`).
    """
    buckets = validate_buckets(buckets)
    batch_size = resolve_batch_size(batch_size, num_devices, pad_to_devices)
    longer = int((encoded.lengths > buckets[-1]).sum())
    if longer:
        logging.log_first_n(
            logging.WARNING,
            "%s: %d rows are longer than the largest length bucket %d and are truncated in batches.",
            5,
            encoded.name or "dataset",
            longer,
            buckets[-1],
        )

    order = epoch_order(len(encoded), seed, epoch, shuffle)
    total = num_batches(len(order), batch_size, drop_remainder)
    for step in range(start_batch, total):
        rows = order[step * batch_size : (step + 1) * batch_size]
        yield make_batch(encoded, rows, batch_size, buckets)
