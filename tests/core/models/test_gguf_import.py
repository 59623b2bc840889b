"""GGUF import: a tiny Llama written as GGUF (gguf-py's writer) comes back as a model folder.

Jobs run inline (the `inline_jobs` fixture): the import job's code and files, in this process."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers.gguf_tiny import write_tiny_gguf
from lorastudio.core import cli
from lorastudio.core.journal import read_events
from lorastudio.core.engine.gguf.import_gguf import check_gguf, convert
from lorastudio.core.models.gguf_cache import GgufError, cached_import
from lorastudio.core.plans.import_gguf import import_with_worker
from lorastudio.core.models.info import ModelError, read_model_info


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, tiny_llama):
    import gguf
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.Q8_0.gguf"
    q8 = gguf.GGMLQuantizationType.Q8_0
    expected = write_tiny_gguf(path, tiny_llama, quantize={"blk.0.ffn_up.weight": q8, "blk.1.attn_q.weight": q8})
    return path, expected


def test_import_gives_a_model_folder_matching_the_dequantized_source(tiny_gguf, tiny_llama, runs_home):
    from safetensors.numpy import load_file
    from transformers import AutoTokenizer
    path, expected = tiny_gguf
    phases = []
    folder = convert(path, lambda name, fraction, message: phases.append((name, fraction)))
    assert folder.parent == runs_home / "models"
    assert [n for n, _ in phases][0] == "checking" and phases[-1] == ("done", 1.0)
    fractions = [f for _, f in phases]
    assert fractions == sorted(fractions)
    tensors = load_file(str(folder / "model.safetensors"))
    assert set(tensors) == set(expected)
    for name, value in expected.items():         # F32 tensors exactly; Q8_0 ones as gguf-py dequantizes
        np.testing.assert_array_equal(tensors[name], value, err_msg=name)
    assert not np.array_equal(expected["model.layers.0.mlp.up_proj.weight"],
                              load_file(str(tiny_llama / "model.safetensors"))["model.layers.0.mlp.up_proj.weight"])
    record = json.loads((folder / "gguf_import.json").read_text())
    assert record["architecture"] == "llama" and record["types"] == {"F32": 19, "Q8_0": 2}
    assert (folder / "generation_config.json").is_file()
    info = read_model_info(str(path))                    # a .gguf path resolves to the cached folder
    assert info.path == folder and info.has_chat_template and info.model_type == "llama"
    text = "the cat sat on the mat {\"answer\": 3}"
    assert AutoTokenizer.from_pretrained(folder)(text)["input_ids"] == \
        AutoTokenizer.from_pretrained(tiny_llama)(text)["input_ids"]
    again = []
    assert convert(path, lambda *a: again.append(a)) == folder and again[0][0] == "cached"


def test_an_unimported_gguf_says_how_to_import_it(tiny_gguf, runs_home):
    with pytest.raises(ModelError, match="has not been imported yet") as err:
        read_model_info(str(tiny_gguf[0]))
    assert "lorastudio import-gguf" in err.value.hint


def test_the_job_journals_progress_and_a_second_import_is_a_cache_hit(tiny_gguf, runs_home, inline_jobs):
    events = []
    folder = import_with_worker(tiny_gguf[0], events.append)
    phases = [e for e in events if e["type"] == "phase"]
    assert len(phases) >= 4 and phases[-1]["fraction"] == 1.0
    assert [p["name"] for p in phases][0] == "checking" and phases[-1]["name"] == "done"
    assert events[-1]["type"] == "end" and events[-1]["status"] == "completed"
    assert events[-1]["output"] == str(folder)
    (job,) = (runs_home / "models" / ".imports").iterdir()
    assert job.name.endswith("_tiny-llama-q8-0") and (job / "job.yaml").is_file()
    assert cached_import(tiny_gguf[0]) == folder
    assert import_with_worker(tiny_gguf[0], events.append) == folder         # no worker this time
    assert sum(e["type"] == "end" for e in events) == 1


def test_training_from_a_gguf_imports_it_first(tiny_gguf, runs_home, tmp_path, text_jsonl, inline_jobs):
    from tests.helpers.tiny_models import write_config
    from lorastudio.core.config import RunConfig
    from lorastudio.core.runs.folders import prepare_run
    from lorastudio.core.runtime.launcher import launch
    config = RunConfig.load(write_config(tmp_path / "c.yaml", tiny_gguf[0], text_jsonl,
                                         training__max_steps=2, training__save_every=0))
    run_dir = prepare_run(config, tmp_path / "run")
    assert launch("train", run_dir).returncode() == 0
    events = read_events(run_dir / "events.jsonl")
    importing = [e for e in events if e["type"] == "phase" and e["name"] == "importing"]
    assert importing and importing[-1]["fraction"] == 1.0
    assert events[-1]["status"] == "completed" and (run_dir / "adapter" / "adapter_config.json").is_file()


# ---- errors, said plainly ------------------------------------------------------------------
def test_unsupported_architecture(tmp_path, tiny_llama):
    path = tmp_path / "odd.gguf"
    write_tiny_gguf(path, tiny_llama, architecture="rwkv6")
    with pytest.raises(GgufError, match="'rwkv6' model, an architecture transformers cannot read") as err:
        check_gguf(path)
    assert "llama" in err.value.hint


def test_unsupported_quantization_type(tmp_path, tiny_llama):
    import gguf
    path = tmp_path / "q81.gguf"
    write_tiny_gguf(path, tiny_llama, raw_types={"blk.0.attn_v.weight": gguf.GGMLQuantizationType.Q8_1})
    with pytest.raises(GgufError, match="blk.0.attn_v.weight as Q8_1, a quantization type that cannot"):
        check_gguf(path)


@pytest.mark.parametrize("keep", [0.3, 0.97])
def test_truncated_file(tmp_path, tiny_gguf, keep):
    data = tiny_gguf[0].read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(GgufError, match="truncated"):
        check_gguf(path)


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "notes.gguf"
    path.write_text("hello")
    with pytest.raises(GgufError, match="is not a GGUF file"):
        check_gguf(path)


def test_cli_import_reports_a_conversion_error(tmp_path, tiny_gguf, runs_home, capfd, inline_jobs):
    path = tmp_path / "cut.gguf"
    path.write_bytes(tiny_gguf[0].read_bytes()[:5000])
    assert cli.main(["import-gguf", str(path)]) == 2
    out, err = capfd.readouterr()
    assert "Importing cut.gguf into the model cache (once)" in out and "[  2%] Reading the header of cut.gguf" in out
    assert "truncated" in err and "download the file again" in err
    assert err.count("error: ") == 1                     # said once, not once per reader
    assert not any(p.name.startswith("cut") for p in (runs_home / "models").iterdir())
    (job,) = (runs_home / "models" / ".imports").iterdir()
    events = read_events(job / "events.jsonl")
    assert events[-2]["type"] == "error" and events[-2]["kind"] == "gguf" and events[-1]["status"] == "failed"


def test_the_cli_imports_a_gguf_once(tiny_gguf, runs_home, capfd, inline_jobs):
    assert cli.main(["import-gguf", str(tiny_gguf[0])]) == 0
    out = capfd.readouterr().out
    assert "Importing tiny-llama.Q8_0.gguf into the model cache (once)" in out and "[100%] Imported" in out
    assert out.splitlines()[-1] == f"Model folder: {cached_import(tiny_gguf[0])}"
    assert cli.main(["import-gguf", str(tiny_gguf[0])]) == 0
    assert "Importing" not in capfd.readouterr().out        # a cache hit starts no job
