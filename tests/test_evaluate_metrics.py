"""Tests for fsl_jax.evaluate.metrics against independent reference computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fsl_jax.evaluate import metrics


def reference_confusion(predictions, labels, num_classes):
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for prediction, label in zip(predictions, labels):
        confusion[label, prediction] += 1
    return confusion


def reference_macro_f1(predictions, labels):
    """Per-class F1 from precision and recall, averaged over classes seen in either array."""
    scores = []
    for cls in sorted(set(predictions) | set(labels)):
        true_positive = sum(1 for p, l in zip(predictions, labels) if p == cls and l == cls)
        predicted = sum(1 for p in predictions if p == cls)
        actual = sum(1 for l in labels if l == cls)
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / actual if actual else 0.0
        f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
        scores.append(f1)
    return sum(scores) / len(scores)


@pytest.fixture
def random_predictions():
    generator = np.random.default_rng(7)
    labels = generator.integers(0, 4, size=301)
    noise = generator.integers(0, 4, size=301)
    predictions = np.where(generator.random(301) < 0.6, labels, noise)
    return predictions, labels


def test_accuracy_matches_count(random_predictions):
    predictions, labels = random_predictions
    expected = sum(int(p == l) for p, l in zip(predictions, labels)) / len(labels)

    assert metrics.accuracy(predictions, labels) == pytest.approx(expected, abs=1e-12)


def test_accuracy_accepts_lists():
    assert metrics.accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == pytest.approx(0.5)


def test_confusion_matrix_rows_are_labels(random_predictions):
    predictions, labels = random_predictions
    confusion = metrics.confusion_matrix(predictions, labels, num_classes=4)

    np.testing.assert_array_equal(confusion, reference_confusion(predictions, labels, 4))
    assert confusion.sum() == len(labels)
    np.testing.assert_array_equal(confusion.sum(axis=1), np.bincount(labels, minlength=4))
    np.testing.assert_array_equal(confusion.sum(axis=0), np.bincount(predictions, minlength=4))


def test_confusion_matrix_infers_num_classes():
    confusion = metrics.confusion_matrix([0, 2], [1, 0])

    assert confusion.shape == (3, 3)
    assert confusion[1, 0] == 1
    assert confusion[0, 2] == 1


def test_macro_f1_hand_example():
    # Class 0: TP 1, FP 0, FN 1 -> F1 2/3. Class 1: TP 2, FP 1, FN 0 -> F1 4/5.
    expected = (2 / 3 + 4 / 5) / 2

    assert metrics.macro_f1([0, 1, 1, 1], [0, 0, 1, 1]) == pytest.approx(expected)


def test_macro_f1_matches_reference(random_predictions):
    predictions, labels = random_predictions
    expected = reference_macro_f1(predictions.tolist(), labels.tolist())

    assert metrics.macro_f1(predictions, labels) == pytest.approx(expected, abs=1e-12)


def test_macro_f1_matches_sklearn(random_predictions):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    predictions, labels = random_predictions
    expected = sklearn_metrics.f1_score(labels, predictions, average="macro")

    assert metrics.macro_f1(predictions, labels) == pytest.approx(expected, abs=1e-12)


def test_macro_f1_skips_absent_classes():
    predictions = [0, 1, 1, 0]
    labels = [0, 1, 0, 0]

    without_count = metrics.macro_f1(predictions, labels)
    with_extra_classes = metrics.macro_f1(predictions, labels, num_classes=5)

    assert with_extra_classes == pytest.approx(without_count)


def test_macro_f1_never_predicted_class_scores_zero():
    # Class 1 occurs only in the labels, so its F1 is 0. Class 0: TP 2, FP 1 -> F1 0.8.
    expected = (0.8 + 0.0) / 2

    assert metrics.macro_f1([0, 0, 0], [0, 0, 1]) == pytest.approx(expected)


def test_mask_selects_examples(random_predictions):
    predictions, labels = random_predictions
    mask = (np.arange(len(labels)) % 3 != 0).astype(np.float32)
    keep = mask.astype(bool)

    assert metrics.accuracy(predictions, labels, mask) == pytest.approx(
        metrics.accuracy(predictions[keep], labels[keep])
    )
    assert metrics.macro_f1(predictions, labels, mask=mask) == pytest.approx(
        reference_macro_f1(predictions[keep].tolist(), labels[keep].tolist())
    )
    np.testing.assert_array_equal(
        metrics.confusion_matrix(predictions, labels, 4, mask),
        reference_confusion(predictions[keep], labels[keep], 4),
    )


def test_classification_metrics_agree(random_predictions):
    predictions, labels = random_predictions
    result = metrics.classification_metrics(predictions, labels)

    assert result["accuracy"] == pytest.approx(metrics.accuracy(predictions, labels))
    assert result["macro_f1"] == pytest.approx(metrics.macro_f1(predictions, labels))
    assert result["num_examples"] == len(labels)


@pytest.mark.parametrize(
    "predictions, labels, kwargs, message",
    [
        ([0, 1, 1], [0, 1], {}, r"\(3,\) and \(2,\)"),
        ([], [], {}, "No examples"),
        ([0, 1], [0, 1], {"mask": [0, 0]}, "No examples"),
        (
            [0, 1],
            [0, 1],
            {"mask": [1, 1, 1]},
            r"mask must have the shape of labels \(2,\), got \(3,\)",
        ),
        ([0, 3], [0, 1], {"num_classes": 3}, r"class index 3, outside \[0, 3\)"),
        ([0, -1], [0, 1], {}, "negative class index -1"),
        ([[0.1, 0.9]], [1], {}, r"1-D array.*\(1, 2\)"),
        ([0.2, 0.8], [0, 1], {}, "integer class indices.*float64"),
    ],
)
def test_metrics_reject_invalid_input(predictions, labels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        metrics.confusion_matrix(predictions, labels, **kwargs)


def test_accuracy_rejects_shape_mismatch():
    with pytest.raises(ValueError, match=r"same shape, got \(4,\) and \(3,\)"):
        metrics.accuracy(np.zeros(4, int), np.zeros(3, int))


# ------------------------------------------------------------------------------
# metric_sums and finalize.
# ------------------------------------------------------------------------------


def padded_batches(logits, labels, batch_size):
    """Split into fixed-size batches, padding the last one with masked rows."""
    num_examples, num_classes = logits.shape
    for start in range(0, num_examples, batch_size):
        stop = min(start + batch_size, num_examples)
        real = stop - start
        batch_logits = np.zeros((batch_size, num_classes), np.float32)
        batch_labels = np.zeros(batch_size, np.int32)
        example_mask = np.zeros(batch_size, np.float32)
        batch_logits[:real] = logits[start:stop]
        batch_labels[:real] = labels[start:stop]
        example_mask[:real] = 1.0
        # Padding rows get confident wrong logits, which would change every metric
        # if they were counted.
        batch_logits[real:, 1] = 50.0
        yield batch_logits, batch_labels, example_mask


@pytest.fixture
def eval_set():
    generator = np.random.default_rng(3)
    logits = generator.normal(size=(45, 3)).astype(np.float32)
    labels = generator.integers(0, 3, size=45).astype(np.int32)
    return logits, labels


def test_metric_sums_padded_batches_match_numpy(eval_set):
    logits, labels = eval_set
    step = jax.jit(metrics.metric_sums)

    total = None
    for batch in padded_batches(logits, labels, batch_size=8):
        total = metrics.accumulate_sums(total, step(*batch))
    result = metrics.finalize(total)

    predictions = logits.argmax(axis=-1)
    log_probs = logits - scipy.special.logsumexp(logits, axis=-1, keepdims=True)
    expected_cross_entropy = -np.mean(log_probs[np.arange(len(labels)), labels])
    assert result["num_examples"] == len(labels)
    assert result["accuracy"] == pytest.approx(np.mean(predictions == labels), abs=1e-12)
    assert result["macro_f1"] == pytest.approx(
        reference_macro_f1(predictions.tolist(), labels.tolist()), abs=1e-12
    )
    assert result["cross_entropy"] == pytest.approx(expected_cross_entropy, rel=1e-5)
    np.testing.assert_array_equal(
        np.asarray(total["confusion"]), reference_confusion(predictions, labels, 3)
    )


def test_metric_sums_sharded_batch(eval_set):
    logits, labels = eval_set
    devices = np.array(jax.devices())
    mesh = Mesh(devices, ("data",))
    batch_size = 8 * len(devices)
    batch = next(padded_batches(logits, labels, batch_size))
    rows = NamedSharding(mesh, PartitionSpec("data"))
    sharded = [jax.device_put(array, rows) for array in batch]

    sums = jax.jit(metrics.metric_sums)(*sharded)
    result = metrics.finalize(sums)

    assert result["num_examples"] == len(labels)
    assert result["accuracy"] == pytest.approx(np.mean(logits.argmax(-1) == labels), abs=1e-12)


def test_metric_sums_rejects_shapes():
    logits = jnp.zeros((4, 3))
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\).*got \(5,\)"):
        metrics.metric_sums(logits, jnp.zeros(5, jnp.int32), jnp.ones(4))
    with pytest.raises(ValueError, match=r"example_mask must have shape \(4,\).*got \(4, 1\)"):
        metrics.metric_sums(logits, jnp.zeros(4, jnp.int32), jnp.ones((4, 1)))
    with pytest.raises(ValueError, match=r"logits must have shape \[batch, classes\], got \(4,\)"):
        metrics.metric_sums(jnp.zeros(4), jnp.zeros(4, jnp.int32), jnp.ones(4))


def test_finalize_rejects_all_padding():
    sums = metrics.metric_sums(jnp.zeros((2, 3)), jnp.zeros(2, jnp.int32), jnp.zeros(2))

    with pytest.raises(ValueError, match="No examples were counted"):
        metrics.finalize(sums)


def test_finalize_reports_out_of_range_labels():
    labels = jnp.array([0, 5, 1], jnp.int32)
    sums = metrics.metric_sums(jnp.zeros((3, 3)), labels, jnp.ones(3))

    with pytest.raises(ValueError, match=r"1 of 3 real examples have a label outside \[0, 3\)"):
        metrics.finalize(sums)


def test_accumulate_sums_rejects_other_keys():
    sums = metrics.metric_sums(jnp.zeros((2, 3)), jnp.zeros(2, jnp.int32), jnp.ones(2))

    with pytest.raises(ValueError, match="Cannot add metric sums"):
        metrics.accumulate_sums(sums, {"count": sums["count"]})
