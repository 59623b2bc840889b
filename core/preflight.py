"""Checks that need the file system but no weights: model folder, data file, target names.

Run before any model loads (by the CLI, the window and the worker), so a typo costs a second,
not a minute of loading.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from lorastudio.core.config import ConfigError, RunConfig
from lorastudio.core.models.info import ModelError, ModelInfo, read_model_info
from lorastudio.core.models.targets import TargetReport, discover_targets


def resolve_paths(config: RunConfig, base_dir: Path) -> RunConfig:
    """Make relative model and data paths absolute against `base_dir` (the config file's folder)."""
    model = config.model
    candidate = (base_dir / model).expanduser()
    if not Path(model).expanduser().is_absolute() and candidate.exists():
        model = str(candidate.resolve())
    def absolute(p: str) -> str:
        if not p:
            return p
        path = Path(p).expanduser()
        return str(path if path.is_absolute() else (base_dir / path).resolve())
    return replace(config, model=model, data=replace(config.data, path=absolute(config.data.path),
                                                     validation_path=absolute(config.data.validation_path)))


def check_config(config: RunConfig) -> tuple[ModelInfo, TargetReport]:
    """Raise ConfigError for the first problem found; return the model's metadata otherwise."""
    try:
        info = read_model_info(config.model)
    except ModelError as exc:
        raise ConfigError("model", config.model, f"{exc.message}; {exc.hint}") from None
    if not info.weight_files:
        if info.pickle_files and not config.allow_pickle:
            raise ConfigError("model", config.model,
                              "this model has only pickle weights (.bin/.pt), which can run code when "
                              "loaded; set allow_pickle: true if you trust it, or convert it to safetensors")
        if not info.pickle_files:
            raise ConfigError("model", config.model, f"no weight files (*.safetensors) in {info.path}")
    data = Path(config.data.path)
    if not data.is_file():
        raise ConfigError("data.path", config.data.path,
                          "the file does not exist" if not data.exists() else "it is not a file")
    if config.data.validation_path and not Path(config.data.validation_path).is_file():
        raise ConfigError("data.validation_path", config.data.validation_path, "the file does not exist")
    report = discover_targets(info)
    if info.weight_files:
        unknown = report.unknown(config.lora.targets)
        if unknown:
            raise ConfigError("lora.targets", unknown[0] if len(unknown) == 1 else unknown,
                              f"not a linear module of {info.architecture}; available: "
                              f"{', '.join(report.names())} (or all-linear)")
    return info, report
