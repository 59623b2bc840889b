"""Config validation: every bad value is refused with the key, the value and what is allowed."""
from pathlib import Path

import pytest
import yaml

from lorastudio.core.preflight import check_config
from lorastudio.core.config import COLUMN_ROLES, DATA_FORMATS, ConfigError, DataSection, RunConfig
from lorastudio.core.data import formats

V01 = Path(__file__).resolve().parents[1] / "data" / "run_v0_1"

ISSUE_EXAMPLE = """
model: {model}
quantization: 4bit
lora: {{r: 8, alpha: 16, dropout: 0.05, targets: [q_proj, v_proj]}}
data: {{path: {data}, format: auto, validation_split: 0.1}}
training: {{max_steps: 20, epochs: 1, lr: 2.0e-4, batch_size: 2, grad_accum: 1, seq_len: 256,
           seed: 0, save_every: 10, gradient_checkpointing: true}}
"""


def test_issue_example_loads_and_round_trips(tiny_llama, text_jsonl):
    cfg = RunConfig.from_yaml(ISSUE_EXAMPLE.format(model=tiny_llama, data=text_jsonl))
    assert cfg.lora.r == 8 and cfg.lora.alpha == 16.0 and cfg.training.lr == 2e-4
    again = RunConfig.from_yaml(cfg.to_yaml())
    assert again == cfg
    check_config(cfg)      # model, data and targets all exist


def test_save_and_load(tmp_path, tiny_llama, text_jsonl):
    cfg = RunConfig.from_yaml(ISSUE_EXAMPLE.format(model=tiny_llama, data=text_jsonl))
    (tmp_path / "out").mkdir()
    cfg.save(tmp_path / "out" / "c.yaml")
    assert RunConfig.load(tmp_path / "out" / "c.yaml") == cfg
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["c.yaml"]      # no temp file left behind


@pytest.mark.parametrize("section,key,value,fragment", [
    ("lora", "r", 0, "rank must be a whole number ≥ 1"),
    ("lora", "r", 2.5, "rank must be a whole number"),
    ("lora", "alpha", -1, "alpha must be a number > 0"),
    ("lora", "dropout", 1.0, "[0, 1)"),
    ("lora", "targets", [], "non-empty list"),
    ("lora", "targets", "everything", "'all-linear'"),
    ("training", "seq_len", 0, "≥ 8 tokens"),
    ("training", "batch_size", 0, "≥ 1"),
    ("training", "lr", 0, "(0, 1)"),
    ("training", "schedule", "step", "cosine, linear, constant"),
    ("training", "gradient_checkpointing", "yes", "true or false"),
    ("data", "validation_split", 0.9, "[0, 0.5]"),
    (None, "quantization", "3bit", "4bit, 8bit, none"),
    (None, "device", "tpu", "auto, cpu, cuda"),
])
def test_bad_values_name_key_value_and_allowed(section, key, value, fragment):
    raw = {"model": "m", "data": {"path": "d.jsonl"}}
    if section:
        raw.setdefault(section, {})[key] = value
    else:
        raw[key] = value
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict(raw)
    dotted = f"{section}.{key}" if section else key
    assert err.value.key == dotted
    assert str(err.value).startswith(f"{dotted}: {value!r}")
    assert fragment in str(err.value)


def test_unknown_key_lists_allowed_keys():
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict({"model": "m", "data": {"path": "d"}, "lora": {"rank": 8}})
    assert err.value.key == "lora.rank"
    assert "r, alpha, dropout" in str(err.value)


def test_warmup_must_be_shorter_than_max_steps():
    with pytest.raises(ConfigError, match="training.warmup_steps"):
        RunConfig.from_dict({"model": "m", "data": {"path": "d"},
                             "training": {"max_steps": 10, "warmup_steps": 10}})


def test_invalid_yaml_names_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: m\nlora: {r: 8\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*line \d+"):
        RunConfig.load(bad)


def test_number_written_without_dot_is_accepted():
    cfg = RunConfig.from_dict(yaml.safe_load("model: m\ndata: {path: d}\ntraining: {lr: 2e-4}"))
    assert cfg.training.lr == 2e-4


def test_missing_model_path_is_refused(text_jsonl, tmp_path):
    cfg = RunConfig.from_dict({"model": str(tmp_path / "nowhere"), "data": {"path": str(text_jsonl)}})
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert err.value.key == "model" and "does not exist" in str(err.value)


def test_folder_without_config_json_is_refused(text_jsonl, tmp_path):
    cfg = RunConfig.from_dict({"model": str(tmp_path), "data": {"path": str(text_jsonl)}})
    with pytest.raises(ConfigError, match="no config.json"):
        check_config(cfg)


def test_missing_data_path_is_refused(tiny_llama, tmp_path):
    cfg = RunConfig.from_dict({"model": str(tiny_llama), "data": {"path": str(tmp_path / "none.jsonl")}})
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert err.value.key == "data.path" and "does not exist" in str(err.value)


def test_unknown_target_for_this_model_lists_available(tiny_llama, text_jsonl):
    cfg = RunConfig.from_dict({"model": str(tiny_llama), "data": {"path": str(text_jsonl)},
                               "lora": {"targets": ["q_proj", "c_attn"]}})
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert err.value.key == "lora.targets" and err.value.value == "c_attn"
    assert "q_proj, k_proj, v_proj, o_proj" in str(err.value)


def test_pickle_only_model_needs_opt_in(tmp_path, tiny_llama, text_jsonl):
    import shutil
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_llama, folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    cfg = RunConfig.from_dict({"model": str(folder), "data": {"path": str(text_jsonl)}})
    with pytest.raises(ConfigError, match="allow_pickle"):
        check_config(cfg)


def test_the_data_section_takes_formats_and_column_roles_from_core_data_formats():
    assert DATA_FORMATS == ("auto", *formats.FORMATS) and COLUMN_ROLES is formats.COLUMN_ROLES
    assert DataSection(path="d.csv", format="alpaca", columns={"instruction": "q", "output": "a"}).columns
    with pytest.raises(ConfigError, match="data.columns.*a mapping from text, prompt, completion, instruction"):
        DataSection(path="d.csv", columns={"answer": "reply"})
    with pytest.raises(ConfigError, match="allowed formats: auto, text, prompt_completion, alpaca, messages, sharegpt"):
        DataSection(path="d.csv", format="chatml")


# ---- every key, and the older gradient_checkpointing ----------------------------------------
def test_every_key_at_a_non_default_value_round_trips_through_yaml(tmp_path):
    from tests.helpers.config_keys import changed_configs
    for cfg in changed_configs():
        assert RunConfig.from_yaml(cfg.to_yaml()) == cfg
        cfg.save(tmp_path / "c.yaml")
        again = RunConfig.load(tmp_path / "c.yaml")
        assert again == cfg and again.to_dict() == cfg.to_dict() and again.notes == ()


def test_memory_mode_is_the_only_memory_key():
    import dataclasses
    from lorastudio.core.config import TrainingSection
    names = [f.name for f in dataclasses.fields(TrainingSection)]
    assert "memory_mode" in names and "gradient_checkpointing" not in names
    cfg = RunConfig.from_dict({"model": "m", "data": {"path": "d"}, "training": {"gradient_checkpointing": False}})
    assert "gradient_checkpointing" not in cfg.to_yaml() and "notes" not in cfg.to_dict()


@pytest.mark.parametrize("legacy,mode,expected,words", [
    (False, None, "none", "read as training.memory_mode: none"),
    (False, "auto", "none", "read as training.memory_mode: none"),
    (False, "lean", "lean", "training.memory_mode: lean in the same config decides"),
    (False, "checkpoint", "checkpoint", "training.memory_mode: checkpoint in the same config decides"),
    (True, None, "auto", "changes nothing (training.memory_mode: auto decides)"),
    (True, "none", "none", "changes nothing (training.memory_mode: none decides)"),
])
def test_an_older_gradient_checkpointing_is_mapped_once_with_a_note(legacy, mode, expected, words):
    training = {"gradient_checkpointing": legacy, **({"memory_mode": mode} if mode else {})}
    raw = {"model": "m", "data": {"path": "d"}, "training": training}
    cfg = RunConfig.from_dict(raw)
    assert cfg.training.memory_mode == expected
    assert len(cfg.notes) == 1 and cfg.notes[0].startswith(f"training.gradient_checkpointing: {str(legacy).lower()} ")
    assert words in cfg.notes[0]
    assert raw["training"] == training                    # the caller's mapping is left as it was
    again = RunConfig.from_yaml(cfg.to_yaml())            # mapped once: the saved config has no older key
    assert again == cfg and again.notes == ()


def test_a_0_2_config_file_with_gradient_checkpointing_false_loads_as_memory_mode_none(tmp_path):
    old = yaml.safe_load((V01 / "config.yaml").read_text())      # 0.2 wrote the same shape, plus these keys
    old["training"].update(gradient_checkpointing=False, memory_mode="auto", fused_lora=True, oom_retry=True)
    old["distributed"] = {"processes": 1, "strategy": "ddp"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old, sort_keys=False))
    cfg = RunConfig.load(path)
    assert cfg.training.memory_mode == "none" and cfg.training.lr == 0.005
    assert cfg.notes == ("training.gradient_checkpointing: false is an older key; it was read as "
                         "training.memory_mode: none. Write memory_mode instead.",)


def test_a_0_1_run_folders_config_still_loads():
    cfg = RunConfig.load(V01 / "config.yaml")                   # gradient_checkpointing: true, no memory_mode
    assert cfg.training.memory_mode == "auto" and cfg.training.max_steps == 10
    assert len(cfg.notes) == 1 and "Remove it" in cfg.notes[0]


def test_an_unusable_older_key_names_itself_and_the_key_to_write():
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict({"model": "m", "data": {"path": "d"}, "training": {"gradient_checkpointing": "off"}})
    assert err.value.key == "training.gradient_checkpointing"
    assert "write training.memory_mode (auto, none, checkpoint, lean) instead" in str(err.value)


def test_lorastudio_train_prints_the_note_of_an_older_key(tmp_path, capsys):
    from types import SimpleNamespace

    from lorastudio.core.cli.train import train
    path = tmp_path / "old.yaml"
    path.write_text("model: nowhere\ndata: {path: d.jsonl}\ntraining: {gradient_checkpointing: false}\n")
    assert train(SimpleNamespace(config=path, run_dir=None, runs_dir=None, detach=False)) == 2  # no model
    out = capsys.readouterr().out
    assert out.startswith("Note: training.gradient_checkpointing: false is an older key; it was read as "
                          "training.memory_mode: none.")


def test_the_presets_say_memory_mode_not_the_older_key():
    presets = sorted((Path(__file__).resolve().parents[2] / "resources" / "presets").glob("*.yaml"))
    assert presets
    for path in presets:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        raw.update(model="m", data={**raw.get("data", {}), "path": "d.jsonl"})
        cfg = RunConfig.from_dict(raw)
        assert cfg.notes == () and cfg.training.memory_mode == "none", path.name
