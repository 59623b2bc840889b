"""Run folders of every status, written the way a worker writes them (journal lines + status.json),
for the Runs page's tests and screenshots. No torch: these are journals, not trainings."""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from lorastudio.core.config import RunConfig
from lorastudio.core.journal import validate
from lorastudio.core.atomic_files import atomic_write_json
from lorastudio.core.fit.advice import oom_hint, settings_after_oom


def config(name: str, **training) -> RunConfig:
    return RunConfig.from_dict({"model": "/models/SmolLM2-135M", "name": name, "quantization": "4bit",
                                "data": {"path": "/data/alpaca-mini.jsonl"}, "lora": {"r": 16},
                                "training": {"max_steps": 200, "batch_size": 8, "grad_accum": 2, "seq_len": 1024,
                                             "save_every": 50, **training}})


def make_run(root: Path, name: str, status: str, steps: int, total: int = 200, started: float | None = None,
             rate: float = 1.0, pid: int | None = None, error: dict | None = None, cfg: RunConfig | None = None,
             checkpoints: tuple[int, ...] = ()) -> Path:
    """A run folder whose journal ends with `status` (or no end: running / crashed by `pid`)."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    cfg = cfg or config(name)
    cfg.save(run_dir / "config.yaml")
    t0 = started or time.time() - 3600
    journal = open(run_dir / "events.jsonl", "w", encoding="utf-8")

    def emit(type_: str, when: float, **fields) -> None:      # JournalWriter's lines, with chosen times
        event = {"v": 1, "type": type_, "time": when, **fields}
        assert validate(event) is None, validate(event)
        journal.write(json.dumps(event) + "\n")
    emit("phase", t0, name="loading", message="Loading LlamaForCausalLM (4bit)")
    emit("start", t0 + 5, config=cfg.to_dict(), devices=["cpu"], versions={}, trainable_params=1000,
         total_params=100000, total_steps=total, resumed_at=0)
    for step in range(1, steps + 1):
        loss = 2.6 * math.exp(-step / (40 * rate)) + 0.9 + 0.05 * math.sin(step * 1.7)
        emit("step", t0 + 5 + step * 2, step=step, total_steps=total, epoch=step / 100, loss=loss, lr=1e-4,
             grad_norm=1.0, tokens_per_s=900.0, elapsed_s=step * 2.0, eta_s=1.0)
        if step % 50 == 0:
            emit("eval", t0 + 6 + step * 2, step=step, loss=loss + 0.08)
    for step in checkpoints:
        ckpt = run_dir / "checkpoints" / f"step-{step:06d}"
        ckpt.mkdir(parents=True)
        (ckpt / "state.json").write_text('{"step": %d}' % step)
        (ckpt / "adapter_model.safetensors").write_bytes(b"\0" * 400_000)
    end_time = t0 + 10 + steps * 2
    if error:
        emit("error", end_time, **error)
    if status in ("completed", "stopped", "failed"):
        emit("end", end_time, status=status, adapter=str(run_dir / "adapter") if status != "failed" else None)
    journal.close()
    atomic_write_json(run_dir / "status.json", {"pid": pid or 999_999_999, "state": status, "heartbeat": time.time()})
    os.utime(run_dir / "status.json")
    return run_dir


def oom_error(cfg: RunConfig) -> dict:
    """An out-of-memory error as the train job writes it: the advisor's hint and overrides (the
    fixtures' model folder does not exist: the rule of thumb's)."""
    advice = settings_after_oom(cfg, None, None)
    return {"kind": "oom", "message": "CUDA out of memory. Tried to allocate 2.00 GiB", "hint": oom_hint(advice),
            "overrides": advice.overrides, "advisor": advice.advisor}


def make_all(root: Path, live_pid: int | None = None) -> dict[str, Path]:
    """One run of each status; `live_pid` is a process standing in for a running worker."""
    now = time.time()
    oom_cfg = config("big-batch", batch_size=16, gradient_checkpointing=False)
    return {
        "completed": make_run(root, "smollm2-alpaca-r16", "completed", 200, started=now - 86400 * 2, checkpoints=(150, 200)),
        "completed2": make_run(root, "smollm2-alpaca-r32", "completed", 200, started=now - 86400, rate=0.6,
                               checkpoints=(200,)),
        "stopped": make_run(root, "qwen-chat-lr3e-4", "stopped", 120, started=now - 7200, rate=1.4, checkpoints=(100, 120)),
        "failed": make_run(root, "big-batch", "failed", 0, started=now - 5400, error=oom_error(oom_cfg), cfg=oom_cfg),
        "crashed": make_run(root, "overnight-run", "crashed", 90, started=now - 3600 * 5, rate=0.8, checkpoints=(50,)),
        "running": make_run(root, "llama-live", "running", 64, started=now - 600, rate=0.7, pid=live_pid,
                            checkpoints=(50,)),
    }


def fake_worker():
    """A process whose command line names the worker module: `worker_alive` takes it for one."""
    import subprocess
    import sys
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "lorastudio.core.jobs.train"])


def answer_next_dialog(button_text: str, seen: list) -> None:
    """Click `button_text` in the next modal dialog (polls until it is shown); its text goes to `seen`."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QPushButton

    def click():
        box = QApplication.activeModalWidget()
        if box is None:
            QTimer.singleShot(20, click)
            return
        seen.append(box.text())
        for button in box.findChildren(QPushButton):
            if button.text().replace("&", "") == button_text:
                button.click()
                return
        raise AssertionError(f"no {button_text!r} in {[b.text() for b in box.findChildren(QPushButton)]}")
    QTimer.singleShot(0, click)
