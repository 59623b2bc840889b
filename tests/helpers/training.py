"""Training a tiny model in-process (the trainer without a job around it) and writing data files."""
from __future__ import annotations

import json
from pathlib import Path

CHAT = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "the cat sat"},
                     {"role": "assistant", "content": "on the mat"}, {"role": "user", "content": "and then"},
                     {"role": "assistant", "content": "looked at the door"}]}


def jsonl(path: Path, rows) -> Path:
    """Rows (dicts, or raw lines as strings) written one a line."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def train(config_path: Path, run_dir: Path, stop_after: int | None = None, resume_from=None):
    """(trainer, status, events) of a run trained in this process from a config file."""
    from lorastudio.core.config import RunConfig
    from lorastudio.core.engine.trainer import Trainer
    from lorastudio.core.journal import JournalWriter, read_events
    from lorastudio.core.preflight import check_config
    cfg = RunConfig.load(config_path)
    info, _ = check_config(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    journal = JournalWriter(run_dir / "events.jsonl")
    trainer = Trainer(cfg, info, run_dir, journal)
    if stop_after is not None:
        trainer.should_stop = lambda: trainer.step >= stop_after
    trainer.setup(resume_from)
    trainer.start_event()
    status = trainer.train()
    journal.close()
    return trainer, status, read_events(run_dir / "events.jsonl")
