"""Issue 27, class 6: resuming what changed, through the real `lorastudio resume`. A journal written
by a newer version is refused (nothing appended); a data file rewritten since the checkpoint is
found by the content hash the checkpoint stores (refused in words, or resumed on the explicit
override); a config.yaml edited against the checkpoint's adapter (rank, targets) is refused in
words instead of PyTorch's size-mismatch dump."""
from __future__ import annotations

import json

import pytest
import yaml

from lorastudio.core import cli
from lorastudio.core.config import RunConfig
from lorastudio.core.runs.checkpoints import DATA_KEY
from lorastudio.core.runs.resume import DATA_CHANGED_KEY, plan_resume
from tests.helpers.training import train


@pytest.fixture
def stopped(make_config, tmp_path, text_jsonl):
    config = make_config(training__save_every=0, data__validation_split=0.0)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(RunConfig.load(config).to_yaml())
    _, status, _ = train(config, run, stop_after=3)
    assert status == "stopped"
    return run, text_jsonl


def resume(capfd, run, *extra) -> tuple[int, str]:
    capfd.readouterr()
    code = cli.main(["resume", str(run), *extra])
    out, err = capfd.readouterr()
    return code, out + err


def test_the_checkpoint_stores_the_datas_content_hash(stopped):
    run, data = stopped
    state = json.loads((run / "checkpoints" / "step-000003" / "state.json").read_text())
    assert list(state[DATA_KEY]) == [str(data.resolve())] and len(state[DATA_KEY][str(data.resolve())]) == 64


def test_a_journal_of_a_newer_version_is_refused_and_left_alone(stopped, capfd):
    run, _ = stopped
    with open(run / "events.jsonl", "a") as fh:
        fh.write(json.dumps({"v": 2, "type": "step", "time": 1.0, "step": 4, "new_field": [1]}) + "\n")
    before = (run / "events.jsonl").read_bytes()
    code, text = resume(capfd, run)
    assert code == 2 and "written by a newer LoRA Studio (journal version 2; this one writes version 1)" in text
    assert "Traceback" not in text and (run / "events.jsonl").read_bytes() == before


def test_changed_data_is_refused_with_words_and_the_override_resumes(stopped, capfd):
    run, data = stopped
    data.write_text(data.read_text().replace("the", "a"))          # rewritten between the crash and the resume
    code, text = resume(capfd, run)
    assert code == 2 and f"{data.resolve()} changed since checkpoint step-000003" in text
    assert f"--set {DATA_CHANGED_KEY}=ok" in text and "Traceback" not in text
    plan, _ = plan_resume(run, overrides={DATA_CHANGED_KEY: "ok"})
    assert plan.step == 3 and plan.changes == []


@pytest.mark.parametrize("edit, words", [
    (lambda c: c["lora"].update(r=16), "lora.r is 16 but the checkpoint's adapter has rank 8"),
    (lambda c: c["lora"].update(targets=["q_proj", "k_proj", "v_proj"]),
     "lora.targets are ['k_proj', 'q_proj', 'v_proj'] but the checkpoint adapts ['q_proj', 'v_proj']"),
    (lambda c: c["lora"].update(use_dora=True), "lora.use_dora is True but the checkpoint's adapter does not use DoRA"),
])
def test_a_hand_edited_config_against_the_checkpoint_is_refused_in_words(stopped, capfd, edit, words):
    run, _ = stopped
    raw = yaml.safe_load((run / "config.yaml").read_text())
    edit(raw)
    (run / "config.yaml").write_text(yaml.safe_dump(raw))
    code, text = resume(capfd, run)
    print(text)
    assert code == 2 and words in text and "does not match checkpoint step-000003" in text
    assert "size mismatch" not in text and "Traceback" not in text
