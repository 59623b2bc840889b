"""The generation worker answers a prompt that shows an image: a vision-language run's processor
encodes it (core/engine/vision/encoding.py, as training does), base and adapter answer; the llama.cpp
engine and a text-only run refuse it in words. Tiny random VLMs, the real worker code inline."""
from __future__ import annotations

import json

import pytest

from lorastudio.core.journal import read_events
from lorastudio.core.plans.generate import WorkerRequest, new_worker_dir, request_generation, start_generate
from lorastudio.core.runtime.follower import follow
from tests.helpers.tiny_vlms import make_vlm, write_colour_data, write_image

QUESTION = [{"role": "user", "content": "What colour is this?"}]


def vlm_run(root, family):
    from tests.helpers.tiny_models import train_tiny_run
    model = make_vlm(root / f"model-{family}", family)
    data = write_colour_data(root / f"data-{family}", 8)
    return train_tiny_run(root / f"run-{family}", model, data, quantization="none", training__max_steps=3,
                          training__save_every=0, training__seq_len=128, training__lr=1e-2,
                          data__validation_split=0.0)


def ask(tmp_path, run, images, engine="transformers", messages=QUESTION) -> list[dict]:
    job_dir = new_worker_dir(tmp_path / "playground")
    request_generation(job_dir, 1, run, messages, {"max_new_tokens": 5, "temperature": 0.0}, None, engine,
                       images=images)
    follow(start_generate(WorkerRequest(job_dir, idle_s=0)), lambda ev: None)
    return [e for e in read_events(job_dir / "events.jsonl") if e.get("request") == 1]


@pytest.mark.parametrize("family", ["qwen2_vl", "llava", "idefics3", "gemma3", "mllama"])
def test_base_and_adapter_answer_a_prompt_with_an_image(tmp_path, family, inline_jobs, monkeypatch):
    monkeypatch.setenv("LORASTUDIO_CACHE", str(tmp_path / "cache"))
    run = vlm_run(tmp_path, family)
    image = write_image(tmp_path / "photo.png", "green", size=(60, 44))
    events = ask(tmp_path, run, [str(image)])
    assert not [e for e in events if e["type"] == "error"], events
    answers = {e["side"]: e for e in events if e["type"] == "answer"}
    assert set(answers) == {"base", "adapter"} and all(1 <= a["tokens"] <= 5 for a in answers.values())
    tokens = [e for e in events if e["type"] == "token"]
    for side in ("base", "adapter"):
        assert "".join(e["text"] for e in tokens if e["side"] == side) == answers[side]["text"]
    assert events[-1]["name"] == "answered" and events[-1]["status"] == "completed"


def test_the_image_reaches_the_model(tmp_path, inline_jobs, monkeypatch):
    """The prompt's ids hold the processor's image tokens and its tensors come from the file: two
    different images give different logits (the answer is read, not made up from the text)."""
    import torch
    from lorastudio.core.engine.inference import image_prompt, load_pair
    from lorastudio.core.engine.vision.encoding import image_token_id
    monkeypatch.setenv("LORASTUDIO_CACHE", str(tmp_path / "cache"))
    pair = load_pair(vlm_run(tmp_path, "qwen2_vl"))
    logits = []
    for colour in ("red", "blue"):
        image = write_image(tmp_path / f"{colour}.png", colour, size=(60, 44))
        ids, features = image_prompt(pair, QUESTION, [str(image)])
        assert ids.count(image_token_id(pair.processor)) >= 1 and "pixel_values" in features
        with torch.no_grad():
            out = pair.model(input_ids=torch.tensor([ids]), **features)
        logits.append(out.logits[0, -1])
    assert not torch.allclose(logits[0], logits[1])


def test_llama_cpp_and_a_text_only_run_refuse_images_in_words(tmp_path, inline_jobs, monkeypatch, tiny_chat_llama):
    monkeypatch.setenv("LORASTUDIO_CACHE", str(tmp_path / "cache"))
    run = vlm_run(tmp_path, "llava")
    image = write_image(tmp_path / "photo.png", "red")
    error = next(e for e in ask(tmp_path, run, [str(image)], engine="llama.cpp") if e["type"] == "error")
    assert error["message"] == "the llama.cpp engine cannot read images in the Playground yet"
    assert "transformers" in error["hint"]
    events = ask(tmp_path, run, [str(tmp_path / "gone.png")])
    error = next(e for e in events if e["type"] == "error")
    assert "gone.png does not exist" in error["message"] and "the Playground" in error["message"]

    from tests.helpers.tiny_models import train_tiny_run
    data = tmp_path / "text.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                                     {"role": "assistant", "content": "yo"}]}) + "\n"
                            for _ in range(8)))
    text_run = train_tiny_run(tmp_path / "text-run", tiny_chat_llama, data, quantization="none",
                              training__max_steps=2, training__save_every=0, data__validation_split=0.0)
    error = next(e for e in ask(tmp_path, text_run, [str(image)]) if e["type"] == "error")
    assert "is a text-only model: it cannot read images" in error["message"] and error["hint"].startswith("remove the image")
