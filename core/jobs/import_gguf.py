"""`python -m lorastudio.core.jobs.import_gguf JOB_DIR`: import a .gguf into the model cache.

Reads JOB_DIR/job.yaml ({gguf: PATH}, written by gguf_import.start_import) and journals to
JOB_DIR/events.jsonl: phase (name, fraction 0→1, message) · error (kind, message, hint) ·
end (status, output = the model folder). Exit status 0 when the folder is there (imported now or
earlier), 1 otherwise. SIGTERM stops the import; the temporary folder is removed (atomic_dir).
"""
from __future__ import annotations

import signal
import sys
import traceback
from pathlib import Path

import yaml

from lorastudio.core.journal import JournalWriter
from lorastudio.core.engine.gguf_convert import convert
from lorastudio.core.models.gguf_cache import GgufError


def run(job_dir: Path) -> int:
    job = yaml.safe_load((job_dir / "job.yaml").read_text(encoding="utf-8"))
    journal = JournalWriter(job_dir / "events.jsonl")

    def progress(name: str, fraction: float, message: str) -> None:
        journal.emit("phase", name=name, fraction=round(fraction, 4), message=message)

    def on_term(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    status, output = "failed", None
    try:
        output = str(convert(job["gguf"], progress))
        status = "completed"
    except KeyboardInterrupt:
        status = "stopped"
        journal.emit("log", level="warning", message="Import cancelled; nothing was written")
    except GgufError as exc:
        journal.emit("error", kind="gguf", message=exc.message, hint=exc.hint)
    except BaseException as exc:        # noqa: BLE001 — every failure must reach the journal
        trace = traceback.format_exc()
        print(trace, file=sys.stderr, flush=True)
        journal.emit("log", level="error", message=trace)
        hint = ("free disk space and try again" if isinstance(exc, OSError) and exc.errno == 28
                else f"see {job_dir / 'worker.log'}")
        journal.emit("error", kind=type(exc).__name__, message=f"{type(exc).__name__}: {exc}", hint=hint)
    journal.emit("end", status=status, adapter=None, output=output)
    journal.close()
    return 0 if status == "completed" else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not (Path(argv[0]) / "job.yaml").is_file():
        print("usage: python -m lorastudio.core.jobs.import_gguf JOB_DIR (with JOB_DIR/job.yaml)", file=sys.stderr)
        return 2
    return run(Path(argv[0]))


if __name__ == "__main__":
    sys.exit(main())
