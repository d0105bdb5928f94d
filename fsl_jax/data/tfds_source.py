"""TensorFlow Datasets splits through the TensorFlow-free random-access `tfds.data_source`.

Needs the optional extra: `pip install "fsl_jax[tfds]"`. tfds.data_source reads
datasets prepared in array_record (or parquet) format. With tensorflow-datasets 4.9.10
and no TensorFlow, imdb_reviews, ag_news_subset, trec and amazon_us_reviews are
registered, but glue, super_glue, yelp_polarity_reviews and civil_comments are not:
those need TensorFlow installed.
"""

from __future__ import annotations

import os

from fsl_jax.data.labels import LabelVocab
from fsl_jax.data.records import DataError, Example, Split


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            'TensorFlow Datasets is not installed. Install the extra with `pip install "fsl_jax[tfds]"`.'
        ) from error
    return tfds


def _as_text(value, name: str, field: str, row: int) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataError(
                f"TFDS {name} row {row}: field {field!r} is not valid UTF-8."
            ) from error
    if isinstance(value, str):
        return value
    raise DataError(
        f"TFDS {name} row {row}: field {field!r} is {type(value).__name__}, expected text."
    )


def load_tfds_split(
    name: str,
    split: str,
    *,
    text_field: str,
    text_pair_field: str | None = None,
    label_field: str | None = "label",
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
) -> tuple[Split, LabelVocab | None]:
    """Read a TFDS split into a Split, with the label names of its ClassLabel feature.

    Labels become the ClassLabel names (for ag_news_subset: World, Sports, Business,
    Sci/Tech), and the returned LabelVocab keeps the TFDS class order, so class indices
    match the dataset's. Examples get `line` = row number + 1.

    Raises:
      ImportError: tensorflow-datasets is not installed.
      KeyError: a field is not a feature of the dataset.
      DataError: the dataset is not registered (often because it needs TensorFlow), or
        a text field does not contain text.
    """
    tfds = _import_tfds()
    try:
        source = tfds.data_source(
            name, split=split, data_dir=os.fspath(data_dir) if data_dir else None, download=download
        )
    except tfds.core.registered.DatasetNotFoundError as error:
        raise DataError(
            f"TFDS dataset {name!r} is not registered. Some builders, such as glue, are only "
            "registered when TensorFlow is installed."
        ) from error

    features = source.dataset_info.features
    fields = [field for field in (text_field, text_pair_field, label_field) if field is not None]
    for field in fields:
        if field not in features:
            raise KeyError(
                f"TFDS {name}: feature {field!r} not found; features are {sorted(features.keys())}."
            )

    label_names = None
    if label_field is not None:
        label_names = getattr(features[label_field], "names", None)

    dataset_name = f"{name}/{split}"
    examples = []
    for row in range(len(source)):
        record = source[row]
        text = _as_text(record[text_field], dataset_name, text_field, row)
        pair = (
            _as_text(record[text_pair_field], dataset_name, text_pair_field, row)
            if text_pair_field
            else None
        )
        label = None
        if label_field is not None:
            value = record[label_field]
            label = (
                label_names[int(value)] if label_names else _label_text(value, dataset_name, row)
            )
        examples.append(Example(text, pair, label, row + 1))

    vocab = LabelVocab(tuple(label_names)) if label_names else None
    return Split(dataset_name, examples, None), vocab


def _label_text(value, name: str, row: int) -> str:
    if isinstance(value, bytes):
        return _as_text(value, name, "label", row)
    return str(value.item() if hasattr(value, "item") else value)
