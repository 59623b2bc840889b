"""Vision-language models from config.json and safetensors headers: which family, and which of its
parts LoRA can adapt. Torch-free.

A vision-language model is three parts: a vision tower (a ViT: image patches → features), a
projector (features → the language model's embedding width; Qwen2-VL's "merger", Idefics3's
"connector") and the language model. `lora.vision` chooses what is adapted besides the language
model: none, the projector, or all (the tower too). The parts are told apart by module names,
the same in the files and in the loaded model (transformers 5's layout, `model.<part>.…`).
"""
from __future__ import annotations

from dataclasses import dataclass

PARTS = ("language", "projector", "vision")
PART_WORDS = {"language": "language model", "projector": "projector", "vision": "vision tower"}
VISION_CHOICE_PARTS = {"none": ("language",), "projector": ("language", "projector"),
                       "all": ("language", "projector", "vision")}


@dataclass(frozen=True)
class VisionFamily:
    name: str                       # for people
    model_types: tuple[str, ...]
    projector: tuple[str, ...]      # a module whose dotted name holds one of these is the projector's …
    vision: tuple[str, ...]         # … else the vision tower's …
    language: tuple[str, ...]       # … else the language model's (the output head counts with it)
    note: str = ""                  # what LoRA cannot adapt in this family


FAMILIES = (
    VisionFamily("Qwen2-VL / Qwen2.5-VL", ("qwen2_vl", "qwen2_5_vl"), projector=("visual.merger.",),
                 vision=("visual.",), language=("language_model.", "lm_head")),
    # Qwen3-VL: besides the merger, "deepstack" mergers project features of inner tower blocks into the
    # first layers of the language model (projector too)
    VisionFamily("Qwen3-VL", ("qwen3_vl",), projector=("visual.merger.", "visual.deepstack_merger_list."),
                 vision=("visual.",), language=("language_model.", "lm_head")),
    VisionFamily("Idefics3 / SmolVLM", ("idefics3", "smolvlm"), projector=("connector.",),
                 vision=("vision_model.",), language=("text_model.", "lm_head")),
    # LLaVA 1.5 (CLIP tower), LLaVA-NeXT (CLIP, images tiled: anyres) and Pixtral (model_type llava with
    # a Pixtral tower)
    VisionFamily("LLaVA", ("llava", "llava_next"), projector=("multi_modal_projector.",),
                 vision=("vision_tower.",), language=("language_model.", "lm_head")),
    VisionFamily("Gemma 3", ("gemma3",), projector=("multi_modal_projector.",), vision=("vision_tower.",),
                 language=("language_model.", "lm_head"),
                 note="Gemma 3's projector is a bare weight matrix, not a linear layer: LoRA cannot adapt it"),
    VisionFamily("Llama 3.2 Vision (Mllama)", ("mllama",), projector=("multi_modal_projector.",),
                 vision=("vision_model.",), language=("language_model.", "lm_head")),
)
BY_TYPE = {t: f for f in FAMILIES for t in f.model_types}


def vision_family(info: "ModelInfo") -> VisionFamily | None:
    """The model's vision-language family, or None for a text-only model."""
    return BY_TYPE.get(info.model_type)


def looks_multimodal(info: "ModelInfo") -> bool:
    """A config with a vision part, known to us or not (its images cannot be trained here if unknown)."""
    return vision_family(info) is not None or isinstance(info.config.get("vision_config"), dict)


def part_of(module: str, family: VisionFamily) -> str:
    """language | projector | vision: the part a module (its dotted name) belongs to."""
    name = "." + module + "."
    if any("." + p in name for p in family.projector):
        return "projector"
    if any("." + p in name for p in family.vision):
        return "vision"
    return "language"


def linear_parts(info: "ModelInfo") -> dict[str, list[str]]:
    """The linear-like modules of each part (from the safetensors headers)."""
    family = vision_family(info)
    out: dict[str, list[str]] = {p: [] for p in PARTS}
    if family is None:
        return out
    for name, (_dtype, shape) in info.tensors.items():
        if name.endswith(".weight") and len(shape) == 2 and "embed" not in name.rsplit(".", 2)[-2]:
            module = name[: -len(".weight")]
            out[part_of(module, family)].append(module)
    return out


def vision_summary(info: "ModelInfo") -> dict | None:
    """What the model panel and `lorastudio` say about a vision-language model: its family, the linear
    layers of each part (what lora.vision can add) and what cannot be adapted; None if text-only."""
    family = vision_family(info)
    if family is None:
        if looks_multimodal(info):
            return {"family": None, "words": f"vision-language ({info.model_type}), but LoRA Studio does not know "
                    "this family's parts: only its text can be trained", "parts": {}}
        return None
    counts = {p: len(m) for p, m in linear_parts(info).items()}
    words = (f"vision-language ({family.name}): adaptable linear layers — "
             + ", ".join(f"{PART_WORDS[p]} {counts[p]}" for p in PARTS)
             + " (lora.vision: none | projector | all)" + (f"; {family.note}" if family.note else ""))
    return {"family": family.name, "words": words, "parts": counts}


def adapted_parts(tensor_names) -> dict[str, list[str]]:
    """The modules a saved adapter adapts, by part (told apart by any family's names), from the names
    of its tensors (its adapter_model.safetensors header): PEFT may save target_modules shortened to
    suffixes, so what was adapted is read from the tensors themselves."""
    out: dict[str, list[str]] = {p: [] for p in PARTS}
    for name in tensor_names:
        if ".lora_A." not in name:
            continue
        module = name.split(".lora_A.")[0]
        found = {part_of(module, f) for f in FAMILIES}      # a projector's name may hold a tower's (Qwen3-VL's
        part = next((p for p in ("projector", "vision") if p in found), "language")     # visual.deepstack_…)
        out[part].append(module)
    return out


def refuse_images_for_text_model(rows, source: str, model_info) -> None:
    """Before a model loads: the first of `rows` (a preview's) that shows an image is a DataError
    naming its line when the model (`model_info()`, read only then) is text-only; the trainer would
    refuse it while tokenizing."""
    from lorastudio.core.data.images import row_image_count, text_only_error
    from lorastudio.core.errors import ModelError
    first = next((r for r in rows if row_image_count(r.value)), None)
    if first is None:
        return
    try:
        info = model_info()
    except ModelError:
        return                      # the model's own check says what is wrong with it
    if vision_family(info) is None:
        raise text_only_error(source, first.where, row_image_count(first.value), f"{info.architecture} ({info.source})")



def part_lora_params(info: "ModelInfo", r: int, dora: bool = False) -> dict[str, int]:
    """LoRA parameters at rank `r` if every linear layer of each part were adapted (what lora.vision
    projector / all add to the language model's count)."""
    out = {}
    for part, modules in linear_parts(info).items():
        shapes = [info.tensors[m + ".weight"][1] for m in modules]
        out[part] = sum(r * (d_in + d_out) + (d_out if dora else 0) for d_out, d_in in shapes)
    return out


def added_lora_params(info: "ModelInfo", r: int, dora: bool, vision: str) -> int:
    """The LoRA parameters lora.vision adds to lora.targets' (the projector's, the vision tower's):
    what the train command announces and the memory model counts."""
    if vision_family(info) is None:
        return 0
    extra = part_lora_params(info, r, dora)
    return sum(extra[p] for p in VISION_CHOICE_PARTS[vision] if p != "language")
