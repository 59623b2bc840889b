"""`lorastudio inspect DATA --model MODEL`: what a data file trains on — format, lengths, masks."""
from __future__ import annotations

from pathlib import Path


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


def inspect(args) -> int:
    import subprocess       # becomes a journal job (core/jobs/inspect_data) with the runtime
    import sys
    argv = [str(args.data), "--model", args.model, "--example", str(args.example), "--seq-len", str(args.seq_len),
            "--format", args.format, "--columns", args.columns, "--train-on", args.train_on,
            "--too-long", args.too_long, "--text-blocks", args.text_blocks]
    argv += [flag for flag, on in (("--skip-bad-rows", args.skip_bad_rows), ("--json", args.json),
                                   ("--no-color", args.no_color)) if on]
    return subprocess.run([sys.executable, "-m", "lorastudio.core.jobs.inspect_data", *argv]).returncode
