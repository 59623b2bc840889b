"""`lorastudio train` end to end: a run folder, a progress display, the worker's exit status.

The commands run in this process and their training jobs too (`inline_jobs`); one test starts the
real entry point (`python -m lorastudio.app.launcher`), which imports nothing heavy."""
import subprocess
import sys

from lorastudio.core.journal import read_events


def lorastudio(capfd, monkeypatch, *args) -> tuple[int, str, str]:
    """`lorastudio ARGS` in this process: (exit status, stdout, stderr)."""
    from lorastudio.app.launcher import main
    from lorastudio.core.cli import output, train
    # ProgressPrinter's default stream is the sys.stdout of when it was imported; print to this test's.
    monkeypatch.setattr(train, "ProgressPrinter", lambda: output.ProgressPrinter(sys.stdout))
    capfd.readouterr()
    code = main(list(map(str, args)))
    out, err = capfd.readouterr()
    return code, out, err


def test_train_writes_a_run_whose_loss_decreases(make_config, runs_home, tiny_llama, capfd, monkeypatch,
                                                 inline_jobs):
    config = make_config(quantization="8bit", lora__targets="all-linear", training__lr=1e-2)
    code, out, err = lorastudio(capfd, monkeypatch, "train", config)
    assert code == 0, out + err
    assert "Completed. Adapter:" in out and "10/10" in out
    (run_dir,) = list((runs_home / "runs").iterdir())
    losses = [e["loss"] for e in read_events(run_dir / "events.jsonl") if e["type"] == "step"]
    assert losses[-1] < losses[0]
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), run_dir / "adapter")


def test_relative_paths_resolve_against_the_config_folder(tmp_path, tiny_llama, text_jsonl, capfd, monkeypatch,
                                                          inline_jobs):
    import shutil
    (tmp_path / "proj").mkdir()
    shutil.copy(text_jsonl, tmp_path / "proj" / "data.jsonl")
    (tmp_path / "proj" / "c.yaml").write_text(
        f"model: {tiny_llama}\nquantization: none\ndevice: cpu\n"
        "data: {path: data.jsonl}\ntraining: {max_steps: 2, seq_len: 32}\n")
    code, out, err = lorastudio(capfd, monkeypatch, "train", tmp_path / "proj" / "c.yaml", "--run-dir", tmp_path / "r")
    assert code == 0, out + err
    assert (tmp_path / "r" / "adapter" / "adapter_model.safetensors").is_file()


def test_bad_config_exits_2_before_starting(make_config, tmp_path, capfd, monkeypatch, inline_jobs):
    code, _out, err = lorastudio(capfd, monkeypatch, "train", make_config(lora__r=0), "--run-dir", tmp_path / "r")
    assert code == 2
    assert "lora.r: 0 is not allowed" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_failed_run_exits_non_zero(make_config, tmp_path, capfd, monkeypatch, inline_jobs):
    bad = tmp_path / "bad.jsonl"             # the first rows are fine (the preflight reads those): line 40 is not
    bad.write_text("".join('{"text": "fine row %d"}\n' % i for i in range(39)) + '{"txt": "wrong field"}\n')
    code, out, _err = lorastudio(capfd, monkeypatch, "train", make_config(data__path=str(bad)),
                                 "--run-dir", tmp_path / "r")
    assert code == 1
    assert "error (data)" in out and "line 40" in out


def test_the_entry_point_answers_version_in_a_real_process():
    result = subprocess.run([sys.executable, "-m", "lorastudio.app.launcher", "--version"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("lorastudio ")
