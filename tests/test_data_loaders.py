"""Loading TSV, CSV and JSON lines files, label vocabularies, and bad input."""

import json

import numpy as np
import pytest

from fsl_jax.data import (
    DataError,
    FileFormat,
    LabelVocab,
    build_label_vocab,
    infer_format,
    load_lmbff_kshot,
    load_split,
    load_unlabeled,
)


def write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def make_kshot_folder(root, train, dev, test, suffix=".tsv"):
    folder = root / "task" / "k-shot" / "2-7"
    for name, content in (("train", train), ("dev", dev), ("test", test)):
        write(folder / f"{name}{suffix}", content)
    return root / "task"


def test_tsv_with_header(tmp_path):
    path = write(tmp_path / "train.tsv", 'sentence\tlabel\na "quoted" film . \t1\nbad\t0\n')
    split = load_split(path)
    assert split.texts == ['a "quoted" film . ', "bad"]
    assert split.labels == ["1", "0"]
    assert [example.line for example in split] == [2, 3]
    assert split.name == "train"
    assert split.report.rows == 2


def test_tsv_crlf_line_endings(tmp_path):
    path = write(tmp_path / "test.tsv", "sentence\tlabel\r\ngood .\t1\r\nbad .\t0\r\n")
    split = load_split(path)
    assert split.texts == ["good .", "bad ."]
    assert split.labels == ["1", "0"]


def test_csv_without_header_quoted(tmp_path):
    path = write(tmp_path / "train.csv", '3,"a, b and c"\n1,plain text\n0,"line\nbreak"\n4,last\n')
    split = load_split(path)
    assert split.texts == ["a, b and c", "plain text", "line\nbreak", "last"]
    assert split.labels == ["3", "1", "0", "4"]
    assert [example.line for example in split] == [1, 2, 3, 5]


def test_csv_with_header_and_pair(tmp_path):
    path = write(
        tmp_path / "nli.csv", "premise,hypothesis,gold\nA man sleeps.,A person rests.,entailment\n"
    )
    file_format = FileFormat(
        "csv", text_field="premise", text_pair_field="hypothesis", label_field="gold"
    )
    split = load_split(path, file_format)
    assert split[0].text == "A man sleeps."
    assert split[0].text_pair == "A person rests."
    assert split[0].label == "entailment"
    assert split.text_pairs == ["A person rests."]


def test_jsonl_string_and_integer_labels(tmp_path):
    rows = [
        {"id": 0, "sentence": "很好", "label": "Positive"},
        {"id": 1, "sentence": "很差", "label": "Negative"},
    ]
    path = write(
        tmp_path / "train_0.json",
        "\n".join(json.dumps(row, ensure_ascii=False) for row in rows) + "\n",
    )
    split = load_split(path)
    assert split.texts == ["很好", "很差"]
    assert split.labels == ["Positive", "Negative"]

    path = write(tmp_path / "ints.jsonl", '{"text": "x", "y": 2}\n\n{"text": "z", "y": 0}\n')
    split = load_split(path, FileFormat("jsonl", text_field="text", label_field="y"))
    assert split.labels == ["2", "0"]
    assert split.report.blank_lines_skipped == [2]


def test_utf8_bom_is_dropped(tmp_path):
    path = write(tmp_path / "train.tsv", b"\xef\xbb\xbfsentence\tlabel\nok\t1\n")
    assert load_split(path).texts == ["ok"]


def test_unlabeled_pool_ignores_labels(tmp_path):
    path = write(
        tmp_path / "unlabeled.json", '{"sentence": "a", "id": 0}\n{"sentence": "b", "id": 1}\n'
    )
    pool = load_unlabeled(path)
    assert pool.texts == ["a", "b"]
    assert pool.labels == [None, None]
    assert not pool.is_labeled


def test_infer_format_unknown_suffix(tmp_path):
    with pytest.raises(DataError, match=r"\.txt"):
        infer_format(tmp_path / "data.txt")


def test_field_type_checked_against_header():
    with pytest.raises(ValueError, match="column index"):
        FileFormat("csv", text_field="sentence", header=False)
    with pytest.raises(ValueError, match="key names"):
        FileFormat("jsonl", text_field=0)


# Bad input


def test_missing_file_names_path(tmp_path):
    path = tmp_path / "nowhere" / "train.tsv"
    with pytest.raises(FileNotFoundError, match="nowhere/train.tsv"):
        load_split(path)


def test_missing_kshot_folder_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"k-shot/16-13"):
        load_lmbff_kshot(tmp_path / "task", 16, 13)


def test_folder_instead_of_file(tmp_path):
    (tmp_path / "dev.tsv").mkdir()
    with pytest.raises(DataError, match="is a folder"):
        load_split(tmp_path / "dev.tsv")


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_file(tmp_path, content):
    path = write(tmp_path / "train.tsv", content)
    with pytest.raises(DataError, match="train.tsv is empty"):
        load_split(path)


def test_header_only_file(tmp_path):
    path = write(tmp_path / "train.tsv", "sentence\tlabel\n")
    with pytest.raises(DataError, match="no data rows"):
        load_split(path)


def test_missing_column(tmp_path):
    path = write(tmp_path / "train.tsv", "text\tlabel\nok\t1\n")
    with pytest.raises(
        DataError, match=r"column 'sentence' \(text_field\) not found.*\['text', 'label'\]"
    ):
        load_split(path)


def test_missing_json_key(tmp_path):
    path = write(
        tmp_path / "train.json", '{"sentence": "a", "label": "Positive"}\n{"sentence": "b"}\n'
    )
    with pytest.raises(DataError, match=r"train.json line 2: key 'label'"):
        load_split(path)


def test_invalid_json_line(tmp_path):
    path = write(tmp_path / "train.json", '{"sentence": "a", "label": "Positive"}\n{"sentence": \n')
    with pytest.raises(DataError, match=r"line 2: invalid JSON"):
        load_split(path)


def test_row_with_wrong_column_count(tmp_path):
    path = write(tmp_path / "train.tsv", "sentence\tlabel\nok\t1\nan extra\ttab\t0\n")
    with pytest.raises(DataError, match=r"train.tsv line 3: has 3 columns, expected 2"):
        load_split(path)

    path = write(tmp_path / "train.csv", "1,fine\n0\n")
    with pytest.raises(DataError, match=r"train.csv line 2: has 1 columns"):
        load_split(path)


def test_empty_label_value(tmp_path):
    path = write(tmp_path / "train.tsv", "sentence\tlabel\nok\t \n")
    with pytest.raises(DataError, match=r"line 2: invalid label"):
        load_split(path)


def test_invalid_utf8_strict_names_line(tmp_path):
    path = write(tmp_path / "train.tsv", b"sentence\tlabel\nfine\t1\nbad \xff byte\t0\n")
    with pytest.raises(DataError, match=r"train.tsv line 3: invalid UTF-8"):
        load_split(path)


def test_invalid_utf8_replaced_and_listed(tmp_path):
    path = write(tmp_path / "train.tsv", b"sentence\tlabel\nfine\t1\nbad \xff byte\t0\n")
    file_format = FileFormat("tsv", encoding_errors="replace")
    split = load_split(path, file_format)
    assert split.texts[1] == "bad \ufffd byte"
    assert split.report.invalid_utf8_lines == [3]


def test_very_long_line_loads(tmp_path):
    long_text = "word " * 60_000
    path = write(tmp_path / "train.csv", f'1,"{long_text}"\n0,short\n')
    split = load_split(path)
    assert split[0].text == long_text
    assert split[1].text == "short"


def test_json_null_label_rejected(tmp_path):
    path = write(tmp_path / "train.json", '{"sentence": "a", "label": null}\n')
    with pytest.raises(DataError, match=r"line 1: invalid label None"):
        load_split(path)


def test_json_line_separator_inside_string(tmp_path):
    row = json.dumps({"sentence": "before\u2028after", "label": "1"}, ensure_ascii=False)
    path = write(tmp_path / "train.json", row + "\n")
    split = load_split(path)
    assert split.texts == ["before\u2028after"]


# Label vocabulary


def test_label_vocab_numeric_order():
    vocab = LabelVocab.from_labels(["10", "2", "1", "2"])
    assert vocab.names == ("1", "2", "10")


def test_label_vocab_string_order():
    vocab = LabelVocab.from_labels(["Positive", "Negative", "Positive"])
    assert vocab.names == ("Negative", "Positive")
    assert vocab.index("Positive") == 1
    assert vocab.decode([1, 0]) == ["Positive", "Negative"]


def test_label_vocab_encode_unknown_label(tmp_path):
    path = write(
        tmp_path / "dev.json",
        '{"sentence": "a", "label": "Positive"}\n{"sentence": "b", "label": "Neutral"}\n',
    )
    split = load_split(path)
    vocab = LabelVocab(("Negative", "Positive"))
    with pytest.raises(DataError, match=r"dev.json line 2: unknown label 'Neutral'"):
        vocab.encode(split)


def test_label_vocab_encode_int32(tmp_path):
    path = write(tmp_path / "train.csv", "1,a\n0,b\n1,c\n")
    split = load_split(path)
    labels = LabelVocab.from_labels(split.labels).encode(split)
    assert labels.dtype == np.int32
    assert labels.tolist() == [1, 0, 1]


def test_dev_label_unseen_in_train(tmp_path):
    task_dir = make_kshot_folder(
        tmp_path,
        "sentence\tlabel\na\t0\nb\t1\n",
        "sentence\tlabel\nc\t0\nd\t2\n",
        "sentence\tlabel\ne\t1\n",
    )
    with pytest.raises(
        DataError, match=r"dev.tsv line 3: label '2' does not occur in the train split"
    ):
        load_lmbff_kshot(task_dir, 2, 7)


def test_train_label_outside_task_names(tmp_path):
    path = write(tmp_path / "train.csv", "0,a\n7,b\n")
    with pytest.raises(DataError, match=r"train.csv line 2: unknown label '7'"):
        build_label_vocab(load_split(path), label_names=("0", "1"))


def test_lmbff_folder_loads_three_splits(tmp_path):
    task_dir = make_kshot_folder(
        tmp_path, "1,a\n0,b\n", "0,c\n1,d\n", "1,e\n0,f\n1,g\n", suffix=".csv"
    )
    splits, vocab = load_lmbff_kshot(task_dir, 2, 7)
    assert sorted(splits) == ["dev", "test", "train"]
    assert len(splits["test"]) == 3
    assert vocab.names == ("0", "1")
