"""Checks that need the file system but no weights: model folder, data file, target names.

Run before any model loads (by the CLI, the window and the worker), so a typo costs a second,
not a minute of loading.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from lorastudio.core.config import ConfigError, RunConfig
from lorastudio.core.data.files import DataError
from lorastudio.core.data.sources import resolve as resolve_source
from lorastudio.core.models.info import (ModelError, ModelInfo, needs_remote_code, needs_tokenizer_remote_code,
                                        read_model_info, remote_code_files, tokenizer_problem,
                                        tokenizer_remote_code_files)
from lorastudio.core.models.targets import TargetReport, discover_targets


def resolve_paths(config: RunConfig, base_dir: Path) -> RunConfig:
    """Make relative model and data paths absolute against `base_dir` (the config file's folder)."""
    model = config.model
    candidate = (base_dir / model).expanduser()
    if not Path(model).expanduser().is_absolute() and candidate.exists():
        model = str(candidate.resolve())
    def absolute(p: str) -> str:
        if not p or p.startswith("hf:"):
            return p
        path = Path(p).expanduser()
        return str(path if path.is_absolute() else (base_dir / path).resolve())
    return replace(config, model=model, data=replace(config.data, path=absolute(config.data.path),
                                                     validation_path=absolute(config.data.validation_path)))


def machine_defaults(config: RunConfig) -> tuple[RunConfig, list[str]]:
    """What a config leaves out and the machine decides: `quantization` is 4bit on a GPU but none on
    a CPU (core/devices.default_quantization, the window's rule). (config, notes saying what was set)."""
    from lorastudio.core.devices import default_quantization, on_gpu
    if "quantization" in getattr(config, "given_keys", {"quantization"}):
        return config, []
    quantization = default_quantization(on_gpu(config.device))
    if quantization == config.quantization:
        return config, []
    return replace(config, quantization=quantization), [
        f"quantization: {quantization} (the config does not set it; 4-bit is for CUDA GPUs, and this run is on the CPU)"]


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
    try:
        resolve_source(config.data.path)          # a file, a dataset folder, or hf:NAME[:SPLIT]
    except DataError as exc:
        raise ConfigError("data.path", config.data.path, f"{exc.message.split(': ', 1)[-1]}; {exc.hint}") from None
    if config.data.validation_path and not Path(config.data.validation_path).is_file():
        raise ConfigError("data.validation_path", config.data.validation_path, "the file does not exist")
    report = discover_targets(info)
    if info.weight_files:
        unknown = report.unknown(config.lora.targets)
        if unknown:
            experts = sorted({t.name for t in report.targets if t.group == "experts"})
            per_expert = [u for u in unknown if u.rsplit(".", 1)[-1] in ("w1", "w2", "w3", "gate_proj", "up_proj",
                                                                         "down_proj")]
            note = (f"; the experts are held fused in memory: {' and '.join(experts)} (gate and up, w1 and w3, "
                    "are one parameter; down, w2, the other)" if experts and per_expert else "")
            raise ConfigError("lora.targets", unknown[0] if len(unknown) == 1 else unknown,
                              f"not a linear module of {info.architecture}; available: "
                              f"{', '.join(report.names())} (or all-linear){note}")
        if report.touches_unmapped_experts(config.lora.targets):
            raise ConfigError("lora.targets", config.lora.targets,
                              f"{info.architecture} ({report.unmapped_moe}) is a mixture of experts whose experts "
                              "transformers holds under names of its own, which LoRA Studio does not map yet, so "
                              "what would train cannot be counted; list attention modules only (e.g. q_proj, "
                              "k_proj, v_proj, o_proj)")
        check_rank(config, report)
    check_model_fits_config(config, info)
    return info, report


def check_data(config: RunConfig) -> None:
    """The data's first rows under the config's format, column mapping and bad-row policy: the
    Dataset panel's check (core/data/preview.py), so a CSV with the wrong columns is refused in a
    second, before a model loads or a run folder exists. Raises DataError (message and hint)."""
    from lorastudio.core.data.formats import columns_of
    from lorastudio.core.models.vision import refuse_images_for_text_model
    from lorastudio.core.data.pairs import PAIR_FORMAT, check_pair_rows
    from lorastudio.core.data.preview import detect, read_preview
    for path in (config.data.path, config.data.validation_path):
        if not path:
            continue
        preview = read_preview(path)
        if preview.error is None and preview.strict_error is not None and config.data.on_bad_rows == "error":
            preview.error = preview.strict_error
        if preview.error is not None:
            raise DataError(*preview.error)
        columns, skip = columns_of(config.data), config.data.on_bad_rows == "skip"
        if config.training.method != "sft":         # dpo, orpo: pairs, read as the trainer reads them
            check_pair_rows(preview.rows, preview.path, columns, skip)
            continue
        found = detect(preview, config.data.format, columns, skip)
        if found.error is not None:
            raise DataError(*found.error)
        refuse_images_for_text_model(preview.rows, str(preview.path), lambda: read_model_info(config.model))
        if found.format == PAIR_FORMAT and config.training.method == "sft":
            raise DataError(f"{path}: preference pairs ({found.reason}), but the run trains supervised "
                            "(training.method: sft)", "set training.method: dpo or orpo to train on pairs, "
                            "or choose a supervised data set")


def check_rank(config: RunConfig, report: TargetReport) -> None:
    """A rank above a target's smaller side adds parameters that cannot learn anything new. Routers
    are only adapted when named (all-linear leaves them, as PEFT's does), so a tiny router limits the
    rank only when lora.targets names it. DoRA and dropout: PEFT adapts experts and routers through
    `target_parameters`, which takes neither."""
    lora = config.lora
    shapes = [(report.linear_modules[m], m) for m in report.matching_modules(lora.targets)]
    shapes += [((i, o), p) for p, (_e, i, o) in report.expert_params.items() if p in report.matching_experts(lora.targets)]
    if not shapes:
        return
    (d_in, d_out), module = min(shapes, key=lambda item: min(item[0]))
    if lora.r > min(d_in, d_out):
        what = "the router" if module in report.routers else "the smallest adapted layer"
        hint = (f"use r ≤ {min(d_in, d_out)}, or leave the router out of lora.targets (routers are not adapted "
                "unless named)" if module in report.routers else f"use r ≤ {min(d_in, d_out)}")
        raise ConfigError("lora.r", lora.r,
                          f"larger than {what} ({module}: {d_in} in × {d_out} out), whose "
                          f"update cannot have a rank above {min(d_in, d_out)}; {hint}")
    _modules, params = report.peft_targets(lora.targets)
    if params and lora.use_dora:
        taken = set(params)
        names = [t.name for t in report.targets if any(m in taken or m + ".weight" in taken for m in t.modules)]
        raise ConfigError("lora.use_dora", True,
                          f"DoRA cannot adapt {', '.join(names)}: PEFT adapts experts, routers and this model's "
                          "MoE-layer MLPs as parameters, which takes no DoRA; set use_dora: false, or list only "
                          "attention targets in lora.targets (e.g. q_proj, v_proj)")


def check_model_fits_config(config: RunConfig, info: ModelInfo) -> None:
    """What config.json and the folder tell before loading: context length, tokenizer, remote code."""
    context = info.context_length
    if context and config.training.seq_len > context:
        raise ConfigError("training.seq_len", config.training.seq_len,
                          f"longer than the model's context ({context} positions: max_position_embeddings "
                          f"in {info.path / 'config.json'}); use seq_len ≤ {context}")
    if needs_remote_code(info) and not config.trust_remote_code:
        raise ConfigError("trust_remote_code", False,
                          f"{info.architecture} ({info.model_type}) is not built into transformers: the model "
                          f"ships its own Python code ({', '.join(remote_code_files(info))}, named by auto_map in "
                          f"config.json). Set trust_remote_code: true in the config only if you trust its "
                          f"source — that code then runs on this machine when the model loads")
    if needs_tokenizer_remote_code(info.path) and not config.trust_remote_code:
        raise ConfigError("trust_remote_code", False,
                          f"the tokenizer in {info.path} ships its own Python code "
                          f"({', '.join(tokenizer_remote_code_files(info.path))}, named by auto_map in "
                          f"tokenizer_config.json) and transformers has no built-in class for it. Set "
                          f"trust_remote_code: true in the config only if you trust its source — that code then "
                          f"runs on this machine when the tokenizer loads")
    if config.trust_remote_code:
        missing = [name for name in remote_code_files(info) if not (info.path / name).is_file()]
        if missing:
            raise ConfigError("model", config.model, f"config.json's auto_map names {', '.join(missing)}, "
                              f"which is not in {info.path}; download the model again with its code files")
    problem = tokenizer_problem(info.path)
    if problem:
        raise ConfigError("model", config.model, f"{problem}; copy the tokenizer files from the model's "
                          "original download into that folder")
