"""Static-shape batches: buckets, padding masks, device split, epoch order, compile counts."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fsl_jax.data import (
    EncodedDataset,
    Tokenizer,
    batch_iterator,
    bucket_length,
    bucket_report,
    clean_split,
    encode_split,
    epoch_order,
    load_task,
    num_batches,
    resolve_batch_size,
)

SEP, PAD, CLS = 102, 0, 101
BATCH_SPEC = {
    "input_ids": np.int32,
    "attention_mask": np.int32,
    "token_type_ids": np.int32,
    "labels": np.int32,
    "example_mask": np.float32,
    "example_index": np.int32,
}


def synthetic_dataset(lengths, width=64, num_classes=2, labeled=True):
    """Rows of [CLS] 1000+row ... [SEP] with the given token lengths."""
    lengths = np.asarray(lengths, dtype=np.int32)
    input_ids = np.full((len(lengths), width), PAD, dtype=np.int32)
    attention_mask = np.zeros((len(lengths), width), dtype=np.int32)
    for row, length in enumerate(lengths):
        input_ids[row, :length] = 1000 + row
        input_ids[row, 0] = CLS
        input_ids[row, length - 1] = SEP
        attention_mask[row, :length] = 1
    labels = (np.arange(len(lengths)) % num_classes).astype(np.int32) if labeled else None
    return EncodedDataset(
        input_ids=input_ids,
        attention_mask=attention_mask,
        token_type_ids=np.zeros_like(input_ids),
        lengths=lengths,
        labels=labels,
        sep_token_id=SEP,
        pad_token_id=PAD,
        name="synthetic",
    )


def test_batch_keys_dtypes_shapes():
    dataset = synthetic_dataset([5, 9, 20, 3, 7])
    batches = list(batch_iterator(dataset, 4, (8, 16, 32), shuffle=False))
    assert len(batches) == 2
    for batch in batches:
        assert set(batch) == set(BATCH_SPEC)
        for key, dtype in BATCH_SPEC.items():
            assert batch[key].dtype == dtype, key
            assert isinstance(batch[key], np.ndarray), key
        width = batch["input_ids"].shape[1]
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            assert batch[key].shape == (4, width), key
        for key in ("labels", "example_mask", "example_index"):
            assert batch[key].shape == (4,), key


def test_smallest_bucket_that_fits():
    dataset = synthetic_dataset([5, 9, 20, 3, 7, 8])
    widths = [
        batch["input_ids"].shape[1]
        for batch in batch_iterator(dataset, 2, (8, 16, 32), shuffle=False)
    ]
    # Rows (5, 9) -> 16, (20, 3) -> 32, (7, 8) -> 8.
    assert widths == [16, 32, 8]
    assert bucket_length(8, (8, 16)) == 8
    assert bucket_length(9, (8, 16)) == 16
    assert bucket_length(99, (8, 16)) == 16


def test_rows_keep_their_tokens():
    dataset = synthetic_dataset([5, 9, 20])
    batch = next(batch_iterator(dataset, 4, (32,), shuffle=False))
    for row in range(3):
        length = dataset.lengths[row]
        np.testing.assert_array_equal(
            batch["input_ids"][row, :length], dataset.input_ids[row, :length]
        )
        assert batch["attention_mask"][row].sum() == length


def test_last_partial_batch_padded_and_masked():
    dataset = synthetic_dataset([4] * 10)
    batches = list(batch_iterator(dataset, 4, (8,), shuffle=False))
    assert len(batches) == 3
    last = batches[-1]
    assert last["example_mask"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert last["example_index"].tolist() == [8, 9, -1, -1]
    assert last["labels"][2:].tolist() == [0, 0]
    assert last["attention_mask"][2:].sum() == 0
    assert (last["input_ids"][2:] == PAD).all()


@pytest.mark.parametrize("shuffle", [False, True])
def test_every_example_once_per_epoch(shuffle):
    dataset = synthetic_dataset(np.arange(3, 40))
    seen = []
    for batch in batch_iterator(dataset, 8, (16, 32, 64), shuffle=shuffle, seed=3, epoch=1):
        seen += batch["example_index"][batch["example_mask"] == 1].tolist()
        assert (batch["example_index"][batch["example_mask"] == 0] == -1).all()
    assert sorted(seen) == list(range(len(dataset)))


def test_drop_remainder():
    dataset = synthetic_dataset([4] * 10)
    batches = list(batch_iterator(dataset, 4, (8,), shuffle=True, drop_remainder=True))
    assert len(batches) == 2
    assert all(batch["example_mask"].all() for batch in batches)
    assert num_batches(10, 4, drop_remainder=True) == 2
    assert num_batches(10, 4) == 3


def test_epoch_order_from_seed_and_epoch():
    first = epoch_order(50, seed=7, epoch=2)
    np.testing.assert_array_equal(first, epoch_order(50, seed=7, epoch=2))
    assert not np.array_equal(first, epoch_order(50, seed=7, epoch=3))
    assert not np.array_equal(first, epoch_order(50, seed=8, epoch=2))
    np.testing.assert_array_equal(epoch_order(5, seed=7, epoch=2, shuffle=False), np.arange(5))


def test_resume_mid_epoch_same_batches():
    dataset = synthetic_dataset(np.arange(3, 40))
    full = list(batch_iterator(dataset, 8, (16, 64), shuffle=True, seed=1, epoch=4))
    resumed = list(
        batch_iterator(dataset, 8, (16, 64), shuffle=True, seed=1, epoch=4, start_batch=2)
    )
    assert len(resumed) == len(full) - 2
    for expected, actual in zip(full[2:], resumed):
        for key in expected:
            np.testing.assert_array_equal(expected[key], actual[key], err_msg=key)


def test_longer_than_largest_bucket_truncated_and_counted():
    dataset = synthetic_dataset([5, 40, 60])
    report = bucket_report(dataset, (8, 32))
    assert report.truncated_rows == 2
    assert report.rows_per_bucket == {8: 1, 32: 2}

    batch = next(batch_iterator(dataset, 3, (8, 32), shuffle=False))
    assert batch["input_ids"].shape == (3, 32)
    assert batch["input_ids"][1, -1] == SEP
    assert batch["input_ids"][2, -1] == SEP
    assert batch["attention_mask"][1].sum() == 32
    assert batch["input_ids"][0, 4] == SEP


def test_bucket_wider_than_dataset_pads():
    dataset = synthetic_dataset([30], width=30)
    batch = next(batch_iterator(dataset, 1, (64,), shuffle=False))
    assert batch["input_ids"].shape == (1, 64)
    assert batch["attention_mask"][0, 30:].sum() == 0


def test_batch_not_divisible_by_devices():
    dataset = synthetic_dataset([4] * 10)
    with pytest.raises(ValueError, match=r"Batch size 10 is not divisible by the 8 devices"):
        next(batch_iterator(dataset, 10, (8,), shuffle=False, num_devices=8))
    assert resolve_batch_size(10, 8, pad_to_devices=True) == 16
    batch = next(
        batch_iterator(dataset, 10, (8,), shuffle=False, num_devices=8, pad_to_devices=True)
    )
    assert batch["input_ids"].shape == (16, 8)
    assert batch["example_mask"].sum() == 10


def test_batch_of_30_on_8_devices():
    dataset = synthetic_dataset([4] * 30)
    with pytest.raises(ValueError, match=r"Batch size 30 is not divisible by the 8 devices"):
        next(batch_iterator(dataset, 30, (8,), shuffle=False, num_devices=8))
    batch = next(
        batch_iterator(dataset, 30, (8,), shuffle=False, num_devices=8, pad_to_devices=True)
    )
    assert batch["input_ids"].shape == (32, 8)
    assert batch["example_mask"].sum() == 30


@pytest.mark.parametrize("buckets", [(), (0, 8), (8, 8), (8.5,)])
def test_invalid_buckets(buckets):
    with pytest.raises(ValueError, match="bucket"):
        next(batch_iterator(synthetic_dataset([4]), 1, buckets, shuffle=False))


def test_soft_labels_carried():
    dataset = synthetic_dataset([4, 5, 6]).with_soft_labels(np.eye(3, 2) + 0.25)
    batch = next(batch_iterator(dataset, 4, (8,), shuffle=False))
    assert batch["soft_labels"].dtype == np.float32
    assert batch["soft_labels"].shape == (4, 2)
    np.testing.assert_allclose(batch["soft_labels"][:3], dataset.soft_labels)
    assert batch["soft_labels"][3].sum() == 0


def test_unlabeled_dataset_has_zero_labels():
    dataset = synthetic_dataset([4, 5], labeled=False)
    batch = next(batch_iterator(dataset, 2, (8,), shuffle=False))
    assert batch["labels"].tolist() == [0, 0]


def test_mismatched_rows_rejected():
    dataset = synthetic_dataset([4, 5])
    with pytest.raises(ValueError, match="labels has 1 rows"):
        EncodedDataset(
            dataset.input_ids,
            dataset.attention_mask,
            dataset.token_type_ids,
            dataset.lengths,
            dataset.labels[:1],
            SEP,
            PAD,
        )


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return Tokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def sst2_dev(tokenizer, data_dir):
    splits, vocab = load_task("sst2", seed=13, data_dir=data_dir)
    test, _ = clean_split(splits["test"])
    return encode_split(tokenizer, test, max_length=128, label_vocab=vocab)


def linear_features(input_ids, attention_mask, xp):
    """Mean token id over real tokens and the token count, as a tiny deterministic model input."""
    mask = attention_mask.astype(xp.float32)
    count = mask.sum(axis=1)
    mean_id = (input_ids * mask).sum(axis=1) / xp.maximum(count, 1.0)
    return xp.stack([mean_id / 1000.0, count / 10.0, xp.ones_like(count)], axis=1)


def test_eval_872_rows_full_coverage(sst2_dev):
    assert len(sst2_dev) == 872
    weights = np.random.default_rng(0).normal(size=(3, 2)).astype(np.float32)

    reference_features = linear_features(
        sst2_dev.input_ids.astype(np.float64), sst2_dev.attention_mask, np
    )
    reference_predictions = (reference_features @ weights.astype(np.float64)).argmax(axis=1)
    reference_accuracy = float((reference_predictions == sst2_dev.labels).mean())

    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharding = NamedSharding(mesh, PartitionSpec("data"))

    @jax.jit
    def score(batch):
        features = linear_features(
            batch["input_ids"].astype(jnp.float32), batch["attention_mask"], jnp
        )
        predictions = jnp.argmax(features @ weights, axis=1)
        correct = (predictions == batch["labels"]) * batch["example_mask"]
        return predictions, correct.sum(), batch["example_mask"].sum()

    predictions = {}
    correct_total, count_total = 0.0, 0.0
    batches = list(
        batch_iterator(sst2_dev, 32, (32, 64, 128), shuffle=False, num_devices=len(jax.devices()))
    )
    assert len(batches) == 28
    for batch in batches:
        assert batch["input_ids"].shape[0] == 32
        batch_predictions, correct, count = score(jax.device_put(batch, sharding))
        correct_total += float(correct)
        count_total += float(count)
        real = batch["example_mask"] == 1
        for index, prediction in zip(
            batch["example_index"][real], np.asarray(batch_predictions)[real]
        ):
            assert index not in predictions
            predictions[int(index)] = int(prediction)

    assert len(predictions) == 872
    assert sorted(predictions) == list(range(872))
    assert count_total == 872
    np.testing.assert_array_equal([predictions[i] for i in range(872)], reference_predictions)
    assert correct_total / count_total == pytest.approx(reference_accuracy, abs=1e-12)


def test_train_epoch_compiles_once_per_bucket(sst2_dev):
    rows = np.arange(100)
    subset = EncodedDataset(
        sst2_dev.input_ids[rows],
        sst2_dev.attention_mask[rows],
        sst2_dev.token_type_ids[rows],
        sst2_dev.lengths[rows],
        sst2_dev.labels[rows],
        sst2_dev.sep_token_id,
        sst2_dev.pad_token_id,
    )
    buckets = (16, 32, 64, 128)
    traces = collections.Counter()

    def loss_fn(params, batch):
        embedded = params["embedding"][batch["input_ids"]]
        mask = batch["attention_mask"][..., None].astype(jnp.float32)
        pooled = (embedded * mask).sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1.0)
        logits = pooled @ params["head"]
        log_probs = jax.nn.log_softmax(logits)
        nll = -jnp.take_along_axis(log_probs, batch["labels"][:, None], axis=1)[:, 0]
        return (nll * batch["example_mask"]).sum() / batch["example_mask"].sum()

    @jax.jit
    def train_step(params, batch):
        traces[batch["input_ids"].shape[1]] += 1
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads), loss

    key = jax.random.key(0)
    params = {"embedding": jax.random.normal(key, (30522, 8)) * 0.01, "head": jnp.zeros((8, 2))}
    widths_used = set()
    examples_seen = 0
    for epoch in range(2):
        for batch in batch_iterator(
            subset, 16, buckets, shuffle=True, seed=0, epoch=epoch, num_devices=8
        ):
            assert batch["input_ids"].shape[0] == 16
            widths_used.add(batch["input_ids"].shape[1])
            examples_seen += int(batch["example_mask"].sum())
            params, loss = train_step(params, batch)
            assert np.isfinite(float(loss))

    assert examples_seen == 200
    assert len(widths_used) >= 2
    assert set(traces) == widths_used
    assert all(count == 1 for count in traces.values())
    assert train_step._cache_size() == len(widths_used)
