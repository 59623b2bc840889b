"""The command line: `lorastudio train|targets|inspect|export|merge ...`. Torch-free: training runs in a worker.

Exit status of `train`: 0 completed or stopped (the adapter is saved), 1 failed or the worker
died, 2 the config was refused before anything started.
"""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from lorastudio.core.checks import check_config, resolve_paths
from lorastudio.core.config import ConfigError, RunConfig
from lorastudio.core.devices import format_bytes
from lorastudio.core.events import JournalFollower
from lorastudio.core.modelinfo import ModelError, read_model_info
from lorastudio.core.runs import JOURNAL_FILE, LOG_FILE, new_run_dir, prepare_run, start_worker
from lorastudio.core.targets import GROUPS, discover_targets, format_count, trainable_line


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("lorastudio")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lorastudio", description="Local LoRA / QLoRA fine-tuning. "
                                     "Run without arguments to open the window.")
    parser.add_argument("--version", action="version", version=f"lorastudio {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a LoRA adapter from a YAML config")
    train.add_argument("config", type=Path, help="the run config (YAML)")
    train.add_argument("--run-dir", type=Path, help="the run folder (default: a new one under the data directory)")
    train.add_argument("--runs-dir", type=Path, help="where new run folders go")
    train.add_argument("--detach", action="store_true", help="start the worker and return at once")
    targets = sub.add_parser("targets", help="list a model's LoRA target modules (reads headers only)")
    targets.add_argument("model", help="a model folder or a Hub id in the local cache")
    targets.add_argument("--rank", "-r", type=int, default=8, help="LoRA rank for the parameter counts")
    targets.add_argument("--dora", action="store_true", help="count DoRA's magnitude vectors too")
    targets.add_argument("--json", action="store_true", help="machine-readable output")
    export = sub.add_parser("export", help="export a run's adapter (PEFT format + tokenizer + model card)")
    export.add_argument("run", type=Path, help="the run folder")
    export.add_argument("out", type=Path, help="the output folder (or .zip file with --zip)")
    export.add_argument("--checkpoint", type=int, help="export this checkpoint step instead of the final adapter")
    export.add_argument("--zip", action="store_true", help="write one zip file")
    export.add_argument("--overwrite", action="store_true", help="replace a non-empty output")
    merge = sub.add_parser("merge", help="merge a run's adapter into the base model and save it")
    merge.add_argument("run", type=Path, help="the run folder")
    merge.add_argument("out", type=Path, help="the output folder (must be empty or absent)")
    merge.add_argument("--checkpoint", type=int, help="merge this checkpoint step instead of the final adapter")
    merge.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    merge.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard, e.g. 2GB")
    merge.add_argument("--prompts", type=Path, help="a file of prompts for the fidelity check (one a line)")
    merge.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    merge.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    resume = sub.add_parser("resume", help="resume a stopped, failed or crashed run from a checkpoint")
    resume.add_argument("run", type=Path, help="the run folder (or its name under the runs directory)")
    resume.add_argument("--checkpoint", type=int, metavar="STEP", help="resume from this step (default: the latest)")
    resume.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="change a setting, e.g. --set training.batch_size=2 (repeatable)")
    resume.add_argument("--detach", action="store_true", help="start the worker and return at once")
    evaluate = sub.add_parser("eval", help="held-out loss and task metric: base model vs base + adapter")
    evaluate.add_argument("run", type=Path, help="the run folder")
    evaluate.add_argument("--data", type=Path, help="held-out data (default: the run's validation data)")
    evaluate.add_argument("--checkpoint", type=int, metavar="STEP", help="evaluate this checkpoint's adapter")
    evaluate.add_argument("--limit", type=int, default=48, help="prompts to answer for the task metric")
    evaluate.add_argument("--json", action="store_true", help="machine-readable output")
    gguf = sub.add_parser("import-gguf", help="convert a .gguf model into the model cache (once)")
    gguf.add_argument("gguf", type=Path, help="the .gguf file")
    inspect = sub.add_parser("inspect", help="show what a data file trains on: format, lengths, masks")
    inspect_arguments(inspect)
    return parser


def inspect_arguments(p: argparse.ArgumentParser) -> None:
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



def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "train":
        return cmd_train(args)
    if args.command == "resume":
        return cmd_resume(args)
    if args.command == "export":
        from lorastudio.core.export import cmd_export
        return cmd_export(args)
    if args.command == "merge":
        from lorastudio.core.merge import cmd_merge
        return cmd_merge(args)
    if args.command == "eval":         # loads models: a worker process, like inspect
        raw = sys.argv[1:] if argv is None else list(argv)
        return subprocess.run([sys.executable, "-m", "lorastudio.core.evaluate",
                               *raw[raw.index("eval") + 1:]]).returncode
    if args.command == "import-gguf":
        return cmd_import_gguf(args.gguf)
    if args.command == "inspect":
        # The tokenizer needs transformers: run the inspector as a worker, keeping this process light.
        raw = sys.argv[1:] if argv is None else list(argv)
        return subprocess.run([sys.executable, "-m", "lorastudio.core.inspector",
                               *raw[raw.index("inspect") + 1:]]).returncode
    return cmd_targets(args)


def fail(message: str, hint: str = "") -> int:
    print(f"error: {message}", file=sys.stderr)
    if hint:
        print(f"  hint: {hint}", file=sys.stderr)
    return 2


# ---- targets ------------------------------------------------------------------------------
def cmd_targets(args) -> int:
    if args.rank < 1:
        return fail(f"--rank {args.rank} is not allowed", "the rank must be ≥ 1")
    try:
        info = read_model_info(args.model)
    except ModelError as exc:
        return fail(exc.message, exc.hint)
    report = discover_targets(info)
    if args.json:
        print(json.dumps(report.to_dict(args.rank, args.dora), indent=2))
        return 0
    print(f"{info.architecture} · {format_count(info.num_parameters)} parameters · rank {args.rank}"
          f"{' · DoRA' if args.dora else ''}")
    for group, targets in report.grouped().items():
        if not targets:
            continue
        print(f"\n{group}")
        for t in targets:
            print(f"  {t.name:<22} {t.layers:>4} layers  {t.d_in:>6} → {t.d_out:<6} "
                  f"{format_count(t.lora_params(args.rank, args.dora)):>9} LoRA params")
    print(f"\nall-linear: {trainable_line(report, 'all-linear', args.rank, args.dora)}")
    return 0


# ---- import-gguf ----------------------------------------------------------------------------
def cmd_import_gguf(path: Path, quiet_if_cached: bool = False) -> int:
    """Import a .gguf into the model cache with a progress display; 0 when it is there."""
    from lorastudio.core.gguf_import import GgufError, cached_import, import_with_worker, is_gguf, print_progress
    if not is_gguf(path) or (quiet_if_cached and not path.is_file()):     # check_config says why
        return 0 if quiet_if_cached else fail(f"{path} is not a .gguf file")
    folder = cached_import(path)
    if folder is None:
        print(f"Importing {path.name} into the model cache (once)")
        try:
            folder = import_with_worker(path, print_progress)
        except GgufError as exc:
            return fail(exc.message, exc.hint)
    if not quiet_if_cached or folder is None:
        print(f"Model folder: {folder}")
    return 0


# ---- train --------------------------------------------------------------------------------
def cmd_train(args) -> int:
    try:
        config = resolve_paths(RunConfig.load(args.config), args.config.resolve().parent)
        if cmd_import_gguf(Path(config.model), quiet_if_cached=True):
            return 2
        info, report = check_config(config)
    except ConfigError as exc:
        return fail(f"{args.config}: {exc}")
    run_dir = args.run_dir or new_run_dir(config, args.runs_dir)
    try:
        prepare_run(config, run_dir)
    except (FileExistsError, OSError) as exc:
        return fail(str(exc))
    lora = report.lora_params(config.lora.targets, config.lora.r, config.lora.use_dora)
    print(f"Run folder: {run_dir}")
    print(f"Model: {info.architecture} ({format_count(info.num_parameters)}), {config.quantization}; "
          f"LoRA r={config.lora.r} on {config.lora.targets}: {format_count(lora)} trainable")
    proc = start_worker(run_dir)
    if args.detach:
        print(f"Worker started (pid {proc.pid}); follow it in {run_dir / JOURNAL_FILE}")
        return 0
    return follow(run_dir, proc)


def cmd_resume(args) -> int:
    from lorastudio.core.resume import ResumeError, parse_overrides, resume_run
    from lorastudio.core.runs import default_runs_dir
    run_dir = args.run if args.run.is_dir() else default_runs_dir() / args.run
    try:
        proc, plan = resume_run(run_dir.resolve(), args.checkpoint, parse_overrides(args.overrides))
    except ResumeError as exc:
        return fail(exc.message, exc.hint)
    print(f"Run folder: {plan.run_dir}\n{plan.describe()}")
    if args.detach:
        print(f"Worker started (pid {proc.pid}); follow it in {plan.run_dir / JOURNAL_FILE}")
        return 0
    return follow(plan.run_dir, proc, skip_existing=True)


class ProgressPrinter:
    """One line rewritten in place on a terminal; a line every few seconds otherwise."""

    def __init__(self, stream=sys.stdout):
        self.stream, self.tty = stream, stream.isatty()
        self.memory: dict = {}
        self.last_print = 0.0
        self.line_open = False

    def _print_line(self, text: str) -> None:
        if self.line_open:
            self.stream.write("\n")
            self.line_open = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def event(self, ev: dict) -> None:
        kind = ev["type"]
        if kind == "phase":
            self._print_line(f"· {ev.get('message') or ev['name']}")
        elif kind == "start":
            self._print_line(f"· {ev['trainable_params']:,} trainable of {ev['total_params']:,} parameters "
                             f"on {', '.join(ev['devices'])}; {ev['total_steps']} steps")
        elif kind == "memory":
            self.memory = ev
        elif kind == "step":
            self.step(ev)
        elif kind == "eval":
            self._print_line(f"  eval @ step {ev['step']}: loss {ev['loss']:.4f}")
        elif kind == "checkpoint":
            self._print_line(f"  checkpoint: {ev['path']}")
        elif kind == "log" and ev["level"] in ("warning", "error") and "Traceback" not in ev["message"]:
            self._print_line(f"  {ev['level']}: {ev['message']}")
        elif kind == "error":
            self._print_line(f"error ({ev['kind']}): {ev['message']}\n  hint: {ev['hint']}")

    def step(self, ev: dict) -> None:
        done, total = ev["step"], ev["total_steps"]
        width = 24
        filled = int(width * done / max(total, 1))
        eta = ev.get("eta_s")
        text = (f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total}  loss {ev['loss']:.4f}  "
                f"{ev['tokens_per_s']:,.0f} tok/s  ETA {_clock(eta) if eta is not None else '?'}")
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
            self._print_line(text)
            self.last_print = time.time()

    def close(self) -> None:
        if self.line_open:
            self.stream.write("\n")
            self.stream.flush()
            self.line_open = False


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


def follow(run_dir: Path, proc, skip_existing: bool = False) -> int:
    """Print the journal until `end`; Ctrl+C asks the worker to stop gracefully."""
    follower, printer = JournalFollower(run_dir / JOURNAL_FILE), ProgressPrinter()
    if skip_existing:           # a resumed run: print from its last "resuming" mark on
        old = follower.poll()
        marks = [i for i, e in enumerate(old) if e["type"] == "phase" and e["name"] == "resuming"]
        for ev in old[marks[-1] + 1:] if marks else []:
            printer.event(ev)
    interrupted = False

    def on_sigint(_sig, _frame):
        nonlocal interrupted
        if interrupted:                 # second Ctrl+C: leave the worker running, detach
            raise KeyboardInterrupt
        interrupted = True
        printer._print_line("Stopping: saving a checkpoint and the adapter (Ctrl+C again to detach)…")
        proc.send_signal(signal.SIGTERM)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        while True:
            for ev in follower.poll():
                printer.event(ev)
                if ev["type"] == "end":
                    printer.close()
                    proc.wait()
                    return report_end(ev, run_dir)
            if proc.poll() is not None:
                for ev in follower.poll():
                    printer.event(ev)
                    if ev["type"] == "end":
                        printer.close()
                        return report_end(ev, run_dir)
                printer.close()
                print(f"error: the worker exited with code {proc.returncode} without finishing; "
                      f"see {run_dir / LOG_FILE}", file=sys.stderr)
                return 1
            time.sleep(0.2)
    except KeyboardInterrupt:
        printer.close()
        print(f"Detached; the worker (pid {proc.pid}) goes on. Journal: {run_dir / JOURNAL_FILE}")
        return 0
    finally:
        signal.signal(signal.SIGINT, previous)


def report_end(ev: dict, run_dir: Path) -> int:
    status = ev["status"]
    if ev.get("adapter"):
        print(f"{status.capitalize()}. Adapter: {ev['adapter']}")
    else:
        print(f"{status.capitalize()}. Run folder: {run_dir}")
    return 0 if status in ("completed", "stopped") else 1
