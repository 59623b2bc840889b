"""The job table (core/runtime/jobs.py) is the one list of jobs: the launcher, the follower, the
plans, the job processes, the CLI and the window all agree with it, and a killed worker of every
job is named in the words the table gives."""
from __future__ import annotations

import ast
import importlib
import signal
import time
from pathlib import Path

import pytest

from lorastudio.core.cli import COMMANDS
from lorastudio.core.runtime import launcher
from lorastudio.core.runtime.follower import JobWatch, crash_events
from lorastudio.core.runtime.jobs import JOBS, VERBS, job_kind

ROOT = Path(__file__).resolve().parents[3]


def imports_of(path: Path) -> set[str]:
    """Every module a file imports (function-level imports too), with `from X import y` as X.y."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def calls_in(path: Path) -> set[str]:
    return {node.func.id if isinstance(node.func, ast.Name) else node.func.attr
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute))}


def test_every_job_has_a_plan_with_its_starter_and_a_job_module():
    plans = {p.stem for p in (ROOT / "core" / "plans").glob("*.py") if p.stem != "__init__"}
    jobs = {p.stem for p in (ROOT / "core" / "jobs").glob("*.py") if p.stem != "__init__"}
    assert plans == set(VERBS) == jobs
    for verb in VERBS:
        plan = importlib.import_module(f"lorastudio.core.plans.{verb}")
        assert callable(getattr(plan, f"start_{verb}")), verb
        assert f"launch({verb!r}" in (ROOT / "core" / "plans" / f"{verb}.py").read_text().replace('"', "'")
        job_source = (ROOT / "core" / "jobs" / f"{verb}.py").read_text()
        assert f'job_main("{verb}"' in job_source, f"core/jobs/{verb}.py must run as job {verb!r}"


def test_the_launcher_knows_exactly_the_tables_jobs():
    assert launcher.job_module("export_gguf") == "lorastudio.core.jobs.export_gguf"
    for verb in VERBS:
        assert launcher.job_module(verb).endswith(f".jobs.{verb}")
    with pytest.raises(ValueError, match="unknown job 'gguf_export'; one of train, merge"):
        launcher.job_module("gguf_export")
    with pytest.raises(ValueError, match="merge is not a job that runs as several processes"):
        launcher.start_ranks("merge", ROOT, 2)
    assert [verb for verb in VERBS if job_kind(verb).ranks] == ["train"]


def test_only_the_plans_start_jobs():
    """No module outside core/plans (and the runtime itself) calls `launch`."""
    for folder in ("core", "app"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.parent.name in ("plans", "runtime"):
                continue
            assert "launch" not in calls_in(path), f"{path.relative_to(ROOT)} launches a job: use core/plans"


def test_the_cli_commands_start_their_jobs_through_the_plan():
    modules = {c.name: c.module for c in COMMANDS}
    for job in JOBS.values():
        for command in job.cli:
            assert command in modules, f"{job.verb}: no CLI command {command!r}"
            source = ROOT / "core" / "cli" / f"{modules[command]}.py"
            assert any(name.startswith(f"lorastudio.core.plans.{job.verb}") for name in imports_of(source)), \
                f"`lorastudio {command}` ({source.name}) does not start {job.verb} through core/plans/{job.verb}.py"
    # and a CLI module that starts a job is listed in the table
    for path in (ROOT / "core" / "cli").glob("*.py"):
        for verb in VERBS:
            if f"start_{verb}" in calls_in(path):
                listed = {modules[c] for c in JOBS[verb].cli}
                assert path.stem in listed, f"{path.name} starts {verb} but the job table does not say so"


def test_the_window_starts_each_job_where_the_table_says():
    for job in JOBS.values():
        module = ROOT / "app" / Path(*job.window.split(".")).with_suffix(".py")
        assert module.is_file(), job.window
        assert f"start_{job.verb}" in calls_in(module), f"app/{job.window} does not call start_{job.verb}"
        assert f"lorastudio.core.plans.{job.verb}.start_{job.verb}" in imports_of(module), job.window
    for path in (ROOT / "app").rglob("*.py"):
        for verb in VERBS:
            if f"start_{verb}" in calls_in(path):
                assert path.with_suffix("").relative_to(ROOT / "app").as_posix().replace("/", ".") == \
                    JOBS[verb].window, f"{path.name} starts {verb}; the job table names app/{JOBS[verb].window}"


def test_no_job_module_imports_another():
    for path in (ROOT / "core" / "jobs").glob("*.py"):
        others = {name for name in imports_of(path) if name.startswith("lorastudio.core.jobs")}
        assert not others, f"{path.name} imports {others}: move what two jobs share to the engine"


@pytest.mark.parametrize("verb", VERBS)
def test_a_killed_worker_is_named_by_its_job(verb, tmp_path):
    """A real worker process of each job, SIGKILLed as it starts: the follower's message names it."""
    handle = launcher.launch(verb, tmp_path / verb, {})
    handle.process.send_signal(signal.SIGKILL)
    watch, events, deadline = JobWatch(handle), [], time.monotonic() + 30
    while watch.outcome is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
        events += watch.poll()
    worker = JOBS[verb].worker
    assert watch.outcome.status == "failed"
    assert watch.outcome.error["message"] == f"The {worker} exited unexpectedly (killed by signal 9 (SIGKILL))."
    assert events[-2]["kind"] == "crashed"


def test_crash_words_come_from_the_table():
    assert crash_events("export_gguf", Path("/j"), -9)[0]["message"].startswith("The GGUF export worker exited")
    assert crash_events("resize", Path("/j"), 1)[0]["message"] == "The resize worker exited unexpectedly (exit code 1)."


def test_a_spec_written_for_another_job_is_refused(tmp_path, capfd):
    from lorastudio.core.runtime.launcher import write_spec
    from lorastudio.core.jobs import rank
    write_spec(tmp_path, {"adapter": str(tmp_path)}, "resize")
    assert rank.main([str(tmp_path)]) == 2
    err = capfd.readouterr().err
    assert "is the spec of a resize job, not of rank" in err and "lorastudio.core.jobs.resize" in err
    assert not (tmp_path / "events.jsonl").exists()
