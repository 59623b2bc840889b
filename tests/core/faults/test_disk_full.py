"""A full disk, named as such wherever it happens — on a real small file system (a tmpfs; see
tests/helpers/small_disk.py), so every failure here is the real one: OSError 28, torch.save's
RuntimeError, safetensors' SafetensorError. Before each checkpoint, adapter, export and merge the
free space is checked against the write's size; a write that fails anyway is put in words; earlier
checkpoints stay whole; a resume on a disk that is still full is refused before training."""
from pathlib import Path

import pytest
import torch

from tests.helpers.small_disk import fill, small_disk
from tests.helpers.tiny_models import write_config
from tests.helpers.training import train

from lorastudio.core import cli
from lorastudio.core.config import RunConfig
from lorastudio.core.disk import DiskError
from lorastudio.core.engine import checkpoint_state
from lorastudio.core.jobs import merge as merge_job
from lorastudio.core.journal import read_events
from lorastudio.core.runs import export as export_module
from lorastudio.core.plans import merge as merge_plan
from lorastudio.core.runs.checkpoints import list_checkpoint_steps
from lorastudio.core.runs.export import ExportError, export_adapter
from lorastudio.core.runs.folders import prepare_run
from lorastudio.core.plans.merge import MergeError, MergeRequest, plan_merge as prepare_job
from lorastudio.core.runtime.failures import classify


def run_cli(capfd, *args):
    code = cli.main([str(a) for a in args])
    out, err = capfd.readouterr()
    return code, out, err


def config_for(tmp_path, tiny_llama, text_jsonl, **kw) -> Path:
    return write_config(tmp_path / "c.yaml", tiny_llama, text_jsonl, **{
        "quantization": "none", "training__max_steps": 2, "training__save_every": 1, **kw})


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).rglob(".*") if p.name != ".lock")


def test_every_library_s_full_disk_error_is_classified_as_a_full_disk(tmp_path):
    from safetensors.torch import save_file
    with small_disk(tmp_path / "disk", "64k") as disk:
        fill(disk)
        failures = []
        with pytest.raises(OSError) as plain:
            with open(disk / "a.txt", "wb") as fh:
                fh.write(b"x" * 100_000)
        failures.append(plain.value)
        with pytest.raises(RuntimeError) as torch_save:
            torch.save({"w": torch.zeros(100_000)}, disk / "state.pt")
        failures.append(torch_save.value)
        with pytest.raises(Exception) as safetensors_save:
            save_file({"w": torch.zeros(100_000)}, str(disk / "w.safetensors"))
        failures.append(safetensors_save.value)
    assert type(safetensors_save.value).__name__ == "SafetensorError"
    for exc in failures:
        kind, message, hint = classify(exc)
        print(f"\n{type(exc).__name__}: {str(exc)[:90]!r}\n  → {kind}: {message}\n    hint: {hint}")
        assert kind == "disk" and message.startswith("the disk is full") and "free some space" in hint


def test_a_fresh_run_on_a_too_small_disk_is_refused_before_loading(tmp_path, tiny_llama, text_jsonl, capfd,
                                                                    inline_jobs):
    config = config_for(tmp_path, tiny_llama, text_jsonl)
    with small_disk(tmp_path / "disk", "128k") as disk:
        code, out, err = run_cli(capfd, "train", config, "--run-dir", disk / "run")
        events = read_events(disk / "run" / "events.jsonl")
    (error,) = [e for e in events if e["type"] == "error"]
    print(f"\n{error['message']}\n  hint: {error['hint']}")
    assert code == 1 and error["kind"] == "disk"
    assert error["message"].startswith("not enough disk space for the run's next checkpoint: it needs about")
    assert "free" in error["hint"] and not any(e["type"] == "phase" and e["name"] == "loading" for e in events)


@pytest.fixture
def run_on_small_disk(tmp_path, tiny_llama, text_jsonl):
    """A run trained to step 2 (checkpoints 1 and 2, the adapter) in a folder on a 2 MB disk."""
    config = config_for(tmp_path, tiny_llama, text_jsonl, training__max_steps=4)
    with small_disk(tmp_path / "disk", "2m") as disk:
        run = disk / "run"
        prepare_run(RunConfig.load(config), run)
        trainer, status, _ = train(config, run, stop_after=2)
        assert status == "stopped" and list_checkpoint_steps(run) == [1, 2]
        yield trainer, run


def test_a_checkpoint_that_does_not_fit_is_refused_and_one_that_fails_is_named(run_on_small_disk, monkeypatch):
    trainer, run = run_on_small_disk
    before = (run / "checkpoints" / "step-000002" / "trainer_state.safetensors").read_bytes()
    fill(run, leave=40_000)
    with pytest.raises(DiskError) as refused:
        trainer.save_checkpoint()
    print(f"\nrefused: {refused.value}")
    assert "not enough disk space for checkpoint step-000002: it needs about" in refused.value.message
    assert "earlier checkpoints are intact" in refused.value.hint
    # Past the check (space taken by someone else meanwhile): the real write fails, and is named.
    monkeypatch.setattr(checkpoint_state, "check_room", lambda *a, **k: None)
    with pytest.raises(DiskError) as failed:
        trainer.save_checkpoint()
    print(f"failed: {failed.value}")
    assert failed.value.message.startswith(f"could not write checkpoint step-000002 to {run / 'checkpoints'}: "
                                           "the disk is full (")
    assert type(failed.value.__cause__).__name__ in ("RuntimeError", "SafetensorError", "OSError")
    assert (run / "checkpoints" / "step-000002" / "trainer_state.safetensors").read_bytes() == before   # intact
    assert list_checkpoint_steps(run) == [1, 2] and hidden(run) == []
    with pytest.raises(DiskError, match="could not write the adapter|not enough disk space for the adapter"):
        monkeypatch.setattr("lorastudio.core.engine.trainer.check_room", lambda *a, **k: None)
        trainer.save_adapter()
    assert (run / "adapter" / "adapter_model.safetensors").is_file() and hidden(run) == []


def test_resume_on_a_disk_that_is_still_full_is_refused_before_training(run_on_small_disk, capfd):
    _trainer, run = run_on_small_disk
    fill(run, leave=20_000)
    lines = (run / "events.jsonl").read_text()
    code, out, err = run_cli(capfd, "resume", run)
    print(f"\n{err}")
    assert code == 2 and "not enough disk space for the run's next checkpoint" in err
    assert "Traceback" not in out + err and (run / "events.jsonl").read_text() == lines


def test_export_to_a_full_disk_names_the_cause_and_leaves_nothing(run_on_small_disk, tmp_path, capfd, monkeypatch):
    _trainer, run = run_on_small_disk
    with small_disk(tmp_path / "out_disk", "64k") as disk:
        code, out, err = run_cli(capfd, "export", run, disk / "exported")
        print(f"\n{err}")
        assert code == 2 and "not enough disk space for the exported adapter: it needs about" in err
        assert "Traceback" not in out + err
        monkeypatch.setattr(export_module, "check_room", lambda *a, **k: None)
        fill(disk, leave=8_000)
        with pytest.raises(ExportError) as failed:
            export_adapter(run, disk / "exported")
        print(failed.value)
        assert failed.value.message.startswith(f"could not write the exported adapter to {disk}: the disk is full")
        with pytest.raises(ExportError, match="the disk is full"):
            export_adapter(run, disk / "exported.zip", as_zip=True)
        assert sorted(p.name for p in disk.iterdir()) == ["filler.bin"]


def test_merge_refuses_a_small_disk_without_suggesting_fp32_and_names_a_failed_write(
        run_on_small_disk, tmp_path, capfd, monkeypatch, inline_jobs):
    _trainer, run = run_on_small_disk
    args = lambda dtype: MergeRequest(run, disk / "merged", dtype=dtype, device="cpu")  # noqa: E731
    with small_disk(tmp_path / "out_disk", "256k") as disk:
        for dtype in ("bf16", "fp32"):
            with pytest.raises(MergeError) as refused:
                prepare_job(args(dtype))
            print(f"\n{dtype}: {refused.value}")
            assert "not enough disk space for the merged model" in refused.value.message
            assert ("half the room of fp32" in refused.value.hint) == (dtype == "fp32")
        monkeypatch.setattr(merge_plan, "check_disk", lambda *a, **k: None)
        monkeypatch.setattr(merge_job, "check_room", lambda *a, **k: None)
        code, out, err = run_cli(capfd, "merge", run, disk / "merged", "--dtype", "fp32", "--device", "cpu")
        print(out)
        assert code == 1 and "error (disk): could not write the merged model to" in out and "the disk is full" in out
        hint = out.split("error (disk)")[1].split("\n")[1]
        assert "bf16 or fp16 (--dtype) needs half the room of fp32" in hint and "free" in hint
        assert sorted(p.name for p in disk.iterdir()) == []                       # no OUT, no hidden folder
