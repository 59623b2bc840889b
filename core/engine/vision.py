"""Vision-language models in training: their processors, which modules LoRA adapts, examples with
images as token ids and labels, and the image tensors of a batch.

Processors. transformers 5 builds a video processor for the families that also read video (Qwen2-VL,
Qwen2.5-VL, SmolVLM), and video processors need torchvision, which may not be installed (no wheel
matches our torch pin on every platform). We never train on video, so the processor is loaded
without its video part (`image_only`): the same class, the same files, image path only. The class
comes from transformers itself (by processor_config.json's processor_class, else by model_type),
never from the model folder.

Encoding. The processor's chat template renders the conversation (user turns as content parts:
image, text); the processor expands each image placeholder into the image's tokens (how many
depends on the image's size and the family). Which tokens are the assistant's is found on token ids
the way core/data/chat_masks.py finds it on characters: the conversation up to each answer is
encoded with the generation prompt and with the answer, and the tokens in between are the answer.
Image tokens are never trained (label -100), whatever data.train_on says.

Batches. The token table keeps each row's image paths; a batch's image tensors (pixel values and
what the family needs beside them) are made when the batch is made, by the same processor, and their
image token count is checked against the row's.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from lorastudio.core.data.chat_masks import IGNORE_INDEX, Encoded
from lorastudio.core.data.files import DataError
from lorastudio.core.data.formats import Example
from lorastudio.core.data.images import IMAGE_MARKER, open_image
from lorastudio.core.errors import ModelError
from lorastudio.core.models.info import ModelInfo
from lorastudio.core.models.vision import VISION_CHOICE_PARTS, part_of, vision_family

PROCESSORS = {"qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor", "idefics3": "Idefics3Processor",
              "smolvlm": "SmolVLMProcessor", "llava": "LlavaProcessor", "llava_next": "LlavaNextProcessor",
              "gemma3": "Gemma3Processor", "mllama": "MllamaProcessor"}
# Tokens that frame or mark an image (never trained, even with data.train_on: all).
IMAGE_TOKEN_PATTERN = re.compile(r"image|vision|img|^<row_\d+_col_\d+>$|^<boi>$|^<eoi>$", re.IGNORECASE)
TEXT_KEYS = {"input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids", "offset_mapping"}
OK, TOO_LONG, NO_TARGET = 0, 1, 2      # as core/engine/batching/token_cache.py


def is_vision(info: ModelInfo) -> bool:
    return vision_family(info) is not None


# ---- loading -------------------------------------------------------------------------------
def image_only(cls):
    """`cls` without its video processor (see the module's docstring); `cls` when it has none."""
    if "video_processor" not in cls.get_attributes():
        return cls

    class ImageOnly(cls):
        @classmethod
        def get_attributes(klass):
            return [a for a in super().get_attributes() if a != "video_processor"]
    ImageOnly.__name__ = ImageOnly.__qualname__ = cls.__name__
    return ImageOnly


def processor_class_name(info: ModelInfo) -> str:
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        try:
            data = json.loads((Path(info.path) / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        value = data.get("processor_class") if isinstance(data, dict) else None
        if isinstance(value, str) and value:
            return value
    return PROCESSORS.get(info.model_type, "")


def load_processor(info: ModelInfo):
    """The model's processor (image path only), its tokenizer given a pad token; a ModelError saying
    what is missing when it cannot be built."""
    import transformers
    name = processor_class_name(info)
    cls = getattr(transformers, name, None) if name else None
    if cls is None or not isinstance(cls, type):
        raise ModelError(f"{info.path}: no processor class that transformers {transformers.__version__} knows "
                         f"({name or 'none named'}) for model type {info.model_type}",
                         "use a model folder with processor_config.json / preprocessor_config.json from a "
                         "supported family (Qwen2-VL, Qwen2.5-VL, SmolVLM, Idefics3, LLaVA)")
    if not any((Path(info.path) / n).is_file() for n in ("preprocessor_config.json", "processor_config.json")):
        raise ModelError(f"{info.path} has no preprocessor_config.json or processor_config.json: the image processor of this "
                         f"{info.architecture} cannot be built", "copy the model's preprocessor_config.json "
                         "(and processor_config.json, chat_template.jinja) into the folder, or download it again")
    try:
        processor = image_only(cls).from_pretrained(str(info.path))
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        raise ModelError(f"{info.path}: the {name} could not be built for images ({type(exc).__name__}: "
                         f"{str(exc)[:300]})", "this family's image processor needs a package that is missing "
                         "here (torchvision, for some); install it, or use a model whose image processor has "
                         "a Pillow backend (Qwen2-VL, Idefics3 / SmolVLM, LLaVA)") from None
    tok = processor.tokenizer
    if tok.pad_token_id is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None) and getattr(processor, "chat_template", None):
        tok.chat_template = processor.chat_template     # text-only rows go through the tokenizer
    return processor


def model_class():
    from transformers import AutoModelForImageTextToText
    return AutoModelForImageTextToText


# ---- what LoRA adapts ----------------------------------------------------------------------
def lora_target_modules(model: torch.nn.Module, info: ModelInfo, targets, vision: str) -> list[str]:
    """The full names of the linear modules to adapt: `targets` (suffixes, or all-linear) within the
    language model, and every linear layer of the parts lora.vision adds (projector, vision tower)."""
    family = vision_family(info)
    parts = VISION_CHOICE_PARTS[vision]
    chosen = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) and type(module).__name__ not in ("Linear4bit", "Linear8bitLt"):
            continue
        part = part_of(name, family)
        if part not in parts or name.split(".")[-1] in ("lm_head", "embed_out"):
            continue
        if part == "language" and targets != "all-linear" and not any(
                name == t or name.endswith("." + t) for t in targets):
            continue
        chosen.append(name)
    if not chosen:
        raise ModelError(f"lora.targets {targets} match no linear layer of {info.architecture}'s language model",
                         "list its targets with `lorastudio targets MODEL`, or use all-linear")
    return chosen


# ---- examples with images ------------------------------------------------------------------
def template_messages(messages: list[dict]) -> list[dict]:
    """Turns with IMAGE_MARKERs → turns whose content is parts (image, text), as the processors'
    chat templates expect; turns without images as they are."""
    out = []
    for m in messages:
        if IMAGE_MARKER not in m["content"]:
            out.append({"role": m["role"], "content": [{"type": "text", "text": m["content"]}]})
            continue
        parts = []
        for i, piece in enumerate(m["content"].split(IMAGE_MARKER)):
            if i:
                parts.append({"type": "image"})
            if piece:
                parts.append({"type": "text", "text": piece})
        out.append({"role": m["role"], "content": parts})
    return out


def image_token_ids(processor) -> set[int]:
    """The ids of the tokens that stand for or frame images."""
    tok = processor.tokenizer
    ids = {getattr(processor, "image_token_id", None)}
    for token in tok.get_vocab():
        if token.startswith("<") and IMAGE_TOKEN_PATTERN.search(token) and token in tok.all_special_tokens + list(
                getattr(tok, "added_tokens_encoder", {})):
            ids.add(tok.convert_tokens_to_ids(token))
    return {i for i in ids if isinstance(i, int)}


class ImageEncoder:
    """Encodes examples with images for one processor (the trainer's, the inspector's)."""

    def __init__(self, processor, max_pixels: int = 0):
        self.processor, self.max_pixels = processor, max_pixels
        if not getattr(processor, "chat_template", None):
            raise ModelError("the model's processor has no chat template, so its conversations with images "
                             "cannot be laid out", "use the instruct / chat version of the model, which ships "
                             "chat_template.jinja")
        self.masked = image_token_ids(processor)
        self.image_token_id = getattr(processor, "image_token_id", None)

    def _ids(self, messages: list[dict], images: list, generation_prompt: bool) -> list[int]:
        text = self.processor.apply_chat_template(template_messages(messages), tokenize=False,
                                                  add_generation_prompt=generation_prompt)
        enc = self.processor(text=[text], images=[images] if images else None)
        return list(enc["input_ids"][0])

    def encode(self, example: Example, source: str, train_on: str, seq_len: int) -> tuple[int, Encoded | None]:
        images = [open_image(p, example.where, source, self.max_pixels) for p in example.images]
        messages = example.messages
        full = self._ids(messages, images, False)
        labels = [IGNORE_INDEX] * len(full) if train_on != "all" else list(full)
        if train_on != "all":
            for i, m in enumerate(messages):
                if m["role"] != "assistant":
                    continue
                seen = sum(x["content"].count(IMAGE_MARKER) for x in messages[:i])
                before = self._ids(messages[:i], images[:seen], True)
                upto = self._ids(messages[:i + 1], images[:seen], False)
                start, end = common_prefix(before, full), common_prefix(upto, full)
                labels[start:end] = full[start:end]
        labels = [IGNORE_INDEX if t in self.masked else lab for t, lab in zip(full, labels)]
        where = f"{source}, {example.where}"
        self.check_fits(full, seq_len, where, len(images))
        enc = Encoded(example.where, full, labels, images=list(example.images))
        if len(full) > seq_len:
            enc = Encoded(example.where, full[:seq_len], labels[:seq_len], truncated=True, images=list(example.images))
        return (OK if enc.trained_tokens else NO_TARGET), enc

    def check_fits(self, ids: list[int], seq_len: int, where: str, n_images: int) -> None:
        """Truncating may cut the answer, never an image: an image token beyond seq_len is an error."""
        positions = [i for i, t in enumerate(ids) if t == self.image_token_id]
        if positions and positions[-1] >= seq_len:
            raise DataError(f"{where}: its {n_images} image(s) take {len(positions):,} tokens, and with the "
                            f"text they reach position {positions[-1] + 1:,}, beyond training.seq_len={seq_len:,}",
                            "raise training.seq_len, or lower data.max_image_pixels so each image gives fewer "
                            "tokens, or use smaller images")


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


# ---- a batch's image tensors ---------------------------------------------------------------
class ImageBatcher:
    """The image inputs of a batch of rows: called with the rows and their padded input_ids."""

    def __init__(self, processor, max_pixels: int = 0, source: str = "the data"):
        self.processor, self.max_pixels, self.source = processor, max_pixels, source
        self.image_token = getattr(processor, "image_token", None)
        self.image_token_id = getattr(processor, "image_token_id", None)

    def __call__(self, rows: list[Encoded], input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        with_images = [r for r in rows if r.images]
        if not with_images:
            return {}
        images = [[open_image(p, r.where, self.source, self.max_pixels) for p in r.images] for r in with_images]
        texts = [self.image_token * len(r.images) for r in with_images]
        out = self.processor(text=texts, images=images, return_tensors="pt")
        expected = int((input_ids == self.image_token_id).sum())
        made = int((out["input_ids"] == self.image_token_id).sum())
        if made != expected:
            raise DataError(f"{self.source}: the images of {', '.join(r.where for r in with_images)} now give "
                            f"{made} image tokens, the token cache has {expected}",
                            "an image changed since the data was tokenized; train again (the cache is rebuilt)")
        features = {k: v for k, v in out.items() if k not in TEXT_KEYS and isinstance(v, torch.Tensor)}
        for key in ("mm_token_type_ids", "token_type_ids"):
            if key in out:
                features[key] = (input_ids == self.image_token_id).long()
        return features


def restrict_to_parts(peft_config, model: torch.nn.Module, info: ModelInfo, lora, notes: list[str]) -> None:
    """Point PEFT's LoraConfig at the modules lora_target_modules chose. lora.targets stay as the user
    wrote them (a resumed run compares them with the checkpoint's); the parts lora.vision leaves out
    go to `exclude_modules` (a vision tower has its own q_proj), and the parts it adds are appended
    by full name (all-linear with added parts becomes every chosen name). Adds a note of what is adapted."""
    family = vision_family(info)
    chosen = lora_target_modules(model, info, lora.targets, lora.vision)
    parts = VISION_CHOICE_PARTS[lora.vision]
    linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
              or type(m).__name__ in ("Linear4bit", "Linear8bitLt")]
    left_out = [n for n in linear if part_of(n, family) not in parts]
    added = [n for n in chosen if part_of(n, family) != "language"]
    if added:
        peft_config.target_modules = set(chosen) if lora.targets == "all-linear" else set(lora.targets) | set(added)
    peft_config.exclude_modules = set(left_out) or None
    counts = {p: sum(part_of(m, family) == p for m in chosen) for p in VISION_CHOICE_PARTS["all"]}
    notes.append(f"vision-language model ({family.name}): LoRA on {counts['language']} language-model layers, "
                 f"{counts['projector']} projector and {counts['vision']} vision-tower layers "
                 f"(lora.vision: {lora.vision})" + (f"; {family.note}" if family.note else ""))


def auto_class_and_processor(folder):
    """(the transformers Auto class to load `folder` with, its processor or None): what the merge and
    other jobs that load a saved model use, so a vision-language model keeps its vision parts."""
    from transformers import AutoModelForCausalLM
    from lorastudio.core.models.info import read_model_info
    info = read_model_info(str(folder))
    if not is_vision(info):
        return AutoModelForCausalLM, None
    return model_class(), load_processor(info)
