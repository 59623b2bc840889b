"""Issue 27, class 7: data that teaches nothing. Examples whose assistant answers (completions) are
all empty would train only the end-of-turn marker: they are counted and dropped, with a warning and
the count in the `data` event when some are, and a refusal naming the file when all are — through
the real trainer with a tiny model and real files."""
from __future__ import annotations

import pytest

from lorastudio.core.config import DataSection
from lorastudio.core.data.files import DataError
from lorastudio.core.engine.batches import prepare_data
from lorastudio.core.engine.model_loading import load_tokenizer
from tests.helpers.tiny_models import write_config
from tests.helpers.training import CHAT, jsonl, train


def chat(answer: str) -> dict:
    return {"messages": [{"role": "user", "content": "the cat sat"}, {"role": "assistant", "content": answer}]}


EMPTY_FILES = {
    "chat": [chat(""), chat("   "), {"messages": [*chat("")["messages"], {"role": "user", "content": "and?"},
                                                  {"role": "assistant", "content": "\n"}]}] * 4,
    "prompt_completion": [{"prompt": f"question {i}", "completion": ""} for i in range(12)],
}


@pytest.mark.parametrize("kind", sorted(EMPTY_FILES))
def test_a_file_whose_answers_are_all_empty_is_refused_with_words(tmp_path, tiny_chat_llama, kind):
    path = jsonl(tmp_path / f"{kind}.jsonl", EMPTY_FILES[kind])
    tok = load_tokenizer(tiny_chat_llama, False)
    with pytest.raises(DataError) as refused:
        prepare_data(DataSection(path=str(path), validation_split=0.25), tok, 64, 2, 0)
    print(f"\n{refused.value}\n{refused.value.hint}")
    assert str(path) in str(refused.value)
    assert "the assistant answer (completion) of every example is empty (12 of 12)" in str(refused.value)
    assert "teach nothing" in str(refused.value) and "fill in the assistant / completion text" in refused.value.hint


def test_train_on_all_still_trains_the_prompts(tmp_path, tiny_chat_llama):
    path = jsonl(tmp_path / "d.jsonl", EMPTY_FILES["chat"])
    tok = load_tokenizer(tiny_chat_llama, False)
    data = prepare_data(DataSection(path=str(path), validation_split=0.0, train_on="all"), tok, 64, 2, 0)
    assert data.examples == 12 and data.summary()["dropped_empty_answer"] == 0


def test_a_trainer_refuses_a_file_of_empty_answers(tmp_path, tiny_chat_llama):
    data = jsonl(tmp_path / "empty.jsonl", EMPTY_FILES["chat"])
    config = write_config(tmp_path / "c.yaml", tiny_chat_llama, data, training__max_steps=2,
                          training__save_every=0)
    with pytest.raises(DataError, match="every example is empty") as refused:
        train(config, tmp_path / "run")
    assert str(data) in str(refused.value)


def test_some_empty_answers_are_dropped_with_a_warning_and_counted(tmp_path, tiny_chat_llama):
    rows = [CHAT] * 9 + [chat(""), chat(" "), chat("\t")]
    data = jsonl(tmp_path / "some.jsonl", rows)
    config = write_config(tmp_path / "c.yaml", tiny_chat_llama, data, training__max_steps=2,
                          training__save_every=0, data__validation_split=0.0)
    trainer, status, events = train(config, tmp_path / "run")
    assert status == "completed" and trainer.data.examples == 9
    summary = next(e for e in events if e["type"] == "data")
    assert summary["dropped_empty_answer"] == 3 and summary["examples"] == 9
    warnings = [e["message"] for e in events if e["type"] == "log" and e["level"] == "warning"]
    assert any(m.startswith("3 training examples had an empty assistant answer") for m in warnings), warnings
