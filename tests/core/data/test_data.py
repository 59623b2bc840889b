"""Every file type and format, loss masks token by token, and a located message for each bad input."""
import csv
import json

import pytest

from lorastudio.core.config import DataSection
from lorastudio.core.engine.batches import encode_examples, load_examples, prepare_data
from lorastudio.core.data.files import DataError, Row
from lorastudio.core.data.formats import (COLUMN_ROLES, FORMAT_ROLES, FORMAT_TITLES, FORMATS, OPTIONAL_ROLES,
                                            apply_columns, detect_format, guess_column, to_example)
from lorastudio.core.engine.model_loading import load_tokenizer
from tests.helpers.training import CHAT, jsonl


def cfg(path, **kw) -> DataSection:
    return DataSection(path=str(path), **kw)



# ---- files ---------------------------------------------------------------------------------
def test_every_file_type(tmp_path):
    rows = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(3)]
    jsonl(tmp_path / "d.jsonl", rows)
    (tmp_path / "arr.json").write_text(json.dumps(rows))
    (tmp_path / "obj.json").write_text(json.dumps({"version": 2, "data": rows}))
    for name, delim in (("d.csv", ","), ("d.tsv", "\t")):
        with open(tmp_path / name, "w", newline="") as fh:
            w = csv.writer(fh, delimiter=delim)
            w.writerow(["prompt", "completion"])
            w.writerows([[r["prompt"], r["completion"]] for r in rows])
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    for name in ("d.jsonl", "arr.json", "obj.json", "d.csv", "d.tsv", "d.parquet"):
        loaded = load_examples(tmp_path / name, cfg(tmp_path / name))
        assert loaded.format == "prompt_completion", name
        assert [e.messages[1]["content"] for e in loaded.examples] == ["a0", "a1", "a2"], name
    assert load_examples(tmp_path / "d.csv", cfg(tmp_path / "d.csv")).examples[1].where == "line 3"
    assert load_examples(tmp_path / "arr.json", cfg(tmp_path / "arr.json")).examples[1].where == "element 2"


def test_plain_text_blocks_or_whole_file(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("First paragraph\nstill first.\n\n\nSecond one.\n\nThird.\n", encoding="utf-8")
    loaded = load_examples(path, cfg(path))
    assert loaded.format == "text" and [e.text for e in loaded.examples] == [
        "First paragraph\nstill first.", "Second one.", "Third."]
    assert [e.where for e in loaded.examples] == ["line 1", "line 5", "line 7"]
    assert len(load_examples(path, cfg(path, text_blocks="file")).examples) == 1


# ---- formats -------------------------------------------------------------------------------
@pytest.mark.parametrize("row,fmt,reason", [
    ({"text": "hello"}, "text", "a 'text' field"),
    ({"prompt": "p", "completion": "c"}, "prompt_completion", "'prompt' and 'completion'"),
    ({"input": "p", "output": "c"}, "prompt_completion", "'input' and 'output'"),
    ({"question": "p", "answer": "c"}, "prompt_completion", "'question' and 'answer'"),
    ({"instruction": "i", "input": "x", "output": "o"}, "alpaca", "'instruction' and 'output'"),
    (CHAT, "messages", "a 'messages' list"),
    ({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}, "sharegpt",
     "a 'conversations' list"),
])
def test_detection_with_reason(tmp_path, row, fmt, reason):
    loaded = load_examples(jsonl(tmp_path / "d.jsonl", [row, row]), cfg(tmp_path / "d.jsonl"))
    assert loaded.format == fmt and reason in loaded.reason and "first 2 rows" in loaded.reason


def test_alpaca_and_sharegpt_become_chat(tmp_path):
    alpaca = load_examples(jsonl(tmp_path / "a.jsonl", [{"instruction": "Translate", "input": "chat", "output": "cat"},
                                                        {"instruction": "Say hi", "input": "", "output": "hi"}]),
                           cfg(tmp_path / "a.jsonl")).examples
    assert alpaca[0].messages == [{"role": "user", "content": "Translate\n\nchat"}, {"role": "assistant", "content": "cat"}]
    assert alpaca[1].messages[0]["content"] == "Say hi"
    share = load_examples(jsonl(tmp_path / "s.jsonl", [{"conversations": [
        {"from": "system", "value": "s"}, {"from": "human", "value": "u"}, {"from": "gpt", "value": "a"}]}]),
        cfg(tmp_path / "s.jsonl")).examples
    assert [m["role"] for m in share[0].messages] == ["system", "user", "assistant"]


def test_column_mapping(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", [{"q": "why", "reply": "because", "id": 1}])
    loaded = load_examples(path, cfg(path, columns={"prompt": "q", "completion": "reply"}))
    assert loaded.format == "prompt_completion" and "prompt <- q" in loaded.reason
    assert loaded.examples[0].messages[1]["content"] == "because"
    with pytest.raises(DataError, match=r"line 1: column 'answer' \(mapped to completion\) is missing"):
        load_examples(path, cfg(path, columns={"prompt": "q", "completion": "answer"}))


def test_each_formats_roles_are_what_a_column_mapping_needs():
    """core/data/formats.py knows the formats once: the roles a mapping names turn into that format."""
    values = {"text": "a cat", "prompt": "the cat", "completion": "sat", "instruction": "continue",
              "input": "the cat", "output": "sat", "messages": CHAT["messages"],
              "conversations": [{"from": "human", "value": "the cat"}, {"from": "gpt", "value": "sat"}]}
    assert set(FORMAT_ROLES) == set(FORMATS) == set(FORMAT_TITLES) and set(COLUMN_ROLES) == set(values)
    for fmt, roles in FORMAT_ROLES.items():
        theirs = {f"my {role}": values[role] for role in roles}
        mapped = apply_columns(theirs, {role: f"my {role}" for role in roles}, "line 1", "d.csv")
        assert detect_format([Row("line 1", mapped)], "d.csv")[0] == fmt
        assert to_example(Row("line 1", mapped), fmt, "d.csv").where == "line 1"
        optional = {role: f"my {role}" for role in roles if role not in OPTIONAL_ROLES}
        assert detect_format([Row("line 1", apply_columns(theirs, optional, "line 1", "d.csv"))], "d.csv")[0] == fmt
    assert guess_column("completion", ["Question", "Reply"]) == "Reply"


# ---- masks ---------------------------------------------------------------------------------
def trained_text(tok, enc) -> str:
    return tok.decode([i for i, l in zip(enc.input_ids, enc.labels) if l != -100])


def test_chat_mask_token_by_token_with_the_models_template(tmp_path, tiny_chat_llama):
    tok = load_tokenizer(tiny_chat_llama, False)
    path = jsonl(tmp_path / "c.jsonl", [CHAT])
    enc = encode_examples(load_examples(path, cfg(path)).examples, tok, cfg(path), 512)
    (item,) = enc.items
    assert enc.notes == []                                          # the model's own template
    assert item.input_ids == tok.apply_chat_template(CHAT["messages"], tokenize=True, return_dict=True)["input_ids"]
    assert trained_text(tok, item) == "on the mat<|im_end|>\nlooked at the door<|im_end|>\n"
    # token by token: everything before the first assistant answer is masked
    first = item.labels.index(next(l for l in item.labels if l != -100))
    assert tok.decode(item.input_ids[:first]).endswith("<|im_start|>assistant\n")
    assert "Be brief" not in trained_text(tok, item) and "the cat sat" not in trained_text(tok, item)


def test_fallback_template_is_used_and_said(tmp_path, tiny_llama):
    tok = load_tokenizer(tiny_llama, False)
    path = jsonl(tmp_path / "c.jsonl", [CHAT])
    enc = encode_examples(load_examples(path, cfg(path)).examples, tok, cfg(path), 512)
    assert enc.notes and "no chat template" in enc.notes[0]
    assert trained_text(tok, enc.items[0]) == "on the mat</s>\nlooked at the door</s>\n"
    assert tok.decode(enc.items[0].input_ids).startswith("<|system|>\nBe brief.\n<|user|>\n")


def test_train_on_all_and_raw_text(tmp_path, tiny_chat_llama):
    tok = load_tokenizer(tiny_chat_llama, False)
    path = jsonl(tmp_path / "c.jsonl", [CHAT])
    item = encode_examples(load_examples(path, cfg(path)).examples, tok, cfg(path, train_on="all"), 512).items[0]
    assert item.labels == item.input_ids
    text = jsonl(tmp_path / "t.jsonl", [{"text": "the cat sat"}])
    raw = encode_examples(load_examples(text, cfg(text)).examples, tok, cfg(text), 512).items[0]
    assert raw.labels == raw.input_ids and raw.input_ids[-1] == tok.eos_token_id


def test_truncate_drop_and_no_target_counts(tmp_path, tiny_chat_llama):
    tok = load_tokenizer(tiny_chat_llama, False)
    long_prompt = {"prompt": "the cat sat on the mat " * 20, "completion": "yes"}
    short = {"prompt": "hi", "completion": "the cat sat"}
    path = jsonl(tmp_path / "d.jsonl", [long_prompt, short, short])
    examples = load_examples(path, cfg(path)).examples
    truncated = encode_examples(examples, tok, cfg(path), 40)
    # truncating the long one cuts its completion off: nothing left to train, so it is dropped
    assert (truncated.truncated, truncated.dropped_no_target, len(truncated.items)) == (0, 1, 2)
    dropped = encode_examples(examples, tok, cfg(path, too_long="drop"), 40)
    assert (dropped.dropped_too_long, len(dropped.items)) == (1, 2)
    text = jsonl(tmp_path / "t.jsonl", [{"text": "the cat sat on the mat " * 20}])
    t = encode_examples(load_examples(text, cfg(text)).examples, tok, cfg(text), 40)
    assert t.truncated == 1 and len(t.items[0].input_ids) == 40


def test_a_dataset_with_nothing_to_train_is_refused(tmp_path, tiny_chat_llama):
    tok = load_tokenizer(tiny_chat_llama, False)
    path = jsonl(tmp_path / "d.jsonl", [{"prompt": "the cat sat on the mat " * 20, "completion": "yes"}] * 3)
    with pytest.raises(DataError, match=r"no example has a token to train on \(3 had none left after masking"):
        prepare_data(cfg(path, validation_split=0.0), tok, 40, 2, 0)


def test_validation_split_and_separate_file(tmp_path, tiny_llama):
    tok = load_tokenizer(tiny_llama, False)
    path = jsonl(tmp_path / "d.jsonl", [{"text": f"the cat {i}"} for i in range(20)])
    split = prepare_data(cfg(path, validation_split=0.25), tok, 64, 2, 0)
    assert (split.examples, split.validation_examples) == (15, 5)
    val = jsonl(tmp_path / "v.jsonl", [{"text": "held out"}] * 3)
    separate = prepare_data(cfg(path, validation_path=str(val)), tok, 64, 2, 0)
    assert (separate.examples, separate.validation_examples) == (20, 3)


# ---- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize("name,content,expected", [
    ("d.jsonl", '{"text": "ok"}\n{"text": "ok"\n', r"d.jsonl, line 2: not valid JSON"),
    ("d.jsonl", '{"prompt": "p", "completion": "c"}\n{"prompt": "p"}\n', r"mixed formats — line 1 is prompt / completion but line 2 is unrecognised"),
    ("d.jsonl", '{"instruction": "p", "output": "c"}\n{"instruction": "p", "output": 3}\n', r"d.jsonl, line 2: field 'output' must be text"),
    ("d.jsonl", "", r"d.jsonl: the file is empty"),
    ("d.csv", "prompt,completion\na,b\nc,d,e\n", r"d.csv, line 3: has 3 fields but the header has 2"),
    ("d.jsonl", '{"foo": 1}\n', r"d.jsonl, line 1: unknown format \(fields: foo\)"),
    ("d.jsonl", '{"text": "a"}\n{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}\n',
     r"mixed formats — line 1 is raw text but line 2 is chat messages"),
    ("d.jsonl", json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "bot", "content": "y"}]}) + "\n",
     r"d.jsonl, line 1: messages\[2\] has unknown role 'bot'"),
    ("d.jsonl", json.dumps({"messages": [{"role": "user", "content": "x"}]}) + "\n", r"line 1: the conversation has no assistant turn"),
    ("d.json", '[{"text": "a"}, {"text": ]', r"d.json, line 1: not valid JSON"),
    ("d.xlsx", "x", r"unsupported file type '.xlsx'"),
])
def test_each_bad_input_is_located(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=expected) as err:
        load_examples(path, cfg(path))
    assert err.value.hint


def test_non_utf8_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"d.jsonl, line 2: not UTF-8 text") as err:
        load_examples(path, cfg(path))
    assert "UTF-8" in err.value.hint


def test_skip_policy_reports_how_many_and_which(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n{broken\n{"text": "b"}\n{"text": 5}\n', encoding="utf-8")
    loaded = load_examples(path, cfg(path, on_bad_rows="skip"))
    assert [e.text for e in loaded.examples] == ["a", "b"]
    assert [(b.where, b.problem.split(" (")[0]) for b in loaded.bad_rows] == [
        ("line 2", "not valid JSON"), ("line 4", "field 'text' must be text, found int")]


# ---- a byte-order mark (issue 27) --------------------------------------------------------------
@pytest.mark.parametrize("name", ["d.jsonl", "arr.json", "d.csv", "d.tsv", "d.txt"])
def test_a_utf8_byte_order_mark_is_accepted(tmp_path, name):
    rows = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(3)]
    if name.endswith(".jsonl"):
        body = "".join(json.dumps(r) + "\n" for r in rows)
    elif name.endswith(".json"):
        body = json.dumps(rows)
    elif name.endswith(".txt"):
        body = "First block.\n\nSecond block.\n"
    else:
        d = "\t" if name.endswith(".tsv") else ","
        body = f"prompt{d}completion\n" + "".join(f"{r['prompt']}{d}{r['completion']}\n" for r in rows)
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))       # what Notepad and Excel write
    loaded = load_examples(path, cfg(path))
    if name.endswith(".txt"):
        assert [e.text for e in loaded.examples] == ["First block.", "Second block."]
    else:
        assert loaded.format == "prompt_completion" and not loaded.bad_rows, name
        assert [e.messages[1]["content"] for e in loaded.examples] == ["a0", "a1", "a2"], name
        assert loaded.examples[0].messages[0]["content"] == "q0"
