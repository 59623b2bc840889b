"""Run history: every run in a runs folder, summarised from its journal and status file. Torch-free.

The window refreshes this every few seconds for dozens of runs, so each journal is read
incrementally: a `RunDigest` keeps its byte offset and folds only the new lines; a run whose
journal, config and status have not changed costs three `stat` calls. A journal can hold several
segments (one per resume); what a run *is* comes from its last segment:

  last segment ends with `end`             -> that status (completed, stopped, failed)
  no `end`, worker alive (runs.worker_alive) -> running
  no `end`, pid gone or heartbeat stale     -> crashed (SIGKILL, a segfault, the OOM killer, power)

`run_folders` is the one listing of a runs folder: the Runs page (RunHistory), the re-attach at
start-up (find_live_runs), the playground and the adapter picker (runs_with_adapters) use it.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from lorastudio.core.runs.checkpoints import adapter_steps, list_checkpoint_steps
from lorastudio.core.journal import END_STATUSES, JournalFollower
from lorastudio.core.atomic_files import folder_size
from lorastudio.core.runs.folders import (CONFIG_FILE, JOURNAL_FILE, LOG_FILE, STATUS_FILE,
                                          read_status, worker_alive)

# A run's status, the one set of words (the window's table and dashboard import them from here):
# how its journal ended (the journal's own `end` statuses), or, without an `end`, running or crashed.
COMPLETED, STOPPED, FAILED = END_STATUSES
RUNNING, CRASHED = "running", "crashed"
STATUSES = (RUNNING, COMPLETED, STOPPED, FAILED, CRASHED)
LOG_TAIL_BYTES = 8192
CRASH_SIGNS = (("Segmentation fault", "a segmentation fault (native code crashed)"),
               ("Fatal Python error", "a fatal error in native code"),
               ("Killed", "it was killed (SIGKILL — often the system's out-of-memory killer)"))


@dataclass
class RunSummary:
    """One row of the runs table (a snapshot: the window may keep it while the next is built)."""
    path: Path
    name: str
    status: str
    model: str = ""
    dataset: str = ""
    rank: int | None = None
    quantization: str = ""
    step: int = 0
    total_steps: int = 0
    best_eval: float | None = None
    duration_s: float = 0.0
    started_at: float | None = None
    disk_bytes: int = 0
    error: dict | None = None          # kind, message, hint (+ overrides and advisor for out-of-memory)
    checkpoints: list[int] = field(default_factory=list)
    resumes: int = 0
    loss_x: list[float] = field(default_factory=list)
    loss_y: list[float] = field(default_factory=list)
    eval_x: list[float] = field(default_factory=list)
    eval_y: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # files of this run that cannot be read, and why

    @property
    def live(self) -> bool:
        return self.status == RUNNING

    @property
    def can_resume(self) -> bool:
        return self.status in (STOPPED, FAILED, CRASHED)


class RunDigest:
    """The running fold of one run's journal."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.follower = JournalFollower(run_dir / JOURNAL_FILE)
        self.signature: tuple = ()
        self.config: dict = {}
        self.config_mtime = -1.0
        self.disk_bytes = 0
        self.first_time: float | None = None
        self.closed_duration = 0.0           # seconds of the finished segments
        self.segment_start: float | None = None
        self.last_time: float | None = None
        self.end: dict | None = None         # the `end` of the last segment, if it has one
        self.error: dict | None = None
        self.step = self.total = self.resumes = 0
        self.loss_x: list[float] = []
        self.loss_y: list[float] = []
        self.eval_x: list[float] = []
        self.eval_y: list[float] = []
        self.config_problem: str | None = None

    # ---- folding ------------------------------------------------------------------------------
    def fold(self, event: dict) -> None:
        kind, when = event["type"], event["time"]
        if self.end is not None or (kind == "phase" and event.get("name") == "resuming"):
            self._new_segment(kind == "phase" and event.get("name") == "resuming")
        if self.first_time is None:
            self.first_time = when
        if self.segment_start is None:
            self.segment_start = when
        self.last_time = when
        handler = getattr(self, "_on_" + kind, None)
        if handler is not None:
            handler(event)

    def _new_segment(self, resuming: bool) -> None:
        if self.segment_start is not None and self.last_time is not None:
            self.closed_duration += self.last_time - self.segment_start
        self.segment_start, self.end, self.error = None, None, None
        self.resumes += int(resuming)

    def _on_start(self, e: dict) -> None:
        self.total = e["total_steps"]
        resumed_at = e.get("resumed_at") or 0
        self.step = resumed_at
        _truncate(self.loss_x, self.loss_y, resumed_at)      # steps redone after a resume replace the old
        _truncate(self.eval_x, self.eval_y, resumed_at)

    def _on_step(self, e: dict) -> None:
        self.step, self.total = e["step"], e["total_steps"]
        self.loss_x.append(e["step"])
        self.loss_y.append(e["loss"])

    def _on_eval(self, e: dict) -> None:
        self.eval_x.append(e["step"])
        self.eval_y.append(e["loss"])

    def _on_error(self, e: dict) -> None:
        self.error = {k: e.get(k) for k in ("kind", "message", "hint", "overrides", "advisor") if k in e}

    def _on_end(self, e: dict) -> None:
        self.end = e

    # ---- the summary --------------------------------------------------------------------------
    def refresh(self) -> bool:
        """Fold what is new; True when anything changed since the last call."""
        signature = (_stat(self.run_dir / JOURNAL_FILE), _stat(self.run_dir / CONFIG_FILE),
                     _stat(self.run_dir / STATUS_FILE))
        if signature == self.signature:
            return False
        journal_changed = signature[0] != (self.signature[0] if self.signature else None)
        self.signature = signature
        if signature[1] != self.config_mtime:
            (self.config, self.config_problem), self.config_mtime = _read_config(self.run_dir / CONFIG_FILE), signature[1]
        for event in self.follower.poll():
            try:
                self.fold(event)
            except (KeyError, TypeError, ValueError):   # a line valid by the schema yet odd: skip it
                continue
        if journal_changed:              # checkpoints and adapters appear with journal lines
            self.disk_bytes = folder_size(self.run_dir)
        return True

    def summary(self, now: float | None = None) -> RunSummary:
        now = now or time.time()
        status, error = self.status(now)
        cfg, lora, training = self.config, self.config.get("lora") or {}, self.config.get("training") or {}
        segment_end = now if status == RUNNING else (self.last_time or now)
        open_segment = segment_end - (self.segment_start or segment_end)
        return RunSummary(
            path=self.run_dir, name=cfg.get("name") or self.run_dir.name, status=status,
            model=_leaf(cfg.get("model")), dataset=_leaf((cfg.get("data") or {}).get("path")),
            rank=lora.get("r"), quantization=str(cfg.get("quantization", "")),
            step=self.step, total_steps=self.total or int(training.get("max_steps") or 0),
            best_eval=min(self.eval_y) if self.eval_y else None,
            duration_s=max(0.0, self.closed_duration + max(0.0, open_segment)),
            started_at=self.first_time or _mtime(self.run_dir), disk_bytes=self.disk_bytes, error=error,
            checkpoints=list_checkpoint_steps(self.run_dir), resumes=self.resumes,
            loss_x=list(self.loss_x), loss_y=list(self.loss_y),
            eval_x=list(self.eval_x), eval_y=list(self.eval_y), problems=self.problems())

    def problems(self) -> list[str]:
        """Each file of this run that cannot be read, named, with why (the run still shows)."""
        found = [p for p in (self.config_problem, self.follower.problem, _status_problem(self.run_dir)) if p]
        return found

    def status(self, now: float) -> tuple[str, dict | None]:
        if self.end is not None:
            status = self.end["status"]
            error = self.error if status == FAILED else None
            problems = self.problems()
            if error is None and problems:
                error = unreadable_error(problems)
            return status, error
        if worker_alive(self.run_dir, read_status(self.run_dir), now):
            return RUNNING, self.error
        problems = self.problems()
        if problems and not self.follower.path.is_file():
            return CRASHED, unreadable_error(problems)
        return CRASHED, crash_error(self.run_dir, self.error)


def unreadable_error(problems: list[str]) -> dict:
    return {"kind": "unreadable", "message": "; ".join(problems),
            "hint": "the rest of the run is shown as far as it can be read; fix or delete that file"}


def crash_error(run_dir: Path, last_error: dict | None) -> dict:
    """What we can say about a worker that vanished without an `end`."""
    tail = _tail(run_dir / LOG_FILE)
    cause = next((words for sign, words in CRASH_SIGNS if sign in tail), None)
    steps = list_checkpoint_steps(run_dir)
    resume = (f"Resume continues from the last checkpoint (step {steps[-1]})." if steps
              else "No checkpoint was saved; resuming starts again from step 0.")
    message = ("The training worker stopped without finishing" + (f": {cause}." if cause else
               " (killed, crashed, or the computer shut down)."))
    if last_error:
        message += f" Last error: {last_error.get('message')}"
    return {"kind": "crashed", "message": message, "hint": f"{resume} See {run_dir / LOG_FILE} for its last output."}


class RunHistory:
    """Every run under `root`; call `refresh()` (off the GUI thread) for fresh summaries."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._digests: dict[Path, RunDigest] = {}
        self._summaries: dict[Path, RunSummary] = {}

    def refresh(self) -> list[RunSummary]:
        """Summaries of all runs, newest first. Unchanged finished runs reuse their last summary."""
        now, seen = time.time(), []
        for run_dir in run_folders(self.root):
            seen.append(run_dir)
            digest = self._digests.setdefault(run_dir, RunDigest(run_dir))
            try:                # one run's garbage never blanks the others (issue 27)
                changed = digest.refresh()
                old = self._summaries.get(run_dir)
                if changed or old is None or old.status in (RUNNING,) or digest.end is None:
                    self._summaries[run_dir] = digest.summary(now)
            except Exception as exc:    # noqa: BLE001 — named in the row, not raised
                problem = f"{run_dir} cannot be read: {type(exc).__name__}: {exc}"
                self._summaries[run_dir] = RunSummary(path=run_dir, name=run_dir.name, status=CRASHED,
                                                      started_at=_mtime(run_dir), error=unreadable_error([problem]),
                                                      problems=[problem])
        for gone in set(self._digests) - set(seen):
            self._digests.pop(gone, None)
            self._summaries.pop(gone, None)
        return sorted(self._summaries.values(), key=lambda s: s.started_at or 0, reverse=True)


def run_folders(root: Path) -> list[Path]:
    try:
        entries = list(os.scandir(root))
    except OSError:
        return []
    return [Path(e.path) for e in entries if e.is_dir() and not e.name.startswith(".")
            and (os.path.exists(os.path.join(e.path, CONFIG_FILE)) or os.path.exists(os.path.join(e.path, JOURNAL_FILE)))]


def runs_with_adapters(root: Path) -> list[Path]:
    """Run folders with something to load: a final adapter or a checkpoint, newest first (by name)."""
    found = [d for d in run_folders(root) if (d / CONFIG_FILE).is_file() and adapter_steps(d)]
    return sorted(found, key=lambda d: d.name, reverse=True)


def find_live_runs(root: Path) -> list[Path]:
    """Runs whose worker is alive, newest heartbeat first (reads only status.json files)."""
    live = [(read_status(d), d) for d in run_folders(root)]
    live = [(s, d) for s, d in live if worker_alive(d, s)]
    return [d for s, d in sorted(live, key=lambda sd: sd[0].get("heartbeat", 0), reverse=True)]


def summarize(run_dir: Path) -> RunSummary:
    digest = RunDigest(Path(run_dir))
    digest.refresh()
    return digest.summary()


def delete_run(run_dir: Path) -> None:
    """Delete a run folder; refuses one whose worker is alive."""
    run_dir = Path(run_dir)
    if worker_alive(run_dir):
        raise RuntimeError(f"{run_dir.name} is still running; stop it before deleting it")
    shutil.rmtree(run_dir)


# ---- small helpers ------------------------------------------------------------------------
def _truncate(xs: list[float], ys: list[float], last_x: float) -> None:
    keep = next((i for i, x in enumerate(xs) if x > last_x), len(xs))
    del xs[keep:], ys[keep:]


def _stat(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


def _mtime(path: Path) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def _read_yaml(path: Path) -> dict:
    return _read_config(path)[0]


def _read_config(path: Path) -> tuple[dict, str | None]:
    """The run's config.yaml as a mapping, and why not when it cannot be (None: read, or absent)."""
    import yaml             # here: the window imports this module's status words before its first paint
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, None
    except OSError as exc:
        return {}, f"{path} cannot be read ({exc.strerror or exc})"
    except UnicodeDecodeError as exc:
        return {}, f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
    except yaml.YAMLError as exc:
        return {}, f"{path} is not valid YAML ({str(exc).splitlines()[0]})"
    if not isinstance(data, dict):
        return {}, (f"{path} is not a mapping of settings" if data is not None else None)
    return data, None


def _status_problem(run_dir: Path) -> str | None:
    """Why status.json cannot be read (None when it reads, or is absent)."""
    import json
    path = Path(run_dir) / STATUS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror or exc})"
    except UnicodeDecodeError as exc:
        return f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
    except ValueError as exc:
        return f"{path} is not valid JSON ({exc})"
    return None if isinstance(data, dict) else f"{path} is not a JSON object"


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - LOG_TAIL_BYTES))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _leaf(value) -> str:
    return Path(str(value).rstrip("/")).name if value else ""
