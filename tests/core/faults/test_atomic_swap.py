"""Atomic means atomic: a process saving an adapter in a loop is SIGKILLed at random instants,
twenty times; the adapter folder is whole every time (never missing, never mixed, never short).
With the exchange (Linux renameat2) it is whole at once; with the two-rename fallback it is whole
once `tidy` ran, as the next command does. Leftovers of the dead savers are removed."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors import safe_open

from lorastudio.core import atomic_files
from lorastudio.core.atomic_files import atomic_dir, exchange, replace_folder, tidy
from lorastudio.core.models.info import check_shard_complete, read_safetensors_header
from lorastudio.core.runs.checkpoints import adapter_complete

SAVER = Path(__file__).with_name("atomic_saver.py")


def whole_version(folder: Path) -> int:
    """The version of a whole adapter folder; fails the test for a missing, mixed or short one."""
    assert adapter_complete(folder), f"{folder} is not a whole adapter: {sorted(os.listdir(folder.parent))}"
    config = json.loads((folder / "adapter_config.json").read_text())
    weights = folder / "adapter_model.safetensors"
    check_shard_complete(weights, read_safetensors_header(weights))
    with safe_open(str(weights), "np") as fh:
        assert fh.metadata()["version"] == str(config["version"]), "files of two versions mixed"
        assert float(fh.get_tensor("lora_A")[-1, -1]) == config["version"]
    return config["version"]


def kill_savers(tmp_path: Path, mode: str, rounds: int = 20, seed: int = 0) -> list[int]:
    target = tmp_path / "adapter"
    rng = random.Random(seed)
    # The fallback's dangerous instant (between its two renames) lasts microseconds; widened to
    # 30 ms here, random kills land in it often, and the recovery must put the old adapter back.
    env = {**os.environ, **({"LORASTUDIO_TEST_SWAP_PAUSE": "0.03"} if mode == "fallback" else {})}
    versions, with_leftovers, missing = [], 0, 0
    for _ in range(rounds):
        proc = subprocess.Popen([sys.executable, str(SAVER), str(target), mode], stdout=subprocess.PIPE, env=env)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.02, 0.4))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
        with_leftovers += bool(leftovers)
        missing += not target.exists()          # the fallback's window between its two renames
        if mode == "exchange":
            versions.append(whole_version(target))          # whole before anything recovers it
        tidy(tmp_path)                                      # what the next command does first
        versions.append(whole_version(target))
        assert [p.name for p in tmp_path.iterdir()] == ["adapter"], "a dead saver's leftovers stayed"
    print(f"\n{mode}: {rounds} kills, {with_leftovers} left hidden folders (removed), {missing} left no "
          f"adapter until tidy put it back, last version {versions[-1]}")
    assert versions == sorted(versions) and versions[-1] > rounds  # it saved many times, never went back
    if mode == "fallback":
        assert missing > 0, "no kill landed between the renames: the recovery was not exercised"
    return versions


@pytest.mark.slow
def test_a_kill_at_any_instant_of_a_save_leaves_a_whole_adapter(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    if not exchange(tmp_path / "a", tmp_path / "b"):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here (the fallback test covers it)")
    (tmp_path / "a").rmdir(), (tmp_path / "b").rmdir()
    kill_savers(tmp_path, "exchange")


@pytest.mark.slow
def test_the_fallback_swap_is_recovered_by_the_next_command(tmp_path):
    kill_savers(tmp_path, "fallback", seed=1)


def test_the_exchange_never_leaves_the_path_empty(tmp_path):
    target = tmp_path / "adapter"
    for version in (1, 2):
        with atomic_dir(target) as tmp:
            (tmp / "v").write_text(str(version))
    assert (target / "v").read_text() == "2" and [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_a_crash_between_the_fallback_renames_is_put_back(tmp_path, monkeypatch):
    """The fallback's one dangerous instant, made to happen: the old folder is moved aside and the
    process dies before the new one is moved in. The next command (tidy) puts the old one back."""
    target = tmp_path / "adapter"
    target.mkdir()
    (target / "v").write_text("old")
    monkeypatch.setitem(atomic_files._EXCHANGE, "off", True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    new = tmp_path / f".adapter.{dead.pid}.abcd1234.partial"
    new.mkdir()
    (new / "v").write_text("new")
    os.replace(target, tmp_path / f".adapter.{dead.pid}.old")           # ...and then it died
    assert not target.exists()
    done = tidy(tmp_path)
    assert (target / "v").read_text() == "old"
    assert sorted(item.action for item in done) == ["removed", "restored"]
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_leftovers_of_live_processes_are_left_alone(tmp_path):
    mine = tmp_path / f".adapter.{os.getpid()}.abcd1234.partial"
    mine.mkdir()
    assert tidy(tmp_path) == [] and mine.exists()


def test_replace_folder_swaps_a_file_target_too(tmp_path):
    (tmp_path / "out").write_text("a file")
    new = tmp_path / "new"
    new.mkdir()
    replace_folder(new, tmp_path / "out")
    assert (tmp_path / "out").is_dir() and not new.exists()
