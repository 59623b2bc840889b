"""`lorastudio eval RUN`: held-out loss and the task metric, base model against base + adapter.

The evaluation runs as a job (core/jobs/evaluate.py) in RUN/evals/<stamp>, which stores its result
in RUN/eval.json; this command follows its journal, prints the progress on stderr and the result
on stdout. Exit status: 0 evaluated, 1 the evaluation failed (bad data, a model that cannot be
loaded, …), 2 refused before anything started (not a run folder).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from lorastudio.core.cli.output import fail

ROWS = (("held-out loss", "loss", "{:.4f}"), ("exact match", "exact_match", "{:.0%}"),
        ("JSON format valid", "json_valid", "{:.0%}"))


def evaluate_arguments(p) -> None:
    p.add_argument("run", type=Path, help="the run folder, or its name (or a unique prefix) under the runs directory")
    p.add_argument("--data", type=Path, help="held-out data (default: the run's validation data)")
    p.add_argument("--checkpoint", type=int, metavar="STEP", help="evaluate this checkpoint's adapter")
    p.add_argument("--adapter", type=Path, metavar="FOLDER",
                   help="evaluate another adapter for the run's base (e.g. from lorastudio resize); "
                        "its result goes to RUN/evals/<stamp>/eval.json")
    p.add_argument("--limit", type=int, default=48, help="prompts to answer for the task metric")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def format_table(result: dict) -> str:
    """The two sides' measures, one row each: base and adapter in two columns."""
    lines = [f"{'':<20}{'base':>12}{'adapter':>12}"]
    for label, key, fmt in ROWS:
        base, adapter = result["base"].get(key), result["adapter"].get(key)
        if base is None and adapter is None:
            continue
        show = lambda v: fmt.format(v) if v is not None else "–"          # noqa: E731
        lines.append(f"{label:<20}{show(base):>12}{show(adapter):>12}")
    return "\n".join(lines)


def print_result(result: dict, saved_to: Path) -> None:
    print(f"Evaluated on {result['data']}: {result['examples']} examples for the loss, "
          f"{result['base']['prompts']} prompts answered greedily ({result['seconds']} s)")
    print(format_table(result))
    print(f"Saved to {saved_to}")


def evaluate(args) -> int:
    from lorastudio.core.errors import print_error
    from lorastudio.core.runs.export import ExportError, read_run
    from lorastudio.core.plans.evaluate import EvaluateRequest, start_evaluate
    from lorastudio.core.runs.heldout import EVAL_FILE
    from lorastudio.core.runtime.follower import follow
    run_dir = args.run.resolve()
    try:
        read_run(run_dir)
    except ExportError as exc:
        return fail(exc.message, exc.hint)
    adapter = getattr(args, "adapter", None)
    if adapter is not None:
        from lorastudio.core.runs.checkpoints import adapter_complete
        if not adapter_complete(adapter):
            return fail(f"--adapter {adapter} is not a PEFT adapter folder",
                        "give a folder with adapter_config.json and adapter_model.safetensors")
        if args.checkpoint is not None:
            return fail("--adapter and --checkpoint name two adapters", "give one of them")
    handle = start_evaluate(EvaluateRequest(run_dir, args.checkpoint, args.data, args.limit, adapter))
    found: dict = {}

    def on_event(ev: dict) -> None:
        if ev["type"] == "phase":
            print(f"· {ev.get('message') or ev['name']}", file=sys.stderr, flush=True)
        elif ev["type"] == "evaluation":
            found["result"] = ev["result"]

    try:
        outcome = follow(handle, on_event, on_interrupt=lambda: print(
            "Stopping the evaluation (Ctrl+C again to leave it at once)…", file=sys.stderr, flush=True))
    except KeyboardInterrupt:
        handle.kill()
        print_error("the evaluation was interrupted; nothing was saved")
        return 1
    result = found.get("result")
    if not outcome.ok or result is None:
        error = outcome.error or {"message": f"the evaluation ended {outcome.status}; nothing was saved", "hint": ""}
        hint = error.get("hint", "")
        if error.get("kind") == "exception":
            hint = f"{hint} ({handle.log})"
        print_error(error["message"], hint)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_result(result, Path(outcome.output) if outcome.output else run_dir / EVAL_FILE)
    return 0
