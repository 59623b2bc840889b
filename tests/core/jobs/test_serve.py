"""`lorastudio serve` end to end with real parts: two tiny Llama runs trained on different answers,
served by the serve job (a real process: our GGUF writer, llama.cpp through xllamacpp, the front),
asked by the real `openai` client over 127.0.0.1 and compared with transformers' base + adapter.

The tiny base is random, so its greedy answer is noise; it still equals transformers' greedy answer
token for token (the f16 rounding of the GGUF does not flip a pick for this fixed seed) — special
tokens aside, which llama.cpp does not print. The trained adapters answer their training answers
exactly, as transformers does, up to the end-of-turn token where llama.cpp stops."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.helpers.tiny_models import add_chat_template, make_tiny_model, train_tiny_run
from tests.helpers.training import jsonl

from lorastudio.core.journal import read_events
from lorastudio.core.plans.serve import (ServeError, ServeRequest, curl_example, plan_serve, python_example,
                                         start_serve)
from lorastudio.core.runtime.follower import JobWatch
from lorastudio.core.runtime.launcher import free_port

openai = pytest.importorskip("openai")
slow = pytest.mark.slow          # the tests that start a server (a process, llama.cpp): 1-10 s each

PROMPT = "the cat sat"
ANSWERS = {"mat": "on the mat", "door": "looked at the door"}
KEY = "s3cret-key"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def chat(answer: str) -> dict:
    return {"messages": [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": answer}]}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("serve-home")
        mp.setenv("LORASTUDIO_HOME", str(root))         # the base GGUF cache and the job folders; the job inherits it
        yield root


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs on one tiny chat Llama, each trained to answer PROMPT its own way (2 s on a CPU)."""
    root = tmp_path_factory.mktemp("serve-runs")
    model = add_chat_template(make_tiny_model(root / "tiny-chat-llama"))
    out = {}
    for name, answer in ANSWERS.items():
        data = jsonl(root / f"{name}.jsonl", [chat(answer)] * 16)
        out[name] = train_tiny_run(root / "runs" / name, model, data, name=name, quantization="none",
                                   training__lr=1e-2, training__max_steps=60, training__save_every=100,
                                   lora__targets=TARGETS)
    out["model"] = model
    return out


@pytest.fixture(scope="module")
def reference(runs):
    """transformers' greedy answers: the base, and base + each adapter (PEFT), up to the end of the turn."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(runs["model"])
    ids = tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    end = tok.convert_tokens_to_ids("<|im_end|>")

    def greedy(model) -> str:
        new = model.generate(ids, max_new_tokens=12, do_sample=False)[0, ids.shape[1]:].tolist()
        return tok.decode(new[:new.index(end)] if end in new else new, skip_special_tokens=True)
    answers = {"base": greedy(AutoModelForCausalLM.from_pretrained(runs["model"]).eval())}
    for name in ANSWERS:
        base = AutoModelForCausalLM.from_pretrained(runs["model"])
        answers[name] = greedy(PeftModel.from_pretrained(base, runs[name] / "adapter").eval())
    return answers


def wait_serving(handle, timeout: float = 120.0) -> tuple[dict, JobWatch]:
    watch, deadline = JobWatch(handle), time.monotonic() + timeout
    events = []
    while True:
        events += watch.poll()
        serving = [e for e in events if e["type"] == "serving"]
        if serving:
            return serving[0], watch
        assert watch.outcome is None, f"the server ended: {watch.outcome.words()}\n{handle.log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "the server did not start in time"
        time.sleep(0.1)


def wait_end(handle, watch: JobWatch, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while watch.outcome is None:
        assert time.monotonic() < deadline, "the server did not stop in time"
        watch.poll()
        time.sleep(0.1)
    handle.process.wait(timeout=10)
    return watch.outcome


@pytest.fixture(scope="module")
def server(home, runs):
    """The two runs served with an API key on a free port (the first start writes the GGUF files)."""
    job = plan_serve(ServeRequest((runs["mat"], runs["door"]), port=0, api_key=KEY))
    handle = start_serve(job)
    try:
        serving, watch = wait_serving(handle)
        yield {"job": job, "handle": handle, "serving": serving, "url": serving["url"], "watch": watch}
    finally:
        handle.stop()
        handle.kill(wait_s=15)


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server["url"], api_key=KEY, max_retries=0, timeout=60)


def ask(client, model: str, **extra) -> str:
    answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPT}],
                                            max_tokens=12, temperature=0, **extra)
    return answer.choices[0].message.content


@slow
def test_models_lists_the_base_and_each_run_by_name(server, client):
    assert [m.id for m in client.models.list()] == ["tiny-chat-llama", "mat", "door"]
    assert client.models.retrieve("door").id == "door"
    assert server["serving"]["models"] == ["tiny-chat-llama", "mat", "door"] and server["serving"]["api_key"] is True
    job_yaml = (server["handle"].job_dir / "job.yaml").read_text()
    assert KEY not in job_yaml and "api_key: true" in job_yaml       # the key is never written down


@slow
def test_each_adapter_answers_as_transformers_base_plus_that_adapter(client, reference):
    assert reference["mat"] == ANSWERS["mat"] and reference["door"] == ANSWERS["door"]
    for name in ANSWERS:
        assert ask(client, name) == reference[name]


@slow
def test_the_base_answers_as_the_base(client, reference):
    answer = ask(client, "tiny-chat-llama")
    assert answer == reference["base"]
    assert answer not in ANSWERS.values()


@slow
def test_streaming_gives_the_same_answer_and_completions_work(client, reference):
    stream = client.chat.completions.create(model="door", messages=[{"role": "user", "content": PROMPT}],
                                            max_tokens=12, temperature=0, stream=True)
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 3 and "".join(pieces) == reference["door"]
    text = client.completions.create(model="mat", prompt=f"<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n",
                                     max_tokens=12, temperature=0).choices[0].text
    assert text == reference["mat"]
    streamed = client.completions.create(model="mat", prompt=f"<|im_start|>user\n{PROMPT}<|im_end|>\n"
                                         "<|im_start|>assistant\n", max_tokens=12, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == reference["mat"]


@slow
def test_four_concurrent_streams_on_different_models_all_complete(client, reference):
    models = ["mat", "door", "tiny-chat-llama", "mat"]
    results: dict[int, tuple] = {}

    def one(i: int, model: str) -> None:
        try:
            stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPT}],
                                                    max_tokens=12, temperature=0, stream=True)
            chunks = list(stream)
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            results[i] = (text, next(c.choices[0].finish_reason for c in reversed(chunks) if c.choices))
        except Exception as exc:        # noqa: BLE001 — reported below
            results[i] = (exc, None)
    threads = [threading.Thread(target=one, args=(i, m)) for i, m in enumerate(models)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [0, 1, 2, 3]
    for i, model in enumerate(models):
        text, finish = results[i]
        assert text == reference["base" if model == "tiny-chat-llama" else model], (model, text)
        assert finish in ("stop", "length")


@slow
def test_a_request_for_another_adapter_does_not_wait_for_a_running_one(server, client, reference):
    """Each model has its own llama.cpp instance: a short answer from door comes while a long one from
    mat is still streaming (one shared instance would decode door's only after mat's ended)."""
    assert server["serving"]["instances"] == 3
    times: dict[str, float] = {}
    started = threading.Event()

    def long_one() -> None:
        stream = client.chat.completions.create(model="mat", messages=[{"role": "user", "content": PROMPT}],
                                                max_tokens=400, temperature=0, stream=True,
                                                extra_body={"ignore_eos": True})
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                started.set()
        times["mat"] = time.monotonic()
    thread = threading.Thread(target=long_one)
    thread.start()
    assert started.wait(30)
    answer = client.chat.completions.create(model="door", messages=[{"role": "user", "content": PROMPT}],
                                            max_tokens=12, temperature=0)
    times["door"] = time.monotonic()
    thread.join(60)
    assert times["door"] < times["mat"], "door's answer waited for mat's to end"
    assert answer.choices[0].message.content == reference["door"]
    assert answer.model == "door"                   # (a shared instance answers under the base's name)


@slow
def test_an_unknown_model_is_404_naming_the_served_ones(client):
    with pytest.raises(openai.NotFoundError) as caught:
        ask(client, "gpt-4o")
    message = str(caught.value)
    assert "The model 'gpt-4o' is not served here" in message
    assert "Served models: tiny-chat-llama, mat, door" in message
    assert caught.value.code == "model_not_found"


@slow
def test_a_wrong_or_missing_key_is_401_and_health_is_public(server):
    wrong = openai.OpenAI(base_url=server["url"], api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        ask(wrong, "mat")
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    root = server["url"].removesuffix("/v1")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(server["url"] + "/models", timeout=10)
    assert caught.value.code == 401 and "Bearer" in json.loads(caught.value.read())["error"]["message"]
    with urllib.request.urlopen(root + "/health", timeout=10) as answer:
        assert answer.status == 200


@slow
def test_llama_cpps_own_port_is_behind_a_key_only_the_job_knows(server):
    """The front is the only way in: llama.cpp listens on 127.0.0.1 behind its own random key."""
    log = server["handle"].log.read_text(errors="replace")
    assert KEY not in log
    # the serve job's only other listener is llama.cpp's; find it and knock
    url = server["url"]
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    others = [c for c in _listening_ports(server["handle"].pid) if c != port]
    assert len(others) == server["serving"]["instances"] == 3          # the base's, mat's and door's
    for other in others:
        request = urllib.request.Request(f"http://127.0.0.1:{other}/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=10)
        assert caught.value.code == 401


def _listening_ports(pid: int) -> list[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] == "0A" and parts[9] in inodes:          # LISTEN
                ports.append(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


@slow
def test_the_examples_work_as_shown(server):
    """The Serve panel's and the CLI's curl line and openai snippet, run as a person would."""
    if shutil.which("curl"):
        out = subprocess.run(["bash", "-c", curl_example(server["url"], "door", KEY)], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0 and json.loads(out.stdout)["choices"][0]["message"]["role"] == "assistant"
    out = subprocess.run([sys.executable, "-c", python_example(server["url"], "door", KEY)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr


@slow
def test_traffic_is_journaled_from_llama_cpps_metrics(server, client):
    ask(client, "mat")
    deadline, events = time.monotonic() + 10, []
    while time.monotonic() < deadline:
        events = [e for e in read_events(server["handle"].journal) if e["type"] == "traffic"]
        if events and events[-1]["by_model"].get("mat", 0) >= 1 and not events[-1]["active"]:
            break
        time.sleep(0.3)
    last = events[-1]
    assert last["requests"] >= 1 and last["tokens"] > 0 and last["tokens_per_s"] > 0
    assert sum(last["by_model"].values()) == last["requests"]


@slow
def test_stopping_frees_the_port_and_the_files_are_cached(home, runs):
    """A second server on a fixed port (the GGUF files are cached by now): stopped, it gives the port back."""
    port = free_port()
    job = plan_serve(ServeRequest((runs["mat"],), port=port, shared=True))
    assert not job.export_base and job.runs[0].gguf.is_file() and not job.separate
    handle = start_serve(job)
    try:
        serving, watch = wait_serving(handle)
        assert serving["port"] == port and serving["api_key"] is False and serving["instances"] == 1
        client = openai.OpenAI(base_url=serving["url"], api_key="none", max_retries=0, timeout=60)
        assert ask(client, "mat") == ANSWERS["mat"]             # the adapter chosen per request
        with pytest.raises(ServeError, match=f"port {port} on 127.0.0.1 is in use"):
            plan_serve(ServeRequest((runs["mat"],), port=port))
        assert handle.stop()
        outcome = wait_end(handle, watch)
    finally:
        handle.kill()
    assert outcome.status == "stopped" and handle.returncode() == 0
    events = read_events(handle.journal)
    assert not [e for e in events if e["type"] == "phase" and e["name"] in ("base", "adapter", "writing")]
    with socket.socket() as sock:           # as a server binds: the port is free again
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()


# ---- refused before anything starts (no server) ------------------------------------------------
def test_a_host_other_than_localhost_needs_a_key(home, runs):
    with pytest.raises(ServeError) as caught:
        plan_serve(ServeRequest((runs["mat"],), host="0.0.0.0", port=0))
    assert "needs an API key" in caught.value.message and "--api-key" in caught.value.hint
    job = plan_serve(ServeRequest((runs["mat"],), host="0.0.0.0", port=0, api_key="k"))
    assert job.url.startswith("http://127.0.0.1:")


def test_runs_on_different_bases_are_refused_in_words(home, runs, tmp_path):
    other_base = make_tiny_model(tmp_path / "other-llama", seed=1)
    other = tmp_path / "other-run"
    shutil.copytree(runs["door"], other)
    config = yaml.safe_load((other / "config.yaml").read_text())
    config["model"] = str(other_base)
    (other / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ServeError) as caught:
        plan_serve(ServeRequest((runs["mat"], other), port=0))
    assert "mat was trained on" in caught.value.message and "but other-run on" in caught.value.message
    assert "one server serves the adapters of one base model" in caught.value.message
    assert "separately" in caught.value.hint


def test_a_run_without_an_adapter_and_a_wrong_base_gguf_are_refused(home, runs, tmp_path):
    empty = tmp_path / "unfinished"
    empty.mkdir()
    shutil.copy(runs["mat"] / "config.yaml", empty / "config.yaml")
    with pytest.raises(ServeError, match="unfinished has no final adapter"):
        plan_serve(ServeRequest((empty,), port=0))
    with pytest.raises(ServeError, match="is not a .gguf file"):
        plan_serve(ServeRequest((runs["mat"],), base=tmp_path / "nope.gguf", port=0))


def test_instances_share_one_when_their_contexts_would_not_fit_in_memory(home, runs, monkeypatch):
    import lorastudio.core.plans.serve as plans
    job = plan_serve(ServeRequest((runs["mat"], runs["door"]), port=0))
    assert job.separate and not any("share one llama.cpp instance" in n for n in job.notes)
    monkeypatch.setattr(plans, "available_memory", lambda: 2**20)       # 1 MiB free
    job = plan_serve(ServeRequest((runs["mat"], runs["door"]), port=0))
    assert not job.separate
    assert any("share one llama.cpp instance" in n and "lower --ctx or --parallel" in n for n in job.notes)


def test_same_names_are_told_apart(home, runs, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(runs["mat"], twin)
    job = plan_serve(ServeRequest((runs["mat"], twin), port=0))
    assert job.names == ["tiny-chat-llama", "mat", "mat-2"]


def test_a_base_gguf_given_or_recorded_at_import_is_served_as_is(home, runs, tmp_path):
    from tests.helpers.gguf_tiny import write_tiny_gguf
    from lorastudio.core.models.gguf_cache import RECORD_FILE
    given = tmp_path / "tiny-base.gguf"
    write_tiny_gguf(given, runs["model"])
    job = plan_serve(ServeRequest((runs["mat"],), base=given, port=0))
    assert job.base_gguf == given and not job.export_base and job.names == ["tiny-base", "mat"]
    other_arch = tmp_path / "qwen.gguf"
    write_tiny_gguf(other_arch, runs["model"], architecture="qwen2")
    with pytest.raises(ServeError, match="qwen.gguf is a qwen2 model but the runs were trained on a llama model"):
        plan_serve(ServeRequest((runs["mat"],), base=other_arch, port=0))
    imported = tmp_path / "imported-model"                  # a base imported from a .gguf names its source
    shutil.copytree(runs["model"], imported)
    (imported / RECORD_FILE).write_text(json.dumps({"source": str(given)}))
    run = tmp_path / "run-on-import"
    shutil.copytree(runs["mat"], run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"] = str(imported)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    job = plan_serve(ServeRequest((run,), port=0))
    assert job.base_gguf == given and not job.export_base


def test_runs_without_a_chat_template_are_chatted_with_as_they_trained(home, runs, tmp_path):
    from lorastudio.core.plans.serve import FALLBACK_TEMPLATE
    plain_model = tmp_path / "plain-model"
    shutil.copytree(runs["model"], plain_model)
    (plain_model / "chat_template.jinja").unlink()
    run = tmp_path / "plain-run"
    shutil.copytree(runs["mat"], run)
    (run / "adapter" / "chat_template.jinja").unlink()
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"] = str(plain_model)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    job = plan_serve(ServeRequest((run,), port=0))
    assert job.chat_template == FALLBACK_TEMPLATE and "fallback format" in job.notes[0]
    from types import SimpleNamespace
    from jinja2 import Template
    from lorastudio.core.data.chat_masks import _render_fallback
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "yo"}]
    rendered = Template(FALLBACK_TEMPLATE).render(messages=chat, eos_token="</s>", add_generation_prompt=False)
    assert rendered == _render_fallback(chat, SimpleNamespace(eos_token="</s>"))[0]     # what training saw
