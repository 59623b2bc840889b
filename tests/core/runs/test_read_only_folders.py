"""Issue 27 item 8: a run folder or data directory that cannot be written to is named, with what to
do — not a bare "[Errno 30] Read-only file system" / "[Errno 13] Permission denied". Real read-only
file systems (a bind mount remounted ro, tests/helpers/small_disk.read_only); a chmod'ed folder
where the tests do not run as root (root writes through chmod)."""
import errno
import os
import sys

import pytest

from tests.helpers.runs_fixtures import make_run
from tests.helpers.small_disk import read_only
from tests.helpers.tiny_models import write_config

from lorastudio.core.disk import FolderNotWritable, not_writable
from lorastudio.core.runtime.failures import classify


def lorastudio(capfd, monkeypatch, *args) -> tuple[int, str, str]:
    from lorastudio.core.cli import main
    from lorastudio.core.cli import output, train
    monkeypatch.setattr(train, "ProgressPrinter", lambda: output.ProgressPrinter(sys.stdout))
    monkeypatch.delenv("LORASTUDIO_FAULT", raising=False)
    code = main([str(a) for a in args])
    out, err = capfd.readouterr()
    print(f"\n{out}{err}")
    return code, out, err


def assert_named(code, out, err, folder, *words):
    assert code == 2, (out, err)
    assert "Errno" not in out + err and "Traceback" not in out + err
    assert str(folder) in err and "read-only file system" in err
    assert "hint:" in err and "remount that disk read-write" in err
    for word in words:
        assert word in err


def test_train_into_a_read_only_run_dir(tmp_path, tiny_llama, text_jsonl, capfd, monkeypatch, runs_home):
    cfg = write_config(tmp_path / "c.yaml", tiny_llama, text_jsonl)
    with read_only(tmp_path / "ro") as ro:
        code, out, err = lorastudio(capfd, monkeypatch, "train", cfg, "--run-dir", ro)     # the folder itself
        assert_named(code, out, err, ro, "the run folder", "--run-dir")
        code, out, err = lorastudio(capfd, monkeypatch, "train", cfg, "--run-dir", ro / "runs" / "new")
        assert_named(code, out, err, ro, "the folder that would hold the run folder", "--run-dir")
    assert not (tmp_path / "ro" / "runs").exists()


def test_train_with_a_read_only_data_directory(tmp_path, tiny_llama, text_jsonl, capfd, monkeypatch, runs_home):
    cfg = write_config(tmp_path / "c.yaml", tiny_llama, text_jsonl)
    with read_only(runs_home) as home:
        code, out, err = lorastudio(capfd, monkeypatch, "train", cfg)
        assert_named(code, out, err, home, f"the data directory {home} is on a read-only file system",
                     "LORASTUDIO_HOME")


def test_resume_a_read_only_run_folder(tmp_path, capfd, monkeypatch, runs_home):
    run = make_run(tmp_path / "runs", "crashed", "running", 60, checkpoints=(50,))
    with read_only(run):
        code, out, err = lorastudio(capfd, monkeypatch, "resume", run)
        assert_named(code, out, err, run, "the run folder", "copy it to a writable disk and resume the copy")


def test_export_into_a_read_only_folder(tmp_path, capfd, monkeypatch, runs_home):
    run = make_run(tmp_path / "runs", "done", "completed", 60, checkpoints=(50,))
    (run / "adapter").mkdir()
    (run / "adapter" / "adapter_config.json").write_text('{"r": 8}')
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"\0" * 1000)
    with read_only(tmp_path / "shelf") as ro:
        code, out, err = lorastudio(capfd, monkeypatch, "export", run, ro / "out")
        assert code == 2 and "Errno" not in err and "Traceback" not in out + err
        assert f"the output's folder {ro} is on a read-only file system" in err
        assert "choose an output path on a writable disk" in err


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes through chmod; the read-only mounts above test this as root")
def test_train_into_a_chmod_ed_run_dir(tmp_path, tiny_llama, text_jsonl, capfd, monkeypatch, runs_home):
    cfg = write_config(tmp_path / "c.yaml", tiny_llama, text_jsonl)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, out, err = lorastudio(capfd, monkeypatch, "train", cfg, "--run-dir", locked)
    finally:
        locked.chmod(0o700)
    assert code == 2 and "Errno" not in out + err
    assert f"the run folder {locked} cannot be written to: permission denied" in err
    assert f"chmod u+w {locked}" in err


def test_words_for_each_cause_and_inside_a_job(tmp_path):
    denied = not_writable(PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "x")),
                          tmp_path, "the run folder", "choose another")
    assert isinstance(denied, FolderNotWritable)
    assert denied.message == f"the run folder {tmp_path} cannot be written to: permission denied"
    assert denied.hint == f"choose another; or give yourself write permission on it (chmod u+w {tmp_path})"
    assert not_writable(OSError(errno.ENOENT, "gone"), tmp_path, "the run folder") is None    # not a refused write
    assert not_writable(ValueError("no"), tmp_path, "the run folder") is None
    kind, message, hint = classify(denied)          # a job that meets one: the journal's error event
    assert kind == "disk" and message == denied.message and hint == denied.hint
