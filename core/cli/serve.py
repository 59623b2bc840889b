"""`lorastudio serve RUN [RUN ...]`: runs' adapters on their base, over an OpenAI-compatible API.

Prints the URL, the model names and two examples (a curl line and an `openai` snippet), then a line
of traffic as requests are served. Ctrl+C stops the server (the port is free again). Exit status:
0 stopped, 1 the server failed (or could not start), 2 refused before anything started.
"""
from __future__ import annotations

import sys
from pathlib import Path

from lorastudio.core.cli.output import fail


def serve_arguments(p) -> None:
    from lorastudio.core.plans.serve import DEFAULT_CTX, DEFAULT_HOST, DEFAULT_PARALLEL, DEFAULT_PORT
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run folders (their final adapters); one base")
    p.add_argument("--base", type=Path, metavar="MODEL.gguf",
                   help="a GGUF of the runs' base to serve (default: the .gguf it was imported from, or the base "
                   "exported once as f16 and cached)")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on (default {DEFAULT_HOST}: this machine only; 0.0.0.0 needs --api-key)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    p.add_argument("--api-key", metavar="KEY", help="require 'Authorization: Bearer KEY' on every request")
    p.add_argument("--ctx", type=int, default=DEFAULT_CTX, help=f"tokens of context per request (default {DEFAULT_CTX})")
    p.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL,
                   help=f"requests decoded together (default {DEFAULT_PARALLEL})")
    p.add_argument("--threads", type=int, help="CPU threads for llama.cpp (default: every physical core but one)")
    p.add_argument("--shared-instance", action="store_true",
                   help="one llama.cpp instance for the base and every adapter: the least memory, but a request for "
                   "another adapter waits until the running ones end (default: one instance per model, answering "
                   "at the same time; the base's weights are mapped once)")


def serve(args) -> int:
    from lorastudio.core.errors import event_error_lines
    from lorastudio.core.plans.serve import (ServeError, ServeRequest, curl_example, plan_serve, python_example,
                                             start_serve, traffic_words)
    from lorastudio.core.runtime.follower import follow
    try:
        job = plan_serve(ServeRequest(tuple(args.runs), args.base, args.host, args.port, args.api_key, args.ctx,
                                      args.parallel, args.threads, args.shared_instance))
    except ServeError as exc:
        return fail(exc.message, exc.hint)
    for note in job.notes:
        print(f"note: {note}", flush=True)
    what = f"{len(job.runs)} adapter{'s' * (len(job.runs) != 1)} on {job.base_name}"
    print(f"Starting llama.cpp with {what}" + (" (the base is exported to GGUF once first)" if job.export_base else ""),
          flush=True)
    handle = start_serve(job)
    shown: dict = {}

    def on_event(ev: dict) -> None:
        if ev["type"] == "phase" and ev["name"] != "writing":         # not each tensor's progress
            print(f"· {ev.get('message') or ev['name']}", flush=True)
        elif ev["type"] == "serving":
            shown["url"] = ev["url"]
            example = job.runs[0].name
            print(f"\nServing on {ev['url']}  (OpenAI-compatible: /chat/completions, /completions, /models)")
            print(f"  models: {ev['models'][0]} (the base alone), " + ", ".join(ev["models"][1:]))
            if ev["host"] not in ("127.0.0.1", "localhost", "::1"):
                print(f"  listening on {ev['host']}: other machines use this machine's address instead of 127.0.0.1")
            print(f"\n  {curl_example(ev['url'], example, args.api_key)}\n")
            print("  " + python_example(ev["url"], example, args.api_key).replace("\n", "\n  ").rstrip())
            print("\nCtrl+C stops the server.", flush=True)
        elif ev["type"] == "traffic" and (ev["requests"] or ev["active"]):
            print(f"  {traffic_words(ev)}", flush=True)
        elif ev["type"] == "error":
            print(event_error_lines(ev), file=sys.stderr, flush=True)

    try:
        outcome = follow(handle, on_event, on_interrupt=lambda: print(
            "Stopping the server (Ctrl+C again to stop waiting)…", flush=True))
    except KeyboardInterrupt:
        print(f"Stopped waiting; the server (pid {handle.pid}) is stopping.")
        return 1
    if outcome.status == "stopped" and "url" in shown:
        end = outcome.end or {}
        print(f"Stopped. Served {end.get('requests', 0):,} requests, {end.get('tokens', 0):,} tokens.")
        return 0
    if outcome.status == "stopped":
        print("Stopped before the server started.")
        return 0
    if outcome.error is None:
        print(f"The server ended {outcome.status}; see {handle.log}", file=sys.stderr)
    return 1
