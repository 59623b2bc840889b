"""What the command line prints: errors, progress lines and the live training line."""
from __future__ import annotations

import sys
import time

from lorastudio.core.formatting import format_bytes, format_duration
from lorastudio.core.errors import event_error_lines, print_error


def fail(message: str, hint: str = "") -> int:
    """Print `error: …` / `  hint: …` and return 2 (refused before anything started)."""
    print_error(message, hint)
    return 2


def config_failure(source, exc) -> int:
    """A refused config: `SOURCE: key: value is not allowed; …`, or the file's own problem once."""
    from lorastudio.core.config import FILE_KEY
    return fail(str(exc) if exc.key == FILE_KEY else f"{source}: {exc}")


def print_phase(ev: dict) -> None:
    """A job's `phase` (with fraction) and `error` events, one line each."""
    if ev["type"] == "phase":
        print(f"[{int(100 * ev.get('fraction', 0)):3d}%] {ev.get('message') or ev['name']}", flush=True)
    elif ev["type"] == "error":
        print(event_error_lines(ev), file=sys.stderr, flush=True)


def print_fidelity(f: dict, before_shipping: str) -> None:
    """A merge's or an export's fidelity check, with what the GGUF check adds when it is there."""
    agree = f"{f['greedy_agree']}/{f['prompts']}"
    picks = f" (next-token picks {100 * f['argmax_agree']:.1f}%)" if "argmax_agree" in f else ""
    tokens = f"; tokenizer from the file agrees on {f['tokens_agree']}/{f['prompts']}" if "tokens_agree" in f else ""
    if f.get("checked_by") == "gguf-py":        # an adapter with no base GGUF to load it on
        print("Not checked in llama.cpp: no base GGUF of this family to load the adapter on (import the base "
              "from a GGUF converted by llama.cpp to have it checked)")
    elif f.get("checked_by") == "llama.cpp":    # the GGUF export, checked in llama.cpp itself
        tokens = (f"; llama.cpp's chat prompt is as long as transformers' on {f['tokens_agree']}/{f['prompts']}"
                  if "tokens_agree" in f else "")
        print(f"Checked in llama.cpp ({f['prompts']} prompts, {f['positions']} positions, {f['dtype']}): next token "
              f"agrees {100 * f['top1_agree']:.1f}%, top-5 set {100 * f['top5_agree']:.1f}%, max |Δ log-prob| "
              f"{f['max_abs_diff']:.3g}; greedy answers equal on {agree}{tokens}")
    else:
        print(f"Fidelity ({f['prompts']} prompts, {f['dtype']}): max |Δlogit| {f['max_abs_diff']:.3g}, "
              f"mean {f['mean_abs_diff']:.3g}; greedy continuations agree on {agree}{picks}{tokens}")
    if "tensor_max_abs_diff" in f:
        print(f"  adapter tensors read back: {f['tensors']}, largest difference from PEFT's "
              f"{f['tensor_max_abs_diff']:.3g}")
    if f["flagged"] and f.get("difference"):
        print(f"  warning: {f['difference']}; {before_shipping}")
    elif f["flagged"]:
        print(f"  warning: the difference exceeds what {f['dtype']} rounding explains "
              f"(tolerance {f['tolerance']:.3g}); {before_shipping}")


def result_event_printer(before_shipping: str):
    """The follow() callback of a job that writes a result and checks it (merge, GGUF export):
    phases as progress lines, the fidelity check, errors."""
    def on_event(ev: dict) -> None:
        if ev["type"] == "fidelity":
            print_fidelity(ev, before_shipping)
        elif ev["type"] == "error":
            print(event_error_lines(ev), flush=True)
        else:
            print_phase(ev)
    return on_event


class ProgressPrinter:
    """One line rewritten in place on a terminal; a line every few seconds otherwise."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.memory: dict = {}
        self.last_print = 0.0
        self.line_open = False

    def line(self, text: str) -> None:
        if self.line_open:
            self.stream.write("\n")
            self.line_open = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def event(self, ev: dict) -> None:
        kind = ev["type"]
        if kind == "phase" and "fraction" in ev:          # a long phase's progress (tokenizing)
            self.bar(ev["fraction"], ev.get("message") or ev["name"])
        elif kind == "phase":
            self.line(f"· {ev.get('message') or ev['name']}")
        elif kind == "start":
            self.line(f"· {ev['trainable_params']:,} trainable of {ev['total_params']:,} parameters "
                      f"on {', '.join(ev['devices'])}; {ev['total_steps']} steps")
        elif kind == "memory":
            self.memory = ev
        elif kind == "step":
            self.step(ev)
        elif kind == "eval":
            self.line(f"  eval @ step {ev['step']}: loss {ev['loss']:.4f}")
        elif kind == "checkpoint":
            self.line(f"  checkpoint: {ev['path']}")
        elif kind == "log" and ev["level"] in ("warning", "error") and "Traceback" not in ev["message"]:
            self.line(f"  {ev['level']}: {ev['message']}")
        elif kind == "error":
            self.line(event_error_lines(ev))

    def bar(self, fraction: float, message: str) -> None:
        width = 24
        filled = int(width * min(max(fraction, 0.0), 1.0))
        text = f"[{'#' * filled}{'-' * (width - filled)}] {fraction:4.0%}  {message}"
        if self.tty:
            self.stream.write("\r" + text.ljust(120)[:160])
            self.stream.flush()
            self.line_open = True
        elif time.time() - self.last_print > 5 or fraction >= 1:
            self.line(text)
            self.last_print = time.time()

    def step(self, ev: dict) -> None:
        done, total = ev["step"], ev["total_steps"]
        width = 24
        filled = int(width * done / max(total, 1))
        eta = ev.get("eta_s")
        text = (f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total}  loss {ev['loss']:.4f}  "
                f"{ev['tokens_per_s']:,.0f} tok/s  ETA {format_duration(eta) if eta is not None else '?'}")
        mem = self.memory
        if mem.get("device_total"):
            text += f"  VRAM {format_bytes(mem.get('cuda_peak', 0))} peak, " \
                    f"{format_bytes(mem['device_used'])}/{format_bytes(mem['device_total'])}"
        elif mem.get("rss"):
            text += f"  RAM {format_bytes(mem['rss'])}"
        if self.tty:
            self.stream.write("\r" + text.ljust(120)[:160])
            self.stream.flush()
            self.line_open = True
        elif time.time() - self.last_print > 5 or done == total:
            self.line(text)
            self.last_print = time.time()

    def close(self) -> None:
        if self.line_open:
            self.stream.write("\n")
            self.stream.flush()
            self.line_open = False


def follow_report(handle, what: str) -> tuple[dict | None, object]:
    """Follow a job that answers with a `report` event (rank, resize): (the report, the outcome), or
    (None, None) after a second Ctrl+C; progress lines on stderr."""
    from lorastudio.core.runtime.follower import follow
    found: dict = {}

    def on_event(ev: dict) -> None:
        if ev["type"] == "phase":
            print(f"· {ev.get('message') or ev['name']}", file=sys.stderr, flush=True)
        elif ev["type"] == "report":
            found["report"] = ev["report"]
        elif ev["type"] == "error":
            print(event_error_lines(ev), file=sys.stderr, flush=True)

    try:
        outcome = follow(handle, on_event, on_interrupt=lambda: print(
            f"Stopping the {what} (Ctrl+C again to leave it at once)…", file=sys.stderr, flush=True))
    except KeyboardInterrupt:
        handle.kill()
        return None, None
    return found.get("report"), outcome


def report_failure(outcome, handle, what: str) -> int:
    if outcome is None:
        print_error(f"the {what} was interrupted; nothing was written")
    elif outcome.error is None:         # an error event was printed as it came
        print_error(f"the {what} ended {outcome.status}; nothing was written", f"see {handle.log}")
    elif outcome.error.get("kind") == "exception":
        print(f"  details: {handle.log}", file=sys.stderr)
    return 1


def follow_writing_job(handle, what: str, out, before_shipping: str):
    """Follow a job that writes one result (merge, GGUF export): its events printed, Ctrl+C cancels
    (nothing is written), a second Ctrl+C stops waiting. The outcome, or None after a second Ctrl+C."""
    from lorastudio.core.runtime.follower import follow
    try:
        return follow(handle, result_event_printer(before_shipping), on_interrupt=lambda: print(
            f"Cancelling the {what}; nothing will be written (Ctrl+C again to stop waiting)…", flush=True))
    except KeyboardInterrupt:
        print(f"Stopped waiting; the {what} worker (pid {handle.pid}) is stopping. Nothing is written to {out}")
        return None
