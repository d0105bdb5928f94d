"""Record types shared by the data stage: examples, splits, file formats and DataError."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from fsl_jax.data.reports import Report

FileKind = Literal["tsv", "csv", "jsonl"]
Field = str | int


class DataError(ValueError):
    """Invalid data file or split contents. The message names the file and, where known, the line."""


@dataclasses.dataclass(frozen=True, slots=True)
class Example:
    """One row: a text, an optional second text of a pair, and a label (None when unlabelled).

    Labels are kept as the strings found in the file, such as "0" or "Positive", and a
    LabelVocab maps them to class indices. `line` is the 1-based line of the row in its
    source file, or 0 for rows that come from elsewhere.
    """

    text: str
    text_pair: str | None = None
    label: str | None = None
    line: int = 0


@dataclasses.dataclass(frozen=True)
class FileFormat:
    """Layout of a TSV, CSV or JSON lines file.

    A field is a column name (TSV/CSV with a header, or a JSON key) or a 0-based column
    index (TSV/CSV without a header). `label_field=None` reads an unlabelled file.
    `encoding_errors` is "strict" (invalid UTF-8 raises DataError with the line) or
    "replace" (invalid bytes become U+FFFD and the lines are listed in the LoadReport).
    """

    kind: FileKind
    text_field: Field = "sentence"
    text_pair_field: Field | None = None
    label_field: Field | None = "label"
    header: bool = True
    encoding_errors: Literal["strict", "replace"] = "strict"

    def __post_init__(self) -> None:
        if self.kind not in ("tsv", "csv", "jsonl"):
            raise ValueError(f"Invalid file kind {self.kind!r}; expected 'tsv', 'csv' or 'jsonl'.")
        if self.encoding_errors not in ("strict", "replace"):
            raise ValueError(
                f"Invalid encoding_errors {self.encoding_errors!r}; expected 'strict' or 'replace'."
            )
        for name, value in self.named_fields():
            if self.kind == "jsonl" and not isinstance(value, str):
                raise ValueError(f"{name}={value!r}: JSON lines fields must be key names (str).")
            if self.kind != "jsonl" and self.header != isinstance(value, str):
                expected = "a column name (str)" if self.header else "a column index (int)"
                raise ValueError(
                    f"{name}={value!r}: a {self.kind} file with header={self.header} needs {expected}."
                )

    def named_fields(self) -> list[tuple[str, Field]]:
        """Return the (option name, field) pairs that are set, text first."""
        pairs = [("text_field", self.text_field)]
        if self.text_pair_field is not None:
            pairs.append(("text_pair_field", self.text_pair_field))
        if self.label_field is not None:
            pairs.append(("label_field", self.label_field))
        return pairs

    def unlabeled(self) -> FileFormat:
        """Return the same format without the label field."""
        return dataclasses.replace(self, label_field=None)

    @property
    def suffix(self) -> str:
        return {"tsv": ".tsv", "csv": ".csv", "jsonl": ".json"}[self.kind]


# LM-BFF k-shot files: TSV with a `sentence<TAB>label` header (SST-2), or headerless
# `label,sentence` CSV (SST-5, TREC, CR and the other LM-BFF tasks).
LMBFF_TSV = FileFormat("tsv", text_field="sentence", label_field="label", header=True)
LMBFF_CSV = FileFormat("csv", text_field=1, label_field=0, header=False)
# FewCLUE: one JSON object per line with "sentence" and a string "label".
FEWCLUE_JSONL = FileFormat("jsonl", text_field="sentence", label_field="label")


def infer_format(path: str | Path) -> FileFormat:
    """Return the LM-BFF or FewCLUE format that matches the file suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".tsv":
        return LMBFF_TSV
    if suffix == ".csv":
        return LMBFF_CSV
    if suffix in (".json", ".jsonl"):
        return FEWCLUE_JSONL
    raise DataError(
        f"Cannot infer the file format of {path} from its suffix {suffix!r}. "
        "Pass a FileFormat, or use .tsv, .csv, .json or .jsonl."
    )


@dataclasses.dataclass
class LoadReport(Report):
    """Row count of one loaded file, with the blank lines skipped and the lines whose invalid UTF-8 was replaced."""

    path: str
    rows: int
    blank_lines_skipped: list[int] = dataclasses.field(default_factory=list)
    invalid_utf8_lines: list[int] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        text = f"{self.path}: {self.rows} rows"
        if self.blank_lines_skipped:
            text += f", {len(self.blank_lines_skipped)} blank lines skipped"
        if self.invalid_utf8_lines:
            text += f", {len(self.invalid_utf8_lines)} lines with invalid UTF-8 replaced"
        return text


@dataclasses.dataclass
class Split:
    """The examples of one split (train, dev, test, a pool) and the file they came from."""

    name: str
    examples: list[Example]
    path: Path | None = None
    report: LoadReport | None = None

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self):
        return iter(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]

    @property
    def texts(self) -> list[str]:
        return [example.text for example in self.examples]

    @property
    def text_pairs(self) -> list[str | None] | None:
        """Second texts of the pairs, or None when no example has one."""
        if all(example.text_pair is None for example in self.examples):
            return None
        return [example.text_pair for example in self.examples]

    @property
    def labels(self) -> list[str | None]:
        return [example.label for example in self.examples]

    @property
    def is_labeled(self) -> bool:
        return bool(self.examples) and all(example.label is not None for example in self.examples)

    def location(self, example: Example) -> str:
        """Return 'path line N' (or the split name) to point an error message at a row."""
        where = str(self.path) if self.path is not None else f"split {self.name!r}"
        return f"{where} line {example.line}" if example.line else where

    def replace_examples(self, examples: Sequence[Example]) -> Split:
        """Return a split with the same name and source but other examples."""
        return Split(self.name, list(examples), self.path, self.report)
