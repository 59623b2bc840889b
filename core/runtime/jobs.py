"""The job table: every job LoRA Studio runs, once. Everything that lists jobs derives from it.

A job's verb is its one name through every layer:

    core/plans/<verb>.py      its typed request, its checks and its one starter `start_<verb>(request)`
    core/jobs/<verb>.py       the job process (`python -m lorastudio.core.jobs.<verb> JOB_DIR`)
    core/cli/<module>.py      the command(s) that start it (`cli` below)
    the window                the module that starts it (`window` below)

The launcher accepts exactly these verbs, the follower names a dead worker by `worker`, and
tests/core/runtime/test_jobs_table.py checks that the plan, job, CLI and window modules exist and agree.
Torch-free, and cheap to import.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JobKind:
    verb: str               # module name under core.plans and core.jobs; `start_<verb>` starts it
    words: str              # what people call it: "the GGUF export"
    worker: str             # its process, in a message: "GGUF export worker"
    cli: tuple[str, ...]    # the commands (core/cli COMMANDS names) that start it
    window: str             # the app module (under lorastudio.app) that starts it
    ranks: bool = False     # may run as several processes (torch.distributed ranks; rank 0 starts the rest)


JOBS: dict[str, JobKind] = {job.verb: job for job in (
    JobKind("train", "the training run", "training worker", ("train", "resume", "demo"), "train.training_process",
            ranks=True),
    JobKind("merge", "the merge", "merge worker", ("merge",), "dialogs.merge_dialog"),
    JobKind("export_gguf", "the GGUF export", "GGUF export worker", ("export-gguf",), "dialogs.export_gguf_dialog"),
    JobKind("generate", "the generation", "generation worker", (), "playground.generation_worker"),
    JobKind("evaluate", "the evaluation", "evaluation worker", ("eval",), "dialogs.evaluate_dialog"),
    JobKind("import_gguf", "the GGUF import", "GGUF import worker", ("import-gguf",), "train.model_panel"),
    JobKind("inspect_data", "the data inspection", "inspector", ("inspect",), "dataset.data_inspection"),
    JobKind("rank", "the rank analysis", "rank analysis worker", ("rank",), "runs.rank_view"),
    JobKind("resize", "the adapter resize", "resize worker", ("resize",), "dialogs.resize_dialog"),
    JobKind("serve", "the server", "server", ("serve",), "dialogs.serve_dialog"),
)}
VERBS = tuple(JOBS)


def job_kind(verb: str) -> JobKind:
    """The table's entry for `verb`; ValueError naming the known jobs for anything else."""
    try:
        return JOBS[verb]
    except KeyError:
        raise ValueError(f"unknown job {verb!r}; one of {', '.join(VERBS)}") from None
