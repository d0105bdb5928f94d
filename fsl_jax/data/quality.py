"""Duplicate and overlap checks between splits, after cleaning-style normalisation."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping, Sequence

from absl import logging

from fsl_jax.data.cleaning import CleaningConfig, clean_text
from fsl_jax.data.records import Example, Split
from fsl_jax.data.reports import Report

# Texts are compared after NFKC, control-character removal and whitespace collapse, so
# "a  film ." and "a film . " match. Case is kept: the check is for exact copies.
MATCH_CONFIG = CleaningConfig()

# Groups or overlaps listed in full in a report; the counts always cover all of them.
MAX_LISTED = 50


def match_key(example: Example, config: CleaningConfig = MATCH_CONFIG) -> tuple[str, str | None]:
    """Return the normalised (text, text_pair) used to compare rows."""
    pair = None if example.text_pair is None else clean_text(example.text_pair, config)
    return clean_text(example.text, config), pair


def _row_id(example: Example, row: int) -> int:
    return example.line or row


@dataclasses.dataclass
class DuplicateGroup:
    text: str
    rows: list[int]
    labels: list[str | None]

    @property
    def conflicting_labels(self) -> bool:
        return len(set(self.labels)) > 1


@dataclasses.dataclass
class DuplicateReport(Report):
    """Rows of one split whose normalised texts are equal. Rows are line numbers when known."""

    split: str
    path: str | None
    rows: int
    distinct: int
    duplicate_rows: int
    conflicting_groups: int
    groups: list[DuplicateGroup]

    def summary(self) -> str:
        return (
            f"{self.path or self.split}: {self.rows} rows, {self.distinct} distinct, "
            f"{self.duplicate_rows} duplicate rows, {self.conflicting_groups} groups with conflicting labels"
        )


def find_duplicates(split: Split, config: CleaningConfig = MATCH_CONFIG) -> DuplicateReport:
    """Group the rows of `split` that are equal after normalisation.

    `duplicate_rows` counts every row beyond the first of its group. The report lists the
    first MAX_LISTED groups.
    """
    groups: dict[tuple, list[tuple[int, Example]]] = collections.defaultdict(list)
    for row, example in enumerate(split.examples):
        groups[match_key(example, config)].append((row, example))

    repeated = [
        DuplicateGroup(
            key[0],
            [_row_id(example, row) for row, example in members],
            [example.label for _, example in members],
        )
        for key, members in groups.items()
        if len(members) > 1
    ]
    return DuplicateReport(
        split=split.name,
        path=str(split.path) if split.path else None,
        rows=len(split),
        distinct=len(groups),
        duplicate_rows=sum(len(group.rows) - 1 for group in repeated),
        conflicting_groups=sum(group.conflicting_labels for group in repeated),
        groups=repeated[:MAX_LISTED],
    )


@dataclasses.dataclass
class Overlap:
    text: str
    rows: list[int]
    reference_rows: list[int]


@dataclasses.dataclass
class OverlapReport(Report):
    """Rows of `split` whose normalised text also occurs in `reference` (such as test)."""

    split: str
    reference: str
    path: str | None
    reference_path: str | None
    overlapping_rows: int
    overlapping_texts: int
    overlaps: list[Overlap]

    def summary(self) -> str:
        return (
            f"{self.path or self.split} vs {self.reference_path or self.reference}: "
            f"{self.overlapping_rows} rows ({self.overlapping_texts} distinct texts) also in {self.reference}"
        )


def find_overlaps(
    split: Split, reference: Split, config: CleaningConfig = MATCH_CONFIG
) -> OverlapReport:
    """Find the rows of `split` that also occur in `reference` after normalisation."""
    reference_rows: dict[tuple, list[int]] = collections.defaultdict(list)
    for row, example in enumerate(reference.examples):
        reference_rows[match_key(example, config)].append(_row_id(example, row))

    found: dict[tuple, Overlap] = {}
    for row, example in enumerate(split.examples):
        key = match_key(example, config)
        if key in reference_rows:
            overlap = found.setdefault(key, Overlap(key[0], [], reference_rows[key]))
            overlap.rows.append(_row_id(example, row))

    overlaps = list(found.values())
    return OverlapReport(
        split=split.name,
        reference=reference.name,
        path=str(split.path) if split.path else None,
        reference_path=str(reference.path) if reference.path else None,
        overlapping_rows=sum(len(overlap.rows) for overlap in overlaps),
        overlapping_texts=len(overlaps),
        overlaps=overlaps[:MAX_LISTED],
    )


def remove_overlaps(
    split: Split, references: Sequence[Split], config: CleaningConfig = MATCH_CONFIG
) -> tuple[Split, list[OverlapReport]]:
    """Drop the rows of `split` that occur in any reference split, and report them.

    Use it on an unlabelled transfer set before distillation so that evaluation
    sentences do not leak into training.
    """
    reports = [find_overlaps(split, reference, config) for reference in references]
    banned = {
        match_key(example, config) for reference in references for example in reference.examples
    }
    kept_examples = [
        example for example in split.examples if match_key(example, config) not in banned
    ]
    for report in reports:
        if report.overlapping_rows:
            logging.warning("Removing overlap: %s", report.summary())
    return split.replace_examples(kept_examples), reports


@dataclasses.dataclass
class AuditReport(Report):
    """Duplicates inside each split and overlaps of every other split with the evaluation split."""

    duplicates: dict[str, DuplicateReport]
    overlaps: dict[str, OverlapReport]

    def summary(self) -> str:
        parts = [report.summary() for report in self.duplicates.values()]
        parts += [report.summary() for report in self.overlaps.values()]
        return "; ".join(parts)


def audit_splits(
    splits: Mapping[str, Split],
    evaluation_split: str = "test",
    config: CleaningConfig = MATCH_CONFIG,
) -> AuditReport:
    """Report duplicates inside every split and exact overlaps of the others with `evaluation_split`."""
    duplicates = {name: find_duplicates(split, config) for name, split in splits.items()}
    overlaps = {}
    if evaluation_split in splits:
        reference = splits[evaluation_split]
        for name, split in splits.items():
            if name != evaluation_split:
                overlaps[name] = find_overlaps(split, reference, config)
    report = AuditReport(duplicates, overlaps)
    for item in [*duplicates.values(), *overlaps.values()]:
        if getattr(item, "duplicate_rows", 0) or getattr(item, "overlapping_rows", 0):
            logging.warning("Data audit: %s", item.summary())
    return report
