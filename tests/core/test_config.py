"""Config validation: every bad value is refused with the key, the value and what is allowed."""
import pytest
import yaml

from lorastudio.core.preflight import check_config
from lorastudio.core.config import COLUMN_ROLES, DATA_FORMATS, ConfigError, DataSection, RunConfig
from lorastudio.core.data import formats

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
