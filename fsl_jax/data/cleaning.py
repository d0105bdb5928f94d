"""Text cleaning with a report of every row changed or dropped."""

from __future__ import annotations

import dataclasses
import html
import unicodedata
from collections.abc import Sequence

from absl import logging

from fsl_jax.data.records import Example, Split
from fsl_jax.data.reports import Report

# Rows whose before/after text is kept in the report, so a large split stays readable.
MAX_CHANGE_SAMPLES = 10


@dataclasses.dataclass(frozen=True)
class CleaningConfig:
    """Cleaning steps, applied in field order.

    Attributes:
      unescape_html: replace HTML entities (`&amp;`, `&#39;`) by their characters.
      unicode_form: "NFKC", "NFC", "NFKD", "NFD" or None. NFKC maps full-width
        characters to their ASCII forms, so Chinese punctuation such as `，` becomes `,`.
      remove_control_chars: delete characters of Unicode category Cc (control) and Cf
        (format, such as U+200B zero-width space and U+FEFF) that are not whitespace.
      collapse_whitespace: replace each run of whitespace by one space and strip the ends.
      drop_empty: drop rows whose texts are empty after cleaning; otherwise keep them.
        Either way they are listed in the report.
    """

    unescape_html: bool = False
    unicode_form: str | None = "NFKC"
    remove_control_chars: bool = True
    collapse_whitespace: bool = True
    drop_empty: bool = False

    def __post_init__(self) -> None:
        if self.unicode_form not in (None, "NFC", "NFKC", "NFD", "NFKD"):
            raise ValueError(
                f"Invalid unicode_form {self.unicode_form!r}; expected NFC, NFKC, NFD, NFKD or None."
            )


STEP_NAMES = ("unescape_html", "unicode_form", "remove_control_chars", "collapse_whitespace")


def _remove_control_chars(text: str) -> str:
    return "".join(
        char for char in text if char.isspace() or unicodedata.category(char) not in ("Cc", "Cf")
    )


def _steps(config: CleaningConfig) -> list[tuple[str, object]]:
    steps = []
    if config.unescape_html:
        steps.append(("unescape_html", html.unescape))
    if config.unicode_form:
        steps.append(
            ("unicode_form", lambda text: unicodedata.normalize(config.unicode_form, text))
        )
    if config.remove_control_chars:
        steps.append(("remove_control_chars", _remove_control_chars))
    if config.collapse_whitespace:
        steps.append(("collapse_whitespace", lambda text: " ".join(text.split())))
    return steps


def clean_text(text: str, config: CleaningConfig = CleaningConfig()) -> str:
    """Apply the cleaning steps of `config` to one text."""
    for _, step in _steps(config):
        text = step(text)
    return text


@dataclasses.dataclass
class CleaningReport(Report):
    """Rows changed, empty and dropped by cleaning one split.

    Rows are named by line number when the split came from a file, else by 0-based index.
    """

    split: str
    path: str | None
    rows_in: int
    rows_out: int = 0
    changed_rows: int = 0
    changes_by_step: dict[str, int] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(STEP_NAMES, 0)
    )
    empty_rows: list[int] = dataclasses.field(default_factory=list)
    dropped_rows: list[int] = dataclasses.field(default_factory=list)
    change_samples: list[dict] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.path or self.split}: {self.rows_in} rows in, {self.rows_out} out, "
            f"{self.changed_rows} changed {self.changes_by_step}, {len(self.empty_rows)} empty "
            f"{self.empty_rows[:20]}, {len(self.dropped_rows)} dropped {self.dropped_rows[:20]}"
        )


def _clean_field(text: str | None, steps, counts: dict[str, int]) -> str | None:
    if text is None:
        return None
    for name, step in steps:
        cleaned = step(text)
        if cleaned != text:
            counts[name] += 1
        text = cleaned
    return text


def clean_split(
    split: Split, config: CleaningConfig = CleaningConfig()
) -> tuple[Split, CleaningReport]:
    """Clean the text (and text pair) of every row, and report what changed.

    A row is empty when all its texts are empty after cleaning, such as a
    whitespace-only sentence. Empty rows are kept or dropped per `config.drop_empty`
    and listed in the report either way. The report is logged when anything changed.
    """
    steps = _steps(config)
    report = CleaningReport(split.name, str(split.path) if split.path else None, len(split))
    kept_examples = []

    for row, example in enumerate(split.examples):
        row_id = example.line or row
        step_counts = dict.fromkeys(STEP_NAMES, 0)
        text = _clean_field(example.text, steps, step_counts)
        text_pair = _clean_field(example.text_pair, steps, step_counts)

        if text != example.text or text_pair != example.text_pair:
            report.changed_rows += 1
            for name, count in step_counts.items():
                report.changes_by_step[name] += bool(count)
            if len(report.change_samples) < MAX_CHANGE_SAMPLES:
                report.change_samples.append({"row": row_id, "before": example.text, "after": text})

        if not text and not text_pair:
            report.empty_rows.append(row_id)
            if config.drop_empty:
                report.dropped_rows.append(row_id)
                continue
        kept_examples.append(dataclasses.replace(example, text=text, text_pair=text_pair))

    report.rows_out = len(kept_examples)
    if report.changed_rows or report.empty_rows:
        logging.info("Cleaning %s", report.summary())
    return split.replace_examples(kept_examples), report


def clean_texts(
    texts: Sequence[str], config: CleaningConfig = CleaningConfig(), name: str = "texts"
) -> tuple[list[str], CleaningReport]:
    """Clean a list of texts; like clean_split, with rows named by 0-based index."""
    split = Split(name, [Example(text) for text in texts])
    cleaned, report = clean_split(split, config)
    return cleaned.texts, report
