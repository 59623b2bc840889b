"""Model metadata from `config.json`, safetensors headers and the tokenizer config. Torch-free.

Nothing here reads a weight: a safetensors file starts with an 8-byte little-endian header length
followed by a JSON header naming every tensor's dtype and shape, which is all we need to count
parameters and discover LoRA targets (a few KB read per file, however large the model).
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from lorastudio.core.errors import ModelError  # noqa: F401 (raised here; importers may take it from here)

WEIGHT_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
               "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "n_ctx")


@dataclass
class ModelInfo:
    path: Path
    source: str                      # what the user gave: a folder or a Hub id
    config: dict
    tensors: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)  # name -> (dtype, shape)
    weight_files: list[Path] = field(default_factory=list)
    pickle_files: list[Path] = field(default_factory=list)
    has_chat_template: bool = False

    @property
    def model_type(self) -> str:
        return self.config.get("model_type", "unknown")

    @property
    def architecture(self) -> str:
        archs = self.config.get("architectures") or []
        return archs[0] if archs else self.model_type

    @property
    def num_parameters(self) -> int:
        return sum(_numel(shape) for _dtype, shape in self.tensors.values())

    @property
    def dtype(self) -> str:
        declared = self.config.get("dtype") or self.config.get("torch_dtype")
        if declared:
            return str(declared)
        counts: dict[str, int] = {}
        for dt, shape in self.tensors.values():
            counts[dt] = counts.get(dt, 0) + _numel(shape)
        return max(counts, key=counts.get).lower() if counts else "unknown"

    @property
    def size_on_disk(self) -> int:
        return sum(p.stat().st_size for p in self.weight_files + self.pickle_files if p.exists())

    @property
    def context_length(self) -> int | None:
        for cfg in (self.config, self.config.get("text_config") or {}):
            for key in CONTEXT_KEYS:
                if isinstance(cfg.get(key), int):
                    return cfg[key]
        return None

    @property
    def tie_word_embeddings(self) -> bool:
        return bool(self.config.get("tie_word_embeddings", self.model_type in ("gpt2",)))

    def summary(self) -> dict:
        return {"path": str(self.path), "source": self.source, "architecture": self.architecture,
                "model_type": self.model_type, "parameters": self.num_parameters, "dtype": self.dtype,
                "size_on_disk": self.size_on_disk, "context_length": self.context_length,
                "has_chat_template": self.has_chat_template,
                "weights": "safetensors" if self.weight_files else ("pickle" if self.pickle_files else "none"),
                "vision": self.vision}

    @property
    def vision(self) -> dict | None:
        """A vision-language model's family and adaptable parts (core/models/vision.py); None if text-only."""
        from lorastudio.core.models.vision import vision_summary
        return vision_summary(self)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "hub"


def cached_snapshot(hub_id: str, cache: Path | None = None) -> Path | None:
    """The snapshot folder of `org/name` in the local HF cache (no network), or None."""
    repo = (cache or hf_cache_dir()) / ("models--" + hub_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo / "refs" / "main"
    if ref.is_file():
        snap = snapshots / ref.read_text().strip()
        if (snap / "config.json").is_file():
            return snap
    candidates = sorted((p for p in snapshots.iterdir() if (p / "config.json").is_file()),
                        key=lambda p: p.stat().st_mtime, reverse=True)
    return candidates[0] if candidates else None


def list_cached_models(cache: Path | None = None) -> list[dict]:
    """Models in the local HF cache with a config.json: [{"id", "path", "size"}], by id."""
    cache = cache or hf_cache_dir()
    found = []
    if not cache.is_dir():
        return found
    for repo in sorted(cache.glob("models--*")):
        snap = cached_snapshot(repo.name[len("models--"):].replace("--", "/"), cache)
        if snap is None:
            continue
        blobs = repo / "blobs"
        size = sum(p.stat().st_size for p in blobs.iterdir() if p.is_file()) if blobs.is_dir() else 0
        found.append({"id": repo.name[len("models--"):].replace("--", "/"), "path": str(snap), "size": size})
    return found


def resolve_model_path(source: str) -> Path:
    """A local folder, or a Hub id found in the local cache, or an imported .gguf file (its folder
    in the model cache). Raises ModelError naming what to do."""
    path = Path(source).expanduser()
    if path.suffix.lower() == ".gguf" and not path.is_dir():
        from lorastudio.core.models.gguf_cache import resolve_gguf
        return resolve_gguf(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is not a model folder: it has no config.json",
                             "choose the folder that holds config.json and the *.safetensors files")
        return path
    if path.exists():
        raise ModelError(f"{path} is a file, not a model folder",
                         "choose the folder that holds config.json and the weights")
    looks_like_id = source.count("/") == 1 and not source.startswith((".", "/", "~"))
    if looks_like_id:
        snap = cached_snapshot(source)
        if snap is not None:
            return snap
        raise ModelError(f"model '{source}' is not a local folder and is not in the local "
                         f"Hugging Face cache ({hf_cache_dir()})",
                         f"download it first (hf download {source}) or give a local model folder")
    raise ModelError(f"model folder {path} does not exist",
                     "check the path: a folder with config.json and the weights, a .gguf file, or a hub id "
                     "in the local cache")


def read_safetensors_header(path: Path) -> dict:
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ModelError(f"{path} is too short to be a safetensors file", "re-download the model")
        (length,) = struct.unpack("<Q", raw)
        if length > 100_000_000:
            raise ModelError(f"{path} has an implausible safetensors header ({length} bytes)",
                             "the file is damaged or not safetensors; re-download the model")
        try:
            return json.loads(fh.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ModelError(f"{path} has a damaged safetensors header", "re-download the model") from None


def check_shard_complete(path: Path, header: dict) -> None:
    """A safetensors file whose data ends before its header says (a cut-off download or copy)."""
    ends = [meta["data_offsets"][1] for name, meta in header.items()
            if name != "__metadata__" and isinstance(meta, dict) and len(meta.get("data_offsets") or ()) == 2]
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
    expected, actual = 8 + length + max(ends, default=0), path.stat().st_size
    if actual < expected:
        raise ModelError(f"weight file {path} is cut off: its header describes {expected:,} bytes, the file "
                         f"has {actual:,} ({expected - actual:,} missing)",
                         "the download or copy did not finish; download the model again")


# Files a tokenizer is loaded from: one of these sets must be in the model folder.
TOKENIZER_FILE_SETS = (("tokenizer.json",), ("tokenizer.model",), ("vocab.json", "merges.txt"),
                       ("vocab.txt",), ("tokenizer.tiktoken",), ("qwen.tiktoken",), ("spiece.model",))


def tokenizer_problem(folder: Path) -> str | None:
    """Why no tokenizer can be loaded from `folder` (naming the files expected), or None."""
    folder = Path(folder)
    if any(all((folder / name).is_file() for name in files) for files in TOKENIZER_FILE_SETS):
        return None
    if any(folder.glob("*.tiktoken")):
        return None
    expected = " or ".join(" + ".join(files) for files in TOKENIZER_FILE_SETS[:4])
    return f"{folder} has no tokenizer files (expected {expected})"


def remote_code_files(info: "ModelInfo") -> list[str]:
    """The Python files config.json's auto_map names (a model that ships its own code), or []."""
    auto_map = info.config.get("auto_map")
    if not isinstance(auto_map, dict):
        return []
    names = []
    for ref in auto_map.values():
        for item in (ref if isinstance(ref, list) else [ref]):
            if isinstance(item, str) and "." in item:
                module = item.split("--")[-1].rsplit(".", 1)[0]
                names.append(module.replace(".", "/") + ".py")
    return sorted(set(names))


def pickle_only_problem(info: "ModelInfo") -> ModelError | None:
    """A folder whose weights are only pickles (.bin/.pt): no safetensors header to read shapes from."""
    if info.tensors or not info.pickle_files:
        return None
    names = ", ".join(p.name for p in info.pickle_files[:3]) + (" …" if len(info.pickle_files) > 3 else "")
    return ModelError(f"{info.path} has only pickle weights ({names}), no *.safetensors: LoRA Studio reads the "
                      "layers' shapes from safetensors headers, so it cannot list this model's targets",
                      "convert the weights to safetensors (e.g. load the model in transformers and call "
                      "save_pretrained(folder, safe_serialization=True)), or, to train on the pickles as they are, "
                      "set allow_pickle: true in the config if you trust the file — a pickle can run code")


def tokenizer_remote_code_files(folder: Path) -> list[str]:
    """The Python files tokenizer_config.json's auto_map names (a tokenizer with its own code), or []."""
    try:
        data = json.loads((Path(folder) / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    auto_map = data.get("auto_map") if isinstance(data, dict) else None
    if isinstance(auto_map, list):          # an old form: [slow, fast]
        auto_map = {"AutoTokenizer": auto_map}
    if not isinstance(auto_map, dict):
        return []
    names = []
    for key, ref in auto_map.items():
        if "Tokenizer" not in key:
            continue
        for item in (ref if isinstance(ref, list) else [ref]):
            if isinstance(item, str) and "." in item:
                module = item.split("--")[-1].rsplit(".", 1)[0]
                names.append(module.replace(".", "/") + ".py")
    return sorted(set(names))


def needs_tokenizer_remote_code(folder: Path) -> bool:
    """True when the tokenizer ships its own code (auto_map) and its tokenizer_class is not one the
    installed transformers knows (found without importing it: named in its tokenization_auto.py)."""
    if not tokenizer_remote_code_files(folder):
        return False
    try:
        data = json.loads((Path(folder) / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    cls = data.get("tokenizer_class") if isinstance(data, dict) else None
    if not isinstance(cls, str) or not cls:
        return True
    import importlib.util
    spec = importlib.util.find_spec("transformers")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        return False            # cannot tell: leave it to the loader
    base = cls[:-4] if cls.endswith("Fast") else cls
    for loc in locations:
        mapping = Path(loc) / "models" / "auto" / "tokenization_auto.py"
        try:
            text = mapping.read_text(encoding="utf-8")
        except OSError:
            continue
        if f'"{base}"' in text or f'"{base}Fast"' in text or base in ("PreTrainedTokenizer", "PreTrainedTokenizerFast"):
            return False
    return True


def needs_remote_code(info: "ModelInfo") -> bool:
    """True when the model ships its own code and the installed transformers does not know its
    model_type (found without importing transformers: its models/<type>/ folder)."""
    if not remote_code_files(info):
        return False
    import importlib.util
    spec = importlib.util.find_spec("transformers")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        return False            # cannot tell: leave it to the loader
    model_type = str(info.config.get("model_type", "")).replace("-", "_")
    return not any((Path(loc) / "models" / model_type).is_dir() for loc in locations)


def _weight_files(folder: Path) -> tuple[list[Path], list[Path]]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        safes = [folder / s for s in shards]
    else:
        safes = sorted(folder.glob("*.safetensors"))
    pickles = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_PICKLE_SUFFIXES
                     and not p.name.startswith(("training_args", "optimizer", "scheduler", "rng")))
    return safes, pickles


def _has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    tok = folder / "tokenizer_config.json"
    if tok.is_file():
        try:
            return bool(json.loads(tok.read_text(encoding="utf-8")).get("chat_template"))
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            return False
    return False


def read_model_info(source: str) -> ModelInfo:
    """Everything the window and the checks need about a model, without loading weights."""
    folder = resolve_model_path(str(source))
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{folder / 'config.json'} is not valid JSON ({exc})",
                         "the model folder is damaged; re-download it") from None
    if not isinstance(config, dict):
        raise ModelError(f"{folder / 'config.json'} does not hold a JSON object", "re-download the model")
    safes, pickles = _weight_files(folder)
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
    for shard in safes:
        if not shard.is_file():
            raise ModelError(f"weight shard {shard.name} listed in the index is missing from {folder}",
                             "the download is incomplete; download the model again")
        header = read_safetensors_header(shard)
        check_shard_complete(shard, header)
        for name, meta in header.items():
            if name != "__metadata__":
                tensors[name] = (meta["dtype"], tuple(meta["shape"]))
    return ModelInfo(path=folder, source=str(source), config=config, tensors=tensors,
                     weight_files=safes, pickle_files=pickles, has_chat_template=_has_chat_template(folder))
