"""TFDS loading through tfds.data_source, offline with tfds.testing.mock_data."""

import pytest

from fsl_jax.data import DataError, LabelVocab, clean_split
from fsl_jax.data.tfds_source import load_tfds_split

tfds = pytest.importorskip("tensorflow_datasets")


def test_imdb_reviews_mock():
    with tfds.testing.mock_data(num_examples=6):
        split, vocab = load_tfds_split("imdb_reviews", "train", text_field="text")
    assert len(split) == 6
    assert split.name == "imdb_reviews/train"
    assert all(isinstance(text, str) for text in split.texts)
    assert vocab == LabelVocab(("neg", "pos"))
    assert set(split.labels) <= {"neg", "pos"}
    assert [example.line for example in split] == list(range(1, 7))
    vocab.encode(split)


def test_ag_news_pair_fields_and_class_order():
    with tfds.testing.mock_data(num_examples=4):
        split, vocab = load_tfds_split(
            "ag_news_subset", "test", text_field="title", text_pair_field="description"
        )
    assert vocab.names == ("World", "Sports", "Business", "Sci/Tech")
    assert all(example.text_pair is not None for example in split)
    _, report = clean_split(split)
    assert report.rows_out == 4


def test_unlabeled_read():
    with tfds.testing.mock_data(num_examples=3):
        split, vocab = load_tfds_split(
            "imdb_reviews", "unsupervised", text_field="text", label_field=None
        )
    assert vocab is None
    assert split.labels == [None, None, None]


def test_unknown_feature():
    with (
        tfds.testing.mock_data(num_examples=2),
        pytest.raises(KeyError, match=r"feature 'sentence' not found"),
    ):
        load_tfds_split("imdb_reviews", "train", text_field="sentence")


def test_unregistered_dataset():
    with (
        tfds.testing.mock_data(num_examples=2),
        pytest.raises(DataError, match="not registered"),
    ):
        load_tfds_split("no_such_dataset_xyz", "train", text_field="text")


def test_glue_needs_tensorflow():
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorFlow is installed, so glue is registered.")
    with pytest.raises(DataError, match="'glue/sst2' is not registered.*TensorFlow"):
        load_tfds_split("glue/sst2", "validation", text_field="sentence")
