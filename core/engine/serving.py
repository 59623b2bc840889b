"""Serving a base model and its LoRA adapters over an OpenAI-compatible API: llama.cpp's server
(through xllamacpp, in this process) behind a thin front.

llama.cpp does all the work: it batches requests continuously, applies the chat template, samples
and streams. `Instances` decides how many llama.cpp servers there are: by default one per served
model (the base alone, and the base with each adapter applied), because llama.cpp batches only
requests whose adapters are the same — in one shared instance a request for another adapter waits
until the running ones end (4.2 s for a first token against 0.3 s: docs/benchmarks.md). The
instances map the base's file once; each has its own key/value cache. Shared (`--shared-instance`,
or when the contexts would not fit in memory): one server loads every adapter with
`lora_init_without_apply` (loaded, applied to nothing) and a request picks its own through llama.cpp's
`lora` field (`[{"id": i, "scale": s}]`). Such a request always names every adapter, the unused ones
at scale 0: llama.cpp clears a slot's cached prompt when the adapters change, but not for a request
without a `lora` list (or an empty one), which would reuse a prompt computed with another adapter.
Each server listens on 127.0.0.1 at a port of its choosing, behind an API key only this process knows.

The front (`Front`, the standard library's ThreadingHTTPServer) is what clients reach, because
llama.cpp's server serves one model under one name: it ignores a request's `model`, lists only that
name in /v1/models, and knows adapters only by index. The front checks the client's API key (401),
answers /v1/models with the base and each adapter by its run's name, sends a request to the instance
of the `model` it names (404 naming the served models for an unknown one), and passes its answer
back unchanged (streamed answers chunk by chunk, as they come). It counts the requests served;
tokens and speed come from llama.cpp's own metrics.

The Playground's llama.cpp engine (core/jobs/generate.py) uses the same Instances without the
front: `stream_sides` asks for every side of a prompt at once (the base and each adapter, the prompt
given as the token ids the transformers engine would feed), each streamed back through `on_token`.
"""
from __future__ import annotations

import contextlib
import hmac
import http.client
import json
import os
import secrets
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from lorastudio.core.errors import UserError

ROUTES = ("/v1/chat/completions", "/chat/completions", "/v1/completions", "/completions")
MODEL_ROUTES = ("/v1/models", "/models")
HEALTH_ROUTES = ("/health", "/v1/health")
MAX_BODY = 64 * 2**20
UPSTREAM_TIMEOUT_S = 3600.0         # a long answer that is not streamed (llama.cpp's own read timeout)
SIDE_POLL_S = 0.05                  # how often the Playground's sides look for a stop


class ServingError(UserError):
    kind = "serve"


@dataclass(frozen=True)
class Served:
    """One name clients may send as `model`, and the llama.cpp instance that answers it: the base alone
    (run None), or the base with a run's adapter — applied in an instance of its own (lora None), or
    chosen per request among the instance's adapters (lora: its index)."""
    name: str
    llama: "LlamaServer" = field(compare=False, repr=False)
    lora: int | None = None
    run: str | None = None          # the run folder the adapter comes from


# ---- llama.cpp ----------------------------------------------------------------------------------
def llama_error(log: Path | None) -> str:
    """llama.cpp's own reason for a failed start: its last error lines in the worker log."""
    try:
        with open(log, "rb") as fh:
            fh.seek(max(0, fh.seek(0, 2) - 16384))
            lines = fh.read().decode("utf-8", errors="replace").splitlines()
    except (OSError, TypeError):
        return ""
    errors = [line.split(" E ", 1)[1].strip() for line in lines if " E " in line]
    reasons = [e for e in errors if "error" in e.lower() or "failed" in e.lower()]
    return (reasons or errors or [""])[0]


def default_threads() -> int:
    """Every physical core but one. llama.cpp's threads wait for each other at every step: one that
    loses its core to another process (the window, a training run) stalls them all — on a 2-core
    laptop with a busy second core, two threads decode ~10x slower than one (tests/bench/bench_serve.py)."""
    import psutil
    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 2
    return max(1, cores - 1)


class LlamaServer:
    """llama.cpp's server in this process: `address` (http://127.0.0.1:PORT), `key`, `metrics()`, `close()`."""

    def __init__(self, model: Path, adapters: list[Path], ctx: int, parallel: int, chat_template: str | None = None,
                 alias: str = "base", threads: int | None = None, log: Path | None = None, applied: bool = False):
        import xllamacpp
        self.key = secrets.token_urlsafe(24)
        # how many adapters a request chooses among (`lora` in its body); none when they are applied
        self.switchable = 0 if applied else len(adapters)
        params = xllamacpp.CommonParams()
        params.model.path = str(model)
        params.model_alias = {alias}
        params.n_parallel = int(parallel)
        params.n_ctx = int(ctx) * int(parallel)         # each request gets `ctx` tokens of the cache
        params.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(str(a), 1.0 if applied else 0.0) for a in adapters]
        params.lora_init_without_apply = not applied    # loaded once; a request picks its own
        # llama.cpp keys its host-memory prompt cache by tokens alone: a prompt computed with one
        # adapter could be restored for another. Each slot's own cache is kept (and llama.cpp clears
        # it when a request's adapters differ from the slot's last ones).
        params.cache_ram_mib = 0
        params.cache_idle_slots = False                 # (it needs the host-memory cache)
        params.endpoint_metrics = True
        params.api_keys = [self.key]
        params.hostnames = ["127.0.0.1"]
        params.port = 0
        params.ui = False
        params.fit_params = False                       # no trial load to fit a GPU's memory
        params.verbosity = 2                            # warnings and errors go to the worker log
        if chat_template:
            params.use_jinja = True
            params.chat_template = chat_template
        params.cpuparams.n_threads = params.cpuparams_batch.n_threads = int(threads or default_threads())
        try:
            self.server = xllamacpp.Server(params)
        except (RuntimeError, ValueError) as exc:
            reason = llama_error(log) or str(exc)
            raise ServingError(f"llama.cpp could not start the model: {reason}",
                               f"see {log} for llama.cpp's log" if log else "run with a smaller --ctx or "
                               "--parallel, or check the GGUF files") from None
        self.address = self.server.listening_address
        split = urlsplit(self.address)
        self.host, self.port = split.hostname, split.port

    def metrics(self) -> dict[str, float]:
        """llama.cpp's Prometheus metrics by short name (tokens_predicted_total, predicted_tokens_seconds,
        requests_processing …). Reading them starts llama.cpp's next averaging window."""
        out = {}
        for line in self.server.handle_metrics().splitlines():
            if line.startswith("llamacpp:"):
                name, _, value = line[len("llamacpp:"):].partition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
        return out

    def close(self) -> None:
        """Stop llama.cpp's loop and its listener (the Server's destructor joins them)."""
        self.server = None


def lora_choice(lora: int | None, adapters: int) -> list[dict]:
    """llama.cpp's `lora` field choosing adapter `lora` (None: none) among an instance's `adapters`:
    every one named, the others at scale 0 (an empty list would let a slot keep another adapter's prompt)."""
    return [{"id": i, "scale": 1.0 if i == lora else 0.0} for i in range(adapters)]


class Instances:
    """The llama.cpp instances behind the served names (`served`: the base's first, then each adapter's).

    `separate`: one instance per served name, each adapter applied in its own, so requests for different
    adapters are decoded at the same time (llama.cpp batches only requests with the same adapters: in one
    shared instance, a request for another adapter waits until the running ones end). The instances map
    the base's file (mmap), so on a CPU its weights are in memory once; each has its own context, and
    the threads are divided between them. Not `separate`: one instance holds every adapter and a request
    picks its own — the least memory (a GPU build would otherwise copy the base once per instance)."""

    def __init__(self, base: Path, names: list[str], adapters: list[Path], runs: list[str | None], ctx: int,
                 parallel: int, separate: bool, chat_template: str | None = None, threads: int | None = None,
                 log: Path | None = None):
        self.servers: list[LlamaServer] = []
        self.served: list[Served] = []
        try:
            if separate:
                each = threads or max(1, default_threads() // (1 + len(adapters)))
                for name, adapter, run in zip(names, [None, *adapters], [None, *runs]):
                    llama = LlamaServer(base, [adapter] if adapter else [], ctx, parallel, chat_template, name,
                                        each, log, applied=True)
                    self.servers.append(llama)
                    self.served.append(Served(name, llama, None, run))
            else:
                llama = LlamaServer(base, adapters, ctx, parallel, chat_template, names[0], threads, log)
                self.servers.append(llama)
                self.served = [Served(names[0], llama)] + [Served(name, llama, i, run) for i, (name, run)
                                                            in enumerate(zip(names[1:], runs))]
        except BaseException:
            self.close()
            raise

    def metrics(self) -> dict[str, float]:
        """The instances' metrics together: counts summed; the speed per stream, the mean of those that generated."""
        each = [llama.metrics() for llama in self.servers]
        out = {name: sum(m.get(name, 0.0) for m in each) for name in ("tokens_predicted_total", "requests_processing")}
        speeds = [m["predicted_tokens_seconds"] for m in each if m.get("predicted_tokens_seconds", 0) > 0]
        out["predicted_tokens_seconds"] = sum(speeds) / len(speeds) if speeds else 0.0
        return out

    def close(self) -> None:
        for llama in self.servers:
            llama.close()
        self.servers = []


# ---- the front --------------------------------------------------------------------------------
def error_body(status: int, message: str, kind: str, code=None) -> dict:
    return {"error": {"message": message, "type": kind, "code": code if code is not None else status}}


class Front(ThreadingHTTPServer):
    """The address clients reach; see the module's docstring."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, models: list[Served], api_key: str | None = None):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.models, self.api_key = {m.name: m for m in models}, api_key or None
        self.base = next(m for m in models if m.run is None)
        self.created = int(time.time())
        self.served: Counter = Counter()
        self.lock = threading.Lock()
        super().__init__((host, int(port)), FrontHandler)
        self.port = self.server_address[1]

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2}, name="serve-front",
                                  daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """Stop accepting and close the listening socket (the port is free again)."""
        self.shutdown()
        self.server_close()

    def count(self, name: str) -> None:
        with self.lock:
            self.served[name] += 1

    def counts(self) -> dict[str, int]:
        with self.lock:
            return dict(self.served)

    def model_list(self) -> dict:
        return {"object": "list", "data": [self.model_card(m) for m in self.models.values()]}

    def model_card(self, m: Served) -> dict:
        card = {"id": m.name, "object": "model", "created": self.created, "owned_by": "lorastudio"}
        if m.run is not None:
            card.update(parent=self.base.name, root=self.base.name)
        return card


class FrontHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LoRAStudio"
    server: Front

    def log_message(self, format, *args) -> None:     # noqa: A002 — no line per request in the worker log
        pass

    # ---- routes ------------------------------------------------------------------------------
    def do_GET(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        if path in HEALTH_ROUTES:
            return self.forward("GET", "/health", None, self.server.base, count=False)
        if not self.authorized():
            return
        if path in MODEL_ROUTES:
            return self.send_json(200, self.server.model_list())
        for prefix in MODEL_ROUTES:
            if path.startswith(prefix + "/"):
                name = unquote(path[len(prefix) + 1:])
                model = self.server.models.get(name)
                return self.send_json(200, self.server.model_card(model)) if model else self.unknown_model(name)
        self.send_json(404, error_body(404, f"no route GET {path}", "invalid_request_error"))

    def do_POST(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        if not self.authorized():
            return
        if path not in ROUTES:
            return self.send_json(404, error_body(404, f"no route POST {path}; this server answers "
                                                  f"{', '.join(ROUTES[::2])} and GET /v1/models", "invalid_request_error"))
        body = self.read_json()
        if body is None:
            return
        name = body.get("model")
        model = self.server.base if name in (None, "") else self.server.models.get(name)
        if model is None:
            return self.unknown_model(name)
        if model.llama.switchable:
            body["lora"] = lora_choice(model.lora, model.llama.switchable)
        self.forward("POST", path, body, model)

    # ---- pieces ------------------------------------------------------------------------------
    def authorized(self) -> bool:
        key = self.server.api_key
        if key is None:
            return True
        given = self.headers.get("Authorization", "")
        given = given[7:].strip() if given[:7].lower() == "bearer " else self.headers.get("X-Api-Key", "")
        if given and hmac.compare_digest(given.encode(), key.encode()):
            return True
        self.send_json(401, error_body(401, "Invalid or missing API key: send 'Authorization: Bearer KEY'",
                                       "authentication_error"))
        return False

    def unknown_model(self, name) -> None:
        names = ", ".join(self.server.models)
        self.send_json(404, error_body(404, f"The model '{name}' is not served here. Served models: {names}",
                                       "invalid_request_error", "model_not_found"))

    def read_json(self) -> dict | None:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.send_json(411, error_body(411, "send the request body with a Content-Length", "invalid_request_error"))
            return None
        if length > MAX_BODY:
            self.send_json(413, error_body(413, "the request body is too large", "invalid_request_error"))
            return None
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError as exc:
            self.send_json(400, error_body(400, f"the request body is not JSON ({exc})", "invalid_request_error"))
            return None
        if not isinstance(body, dict):
            self.send_json(400, error_body(400, "the request body must be a JSON object", "invalid_request_error"))
            return None
        return body

    def send_json(self, status: int, data: dict) -> None:
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(raw)))
        if status >= 400:                   # the request's body may be unread: this connection ends here
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(raw)

    def forward(self, method: str, path: str, body: dict | None, model: Served, count: bool = True) -> None:
        """Hand the request to `model`'s llama.cpp; its answer goes back as it comes (a stream chunk by chunk)."""
        llama = model.llama
        upstream = http.client.HTTPConnection(llama.host, llama.port, timeout=UPSTREAM_TIMEOUT_S)
        headers = {"Authorization": f"Bearer {llama.key}", "Content-Type": "application/json",
                   "Accept": self.headers.get("Accept", "*/*")}
        answered = False
        try:
            upstream.request(method, path, body=json.dumps(body).encode() if body is not None else None, headers=headers)
            response = upstream.getresponse()
            kind = response.getheader("Content-Type", "application/json")
            if "text/event-stream" in kind:
                self.send_response(response.status)
                self.send_header("Content-Type", kind)
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                answered = True
                while chunk := response.read1(65536):
                    self.wfile.write(b"%X\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")
            else:
                data = response.read()
                self.send_response(response.status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                answered = True
                self.wfile.write(data)
            if count and response.status == 200:
                self.server.count(model.name)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True            # the client left: closing upstream cancels llama.cpp's work
        except (OSError, http.client.HTTPException) as exc:
            self.close_connection = True
            if not answered:
                self.send_json(502, error_body(502, f"llama.cpp did not answer ({exc})", "server_error"))
        finally:
            upstream.close()


# ---- the Playground's sides -------------------------------------------------------------------
@dataclass
class SideAnswer:
    """One side's streamed answer from llama.cpp: its text, tokens generated, whether it finished."""
    text: str = ""
    tokens: int = 0
    done: bool = False
    finished: float | None = None       # time.time() when it ended


def completion_body(prompt_ids: list[int], settings: dict, lora: int | None, adapters: int) -> dict:
    """llama.cpp's /completion request for one side: the prompt as token ids (tokenized as the
    transformers engine does), the Playground's sampling (top-p only, as core/engine/inference.py
    samples; greedy at temperature 0), every adapter named (the others at scale 0)."""
    return {"prompt": list(prompt_ids), "n_predict": int(settings.get("max_new_tokens", 128)),
            "temperature": float(settings.get("temperature", 0.0)), "top_p": float(settings.get("top_p", 1.0)),
            "top_k": 0, "min_p": 0.0, "seed": int(settings.get("seed", 0)), "stream": True, "cache_prompt": True,
            "lora": lora_choice(lora, adapters)}


def stream_side(llama: LlamaServer, body: dict, on_piece, stop: threading.Event) -> SideAnswer:
    """Stream one /completion from llama.cpp, `on_piece(text)` per piece of its text (llama.cpp sends
    whole characters only); closing the connection when `stop` is set cancels its work."""
    answer = SideAnswer()
    upstream = http.client.HTTPConnection(llama.host, llama.port, timeout=UPSTREAM_TIMEOUT_S)
    try:
        upstream.request("POST", "/completion", body=json.dumps(body).encode(),
                         headers={"Authorization": f"Bearer {llama.key}", "Content-Type": "application/json"})
        response = upstream.getresponse()
        if response.status != 200:
            detail = response.read().decode("utf-8", errors="replace")
            with contextlib.suppress(ValueError, KeyError, TypeError):
                detail = json.loads(detail)["error"]["message"]
            raise ServingError(f"llama.cpp refused the prompt: {detail}", "shorten the prompt or the answer")
        pending = b""
        while not stop.is_set() and not answer.done:
            chunk = response.read1(65536)
            if not chunk:
                break
            pending += chunk
            *events, pending = pending.split(b"\n\n")
            for event in events:
                for line in event.splitlines():
                    if line.startswith(b"data: "):
                        on_data(json.loads(line[6:]), answer, on_piece)
    finally:
        upstream.close()
    return answer


def on_data(data: dict, answer: SideAnswer, on_piece) -> None:
    """One streamed chunk of llama.cpp's: a piece of text; the last says how many tokens and why it stopped."""
    piece = data.get("content") or ""
    if piece:
        answer.text += piece
        on_piece(piece)
    answer.tokens = int(data.get("tokens_predicted") or answer.tokens)
    if data.get("stop"):
        if data.get("stop_type") == "eos" and answer.tokens:
            answer.tokens -= 1          # the end-of-turn token is not part of the answer (nor of its count)
        answer.done, answer.finished = True, time.time()


def stream_sides(sides: dict[str, Served], prompt_ids: list[int], settings: dict, on_token,
                 should_stop) -> dict[str, SideAnswer]:
    """Every side at once, each from its own llama.cpp instance (Instances) or, sharing one, each
    with its adapter chosen: `sides` maps a side's name to what it is served as. `on_token(side, text)`
    is called from one thread at a time; `should_stop()` is asked here, in the caller's thread, every
    SIDE_POLL_S."""
    stop, lock = threading.Event(), threading.Lock()
    results: dict[str, SideAnswer | BaseException] = {}

    def one(side: str, served: Served) -> None:
        def piece(text: str) -> None:
            with lock:
                on_token(side, text)
        try:
            body = completion_body(prompt_ids, settings, served.lora, served.llama.switchable)
            results[side] = stream_side(served.llama, body, piece, stop)
        except BaseException as exc:        # noqa: BLE001 — raised in the caller's thread below
            results[side] = exc
            stop.set()
    threads = [threading.Thread(target=one, args=item, name=f"side-{item[0]}", daemon=True) for item in sides.items()]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        if should_stop():
            stop.set()
        for thread in threads:
            thread.join(SIDE_POLL_S)
    for side in sides:
        if isinstance(results.get(side), BaseException):
            raise results[side]
    return {side: results.get(side) or SideAnswer() for side in sides}
