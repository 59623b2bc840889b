"""Datasets people already have: dataset repository folders and hf:NAME[:SPLIT] in the local Hugging
Face caches — the hub cache laid out as huggingface_hub lays it out, found through its cache API —
and the Cached ▾ list. save_to_disk folders and datasets-cache builds: test_saved_datasets.py."""
import pytest

from lorastudio.core.config import ConfigError, DataSection, RunConfig
from lorastudio.core.data.files import DataError
from lorastudio.core.data.sources import list_cached_datasets, resolve
from lorastudio.core.engine.batches import load_examples
from lorastudio.core.preflight import check_config
from tests.helpers.hf_caches import datasets_build, empty_hf_home, hub_dataset
from tests.helpers.training import train

ROWS = [{"prompt": f"question {i}", "completion": f"answer {i}"} for i in range(6)]


def lines(rows) -> str:
    import json
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    return empty_hf_home(tmp_path, monkeypatch)


def answers(spec):
    return [e.messages[-1]["content"] for e in load_examples(spec, DataSection(path=str(spec))).examples]


def qa(home, **options):
    return hub_dataset(home / "hub", "acme/qa", {"data/train.jsonl": lines(ROWS[:4]),
                                                 "data/validation.jsonl": lines(ROWS[4:]),
                                                 "README.md": "# a dataset card, not data\n"}, **options)


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


def test_hf_name_in_the_hub_cache_with_a_split(home):
    snapshot = qa(home)
    source = resolve("hf:acme/qa")
    assert source.label == "hf:acme/qa:train" and source.files == [snapshot / "data" / "train.jsonl"]
    assert answers("hf:acme/qa") == ["answer 0", "answer 1", "answer 2", "answer 3"]
    assert answers("hf:acme/qa:validation") == ["answer 4", "answer 5"]
    examples = load_examples("hf:acme/qa", DataSection(path="hf:acme/qa")).examples
    assert examples[1].where == "train.jsonl, line 2"


def test_a_bad_split_names_the_splits_there_are(home):
    qa(home)
    with pytest.raises(DataError, match=r"hf:acme/qa:test: no 'test' files .* \(splits found: train, validation\)"):
        resolve("hf:acme/qa:test")


def test_hf_name_is_the_snapshot_main_points_at(home):
    hub_dataset(home / "hub", "acme/qa", {"train.jsonl": lines(ROWS[:1])}, commit="1" * 40, main=False)
    qa(home, commit="2" * 40)                                           # refs/main -> the newer one
    assert answers("hf:acme/qa") == ["answer 0", "answer 1", "answer 2", "answer 3"]
    assert resolve("hf:acme/qa").files[0].parent.parent.name == "2" * 40


def test_a_missing_hf_dataset_names_both_places_it_was_looked_for(home):
    with pytest.raises(DataError) as err:
        resolve("hf:nobody/nothing")
    assert str(home / "hub" / "datasets--nobody--nothing") in err.value.message
    assert str(home / "datasets" / "nobody___nothing") in err.value.message
    assert "hf download --repo-type dataset nobody/nothing" in err.value.hint


def test_a_snapshot_without_main_is_not_found(home):
    """hf:NAME means the main revision, as huggingface_hub resolves it; a snapshot downloaded at
    another revision only is not it."""
    hub_dataset(home / "hub", "acme/qa", {"train.jsonl": lines(ROWS)}, main=False)
    with pytest.raises(DataError, match="not in the local Hugging Face caches"):
        resolve("hf:acme/qa")


def test_an_incomplete_download_is_named_with_what_is_missing(home):
    qa(home, listing={"data/train.jsonl": lines(ROWS[:4]), "data/validation.jsonl": lines(ROWS[4:]),
                      "data/test.jsonl": lines(ROWS[:1]), "README.md": "# a dataset card, not data\n"})
    with pytest.raises(DataError) as err:
        resolve("hf:acme/qa")
    assert "hf:acme/qa:train: the copy in the Hugging Face cache" in err.value.message
    assert "is incomplete: 1 file(s) are missing (data/test.jsonl)" in err.value.message
    assert "download it again" in err.value.hint and "acme/qa" in err.value.hint


@pytest.mark.parametrize("spec", ["hf:", "hf:a/b/c", "hf:two words", "hf:acme/-qa-"])
def test_not_a_dataset_name(spec):
    with pytest.raises(DataError, match="not a dataset name") as err:
        resolve(spec)
    assert "hf:tatsu-lab/alpaca:train" in err.value.hint


def test_cached_datasets_are_listed(home, tmp_path):
    qa(home)
    hub_dataset(home / "hub", "acme/draft", {"train.jsonl": lines(ROWS)}, main=False)   # no main: not offered
    (home / "hub" / "models--acme--tiny" / "snapshots" / "abc").mkdir(parents=True)    # a model: not a dataset
    (home / "hub" / "datasets--acme--broken").mkdir()                                 # no snapshots: skipped
    datasets_build(home / "datasets", "acme/chat", {"train": ROWS}, tmp_path / "work")
    listed = list_cached_datasets()
    assert [(d["id"], d["spec"], d["cache"]) for d in listed] == [("acme/chat", "hf:acme/chat", "datasets"),
                                                                  ("acme/qa", "hf:acme/qa", "hub")]
    hub = listed[1]
    assert hub["path"] == str(resolve("hf:acme/qa").files[0].parent.parent.resolve())
    assert hub["size"] == len(lines(ROWS[:4])) + len(lines(ROWS[4:])) + len("# a dataset card, not data\n")
    assert listed[0]["size"] > 0


def test_nothing_cached_lists_nothing(home):
    assert list_cached_datasets() == []
    (home / "hub").mkdir(parents=True)
    assert list_cached_datasets() == []


def test_a_run_trains_from_hf_and_preflight_names_a_missing_one(home, tmp_path, make_config):
    qa(home)
    config = make_config(data__path="hf:acme/qa", data__validation_split=0.0, training__max_steps=2,
                         training__save_every=0)
    _, status, events = train(config, tmp_path / "run")
    assert status == "completed"
    assert next(e for e in events if e["type"] == "data")["source"] == "hf:acme/qa:train"
    missing = RunConfig.load(make_config(data__path="hf:acme/gone"))
    with pytest.raises(ConfigError, match="not in the local Hugging Face caches"):
        check_config(missing)

