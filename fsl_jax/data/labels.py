"""Label vocabulary: a stable mapping between label strings and class indices."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np

from fsl_jax.data.records import DataError, Split


def _is_integer(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def sort_labels(labels: Iterable[str]) -> tuple[str, ...]:
    """Return the distinct labels in a stable order: numeric if all are integers, else lexicographic."""
    distinct = set(labels)
    if all(_is_integer(label) for label in distinct):
        return tuple(sorted(distinct, key=int))
    return tuple(sorted(distinct))


@dataclasses.dataclass(frozen=True)
class LabelVocab:
    """Label names in class-index order, so `names[i]` is the label of class i."""

    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError("A label vocabulary needs at least one label.")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"Duplicate label names in {self.names}.")
        object.__setattr__(self, "_index", {name: i for i, name in enumerate(self.names)})

    @classmethod
    def from_labels(cls, labels: Iterable[str]) -> LabelVocab:
        """Build a vocabulary from label strings, ordered by `sort_labels`."""
        return cls(sort_labels(labels))

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, label: str) -> bool:
        return label in self._index

    def index(self, label: str) -> int:
        if label not in self._index:
            raise DataError(f"Label {label!r} is not in the label vocabulary {list(self.names)}.")
        return self._index[label]

    def encode(self, split: Split) -> np.ndarray:
        """Return the class indices of a labelled split as int32 [N].

        Raises:
          DataError: a row has no label, or a label outside the vocabulary (the message
            names the label, the file and the line).
        """
        indices = np.empty(len(split), dtype=np.int32)
        for row, example in enumerate(split.examples):
            if example.label is None:
                raise DataError(f"{split.location(example)}: row has no label.")
            if example.label not in self._index:
                raise DataError(
                    f"{split.location(example)}: unknown label {example.label!r}; the label "
                    f"vocabulary is {list(self.names)}."
                )
            indices[row] = self._index[example.label]
        return indices

    def decode(self, indices: Sequence[int] | np.ndarray) -> list[str]:
        return [self.names[int(i)] for i in indices]


def build_label_vocab(
    train: Split, others: Sequence[Split] = (), label_names: Sequence[str] | None = None
) -> LabelVocab:
    """Build the label vocabulary of `train` and check that `others` use only train's labels.

    With `label_names`, the vocabulary is exactly those names in that order (a task's
    fixed label set); otherwise it is train's labels in `sort_labels` order.

    Raises:
      DataError: train is unlabelled or has a label outside `label_names`, or a split in
        `others` has a label that train lacks. The message names the label and the file.
    """
    if not train.examples:
        raise DataError(f"Cannot build a label vocabulary: split {train.name!r} has no examples.")
    unlabeled = [example for example in train.examples if example.label is None]
    if unlabeled:
        raise DataError(
            f"Cannot build a label vocabulary: {train.location(unlabeled[0])} has no label."
        )
    train_labels = set(train.labels)

    if label_names is None:
        vocab = LabelVocab.from_labels(train_labels)
    else:
        vocab = LabelVocab(tuple(label_names))
        for example in train.examples:
            if example.label not in vocab:
                raise DataError(
                    f"{train.location(example)}: unknown label {example.label!r}; the task's "
                    f"labels are {list(vocab.names)}."
                )

    for split in others:
        for example in split.examples:
            if example.label is not None and example.label not in train_labels:
                raise DataError(
                    f"{split.location(example)}: label {example.label!r} does not occur in the "
                    f"train split ({train.path or train.name}), whose labels are "
                    f"{sort_labels(train_labels)}."
                )
    return vocab
