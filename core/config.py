"""The run config: typed, validated, YAML round-trip. Torch-free.

Every field carries its help text in `metadata["help"]`; the window reuses it as tooltips and the
CLI's error messages quote the allowed values. Two levels of checking:

* `__post_init__` of each section rejects values that are wrong on their own (rank 0, seq_len 0,
  an unknown quantization), naming the key, the value and what is allowed;
* `check_config()` checks what needs the file system (model folder, data file, target names
  that must exist in the chosen model), still without loading any weights.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from lorastudio.core.data.formats import COLUMN_ROLES, FORMAT_CHOICES
from lorastudio.core.data.pairs import PAIR_ROLES

QUANTIZATIONS = ("4bit", "8bit", "none")
COMPUTE_DTYPES = ("auto", "bf16", "fp16", "fp32")
SCHEDULES = ("cosine", "linear", "constant")
MEMORY_MODES = ("auto", "none", "checkpoint", "lean")
MEMORY_MODE_HELP = {        # one line a mode: the field's help and the window's Memory choice
    "none": "all in GPU memory (fastest, most memory)",
    "checkpoint": "only each layer's input, the rest recomputed (much less memory, ~20-30 % more time)",
    "lean": "checkpoint with those inputs moved to pinned host memory (least GPU memory)",
    "auto": "the fastest mode that fits the GPU (checkpoint on a CPU)",
}
METHODS = ("sft", "dpo", "orpo")
LORA_VISION = ("none", "projector", "all")       # lora.vision: what of a vision-language model is adapted
DATA_COLUMN_ROLES = tuple(dict.fromkeys(COLUMN_ROLES + PAIR_ROLES))
DATA_FORMATS = FORMAT_CHOICES       # the formats and their column roles are known in core/data/formats.py


FILE_KEY = "(file)"        # ConfigError's key when the config file cannot be read or parsed


class ConfigError(ValueError):
    """A config value is not allowed. `key` is the dotted path ("lora.r"), `value` what was given."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        if key == FILE_KEY:             # the file itself is the problem, not a value in it
            super().__init__(f"{value}: {allowed}")
        else:
            super().__init__(f"{key}: {value!r} is not allowed; {allowed}")


def _help(text: str, **extra) -> dict:
    return {"help": text, **extra}


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _at_most(key: str, value: Any, high: float, why: str) -> None:
    """The upper bound of a numeric setting, with the reason: a value past it makes nothing happen
    (an update that overflows, a step that never comes), so it is refused before anything loads."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > high:
        raise ConfigError(key, value, f"at most {high:,}: {why}" if isinstance(high, int) else f"at most {high:g}: {why}")


# The upper bounds (issue 27): each with why a larger value cannot train.
MAX_RANK, MAX_ALPHA = 4096, 10_000
MAX_BATCH, MAX_ACCUM, MAX_STEPS, MAX_SEQ = 65_536, 65_536, 100_000_000, 1_048_576


@dataclass
class LoraSection:
    r: int = field(default=8, metadata=_help(
        "Rank of the update: each adapted weight W gets W + (alpha/r)·B·A with A of shape r×d_in "
        "and B of shape d_out×r. Higher ranks learn more and cost more memory (usual: 4–64)."))
    alpha: float = field(default=16, metadata=_help(
        "Scale of the update (alpha/r multiplies B·A). A common choice is alpha = 2·r."))
    dropout: float = field(default=0.05, metadata=_help(
        "Dropout on the adapter's input during training, in [0, 1)."))
    targets: list[str] | str = field(default_factory=lambda: ["q_proj", "v_proj"], metadata=_help(
        "Module names to adapt (suffixes such as q_proj, v_proj), or 'all-linear' for every "
        "linear layer except the output head. Mixtures of experts: the experts by their in-memory names "
        "(mlp.experts.gate_up_proj, mlp.experts.down_proj; all-linear includes them), the router "
        "(gate, router) only when named."))
    use_rslora: bool = field(default=False, metadata=_help(
        "Rank-stabilised LoRA: scale by alpha/√r instead of alpha/r, which keeps high ranks stable."))
    use_dora: bool = field(default=False, metadata=_help(
        "DoRA: learn a magnitude vector per adapted weight as well; slower, sometimes better."))
    vision: str = field(default="none", metadata=_help(
        "Vision-language models only: none adapts the language model alone; projector also adapts the "
        "projector that maps image features into it; all also adapts the vision tower's linear layers."))

    def __post_init__(self):
        _require(_is_int(self.r) and self.r >= 1, "lora.r", self.r,
                 "the rank must be a whole number ≥ 1 (usual values 4–256)")
        _require(_is_num(self.alpha) and self.alpha > 0, "lora.alpha", self.alpha,
                 "alpha must be a number > 0 (commonly 2 × r)")
        _require(_is_num(self.dropout) and 0 <= self.dropout < 1, "lora.dropout", self.dropout,
                 "dropout must be a number in [0, 1)")
        _at_most("lora.r", self.r, MAX_RANK, "no model's layers are wider, so a larger rank adds nothing")
        _at_most("lora.alpha", self.alpha, MAX_ALPHA, "alpha/r multiplies every update; past this the first "
                 "step overflows (grad_norm null, lora_B stays zero) and the adapter learns nothing")
        if isinstance(self.targets, str):
            _require(self.targets == "all-linear", "lora.targets", self.targets,
                     "give a list of module names (e.g. [q_proj, v_proj]) or 'all-linear'")
        else:
            _require(isinstance(self.targets, list) and len(self.targets) > 0
                     and all(isinstance(t, str) and t.strip() for t in self.targets),
                     "lora.targets", self.targets,
                     "give a non-empty list of module names (e.g. [q_proj, v_proj]) or 'all-linear'")
        _require(isinstance(self.use_rslora, bool), "lora.use_rslora", self.use_rslora, "true or false")
        _require(isinstance(self.use_dora, bool), "lora.use_dora", self.use_dora, "true or false")
        _require(self.vision in LORA_VISION, "lora.vision", self.vision, f"allowed: {', '.join(LORA_VISION)}")


@dataclass
class DataSection:
    path: str = field(default="", metadata=_help(
        "The training data: a .jsonl, .json, .csv, .tsv, .parquet or .txt file; a folder (saved with "
        "datasets' save_to_disk, or a dataset repository's files); or hf:NAME[:SPLIT] for a dataset in "
        "the local Hugging Face cache."))
    format: str = field(default="auto", metadata=_help(
        "auto detects it from the field names; or text, prompt_completion, alpaca, messages, sharegpt."))
    columns: dict = field(default_factory=dict, metadata=_help(
        "Map your column names to ours, e.g. {prompt: question, completion: reply} or {text: body}."))
    text_field: str = field(default="text", metadata=_help("The field that holds raw text (format text)."))
    train_on: str = field(default="completions", metadata=_help(
        "completions: only assistant / completion tokens count toward the loss; all: every token."))
    too_long: str = field(default="truncate", metadata=_help(
        "What to do with examples longer than seq_len: truncate them, or drop them."))
    on_bad_rows: str = field(default="error", metadata=_help(
        "error: stop at the first broken row and say where; skip: leave broken rows out and count them."))
    text_blocks: str = field(default="paragraph", metadata=_help(
        "For .txt files: one example per blank-line-separated paragraph, or the whole file as one."))
    validation_split: float = field(default=0.1, metadata=_help(
        "Fraction of examples held out for evaluation, in [0, 0.5]. 0 disables evaluation."))
    max_validation_examples: int = field(default=512, metadata=_help(
        "At most this many examples are held out by validation_split (0: no cap), so a large file's "
        "evaluation stays short; a validation_path file is used whole."))
    validation_path: str = field(default="", metadata=_help(
        "A separate validation file (overrides validation_split)."))
    packing: bool = field(default=True, metadata=_help(
        "Lay the examples of a micro-batch end to end instead of padding them, each attending only to "
        "itself (same loss, less compute); models that cannot keep them apart fall back to padding."))
    max_image_pixels: int = field(default=0, metadata=_help(
        "Vision-language data: an image larger than this many pixels (width × height) is scaled down, "
        "keeping its shape, before the model's processor sees it (fewer image tokens, less memory); "
        "0 leaves the processor's own size rules."))

    def __post_init__(self):
        _require(isinstance(self.path, str) and self.path.strip() != "", "data.path", self.path,
                 "give the path of a data file")
        _require(self.format in DATA_FORMATS, "data.format", self.format,
                 f"allowed formats: {', '.join(DATA_FORMATS)}")
        _require(isinstance(self.columns, dict) and all(k in DATA_COLUMN_ROLES and isinstance(v, str) and v
                 for k, v in self.columns.items()), "data.columns", self.columns,
                 f"a mapping from {', '.join(DATA_COLUMN_ROLES)} to your column names")
        _require(isinstance(self.text_field, str) and self.text_field != "", "data.text_field",
                 self.text_field, "give the name of the field holding the text")
        _require(self.train_on in ("completions", "all"), "data.train_on", self.train_on,
                 "allowed: completions, all")
        _require(self.too_long in ("truncate", "drop"), "data.too_long", self.too_long,
                 "allowed: truncate, drop")
        _require(self.on_bad_rows in ("error", "skip"), "data.on_bad_rows", self.on_bad_rows,
                 "allowed: error, skip")
        _require(self.text_blocks in ("paragraph", "file"), "data.text_blocks", self.text_blocks,
                 "allowed: paragraph, file")
        _require(_is_num(self.validation_split) and 0 <= self.validation_split <= 0.5,
                 "data.validation_split", self.validation_split, "a fraction in [0, 0.5]")
        _require(isinstance(self.max_validation_examples, int) and not isinstance(self.max_validation_examples, bool)
                 and 0 <= self.max_validation_examples <= 10_000_000, "data.max_validation_examples",
                 self.max_validation_examples, "a whole number from 0 to 10,000,000 (0: no cap)")
        _require(isinstance(self.validation_path, str), "data.validation_path", self.validation_path,
                 "a file path, or empty")
        _require(isinstance(self.packing, bool), "data.packing", self.packing, "true or false")
        _require(_is_int(self.max_image_pixels) and 0 <= self.max_image_pixels <= 100_000_000,
                 "data.max_image_pixels", self.max_image_pixels,
                 "a whole number of pixels from 0 (the processor's own rules) to 100,000,000, e.g. 401408 (~634²)")


@dataclass
class TrainingSection:
    max_steps: int = field(default=0, metadata=_help(
        "Optimizer steps to train; 0 means train for `epochs` full passes instead."))
    epochs: float = field(default=1, metadata=_help("Passes over the training data (used when max_steps is 0)."))
    lr: float = field(default=2e-4, metadata=_help("Peak learning rate (LoRA usually 1e-4 to 3e-4)."))
    batch_size: int = field(default=2, metadata=_help("Examples per micro-batch (per forward pass)."))
    grad_accum: int = field(default=1, metadata=_help(
        "Micro-batches per optimizer step; effective batch = batch_size × grad_accum."))
    seq_len: int = field(default=512, metadata=_help("Longest sequence in tokens; longer examples are truncated."))
    warmup_steps: int = field(default=0, metadata=_help("Steps of linear warm-up from 0 to lr."))
    schedule: str = field(default="cosine", metadata=_help("Learning-rate schedule after warm-up."))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay on adapter weights."))
    max_grad_norm: float = field(default=1.0, metadata=_help("Clip gradients to this norm; 0 disables clipping."))
    seed: int = field(default=0, metadata=_help("Seed for data order, dropout and adapter init."))
    save_every: int = field(default=100, metadata=_help("Save a resumable checkpoint every N steps; 0 disables."))
    eval_every: int = field(default=0, metadata=_help("Evaluate every N steps; 0 means at each save and at the end."))
    log_every: int = field(default=1, metadata=_help("Write a step event every N optimizer steps."))
    keep_checkpoints: int = field(default=3, metadata=_help("Keep the last N checkpoints; 0 keeps all."))
    memory_mode: str = field(default="auto", metadata=_help(
        "How activations are kept for the backward pass. "
        + "; ".join(f"{mode}: {words}" for mode, words in MEMORY_MODE_HELP.items()) + "."))

    fused_lora: bool = field(default=True, metadata=_help(
        "Compute each LoRA update fused into its frozen projection in the compute dtype (faster, less "
        "memory). Off: PEFT's own LoRA layers. Layers the fused path does not cover use PEFT's anyway."))
    oom_retry: bool = field(default=True, metadata=_help(
        "When the GPU runs out of memory anyway: save an emergency checkpoint and go on by itself with "
        "settings the memory model says fit (smaller micro-batch, more accumulation, another memory "
        "mode); the journal records what changed. Off: the run fails and suggests the settings."))

    method: str = field(default="sft", metadata=_help(
        "sft: supervised fine-tuning on examples. dpo: Direct Preference Optimization on pairs "
        "(prompt, chosen, rejected) against the frozen base as reference (the adapter switched off). "
        "orpo: Odds Ratio Preference Optimization on pairs: the chosen answer's loss plus an odds-ratio "
        "penalty on the rejected one, no reference."))
    beta: float = field(default=0.1, metadata=_help(
        "DPO's β: how far the tuned model may move from the reference to prefer the chosen answers "
        "(the DPO paper's 0.1; larger stays closer to the base). Used by method dpo."))
    orpo_lambda: float = field(default=0.1, metadata=_help(
        "ORPO's λ: the weight of the odds-ratio term next to the chosen answer's loss (the ORPO paper's "
        "0.1). Used by method orpo."))

    def __post_init__(self):
        def whole(key, v, low, allowed):
            _require(_is_int(v) and v >= low, f"training.{key}", v, allowed)
        whole("max_steps", self.max_steps, 0, "a whole number ≥ 0 (0 = use epochs)")
        bounds = (("max_steps", MAX_STEPS, "a run that long never ends (years of steps)"),
                  ("epochs", 10_000, "more passes than this only memorise the data"),
                  ("batch_size", MAX_BATCH, "a micro-batch is held in memory at once; no device holds more examples"),
                  ("grad_accum", MAX_ACCUM, "the first optimizer step would wait for that many micro-batches"),
                  ("seq_len", MAX_SEQ, "no model's context is that long"),
                  ("warmup_steps", MAX_STEPS, "the learning rate would never rise"),
                  ("weight_decay", 10, "past this the decay erases every update"),
                  ("max_grad_norm", 1e6, "clipping that high clips nothing: use 0 to disable it"),
                  ("seed", 2**32 - 1, "the random generators take 32-bit seeds"),
                  ("save_every", MAX_STEPS, "a checkpoint that never comes: use 0 for none"),
                  ("eval_every", MAX_STEPS, "an evaluation that never comes"),
                  ("log_every", MAX_STEPS, "a step line that never comes"),
                  ("keep_checkpoints", 100_000, "use 0 to keep them all"),
                  ("beta", 1_000, "DPO's β that large makes the loss flat: nothing moves"),
                  ("orpo_lambda", 1_000, "the odds-ratio term would drown the answer's loss"))
        for key, high, why in bounds:
            _at_most(f"training.{key}", getattr(self, key), high, why)
        _require(_is_num(self.epochs) and self.epochs > 0, "training.epochs", self.epochs, "a number > 0")
        _require(_is_num(self.lr) and 0 < self.lr < 1, "training.lr", self.lr, "a number in (0, 1), e.g. 2.0e-4")
        whole("batch_size", self.batch_size, 1, "a whole number ≥ 1")
        whole("grad_accum", self.grad_accum, 1, "a whole number ≥ 1")
        whole("seq_len", self.seq_len, 8, "a whole number ≥ 8 tokens (usual: 256–4096)")
        whole("warmup_steps", self.warmup_steps, 0, "a whole number ≥ 0")
        _require(self.schedule in SCHEDULES, "training.schedule", self.schedule,
                 f"allowed schedules: {', '.join(SCHEDULES)}")
        _require(_is_num(self.weight_decay) and self.weight_decay >= 0, "training.weight_decay",
                 self.weight_decay, "a number ≥ 0")
        _require(_is_num(self.max_grad_norm) and self.max_grad_norm >= 0, "training.max_grad_norm",
                 self.max_grad_norm, "a number ≥ 0 (0 disables clipping)")
        whole("seed", self.seed, 0, "a whole number ≥ 0")
        whole("save_every", self.save_every, 0, "a whole number ≥ 0 (0 = no periodic checkpoints)")
        whole("eval_every", self.eval_every, 0, "a whole number ≥ 0")
        whole("log_every", self.log_every, 1, "a whole number ≥ 1")
        whole("keep_checkpoints", self.keep_checkpoints, 0, "a whole number ≥ 0 (0 = keep all)")
        _require(isinstance(self.fused_lora, bool), "training.fused_lora", self.fused_lora, "true or false")
        _require(isinstance(self.oom_retry, bool), "training.oom_retry", self.oom_retry, "true or false")
        _require(self.memory_mode in MEMORY_MODES, "training.memory_mode", self.memory_mode,
                 f"allowed: {', '.join(MEMORY_MODES)}")
        _require(self.method in METHODS, "training.method", self.method, f"allowed: {', '.join(METHODS)}")
        _require(_is_num(self.beta) and self.beta > 0, "training.beta", self.beta,
                 "a number > 0 (DPO's β; usual 0.05–0.5)")
        _require(_is_num(self.orpo_lambda) and self.orpo_lambda > 0, "training.orpo_lambda", self.orpo_lambda,
                 "a number > 0 (ORPO's λ; usual 0.05–1)")
        if self.max_steps and self.warmup_steps >= self.max_steps:
            raise ConfigError("training.warmup_steps", self.warmup_steps,
                              f"warm-up must be shorter than max_steps ({self.max_steps})")


STRATEGIES = ("ddp", "fsdp")


@dataclass
class DistributedSection:
    processes: int = field(default=1, metadata=_help(
        "Training processes (torch.distributed ranks). On CUDA each owns one GPU; on CPU they use gloo. "
        "Each process trains training.batch_size examples of every micro-batch, so N processes × "
        "batch_size b train exactly like 1 process × batch_size N·b."))
    strategy: str = field(default="ddp", metadata=_help(
        "ddp: every process holds the whole model and gradients are averaged. fsdp: the base is "
        "sharded across GPUs (not available in this version)."))

    def __post_init__(self):
        _require(_is_int(self.processes) and self.processes >= 1, "distributed.processes", self.processes,
                 "a whole number ≥ 1 (1 = a single process)")
        _at_most("distributed.processes", self.processes, 1024, "one process a GPU; no machine has more")
        _require(self.strategy in STRATEGIES, "distributed.strategy", self.strategy,
                 f"allowed: {', '.join(STRATEGIES)}")
        _require(self.strategy != "fsdp", "distributed.strategy", self.strategy,
                 "FSDP needs several CUDA GPUs; not available in this version — use ddp")


@dataclass
class RunConfig:
    model: str = field(default="", metadata=_help(
        "A local model folder (with config.json), or a Hub id already in the local Hugging Face cache."))
    quantization: str = field(default="4bit", metadata=_help(
        "How the frozen base is stored: 4bit (NF4 + double quantization, QLoRA), 8bit, or none (16-bit on GPU)."))
    compute_dtype: str = field(default="auto", metadata=_help(
        "Precision of the matrix maths: auto picks bf16 on GPUs that have it, fp16 on older GPUs, fp32 on CPU."))
    device: str = field(default="auto", metadata=_help("auto, cpu, cuda or cuda:N."))
    trust_remote_code: bool = field(default=False, metadata=_help(
        "Run Python code shipped with the model. Off unless you trust its source."))
    allow_pickle: bool = field(default=False, metadata=_help(
        "Allow .bin/.pt weight files (pickle can run code). Off: only safetensors are loaded."))
    name: str = field(default="", metadata=_help("A short name for the run (used in its folder name)."))
    lora: LoraSection = field(default_factory=LoraSection)
    data: DataSection = field(default_factory=lambda: DataSection(path="data.jsonl"))
    training: TrainingSection = field(default_factory=TrainingSection)
    distributed: DistributedSection = field(default_factory=DistributedSection)

    # What loading changed, in words for people (an older key mapped): not a setting, never saved.
    notes: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self):
        _require(isinstance(self.model, str) and self.model.strip() != "", "model", self.model,
                 "give a local model folder or a Hub id in the local cache")
        _require(self.quantization in QUANTIZATIONS, "quantization", self.quantization,
                 f"allowed: {', '.join(QUANTIZATIONS)}")
        _require(self.compute_dtype in COMPUTE_DTYPES, "compute_dtype", self.compute_dtype,
                 f"allowed: {', '.join(COMPUTE_DTYPES)}")
        _require(isinstance(self.device, str) and (self.device in ("auto", "cpu", "cuda")
                 or (self.device.startswith("cuda:") and self.device[5:].isdigit())),
                 "device", self.device, "allowed: auto, cpu, cuda, cuda:N")
        for key in ("trust_remote_code", "allow_pickle"):
            _require(isinstance(getattr(self, key), bool), key, getattr(self, key), "true or false")
        _require(isinstance(self.name, str), "name", self.name, "a short text")
        _require(self.distributed.processes == 1 or self.training.method == "sft", "distributed.processes",
                 self.distributed.processes, f"training.method {self.training.method} trains on one process "
                 "only in this version; set distributed.processes: 1 or training.method: sft")

    # ---- YAML round trip -------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        import yaml         # here, not at the top: the window's first paint needs the config, not yaml
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    @classmethod
    def from_dict(cls, raw: Any) -> "RunConfig":
        if not isinstance(raw, dict):
            raise ConfigError("(top level)", raw, "the config must be a mapping of keys to values")
        raw, notes = upgrade_legacy(raw)
        kwargs = {}
        for key, value in raw.items():
            if key in SECTIONS:
                kwargs[key] = _build(SECTIONS[key], key, value)
            else:
                kwargs[key] = value
        config = _build(cls, "", kwargs)
        config.notes = tuple(notes)
        config.given_keys = frozenset(raw)      # the top-level keys the file sets (machine defaults fill the rest)
        return config

    @classmethod
    def from_yaml(cls, text: str, source: str = "config") -> "RunConfig":
        import yaml
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(FILE_KEY, source, f"it is not valid YAML at{where}: "
                              f"{getattr(exc, 'problem', exc)}") from None
        return cls.from_dict(raw)

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(FILE_KEY, str(path), f"it cannot be read: {exc.strerror}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
            raise ConfigError(FILE_KEY, str(path), f"it is not UTF-8 text: byte 0x{raw[exc.start]:02x} at "
                              f"offset {exc.start} (line {line}, column {column}) cannot be read; save the "
                              "file as UTF-8 in your editor") from None
        return cls.from_yaml(text, source=str(path))

    def save(self, path: str | Path) -> None:
        from lorastudio.core.atomic_files import atomic_write_text
        atomic_write_text(Path(path), self.to_yaml())


SECTIONS = {"lora": LoraSection, "data": DataSection, "training": TrainingSection,
            "distributed": DistributedSection}


# ---- older configs ----------------------------------------------------------------------------
def upgrade_legacy(raw: dict) -> tuple[dict, list[str]]:
    """`raw` (a RunConfig-shaped mapping) with the keys of older versions mapped to today's, once,
    and a note in words for each key mapped. `raw` itself is left as it was.

    `training.gradient_checkpointing` (0.1 and 0.2) was the memory switch before `memory_mode`:
    false next to `memory_mode: auto` (or none given) becomes `memory_mode: none`; false next to
    another mode, or true, is dropped (the mode given, or auto, decides as it did then)."""
    training = raw.get("training")
    if not isinstance(training, dict) or "gradient_checkpointing" not in training:
        return raw, []
    training = dict(training)
    old = training.pop("gradient_checkpointing")
    _require(isinstance(old, bool), "training.gradient_checkpointing", old,
             "true or false; it is an older key: write training.memory_mode "
             f"({', '.join(MEMORY_MODES)}) instead")
    mode = training.get("memory_mode", "auto")
    if not old and mode == "auto":
        training["memory_mode"] = "none"
        note = ("training.gradient_checkpointing: false is an older key; it was read as "
                "training.memory_mode: none. Write memory_mode instead.")
    elif not old:
        note = (f"training.gradient_checkpointing: false is an older key; training.memory_mode: {mode} "
                "in the same config decides. Remove gradient_checkpointing.")
    else:
        note = (f"training.gradient_checkpointing: true is an older key and changes nothing "
                f"(training.memory_mode: {mode} decides). Remove it.")
    return {**raw, "training": training}, [note]


def _build(cls, prefix: str, values: Any):
    """Construct dataclass `cls` from a mapping, rejecting unknown keys by name."""
    dotted = f"{prefix}." if prefix else ""
    if not isinstance(values, dict):
        raise ConfigError(prefix or "(top level)", values, "expected a mapping of keys to values")
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            raise ConfigError(f"{dotted}{key}", values[key], f"unknown key; allowed keys here: {', '.join(names)}")
    kwargs = dict(values)
    for f in dataclasses.fields(cls):
        if f.name in kwargs and f.type == "float" and _is_int(kwargs[f.name]):
            kwargs[f.name] = float(kwargs[f.name])  # YAML "alpha: 16" is a fine float
        if f.name in kwargs and f.type == "float" and isinstance(kwargs[f.name], str):
            kwargs[f.name] = _parse_float(f"{dotted}{f.name}", kwargs[f.name])
    return cls(**kwargs)


def _parse_float(key: str, text: str) -> float:
    # PyYAML reads "2e-4" (no dot) as a string; accept it as the number people meant.
    try:
        return float(text)
    except ValueError:
        raise ConfigError(key, text, "expected a number") from None


def field_help(section: type, name: str) -> str:
    """The help text of a config field, for tooltips and `--help`."""
    for f in dataclasses.fields(section):
        if f.name == name:
            return f.metadata.get("help", "")
    raise KeyError(name)
