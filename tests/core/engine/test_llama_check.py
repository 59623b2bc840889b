"""The export's check in llama.cpp (core/engine/gguf/llama_check.py): what it compares, that a wrong
file is flagged in words, that it stops when asked, and how few evaluations it makes."""
from __future__ import annotations

import json

import pytest
import torch

from tests.helpers.tiny_families import make_family

from lorastudio.core.engine.gguf import llama_check

pytest.importorskip("xllamacpp")


def test_positions_are_spread_and_bounded():
    assert llama_check.positions(5) == [1, 2, 3, 4, 5]
    many = llama_check.positions(200)
    assert len(many) <= llama_check.MAX_POSITIONS and many[-1] == 200 and many == sorted(set(many))


def test_compare_counts_top1_top5_and_flags_in_words():
    logits = torch.zeros(3, 10)
    logits[:, 7] = 5.0
    reference = [{"logits": logits}]
    same = llama_check.PromptResult(positions=[1, 2, 3], top=[[(7, -0.03), (0, -5.0)]] * 3, answer="x")
    f = llama_check.compare(reference, [same], ["x"], "f16")
    assert f["top1_agree"] == 1.0 and f["greedy_agree"] == 1 and not f["flagged"] and f["positions"] == 3
    wrong = llama_check.PromptResult(positions=[1, 2, 3], top=[[(3, -0.5), (7, -1.2)], [(7, -0.03)], None],
                                     answer="y")
    f = llama_check.compare(reference, [wrong], ["x"], "f16")
    assert f["positions"] == 2 and f["top1_agree"] == 0.5 and f["greedy_agree"] == 0 and f["flagged"]
    assert f["clear_positions"] == 2 and f["clear_top1_agree"] == 0.5
    words = llama_check.differences_in_words(f)
    assert "changes a clear next-token pick of transformers' at 50% of 2 positions" in words
    assert "likeliest token's log-probability differs by 1.14" in words


def test_near_ties_may_swap_without_a_flag():
    """A position where transformers' top two are within rounding of each other (a prompt's own
    tokens, mostly) may swap in a quantized file: reported, not flagged."""
    logits = torch.zeros(2, 10)
    logits[:, 7], logits[:, 3] = 5.0, 4.9                    # a near-tie between 7 and 3
    reference = [{"logits": logits}]
    lp = torch.log_softmax(logits[0], -1)
    swapped = llama_check.PromptResult(positions=[1, 2], top=[[(3, float(lp[3]) + 0.05), (7, float(lp[7]) - 0.05)]] * 2,
                                       answer="x")
    f = llama_check.compare(reference, [swapped], ["x"], "q8_0")
    assert f["top1_agree"] == 0.0 and f["clear_positions"] == 0 and not f["flagged"], f


def test_a_file_of_another_model_is_flagged(tmp_path):
    """The check sees a wrong file: llama.cpp runs a model with other weights than the reference."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from lorastudio.core.engine.fidelity import encode_prompts, run_prompts
    from lorastudio.core.engine.gguf.export_gguf import write_model
    from lorastudio.core.models.gguf_vocab import read_vocab
    right, other = make_family(tmp_path / "a", "Qwen3", seed=0), make_family(tmp_path / "b", "Qwen3", seed=1)
    config = json.loads((other / "config.json").read_text())
    gguf = tmp_path / "other.gguf"
    write_model(gguf, AutoModelForCausalLM.from_pretrained(other).state_dict(), config,
                read_vocab(other, int(config["vocab_size"]), (other,), None, config), "x", "f32")
    tok = AutoTokenizer.from_pretrained(right)
    texts = ["the cat sat on the mat", "Numbers: 0 1 2 3"]
    prompts = encode_prompts(tok, texts)
    ref = run_prompts(AutoModelForCausalLM.from_pretrained(right).eval(), tok, prompts, "cpu")
    seen = []
    results = llama_check.run_llama(gguf, prompts, texts, progress=lambda i, n: seen.append((i, n)))
    f = llama_check.compare(ref, results, [llama_check.reference_answer(tok, r["greedy"]) for r in ref], "f32")
    assert f["flagged"] and f["top1_agree"] < 0.5 and llama_check.differences_in_words(f)
    assert seen == [(0, 2), (1, 2)]


def test_progress_can_stop_the_check(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from lorastudio.core.engine.gguf.export_gguf import write_model
    from lorastudio.core.models.gguf_vocab import read_vocab
    folder = make_family(tmp_path / "a", "Qwen3")
    config = json.loads((folder / "config.json").read_text())
    gguf = tmp_path / "m.gguf"
    write_model(gguf, AutoModelForCausalLM.from_pretrained(folder).state_dict(), config,
                read_vocab(folder, int(config["vocab_size"]), (folder,), None, config), "x", "f16")
    ids = AutoTokenizer.from_pretrained(folder)("the cat sat")["input_ids"]

    class Stop(Exception):
        pass

    def progress(i, n):
        if i == 1:
            raise Stop()
    with pytest.raises(Stop):
        llama_check.run_llama(gguf, [ids, ids, ids], None, progress=progress)
