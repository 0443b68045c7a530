"""TensorBoard scalar event files, written with the standard library alone.

An event file is a sequence of TFRecords, each a serialised ``tensorflow.Event``
protocol buffer::

    uint64 length (little-endian) | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)

This writes the three kinds of ``Event`` that a scalar log needs, encoding their
few protobuf fields by hand (field numbers from TensorFlow's ``event.proto`` and
``summary.proto``):

* ``file_version = "brain.Event:2"`` first, as every event file starts;
* ``session_log { status: START }`` at ``purge_step``: TensorBoard then hides the
  events of earlier files at that step or later (a run resumed from a checkpoint);
* ``summary { value { tag, simple_value } }`` at a step, one per scalar.

tensorboardX, which wrote these before, imports torch whenever torch is installed
(``tensorboardX/__init__.py`` imports its ``SummaryWriter``, which imports torch),
and ``import baobab.train`` must not.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as logdir:
...     writer = EventWriter(logdir)
...     writer.add_scalar("train/loss", 0.5, global_step=10)
...     writer.close()
...     [p.name.split(".")[:3] for p in Path(logdir).iterdir()]
[['events', 'out', 'tfevents']]
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

__all__ = ["EventWriter", "masked_crc32c"]


# ----------------------------------------------------------------------------------------
# TFRecord framing: CRC-32C (Castagnoli), masked as TensorFlow does
# ----------------------------------------------------------------------------------------

def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # the reflected Castagnoli polynomial
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C of ``data``, rotated right by 15 bits plus a constant.

    >>> hex(masked_crc32c(b"123456789"))  # CRC-32C("123456789") is 0xe3069283
    '0xc78ab0e5'
    """
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


# ----------------------------------------------------------------------------------------
# The protobuf fields used (wire types: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32)
# ----------------------------------------------------------------------------------------

def _varint(n: int) -> bytes:
    n &= 0xFFFFFFFFFFFFFFFF  # int64: a negative number takes ten bytes, as protobuf writes it
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _bytes_field(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def _event(step: int, **what: bytes) -> bytes:
    """``Event { wall_time = 1; step = 2; file_version = 3 | summary = 5 | session_log = 7 }``."""
    (name, payload), = what.items()
    field = {"file_version": 3, "summary": 5, "session_log": 7}[name]  # 6 is the deprecated log_message
    return (_key(1, 1) + struct.pack("<d", time.time()) + _key(2, 0) + _varint(step)
            + _bytes_field(field, payload))


def _scalar_summary(tag: str, value: float) -> bytes:
    """``Summary { repeated Value value = 1 }``, ``Value { tag = 1; float simple_value = 2 }``."""
    value_proto = _bytes_field(1, tag.encode("utf-8")) + _key(2, 5) + struct.pack("<f", value)
    return _bytes_field(1, value_proto)


_SESSION_START = _key(1, 0) + _varint(1)  # SessionLog { status = 1 }, SessionStatus.START = 1


# ----------------------------------------------------------------------------------------
# The writer
# ----------------------------------------------------------------------------------------

class EventWriter:
    """Appends scalar events to a new ``events.out.tfevents.*`` file in ``logdir``.

    ``purge_step``: on resume, the first step of this run; TensorBoard hides what
    earlier files logged at that step or later. Writes go to the file as they come;
    ``flush()`` pushes them to the operating system.
    """

    def __init__(self, logdir: str | Path, *, purge_step: int | None = None):
        Path(logdir).mkdir(parents=True, exist_ok=True)
        stem = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
        for n in range(1000):  # a fresh file, also for a second writer in the same second and process
            try:
                self._file = open(Path(logdir) / f"{stem}.{n}", "xb")
                break
            except FileExistsError:
                continue
        else:
            raise FileExistsError(f"{logdir}: 1000 event files named {stem}.* exist already")
        self.path = Path(self._file.name)
        self._file.write(_record(_event(0, file_version=b"brain.Event:2")))
        if purge_step is not None:
            self._file.write(_record(_event(int(purge_step), session_log=_SESSION_START)))
        self._file.flush()

    def add_scalar(self, tag: str, value: float, global_step: int) -> None:
        """Record ``value`` (stored as float32, as TensorBoard's ``simple_value``) under ``tag``."""
        self._file.write(_record(_event(int(global_step), summary=_scalar_summary(tag, float(value)))))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
