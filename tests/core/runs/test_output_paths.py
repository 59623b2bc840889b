"""Issue 27, class 1: one output-path rule for every command that writes. Each command (merge,
export, export-gguf, resize, tensorboard through the real CLI; serve's GGUF cache through its plan)
× each protected kind (a model folder, a run folder, an adapter folder, the data directory's own
folders, a folder containing one of them): refused in words, the protected folder byte for byte
as it was. `--overwrite` replaces only what LoRA Studio wrote (the marker) and says so."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from lorastudio.core import cli
from lorastudio.core.runs.output_paths import MARKER, OutputPathError, check_output, marked
from tests.helpers.runs_fixtures import make_run
from tests.helpers.tiny_models import write_config


@pytest.fixture(scope="module")
def home_and_run(tmp_path_factory, tiny_llama):
    root = tmp_path_factory.mktemp("outputs")
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"the cat {i}", "completion": "sat"}) + "\n" for i in range(16)))
    config = write_config(root / "c.yaml", tiny_llama, data, quantization="none", lora__r=4,
                          training__max_steps=2, training__save_every=0)
    from lorastudio.core.config import RunConfig
    from lorastudio.core.runs.folders import prepare_run
    from tests.helpers.training import train
    prepare_run(RunConfig.load(config), root / "run")
    train(config, root / "run")
    return root, root / "run"


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def protected(home_and_run, tmp_path, tiny_llama, monkeypatch):
    """kind -> the protected folder (fresh copies each test) and the data directory."""
    _root, run = home_and_run
    home = tmp_path / "home"
    monkeypatch.setenv("LORASTUDIO_HOME", str(home))
    (home / "runs").mkdir(parents=True)
    (home / "models").mkdir()
    model = shutil.copytree(tiny_llama, tmp_path / "model")
    other_run = make_run(tmp_path / "others", "other-run", "completed", 3)
    adapter = shutil.copytree(run / "adapter", tmp_path / "adapter")
    holder = tmp_path / "holder"
    shutil.copytree(tiny_llama, holder / "deep" / "model")
    return {"model": model, "run": other_run, "adapter": adapter, "data-runs": home / "runs",
            "data-home": home, "containing": holder}


KINDS = ["model", "run", "adapter", "data-runs", "data-home", "containing"]


def targets(command: str, folder: Path, kind: str) -> list[Path]:
    """The output paths a command is asked to write: over the folder, and into it."""
    if command == "export-gguf":
        return [folder / "out.gguf"] + ([] if kind == "containing" else [folder / "sub" / "out.gguf"])
    return [folder] + ([] if kind in ("containing", "data-home") else [folder / "new-output"])


def command_line(command: str, run: Path, out: Path) -> list[str]:
    return {"merge": ["merge", run, out, "--overwrite", "--device", "cpu"],
            "export": ["export", run, out, "--overwrite"],
            "resize": ["resize", run, out, "--rank", "2", "--overwrite"],
            "export-gguf": ["export-gguf", run, out, "--overwrite", "--adapter-only"],
            "tensorboard": ["tensorboard", run, "--out", out]}[command]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", ["merge", "export", "resize", "export-gguf", "tensorboard"])
def test_every_command_refuses_every_protected_kind(command, kind, protected, home_and_run, capfd):
    _root, run = home_and_run
    folder = protected[kind]
    if command == "tensorboard" and kind in ("data-home", "containing"):
        pytest.skip("tensorboard writes DIR/<run name>/, never over DIR itself")
    if command == "export-gguf" and kind == "containing":
        pytest.skip("a .gguf is one file: it cannot be written over a folder (refused as 'is a folder')")
    before = snapshot(folder)
    for out in targets(command, folder, kind):
        code = cli.main([str(a) for a in command_line(command, run, out)])
        _, err = capfd.readouterr()
        print(f"\n{command} → {kind}: {err.strip()}")
        assert code == 2, err
        assert "Traceback" not in err and "error" in err
        assert str(folder.resolve()) in err or str(out.resolve()) in err
    assert snapshot(folder) == before


@pytest.mark.parametrize("kind", ["model", "adapter"])
def test_serve_cache_refuses_a_protected_cache_root(kind, protected, home_and_run):
    from lorastudio.core.plans.serve import ServeError, plan_models
    _root, run = home_and_run
    before = snapshot(protected[kind])
    with pytest.raises(ServeError, match=rf"is inside {protected[kind].resolve()}, which is an? (model|adapter) folder"):
        plan_models([run], cache_root=protected[kind])
    assert snapshot(protected[kind]) == before


def test_overwrite_replaces_only_what_lorastudio_wrote_and_says_so(protected, home_and_run, tmp_path, capfd):
    _root, run = home_and_run
    mine = tmp_path / "mine"
    assert cli.main(["export", str(run), str(mine)]) == 0
    assert marked(mine)["what"] == "an exported adapter"
    assert check_output(mine, "an exported adapter", overwrite=True) == \
        f"replacing {mine.resolve()} (an exported adapter), written by LoRA Studio"
    capfd.readouterr()
    assert cli.main(["export", str(run), str(mine), "--overwrite"]) == 0
    assert f"replacing {mine.resolve()} (an exported adapter), written by LoRA Studio" in capfd.readouterr().out
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("my notes")
    capfd.readouterr()
    assert cli.main(["export", str(run), str(theirs), "--overwrite"]) == 2
    err = capfd.readouterr().err
    assert f"no {MARKER} in it" in err and "--overwrite replaces only a folder LoRA Studio wrote" in err
    assert (theirs / "notes.txt").read_text() == "my notes"


def test_resize_over_the_runs_base_model_is_refused(home_and_run, tiny_llama, capfd):
    """The issue's example: `resize RUN BASE --overwrite` replaced the base model with an adapter."""
    _root, run = home_and_run
    before = snapshot(tiny_llama)
    assert cli.main(["resize", str(run), str(tiny_llama), "--rank", "2", "--overwrite"]) == 2
    assert "is a model folder" in capfd.readouterr().err and snapshot(tiny_llama) == before


def test_the_default_places_inside_a_run_stay_allowed(home_and_run, tmp_path):
    from lorastudio.core.tensorboard import export_run
    _root, run = home_and_run
    path = export_run(run)
    assert path.parent == run / "tensorboard" and path.is_file()
    assert export_run(run) == path                       # again: its own place, rewritten
    with pytest.raises(OutputPathError, match="is a run folder"):
        check_output(run, "anything", overwrite=True)


@pytest.mark.parametrize("kind", ["model", "adapter", "containing", "data-runs"])
def test_train_never_puts_a_run_into_a_protected_folder(kind, protected, tmp_path, tiny_llama, text_jsonl, capfd):
    folder = protected[kind]
    before = snapshot(folder)
    config = write_config(tmp_path / "c.yaml", tiny_llama, text_jsonl)
    code = cli.main(["train", str(config), "--run-dir", str(folder)])
    err = capfd.readouterr()
    print(f"\ntrain --run-dir {kind}: {err.out + err.err}")
    assert code == 2 and "Traceback" not in err.err and snapshot(folder) == before
