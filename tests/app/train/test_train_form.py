"""The Qt-free form check: every bad field is named, combinations are caught, good forms pass."""
from lorastudio.app.train.train_form import build_section, check_form, parse_number


def good_form(**training) -> dict:
    return {"model": "/models/tiny", "quantization": "none", "compute_dtype": "auto", "device": "cpu",
            "lora": {"r": 8, "alpha": 16.0, "dropout": 0.05, "targets": ["q_proj", "v_proj"]},
            "data": {"path": "/data/train.jsonl", "text_field": "text", "validation_split": 0.1},
            "training": {"max_steps": 100, "lr": 2e-4, "batch_size": 2, "grad_accum": 1, "seq_len": 256,
                         "warmup_steps": 10, **training}}


def test_a_good_form_builds_the_config():
    check = check_form(good_form())
    assert check.ok and check.reason == ""
    assert check.config.training.seq_len == 256
    assert check.config.lora.targets == ["q_proj", "v_proj"]


def test_seq_len_zero_is_named_with_what_is_allowed():
    check = check_form(good_form(seq_len=0))
    assert not check.ok and check.config is None
    assert [p.key for p in check.problems] == ["training.seq_len"]
    assert "Sequence length: 0 is not allowed" in check.reason
    assert "≥ 8" in check.reason


def test_warmup_not_shorter_than_max_steps_is_flagged():
    check = check_form(good_form(max_steps=10, warmup_steps=10))
    assert [p.key for p in check.problems] == ["training.warmup_steps"]
    assert "shorter than max_steps (10)" in check.reason


def test_every_bad_field_is_reported_not_only_the_first():
    check = check_form(good_form(seq_len=0, batch_size=0, lr=2.0))
    assert {p.key for p in check.problems} == {"training.seq_len", "training.batch_size", "training.lr"}


def test_widget_problems_come_first_and_win_over_the_configs_wording():
    values = good_form()
    values["lora"]["targets"] = []
    values["problems"] = [("model", "Choose a model."), ("lora.targets", "Targets: tick at least one module.")]
    check = check_form(values)
    assert check.reason == "Choose a model."
    assert [p.message for p in check.for_prefix("lora")] == ["Targets: tick at least one module."]


def test_empty_data_path_is_refused_and_the_rest_of_the_section_still_checked():
    section, problems = build_section("data", {"path": "", "validation_split": 0.9})
    assert section is None
    assert [p.key for p in problems] == ["data.path", "data.validation_split"]


def test_parse_number_accepts_scientific_notation_and_names_garbage():
    assert parse_number("2e-4", "training.lr") == (2e-4, None)
    value, problem = parse_number("fast", "training.lr")
    assert problem == ("training.lr", "Learning rate: 'fast' is not a number")


def test_the_data_options_reach_the_config_and_bad_ones_are_named():
    values = good_form()
    values["data"].update(format="prompt_completion", columns={"prompt": "q", "completion": "reply"},
                          train_on="all", too_long="drop", on_bad_rows="skip", validation_path="/data/valid.jsonl")
    d = check_form(values).config.data
    assert (d.format, d.columns, d.train_on, d.too_long, d.on_bad_rows, d.validation_path) == (
        "prompt_completion", {"prompt": "q", "completion": "reply"}, "all", "drop", "skip", "/data/valid.jsonl")
    values["data"].update(format="xml", columns={"answer": "reply"})
    check = check_form(values)
    assert [p.key for p in check.problems] == ["data.format", "data.columns"]
    assert check.reason.startswith("Data format: 'xml' is not allowed")
