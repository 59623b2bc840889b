"""What `datasets` wrote — save_to_disk folders (one split, or a DatasetDict) and builds in its cache —
built here offline with the real library: the jobs read it through `datasets` (load_from_disk,
Dataset.from_file), the window's preview through pyarrow without importing `datasets`, both
naming rows alike; every located error, and a stable token-cache key."""
import re
import subprocess
import sys

import pytest

from lorastudio.core.data.files import DataError
from lorastudio.core.data.preview import read_preview
from lorastudio.core.data.sources import BUILD, SAVED, content_hash, estimate_rows, resolve
from lorastudio.core.engine.batches import load_examples
from lorastudio.core.config import DataSection
from tests.helpers.hf_caches import datasets_build, empty_hf_home, hub_dataset, saved_files

datasets = pytest.importorskip("datasets")

ROWS = [{"prompt": f"question {i}", "completion": f"answer {i}"} for i in range(6)]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    return empty_hf_home(tmp_path, monkeypatch)


@pytest.fixture
def opened(monkeypatch):
    """The folders and files the jobs' reader handed to `datasets`."""
    calls = []
    load_from_disk, from_file = datasets.load_from_disk, datasets.Dataset.from_file
    monkeypatch.setattr(datasets, "load_from_disk", lambda path, **kw: calls.append(path) or load_from_disk(path, **kw))
    monkeypatch.setattr(datasets.Dataset, "from_file",
                        staticmethod(lambda path, *a, **kw: calls.append(path) or from_file(path, *a, **kw)))
    return calls


def saved(folder, rows=ROWS, shards=1):
    datasets.Dataset.from_list(rows).save_to_disk(str(folder), num_shards=shards)
    return folder


def saved_dict(folder, splits):
    datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()}).save_to_disk(str(folder))
    return folder


def examples(spec):
    return load_examples(spec, DataSection(path=str(spec))).examples


def answers(spec):
    return [e.messages[-1]["content"] for e in examples(spec)]


# ---- reading ---------------------------------------------------------------------------------
def test_a_save_to_disk_folder_is_read_by_datasets_and_previewed_alike(tmp_path, opened):
    folder = saved(tmp_path / "saved", shards=2)
    source = resolve(str(folder))
    assert source.kind == SAVED and [f.name for f in source.files] == ["data-00000-of-00002.arrow",
                                                                       "data-00001-of-00002.arrow"]
    assert answers(folder) == [r["completion"] for r in ROWS]
    assert opened == [str(folder)]                                   # the jobs: datasets.load_from_disk
    assert [e.where for e in examples(folder)][3:5] == ["row 4", "row 5"]     # numbered over the split
    preview = read_preview(str(folder))                              # the window: pyarrow
    assert preview.ok and [(r.where, r.value) for r in preview.rows] == [(f"row {i + 1}", r) for i, r in
                                                                         enumerate(ROWS)]
    assert estimate_rows(source) == len(ROWS)


def test_a_saved_dataset_dict_reads_its_train_split_and_hf_names_any_split(tmp_path, home, opened):
    folder = saved_dict(tmp_path / "dict", {"train": ROWS[:4], "test": ROWS[4:]})
    assert answers(folder) == ["answer 0", "answer 1", "answer 2", "answer 3"]
    assert opened == [str(folder / "train")]
    hub_dataset(home / "hub", "acme/saved", saved_files(folder))      # a repository holding a saved DatasetDict
    assert answers("hf:acme/saved:test") == ["answer 4", "answer 5"]
    assert read_preview("hf:acme/saved:test").rows[1].value == ROWS[5]


def test_a_saved_format_still_gives_every_column_as_plain_values(tmp_path):
    folder = tmp_path / "numpy"
    datasets.Dataset.from_list(ROWS).with_format("numpy", columns=["prompt"]).save_to_disk(str(folder))
    assert answers(folder) == [r["completion"] for r in ROWS]
    assert read_preview(str(folder)).columns == ["prompt", "completion"]


def test_a_build_in_the_datasets_cache_is_read_by_datasets(tmp_path, home, opened):
    build = datasets_build(home / "datasets", "acme/chat", {"train": ROWS[:5], "test": ROWS[5:]}, tmp_path / "work")
    source = resolve("hf:acme/chat")
    assert source.kind == BUILD and source.files == [build / "chat-train.arrow"]
    assert answers("hf:acme/chat") == [r["completion"] for r in ROWS[:5]]
    assert opened == [str(build / "chat-train.arrow")]
    assert answers("hf:acme/chat:test") == ["answer 5"]
    assert read_preview("hf:acme/chat").rows[0].where == examples("hf:acme/chat")[0].where == "row 1"


def test_the_window_previews_saved_data_without_importing_datasets(tmp_path):
    folder = saved_dict(tmp_path / "dict", {"train": ROWS})
    code = ("import sys; from lorastudio.core.data.preview import read_preview\n"
            f"p = read_preview({str(folder)!r}); assert p.ok and len(p.rows) == {len(ROWS)}, p.error\n"
            "print(sorted(m for m in ('datasets', 'pandas', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---- located errors --------------------------------------------------------------------------
def test_a_bad_split_names_the_saved_splits(tmp_path, home):
    folder = saved_dict(tmp_path / "dict", {"validation": ROWS[:2], "test": ROWS[2:]})
    with pytest.raises(DataError, match=r"no split 'train' in this saved DatasetDict \(found: validation, test\)"):
        resolve(str(folder))
    hub_dataset(home / "hub", "acme/saved", saved_files(folder))
    with pytest.raises(DataError, match=r"hf:acme/saved:dev: no split 'dev' .*\(found: validation, test\)") as err:
        resolve("hf:acme/saved:dev")
    assert "hf:NAME:SPLIT" in err.value.hint


def test_a_bad_split_names_the_builds_splits(tmp_path, home):
    datasets_build(home / "datasets", "acme/chat", {"train": ROWS}, tmp_path / "work")
    with pytest.raises(DataError, match=r"hf:acme/chat:test: no split 'test' in .*acme___chat \(found: train\)"):
        resolve("hf:acme/chat:test")


def test_a_missing_data_file_is_named(tmp_path):
    folder = saved(tmp_path / "saved", shards=2)
    (folder / "data-00001-of-00002.arrow").unlink()
    with pytest.raises(DataError, match=r"saved dataset in .*saved is incomplete "
                                        r"\(missing: data-00001-of-00002.arrow\)") as err:
        resolve(str(folder))
    assert "save it again with save_to_disk" in err.value.hint


@pytest.mark.parametrize("damaged", ["state.json", "dataset_info.json", "dataset_dict.json"])
def test_a_damaged_metadata_file_is_named(tmp_path, damaged):
    folder = saved_dict(tmp_path / "dict", {"train": ROWS})
    target = folder / damaged if damaged == "dataset_dict.json" else folder / "train" / damaged
    target.write_text("{half a fi")
    with pytest.raises(DataError, match=re.escape(f"{target} cannot be read")) as err:
        resolve(str(folder))
    assert "save it again" in err.value.hint
    assert read_preview(str(folder)).error[0] == err.value.message


def test_a_split_folder_gone_from_a_dataset_dict_is_named(tmp_path):
    folder = saved_dict(tmp_path / "dict", {"train": ROWS, "test": ROWS})
    for f in (folder / "train").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"saved dataset in .*dict/train has no state.json") as err:
        resolve(str(folder))
    assert "save it again" in err.value.hint


def test_a_damaged_arrow_file_is_named_by_the_preview_and_the_jobs(tmp_path):
    folder = saved(tmp_path / "saved", shards=2)
    shard = folder / "data-00001-of-00002.arrow"
    shard.write_bytes(shard.read_bytes()[:100])
    preview = read_preview(str(folder))
    assert "data-00001-of-00002.arrow is not a readable Arrow file" in preview.error[0]
    with pytest.raises(DataError) as err:
        examples(folder)
    assert f"{folder}: data-00001-of-00002.arrow is not a readable Arrow file" in err.value.message
    assert "save it again with save_to_disk" in err.value.hint


def test_a_damaged_build_says_to_delete_it(tmp_path, home):
    build = datasets_build(home / "datasets", "acme/chat", {"train": ROWS}, tmp_path / "work")
    (build / "chat-train.arrow").write_bytes(b"not arrow")
    with pytest.raises(DataError, match="chat-train.arrow is not a readable Arrow file") as err:
        examples("hf:acme/chat")
    assert f"delete {build}" in err.value.hint


# ---- the token cache's key -------------------------------------------------------------------
def test_a_saved_folder_gets_a_stable_key_that_follows_its_content(tmp_path):
    key = content_hash(resolve(str(saved(tmp_path / "a"))))
    assert content_hash(resolve(str(tmp_path / "a"))) == key                  # read again
    assert content_hash(resolve(str(saved(tmp_path / "b")))) == key           # saved again, elsewhere
    assert content_hash(resolve(str(saved(tmp_path / "c", ROWS[:5])))) != key  # other rows
    datasets.Dataset.from_list(ROWS).with_format("numpy").save_to_disk(str(tmp_path / "d"))
    assert content_hash(resolve(str(tmp_path / "d"))) != key                  # same Arrow, other state.json
    dd = saved_dict(tmp_path / "dict", {"train": ROWS, "test": ROWS[:1]})
    assert content_hash(resolve(str(dd))) == key                              # the split is what counts


def test_the_token_cache_is_hit_again_by_the_same_saved_rows(tmp_path, tiny_llama):
    from lorastudio.core.engine.batching import token_cache
    from lorastudio.core.engine.model_loading import load_tokenizer
    tokenizer = load_tokenizer(tiny_llama, False)

    def table(folder):
        return token_cache.load_or_build(str(folder), DataSection(path=str(folder)), tokenizer, 64)
    first = table(saved(tmp_path / "a"))
    assert not first.cache_hit and first.meta["rows"] == len(ROWS)
    assert first.table.column("where")[2].as_py() == "row 3"
    assert table(tmp_path / "a").cache_hit
    assert table(saved(tmp_path / "b")).cache_hit                    # the same rows saved again elsewhere
    assert not table(saved(tmp_path / "c", ROWS[:5])).cache_hit
