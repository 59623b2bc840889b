"""A tokenizer as GGUF `tokenizer.ggml.*` metadata, read from tokenizer.json. Torch-free (json only).

What a GGUF needs to tokenize as the model was trained: the token list in id order, each token's
type (normal, control = special, user-defined = added), the BPE merges, the pre-tokenizer by
llama.cpp's name for it (`tokenizer.ggml.pre`: its regex split, which llama.cpp chooses by name,
not from the file), BOS/EOS/EOT/pad/unknown ids, whether BOS is added, and the chat template.

Only byte-level BPE tokenizers (GPT-2 style: SmolLM2, Qwen2/3, Llama 3) are represented; a
SentencePiece, WordPiece or Unigram tokenizer, or a byte-level one whose split regex is not one
llama.cpp knows by name, is refused with `VocabError` — llama.cpp would tokenize it differently
from the training, which is exactly the "answers gibberish" failure this export exists to avoid.
When the base model was imported from a GGUF, that file's pre-tokenizer name is trusted instead
(transformers' GGUF import simplifies the split, e.g. SmolLM2's single-digit rule).
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from lorastudio.core.errors import UserError

NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5        # gguf.TokenType values

# The split regexes of known byte-level tokenizers (as tokenizer.json writes them) -> llama.cpp's name.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPLIT_NAMES = {LLAMA3_SPLIT: "llama-bpe", QWEN2_SPLIT: "qwen2"}
# End-of-turn markers of the common chat template families, most specific first.
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


class VocabError(UserError):
    kind = "tokenizer"


@dataclass
class GgufVocab:
    tokens: list[str]
    types: list[int]
    merges: list[str]
    pre: str
    bos: int | None = None
    eos: int | None = None
    eot: int | None = None
    pad: int | None = None
    unk: int | None = None
    add_bos: bool = False
    chat_template: str | None = None
    special: dict[str, str] = field(default_factory=dict)   # role -> token text (bos, eos, eot, pad)

    @property
    def eot_text(self) -> str | None:
        return self.special.get("eot") or self.special.get("eos")


def tokenizer_folder(adapter: Path, base: Path) -> Path:
    """Where the run's tokenizer is: saved beside the adapter, else the base model's."""
    return adapter if (Path(adapter) / "tokenizer.json").is_file() else Path(base)


def chat_template(*folders: Path) -> str | None:
    """The chat template the run trained with: chat_template.jinja, else tokenizer_config.json's."""
    for folder in folders:
        jinja = Path(folder) / "chat_template.jinja"
        if jinja.is_file():
            return jinja.read_text(encoding="utf-8")
        config = _json(Path(folder) / "tokenizer_config.json") or {}
        template = config.get("chat_template")
        if isinstance(template, str) and template.strip():
            return template
        if isinstance(template, list):          # named templates: the default one
            for item in template:
                if isinstance(item, dict) and item.get("name") == "default":
                    return item.get("template")
    return None


def pre_tokenizer_name(tok: dict, where: str) -> str:
    """llama.cpp's name for the tokenizer's split rule, or VocabError."""
    pre = tok.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"          # llama.cpp's name (llama-vocab.cpp); "gpt2" is refused as unknown there
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        regex = (steps[0].get("pattern") or {}).get("Regex")
        if regex in SPLIT_NAMES:
            return SPLIT_NAMES[regex]
    raise VocabError(f"{where}: the tokenizer's pre-tokenizer ({' + '.join(map(str, kinds)) or 'none'}) is not one "
                     "llama.cpp knows by name, so the GGUF would split text differently from training",
                     "GGUF export supports the byte-level BPE tokenizers of GPT-2, SmolLM2, Llama 3 and Qwen2/3; "
                     "use --adapter-only with a base GGUF converted by llama.cpp, or export with `lorastudio merge`")


def read_vocab(tok_dir: Path, vocab_size: int, template_folders: tuple[Path, ...] = (),
               known_pre: str | None = None, config_ids: dict | None = None) -> GgufVocab:
    """The tokenizer in `tok_dir` as GGUF metadata for an embedding of `vocab_size` rows."""
    path = Path(tok_dir) / "tokenizer.json"
    tok = _json(path)
    if tok is None:
        raise VocabError(f"{path} is missing or not JSON", "the run's tokenizer must be a fast tokenizer "
                         "(tokenizer.json); re-save it with transformers")
    model = tok.get("model") or {}
    byte_level = "ByteLevel" in json.dumps(tok.get("pre_tokenizer")) or \
        (tok.get("decoder") or {}).get("type") == "ByteLevel"
    if model.get("type") != "BPE" or not byte_level or model.get("byte_fallback"):
        kind = "SentencePiece-style BPE" if model.get("byte_fallback") else model.get("type", "unknown")
        raise VocabError(f"{path}: a {kind} tokenizer cannot be written as GGUF here (only byte-level BPE)",
                         "GGUF export supports the byte-level BPE tokenizers of GPT-2, SmolLM2, Llama 3 and "
                         "Qwen2/3; for others convert the merged model (`lorastudio merge`) with llama.cpp's "
                         "convert_hf_to_gguf.py")
    pre = known_pre or pre_tokenizer_name(tok, str(path))
    by_id: dict[int, str] = {i: t for t, i in model.get("vocab", {}).items()}
    added = {a["id"]: a for a in tok.get("added_tokens", [])}
    for i, a in added.items():
        by_id[i] = a["content"]
    count = max(by_id) + 1 if by_id else 0
    if count > vocab_size:
        raise VocabError(f"{path}: the tokenizer has {count} tokens but the model's embedding only {vocab_size}",
                         "the tokenizer does not belong to this model; train with the model's own tokenizer")
    tokens, types = [], []
    for i in range(vocab_size):             # llama.cpp pads a short vocabulary the same way
        if i in by_id:
            tokens.append(by_id[i])
            types.append((CONTROL if added[i].get("special") else USER_DEFINED) if i in added else NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    config = _json(Path(tok_dir) / "tokenizer_config.json") or {}
    ids = {t: i for i, t in enumerate(tokens)}
    vocab = GgufVocab(tokens, types, merges, pre)
    for role in ("bos", "eos", "pad", "unk"):
        text = _token_text(config.get(f"{role}_token"))
        if text in ids:
            setattr(vocab, role, ids[text])
            vocab.special[role] = text
        elif (config_ids or {}).get(f"{role}_token_id") is not None:
            setattr(vocab, role, int(config_ids[f"{role}_token_id"]))
            vocab.special[role] = tokens[int(config_ids[f"{role}_token_id"])]
    vocab.add_bos = bool(config["add_bos_token"]) if "add_bos_token" in config else _adds_bos(tok)
    vocab.chat_template = chat_template(Path(tok_dir), *template_folders)
    for marker in END_OF_TURN:
        if marker in ids and (vocab.chat_template is None or marker in vocab.chat_template):
            if vocab.chat_template is not None or marker == vocab.special.get("eos"):
                vocab.eot, vocab.special["eot"] = ids[marker], marker
                break
    if vocab.eot is None and vocab.eos is not None:
        vocab.eot, vocab.special["eot"] = vocab.eos, vocab.special["eos"]
    return vocab


def _adds_bos(tok: dict) -> bool:
    post = tok.get("post_processor") or {}
    steps = post.get("processors", [post]) if post.get("type") == "Sequence" else [post]
    for step in steps:
        if step.get("type") == "TemplateProcessing":
            single = step.get("single") or []
            return bool(single) and "SpecialToken" in single[0]
    return False


def _token_text(value) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}     # GGUF value types
_STRING, _ARRAY = 8, 9


def read_gguf_string(path: Path, key: str) -> str | None:
    """One string value from a GGUF file's header, walking the key/value pairs without loading the
    vocabulary arrays (gguf-py's reader builds them all: seconds for a 50k-token file)."""
    with open(path, "rb") as fh:
        def unpack(fmt):
            return struct.unpack("<" + fmt, fh.read(struct.calcsize("<" + fmt)))[0]

        def string():
            return fh.read(unpack("Q"))

        def skip(kind):
            if kind == _STRING:
                fh.seek(unpack("Q"), 1)
            elif kind == _ARRAY:
                inner, count = unpack("I"), unpack("Q")
                if inner in _SCALAR_BYTES:
                    fh.seek(_SCALAR_BYTES[inner] * count, 1)
                else:
                    for _ in range(count):
                        skip(inner)
            else:
                fh.seek(_SCALAR_BYTES[kind], 1)
        try:
            if fh.read(4) != b"GGUF":
                return None
            unpack("I")
            unpack("Q")
            for _ in range(unpack("Q")):
                name, kind = string().decode("utf-8", "replace"), unpack("I")
                if name == key and kind == _STRING:
                    return string().decode("utf-8", "replace")
                skip(kind)
        except (struct.error, KeyError, OSError):
            return None
    return None
