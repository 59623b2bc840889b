"""Issue 27, class 2: nothing in a run folder runs code when it is read. A checkpoint's trainer
state is safetensors + JSON; a 0.x `trainer_state.pt` is read as weights only; a pickle that would
run code is refused with words and the per-file opt-in — tested with a real hostile pickle."""
from __future__ import annotations

import os

import pytest
import torch

from lorastudio.core.engine import checkpoint_state
from lorastudio.core.engine.checkpoint_state import (ALLOW_PICKLE_ENV, TRAINER_STATE_FILE, UnsafeCheckpoint,
                                                     read_trainer_state)
from tests.helpers.training import train


class Hostile:
    """Unpickling this runs a shell command that writes `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"echo pwned > '{self.marker}'",))


@pytest.fixture
def stopped_run(make_config, tmp_path):
    config = make_config(training__save_every=0, data__validation_split=0.0)
    _, status, _ = train(config, tmp_path / "run", stop_after=3)
    assert status == "stopped"
    return config, tmp_path / "run", tmp_path / "run" / "checkpoints" / "step-000003"


def test_a_checkpoint_holds_no_pickle_and_resumes(stopped_run):
    config, run, checkpoint = stopped_run
    names = sorted(p.name for p in checkpoint.iterdir())
    assert "trainer_state.safetensors" in names and "trainer_state.json" in names
    assert not any(name.endswith((".pt", ".bin", ".pkl")) for name in names)
    _, status, events = train(config, run, resume_from=checkpoint)
    assert status == "completed" and [e["step"] for e in events if e["type"] == "step"][-1] == 10


def test_an_old_checkpoint_is_read_as_weights_only(stopped_run):
    config, run, checkpoint = stopped_run
    state = read_trainer_state(checkpoint)
    for name in ("trainer_state.safetensors", "trainer_state.json"):
        (checkpoint / name).unlink()
    torch.save(state, checkpoint / TRAINER_STATE_FILE)          # what 0.x wrote
    again = read_trainer_state(checkpoint)
    assert again["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    _, status, _ = train(config, run, resume_from=checkpoint)
    assert status == "completed"


def test_a_hostile_pickle_is_refused_and_runs_nothing(stopped_run, tmp_path, monkeypatch):
    config, run, checkpoint = stopped_run
    marker = tmp_path / "pwned.txt"
    for name in ("trainer_state.safetensors", "trainer_state.json"):
        (checkpoint / name).unlink()
    torch.save({"optimizer": Hostile(marker)}, checkpoint / TRAINER_STATE_FILE)
    monkeypatch.delenv(ALLOW_PICKLE_ENV, raising=False)
    with pytest.raises(UnsafeCheckpoint) as refused:
        train(config, run, resume_from=checkpoint)
    print(f"\nrefused: {refused.value}")
    assert not marker.exists()
    assert "would run code when loaded" in refused.value.message and str(checkpoint) in refused.value.message
    assert f"{ALLOW_PICKLE_ENV}={checkpoint / TRAINER_STATE_FILE}" in refused.value.hint
    # The opt-in is per file: another file named does not open this one …
    monkeypatch.setenv(ALLOW_PICKLE_ENV, str(tmp_path / "other.pt"))
    with pytest.raises(UnsafeCheckpoint):
        read_trainer_state(checkpoint)
    assert not marker.exists()
    # … and naming this one loads it as the user asked (the pickle runs: that is what they trusted).
    monkeypatch.setenv(ALLOW_PICKLE_ENV, str(checkpoint / TRAINER_STATE_FILE))
    read_trainer_state(checkpoint)
    assert marker.read_text().strip() == "pwned"


def test_state_round_trips_every_shape():
    import numpy as np
    state = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2, 3)}},
             "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "params": [0]}],
             "rng": {"numpy": ("MT19937", np.arange(4, dtype=np.uint32), 1, 0, 0.0), "python": (3, (1, 2), None)},
             "inf": float("inf"), "none": None}
    tensors: dict = {}
    back = checkpoint_state.unflatten_state(checkpoint_state.flatten_state(state, tensors), tensors)
    assert back["state"][0]["exp_avg"].equal(torch.ones(2, 3)) and back["param_groups"][0]["betas"] == (0.9, 0.999)
    assert back["rng"]["numpy"][1].dtype == np.uint32 and back["rng"]["python"] == (3, (1, 2), None)
    assert back["inf"] == float("inf") and back["none"] is None
