"""Datasets people already have: save_to_disk folders, dataset repository folders and hf:NAME[:SPLIT]
in the local Hugging Face caches — built here offline with the real `datasets` library."""
import shutil

import pytest

from lorastudio.core.config import ConfigError, DataSection, RunConfig
from lorastudio.core.data.files import DataError
from lorastudio.core.data.sources import list_cached_datasets, resolve
from lorastudio.core.engine.batches import load_examples
from lorastudio.core.preflight import check_config
from tests.helpers.training import jsonl, train

ROWS = [{"prompt": f"question {i}", "completion": f"answer {i}"} for i in range(6)]


@pytest.fixture(autouse=True)
def caches(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hfdatasets"))
    monkeypatch.setenv("LORASTUDIO_CACHE", str(tmp_path / "cache"))


def saved(folder, rows=ROWS):
    import datasets
    datasets.Dataset.from_list(rows).save_to_disk(str(folder))
    return folder


def answers(spec):
    return [e.messages[-1]["content"] for e in load_examples(spec, DataSection(path=str(spec))).examples]


def test_a_save_to_disk_folder_and_a_dataset_dict(tmp_path):
    folder = saved(tmp_path / "saved")
    assert answers(folder) == [r["completion"] for r in ROWS]
    assert load_examples(folder, DataSection(path=str(folder))).examples[2].where.endswith(", row 3")
    import datasets
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:4]),
                               "test": datasets.Dataset.from_list(ROWS[4:])})
    dd.save_to_disk(str(tmp_path / "dict"))
    assert answers(tmp_path / "dict") == ["answer 0", "answer 1", "answer 2", "answer 3"]


def test_a_repository_folder_reads_its_train_files(tmp_path):
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "README.md").write_text("# a dataset card, not data\n")
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist(ROWS[:3]), repo / "data" / "train-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(ROWS[3:5]), repo / "data" / "train-00001-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(ROWS[5:]), repo / "data" / "test-00000-of-00001.parquet")
    assert answers(repo) == ["answer 0", "answer 1", "answer 2", "answer 3", "answer 4"]
    examples = load_examples(repo, DataSection(path=str(repo))).examples
    assert examples[3].where == "train-00001-of-00002.parquet, row 1"


def hub_dataset(tmp_path, name="acme/qa"):
    repo = tmp_path / "hub" / ("datasets--" + name.replace("/", "--"))
    snap = repo / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    jsonl(snap / "train.jsonl", ROWS[:4])
    jsonl(snap / "validation.jsonl", ROWS[4:])
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    return snap


def test_hf_name_in_the_hub_cache_with_a_split(tmp_path):
    hub_dataset(tmp_path)
    assert answers("hf:acme/qa") == ["answer 0", "answer 1", "answer 2", "answer 3"]
    assert answers("hf:acme/qa:validation") == ["answer 4", "answer 5"]
    with pytest.raises(DataError, match=r"hf:acme/qa:test: no 'test' files .* \(splits found: train, validation\)"):
        resolve("hf:acme/qa:test")


def test_hf_name_in_the_datasets_arrow_cache(tmp_path):
    folder = saved(tmp_path / "saved")
    build = tmp_path / "hfdatasets" / "acme___chat" / "default" / "0.0.0" / "abc123"
    build.mkdir(parents=True)
    shutil.copy(next(folder.glob("*.arrow")), build / "chat-train.arrow")
    (build / "cache-deadbeef.arrow").write_bytes(b"not data")
    assert answers("hf:acme/chat:train") == [r["completion"] for r in ROWS]
    with pytest.raises(DataError, match=r"no split 'test' .*found: train"):
        resolve("hf:acme/chat:test")


def test_a_missing_hf_dataset_names_where_it_was_looked_for(tmp_path):
    with pytest.raises(DataError) as err:
        resolve("hf:nobody/nothing")
    assert "datasets--nobody--nothing" in err.value.message and "nobody___nothing" in err.value.message
    assert "huggingface-cli download --repo-type dataset nobody/nothing" in err.value.hint
    with pytest.raises(DataError, match="not a dataset name"):
        resolve("hf:")


def test_cached_datasets_are_listed(tmp_path):
    hub_dataset(tmp_path)
    build = tmp_path / "hfdatasets" / "acme___chat" / "default" / "0.0.0" / "abc123"
    build.mkdir(parents=True)
    shutil.copy(next(saved(tmp_path / "saved").glob("*.arrow")), build / "chat-train.arrow")
    listed = list_cached_datasets()
    assert [(d["id"], d["spec"], d["cache"]) for d in listed] == [("acme/chat", "hf:acme/chat", "datasets"),
                                                                  ("acme/qa", "hf:acme/qa", "hub")]
    assert all(d["size"] > 0 for d in listed)


def test_a_run_trains_from_hf_and_preflight_names_a_missing_one(tmp_path, make_config):
    hub_dataset(tmp_path)
    config = make_config(data__path="hf:acme/qa", data__validation_split=0.0, training__max_steps=2,
                         training__save_every=0)
    _, status, events = train(config, tmp_path / "run")
    assert status == "completed"
    assert next(e for e in events if e["type"] == "data")["source"] == "hf:acme/qa:train"
    missing = RunConfig.load(make_config(data__path="hf:acme/gone"))
    with pytest.raises(ConfigError, match="not in the local Hugging Face caches"):
        check_config(missing)
