"""TensorBoard event files written by hand from a real run's journal: the record framing and its
CRC-32C, the Event protocol buffer, the CLI; read back by our reader and, where the tensorboard
package is installed, by TensorBoard's own."""
import struct

import pytest

from lorastudio.core.cli import main as cli_main
from lorastudio.core.journal import JournalWriter, read_events
from lorastudio.core.tensorboard import (FILE_VERSION, RecordError, crc32c, decode_event, encode_event, export_run,
                                         frame, masked_crc, read_records, read_scalars)


def test_crc32c_matches_the_standard_check_values():
    assert crc32c(b"123456789") == 0xE3069283                       # the Castagnoli check value
    assert crc32c(b"") == 0
    assert crc32c(bytes(32)) == 0x8A9136AA                          # RFC 3720 B.4: 32 bytes of zeros
    assert crc32c(bytes([0xFF] * 32)) == 0x62A8AB43                 # … of ones
    assert crc32c(bytes(range(32))) == 0x46DD794E                   # … incrementing


def test_a_record_is_length_crc_data_crc():
    data = b"hello tensorboard"
    record = frame(data)
    assert record[:8] == struct.pack("<Q", len(data))
    assert struct.unpack("<I", record[8:12])[0] == masked_crc(record[:8])
    assert record[12:-4] == data
    assert struct.unpack("<I", record[-4:])[0] == masked_crc(data)
    assert masked_crc(b"") == 0xA282EAD8                             # the mask of crc 0 is the constant


def test_an_event_round_trips():
    data = encode_event(1700000000.25, 42, [("train/loss", 1.5), ("train/learning_rate", 2e-4)])
    event = decode_event(data)
    assert event["wall_time"] == 1700000000.25 and event["step"] == 42
    assert event["scalars"]["train/loss"] == 1.5
    assert event["scalars"]["train/learning_rate"] == pytest.approx(2e-4)
    assert decode_event(encode_event(5.0, 0, file_version=FILE_VERSION))["file_version"] == "brain.Event:2"


def write_journal(run_dir, steps=6):
    writer = JournalWriter(run_dir / "events.jsonl")
    writer.emit("start", config={}, devices=[], versions={}, trainable_params=10, total_params=100, total_steps=steps)
    for n in range(1, steps + 1):
        writer.emit("step", step=n, total_steps=steps, epoch=n / steps, loss=3.0 / n, lr=1e-3, grad_norm=None,
                    tokens_per_s=100.0 * n, elapsed_s=n, eta_s=steps - n)
        writer.emit("memory", step=n, rss=2 * 1024 ** 3, ram_used=4 * 1024 ** 3, ram_total=8 * 1024 ** 3)
    writer.emit("eval", step=steps, loss=0.75)
    writer.emit("end", status="completed", adapter=None)
    writer.close()


def test_export_writes_every_figure_of_the_journal(tmp_path):
    run = tmp_path / "run"
    write_journal(run)
    path = export_run(run)
    assert path.parent == run / "tensorboard" and path.name.startswith("events.out.tfevents.")
    first = decode_event(next(read_records(path)))
    assert first["file_version"] == FILE_VERSION
    scalars = read_scalars(path)
    losses = [(step, value) for tag, step, value in scalars if tag == "train/loss"]
    assert losses == [(n, pytest.approx(3.0 / n)) for n in range(1, 7)]
    assert ("eval/loss", 6, 0.75) in scalars
    assert ("memory/ram_used_gib", 3, 4.0) in scalars
    assert not any(tag == "train/grad_norm" for tag, _s, _v in scalars)      # None is not a figure


def test_a_later_export_extends_the_earlier_file(tmp_path):
    run = tmp_path / "run"
    write_journal(run, steps=3)
    before = export_run(run).read_bytes()
    with open(run / "events.jsonl", "a") as fh:                         # the run went on
        fh.write('{"v": 1, "type": "eval", "time": 9e9, "step": 4, "loss": 0.5}\n')
    after = export_run(run).read_bytes()
    assert after.startswith(before) and len(after) > len(before)


def test_a_corrupted_record_is_refused(tmp_path):
    run = tmp_path / "run"
    write_journal(run)
    path = export_run(run)
    data = bytearray(path.read_bytes())
    data[40] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(RecordError, match="bad"):
        list(read_records(path))


def test_a_real_training_run_exports_through_the_cli(tmp_path, make_config, inline_jobs, capsys):
    run = tmp_path / "run"
    assert cli_main(["train", str(make_config(training__max_steps=3, training__save_every=0)),
                     "--run-dir", str(run)]) == 0
    capsys.readouterr()
    assert cli_main(["tensorboard", str(run), "--out", str(tmp_path / "boards")]) == 0
    path = next((tmp_path / "boards" / "run").glob("events.out.tfevents.*"))
    assert capsys.readouterr().out.strip() == str(path)
    steps = [e["step"] for e in read_events(run / "events.jsonl") if e["type"] == "step"]
    assert [s for tag, s, _v in read_scalars(path) if tag == "train/loss"] == steps == [1, 2, 3]


def test_the_cli_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert cli_main(["tensorboard", str(tmp_path)]) == 2
    assert "is not a run folder (no events.jsonl)" in capsys.readouterr().err


def test_tensorboard_itself_reads_the_file(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    run = tmp_path / "run"
    write_journal(run)
    export_run(run)
    acc = event_accumulator.EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    assert [round(s.value, 4) for s in acc.Scalars("train/loss")] == [round(3.0 / n, 4) for n in range(1, 7)]
