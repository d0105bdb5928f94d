"""Sequence packing: row assignment, packed batches, and a packed encoder matching padding."""

import dataclasses

import jax
import numpy as np
import pytest
from test_data_batching import CLS, PAD, SEP, synthetic_dataset
from train_jobs import load_sst2, tiny_encoder_config

from fsl_jax.data import (
    make_batch,
    make_packed_batch,
    pack_rows,
    pack_split,
    packed_eval_batches,
    packed_shape,
)
from fsl_jax.models import Classifier
from fsl_jax.models.bert import packed_position_ids, position_ids_from_mask
from fsl_jax.train.finetune import init_params

LENGTHS = [5, 9, 20, 3, 7, 12, 30, 2]


def test_pack_rows_longest_first_fit():
    lengths = np.array(LENGTHS)
    bins = pack_rows(lengths, range(len(LENGTHS)), 32)
    assert sorted(row for bin_rows in bins for row in bin_rows) == list(range(len(LENGTHS)))
    assert all(sum(lengths[bin_rows]) <= 32 for bin_rows in bins)
    # Longest first, each into the first row with enough free tokens: 30+2, 20+12, 9+7+5+3.
    assert bins == [[6, 7], [2, 5], [1, 4, 0, 3]]


def test_pack_split_best_fit_decreasing():
    lengths = np.array(LENGTHS)
    # Longest first, each into the row with the least free space that fits it: 12 joins 20 (12
    # free), 2 joins 30 (2 free) rather than the row of 9+7+5+3 (8 free).
    assert pack_split(lengths, 32) == [[6, 7], [2, 5], [1, 4, 0, 3]]


def test_pack_split_places_every_row_once():
    lengths = np.random.default_rng(0).integers(1, 80, size=2000)
    bins = pack_split(lengths, 64)
    assert sorted(row for bin_rows in bins for row in bin_rows) == list(range(2000))
    assert all(sum(min(int(lengths[row]), 64) for row in bin_rows) <= 64 for bin_rows in bins)
    # Near the lower bound of full rows (rows over 64 tokens take a row each).
    lower_bound = int(np.ceil(np.minimum(lengths, 64).sum() / 64))
    assert len(bins) <= 1.05 * lower_bound
    assert pack_split(lengths, 64) == bins
    with pytest.raises(ValueError, match="width 0"):
        pack_split(lengths, 0)


def test_packed_eval_batches_cover_split_in_one_shape():
    dataset = synthetic_dataset([5, 9, 20, 3, 7, 12, 30, 2, 40, 6, 1, 1, 1], width=64)
    batches = list(packed_eval_batches(dataset, num_rows=3, width=32, num_devices=2))
    # 3 rows round up to 4 for 2 devices; up to 4 sentences share a row, rounded to 8.
    assert {batch["input_ids"].shape for batch in batches} == {(4, 32)}
    assert {batch["example_mask"].shape for batch in batches} == {(4, 8)}
    indices = np.concatenate(
        [batch["example_index"][batch["example_mask"] > 0] for batch in batches]
    )
    assert sorted(indices.tolist()) == list(range(13))
    for batch in batches:
        empty = batch["example_mask"] == 0
        assert np.all(batch["example_index"][empty] == -1)
        assert np.all((batch["segment_ids"] > 0) == (batch["attention_mask"] > 0))
    # The 40-token row is cut to 32 with its separator last, as in make_batch.
    cut = [batch for batch in batches if 8 in batch["example_index"]][0]
    row = np.nonzero(cut["example_index"] == 8)[0][0]
    assert cut["input_ids"][row, 31] == SEP


@pytest.mark.parametrize(
    "num_sentences, num_devices, expected_batches, expected_rows",
    [
        # 3 sentences of 10 tokens fit a 32-token row, so 30 sentences need 10 rows.
        (30, 1, 1, 16),
        (30, 8, 1, 16),
        (30, 3, 1, 24),
        # 150 rows need 3 batches of at most 64 rows, 50 each.
        (450, 1, 3, 50),
        (450, 4, 3, 52),
    ],
)
def test_packed_eval_rows_fit_split(num_sentences, num_devices, expected_batches, expected_rows):
    dataset = synthetic_dataset([10] * num_sentences, width=64)
    batches = list(packed_eval_batches(dataset, num_rows=64, width=32, num_devices=num_devices))
    assert len(batches) == expected_batches
    assert {batch["input_ids"].shape for batch in batches} == {(expected_rows, 32)}
    indices = np.concatenate(
        [batch["example_index"][batch["example_mask"] > 0] for batch in batches]
    )
    assert sorted(indices.tolist()) == list(range(num_sentences))


def test_long_row_cut_keeps_separator():
    dataset = synthetic_dataset([40, 6, 3], width=64)
    assert pack_rows(dataset.lengths, [0, 1, 2], 32) == [[0], [1, 2]]
    batch = make_packed_batch(dataset, [0, 1, 2], 32, num_rows=2, num_segments=2)
    assert batch["input_ids"][0, 31] == SEP
    assert batch["segment_ids"][0].tolist() == [1] * 32


def test_packed_batch_lays_sentences_end_to_end():
    dataset = synthetic_dataset(LENGTHS, width=32)
    rows = [0, 1, 2, 3, 4]
    num_rows, num_segments = packed_shape(dataset.lengths, [rows], 32, num_devices=4)
    assert (num_rows, num_segments) == (4, 3)  # 2 rows needed, rounded up to 4 devices.
    batch = make_packed_batch(dataset, rows, 32, num_rows, num_segments)
    assert batch["input_ids"].shape == batch["segment_ids"].shape == (4, 32)
    assert batch["labels"].shape == batch["example_mask"].shape == (4, 3)

    found = []
    for packed_row, segment in zip(*np.nonzero(batch["example_mask"])):
        row = batch["example_index"][packed_row, segment]
        tokens = batch["segment_ids"][packed_row] == segment + 1
        ids = batch["input_ids"][packed_row][tokens]
        np.testing.assert_array_equal(ids, dataset.input_ids[row, : dataset.lengths[row]])
        assert ids[0] == CLS
        assert ids[-1] == SEP
        assert batch["labels"][packed_row, segment] == dataset.labels[row]
        found.append(int(row))
    assert sorted(found) == rows
    # Padding: segment 0, pad id, no attention; empty slots are masked out.
    padding = batch["segment_ids"] == 0
    assert np.all(batch["input_ids"][padding] == PAD)
    np.testing.assert_array_equal(batch["attention_mask"], (~padding).astype(np.int32))
    assert np.all(batch["example_index"][batch["example_mask"] == 0] == -1)


def test_too_small_shape_raises():
    dataset = synthetic_dataset(LENGTHS, width=32)
    with pytest.raises(ValueError, match=r"need 3 packed rows .* the batch has 2 rows"):
        make_packed_batch(dataset, range(8), 32, num_rows=2, num_segments=3)


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_positions_restart_at_each_sentence(model_type):
    config = dataclasses.replace(tiny_encoder_config(), model_type=model_type, pad_token_id=1)
    segment_ids = np.array([[1, 1, 1, 2, 2, 3, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0]])
    packed = np.asarray(packed_position_ids(segment_ids, config))
    for row, segment in [(0, 1), (0, 2), (0, 3), (1, 1)]:
        tokens = segment_ids[row] == segment
        alone = position_ids_from_mask(np.ones((1, int(tokens.sum())), np.int32), config)
        np.testing.assert_array_equal(packed[row][tokens], np.asarray(alone)[0])
    if model_type == "roberta":
        assert np.all(packed[segment_ids == 0] == config.pad_token_id)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_packed_sentences_get_their_padded_vectors(data_dir, minilm_dir, pooling):
    """A tiny encoder on 24 real SST-2 sentences: packed and padded outputs agree."""
    train = load_sst2(data_dir, minilm_dir, max_length=64)["train"]
    model = Classifier(tiny_encoder_config(dropout=0.0), num_labels=2, pooling=pooling)
    params = init_params(model, None, jax.random.PRNGKey(0))
    rows = np.arange(24)
    num_rows, num_segments = packed_shape(train.lengths, [rows], 64, 1)
    assert num_rows < 24
    packed = make_packed_batch(train, rows, 64, num_rows, num_segments)
    padded = make_batch(train, rows, 24, (64,))
    packed_out = model.apply(
        {"params": params},
        packed["input_ids"],
        packed["attention_mask"],
        packed["token_type_ids"],
        segment_ids=packed["segment_ids"],
        num_segments=num_segments,
    )
    padded_out = model.apply(
        {"params": params}, padded["input_ids"], padded["attention_mask"], padded["token_type_ids"]
    )
    slots = packed["example_mask"] > 0
    order = packed["example_index"][slots]
    for key in ("pooled", "logits"):
        np.testing.assert_allclose(
            np.asarray(packed_out[key])[slots], np.asarray(padded_out[key])[order], atol=1e-5
        )


def test_pooler_has_no_packed_form():
    model = Classifier(tiny_encoder_config(dropout=0.0), num_labels=2, pooling="pooler")
    params = init_params(model, None, jax.random.PRNGKey(0))
    ones = np.ones((1, 8), np.int32)
    with pytest.raises(ValueError, match="pooling='pooler' has no packed form"):
        model.apply({"params": params}, 5 * ones, ones, segment_ids=ones, num_segments=1)
