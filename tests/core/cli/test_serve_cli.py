"""`lorastudio serve` as a person runs it: refusals in words (exit 2), and a real server in a terminal's
process group that prints its URL and examples, serves the `openai` client, and stops on Ctrl+C with
the port free again (exit 0)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.helpers.tiny_models import add_chat_template, make_tiny_model, train_tiny_run
from tests.helpers.training import jsonl

from lorastudio.core import cli
from lorastudio.core.runtime.launcher import free_port


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-cli")
    model = add_chat_template(make_tiny_model(root / "tiny-chat-llama"))
    data = jsonl(root / "d.jsonl", [{"messages": [{"role": "user", "content": "hi"},
                                                  {"role": "assistant", "content": "on the mat"}]}] * 8)
    return train_tiny_run(root / "runs" / "mat", model, data, name="mat", quantization="none", training__max_steps=2)


def test_listening_beyond_this_machine_without_a_key_is_refused(run, runs_home, capfd):
    code = cli.main(["serve", str(run), "--host", "0.0.0.0"])
    err = capfd.readouterr().err
    assert code == 2
    assert "error: listening on 0.0.0.0 lets other machines in, so it needs an API key" in err
    assert "hint: add --api-key KEY" in err
    assert not (runs_home / "serve").exists()           # nothing started


def test_a_bad_ctx_and_a_missing_run_are_refused(run, runs_home, tmp_path, capfd):
    assert cli.main(["serve", str(run), "--ctx", "16"]) == 2
    assert "--ctx 16 is too small" in capfd.readouterr().err
    assert cli.main(["serve", str(tmp_path / "nope")]) == 2
    assert "error: " in (err := capfd.readouterr().err) and "nope" in err


@pytest.mark.slow
def test_serve_prints_the_url_serves_and_stops_on_ctrl_c(run, runs_home):
    import openai
    port = free_port()
    env = {**os.environ, "LORASTUDIO_HOME": str(runs_home), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "lorastudio.app.launcher", "serve", str(run), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               start_new_session=True)          # its own process group, as in a terminal
    lines, deadline = [], time.monotonic() + 120
    try:
        while not any("Ctrl+C stops the server" in line for line in lines):
            assert time.monotonic() < deadline and process.poll() is None, "".join(lines)
            lines.append(process.stdout.readline())
        printed = "".join(lines)
        url = f"http://127.0.0.1:{port}/v1"
        assert f"Serving on {url}" in printed and "models: tiny-chat-llama (the base alone), mat" in printed
        assert f"curl -s {url}/chat/completions" in printed and "from openai import OpenAI" in printed
        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)
        answer = client.chat.completions.create(model="mat", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert answer.choices[0].finish_reason in ("stop", "length")
        time.sleep(1.5)                                         # a traffic line
        os.killpg(process.pid, signal.SIGINT)                   # Ctrl+C reaches the CLI and the job
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, printed + rest
    assert "1 request served" in rest and "Stopping the server" in rest and "Stopped. Served 1 requests" in rest
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
