"""The runs table's columns as plain data: title, the text shown, the value sorted on. Qt-free."""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any, Callable

from lorastudio.core.formatting import format_bytes, format_duration
from lorastudio.core.runs.listing import COMPLETED, CRASHED, FAILED, RUNNING, STOPPED, RunSummary

STATUS_COLORS = {RUNNING: "#4f6bed", COMPLETED: "#2aa876", STOPPED: "#e0a100", FAILED: "#d64545",
                 CRASHED: "#b03a9b"}
STATUS_TIPS = {RUNNING: "The worker is training (its heartbeat is fresh)",
               COMPLETED: "Finished; the adapter is saved",
               STOPPED: "Stopped on request; a checkpoint and the adapter were saved",
               FAILED: "The worker reported an error (see the details below)",
               CRASHED: "The worker vanished without finishing (killed, segfault, power loss)"}
# Curves of the overlaid runs, in selection order.
CURVE_COLORS = ("#4f6bed", "#e8833a", "#2aa876", "#9b59b6", "#d64545", "#17a2b8", "#8c6d31", "#e377c2")


@dataclass(frozen=True)
class Column:
    title: str
    text: Callable[[RunSummary], str]
    key: Callable[[RunSummary], Any]
    tip: str = ""
    numeric: bool = False


def steps_text(r: RunSummary) -> str:
    return f"{r.step:,} / {r.total_steps:,}" if r.total_steps else (f"{r.step:,}" if r.step else "—")


def started_text(r: RunSummary) -> str:
    if not r.started_at:
        return "—"
    return _dt.datetime.fromtimestamp(r.started_at).strftime("%Y-%m-%d %H:%M")


def status_text(r: RunSummary) -> str:
    if r.status == FAILED and r.error and r.error.get("kind") == "oom":
        return "failed (out of memory)"
    return r.status + (f" · resumed ×{r.resumes}" if r.resumes > 1 else " · resumed" if r.resumes else "")


COLUMNS: tuple[Column, ...] = (
    Column("Name", lambda r: r.name, lambda r: r.name.lower(), "The run's name (or its folder)"),
    Column("Status", status_text, lambda r: r.status, "running, completed, stopped, failed or crashed"),
    Column("Model", lambda r: r.model or "—", lambda r: r.model.lower(), "The base model"),
    Column("Dataset", lambda r: r.dataset or "—", lambda r: r.dataset.lower(), "The training data file"),
    Column("Rank", lambda r: str(r.rank) if r.rank else "—", lambda r: r.rank or 0, "LoRA rank r", True),
    Column("Quant.", lambda r: r.quantization or "—", lambda r: r.quantization, "How the frozen base is stored"),
    Column("Steps", steps_text, lambda r: (r.step / r.total_steps if r.total_steps else 0, r.step),
           "Optimizer steps done / planned", True),
    Column("Best eval", lambda r: f"{r.best_eval:.4f}" if r.best_eval is not None else "—",
           lambda r: r.best_eval if r.best_eval is not None else float("inf"), "Lowest evaluation loss", True),
    Column("Duration", lambda r: format_duration(r.duration_s) if r.duration_s else "—", lambda r: r.duration_s,
           "Time spent training, over all its sessions", True),
    Column("Started", started_text, lambda r: r.started_at or 0, "When the run started"),
    Column("Disk", lambda r: format_bytes(r.disk_bytes) if r.disk_bytes else "—", lambda r: r.disk_bytes,
           "Space the run folder takes (checkpoints, adapter, journal)", True),
)
STATUS_COLUMN = 1


def row_tooltip(r: RunSummary) -> str:
    tip = f"{r.path}\n{STATUS_TIPS.get(r.status, r.status)}"
    if r.error:
        tip += f"\n\n{r.error.get('message', '')}\nWhat to do: {r.error.get('hint', '')}"
    return tip


def facts(r: RunSummary) -> list[tuple[str, str]]:
    """(label, value) pairs for the details panel."""
    checkpoints = ", ".join(str(s) for s in r.checkpoints) if r.checkpoints else "none"
    return [("Model", r.model or "—"), ("Dataset", r.dataset or "—"),
            ("LoRA", f"r={r.rank}, {r.quantization}" if r.rank else r.quantization or "—"),
            ("Steps", steps_text(r)), ("Best eval", COLUMNS[7].text(r)),
            ("Duration", COLUMNS[8].text(r)), ("Started", started_text(r)),
            ("Checkpoints", f"steps {checkpoints}" if r.checkpoints else "none"),
            ("Disk", COLUMNS[10].text(r)), ("Folder", str(r.path))]


def describe_overrides(overrides: dict) -> str:
    return ", ".join(f"{k.split('.')[-1]} → {v}" for k, v in overrides.items())
