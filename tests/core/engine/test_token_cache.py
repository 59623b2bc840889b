"""The token cache: built once, hit by the next run and by every resume, rebuilt when the source,
the tokenizer or an option changes, and when the entry is torn or corrupt — never trusted."""
import json

import pytest

from lorastudio.core.config import DataSection
from lorastudio.core.data.formats import Example
from lorastudio.core.data.chat_masks import encode, fit_length
from lorastudio.core.engine.batches import encode_examples, load_examples, prepare_data
from lorastudio.core.engine.batching import token_cache
from lorastudio.core.engine.model_loading import load_tokenizer
from tests.helpers.training import CHAT, jsonl, train


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LORASTUDIO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "datasets"


def rows(n=10):
    return [{"text": f"the cat sat on the mat {i} " * (1 + i % 3)} for i in range(n)]


def prepare(path, tok, seq_len=64, logs=None, progress=None, **kw):
    return prepare_data(DataSection(path=str(path), validation_split=0.2, **kw), tok, seq_len, 2, 0,
                        log=(logs.append if logs is not None else lambda m: None),
                        progress=progress or (lambda f, m: None))


def test_second_run_hits_and_reads_the_same_tokens(tmp_path, tiny_llama, cache):
    tok = load_tokenizer(tiny_llama, False)
    path = jsonl(tmp_path / "d.jsonl", rows())
    seen = []
    first = prepare(path, tok, progress=lambda f, m: seen.append((f, m)))
    assert not first.table.cache_hit and seen[-1][0] == 1.0
    second = prepare(path, tok)
    assert second.table.cache_hit and second.summary()["cache_hit"] is True
    assert len(list(cache.iterdir())) == 1
    a = [first.train_set.items[i] for i in range(len(first.train_set.items))]
    b = [second.train_set.items[i] for i in range(len(second.train_set.items))]
    assert [x.input_ids for x in a] == [x.input_ids for x in b] and [x.labels for x in a] == [x.labels for x in b]
    # and the very tokens the in-memory path gives
    mem = encode_examples(load_examples(path, DataSection(path=str(path))).examples, tok,
                          DataSection(path=str(path)), 64)
    assert first.train_set.tokens + first.validation.tokens == mem.tokens


@pytest.mark.parametrize("change", ["file", "seq_len", "train_on", "tokenizer"])
def test_a_change_of_source_or_option_misses(tmp_path, tiny_llama, tiny_chat_llama, cache, change):
    tok = load_tokenizer(tiny_llama, False)
    path = jsonl(tmp_path / "d.jsonl", [CHAT] * 4)
    prepare(path, tok)
    if change == "file":
        jsonl(path, [CHAT] * 5)
    again = prepare(path, load_tokenizer(tiny_chat_llama, False) if change == "tokenizer" else tok,
                    seq_len=48 if change == "seq_len" else 64,
                    **({"train_on": "all"} if change == "train_on" else {}))
    assert not again.table.cache_hit and len(list(cache.iterdir())) == 2


@pytest.mark.parametrize("damage", ["flip", "truncate", "meta", "version"])
def test_a_corrupt_entry_is_rebuilt_and_said(tmp_path, tiny_llama, cache, damage):
    tok = load_tokenizer(tiny_llama, False)
    path = jsonl(tmp_path / "d.jsonl", rows())
    first = prepare(path, tok)
    table = first.table.path / "table.arrow"
    expected = [first.train_set.items[i].input_ids for i in range(3)]
    del first
    if damage == "flip":
        data = bytearray(table.read_bytes())
        data[len(data) // 2] ^= 0xFF
        table.write_bytes(bytes(data))
    elif damage == "truncate":
        table.write_bytes(table.read_bytes()[:100])
    elif damage == "meta":
        (table.parent / "meta.json").write_text("{not json")
    else:
        meta = json.loads((table.parent / "meta.json").read_text())
        (table.parent / "meta.json").write_text(json.dumps(dict(meta, version=0)))
    logs = []
    again = prepare(path, tok, logs=logs)
    assert not again.table.cache_hit and logs and "rebuilding" in logs[0]
    assert [again.train_set.items[i].input_ids for i in range(3)] == expected
    assert prepare(path, tok).table.cache_hit


def test_resume_reads_the_cache(make_config, tmp_path, cache):
    config = make_config(training__save_every=0, data__validation_split=0.0)
    train(config, tmp_path / "part", stop_after=3)
    _, status, events = train(config, tmp_path / "part", resume_from=tmp_path / "part" / "checkpoints" / "step-000003")
    data = [e for e in events if e["type"] == "data"]
    assert status == "completed" and [d["cache_hit"] for d in data] == [False, True]


def test_a_huge_row_is_cut_before_tokenizing_with_the_same_tokens(tiny_llama, tiny_chat_llama):
    """Memory follows seq_len: a 190 KB row is cut to a character budget first, and the kept tokens
    equal those of encoding it whole."""
    tok = load_tokenizer(tiny_chat_llama, False)
    text = "the cat sat on the mat and looked at the door " * 4_000
    for ex in (Example("line 1", text=text),
               Example("line 1", messages=[{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}]),
               Example("line 1", messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": text}])):
        for too_long in ("truncate", "drop"):
            status, bounded = token_cache.encode_bounded(ex, tok, "completions", 64, too_long)
            whole = fit_length(encode(ex, tok, "completions"), 64, too_long)
            if whole is None:
                assert status == token_cache.TOO_LONG
            else:
                assert (bounded.input_ids, bounded.labels) == (whole.input_ids, whole.labels)
    calls = []

    class Spy:                        # the real tokenizer, recording the length of what it is given
        def __getattr__(self, name):
            return getattr(tok, name)

        def __call__(self, text, **kw):
            calls.append(len(text))
            return tok(text, **kw)
    token_cache.encode_bounded(Example("line 1", text=text), Spy(), "all", 64, "truncate")
    assert calls and max(calls) <= 64 * token_cache.CHARS_PER_TOKEN * 4 < len(text)


def test_the_cli_shows_tokenizing_progress_as_a_bar():
    import io
    from lorastudio.core.cli.output import ProgressPrinter
    out = io.StringIO()
    printer = ProgressPrinter(out)
    printer.event({"type": "phase", "name": "data", "message": "Tokenizing the data"})
    for f in (0.1, 0.2, 1.0):
        printer.event({"type": "phase", "name": "data", "fraction": f, "message": f"Tokenizing: {int(f * 100)} rows"})
    lines = out.getvalue().splitlines()
    assert lines[0] == "· Tokenizing the data"
    assert lines[1].startswith("[##---") and "10%  Tokenizing: 10 rows" in lines[1]
    assert lines[-1].startswith("[" + "#" * 24 + "] 100%") and len(lines) == 3      # no line a second
