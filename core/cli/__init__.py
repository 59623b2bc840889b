"""The command line: `lorastudio COMMAND ...`, one table of commands (as LitGPT's PARSER_DATA).

Each command is a pair of functions in a module of this package: `<name>_arguments(parser)` adds
its arguments and `<name>(args)` runs it and returns the exit status (0 done, 1 the job failed,
2 refused before anything started). Modules are imported only for the command that runs, so
`lorastudio --version` and `lorastudio targets` stay quick. Torch-free: heavy work runs as jobs
(core/runtime, core/jobs).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from dataclasses import dataclass

from lorastudio.core import package_version


@dataclass(frozen=True)
class Command:
    name: str
    module: str         # under lorastudio.core.cli
    function: str       # `<function>(args)` runs it, `<function>_arguments(parser)` declares it
    help: str


COMMANDS = (
    Command("train", "train", "train", "train a LoRA adapter from a YAML config"),
    Command("demo", "train", "demo", "train the demo (SmolLM2-135M on the sample tickets), as the window's first start does"),
    Command("runs", "runs", "runs", "list the runs: name, state, steps, loss, adapter, size"),
    Command("targets", "targets", "targets", "list a model's LoRA target modules (reads headers only)"),
    Command("export", "export", "export", "export a run's adapter (PEFT format + tokenizer + model card)"),
    Command("merge", "merge", "merge", "merge a run's adapter into the base model and save it"),
    Command("export-gguf", "export_gguf", "export_gguf", "export a run as GGUF for llama.cpp / Ollama (merged, or adapter only)"),
    Command("resume", "train", "resume", "resume a stopped, failed or crashed run from a checkpoint"),
    Command("eval", "evaluate", "evaluate", "held-out loss and task metric: base model vs base + adapter"),
    Command("import-gguf", "import_gguf", "import_gguf", "convert a .gguf model into the model cache (once)"),
    Command("inspect", "inspect_data", "inspect", "show what a data file trains on: format, lengths, masks"),
    Command("fit", "fit", "fit", "will it fit? estimated GPU memory, and settings that fit (--auto)"),
    Command("rank", "rank", "rank", "what rank a trained adapter really used: singular values of each update"),
    Command("resize", "resize", "resize", "save a smaller adapter: the best rank-K approximation of every update"),
    Command("tensorboard", "tensorboard_export", "tensorboard", "write TensorBoard event files from runs' journals"),
    Command("serve", "serve", "serve", "serve runs' adapters on one base over an OpenAI-compatible API (llama.cpp)"),
)


def _module(command: Command):
    return importlib.import_module(f"{__name__}.{command.module}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lorastudio", description="Local LoRA / QLoRA fine-tuning. "
                                     "Run without arguments to open the window.")
    parser.add_argument("--version", action="version", version=f"lorastudio {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help)
        getattr(_module(command), f"{command.function}_arguments")(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = next(c for c in COMMANDS if c.name == args.command)
    from lorastudio.core.cli.runs import resolve_run_arguments
    try:          # `lorastudio targets … | head`: the reader left; end quietly (as the shell's tools do)
        status = resolve_run_arguments(args) or getattr(_module(command), command.function)(args)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())    # no second error at exit
        return 141                      # 128 + SIGPIPE, what a shell tool reports
    return status
