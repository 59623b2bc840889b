"""The torch-free preview (core/data/preview.py): first rows of every file type, the detected format
and its reason."""
import json

from lorastudio.core.data.formats import guess_column
from lorastudio.core.data.preview import detect, read_preview, short_message


def test_jsonl_preview_reads_only_the_first_rows_and_detects_text(text_jsonl):
    p = read_preview(text_jsonl, limit=5)
    assert p.ok and p.columns == ["text"] and len(p.rows) == 5
    assert p.cells()[0][0] == "the cat sat on the mat and looked at the door"
    d = detect(p)
    assert d.format == "text" and d.reason == "raw text: a 'text' field in all of the first 5 rows"


def test_csv_tsv_json_and_txt_are_previewed(tmp_path):
    (tmp_path / "a.csv").write_text("question,answer\nwhat?,that\n")
    (tmp_path / "a.tsv").write_text("instruction\toutput\ndo it\tdone\n")
    (tmp_path / "a.json").write_text(json.dumps({"data": [{"prompt": "p", "completion": "c"}]}))
    (tmp_path / "a.txt").write_text("one paragraph\n\nanother one\n")
    found = {name: detect(read_preview(tmp_path / name)).format for name in ("a.csv", "a.tsv", "a.json", "a.txt")}
    assert found == {"a.csv": "prompt_completion", "a.tsv": "alpaca", "a.json": "prompt_completion", "a.txt": "text"}


def test_chat_turns_are_shown_readably(tmp_path):
    f = tmp_path / "chat.jsonl"
    f.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}))
    p = read_preview(f)
    assert p.cells() == [["user: hi · assistant: yo"]]
    assert detect(p).reason == "chat messages: a 'messages' list in all of the first 1 rows"


def test_a_bad_line_is_located_and_skipped_for_the_table(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "a"}\n{"text": \n{"text": "c"}\n')
    p = read_preview(f)
    assert p.ok and [r.where for r in p.rows] == ["line 1", "line 3"]
    assert [b.where for b in p.bad_rows] == ["line 2"]
    message, hint = p.strict_error
    assert short_message(message, p.path).startswith("d.jsonl, line 2: not valid JSON")
    assert "on_bad_rows" in hint


def test_unknown_format_needs_a_mapping_and_a_mapping_fixes_it(tmp_path):
    f = tmp_path / "qa.csv"
    f.write_text("q,reply\nwhat?,that\n")
    p = read_preview(f)
    d = detect(p)
    assert d.unknown and "unknown format (fields: q, reply)" in d.error[0]
    mapped = detect(p, "prompt_completion", {"prompt": "q", "completion": "reply"})
    assert mapped.error is None and mapped.format == "prompt_completion"
    assert mapped.reason.endswith("(columns mapped: prompt ← q, completion ← reply)")
    assert guess_column("prompt", ["Question", "Answer"]) == "Question"
    assert guess_column("completion", ["Question", "Answer"]) == "Answer"


def test_a_forced_format_checks_the_previewed_rows(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text('{"text": "a"}\n')
    d = detect(read_preview(f), "prompt_completion")
    assert d.error and "field 'prompt' is missing" in d.error[0]


def test_missing_empty_folder_and_unsupported_files_are_explained(tmp_path):
    assert "does not exist" in read_preview(tmp_path / "nope.jsonl").error[0]
    assert "folder" in read_preview(tmp_path).error[0]
    (tmp_path / "empty.jsonl").write_text("")
    assert "empty" in read_preview(tmp_path / "empty.jsonl").error[0]
    (tmp_path / "x.docx").write_text("x")
    message, hint = read_preview(tmp_path / "x.docx").error
    assert "unsupported file type '.docx'" in message and ".parquet" in hint
