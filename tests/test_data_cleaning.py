"""Text cleaning, its report, and duplicate and overlap checks."""

import json

import pytest

from fsl_jax.data import (
    CleaningConfig,
    Example,
    Split,
    audit_splits,
    clean_split,
    clean_text,
    clean_texts,
    find_duplicates,
    find_overlaps,
    remove_overlaps,
)


def make_split(name, texts, labels=None):
    labels = labels or [None] * len(texts)
    return Split(
        name,
        [
            Example(text, None, label, line)
            for line, (text, label) in enumerate(zip(texts, labels), start=1)
        ],
    )


def test_whitespace_collapsed_and_stripped():
    assert clean_text("  a \t b\n\nc  ") == "a b c"


def test_nfkc_full_width():
    assert clean_text("ＡＢＣ１２３") == "ABC123"
    assert clean_text("ﬁlm") == "film"


def test_control_characters_removed():
    assert clean_text("a\x00b\x07c\u200bd\ufeff") == "abcd"
    # Tabs and newlines are whitespace, so they collapse to a space rather than vanish.
    assert clean_text("a\tb") == "a b"


def test_html_unescape_is_optional():
    text = "rock &amp; roll &#39;s"
    assert clean_text(text) == text
    assert clean_text(text, CleaningConfig(unescape_html=True)) == "rock & roll 's"


def test_chinese_text_only_normalised():
    text = "物流很快，早上下单，下午就到了。包装也很高档！"
    expected = "物流很快,早上下单,下午就到了。包装也很高档!"
    assert clean_text(text) == expected
    assert clean_text(text, CleaningConfig(unicode_form=None)) == text


def test_all_steps_off_changes_nothing():
    config = CleaningConfig(
        unicode_form=None, remove_control_chars=False, collapse_whitespace=False
    )
    text = " ＡＢ \x00 "
    assert clean_text(text, config) == text


def test_invalid_unicode_form():
    with pytest.raises(ValueError, match="NFKC"):
        CleaningConfig(unicode_form="nfkc2")


def test_report_counts_each_step():
    texts = ["clean", "two  spaces", "ＡＢ", "x\x00y ", "&amp;"]
    cleaned, report = clean_texts(texts, CleaningConfig(unescape_html=True))
    assert cleaned == ["clean", "two spaces", "AB", "xy", "&"]
    assert report.rows_in == 5
    assert report.rows_out == 5
    assert report.changed_rows == 4
    assert report.changes_by_step == {
        "unescape_html": 1,
        "unicode_form": 1,
        "remove_control_chars": 1,
        "collapse_whitespace": 2,
    }
    assert report.change_samples[0] == {"row": 1, "before": "two  spaces", "after": "two spaces"}


def test_empty_rows_kept_and_reported():
    split = make_split("train", ["good", "   ", "\u3000", "bad"], ["1", "0", "1", "0"])
    cleaned, report = clean_split(split)
    assert len(cleaned) == 4
    assert cleaned[1].text == ""
    assert cleaned[1].label == "0"
    assert report.empty_rows == [2, 3]
    assert report.dropped_rows == []


def test_empty_rows_dropped_and_reported():
    split = make_split("train", ["good", "   ", "bad"], ["1", "0", "0"])
    cleaned, report = clean_split(split, CleaningConfig(drop_empty=True))
    assert cleaned.texts == ["good", "bad"]
    assert cleaned.labels == ["1", "0"]
    assert report.dropped_rows == [2]
    assert report.rows_out == 2


def test_pair_with_one_empty_side_kept():
    split = Split("dev", [Example("  ", "a hypothesis", "1", 1)])
    cleaned, report = clean_split(split, CleaningConfig(drop_empty=True))
    assert len(cleaned) == 1
    assert cleaned[0].text == ""
    assert cleaned[0].text_pair == "a hypothesis"
    assert report.empty_rows == []


def test_report_serialises_to_json():
    _, report = clean_texts(["a  b", " "])
    data = json.loads(report.to_json())
    assert data["changed_rows"] == 2
    assert data["empty_rows"] == [1]
    assert "2 rows in" in report.summary()


def test_duplicates_after_normalisation():
    split = make_split(
        "train", ["a film .", "a  film . ", "other", "ａ film ."], ["1", "0", "1", "1"]
    )
    report = find_duplicates(split)
    assert report.rows == 4
    assert report.distinct == 2
    assert report.duplicate_rows == 2
    assert report.conflicting_groups == 1
    assert report.groups[0].rows == [1, 2, 4]
    assert report.groups[0].labels == ["1", "0", "1"]


def test_case_differences_are_not_duplicates():
    report = find_duplicates(make_split("train", ["Good", "good"]))
    assert report.duplicate_rows == 0


def test_overlaps_with_reference():
    train = make_split("train", ["seen in test", "unique", "seen in test "])
    test = make_split("test", ["x", "seen  in test"])
    report = find_overlaps(train, test)
    assert report.overlapping_rows == 2
    assert report.overlapping_texts == 1
    assert report.overlaps[0].rows == [1, 3]
    assert report.overlaps[0].reference_rows == [2]
    assert json.loads(report.to_json())["overlapping_rows"] == 2


def test_remove_overlaps_from_pool():
    pool = make_split("unlabeled", ["a", "b", "c", "d"])
    dev = make_split("dev", ["b"])
    test = make_split("test", ["d", "z"])
    kept, reports = remove_overlaps(pool, [dev, test])
    assert kept.texts == ["a", "c"]
    assert [report.overlapping_rows for report in reports] == [1, 1]


def test_audit_checks_against_test():
    splits = {
        "train": make_split("train", ["a", "a", "t"]),
        "dev": make_split("dev", ["b"]),
        "test": make_split("test", ["t", "u"]),
    }
    audit = audit_splits(splits)
    assert audit.duplicates["train"].duplicate_rows == 1
    assert audit.overlaps["train"].overlapping_rows == 1
    assert audit.overlaps["dev"].overlapping_rows == 0
    assert "test" not in audit.overlaps
    assert json.loads(audit.to_json())["overlaps"]["train"]["overlapping_texts"] == 1
