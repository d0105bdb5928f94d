"""Metric writers: JSON lines, and TensorBoard event files read back with tensorboardX."""

import json
import struct

import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from fsl_jax.train import event_file
from fsl_jax.train.writers import MetricWriter


def _records(path):
    """Payloads of a TFRecord file, with both checksums of every record verified."""
    data = path.read_bytes()
    payloads, offset = [], 0
    while offset < len(data):
        header = data[offset : offset + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[offset + 8 : offset + 12])
        assert header_crc == event_file.masked_crc32c(header)
        payload = data[offset + 12 : offset + 12 + length]
        (payload_crc,) = struct.unpack("<I", data[offset + 12 + length : offset + 16 + length])
        assert payload_crc == event_file.masked_crc32c(payload)
        payloads.append(payload)
        offset += 16 + length
    return payloads


def test_crc32c_check_values():
    # The CRC-32C check value of "123456789" (RFC 3720, appendix B.4) and of 32 zero bytes.
    assert event_file.crc32c(b"123456789") == 0xE3069283
    assert event_file.crc32c(bytes(32)) == 0x8A9136AA


def test_metric_writer_jsonl_and_tensorboard(tmp_path):
    writer = MetricWriter(tmp_path, "teacher", 13)
    writer.write(10, {"train_loss": np.float32(0.25), "lr": 2e-5, "note": "text"})
    writer.write(20, {"dev_accuracy": 0.75, "big_step_count": 3})
    writer.close()

    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[0] == {
        "seed": 13,
        "model": "teacher",
        "step": 10,
        "train_loss": 0.25,
        "lr": 2e-5,
        "note": "text",
    }
    assert lines[1]["dev_accuracy"] == 0.75

    (path,) = (tmp_path / "tensorboard" / "teacher_seed13").iterdir()
    assert path.name.startswith("events.out.tfevents.")
    events = [event_pb2.Event.FromString(payload) for payload in _records(path)]
    assert events[0].file_version == "brain.Event:2"
    scalars = [(e.step, v.tag, v.simple_value) for e in events[1:] for v in e.summary.value]
    assert scalars == [
        (10, "teacher/train_loss", 0.25),
        (10, "teacher/lr", pytest.approx(2e-5)),
        (20, "teacher/dev_accuracy", 0.75),
        (20, "teacher/big_step_count", 3.0),
    ]
    assert all(event.wall_time > 1.7e9 for event in events)


def test_metric_writer_second_run_adds_file(tmp_path):
    for step in (1, 2):
        writer = MetricWriter(tmp_path, "student", 21)
        writer.write(step, {"train_loss": float(step)})
        writer.close()
    files = sorted((tmp_path / "tensorboard" / "student_seed21").iterdir())
    assert len(files) == 2
    steps = [
        event_pb2.Event.FromString(payload).step for path in files for payload in _records(path)[1:]
    ]
    assert sorted(steps) == [1, 2]
