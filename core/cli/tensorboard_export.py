"""`lorastudio tensorboard RUN [RUN ...] [--out DIR] [--follow]`: TensorBoard event files from runs'
journals (core/tensorboard.py writes them by hand: no TensorFlow or tensorboard package needed).

Each run gets RUN/tensorboard/events.out.tfevents.* (or DIR/<run name>/ with --out, to compare
runs side by side: `tensorboard --logdir DIR`). --follow rewrites the files every few seconds while
a run trains, so TensorBoard shows it live. Exit status: 0 written, 2 refused (not a run folder).
"""
from __future__ import annotations

import time
from pathlib import Path

from lorastudio.core.cli.output import fail

FOLLOW_S = 5.0


def tensorboard_arguments(p) -> None:
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run folders (their events.jsonl)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="write DIR/<run name>/events.out.tfevents.* instead of RUN/tensorboard/")
    p.add_argument("--follow", action="store_true", help="keep the files up to date while the runs train")


def tensorboard(args) -> int:
    from lorastudio.core.runs.folders import read_status, worker_alive
    from lorastudio.core.tensorboard import export_run
    for run in args.runs:
        if not (run / "events.jsonl").is_file():
            return fail(f"{run} is not a run folder (no events.jsonl)",
                        "give a folder under the runs directory, as `lorastudio train` prints it")
    from lorastudio.core.errors import UserError
    try:                                # the output-path rule (core/runs/output_paths.py) refuses in words
        paths = [export_run(run, args.out) for run in args.runs]
    except UserError as exc:
        return fail(exc.message, exc.hint)
    print("\n".join(str(path) for path in paths), flush=True)
    while args.follow and any(worker_alive(run, read_status(run)) for run in args.runs):
        try:
            time.sleep(FOLLOW_S)
        except KeyboardInterrupt:
            break
        for run in args.runs:
            export_run(run, args.out)
    if args.follow:                     # the last events of runs that ended meanwhile
        for run in args.runs:
            export_run(run, args.out)
    return 0
