import pytest


@pytest.fixture(autouse=True)
def own_data_home(tmp_path, monkeypatch):
    """The user's calibration file lives in the data directory: a fresh one per test."""
    monkeypatch.setenv("LORASTUDIO_HOME", str(tmp_path / "home"))
