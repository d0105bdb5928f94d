"""Sequence packing: several short sentences share one row of a fixed-width batch.

A padded batch of 32 SST-2 sentences (26 tokens on average, the longest 57) has 64
columns, so most of its compute goes to padding. A packed batch lays the
sentences end to end in rows of `width` tokens. `segment_ids` numbers each row's
sentences 1, 2, ... (0 for padding). The encoder lets a token attend only within
its own sentence and restarts position ids at each sentence. A sentence therefore
gets the hidden states it would get alone, up to float rounding.

The per-sentence fields have shape [rows, segments]: `labels`, `example_mask`
(1.0 for a real sentence) and `example_index` (its row in the dataset, -1 for an
empty slot). Rows and segments are fixed for a run (`packed_shape`), so the
jitted step compiles once.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence

import numpy as np

from fsl_jax.data.encoding import EncodedDataset

# A packed eval split that fits one batch gets a multiple of this many rows, so
# small splits of similar size share a shape (see packed_eval_batches).
ROW_MULTIPLE = 8


def pack_rows(lengths: np.ndarray, rows: Sequence[int], width: int) -> list[list[int]]:
    """Assign dataset rows to packed rows of `width` tokens, longest first, first fit.

    A row longer than width takes a packed row of its own and is cut to width
    (make_packed_batch keeps its separator token last, as the tokenizer does).
    Returns the dataset rows of each packed row, in the order they are laid out.
    """
    if width < 1:
        raise ValueError(f"Invalid packed row width {width}; use at least 1 token.")
    order = sorted(rows, key=lambda row: (-int(lengths[row]), row))
    bins: list[list[int]] = []
    free: list[int] = []
    for row in order:
        length = min(int(lengths[row]), width)
        for index, space in enumerate(free):
            if length <= space:
                bins[index].append(int(row))
                free[index] -= length
                break
        else:
            bins.append([int(row)])
            free.append(width - length)
    return bins


def packed_shape(
    lengths: np.ndarray, batches: Sequence[Sequence[int]], width: int, num_devices: int
) -> tuple[int, int]:
    """Return (rows, segments) that fit every batch of dataset rows in `batches`.

    rows is rounded up to a multiple of num_devices, so a batch splits over them.
    """
    packed = [pack_rows(lengths, rows, width) for rows in batches]
    num_rows = max(len(bins) for bins in packed)
    num_segments = max(len(bin_rows) for bins in packed for bin_rows in bins)
    num_rows = -(-num_rows // num_devices) * num_devices
    return num_rows, num_segments


def pack_split(lengths: np.ndarray, width: int) -> list[list[int]]:
    """Assign every row of a split to packed rows of `width` tokens, longest first, best fit.

    Made for evaluation, where a split can have tens of thousands of rows. Each row
    goes to the packed row with the least free space that it fits in, found by
    bisection, so packing takes O(n log n) comparisons where pack_rows' first fit
    takes O(n x packed rows). Ties go to the earlier packed row, so the result is
    deterministic. A row longer than width is cut to width, as in pack_rows.
    """
    if width < 1:
        raise ValueError(f"Invalid packed row width {width}; use at least 1 token.")
    order = sorted(range(len(lengths)), key=lambda row: (-int(lengths[row]), row))
    bins: list[list[int]] = []
    # (free tokens, packed row) of every packed row, sorted.
    free: list[tuple[int, int]] = []
    for row in order:
        length = min(int(lengths[row]), width)
        position = bisect.bisect_left(free, (length, -1))
        if position < len(free):
            space, index = free.pop(position)
            bins[index].append(row)
        else:
            space, index = width, len(bins)
            bins.append([row])
        bisect.insort(free, (space - length, index))
    return bins


def packed_eval_batches(
    encoded: EncodedDataset, num_rows: int, width: int, num_devices: int
) -> Iterator[dict[str, np.ndarray]]:
    """Yield packed batches of [rows, width] tokens that contain every example once.

    Every batch of a split has the same shape, so an eval step compiles once for
    it. num_rows, rounded up to a multiple of num_devices, is the maximum number of
    rows per batch. A split that fits one batch gets the fewest rows that contain it,
    rounded up to a multiple of ROW_MULTIPLE (and of num_devices), so the small dev
    and train splits of a task's seeds usually share one shape. A larger split
    spreads its rows evenly over as few batches as num_rows allows. The number of
    sentence slots per row is rounded up to a multiple of 8. The last batch is
    filled with empty rows.
    """
    bins = pack_split(encoded.lengths, width)
    max_rows = -(-num_rows // num_devices) * num_devices
    num_batches = max(1, -(-len(bins) // max_rows))
    multiple = math.lcm(ROW_MULTIPLE, num_devices) if num_batches == 1 else num_devices
    rows = -(-max(len(bins), 1) // num_batches)
    rows = min(-(-rows // multiple) * multiple, max_rows)
    num_segments = max((len(bin_rows) for bin_rows in bins), default=1)
    num_segments = -(-num_segments // 8) * 8
    for start in range(0, len(bins), rows):
        yield fill_packed_batch(encoded, bins[start : start + rows], width, rows, num_segments)


def make_packed_batch(
    encoded: EncodedDataset,
    rows: Sequence[int],
    width: int,
    num_rows: int,
    num_segments: int,
) -> dict[str, np.ndarray]:
    """Pack dataset `rows` into a [num_rows, width] batch (see the module docstring).

    Raises:
      ValueError: the rows do not fit num_rows x num_segments; the message gives the
        shape they need.
    """
    bins = pack_rows(encoded.lengths, rows, width)
    needed_segments = max((len(bin_rows) for bin_rows in bins), default=0)
    if len(bins) > num_rows or needed_segments > num_segments:
        raise ValueError(
            f"{len(rows)} sentences need {len(bins)} packed rows of {width} tokens with up to "
            f"{needed_segments} sentences each, but the batch has {num_rows} rows and "
            f"{num_segments} segments; size it with packed_shape over every batch."
        )
    return fill_packed_batch(encoded, bins, width, num_rows, num_segments)


def fill_packed_batch(
    encoded: EncodedDataset,
    bins: Sequence[Sequence[int]],
    width: int,
    num_rows: int,
    num_segments: int,
) -> dict[str, np.ndarray]:
    """Lay out the dataset rows of each of `bins` in one row of a [num_rows, width] batch.

    The caller guarantees len(bins) <= num_rows and at most num_segments rows per bin.
    """
    batch = {
        "input_ids": np.full((num_rows, width), encoded.pad_token_id, np.int32),
        "token_type_ids": np.zeros((num_rows, width), np.int32),
        "attention_mask": np.zeros((num_rows, width), np.int32),
        "segment_ids": np.zeros((num_rows, width), np.int32),
        "labels": np.zeros((num_rows, num_segments), np.int32),
        "example_mask": np.zeros((num_rows, num_segments), np.float32),
        "example_index": np.full((num_rows, num_segments), -1, np.int32),
    }
    for packed_row, bin_rows in enumerate(bins):
        start = 0
        for segment, row in enumerate(bin_rows):
            length = min(int(encoded.lengths[row]), width)
            end = start + length
            batch["input_ids"][packed_row, start:end] = encoded.input_ids[row, :length]
            batch["token_type_ids"][packed_row, start:end] = encoded.token_type_ids[row, :length]
            if encoded.lengths[row] > width:
                batch["input_ids"][packed_row, end - 1] = encoded.sep_token_id
            batch["attention_mask"][packed_row, start:end] = 1
            batch["segment_ids"][packed_row, start:end] = segment + 1
            if encoded.labels is not None:
                batch["labels"][packed_row, segment] = encoded.labels[row]
            batch["example_mask"][packed_row, segment] = 1.0
            batch["example_index"][packed_row, segment] = row
            start = end
    return batch
