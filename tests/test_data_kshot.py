"""K-per-class sampling from pools and writing the LM-BFF layout."""

import json

import pytest

from fsl_jax.data import (
    FEWCLUE_JSONL,
    LMBFF_CSV,
    LMBFF_TSV,
    DataError,
    Example,
    FileFormat,
    LabelVocab,
    Split,
    clean_split,
    format_split,
    load_lmbff_kshot,
    load_split,
    load_task,
    load_task_pool,
    sample_kshot,
    write_lmbff_kshot,
    write_split,
)


def make_pool(counts):
    """A pool with `counts[label]` distinct sentences per label, one class after another."""
    texts_and_labels = [
        (f"sentence {label} {i}", label) for label, count in counts.items() for i in range(count)
    ]
    examples = [
        Example(text, None, label, line)
        for line, (text, label) in enumerate(texts_and_labels, start=1)
    ]
    return Split("pool", examples)


def counts_of(split):
    return {label: split.labels.count(label) for label in sorted(set(split.labels))}


def test_k_per_class_train_and_dev():
    sample = sample_kshot(make_pool({"0": 40, "1": 50}), k=8, seed=1)
    assert counts_of(sample.train) == {"0": 8, "1": 8}
    assert counts_of(sample.dev) == {"0": 8, "1": 8}
    assert not set(sample.train.texts) & set(sample.dev.texts)
    assert sample.report.train_counts == {"0": 8, "1": 8}
    assert sample.report.pool_counts == {"0": 40, "1": 50}


def test_dev_k_zero_gives_empty_dev():
    sample = sample_kshot(make_pool({"a": 5, "b": 5}), k=4, seed=0, dev_k=0)
    assert len(sample.train) == 8
    assert len(sample.dev) == 0


def test_same_seed_same_sample_other_seed_differs():
    pool = make_pool({"0": 100, "1": 100})
    first = sample_kshot(pool, k=16, seed=13)
    again = sample_kshot(pool, k=16, seed=13)
    other = sample_kshot(pool, k=16, seed=21)
    assert first.train.texts == again.train.texts
    assert first.dev.texts == again.dev.texts
    assert first.train.texts != other.train.texts


def test_class_short_of_k_lists_all_counts():
    pool = make_pool({"0": 40, "1": 20, "2": 3})
    with pytest.raises(DataError, match=r"\['1', '2'\].*\{'0': 40, '1': 20, '2': 3\}.*allow_fewer"):
        sample_kshot(pool, k=16, seed=0)


def test_allow_fewer_takes_all_and_reports():
    pool = make_pool({"0": 40, "1": 20, "2": 3})
    sample = sample_kshot(pool, k=16, seed=0, allow_fewer=True)
    assert sample.report.short_classes == ["1", "2"]
    assert sample.report.train_counts == {"0": 16, "1": 16, "2": 3}
    assert sample.report.dev_counts == {"0": 16, "1": 4, "2": 0}
    assert counts_of(sample.train) == {"0": 16, "1": 16, "2": 3}
    assert "all taken" in sample.report.summary()


def test_one_and_51_examples_k8():
    pool = make_pool({"0": 1, "1": 51})
    with pytest.raises(DataError, match=r"\['0'\].*\{'0': 1, '1': 51\}.*allow_fewer"):
        sample_kshot(pool, k=8, seed=0)
    sample = sample_kshot(pool, k=8, seed=0, allow_fewer=True)
    assert counts_of(sample.train) == {"0": 1, "1": 8}
    assert len(sample.train.texts) == 9
    assert sample.report.short_classes == ["0"]


def test_duplicates_skipped_before_sampling():
    examples = [Example("same text", None, "0", 1), Example("same  text", None, "0", 2)]
    examples += [Example(f"x{i}", None, "0", 3 + i) for i in range(3)]
    pool = Split("pool", examples)
    sample = sample_kshot(pool, k=2, seed=0, dev_k=2)
    assert sample.report.duplicates_removed == 1
    all_texts = sample.train.texts + sample.dev.texts
    assert len(all_texts) == 4
    assert all_texts.count("same text") + all_texts.count("same  text") == 1


def test_unlabelled_pool_rejected():
    pool = Split("pool", [Example("a", None, None, 4)])
    with pytest.raises(DataError, match="line 4: row has no label"):
        sample_kshot(pool, k=1, seed=0, label_vocab=LabelVocab(("0",)))


def test_invalid_k():
    with pytest.raises(ValueError, match="k must be at least 1"):
        sample_kshot(make_pool({"0": 4}), k=0, seed=0)


@pytest.mark.parametrize(
    "file_format", [LMBFF_TSV, LMBFF_CSV, FEWCLUE_JSONL], ids=["tsv", "csv", "jsonl"]
)
def test_write_and_reload_roundtrip(tmp_path, file_format):
    split = Split(
        "train", [Example('say "hi", ok', None, "1", 1), Example("中文，好", None, "0", 2)]
    )
    path = write_split(split, tmp_path / f"train{file_format.suffix}", file_format)
    loaded = load_split(path, file_format)
    assert loaded.texts == split.texts
    assert loaded.labels == split.labels


def test_write_pair_format(tmp_path):
    file_format = FileFormat(
        "jsonl", text_field="premise", text_pair_field="hypothesis", label_field="label"
    )
    split = Split("dev", [Example("p", "h", "entailment", 1)])
    path = write_split(split, tmp_path / "dev.json", file_format)
    assert json.loads(path.read_text(encoding="utf-8")) == {
        "premise": "p",
        "hypothesis": "h",
        "label": "entailment",
    }


def test_tsv_writer_rejects_tabs():
    split = Split("train", [Example("a\tb", None, "1", 7)])
    with pytest.raises(DataError, match="line 7: a text contains a tab"):
        format_split(split, LMBFF_TSV)


def test_writer_rejects_missing_label():
    split = Split("train", [Example("a", None, None, 2)])
    with pytest.raises(DataError, match="line 2: row has no label"):
        format_split(split, LMBFF_CSV)


def test_glue_pool_written_byte_identical(data_dir, tmp_path):
    pool, _ = clean_split(load_task_pool("sst2_glue", data_dir=data_dir))
    splits, _ = load_task("sst2_glue", data_dir=data_dir)
    test, _ = clean_split(splits["dev"])

    folders = []
    for run in ("first", "second"):
        sample = sample_kshot(pool, k=16, seed=42)
        folders.append(write_lmbff_kshot(tmp_path / run / "SST-2", sample, test))
    for name in ("train.tsv", "dev.tsv", "test.tsv", "sampling_report.json"):
        assert (folders[0] / name).read_bytes() == (folders[1] / name).read_bytes(), name
    assert folders[0] == tmp_path / "first" / "SST-2" / "k-shot" / "16-42"

    loaded, vocab = load_lmbff_kshot(tmp_path / "first" / "SST-2", 16, 42)
    assert len(loaded["train"]) == 32
    assert len(loaded["dev"]) == 32
    assert len(loaded["test"]) == 872
    assert counts_of(loaded["train"]) == {"0": 16, "1": 16}
    assert not set(loaded["train"].texts) & set(loaded["dev"].texts)
    assert vocab.names == ("0", "1")
    assert (folders[0] / "train.tsv").read_text(encoding="utf-8").startswith("sentence\tlabel\n")


def test_eprstmt_few_all_pool(data_dir, tmp_path):
    pool = load_task_pool("eprstmt", data_dir=data_dir)
    sample = sample_kshot(pool, k=16, seed=0, label_vocab=LabelVocab(("Negative", "Positive")))
    assert sample.report.duplicates_removed == 29
    assert sum(sample.report.pool_counts.values()) == 131
    assert counts_of(sample.train) == {"Negative": 16, "Positive": 16}

    with pytest.raises(DataError, match="Rows per class"):
        sample_kshot(pool, k=40, seed=0)

    folder = write_lmbff_kshot(tmp_path / "eprstmt", sample, file_format=FEWCLUE_JSONL)
    reloaded = load_split(folder / "train.json")
    assert reloaded.texts == sample.train.texts
