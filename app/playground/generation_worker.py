"""The Playground's one generation worker: started on the first Generate, kept while the page is
open, so a later prompt is answered without loading the model again.

The worker is the generate job in its serving shape (core/jobs/generate.py): requests go to its
inbox (core/plans/generate.request_generation), its journal comes back through one JobProcess, and
only the events of the request in flight are passed on (`event`), ending with `answered(status)`.
It is stopped when the page is left or the window closes (`stop`), and after IDLE_MS without a
request; it would also end by itself once the window's process is gone.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from lorastudio.app.job_process import JobProcess
from lorastudio.core.plans.generate import (WORKER_IDLE_S, WorkerRequest, cancel_generation, new_worker_dir,
                                            request_generation, start_generate)

POLL_MS = 60            # tokens arrive a few dozen a second: poll often, the reads are tiny
IDLE_MS = int(WORKER_IDLE_S * 1000)


class GenerationWorker(QObject):
    event = Signal(dict)            # an event of the request in flight (token, answer, phase, error)
    answered = Signal(str)          # the request in flight ended: completed | stopped | failed

    def __init__(self, parent_dir: Path, parent: QObject | None = None, idle_ms: int = IDLE_MS,
                 worker_idle_s: float | None = None):
        super().__init__(parent)
        self.parent_dir = Path(parent_dir)
        # the worker's own idle limit, a minute past the window's: it ends by itself only if the window cannot tell it
        self.worker_idle_s = idle_ms / 1000 + 60 if worker_idle_s is None else worker_idle_s
        self.process = JobProcess(self, poll_ms=POLL_MS)
        self.process.event.connect(self._on_event)
        self.process.finished.connect(self._on_finished)
        self.idle = QTimer(self, singleShot=True, interval=idle_ms)
        self.idle.timeout.connect(self.stop)
        self.job_dir: Path | None = None
        self.next_id, self.current = 1, None
        self.requests_served = 0            # by the worker now running

    @property
    def alive(self) -> bool:
        return self.process.running

    @property
    def busy(self) -> bool:
        return self.current is not None

    def ask(self, run_dir: Path, messages: list[dict], settings: dict, checkpoint: int | None,
            engine: str = "transformers", compare: list[Path] | tuple = (), images: list[str] | tuple = ()) -> int:
        """Send a prompt (starting the worker first if none runs); returns the request's id. `engine`,
        `compare` (more runs answering beside the first) and `images` (files the prompt shows):
        core/plans/generate.request_generation."""
        request_id, self.next_id = self.next_id, self.next_id + 1
        self.current = request_id
        self.idle.stop()
        fresh = not self.alive
        if fresh:
            self.job_dir, self.requests_served = new_worker_dir(self.parent_dir), 0
        request_generation(self.job_dir, request_id, run_dir, messages, settings, checkpoint, engine, compare,
                           cache=self.parent_dir.parent, images=images)   # DATA/gguf-cache, beside DATA/playground
        if fresh:               # its inbox already holds the request (an inline job answers it at once)
            self.process.attach(start_generate(WorkerRequest(self.job_dir, self.worker_idle_s)))
        return request_id

    def cancel(self) -> None:
        if self.current is not None and self.alive:
            cancel_generation(self.job_dir, self.current)

    def stop(self) -> None:
        """End the worker (SIGTERM: it stops between tokens and writes `end`)."""
        self.idle.stop()
        self.process.stop()

    # ---- following ----------------------------------------------------------------------------
    def _on_event(self, ev: dict) -> None:
        if ev.get("request") is None or ev["request"] != self.current:
            return
        self.event.emit(ev)
        if ev["type"] == "phase" and ev["name"] == "answered":
            self.current = None
            self.requests_served += 1
            if self.alive:
                self.idle.start()
            self.answered.emit(ev.get("status", "completed"))

    def _on_finished(self, outcome) -> None:
        """The worker ended: idle, stopped, or crashed. A request in flight fails in its words."""
        self.idle.stop()
        if self.current is not None:
            self.current = None
            if outcome.status != "stopped":
                self.event.emit({"type": "error", "kind": "crashed", "message": outcome.words(), "hint": ""})
            self.answered.emit("stopped" if outcome.status == "stopped" else "failed")
        if outcome.ok and self.job_dir is not None:         # a failed worker keeps its folder (worker.log)
            shutil.rmtree(self.job_dir, ignore_errors=True)
