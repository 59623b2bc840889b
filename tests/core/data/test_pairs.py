"""Preference pairs: spellings and shapes recognised, loss only on answers, a located error for each
bad input, prompts that fill seq_len dropped and counted."""
import json

import pytest

from lorastudio.core.config import ConfigError, DataSection, RunConfig
from lorastudio.core.data.chat_masks import IGNORE_INDEX
from lorastudio.core.data.files import DataError
from lorastudio.core.data.pairs import encode_pairs, load_pairs, looks_like_pairs, to_pair
from lorastudio.core.data.files import Row
from lorastudio.core.engine.model_loading import load_tokenizer
from tests.helpers.training import jsonl

SYSTEM = {"role": "system", "content": "Be brief."}
USER = {"role": "user", "content": "the cat sat"}


def cfg(path, **kw) -> DataSection:
    return DataSection(path=str(path), **kw)


def pair(value: dict, source: str = "d.jsonl"):
    return to_pair(Row("line 3", value), source)


# ---- shapes -------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [
    {"prompt": "the cat sat", "chosen": "on the mat", "rejected": "at the door"},
    {"question": "the cat sat", "preferred": "on the mat", "dispreferred": "at the door"},
    {"prompt": [USER], "chosen": [{"role": "assistant", "content": "on the mat"}],
     "rejected": [{"role": "assistant", "content": "at the door"}]},
    # full conversations on each side: the shared start is the prompt
    {"chosen": [USER, {"role": "assistant", "content": "on the mat"}],
     "rejected": [USER, {"role": "assistant", "content": "at the door"}]},
    # a side that repeats the prompt keeps only what follows it
    {"prompt": "the cat sat", "chosen": [USER, {"role": "assistant", "content": "on the mat"}],
     "rejected": [USER, {"role": "assistant", "content": "at the door"}]},
    # ShareGPT-style messages
    {"prompt": [{"from": "human", "value": "the cat sat"}], "chosen": [{"from": "gpt", "value": "on the mat"}],
     "rejected": [{"from": "gpt", "value": "at the door"}]},
])
def test_every_shape_becomes_the_same_pair(value):
    p = pair(value)
    assert p.prompt == [USER]
    assert p.chosen == [{"role": "assistant", "content": "on the mat"}]
    assert p.rejected == [{"role": "assistant", "content": "at the door"}]


def test_system_field_and_system_message_in_the_prompt():
    p = pair({"system": "Be brief.", "prompt": "the cat sat", "chosen": "a", "rejected": "b"})
    assert p.prompt == [SYSTEM, USER]
    p = pair({"prompt": [SYSTEM, USER], "chosen": "a", "rejected": "b"})
    assert p.prompt == [SYSTEM, USER]


def test_detection_reason_and_column_mapping(tmp_path):
    rows = [{"q": "the cat sat", "good": "on the mat", "worse": "at the door"}] * 3
    path = jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError, match=r"line 1: not a preference pair — no rejected field \(fields: good, q, worse\)"):
        load_pairs(path, cfg(path))
    loaded = load_pairs(path, cfg(path, columns={"prompt": "q", "rejected": "worse"}))
    assert loaded.format == "pairs" and len(loaded.pairs) == 3
    assert "'prompt', 'good', 'rejected'" in loaded.reason and "rejected <- worse" in loaded.reason
    assert loaded.pairs[0].rejected[0]["content"] == "at the door"
    with pytest.raises(DataError, match=r"line 1: column 'nope' \(mapped to chosen\) is missing"):
        load_pairs(path, cfg(path, columns={"chosen": "nope"}))


def test_the_config_accepts_pair_columns_and_the_methods():
    assert DataSection(path="d.jsonl", columns={"chosen": "good", "rejected": "bad"}).columns["chosen"] == "good"
    config = RunConfig.from_dict({"model": "m", "training": {"method": "orpo"}})
    assert (config.training.method, config.training.beta, config.training.orpo_lambda) == ("orpo", 0.1, 0.1)
    for key, value, words in (("method", "ppo", "allowed: sft, dpo, orpo"), ("beta", 0, "a number > 0"),
                              ("orpo_lambda", -1.0, "a number > 0")):
        with pytest.raises(ConfigError, match=words) as info:
            RunConfig.from_dict({"model": "m", "training": {key: value}})
        assert info.value.key == f"training.{key}"


def test_looks_like_pairs():
    assert looks_like_pairs([Row("line 1", {"prompt": "p", "chosen": "a", "rejected": "b"})])
    assert not looks_like_pairs([Row("line 1", {"prompt": "p", "completion": "a"})])


# ---- bad input: one located error each ---------------------------------------------------------
@pytest.mark.parametrize("value,words", [
    ({"prompt": "p", "chosen": "a"}, r"line 1: not a preference pair — no rejected field"),
    ({"prompt": "p", "chosen": "", "rejected": "b"}, r"line 1: the chosen side is missing or empty"),
    ({"chosen": "a", "rejected": "b"}, r"line 1: the prompt side is missing or empty"),
    ({"prompt": "p", "chosen": "same", "rejected": "same"}, r"line 1: chosen and rejected are identical"),
    ({"prompt": "p", "chosen": 7, "rejected": "b"},
     r"line 1: field 'chosen' must be text or a list of chat messages, found int"),
    ({"prompt": "p", "chosen": "a", "rejected": {"text": "b"}},
     r"line 1: field 'rejected' must be text or a list of chat messages, found dict"),
    ({"prompt": "p", "chosen": ["a"], "rejected": "b"}, r"line 1: chosen\[1\] is not a chat message"),
    ({"prompt": "p", "chosen": [{"role": "robot", "content": "a"}], "rejected": "b"},
     r"line 1: chosen\[1\] has unknown role 'robot'"),
    ({"prompt": "p", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"},
     r"line 1: the chosen side has no answer after the prompt"),
])
def test_each_bad_pair_is_named_by_line_and_side(tmp_path, value, words):
    path = jsonl(tmp_path / "d.jsonl", [value])
    with pytest.raises(DataError, match=words) as info:
        load_pairs(path, cfg(path))
    assert str(path) in info.value.message and info.value.hint


def test_bad_rows_skipped_and_counted(tmp_path):
    good = {"prompt": "p", "chosen": "a", "rejected": "b"}
    path = jsonl(tmp_path / "d.jsonl", [good, {"prompt": "p", "chosen": "x", "rejected": "x"}, "{broken", good])
    loaded = load_pairs(path, cfg(path, on_bad_rows="skip"))
    assert len(loaded.pairs) == 2
    assert [(b.where, b.problem.split(":")[0]) for b in loaded.bad_rows] == [
        ("line 3", "not valid JSON (Expecting property name enclosed in double quotes at column 2)"),
        ("line 2", "chosen and rejected are identical, so there is nothing to prefer")]


def test_a_supervised_format_setting_is_refused(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    with pytest.raises(DataError, match="data.format: 'alpaca' is a supervised format"):
        load_pairs(path, cfg(path, format="alpaca"))


# ---- tokens ------------------------------------------------------------------------------------
def test_only_the_answers_are_trained(tmp_path, tiny_chat_llama):
    tok = load_tokenizer(tiny_chat_llama, False)
    value = {"prompt": [SYSTEM, USER, {"role": "assistant", "content": "earlier answer"},
                        {"role": "user", "content": "and then"}],
             "chosen": "looked at the door", "rejected": "sat on the mat"}
    (encoded,) = encode_pairs([pair(value)], tok, 256, "truncate").items
    for enc, answer in ((encoded.chosen, "looked at the door"), (encoded.rejected, "sat on the mat")):
        trained = tok.decode([t for t, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE_INDEX])
        assert trained == answer + "<|im_end|>\n"            # the answer and its end-of-turn, not the earlier one
        assert "earlier answer" in tok.decode(enc.input_ids)
    # both sides share the prompt's tokens exactly
    first = next(i for i, lab in enumerate(encoded.chosen.labels) if lab != IGNORE_INDEX)
    assert encoded.chosen.input_ids[:first] == encoded.rejected.input_ids[:first]


def test_prompts_that_fill_seq_len_are_dropped_and_counted(tiny_chat_llama):
    tok = load_tokenizer(tiny_chat_llama, False)
    short = pair({"prompt": "the cat sat", "chosen": "on the mat", "rejected": "at the door"})
    long = pair({"prompt": "the cat sat on the mat " * 20, "chosen": "on the mat", "rejected": "at the door"})
    out = encode_pairs([short, long, short], tok, 32, "truncate")
    assert len(out.items) == 2 and out.dropped_prompt_too_long == 1
    assert any("1 pairs were dropped: their prompt fills seq_len=32" in n for n in out.notes)
    mid = pair({"prompt": "the cat sat", "chosen": "on the mat " * 20, "rejected": "at the door"})
    (kept,) = encode_pairs([mid], tok, 32, "truncate").items
    assert kept.truncated and len(kept.chosen.input_ids) == 32
    dropped = encode_pairs([mid, short], tok, 32, "drop")
    assert len(dropped.items) == 1 and dropped.dropped_too_long == 1


def test_the_sample_preference_data_reads_cleanly():
    from lorastudio.core.models.demo import resource
    for name, n in (("preference_train.jsonl", 320), ("preference_heldout.jsonl", 48)):
        path = resource("data", name)
        loaded = load_pairs(path, cfg(path))
        assert len(loaded.pairs) == n and not loaded.bad_rows
        first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
        assert json.loads(first["chosen"]).keys() == json.loads(first["rejected"]).keys()
