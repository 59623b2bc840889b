"""Journals checked strictly against core.journal.SCHEMA (tests/conftest.py does it after every test)."""
from __future__ import annotations

import json
from pathlib import Path

from lorastudio.core.journal import validate


def schema_problems(root: Path) -> list[str]:
    """'PATH:LINE: what is wrong' for every event of every events.jsonl under `root` that a reader
    accepts but the strict schema refuses (a type or field not listed). Lines readers drop anyway
    (half-written, malformed) are not the schema's business."""
    problems = []
    for path in sorted(Path(root).rglob("events.jsonl")):
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for number, line in enumerate(lines, 1):
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if validate(event) is None:
                problem = validate(event, strict=True)
                if problem:
                    problems.append(f"{path.relative_to(root)}:{number}: {problem}")
    return problems
