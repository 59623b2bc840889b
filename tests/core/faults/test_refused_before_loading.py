"""Refuse before loading what can be known before loading: each bad model or config is answered by
the preflight (core/preflight.check_config, which the CLI, the window and the worker run) in
words naming the file or key and what to do — in a second, with no weights loaded."""
import json
import re
import shutil
from pathlib import Path

import pytest

from tests.helpers.tiny_models import write_config

from lorastudio.core import cli
from lorastudio.core.config import ConfigError, RunConfig
from lorastudio.core.preflight import check_config


@pytest.fixture
def model(tmp_path, tiny_llama) -> Path:
    """A private copy of the tiny Llama to break."""
    return Path(shutil.copytree(tiny_llama, tmp_path / "model"))


def refusal(tmp_path, model, text_jsonl, **overrides) -> ConfigError:
    config = RunConfig.load(write_config(tmp_path / "c.yaml", model, text_jsonl, **overrides))
    with pytest.raises(ConfigError) as refused:
        check_config(config)
    print(f"\n{refused.value}")
    return refused.value


def test_seq_len_beyond_the_model_s_context(tmp_path, model, text_jsonl):
    exc = refusal(tmp_path, model, text_jsonl, training__seq_len=512)
    assert exc.key == "training.seq_len" and "longer than the model's context (256 positions" in exc.allowed
    assert "use seq_len ≤ 256" in exc.allowed
    check_config(RunConfig.load(write_config(tmp_path / "ok.yaml", model, text_jsonl, training__seq_len=256)))


def test_a_rank_larger_than_a_target_s_dimensions(tmp_path, model, text_jsonl):
    exc = refusal(tmp_path, model, text_jsonl, lora__r=128, lora__targets=["q_proj", "down_proj"])
    assert exc.key == "lora.r" and "larger than the smallest adapted layer" in exc.allowed
    assert re.search(r"\(model\.layers\.0\.\w+\.(q|down)_proj: (64|128) in × 64 out\)", exc.allowed)
    assert "use r ≤ 64" in exc.allowed
    check_config(RunConfig.load(write_config(tmp_path / "ok.yaml", model, text_jsonl, lora__r=32)))


def test_a_truncated_safetensors_shard(tmp_path, model, text_jsonl):
    weights = model / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as fh:
        fh.truncate(size - 1000)            # the header is whole; the data stops short
    exc = refusal(tmp_path, model, text_jsonl)
    assert exc.key == "model" and f"weight file {weights} is cut off" in exc.allowed
    assert f"describes {size:,} bytes, the file has {size - 1000:,} (1,000 missing)" in exc.allowed
    assert "download the model again" in exc.allowed


def test_missing_tokenizer_files_are_named(tmp_path, model, text_jsonl):
    (model / "tokenizer.json").unlink()
    exc = refusal(tmp_path, model, text_jsonl)
    assert exc.key == "model" and f"{model} has no tokenizer files" in exc.allowed
    assert "expected tokenizer.json or tokenizer.model or vocab.json + merges.txt or vocab.txt" in exc.allowed


def test_a_model_that_needs_remote_code_names_our_key(tmp_path, model, text_jsonl):
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="tinycustom", architectures=["TinyCustomForCausalLM"],
                  auto_map={"AutoConfig": "configuration_tiny.TinyConfig",
                            "AutoModelForCausalLM": "modeling_tiny.TinyCustomForCausalLM"})
    (model / "config.json").write_text(json.dumps(config))
    exc = refusal(tmp_path, model, text_jsonl)
    assert exc.key == "trust_remote_code"
    assert "ships its own Python code (configuration_tiny.py, modeling_tiny.py" in exc.allowed
    assert "Set trust_remote_code: true in the config only if you trust its source" in exc.allowed
    exc = refusal(tmp_path, model, text_jsonl, trust_remote_code=True)           # trusted, but the code is missing
    assert exc.key == "model" and "auto_map names configuration_tiny.py, modeling_tiny.py" in exc.allowed


def test_a_built_in_model_with_an_auto_map_is_not_refused(tmp_path, model, text_jsonl):
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_llama.LlamaForCausalLM"}   # transformers knows llama
    (model / "config.json").write_text(json.dumps(config))
    check_config(RunConfig.load(write_config(tmp_path / "c.yaml", model, text_jsonl)))


def test_a_config_file_that_is_not_utf8(tmp_path, tiny_llama, text_jsonl, capfd):
    good = write_config(tmp_path / "c.yaml", tiny_llama, text_jsonl).read_bytes()
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(good + "name: café\n".encode("latin-1"))
    code = cli.main(["train", str(bad)])
    out, err = capfd.readouterr()
    print(f"\n{err}")
    offset = len(good) + len("name: caf")
    line = good.count(b"\n") + 1
    assert code == 2 and "Traceback" not in out + err
    assert (f"it is not UTF-8 text: byte 0xe9 at offset {offset} (line {line}, column 10) cannot be read; "
            "save the file as UTF-8") in err and str(bad) in err


def _custom_tokenizer(model: Path, tokenizer_class: str = "TinyCustomTokenizer") -> None:
    """A tokenizer that ships its own code: tokenizer_config.json's auto_map names its class."""
    tok_config = model / "tokenizer_config.json"
    data = json.loads(tok_config.read_text()) if tok_config.is_file() else {}
    data.update(tokenizer_class=tokenizer_class,
                auto_map={"AutoTokenizer": [f"tokenization_tiny.{tokenizer_class}", None]})
    tok_config.write_text(json.dumps(data))
    (model / "tokenization_tiny.py").write_text("raise RuntimeError('this code must not run')\n")


def test_a_tokenizer_with_its_own_code_names_our_key(tmp_path, model, text_jsonl, capfd):
    """Issue 27 item 8: not transformers' raw "pass trust_remote_code=True" from the loader."""
    _custom_tokenizer(model)
    exc = refusal(tmp_path, model, text_jsonl)
    assert exc.key == "trust_remote_code"
    assert f"the tokenizer in {model} ships its own Python code (tokenization_tiny.py" in exc.allowed
    assert "tokenizer_config.json" in exc.allowed
    assert "Set trust_remote_code: true in the config only if you trust its source" in exc.allowed
    check_config(RunConfig.load(write_config(tmp_path / "t.yaml", model, text_jsonl, trust_remote_code=True)))
    # the command line: exit 2, our key named, no traceback, nothing started
    code = cli.main(["train", str(write_config(tmp_path / "c.yaml", model, text_jsonl)),
                     "--run-dir", str(tmp_path / "run")])
    out, err = capfd.readouterr()
    assert code == 2 and "Traceback" not in out + err and "trust_remote_code" in err
    assert not (tmp_path / "run").exists()
    # the inspector (a job, run in this process here): the same words, no transformers prompt
    from lorastudio.core.runtime.launcher import inline_jobs
    with inline_jobs():
        code = cli.main(["inspect", str(text_jsonl), "--model", str(model)])
    out, err = capfd.readouterr()
    assert code == 2 and "ships its own Python code" in err and "trust_remote_code: true" in err
    assert "Traceback" not in out + err


def test_a_built_in_tokenizer_with_an_auto_map_is_not_refused(tmp_path, model, text_jsonl):
    _custom_tokenizer(model, tokenizer_class="PreTrainedTokenizerFast")       # transformers knows this class
    check_config(RunConfig.load(write_config(tmp_path / "c.yaml", model, text_jsonl)))
