"""Every benchmark split loads with its documented row counts and labels, and its quirks are reported."""

import pytest

from fsl_jax.data import (
    CleaningConfig,
    audit_splits,
    clean_split,
    find_duplicates,
    load_lmbff_kshot,
    load_task,
    load_task_pool,
    load_task_unlabeled,
    remove_overlaps,
)

SEEDS = (13, 21, 42, 87, 100)

# task: (rows in train, dev, test; labels)
LMBFF_EXPECTED = {
    "sst2": ((32, 32, 872), ("0", "1")),
    "sst5": ((80, 80, 2210), ("0", "1", "2", "3", "4")),
    "trec": ((96, 96, 500), ("0", "1", "2", "3", "4", "5")),
    "cr": ((32, 32, 2000), ("0", "1")),
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("task", sorted(LMBFF_EXPECTED))
def test_lmbff_task_counts_and_labels(data_dir, task, seed):
    (train_rows, dev_rows, test_rows), labels = LMBFF_EXPECTED[task]
    splits, vocab = load_task(task, seed=seed, data_dir=data_dir)
    assert len(splits["train"]) == train_rows
    assert len(splits["dev"]) == dev_rows
    assert len(splits["test"]) == test_rows
    assert vocab.names == labels
    for name in ("train", "dev", "test"):
        assert set(splits[name].labels) == set(labels), name


def test_train_and_dev_balanced_16_per_class(data_dir):
    splits, vocab = load_task("trec", seed=13, data_dir=data_dir)
    for name in ("train", "dev"):
        counts = {label: splits[name].labels.count(label) for label in vocab.names}
        assert set(counts.values()) == {16}, (name, counts)


def test_lmbff_folder_loader_matches_registry(data_dir):
    splits, vocab = load_lmbff_kshot(data_dir / "sst-5", 16, 42)
    registry_splits, registry_vocab = load_task("sst5", seed=42, data_dir=data_dir)
    assert vocab == registry_vocab
    for name in ("train", "dev", "test"):
        assert splits[name].texts == registry_splits[name].texts


def test_glue_sst2_splits(data_dir):
    splits, vocab = load_task("sst2_glue", data_dir=data_dir)
    assert len(splits["train"]) == 67349
    assert len(splits["dev"]) == 872
    assert len(splits["test"]) == 1821
    assert vocab.names == ("0", "1")
    # test-labeled.tsv has CRLF line endings: no "\r" may reach a label or text.
    assert set(splits["test"].labels) == {"0", "1"}
    assert not any("\r" in text for text in splits["test"].texts)


def test_glue_sst2_unlabelled_test(data_dir):
    test = load_task_unlabeled("sst2_glue", "test", data_dir=data_dir)
    assert len(test) == 1821
    assert test[0].text == "uneasy mishmash of styles and genres ."
    assert test[0].label is None


def test_glue_space_before_tab_cleaned(data_dir):
    splits, _ = load_task("sst2_glue", data_dir=data_dir)
    dev = splits["dev"]
    assert dev[0].text.endswith(" ")
    cleaned, report = clean_split(dev)
    assert not cleaned[0].text.endswith(" ")
    assert report.changed_rows == 872
    assert report.changes_by_step["collapse_whitespace"] == 872
    assert report.rows_out == 872


@pytest.mark.parametrize("seed", range(5))
def test_eprstmt_seeded_splits(data_dir, seed):
    splits, vocab = load_task("eprstmt", seed=seed, data_dir=data_dir)
    assert len(splits["train"]) == 32
    assert len(splits["dev"]) == 32
    assert len(splits["test"]) == 610
    assert vocab.names == ("Negative", "Positive")
    assert set(splits["test"].labels) == {"Negative", "Positive"}


def test_eprstmt_pool_duplicates(data_dir):
    pool = load_task_pool("eprstmt", data_dir=data_dir)
    report = find_duplicates(pool)
    assert report.rows == 160
    assert report.distinct == 131
    assert report.duplicate_rows == 29


def test_eprstmt_unlabeled_leakage_removed(data_dir):
    splits, _ = load_task("eprstmt", seed=0, data_dir=data_dir)
    unlabeled = load_task_unlabeled("eprstmt", "unlabeled", data_dir=data_dir)
    assert len(unlabeled) == 19565
    assert len(load_task_unlabeled("eprstmt", "test", data_dir=data_dir)) == 753

    filtered, reports = remove_overlaps(unlabeled, [splits["test"]])
    assert reports[0].overlapping_texts == 45
    assert len(filtered) == len(unlabeled) - reports[0].overlapping_rows
    assert remove_overlaps(filtered, [splits["test"]])[1][0].overlapping_rows == 0


@pytest.mark.parametrize("seed, empty_line", [(13, 3), (42, 4)])
def test_cr_whitespace_sentence_kept_or_dropped(data_dir, seed, empty_line):
    splits, _ = load_task("cr", seed=seed, data_dir=data_dir)
    train = splits["train"]

    kept, report = clean_split(train)
    assert len(kept) == 32
    assert report.empty_rows == [empty_line]
    assert report.dropped_rows == []

    dropped, report = clean_split(train, CleaningConfig(drop_empty=True))
    assert len(dropped) == 31
    assert report.empty_rows == [empty_line]
    assert report.dropped_rows == [empty_line]
    assert report.rows_out == 31


def test_trec_overlaps_with_test_reported(data_dir):
    total = 0
    for seed in SEEDS:
        splits, _ = load_task("trec", seed=seed, data_dir=data_dir)
        audit = audit_splits(splits)
        assert set(audit.overlaps) == {"train", "dev"}
        total += sum(report.overlapping_rows for report in audit.overlaps.values())
    assert total > 0


def test_trec_overlap_rows_are_real_copies(data_dir):
    splits, _ = load_task("trec", seed=100, data_dir=data_dir)
    report = audit_splits(splits).overlaps["dev"]
    test_texts = set(splits["test"].texts)
    for overlap in report.overlaps:
        assert overlap.text in test_texts
