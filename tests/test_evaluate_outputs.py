"""Tests for the workdir file formats: predictions, metrics.jsonl and JSON helpers."""

import json
import math
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from fsl_jax.evaluate import outputs


def test_predictions_round_trip(tmp_path):
    predictions = np.array([0, 2, 1, 1])
    labels = np.array([0, 1, 1, 2])
    logits = np.arange(12, dtype=np.float32).reshape(4, 3)

    path = outputs.write_predictions(tmp_path, "student", 13, predictions, labels, logits=logits)
    loaded = outputs.load_predictions(tmp_path, "student", [13])

    assert path == tmp_path / "predictions" / "student_seed13.npz"
    np.testing.assert_array_equal(loaded[13].predictions, predictions)
    np.testing.assert_array_equal(loaded[13].labels, labels)
    assert loaded[13].predictions.dtype == np.int32
    with np.load(path) as arrays:
        np.testing.assert_array_equal(arrays["logits"], logits)
    assert sorted(p.name for p in path.parent.iterdir()) == ["student_seed13.npz"]


def test_predictions_accept_jax_arrays(tmp_path):
    outputs.write_predictions(tmp_path, "teacher", 21, jnp.array([1, 0]), jnp.array([1, 1]))

    loaded = outputs.load_predictions(tmp_path, "teacher", [21])

    np.testing.assert_array_equal(loaded[21].predictions, [1, 0])


def test_load_predictions_missing_seed(tmp_path):
    outputs.write_predictions(tmp_path, "student", 13, [0], [0])

    with pytest.raises(
        FileNotFoundError, match="model 'student' seed 42 not found at .*student_seed42.npz"
    ):
        outputs.load_predictions(tmp_path, "student", [13, 42])


@pytest.mark.parametrize(
    "predictions, labels, logits, message",
    [
        ([0, 1, 1], [0, 1], None, r"shapes \(3,\) and \(2,\)"),
        ([[0, 1]], [[0, 1]], None, "1-D arrays"),
        ([0, 1], [0, 1], np.zeros((3, 2)), r"logits must have shape \[2, classes\], got \(3, 2\)"),
    ],
)
def test_write_predictions_rejects_shapes(tmp_path, predictions, labels, logits, message):
    with pytest.raises(ValueError, match=message):
        outputs.write_predictions(tmp_path, "student", 13, predictions, labels, logits=logits)


@pytest.mark.parametrize("name", ["", "../teacher", "a b", "_hidden", "x/y"])
def test_validate_name_rejects(name):
    with pytest.raises(ValueError, match="Invalid model name"):
        outputs.validate_name(name)


def test_checkpoint_dir_layout(tmp_path):
    assert outputs.checkpoint_dir(tmp_path, 87) == tmp_path / "checkpoints" / "seed_87"


def test_to_jsonable_converts_types():
    value = {
        "array": np.array([1, 2]),
        "scalar": np.float32(0.5),
        "integer": np.int64(3),
        "flag": np.bool_(True),
        "nan": float("nan"),
        "path": Path("/tmp/run"),
        "tuple": (1, 2.0),
        "jax": jnp.array([0.25]),
    }

    converted = outputs.to_jsonable(value)

    assert converted == {
        "array": [1, 2],
        "scalar": 0.5,
        "integer": 3,
        "flag": True,
        "nan": None,
        "path": "/tmp/run",
        "tuple": [1, 2.0],
        "jax": [0.25],
    }
    json.dumps(converted, allow_nan=False)


def test_to_jsonable_rejects_objects():
    with pytest.raises(TypeError, match="type object"):
        outputs.to_jsonable({"value": object()})


def test_metrics_jsonl_round_trip(tmp_path):
    outputs.append_metrics(tmp_path, seed=13, model="teacher", step=10, train_loss=np.float32(0.5))
    outputs.append_metrics(
        tmp_path, seed=13, model="teacher", step=20, train_loss=0.25, dev_accuracy=0.75
    )
    outputs.append_metrics(tmp_path, seed=13, model="teacher", step=30, train_loss=math.nan)

    records = outputs.read_metrics(tmp_path)

    assert records == [
        {"seed": 13, "model": "teacher", "step": 10, "train_loss": 0.5},
        {"seed": 13, "model": "teacher", "step": 20, "train_loss": 0.25, "dev_accuracy": 0.75},
        {"seed": 13, "model": "teacher", "step": 30, "train_loss": None},
    ]
    assert outputs.read_metrics(tmp_path / "metrics.jsonl") == records


def test_read_metrics_skips_cut_last_line(tmp_path):
    outputs.append_metrics(tmp_path, seed=13, model="student", step=1, train_loss=1.0)
    with open(tmp_path / "metrics.jsonl", "a") as file:
        file.write('{"seed": 13, "model": "stu')

    records = outputs.read_metrics(tmp_path)

    assert len(records) == 1
    assert records[0]["step"] == 1


def test_read_metrics_rejects_broken_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        '{"seed": 13, "model": "student", "step": 1}\nnot json\n{"seed": 13, "model": "student", "step": 2}\n'
    )

    with pytest.raises(ValueError, match="metrics.jsonl:2 is not valid JSON"):
        outputs.read_metrics(path)


def test_read_metrics_requires_identity(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"seed": 13, "train_loss": 1.0}\n')

    with pytest.raises(
        ValueError, match=r"metrics.jsonl:1 is missing the keys \['model', 'step'\]"
    ):
        outputs.read_metrics(path)


def test_learning_curves_after_resume(tmp_path):
    for step, loss in [(10, 0.9), (20, 0.8), (30, 0.7)]:
        outputs.append_metrics(tmp_path, seed=21, model="student", step=step, train_loss=loss)
    # A resumed run restarts from the step-20 checkpoint and logs step 30 again.
    outputs.append_metrics(tmp_path, seed=21, model="student", step=30, train_loss=0.6)
    outputs.append_metrics(tmp_path, seed=21, model="student", step=25, dev_accuracy=0.8)
    outputs.append_metrics(tmp_path, seed=13, model="student", step=10, train_loss=1.0)

    curves = outputs.learning_curves(outputs.read_metrics(tmp_path), "train_loss")

    assert list(curves) == [("student", 13), ("student", 21)]
    steps, values = curves[("student", 21)]
    np.testing.assert_array_equal(steps, [10, 20, 30])
    np.testing.assert_allclose(values, [0.9, 0.8, 0.6])
    dev_steps, dev_values = outputs.learning_curves(outputs.read_metrics(tmp_path), "dev_accuracy")[
        ("student", 21)
    ]
    np.testing.assert_array_equal(dev_steps, [25])
    np.testing.assert_allclose(dev_values, [0.8])


def test_write_json_atomic_leaves_no_temporary(tmp_path):
    path = outputs.write_json_atomic(tmp_path / "sub" / "file.json", {"value": np.int32(4)})

    assert json.loads(path.read_text()) == {"value": 4}
    assert [p.name for p in path.parent.iterdir()] == ["file.json"]


def test_write_json_atomic_keeps_old_file_on_error(tmp_path):
    path = outputs.write_json_atomic(tmp_path / "file.json", {"value": 1})

    with pytest.raises(TypeError):
        outputs.write_json_atomic(path, {"value": object()})

    assert json.loads(path.read_text()) == {"value": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["file.json"]
