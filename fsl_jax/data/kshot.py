"""Seeded K-per-class sampling from a pool, and writing splits in the LM-BFF layout."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from pathlib import Path

import numpy as np
from absl import logging

from fsl_jax.data.labels import LabelVocab
from fsl_jax.data.loaders import kshot_folder
from fsl_jax.data.quality import MATCH_CONFIG, match_key
from fsl_jax.data.records import LMBFF_TSV, DataError, FileFormat, Split
from fsl_jax.data.reports import Report


@dataclasses.dataclass
class SamplingReport(Report):
    """Per-class counts of one K-shot draw. `short_classes` had fewer rows than requested."""

    pool: str
    k: int
    dev_k: int
    seed: int
    pool_rows: int
    duplicates_removed: int
    pool_counts: dict[str, int]
    train_counts: dict[str, int]
    dev_counts: dict[str, int]
    short_classes: list[str]

    def summary(self) -> str:
        text = (
            f"{self.pool}: K={self.k} (dev {self.dev_k}) seed {self.seed}; pool {self.pool_counts}, "
            f"train {self.train_counts}, dev {self.dev_counts}"
        )
        if self.duplicates_removed:
            text += f"; {self.duplicates_removed} duplicate pool rows skipped"
        if self.short_classes:
            text += f"; classes with fewer than K+dev_k rows, all taken: {self.short_classes}"
        return text


@dataclasses.dataclass
class KShotSample:
    train: Split
    dev: Split
    report: SamplingReport


def _distinct_rows(pool: Split) -> list[int]:
    """Return the row indices of the first occurrence of each normalised text."""
    seen = set()
    rows = []
    for row, example in enumerate(pool.examples):
        key = match_key(example, MATCH_CONFIG)
        if key not in seen:
            seen.add(key)
            rows.append(row)
    return rows


def sample_kshot(
    pool: Split,
    k: int,
    seed: int,
    *,
    dev_k: int | None = None,
    label_vocab: LabelVocab | None = None,
    allow_fewer: bool = False,
    deduplicate: bool = True,
) -> KShotSample:
    """Draw K examples per class for train and a disjoint `dev_k` (default K) per class for dev.

    The draw depends only on the pool's rows and order, `k`, `dev_k` and `seed`. With
    `deduplicate`, rows whose normalised text repeats an earlier row are skipped first,
    so no sentence is in both train and dev. Classes are taken in `label_vocab` order
    (default: `LabelVocab.from_labels`).

    Raises:
      DataError: the pool has an unlabelled row or a label outside `label_vocab`, or a
        class has fewer than K + dev_k rows and `allow_fewer` is False. The message lists
        every class's count. With `allow_fewer`, such a class gives train up to K of its
        rows and dev the rest (up to dev_k), and the report lists it.
    """
    dev_k = k if dev_k is None else dev_k
    if k < 1 or dev_k < 0:
        raise ValueError(
            f"Invalid k={k}, dev_k={dev_k}: k must be at least 1 and dev_k at least 0."
        )
    label_vocab = label_vocab or LabelVocab.from_labels(
        label for label in pool.labels if label is not None
    )
    classes = label_vocab.encode(pool)

    rows = np.array(_distinct_rows(pool) if deduplicate else range(len(pool)), dtype=np.int64)
    rows_by_class = {
        name: rows[classes[rows] == index] for index, name in enumerate(label_vocab.names)
    }
    pool_counts = {name: len(members) for name, members in rows_by_class.items()}
    short_classes = [name for name, count in pool_counts.items() if count < k + dev_k]
    if short_classes and not allow_fewer:
        raise DataError(
            f"{pool.path or pool.name}: classes {short_classes} have fewer than K + dev_k = "
            f"{k + dev_k} distinct rows. Rows per class: {pool_counts}. Lower K, or pass "
            "allow_fewer=True to take all rows of those classes."
        )

    rng = np.random.default_rng(seed)
    train_rows, dev_rows = [], []
    for name in label_vocab.names:
        shuffled = rng.permutation(rows_by_class[name])
        train_rows.extend(shuffled[:k])
        dev_rows.extend(shuffled[k : k + dev_k])
    train_rows = rng.permutation(np.array(train_rows, dtype=np.int64))
    dev_rows = rng.permutation(np.array(dev_rows, dtype=np.int64))

    def take(name: str, selected: np.ndarray) -> Split:
        return Split(name, [pool.examples[row] for row in selected], pool.path)

    train, dev = take("train", train_rows), take("dev", dev_rows)
    report = SamplingReport(
        pool=str(pool.path or pool.name),
        k=k,
        dev_k=dev_k,
        seed=seed,
        pool_rows=len(pool),
        duplicates_removed=len(pool) - len(rows),
        pool_counts=pool_counts,
        train_counts={
            name: int((classes[train_rows] == i).sum()) for i, name in enumerate(label_vocab.names)
        },
        dev_counts={
            name: int((classes[dev_rows] == i).sum()) for i, name in enumerate(label_vocab.names)
        },
        short_classes=short_classes,
    )
    if short_classes:
        logging.warning("K-shot sample with short classes: %s", report.summary())
    else:
        logging.info("K-shot sample: %s", report.summary())
    return KShotSample(train, dev, report)


def _row_values(example, file_format: FileFormat) -> dict[str, str | None]:
    values = {
        "text_field": example.text,
        "text_pair_field": example.text_pair,
        "label_field": example.label,
    }
    return {option: values[option] for option, _ in file_format.named_fields()}


def _column_order(file_format: FileFormat) -> list[str]:
    """Return the FileFormat options in file column order."""
    fields = file_format.named_fields()
    if file_format.header:
        return [option for option, _ in fields]
    ordered = sorted(fields, key=lambda item: item[1])
    if [index for _, index in ordered] != list(range(len(fields))):
        raise ValueError(
            f"Cannot write columns {dict(fields)}: headerless columns must be 0 to {len(fields) - 1}."
        )
    return [option for option, _ in ordered]


def format_split(split: Split, file_format: FileFormat = LMBFF_TSV) -> str:
    """Return the file contents for `split` in `file_format`, with `\\n` line endings.

    TSV is written without quoting, like GLUE. CSV quotes cells only where needed.

    Raises:
      DataError: a TSV text contains a tab or line break (clean the split first), or a
        labelled format gets a row without a label.
    """
    fields = dict(file_format.named_fields())
    lines = []
    if file_format.kind == "jsonl":
        for example in split.examples:
            values = _row_values(example, file_format)
            _check_labeled(split, example, values)
            record = {fields[option]: value for option, value in values.items()}
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        return "".join(lines)

    order = _column_order(file_format)
    rows = [[str(fields[option]) for option in order]] if file_format.header else []
    for example in split.examples:
        values = _row_values(example, file_format)
        _check_labeled(split, example, values)
        cells = [values[option] for option in order]
        if file_format.kind == "tsv" and any(char in cell for cell in cells for char in "\t\r\n"):
            raise DataError(
                f"{split.location(example)}: a text contains a tab or line break, which TSV "
                "cannot store. Clean the split (collapse_whitespace=True) before writing."
            )
        rows.append(cells)

    if file_format.kind == "tsv":
        return "".join("\t".join(cells) + "\n" for cells in rows)
    output = io.StringIO()
    csv.writer(output, lineterminator="\n").writerows(rows)
    return output.getvalue()


def _check_labeled(split: Split, example, values: dict) -> None:
    if "label_field" in values and values["label_field"] is None:
        raise DataError(
            f"{split.location(example)}: row has no label, but the file format has a label column."
        )


def write_split(split: Split, path: str | os.PathLike, file_format: FileFormat = LMBFF_TSV) -> Path:
    """Write `split` to `path` as UTF-8; the same split and format give byte-identical files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(format_split(split, file_format).encode("utf-8"))
    return path


def write_lmbff_kshot(
    task_dir: str | os.PathLike,
    sample: KShotSample,
    test: Split | None = None,
    file_format: FileFormat = LMBFF_TSV,
) -> Path:
    """Write a K-shot sample as `<task_dir>/k-shot/<K>-<seed>/{train,dev,test}<suffix>`.

    `test` (for example the GLUE dev set) is written beside train and dev so that
    `load_lmbff_kshot` reads the folder like any LM-BFF task. Returns the folder. The
    sampling report is written beside the splits as `sampling_report.json`.
    """
    folder = kshot_folder(task_dir, sample.report.k, sample.report.seed)
    write_split(sample.train, folder / f"train{file_format.suffix}", file_format)
    write_split(sample.dev, folder / f"dev{file_format.suffix}", file_format)
    if test is not None:
        write_split(test, folder / f"test{file_format.suffix}", file_format)
    (folder / "sampling_report.json").write_text(
        sample.report.to_json(indent=1) + "\n", encoding="utf-8"
    )
    logging.info("Wrote K-shot splits to %s", folder)
    return folder
