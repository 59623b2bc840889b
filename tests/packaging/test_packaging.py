"""Desktop files validate; a wheel installs into a fresh venv with --version and its resources."""
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
LINUX = ROOT / "packaging" / "linux"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install desktop-file-utils appstream)")
    return path


def test_desktop_entry_validates():
    result = subprocess.run([_tool("desktop-file-validate"), *LINUX.glob("*.desktop")], capture_output=True, text=True)
    assert result.returncode == 0 and "error" not in result.stdout.lower(), result.stdout


def test_metainfo_validates():
    result = subprocess.run([_tool("appstreamcli"), "validate", "--no-net", *LINUX.glob("*.metainfo.xml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_icons_exist_in_every_size():
    sizes = sorted(int(p.parent.name.split("x")[0]) for p in (ROOT / "resources/icons/hicolor").glob("*/lorastudio.png"))
    assert sizes == [16, 24, 32, 48, 64, 128, 256, 512]


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_has_version_and_resources(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "w"), str(ROOT)], check=True)
    (wheel,) = (tmp_path / "w").glob("lorastudio-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "lorastudio/resources/icons/hicolor/256x256/lorastudio.png" in names
    assert "lorastudio/resources/style.qss" in names
    assert "lorastudio/resources/data/sample_train.jsonl" in names and "lorastudio/resources/presets/demo.yaml" in names
    assert not any(n.startswith(("app/", "core/")) for n in names)     # no generic top-level packages
    venv.create(tmp_path / "env", with_pip=True)
    py = tmp_path / "env" / "bin" / "python"
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    from importlib.metadata import version
    out = subprocess.run([tmp_path / "env" / "bin" / "lorastudio", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"lorastudio {version('lorastudio')}"
    listing = subprocess.run([py, "-c", "import importlib.resources as r; "
                              "print(sorted(p.name for p in r.files('lorastudio.resources').iterdir()))"],
                             capture_output=True, text=True, check=True).stdout
    assert "icons" in listing and "style.qss" in listing and "data" in listing


@pytest.mark.parametrize("preset", sorted((ROOT / "resources" / "presets").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_preset_is_a_valid_config(preset, tmp_path):
    """A preset is overrides with the model and data to fill in: with those filled, it validates
    (a misspelt key or a bad value in a shipped preset would reach users as an error)."""
    import yaml

    from lorastudio.core.config import RunConfig
    raw = yaml.safe_load(preset.read_text(encoding="utf-8"))
    raw["model"] = str(tmp_path / "model")
    raw.setdefault("data", {})["path"] = str(tmp_path / "data.jsonl")
    config = RunConfig.from_dict(raw)
    assert config.training.max_steps > 0
