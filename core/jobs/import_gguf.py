"""`python -m lorastudio.core.jobs.import_gguf JOB_DIR`: import a .gguf into the model cache.

Reads JOB_DIR/job.yaml ({gguf: PATH}, written by core/models/gguf_cache.start_import) and journals
to JOB_DIR/events.jsonl: phase (name, fraction 0→1, message) · error (kind, message, hint) ·
end (status, output = the model folder). Its life is the runtime's (core/runtime/worker.py): exit
status 0 when the folder is there (imported now or earlier) or the import was stopped, 1 when it
failed. SIGTERM stops the import at its next progress step, or — since transformers' loader and
save_pretrained report none for long stretches — STOP_GRACE_S later at the latest, interrupted
wherever it is (it writes only into a temporary folder); the temporary folder is removed
(atomic_dir), so a stopped import leaves nothing in the cache.
"""
from __future__ import annotations

import signal
import sys
import threading

from lorastudio.core.engine.gguf.import_gguf import convert
from lorastudio.core.runtime.worker import Job, job_main


STOP_GRACE_S = 2.0          # after a first SIGTERM, the wait for a progress step before interrupting


def _stop_soon(job: Job, done: threading.Event) -> None:
    """Once a stop is asked for and no progress step took it within STOP_GRACE_S, signal the main
    thread again (as a second SIGTERM would): a KeyboardInterrupt as soon as it runs Python again."""
    while not done.wait(0.2):
        if job.stop_requested:
            if not done.wait(STOP_GRACE_S):
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            return


def import_gguf(job: Job) -> dict:
    done = threading.Event()
    threading.Thread(target=_stop_soon, args=(job, done), name="stop-soon", daemon=True).start()
    try:
        return _import(job)
    finally:
        done.set()


def _import(job: Job) -> dict:
    def progress(name: str, fraction: float, message: str) -> None:
        if fraction < 1.0:
            job.progress(name, fraction, message)           # raises Stopped once a stop was asked for
        else:                                               # done (or cached): too late to stop
            job.emit("phase", name=name, fraction=1.0, message=message)

    output = convert(job.spec["gguf"], progress)
    return {"status": "completed", "output": str(output)}


def main(argv: list[str] | None = None) -> int:
    return job_main("import_gguf", import_gguf, argv)


if __name__ == "__main__":
    sys.exit(main())
