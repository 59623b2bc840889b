"""`lorastudio rank` and `lorastudio resize` on a real run (a tiny Llama trained a few steps), the
jobs run in-process: the text and JSON answers, the resized folder, and every refusal in words."""
from __future__ import annotations

import json

import pytest

from lorastudio.core import cli
from lorastudio.core.journal import read_events


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_llama):
    from tests.helpers.tiny_models import train_tiny_run, write_text_jsonl
    root = tmp_path_factory.mktemp("rankcli")
    return train_tiny_run(root / "run", tiny_llama, write_text_jsonl(root / "train.jsonl"), quantization="none",
                          training__max_steps=4, training__lr=2e-2, training__save_every=2)


def test_rank_prints_tables_and_a_suggestion(run, inline_jobs, capsys):
    assert cli.main(["rank", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"Adapter: {run / 'adapter'}" in out and "4 modules, r=8, alpha=16" in out
    assert "q_proj" in out and "v_proj" in out and "by layer" in out
    assert "99 %" in out and ("would very likely do" in out or "whole rank" in out or "fits" in out)
    job = next((run / "rank").iterdir())
    assert [e["type"] for e in read_events(job / "events.jsonl")][-2:] == ["report", "end"]


def test_rank_json_names_modules_as_in_the_adapter_file(run, inline_jobs, capsys):
    assert cli.main(["rank", str(run), "--checkpoint", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["adapter"].endswith("step-000002")
    names = [m["name"] for m in report["modules"]]
    assert names == ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
                     "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"]
    for m in report["modules"]:
        assert m["singular_values"] == sorted(m["singular_values"], reverse=True) and len(m["singular_values"]) == 8
    assert report["summary"]["by_type"]["q_proj"]["modules"] == 2 and "0" in report["summary"]["by_layer"]
    assert 1 <= report["suggested_rank"] <= 8 and report["suggestion"]


def test_resize_writes_a_smaller_adapter_and_rank_reads_it(run, inline_jobs, capsys, tmp_path):
    out = tmp_path / "small"
    assert cli.main(["resize", str(run), str(out), "--rank", "2"]) == 0
    text = capsys.readouterr().out
    assert f"Saved a resized adapter to {out}" in text and "ranks summed 32 → 8" in text
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 2 and cfg["lora_alpha"] == 2 and not cfg["rank_pattern"]
    assert "Relative error" in (out / "README.md").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no hidden folder left behind"
    assert cli.main(["rank", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {len(m["singular_values"]) for m in report["modules"]} == {2}
    # an existing output is refused, then replaced with --overwrite
    assert cli.main(["resize", str(run), str(out), "--energy", "0.9"]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert cli.main(["resize", str(run), str(out), "--energy", "0.9", "--overwrite"]) == 0
    assert "smallest rank holding 90 %" in capsys.readouterr().out


@pytest.mark.parametrize("argv, words", [
    (["--rank", "9"], "--rank 9 is outside 1…8"),
    (["--rank", "0"], "--rank 0 is outside 1…8"),
    (["--energy", "1.5"], "--energy 1.5 is not a share"),
    (["--rank", "2", "--checkpoint", "3"], "has no checkpoint at step 3"),
])
def test_resize_refuses_bad_input_in_words(argv, words, run, inline_jobs, capsys, tmp_path):
    assert cli.main(["resize", str(run), str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and "hint:" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_resize_never_writes_into_the_run(run, inline_jobs, capsys):
    assert cli.main(["resize", str(run), str(run / "small"), "--rank", "2"]) == 2
    assert "inside or around the run folder" in capsys.readouterr().err


def test_rank_refuses_what_is_not_a_run_or_an_adapter(tmp_path, inline_jobs, capsys):
    assert cli.main(["rank", str(tmp_path)]) == 2
    assert "is not a run folder" in capsys.readouterr().err


def test_a_damaged_adapter_fails_in_words(run, tmp_path, inline_jobs, capsys):
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(run / "adapter", broken)
    (broken / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    assert cli.main(["rank", str(broken)]) == 1
    err = capsys.readouterr().err
    assert "adapter_model.safetensors: cannot be read" in err and "Traceback" not in err


def test_eval_takes_a_resized_adapter_folder(run, inline_jobs, capsys, tmp_path):
    from lorastudio.core.runs.heldout import read_eval
    full, small = tmp_path / "full", tmp_path / "small"
    assert cli.main(["resize", str(run), str(full), "--rank", "8"]) == 0      # r = 8: nothing is cut
    assert cli.main(["resize", str(run), str(small), "--rank", "1"]) == 0
    capsys.readouterr()
    results = {}
    for name, extra in (("run", []), ("full", ["--adapter", str(full)]), ("small", ["--adapter", str(small)])):
        assert cli.main(["eval", str(run), "--limit", "2", "--json", *extra]) == 0
        results[name] = json.loads(capsys.readouterr().out)
    assert results["full"]["adapter_path"] == str(full) and results["run"]["adapter_path"] == str(run / "adapter")
    assert results["full"]["adapter"]["loss"] == pytest.approx(results["run"]["adapter"]["loss"], rel=1e-4)
    assert results["small"]["adapter"]["loss"] != pytest.approx(results["run"]["adapter"]["loss"], rel=1e-4)
    assert results["small"]["base"]["loss"] == pytest.approx(results["run"]["base"]["loss"], rel=1e-6)
    assert read_eval(run)["adapter_path"] == str(run / "adapter"), "RUN/eval.json stays the run's own adapter's"
    assert cli.main(["eval", str(run), "--adapter", str(tmp_path)]) == 2
    assert "is not a PEFT adapter folder" in capsys.readouterr().err
