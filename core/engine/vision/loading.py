"""Vision-language models: their processors (image path only), the Auto class they load with, and
which modules LoRA adapts (lora.vision). See the package's docstring."""
from __future__ import annotations

import json
import types
from pathlib import Path

import torch

from lorastudio.core.errors import ModelError
from lorastudio.core.models.info import ModelInfo
from lorastudio.core.models.vision import VISION_CHOICE_PARTS, part_of, vision_family

PROCESSORS = {"qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor", "qwen3_vl": "Qwen3VLProcessor",
              "idefics3": "Idefics3Processor", "smolvlm": "SmolVLMProcessor", "llava": "LlavaProcessor",
              "llava_next": "LlavaNextProcessor", "gemma3": "Gemma3Processor", "mllama": "MllamaProcessor"}
# Processors transformers marks as needing torchvision only because their module imports one sizing
# helper (get_resize_output_image_size) from the family's torchvision image processor, to count an
# image's tokens ahead, which we never ask: class -> (family folder, the torchvision module, the Pillow
# module that has the same helper).
TORCHVISION_ONLY_BY_IMPORT = {"PixtralProcessor": ("pixtral", "image_processing_pixtral",
                                                   "image_processing_pil_pixtral")}


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
    init = cls.__init__
    code, defaults = init.__code__, init.__defaults__ or ()
    positional = code.co_argcount - 1                   # without self
    if "video_processor" in code.co_varnames[:code.co_argcount] and len(defaults) < positional:
        # SmolVLM's takes video_processor without a default: the same function (the loader routes
        # arguments by its code's names) with None as the default of the parameters that have none
        ImageOnly.__init__ = types.FunctionType(code, init.__globals__, init.__name__,
                                                (None,) * (positional - len(defaults)) + defaults, init.__closure__)
        ImageOnly.__init__.__kwdefaults__ = init.__kwdefaults__
    return ImageOnly


def processor_class(name: str):
    """transformers' class `name`, or None. A class in TORCHVISION_ONLY_BY_IMPORT comes from its own
    module, imported with the helper it wants taken from the Pillow image processor, when torchvision
    is not installed (transformers then gives a placeholder that refuses to be used)."""
    import importlib
    import importlib.util
    import sys
    import transformers
    cls = getattr(transformers, name, None)
    if name not in TORCHVISION_ONLY_BY_IMPORT or importlib.util.find_spec("torchvision") is not None:
        return cls
    folder, torchvision_module, pil_module = TORCHVISION_ONLY_BY_IMPORT[name]
    package = f"transformers.models.{folder}"
    loaded = sys.modules.get(f"{package}.processing_{folder}")
    if loaded is None:
        helpers = f"{package}.{torchvision_module}"
        stand_in = types.ModuleType(helpers)
        stand_in.get_resize_output_image_size = importlib.import_module(
            f"{package}.{pil_module}").get_resize_output_image_size
        sys.modules[helpers] = stand_in
        try:
            loaded = importlib.import_module(f"{package}.processing_{folder}")
        finally:
            del sys.modules[helpers]
    return getattr(loaded, name, None)


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
    cls = processor_class(name) if name else None
    if cls is None or not isinstance(cls, type):
        raise ModelError(f"{info.path}: no processor class that transformers {transformers.__version__} knows "
                         f"({name or 'none named'}) for model type {info.model_type}",
                         "use a model folder with processor_config.json / preprocessor_config.json from a "
                         "supported family (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, SmolVLM, Idefics3, LLaVA, LLaVA-NeXT, "
                         "Pixtral, Gemma 3, Llama 3.2 Vision)")
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
                         "a Pillow backend (the Qwen-VL, Idefics3 / SmolVLM and LLaVA families, Gemma 3, Mllama)") from None
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


def input_grads_to_the_text_only(model: torch.nn.Module) -> int:
    """Checkpointing (transformers' and PEFT's set-up) hooks the input embeddings of every sub-model so
    that their outputs require a gradient — a vision tower's patch embedding too. A frozen tower then
    builds an autograd graph: its backward pass runs for nothing and its blocks' inputs stay allocated
    through the language model's pass. Our checkpointing is non-reentrant (no input has to require a
    gradient for the adapters inside a layer to get theirs), so only the language model's embedding keeps
    its hook, as for a text model; a tower whose LoRA trains (lora.vision: all) still gets its gradients.
    Returns how many hooks were removed."""
    text = model.get_input_embeddings()
    removed = 0
    for module in model.modules():
        if module is text:
            continue
        # transformers' and PEFT's hooks (both set one; the handles of the first are not kept anywhere)
        for key, hook in list(module._forward_hooks.items()):
            if "make_inputs_require_grad" in getattr(hook, "__qualname__", ""):
                del module._forward_hooks[key]
                removed += 1
    return removed


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
