"""Serving runs over an OpenAI-compatible API: the checks here (torch-free), the server in a job.

`lorastudio serve RUN [RUN ...] [--base MODEL.gguf] [--host 127.0.0.1] [--port 8080] [--api-key KEY]
[--ctx N] [--parallel N] [--threads N]`. One base model and each run's adapter, served by llama.cpp
(xllamacpp); the Playground's llama.cpp engine loads the same files (`plan_models`):

    the base      a GGUF llama.cpp loads once: --base, else the .gguf the base was imported from
                  (core/models/gguf_cache records it), else the base folder exported once as f16 into
                  DATA/gguf-cache/<model>-<key>-f16.gguf (the key: the folder and its files' sizes and times)
    the adapters  each run's final adapter as a GGUF LoRA, written once into
                  RUN/gguf-cache/adapter-<key>-f16.gguf (the key: the adapter files' sizes and times;
                  a checkpoint's, for the Playground, step-<N>-<key>-f16.gguf)

Before anything loads: every run has a final adapter that a GGUF LoRA can carry, all runs share one
base (else refused in words), the base is an architecture the exporter writes and its tokenizer can
be written (or a GGUF is at hand), names are distinct, a host other than localhost comes with an API
key, and the port is free. The job (core/jobs/serve.py, `start_serve`, in DATA/serve/<stamp>/) makes
the missing files, starts llama.cpp and the front (core/engine/serving.py) and serves until stopped.
The API key travels to the job in its environment, never in job.yaml.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import shlex
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lorastudio.core.errors import UserError
from lorastudio.core.formatting import format_bytes
from lorastudio.core.runtime.launcher import JobHandle, launch, new_job_dir

SERVE_DIR, CACHE_DIR = "serve", "gguf-cache"
KEY_ENV = "LORASTUDIO_SERVE_API_KEY"        # the API key, handed to the job process in its environment
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_HOST, DEFAULT_PORT, DEFAULT_CTX, DEFAULT_PARALLEL = "127.0.0.1", 8080, 4096, 4
MIN_CTX, MAX_PARALLEL = 256, 64
SEPARATE_SHARE = 0.5        # separate instances when their contexts take at most this share of free memory
EXAMPLE_PROMPT = "Hello! Who are you?"
# LoRA Studio's fallback chat format (core/data/chat_masks.py) as a template for llama.cpp, for runs
# trained without a chat template: <|role|>\n{content}\n turns, the answer ending in the eos token.
FALLBACK_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
                     "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}"
                     "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


class ServeError(UserError):
    """The runs cannot be served as asked; nothing was started."""
    kind = "serve"


@dataclass(frozen=True)
class ServeRequest:
    """What the user asked for: `lorastudio serve` and the Serve panel build one."""
    runs: tuple[Path, ...]
    base: Path | None = None                # a GGUF of the runs' base to serve instead of exporting one
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT                # 0: any free port
    api_key: str | None = None
    ctx: int = DEFAULT_CTX                  # tokens of context each request may use
    parallel: int = DEFAULT_PARALLEL        # requests decoded together
    threads: int | None = None              # CPU threads (None: every physical core but one)
    shared: bool = False                    # one llama.cpp instance for the base and every adapter


@dataclass
class ServedRun:
    name: str               # the model name clients send
    run_dir: Path
    adapter: Path           # the PEFT adapter folder
    gguf: Path              # its GGUF LoRA (cached in the run folder; written by the job when missing)


@dataclass
class ServeJob:
    """A checked request (plan_serve): what the serve job's job.yaml says, and the key beside it."""
    runs: list[ServedRun]
    base_name: str
    model_dir: Path                 # the base model folder (config.json, the tokenizer)
    base_gguf: Path                 # the file llama.cpp loads
    export_base: bool               # write base_gguf from model_dir first (cached for the next time)
    host: str
    port: int
    ctx: int
    parallel: int
    chat_template: str | None       # the template the runs trained with (or FALLBACK_TEMPLATE)
    parameters: int = 0
    threads: int | None = None
    api_key: str | None = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)     # said before starting (templates that differ …)
    separate: bool = True           # each served name in a llama.cpp instance of its own (engine/serving.Instances)

    @property
    def names(self) -> list[str]:
        return [self.base_name, *(run.name for run in self.runs)]

    @property
    def url(self) -> str:
        return base_url(self.host, self.port)

    def to_spec(self) -> dict:
        spec = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items() if k != "api_key"}
        spec["runs"] = [{k: str(v) if isinstance(v, Path) else v for k, v in asdict(run).items()} for run in self.runs]
        spec["api_key"] = bool(self.api_key)            # whether one is set: the key itself is not written
        return spec


# ---- names, addresses and the examples shown to people ------------------------------------------
def is_local(host: str) -> bool:
    return host.strip().lower() in LOCAL_HOSTS


def base_url(host: str, port: int) -> str:
    """The URL a client on this machine uses (all interfaces are reached through 127.0.0.1)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"


def curl_example(url: str, model: str, api_key: str | None = None) -> str:
    """One shell line that asks `model` one question (bash, zsh)."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": EXAMPLE_PROMPT}]})
    auth = f" -H {shlex.quote('Authorization: Bearer ' + api_key)}" if api_key else ""
    return f"curl -s {url}/chat/completions -H 'Content-Type: application/json'{auth} -d {shlex.quote(body)}"


def python_example(url: str, model: str, api_key: str | None = None) -> str:
    """A Python snippet with the `openai` package that asks `model` the same question."""
    return ("from openai import OpenAI\n\n"
            f"client = OpenAI(base_url={json.dumps(url)}, api_key={json.dumps(api_key or 'none')})\n"
            "answer = client.chat.completions.create(\n"
            f"    model={json.dumps(model)},\n"
            f"    messages=[{{\"role\": \"user\", \"content\": {json.dumps(EXAMPLE_PROMPT)}}}],\n"
            ")\n"
            "print(answer.choices[0].message.content)\n")


def base_model_name(source: str, gguf: Path | None) -> str:
    """How the base is named in /v1/models: the GGUF's stem, else the folder or Hub id's last part."""
    return Path(gguf).stem if gguf else (Path(str(source).rstrip("/")).name or "base")


def distinct_names(names: list[str], taken: set[str]) -> list[str]:
    """`names` with a -2, -3 … where one repeats (or is taken by the base)."""
    out, seen = [], set(taken)
    for name in names:
        candidate, n = name, 2
        while candidate in seen:
            candidate, n = f"{name}-{n}", n + 1
        seen.add(candidate)
        out.append(candidate)
    return out


# ---- the cached GGUF files --------------------------------------------------------------------
def _stamp(paths) -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        with contextlib.suppress(OSError):
            st = path.stat()
            digest.update(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:10]


def base_cache_path(model_dir: Path, name: str, cache_root: Path | None = None) -> Path:
    """DATA/gguf-cache/<name>-<key>-f16.gguf: the base folder exported once for llama.cpp."""
    from lorastudio.core.runs.folders import data_home, slugify
    model_dir = Path(model_dir).resolve()
    files = [p for p in model_dir.iterdir() if p.suffix in (".json", ".safetensors", ".jinja")]
    root = Path(cache_root) if cache_root is not None else data_home()
    return root / CACHE_DIR / f"{slugify(name) or 'base'}-{_stamp([model_dir, *files])}-f16.gguf"


def adapter_cache_path(run_dir: Path, adapter: Path) -> Path:
    """RUN/gguf-cache/<adapter folder>-<key>-f16.gguf: the run's adapter (`adapter`, or a checkpoint's
    `step-000100`) as a GGUF LoRA."""
    files = [p for p in Path(adapter).iterdir() if p.name.startswith("adapter_")]
    return Path(run_dir) / CACHE_DIR / f"{Path(adapter).name}-{_stamp(files)}-f16.gguf"


# ---- the checks -------------------------------------------------------------------------------
def check_address(host: str, port: int, api_key: str | None) -> None:
    if not host.strip():
        raise ServeError("no host to listen on", f"use --host {DEFAULT_HOST} (this machine only) or 0.0.0.0 (the network)")
    if not is_local(host) and not api_key:
        raise ServeError(f"listening on {host} lets other machines in, so it needs an API key",
                         f"add --api-key KEY (clients send 'Authorization: Bearer KEY'), or use --host {DEFAULT_HOST}")
    if not 0 <= int(port) <= 65535:
        raise ServeError(f"port {port} is not a port number", "choose one from 1024 to 65535, or 0 for any free port")
    if port and not port_free(host, port):
        raise ServeError(f"port {port} on {host} is in use (another server, or a serve still running)",
                         "choose another with --port, or --port 0 for any free one")


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)     # as the server binds
        try:
            sock.bind((host, int(port)))
        except OSError:
            return False
    return True


def _read_run(run_dir: Path):
    from lorastudio.core.runs.export import ExportError, adapter_source, read_run
    try:
        summary = read_run(run_dir)
    except ExportError as exc:
        raise ServeError(exc.message, exc.hint) from None
    try:
        adapter = adapter_source(run_dir, None)
    except ExportError:
        raise ServeError(f"{run_dir.name} has no final adapter to serve",
                         "only a finished (or stopped) run's adapter is served: finish or resume its training") from None
    return summary, adapter


def _check_adapter(run_dir: Path, adapter: Path) -> None:
    from lorastudio.core.plans.export_gguf import check_adapter
    from lorastudio.core.runs.export import ExportError
    try:
        check_adapter(adapter)
    except ExportError as exc:
        raise ServeError(f"{run_dir.name}: {exc.message}", "llama.cpp serves plain LoRA adapters; merge this run "
                         "(`lorastudio merge`) and serve the merged model with llama.cpp instead") from None


def check_base_gguf(path: Path, config: dict) -> Path:
    from lorastudio.core.models.gguf_arch import ARCHITECTURES
    from lorastudio.core.models.gguf_vocab import read_gguf_string
    path = Path(path).expanduser().resolve()
    if path.suffix.lower() != ".gguf" or not path.is_file():
        raise ServeError(f"--base {path} is not a .gguf file", "give the runs' base model as a GGUF file, or leave "
                         "--base out to export it once")
    arch = read_gguf_string(path, "general.architecture")
    want = ARCHITECTURES.get(config.get("model_type", ""))
    if arch is None:
        raise ServeError(f"{path.name} is not a GGUF model file (no general.architecture)", "choose the base model's .gguf")
    if want is not None and arch != want.name:
        raise ServeError(f"{path.name} is a {arch} model but the runs were trained on a {want.name} model",
                         "give the GGUF of the base the runs were trained on")
    return path


@dataclass
class LlamaModels:
    """A base and adapters as llama.cpp will load them (plan_models): the Playground's llama.cpp
    engine uses this alone, `lorastudio serve` adds an address (ServeJob)."""
    runs: list[ServedRun]
    base_name: str
    model_dir: Path
    base_gguf: Path
    export_base: bool
    chat_template: str | None
    parameters: int
    context: int                    # the model's trained context length (0: unknown)
    notes: list[str]
    kv_per_token: int = 0           # bytes of llama.cpp's f16 key/value cache a token of context takes
    known_pre: str | None = None    # the pre-tokenizer name of the GGUF the base was imported from

    def contexts_fit(self, ctx: int, parallel: int) -> tuple[bool, int, int]:
        """Whether an instance of llama.cpp for the base and for each adapter, each with `parallel`
        contexts of `ctx` tokens, fits in the free memory (see SEPARATE_SHARE): (fits, their bytes, free bytes)."""
        need = (1 + len(self.runs)) * ctx * parallel * self.kv_per_token
        room = available_memory()
        return (not room or need <= SEPARATE_SHARE * room), need, room

    def to_spec(self) -> dict:
        spec = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        spec["runs"] = [{k: str(v) if isinstance(v, Path) else v for k, v in asdict(run).items()} for run in self.runs]
        return spec


def plan_models(run_dirs, base: Path | None = None, checkpoint: int | None = None,
                cache_root: Path | None = None, use_source: bool = True) -> LlamaModels:
    """Which GGUF files llama.cpp loads for these runs (one base): checks and cache paths, nothing
    written. `checkpoint`: the first run's checkpoint instead of its final adapter. `cache_root`:
    where DATA/gguf-cache is (default the data folder). `use_source`: a base imported from a .gguf is
    served from that file (as it is, quantized: `lorastudio serve`); else it is exported as f16 like
    any other (the Playground: answers as close to training's as llama.cpp gives — on the demo's Q4_1
    base, 11 of 12 held-out greedy answers equal transformers' from f16, 3 of 12 from the Q4_1 file:
    tests/bench/bench_playground_engines.py). ServeError in words when it cannot be."""
    from lorastudio.core.fit.memory_model import Shape
    from lorastudio.core.models.gguf_arch import architecture_problem
    from lorastudio.core.models.gguf_vocab import VocabError, chat_template, read_vocab, tokenizer_folder
    from lorastudio.core.models.info import ModelError, read_model_info
    from lorastudio.core.plans.export_gguf import base_gguf_source
    from lorastudio.core.runs.export import ExportError, adapter_source
    run_dirs = list(dict.fromkeys(Path(r).expanduser().resolve() for r in run_dirs))
    if not run_dirs:
        raise ServeError("no runs to serve", "name one or more run folders: lorastudio serve RUN [RUN ...]")
    runs, info, first = [], None, None
    for run_dir in run_dirs:
        summary, adapter = _read_run(run_dir)
        if checkpoint is not None and run_dir == run_dirs[0]:
            try:
                adapter = adapter_source(run_dir, checkpoint)
            except ExportError as exc:
                raise ServeError(exc.message, exc.hint) from None
        try:
            run_info = read_model_info(summary.config.model)
        except ModelError as exc:
            raise ServeError(f"{run_dir.name}: base model: {exc.message}", exc.hint) from None
        if info is None:
            info, first = run_info, (run_dir, summary.config.model)
        elif run_info.path.resolve() != info.path.resolve():
            raise ServeError(f"{first[0].name} was trained on {first[1]} but {run_dir.name} on {summary.config.model}; "
                             "one server serves the adapters of one base model",
                             "serve the runs of each base separately, each on its own --port")
        _check_adapter(run_dir, adapter)
        runs.append((run_dir, summary.config.name or run_dir.name, adapter))
    problem = architecture_problem(info.config, converter=False)      # the base, if needed, by our writer
    if problem:
        raise ServeError(*problem)
    source, known_pre = base_gguf_source(info.path)
    vocab_problem = None
    if base is None and not (source and use_source):
        try:
            read_vocab(info.path, int(info.config["vocab_size"]), (info.path,), known_pre, info.config)
        except VocabError as exc:
            vocab_problem = exc
    if base is not None:
        base_gguf, export_base = check_base_gguf(Path(base), info.config), False
    elif source and (use_source or vocab_problem is not None):
        base_gguf, export_base = Path(source), False
    elif vocab_problem is not None:
        raise ServeError(vocab_problem.message, f"{vocab_problem.hint}; or pass --base with a GGUF of the base model")
    else:
        base_gguf, export_base = None, True
    base_name = base_model_name(first[1], base_gguf if base_gguf is not None else source)
    if export_base:
        base_gguf = base_cache_path(info.path, base_name, cache_root)
        export_base = not base_gguf.is_file()
    names = distinct_names([name for _r, name, _a in runs], {base_name})
    served = [ServedRun(name, run_dir, adapter, adapter_cache_path(run_dir, adapter))
              for (run_dir, _n, adapter), name in zip(runs, names)]
    templates = {chat_template(tokenizer_folder(run.adapter, info.path), info.path) for run in served}
    notes = []
    if len(templates) > 1:
        notes.append("the runs trained with different chat templates; the first run's is used for all")
    template = chat_template(tokenizer_folder(served[0].adapter, info.path), info.path)
    if template is None:
        template = FALLBACK_TEMPLATE
        notes.append("the runs trained without a chat template: chats are written in LoRA Studio's fallback "
                     "format (<|user|>, <|assistant|> headers), as in training")
    from lorastudio.core.runs.output_paths import check_output     # the one output-path rule
    for run in served:
        if not run.gguf.is_file():
            check_output(run.gguf, "a cached GGUF LoRA", True, error=ServeError, inside=run.run_dir, file=True)
    if export_base:
        from lorastudio.core.runs.folders import data_home
        check_output(base_gguf, "the base model's cached GGUF", True, error=ServeError, file=True,
                     inside=Path(cache_root) if cache_root is not None else data_home())
        from lorastudio.core.disk import check_room
        check_room(base_gguf.parent, 2 * info.num_parameters + 4 * 2**20, "the base model's GGUF (f16)",
                   "or pass --base with a GGUF of the base model", error=ServeError)
    shape = Shape.of(info)
    return LlamaModels(served, base_name, info.path, base_gguf, export_base, template, info.num_parameters,
                       int(info.config.get("max_position_embeddings") or 0), notes, 2 * 2 * shape.layers * shape.kv_dim,
                       known_pre)


def plan_serve(request: ServeRequest) -> ServeJob:
    """The checks before anything loads; a ServeError says what to change. Off the GUI thread."""
    if not request.runs:
        raise ServeError("no runs to serve", "name one or more run folders: lorastudio serve RUN [RUN ...]")
    ctx, parallel = int(request.ctx), int(request.parallel)
    if ctx < MIN_CTX:
        raise ServeError(f"--ctx {ctx} is too small", f"give each request at least {MIN_CTX} tokens (default {DEFAULT_CTX})")
    if not 1 <= parallel <= MAX_PARALLEL:
        raise ServeError(f"--parallel {parallel} is out of range", f"serve 1 to {MAX_PARALLEL} requests at once")
    models = plan_models(request.runs, request.base)
    if models.context >= MIN_CTX:
        ctx = min(ctx, models.context)          # no more context than the model was made for
    host = request.host.strip()
    check_address(host, int(request.port), request.api_key)
    if request.threads is not None and int(request.threads) < 1:
        raise ServeError(f"--threads {request.threads} is not a number of threads", "give 1 or more, or leave it out")
    notes = list(models.notes)
    separate = not request.shared and bool(models.runs)
    if separate:
        separate, context, room = models.contexts_fit(ctx, parallel)
        if not separate:
            notes.append(f"the base and the adapters share one llama.cpp instance: a context of its own for each "
                         f"({format_bytes(context)} in all) would not fit in the free memory ({format_bytes(room)}); "
                         "a request for another adapter waits until the running ones end (lower --ctx or --parallel "
                         "to give each its own)")
    return ServeJob(models.runs, models.base_name, models.model_dir, models.base_gguf, models.export_base, host,
                    int(request.port), ctx, parallel, models.chat_template, models.parameters,
                    int(request.threads) if request.threads else None, request.api_key or None, notes, separate)


def available_memory() -> int:
    """Bytes of memory free for new work (0: unknown)."""
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except Exception:       # noqa: BLE001 — an unknown machine: no limit is judged
        return 0


def start_serve(job: ServeJob) -> JobHandle:
    """Start the serve job in a fresh DATA/serve/<stamp>/ folder; the API key goes in its environment."""
    from lorastudio.core.runs.folders import data_home
    return launch("serve", new_job_dir(data_home() / SERVE_DIR), job.to_spec(),
                  env={KEY_ENV: job.api_key} if job.api_key else None)


def traffic_words(ev: dict) -> str:
    """A `traffic` event in one line: requests served, tokens, speed."""
    speed = f" · {ev['tokens_per_s']:.1f} tokens/s per stream" if ev.get("tokens_per_s") else ""
    busy = f" · {ev['active']} in progress" if ev.get("active") else ""
    return f"{ev['requests']:,} request{'s' * (ev['requests'] != 1)} served · {ev['tokens']:,} tokens{speed}{busy}"
