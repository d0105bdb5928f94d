"""TensorBoard event files of scalar metrics, written with the standard library only.

An event file is a sequence of TFRecord records, each containing one serialised
`tensorflow.Event` protocol buffer: first a file-version event, then one event per
scalar (wall time, step and a Summary with one value). Writing the few fields a
scalar needs by hand avoids a TensorFlow, PyTorch or tensorboardX import:
tensorboardX imports PyTorch whenever it is installed, which took about 1.3 s of
each run's start-up on the development machine.

TFRecord framing: little-endian uint64 payload length, its masked CRC-32C, the
payload, the payload's masked CRC-32C.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from pathlib import Path

_CRC32C_POLYNOMIAL = 0x82F63B78  # Castagnoli, bit-reversed.


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC32C_POLYNOMIAL if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """Return the CRC-32C (Castagnoli) checksum of data, the checksum TFRecord uses."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """Return the CRC-32C of data, rotated and offset as TFRecord stores it."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # A negative int64 is encoded as its two's complement.
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | 0x80 if value else low)
        if not value:
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def _wall_time(seconds: float) -> bytes:
    return _key(1, 1) + struct.pack("<d", seconds)  # Event.wall_time, a double.


def version_event(wall_time: float) -> bytes:
    """Return the serialised Event that opens a file (file_version 'brain.Event:2')."""
    return _wall_time(wall_time) + _length_delimited(3, b"brain.Event:2")


def scalar_event(tag: str, value: float, step: int, wall_time: float) -> bytes:
    """Return the serialised Event of one scalar: Summary.Value(tag, simple_value) at step."""
    summary_value = _length_delimited(1, tag.encode("utf-8")) + _key(2, 5)
    summary_value += struct.pack("<f", value)
    summary = _length_delimited(1, summary_value)
    step_field = _key(2, 0) + _varint(int(step))
    return _wall_time(wall_time) + step_field + _length_delimited(5, summary)


def tfrecord(payload: bytes) -> bytes:
    """Frame payload as one TFRecord record."""
    length = struct.pack("<Q", len(payload))
    return (
        length
        + struct.pack("<I", masked_crc32c(length))
        + payload
        + struct.pack("<I", masked_crc32c(payload))
    )


_file_numbers = itertools.count()


class ScalarEventWriter:
    """Append scalar events to a new event file in directory; TensorBoard reads the folder.

    The file name follows TensorBoard's pattern
    (events.out.tfevents.<time>.<host>.<pid>.<n>), so a resumed run adds a second
    file next to the first instead of overwriting it.
    """

    def __init__(self, directory: str | os.PathLike):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        now = time.time()
        name = (
            f"events.out.tfevents.{int(now)}.{socket.gethostname()}."
            f"{os.getpid()}.{next(_file_numbers)}"
        )
        self.path = directory / name
        self._handle = self.path.open("ab")
        self._handle.write(tfrecord(version_event(now)))
        self._handle.flush()

    def add_scalars(self, step: int, values: dict[str, float]) -> None:
        """Write one event per (tag, value), all at step, and flush them to disk."""
        now = time.time()
        for tag, value in values.items():
            self._handle.write(tfrecord(scalar_event(tag, float(value), step, now)))
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()
