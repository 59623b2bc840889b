"""`lorastudio inspect DATA --model MODEL`: what a data file trains on — format, lengths, masks.

The inspection runs as a job (core/jobs/inspect_data.py: it needs the model's tokenizer) in a
fresh folder under DATA_HOME/inspections, removed afterwards (kept when the job crashed: its
worker.log says why); this command follows its journal and prints its report.
Exit status: 0 shown, 2 the input was refused (bad data, an unusable model, a bad option: with
--json, {"error", "hint"} on stdout), 1 the inspector itself failed.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from lorastudio.core.runtime.failures import INPUT_KINDS



def inspect_arguments(p) -> None:
    p.add_argument("data", type=Path, help="the data file")
    p.add_argument("--model", required=True, help="model folder or cached Hub id (for its tokenizer)")
    p.add_argument("--example", type=int, default=1, help="which example to show (1-based)")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--format", default="auto")
    p.add_argument("--columns", default="", help="column mapping, e.g. prompt=question,completion=reply")
    p.add_argument("--train-on", default="completions", choices=("completions", "all"))
    p.add_argument("--too-long", default="truncate", choices=("truncate", "drop"))
    p.add_argument("--skip-bad-rows", action="store_true")
    p.add_argument("--text-blocks", default="paragraph", choices=("paragraph", "file"),
                   help="for .txt files: one example per paragraph, or the whole file as one")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-color", action="store_true")


# ---- printing the report ----------------------------------------------------------------------
def marked_text(tokens: list[dict], color: bool) -> str:
    """The example's text with trained tokens highlighted (colour) or bracketed ⟦…⟧."""
    out, inside = [], False
    for tok in tokens:
        if tok["trained"] != inside:
            out.append(("\x1b[42;30m" if tok["trained"] else "\x1b[0m") if color else
                       ("⟦" if tok["trained"] else "⟧"))
            inside = tok["trained"]
        out.append(tok["text"])
    if inside:
        out.append("\x1b[0m" if color else "⟧")
    return "".join(out)


def print_report(r: dict, color: bool, out=None) -> None:
    out = out or sys.stdout
    pct = 100 * r["trained_tokens"] / r["tokens"] if r["tokens"] else 0
    L = r["lengths"]
    lines = [
        f"File:      {r['file']}",
        f"Format:    {r['reason']}",
        f"Template:  {'the model' + chr(39) + 's chat template' if r['chat_template'] == 'model' else 'fallback (the model has no chat template)'}",
        f"Examples:  {r['examples']:,} read, {r['usable_examples']:,} usable",
        f"Tokens:    {r['tokens']:,} in total, {r['trained_tokens']:,} trained ({pct:.1f} %)",
        f"Lengths:   min {L['min']} · median {L['p50']} · p90 {L['p90']} · p99 {L['p99']} · max {L['max']} tokens",
        f"seq_len {r['seq_len']}: {r['truncated']} truncated · {r['dropped_too_long']} dropped (too long) · "
        f"{r['dropped_no_target']} dropped (nothing left to train)",
    ]
    if r.get("dropped_empty_answer"):
        lines.append(f"Empty answers: {r['dropped_empty_answer']:,} examples have an empty assistant answer "
                     "(completion) and were dropped: they teach nothing")
    if r["bad_rows"]:
        lines.append(f"Bad rows skipped: {len(r['bad_rows'])}: " +
                     "; ".join(f"{b['where']} ({b['problem']})" for b in r["bad_rows"][:10]))
    lines += [f"Note: {n}" for n in r["notes"]]
    ex = r["example"]
    lines += ["", f"Example {ex['index']} ({ex['where']}, {ex['status']}): {ex['total']} tokens, "
              f"{ex['trained']} trained {'(highlighted)' if color else '(inside ⟦ ⟧)'}",
              marked_text(ex["tokens"], color)]
    if r.get("pair"):             # preference pairs: the example above is the chosen side
        rejected = r["pair"]["rejected"]
        lines[-2] = lines[-2].replace(f"Example {ex['index']} (", f"Example {ex['index']}, chosen (", 1)
        lines += ["", f"Example {ex['index']}, rejected: {rejected['total']} tokens, {rejected['trained']} trained",
                  marked_text(rejected["tokens"], color)]
    out.write("\n".join(lines) + "\n")


# A long inspection (a huge file) says how far it is on stderr; a short one stays quiet.
SHOW_PROGRESS_AFTER_S = 1.0


def show_progress(ev: dict, shown: dict) -> None:
    """A phase event of the job on stderr: one line rewritten on a terminal, else a line each."""
    fraction = ev.get("fraction")
    line = f"Inspecting: {fraction:.0%} · {ev.get('message', '')}" if fraction is not None else \
        f"Inspecting: {ev.get('message', '')}"
    if sys.stderr.isatty():
        print(f"\r\x1b[K{line}", end="", file=sys.stderr, flush=True)
    else:
        print(line, file=sys.stderr, flush=True)
    shown["any"] = True


def _refuse(message: str, hint: str, as_json: bool, status: int = 2) -> int:
    if as_json:
        print(json.dumps({"error": message, "hint": hint}, ensure_ascii=False))
    else:
        from lorastudio.core.errors import print_error
        print_error(message, hint)
    return status


# ---- the command ------------------------------------------------------------------------------
def inspection_request(args):
    """The inspection the command line asks for."""
    from lorastudio.core.plans.inspect_data import InspectRequest
    columns = dict(pair.split("=", 1) for pair in args.columns.split(",") if pair) if args.columns else {}
    return InspectRequest(str(args.data), args.model, args.seq_len, args.example, args.format,
                          tuple(columns.items()), args.train_on, args.too_long, args.skip_bad_rows,
                          args.text_blocks)


def inspect(args) -> int:
    import shutil
    from lorastudio.core.plans.inspect_data import start_inspect_data
    from lorastudio.core.runtime.follower import follow
    try:
        handle = start_inspect_data(inspection_request(args))
    except ValueError as exc:               # ConfigError is one: a refused option, nothing started
        return _refuse(str(exc), "", args.json)
    job_dir = handle.job_dir
    keep = False
    try:
        found: dict = {}
        tracebacks: list[str] = []

        started = time.monotonic()
        shown = {"any": False}

        def on_event(ev: dict) -> None:
            if ev["type"] == "phase" and time.monotonic() - started >= SHOW_PROGRESS_AFTER_S:
                show_progress(ev, shown)
            elif ev["type"] == "report":
                found["report"] = ev["report"]
            elif ev["type"] == "log" and ev["level"] == "error":
                tracebacks.append(ev["message"])

        try:
            outcome = follow(handle, on_event)
        except KeyboardInterrupt:
            handle.kill()
            return _refuse("the inspection was interrupted", "", args.json, status=1)
        if shown["any"] and sys.stderr.isatty():
            print("\r\x1b[K", end="", file=sys.stderr, flush=True)     # the progress line goes
        report = found.get("report")
        if outcome.ok and report is not None:
            if args.json:
                print(json.dumps(report, ensure_ascii=False))
            else:
                print_report(report, color=sys.stdout.isatty() and not args.no_color)
            return 0
        error = outcome.error or {"kind": outcome.status, "message": f"the inspection ended {outcome.status}",
                                  "hint": ""}
        if error["kind"] in INPUT_KINDS:           # fix the input: exit status 2
            return _refuse(error["message"], error.get("hint", ""), args.json)
        keep = error["kind"] == "crashed"           # its hint names worker.log
        for trace in tracebacks:                    # an unexpected failure: its traceback, as before
            print(trace, file=sys.stderr, end="" if trace.endswith("\n") else "\n")
        hint = "" if error["kind"] == "exception" else error.get("hint", "")
        return _refuse(error["message"], hint, args.json, status=1)
    finally:
        if not keep:
            shutil.rmtree(job_dir, ignore_errors=True)
