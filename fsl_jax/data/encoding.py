"""Tokenized splits: token arrays, labels and a truncation report."""

from __future__ import annotations

import dataclasses

import numpy as np
from absl import logging

from fsl_jax.data.labels import LabelVocab
from fsl_jax.data.records import Split
from fsl_jax.data.reports import Report
from fsl_jax.data.tokenizer import Tokenizer

TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids")


@dataclasses.dataclass
class TruncationReport(Report):
    """Rows that the tokenizer cut to `max_length`. Rows are line numbers when known."""

    split: str
    path: str | None
    rows: int
    max_length: int
    truncated_rows: int
    truncated_row_ids: list[int]

    def summary(self) -> str:
        return (
            f"{self.path or self.split}: {self.truncated_rows} of {self.rows} rows truncated to "
            f"{self.max_length} tokens {self.truncated_row_ids[:20]}"
        )


@dataclasses.dataclass
class EncodedDataset:
    """A tokenized split that `batch_iterator` reads.

    Attributes:
      input_ids, attention_mask, token_type_ids: int32 [N, W], padded to W = max_length.
      lengths: int32 [N], real tokens per row.
      labels: int32 [N] class indices, or None for an unlabelled pool.
      soft_labels: float32 [N, C] targets (such as teacher probabilities), or None.
      sep_token_id, pad_token_id: used when a batch is cut to a shorter length bucket.
      truncation: rows cut by the tokenizer.
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray | None
    sep_token_id: int
    pad_token_id: int
    soft_labels: np.ndarray | None = None
    truncation: TruncationReport | None = None
    name: str = ""

    def __post_init__(self) -> None:
        rows = len(self.input_ids)
        for key in (*TOKEN_KEYS, "lengths", "labels", "soft_labels"):
            value = getattr(self, key)
            if value is not None and len(value) != rows:
                raise ValueError(
                    f"EncodedDataset {self.name!r}: {key} has {len(value)} rows, input_ids has {rows}."
                )

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def max_length(self) -> int:
        return self.input_ids.shape[1]

    def with_soft_labels(self, soft_labels: np.ndarray) -> EncodedDataset:
        """Return a copy whose batches also carry `soft_labels` float32 [N, C]."""
        return dataclasses.replace(self, soft_labels=np.asarray(soft_labels, dtype=np.float32))


def encode_split(
    tokenizer: Tokenizer,
    split: Split,
    max_length: int,
    label_vocab: LabelVocab | None = None,
) -> EncodedDataset:
    """Tokenize a split to `max_length` tokens and map its labels with `label_vocab`.

    Without `label_vocab` the dataset is unlabelled (`labels` is None). Rows cut by
    the tokenizer are counted in `truncation` and logged.
    """
    encoded = tokenizer.encode(split.texts, split.text_pairs, max_length=max_length)
    truncated = np.flatnonzero(encoded["truncated"])
    row_ids = [split.examples[row].line or int(row) for row in truncated]
    report = TruncationReport(
        split=split.name,
        path=str(split.path) if split.path else None,
        rows=len(split),
        max_length=max_length,
        truncated_rows=len(truncated),
        truncated_row_ids=row_ids[:50],
    )
    if report.truncated_rows:
        logging.info("Truncation %s", report.summary())

    return EncodedDataset(
        input_ids=encoded["input_ids"],
        attention_mask=encoded["attention_mask"],
        token_type_ids=encoded["token_type_ids"],
        lengths=encoded["length"],
        labels=label_vocab.encode(split) if label_vocab is not None else None,
        sep_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
        truncation=report,
        name=split.name,
    )
