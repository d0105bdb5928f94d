"""Read TSV, CSV and JSON lines splits, and LM-BFF k-shot folders."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from absl import logging

from fsl_jax.data.labels import LabelVocab, build_label_vocab
from fsl_jax.data.records import (
    DataError,
    Example,
    Field,
    FileFormat,
    LoadReport,
    Split,
    infer_format,
)

SPLIT_NAMES = ("train", "dev", "test")


def _decode(path: Path, raw: bytes, errors: str) -> tuple[str, list[int]]:
    """Decode UTF-8 (a leading BOM is dropped) and return the text and the lines repaired."""
    try:
        return raw.decode("utf-8-sig"), []
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        if errors == "strict":
            raise DataError(
                f"{path} line {line}: invalid UTF-8 ({error.reason} at byte {error.start}). "
                "Fix the file, or load it with FileFormat(encoding_errors='replace')."
            ) from error

    bad_lines = []
    for number, line_bytes in enumerate(raw.split(b"\n"), start=1):
        try:
            line_bytes.decode("utf-8")
        except UnicodeDecodeError:
            bad_lines.append(number)
    logging.warning(
        "%s: replaced invalid UTF-8 on %d lines: %s", path, len(bad_lines), bad_lines[:20]
    )
    return raw.decode("utf-8-sig", errors="replace"), bad_lines


def _read_text(path: Path, errors: str) -> tuple[str, list[int]]:
    if not path.exists():
        raise FileNotFoundError(
            f"Data file not found: {path}. The data folder is config.data_dir, else "
            "$FSL_JAX_DATA_DIR, else ../shared/data beside the repository; point one of them "
            "at the folder that holds the task folders (SST-2, trec, ...)."
        )
    if path.is_dir():
        raise DataError(f"Expected a data file but {path} is a folder.")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"Data file {path} is empty.")
    return _decode(path, raw, errors)


def _column_index(path: Path, header: list[str], option: str, field: Field) -> int:
    names = [name.strip() for name in header]
    if field not in names:
        raise DataError(
            f"{path}: column {field!r} ({option}) not found; the header has columns {names}."
        )
    return names.index(field)


def _delimited_rows(text: str, kind: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (first line number, cells) per record; multi-line quoted CSV records count once."""
    # The csv module rejects fields over 131,072 characters by default, and a single
    # very long line is valid input that the tokenizer truncates later.
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    if kind == "tsv":
        # GLUE-style TSV has no quoting: a `"` is part of the sentence.
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(io.StringIO(text, newline=""))
    previous_line = 0
    for cells in reader:
        yield previous_line + 1, cells
        previous_line = reader.line_num


def _parse_delimited(
    path: Path, text: str, file_format: FileFormat, report: LoadReport
) -> list[Example]:
    rows = _delimited_rows(text, file_format.kind)
    columns: dict[str, int] = {}
    width = None
    examples = []

    for line, cells in rows:
        if not cells or (len(cells) == 1 and not cells[0]):
            report.blank_lines_skipped.append(line)
            continue

        if file_format.header and not columns:
            for option, field in file_format.named_fields():
                columns[option] = _column_index(path, cells, option, field)
            width = len(cells)
            continue
        if not columns:
            columns = {option: int(field) for option, field in file_format.named_fields()}
            width = len(cells)
            if width <= max(columns.values()):
                raise DataError(
                    f"{path} line {line}: has {width} columns, but the format reads columns "
                    f"{columns}. Check the delimiter and the FileFormat fields."
                )

        if len(cells) != width:
            raise DataError(
                f"{path} line {line}: has {len(cells)} columns, expected {width} like the "
                f"{'header' if file_format.header else 'first row'}. A {file_format.kind} "
                "text containing the delimiter must be quoted (CSV) or cleaned (TSV)."
            )
        examples.append(
            _make_example(path, line, {option: cells[i] for option, i in columns.items()})
        )
    return examples


def _parse_jsonl(
    path: Path, text: str, file_format: FileFormat, report: LoadReport
) -> list[Example]:
    # Split on "\n" only: str.splitlines would also break at U+2028 or U+0085 inside a
    # JSON string.
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    examples = []
    for line, content in enumerate(lines, start=1):
        if not content.strip():
            report.blank_lines_skipped.append(line)
            continue
        try:
            record = json.loads(content)
        except json.JSONDecodeError as error:
            raise DataError(f"{path} line {line}: invalid JSON ({error.msg}).") from error
        if not isinstance(record, dict):
            raise DataError(
                f"{path} line {line}: expected a JSON object, got {type(record).__name__}."
            )

        values = {}
        for option, key in file_format.named_fields():
            if key not in record:
                raise DataError(
                    f"{path} line {line}: key {key!r} ({option}) not found; the object has keys "
                    f"{sorted(record)}."
                )
            values[option] = record[key]
        examples.append(_make_example(path, line, values))
    return examples


def _make_example(path: Path, line: int, values: dict[str, Any]) -> Example:
    for option in ("text_field", "text_pair_field"):
        if option in values and not isinstance(values[option], str):
            raise DataError(
                f"{path} line {line}: {option} must be a string, got {type(values[option]).__name__} "
                f"{values[option]!r}."
            )
    label = None
    if "label_field" in values:
        label = values["label_field"]
        if label is None or isinstance(label, (dict, list)) or not str(label).strip():
            raise DataError(f"{path} line {line}: invalid label {label!r}.")
        label = str(label).strip()
    return Example(values["text_field"], values.get("text_pair_field"), label, line)


def load_split(
    path: str | os.PathLike, file_format: FileFormat | None = None, name: str | None = None
) -> Split:
    """Read one TSV, CSV or JSON lines file into a Split.

    Without `file_format` the LM-BFF or FewCLUE format is inferred from the suffix (see
    `infer_format`). Blank lines are skipped and listed in `split.report`. Texts are
    returned as read, so cleaning is a separate step (`clean_split`).

    Raises:
      FileNotFoundError: the file does not exist.
      DataError: the file is empty, has no data rows, lacks a column or key, has a row
        of the wrong width, has invalid UTF-8 in strict mode, or has an invalid value.
    """
    path = Path(path)
    file_format = file_format or infer_format(path)
    text, invalid_lines = _read_text(path, file_format.encoding_errors)
    report = LoadReport(str(path), 0, invalid_utf8_lines=invalid_lines)

    if file_format.kind == "jsonl":
        examples = _parse_jsonl(path, text, file_format, report)
    else:
        examples = _parse_delimited(path, text, file_format, report)
    if not examples:
        raise DataError(f"Data file {path} has no data rows.")

    report.rows = len(examples)
    if report.blank_lines_skipped:
        logging.info("%s", report.summary())
    return Split(name or path.stem, examples, path, report)


def load_unlabeled(
    path: str | os.PathLike, file_format: FileFormat | None = None, name: str | None = None
) -> Split:
    """Read a text-only pool, such as a distillation transfer set, ignoring any label field."""
    file_format = (file_format or infer_format(path)).unlabeled()
    return load_split(path, file_format, name)


def kshot_folder(task_dir: str | os.PathLike, k: int, seed: int) -> Path:
    """Return `<task_dir>/k-shot/<k>-<seed>`, the LM-BFF folder of one K and seed."""
    return Path(task_dir) / "k-shot" / f"{k}-{seed}"


def load_lmbff_kshot(
    task_dir: str | os.PathLike,
    k: int,
    seed: int,
    file_format: FileFormat | None = None,
    label_names: tuple[str, ...] | None = None,
) -> tuple[dict[str, Split], LabelVocab]:
    """Load the train, dev and test splits of an LM-BFF k-shot folder and their label vocabulary.

    Each split is `<task_dir>/k-shot/<k>-<seed>/<split>` with suffix .tsv, .csv, .json or
    .jsonl, and its format is inferred from the suffix unless given. The vocabulary comes
    from train, in the order of `label_names` when given. A dev or test label that train
    lacks raises DataError.
    """
    folder = kshot_folder(task_dir, k, seed)
    if not folder.is_dir():
        raise FileNotFoundError(f"K-shot folder not found: {folder}")

    splits = {}
    for split_name in SPLIT_NAMES:
        candidates = [
            folder / f"{split_name}{suffix}" for suffix in (".tsv", ".csv", ".json", ".jsonl")
        ]
        found = [path for path in candidates if path.is_file()]
        if not found:
            raise FileNotFoundError(
                f"No {split_name}.tsv, .csv, .json or .jsonl file found in {folder}."
            )
        splits[split_name] = load_split(found[0], file_format, split_name)

    vocab = build_label_vocab(splits["train"], [splits["dev"], splits["test"]], label_names)
    return splits, vocab
