"""The rank and resize jobs through the one runtime (inline): their journals, and a failed resize
that leaves nothing behind."""
from __future__ import annotations

import json
import shutil

import pytest

from lorastudio.core.journal import read_events
from lorastudio.core.plans.rank import RankPlanError, find_target, start_rank
from lorastudio.core.plans.resize import ResizeRequest, plan_resize, start_resize
from lorastudio.core.runtime.follower import follow


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_llama):
    from tests.helpers.tiny_models import train_tiny_run, write_text_jsonl
    root = tmp_path_factory.mktemp("rankjobs")
    return train_tiny_run(root / "run", tiny_llama, write_text_jsonl(root / "train.jsonl"), quantization="none",
                          training__max_steps=4, training__lr=2e-2, training__save_every=0)


def test_rank_job_reports_through_the_journal(run, inline_jobs):
    handle = start_rank(find_target(run))
    assert handle.job_dir.parent == run / "rank"
    outcome = follow(handle, lambda ev: None)
    assert outcome.status == "completed"
    events = read_events(handle.journal)
    kinds = [e["type"] for e in events]
    assert kinds[-2:] == ["report", "end"] and "phase" in kinds
    report = events[-2]["report"]
    assert report["adapter"] == str(run / "adapter") and len(report["modules"]) == 4


def test_a_bare_adapter_folder_is_a_target_too(run, runs_home, inline_jobs):
    target = find_target(run / "adapter")
    assert target.run_dir is None and target.adapter == run / "adapter"
    handle = start_rank(target)
    assert handle.job_dir.parent == runs_home / "rank"
    assert follow(handle, lambda ev: None).status == "completed"


def test_a_failed_resize_leaves_no_output(run, tmp_path, inline_jobs):
    dora = tmp_path / "dora"
    shutil.copytree(run / "adapter", dora)
    cfg = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": True}))
    out = tmp_path / "out" / "small"
    handle = start_resize(plan_resize(ResizeRequest(find_target(dora), out, 2, None, False)))
    outcome = follow(handle, lambda ev: None)
    assert outcome.status == "failed" and outcome.error["kind"] == "adapter" and "DoRA" in outcome.error["message"]
    assert not out.exists() and not list(out.parent.glob(".small.*"))


def test_resize_checks_come_first(run, tmp_path):
    target = find_target(run)
    with pytest.raises(RankPlanError, match="either a rank"):
        plan_resize(ResizeRequest(target, tmp_path / "x", None, None, False))
    with pytest.raises(RankPlanError, match="either a rank"):
        plan_resize(ResizeRequest(target, tmp_path / "x", 2, 0.9, False))
    with pytest.raises(RankPlanError, match="inside or around the adapter folder"):
        plan_resize(ResizeRequest(find_target(run / "adapter"), run / "adapter" / "x", 2, None, False))
    (tmp_path / "file").write_text("x")
    with pytest.raises(RankPlanError, match="is a file"):
        plan_resize(ResizeRequest(target, tmp_path / "file", 2, None, False))
    broken = tmp_path / "broken"
    shutil.copytree(run / "adapter", broken)
    (broken / "adapter_config.json").write_text("{not json")
    with pytest.raises(RankPlanError, match="adapter_config.json: no rank can be read"):
        plan_resize(ResizeRequest(find_target(broken), tmp_path / "y", 2, None, False))
    job = plan_resize(ResizeRequest(target, tmp_path / "z", None, 0.99, False))
    assert job.to_spec()["energy"] == 0.99 and job.to_spec()["rank"] is None
