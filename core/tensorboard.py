"""TensorBoard event files from a run's journal, written by hand: no TensorFlow, no tensorboard
package, nothing but the standard library (the window can use it as well as the CLI).

An event file is a sequence of records — an 8-byte little-endian length, the masked CRC-32C of
those 8 bytes, the data, the masked CRC-32C of the data — each holding one serialized `Event`
protocol buffer (tensorflow/core/util/event.proto): `wall_time` (field 1, double), `step` (2,
int64), then `file_version` (3, string) in the first record and a `Summary` (5) in the others,
whose `Value`s carry a `tag` (1, string) and a `simple_value` (2, float) — what TensorBoard's
scalar dashboard reads. The few fields needed are encoded here directly.

`export_run(run_dir)` writes RUN/tensorboard/events.out.tfevents.<start>.lorastudio from the whole
journal (temp file, then rename). The bytes depend only on the journal, so a later export of a run
that went on is the earlier file plus more records: a TensorBoard already reading it carries on.
"""
from __future__ import annotations

import contextlib
import os
import struct
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from lorastudio.core.journal import read_events

TENSORBOARD_DIR = "tensorboard"
FILE_VERSION = "brain.Event:2"
GIB = 1024 ** 3

# ---- CRC-32C (Castagnoli), as TFRecord framing uses it ---------------------------------------------
_POLY = 0x82F63B78          # the reflected Castagnoli polynomial
_TABLE = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ _POLY if _c & 1 else _c >> 1
    _TABLE.append(_c)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    """The record format's masked CRC: rotated right by 15 bits, plus a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One record around `data`."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data))


# ---- the few protocol-buffer fields an Event needs ------------------------------------------------
def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1              # negative int64s are ten bytes of two's complement
    while True:
        bits, n = n & 0x7F, n >> 7
        out.append(bits | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _bytes_field(field: int, data: bytes) -> bytes:
    return _key(field, 2) + _varint(len(data)) + data


def encode_event(wall_time: float, step: int, scalars: Iterable[tuple[str, float]] = (),
                 file_version: str | None = None) -> bytes:
    event = _key(1, 1) + struct.pack("<d", wall_time) + _key(2, 0) + _varint(int(step))
    if file_version is not None:
        event += _bytes_field(3, file_version.encode())
    values = b"".join(_bytes_field(1, _bytes_field(1, tag.encode()) + _key(2, 5) + struct.pack("<f", value))
                      for tag, value in scalars)
    if values:
        event += _bytes_field(5, values)
    return event


# ---- journal events → scalars --------------------------------------------------------------------
_STEP_FIELDS = {"loss": "train/loss", "lr": "train/learning_rate", "grad_norm": "train/grad_norm",
                "tokens_per_s": "train/tokens_per_second", "epoch": "train/epoch"}
_MEMORY_FIELDS = {"ram_used": ("memory/ram_used_gib", GIB), "rss": ("memory/worker_rss_gib", GIB),
                  "cuda_allocated": ("memory/cuda_allocated_gib", GIB), "cuda_reserved": ("memory/cuda_reserved_gib", GIB),
                  "cuda_peak": ("memory/cuda_peak_gib", GIB), "device_used": ("memory/device_used_gib", GIB),
                  "gpu_util": ("gpu/utilization_percent", 1), "gpu_temp": ("gpu/temperature_c", 1),
                  "gpu_power": ("gpu/power_w", 1)}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def scalars_of(events: Iterable[dict]) -> Iterator[tuple[float, int, list[tuple[str, float]]]]:
    """(wall_time, step, [(tag, value)]) for each journal event that carries figures."""
    step = 0
    for e in events:
        kind = e["type"]
        if kind == "step":
            step = e["step"]
            values = [(tag, e[k]) for k, tag in _STEP_FIELDS.items() if _number(e.get(k))]
        elif kind == "eval":
            step = e.get("step", step)
            values = [(f"eval/{k}", v) for k, v in e.items() if k not in ("v", "type", "time", "step") and _number(v)]
        elif kind == "memory":
            values = [(tag, e[k] / scale) for k, (tag, scale) in _MEMORY_FIELDS.items() if _number(e.get(k))]
            at = e.get("step", step)
            if values:
                yield e["time"], at, values
            continue
        else:
            continue
        if values:
            yield e["time"], step, values


def event_file_bytes(events: list[dict]) -> bytes:
    start = events[0]["time"] if events else 0.0
    records = [frame(encode_event(start, 0, file_version=FILE_VERSION))]
    records += [frame(encode_event(t, s, values)) for t, s, values in scalars_of(events)]
    return b"".join(records)


def export_run(run_dir: Path, out_dir: Path | None = None) -> Path:
    """Write the run's TensorBoard event file (RUN/tensorboard/ unless `out_dir`); returns its path.
    Several runs exported into one `out_dir` each get their own subfolder, named as the run."""
    run_dir = Path(run_dir)
    events = read_events(run_dir / "events.jsonl")
    folder = Path(out_dir) / run_dir.name if out_dir is not None else run_dir / TENSORBOARD_DIR
    from lorastudio.core.runs.output_paths import MARKER, check_output, mark_output
    check_output(folder, "TensorBoard files", overwrite=True, inside=None if out_dir is not None else run_dir)
    start = int(events[0]["time"]) if events else 0
    path = folder / f"events.out.tfevents.{start}.lorastudio"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / MARKER).is_file():
        mark_output(folder, "TensorBoard files", run_dir)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(event_file_bytes(events))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


# ---- reading back (the tests, and `lorastudio tensorboard --check`) -------------------------------
class RecordError(ValueError):
    pass


def read_records(path: Path) -> Iterator[bytes]:
    """Each record's data; RecordError on a bad length or data CRC (a torn last record ends it)."""
    with open(path, "rb") as fh:
        while True:
            head = fh.read(12)
            if len(head) < 12:
                return
            length, length_crc = struct.unpack("<QI", head)
            if masked_crc(head[:8]) != length_crc:
                raise RecordError(f"{path}: bad length CRC at byte {fh.tell() - 12}")
            data, tail = fh.read(length), fh.read(4)
            if len(tail) < 4:
                return
            if masked_crc(data) != struct.unpack("<I", tail)[0]:
                raise RecordError(f"{path}: bad data CRC at byte {fh.tell() - length - 4}")
            yield data


def _fields(data: bytes) -> Iterator[tuple[int, int, object]]:
    i = 0
    while i < len(data):
        key, i = _read_varint(data, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(data, i)
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        elif wire == 2:
            size, i = _read_varint(data, i)
            value, i = data[i:i + size], i + size
        else:
            raise RecordError(f"unexpected wire type {wire}")
        yield field, wire, value


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7


def decode_event(data: bytes) -> dict:
    """{wall_time, step, file_version?, scalars: {tag: value}} of one Event."""
    event: dict = {"wall_time": 0.0, "step": 0, "scalars": {}}
    for field, _wire, value in _fields(data):
        if field == 1:
            event["wall_time"] = struct.unpack("<d", value)[0]
        elif field == 2:
            event["step"] = value - (1 << 64) if value >= 1 << 63 else value
        elif field == 3:
            event["file_version"] = value.decode()
        elif field == 5:
            for f, _w, raw in _fields(value):
                if f == 1:
                    parts = {vf: vv for vf, _vw, vv in _fields(raw)}
                    event["scalars"][parts[1].decode()] = struct.unpack("<f", parts[2])[0]
    return event


def read_scalars(path: Path) -> list[tuple[str, int, float]]:
    """(tag, step, value) of every scalar in an event file, in order."""
    out = []
    for data in read_records(path):
        event = decode_event(data)
        out += [(tag, event["step"], value) for tag, value in event["scalars"].items()]
    return out
