"""The dataset preview: first rows, the example count, and readable errors."""
from lorastudio.app.dataset_preview import read_preview


def test_jsonl_preview_counts_every_example_but_reads_few_rows(text_jsonl):
    p = read_preview(text_jsonl, max_rows=5)
    assert p.ok and p.format == "jsonl"
    assert p.columns == ["text"] and len(p.rows) == 5
    assert p.count == 48
    assert p.rows[0][0] == "the cat sat on the mat and looked at the door"


def test_bad_lines_are_skipped_and_columns_are_the_union(tmp_path):
    f = tmp_path / "mixed.jsonl"
    f.write_text('{"prompt": "a", "completion": "b"}\nnot json\n{"prompt": "c", "extra": 1}')
    p = read_preview(f)
    assert p.columns == ["prompt", "completion", "extra"]
    assert p.skipped == 1 and p.rows[1] == ["c", "", "1"]
    assert p.count == 3                     # lines, including the bad one; no final newline


def test_missing_file_folder_and_non_json_are_explained(tmp_path):
    assert "does not exist" in read_preview(tmp_path / "nope.jsonl").error
    assert "folder" in read_preview(tmp_path).error
    junk = tmp_path / "junk.jsonl"
    junk.write_text("hello\nworld\n")
    assert "No JSON lines" in read_preview(junk).error
