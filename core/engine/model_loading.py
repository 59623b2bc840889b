"""Loading a base model for LoRA training: the one place that decides precision and speed.

The recipe (measured on an H100 for an 8B-shaped QLoRA: 6,513 tokens/s and 8.1 GiB, against
2,547 tokens/s and 17.7 GiB for peft's `prepare_model_for_kbit_training` + reentrant
checkpointing):
  * the frozen base stays in the compute dtype (bf16) — no fp32 upcast of the LM head or norms;
  * non-reentrant activation checkpointing (no need for inputs that require grad);
  * Liger's fused kernels (RMSNorm, SwiGLU, RoPE, fused linear + cross-entropy) when installed
    and on CUDA — the fused loss never materialises the full vocab × tokens logits;
  * LoRA weights in fp32 (PEFT's default autocast), trained by AdamW.
A later performance issue extends `load_for_training`; nothing else decides these things.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from lorastudio.core.config import RunConfig
from lorastudio.core.models.info import ModelInfo
from lorastudio.core.models.targets import discover_targets
from lorastudio.core.engine.fast_lora import fuse_lora_layers
from lorastudio.core.engine.training.expert_lora import group_plain_experts, quantize_grouped_experts
from lorastudio.core.engine.memory_modes import apply_memory_mode, chunk_mlps
from lorastudio.core.engine.vision import loading as vision

log = logging.getLogger(__name__)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass
class LoadedModel:
    model: torch.nn.Module          # the PEFT model
    tokenizer: object
    device: torch.device
    compute_dtype: torch.dtype
    notes: list[str]                # what was decided and why, for the journal
    memory_mode: str = "checkpoint"  # none | checkpoint | lean, as resolved
    kernels: tuple[str, ...] = ()   # the kernels applied, by the code that applied them: "liger", "fused-lora",
    #                                 "grouped-experts"
    processor: object = None        # a vision-language model's processor (core/engine/vision/); its tokenizer is `tokenizer`


def pick_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {setting!r} was asked for but no CUDA GPU is available; "
                           "set device: auto or cpu")
    return torch.device("cuda:0" if setting == "cuda" else setting)


def pick_compute_dtype(setting: str, device: torch.device) -> torch.dtype:
    if setting != "auto":
        return DTYPES[setting]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def quantization_config(quantization: str, compute_dtype: torch.dtype):
    from transformers import BitsAndBytesConfig
    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute_dtype,
                                  bnb_4bit_quant_storage=torch.uint8)
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def apply_liger(model_type: str, device: torch.device, notes: list[str]) -> tuple[str, ...]:
    """Patch the model classes with Liger kernels before loading, when possible: ("liger",) when
    they were applied, else () (with the reason in `notes`)."""
    if device.type != "cuda":
        return ()
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except Exception as exc:        # not installed, or incompatible with this torch/triton
        notes.append(f"Liger kernels not used ({type(exc).__name__}); pip install liger-kernel for speed")
        return ()
    apply = MODEL_TYPE_TO_APPLY_LIGER_FN.get(model_type)
    if apply is None:
        notes.append(f"Liger kernels have no patch for model type {model_type}")
        return ()
    try:
        apply()
    except Exception as exc:
        notes.append(f"Liger kernels failed to apply ({exc}); continuing without them")
        return ()
    notes.append(f"Liger kernels applied to {model_type}")
    return ("liger",)


def load_tokenizer(path, trust_remote_code: bool):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token_id is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


def load_base(config: RunConfig, info: ModelInfo, device: torch.device, compute_dtype: torch.dtype):
    from transformers import AutoModelForCausalLM
    qconfig = quantization_config(config.quantization, compute_dtype)
    auto = vision.model_class() if vision.is_vision(info) else AutoModelForCausalLM
    # Non-quantized weights: the compute dtype (bf16 on GPU, fp32 on CPU).
    return auto.from_pretrained(
        info.path, dtype=compute_dtype, quantization_config=qconfig, device_map={"": device},
        trust_remote_code=config.trust_remote_code,
        use_safetensors=None if config.allow_pickle else True)


def resolve_memory_mode(config: RunConfig, info: ModelInfo, device: torch.device) -> tuple[str, str]:
    """The memory mode to train in, and why: the config's choice, or for `auto` the fastest that fits."""
    t = config.training
    if t.memory_mode != "auto":
        return t.memory_mode, "set by training.memory_mode"
    if device.type != "cuda":
        return "checkpoint", "auto on CPU"
    try:
        from lorastudio.core.fit.advice import choose_memory_mode
    except ImportError:
        return "checkpoint", "auto"
    total = torch.cuda.get_device_properties(device).total_memory
    return choose_memory_mode(config, info, total)


def keep_cpu_4bit_trainable(model) -> None:
    """bitsandbytes' CPU backend repacks 4-bit weights for fast inference the first time a
    Linear4bit runs in eval mode without grad (our evaluation), and never unpacks them; the packed
    path has no autograd, so every LoRA gradient after the first evaluation is silently zero.
    Turning the repacking off keeps training correct (found in bitsandbytes 0.50.2, CPUs with
    AVX512-BF16)."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def lora_config(config: RunConfig, info: ModelInfo | None = None):
    """PEFT's LoraConfig. A dense model gets lora.targets as they are; a mixture of experts gets the
    targets report's full names (core/models/targets.peft_targets): experts, routers and the MLPs
    PEFT would rewrite as `target_parameters`, the rest as `target_modules` — so what trains is what
    the report announced. PEFT takes no dropout with parameters: those train without it (the
    modules get theirs back in `restore_module_dropout`)."""
    from peft import LoraConfig, TaskType
    lora = config.lora
    targets, parameters = lora.targets, []
    if info is not None:
        report = discover_targets(info)
        if report.is_moe:
            targets, parameters = report.peft_targets(lora.targets)
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=0.0 if parameters else lora.dropout,
                      target_modules=targets, target_parameters=parameters or None, use_rslora=lora.use_rslora,
                      use_dora=lora.use_dora, bias="none", task_type=TaskType.CAUSAL_LM)


def restore_module_dropout(model: torch.nn.Module, config: RunConfig, peft_config) -> str | None:
    """With target_parameters PEFT was built without dropout: give the LoRA modules (not the
    parameters) lora.dropout back. Returns the journal's words for it, or None."""
    if not peft_config.target_parameters or config.lora.dropout == 0:
        return None
    for module in model.modules():
        if hasattr(module, "lora_dropout") and not hasattr(module, "parameter_name"):
            for name in list(module.lora_dropout.keys()):
                module.lora_dropout[name] = torch.nn.Dropout(p=config.lora.dropout)
    return (f"lora.dropout {config.lora.dropout} on the LoRA modules; the experts, routers and MLPs PEFT takes as "
            "parameters train without dropout (PEFT cannot apply it to parameters)")


def load_for_training(config: RunConfig, info: ModelInfo) -> LoadedModel:
    from peft import get_peft_model
    notes: list[str] = []
    device = pick_device(config.device)
    compute_dtype = pick_compute_dtype(config.compute_dtype, device)
    if compute_dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise RuntimeError("compute_dtype bf16 is not supported on this GPU; use fp16 or auto")
    kernels = apply_liger(info.model_type, device, notes)
    processor = vision.load_processor(info) if vision.is_vision(info) else None
    tokenizer = processor.tokenizer if processor is not None else load_tokenizer(info.path, config.trust_remote_code)
    model = load_base(config, info, device, compute_dtype)
    for p in model.parameters():
        p.requires_grad_(False)
    if device.type == "cpu":
        keep_cpu_4bit_trainable(model)
    memory_mode, why = resolve_memory_mode(config, info, device)
    memory_words = apply_memory_mode(model, memory_mode)
    model.config.use_cache = False
    torch.manual_seed(config.training.seed)       # LoRA A's init is random: make it the seed's
    peft_config = lora_config(config, info)
    if processor is not None:     # lora.targets within the language model, and the parts lora.vision adds
        vision.restrict_to_parts(peft_config, model, info, config.lora, notes)
    peft_model = get_peft_model(model, peft_config)
    if processor is not None:       # after PEFT, which hooks the input embeddings again
        vision.input_grads_to_the_text_only(model)
    dropout_words = restore_module_dropout(peft_model, config, peft_config)
    if dropout_words:
        notes.append(dropout_words)
    fused = fuse_lora_layers(peft_model) if config.training.fused_lora else None
    if fused is not None and fused.fused:
        kernels += ("fused-lora",)
    if fused is not None and fused.experts:
        kernels += ("grouped-experts",)         # the experts' LoRA on engine/training/expert_lora.py's path
    if fused is not None and config.quantization == "4bit":    # bitsandbytes left 3-D experts 16-bit: NF4 them
        group_plain_experts(peft_model)
        stacks, before, after = quantize_grouped_experts(peft_model)
        if stacks:
            notes.append(f"experts NF4: {stacks} expert weight stacks quantized after loading "
                         f"({before / 2**30:.2f} → {after / 2**30:.2f} GiB; bitsandbytes quantizes linear layers "
                         "only, so they loaded 16-bit)")
    chunk_words = chunk_mlps(peft_model) if memory_mode != "none" else ""
    notes.append(f"{config.quantization} base on {device}, compute {str(compute_dtype).replace('torch.', '')}; "
                 f"memory mode {memory_mode} ({why}): {memory_words}" + (f"; {chunk_words}" if chunk_words else ""))
    notes.append(fused.words() if fused is not None else "fused LoRA off: training.fused_lora is false")
    return LoadedModel(peft_model, tokenizer, device, compute_dtype, notes, memory_mode, kernels, processor)


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
