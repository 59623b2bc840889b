"""Tiny random vision-language models of each family we train, built offline from transformers'
config classes (hidden 64, 2 layers, a 2-layer vision tower on 28–64 px images, patch 14; Qwen3-VL's 16) and saved
with their processor: the byte-level tokenizer of tiny_models.make_tokenizer plus the family's
image tokens (Idefics3 / SmolVLM's also "\n\n" as one token, as llama.cpp needs: `_tokenizer`), its
image processor (the Pillow backend) constructed directly, and a chat template that lays user turns
out as image and text parts. Also small PNG data sets drawn with Pillow.
"""
from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.tiny_models import make_tokenizer

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "idefics3", "smolvlm", "llava", "llava_next", "pixtral", "gemma3",
            "mllama")
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 20)}

# ChatML with content parts; `image` is the family's placeholder in the template.
def chat_template(image: str) -> str:
    return ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
            "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
            "{% if c['type'] == 'image' %}" + image + "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
            "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512)


def _tokenizer(folder: Path, extra: list[str], paragraph: bool = False):
    """The byte-level tokenizer with `extra` special tokens. `paragraph`: with "\n\n" as one token (the
    merge Ċ Ċ), as real GPT-2 style vocabularies have it: llama.cpp's mtmd looks it up by its text to
    open Idefics3 / SmolVLM's overview image (tools/mtmd/mtmd.cpp, PROJECTOR_TYPE_IDEFICS3:
    tok_ov_img_start = "\n\n", <fake_token_around_image>, <global-img>), and without it puts
    LLAMA_TOKEN_NULL in the prompt, which its server refuses ("Invalid token")."""
    from transformers import PreTrainedTokenizerFast
    tok = make_tokenizer(folder)
    if paragraph:
        path = folder / "tokenizer.json"
        spec = json.loads(path.read_text(encoding="utf-8"))
        spec["model"]["vocab"]["ĊĊ"] = len(spec["model"]["vocab"])
        spec["model"]["merges"].append(["Ċ", "Ċ"])
        path.write_text(json.dumps(spec), encoding="utf-8")
        tok = PreTrainedTokenizerFast.from_pretrained(folder)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", *extra]})
    tok.save_pretrained(folder)
    return tok


def _text(tok, **more) -> dict:
    return dict(TEXT, vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id, **more)


def make_vlm(folder: Path, family: str, seed: int = 0, vision_depth: int = 2) -> Path:
    """A saved tiny `family` model (one of FAMILIES) with its processor files. `vision_depth`: the
    Qwen and Pixtral vision towers' blocks (llama.cpp's converter names the projector's layers by
    block index, so its mmproj needs at least 3, as every real one has)."""
    import torch
    import transformers as tf
    from lorastudio.core.engine.vision.loading import image_only, processor_class

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if family in ("qwen2_vl", "qwen2_5_vl"):
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
        tok = _tokenizer(folder, ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"])
        ids = {key: tok.convert_tokens_to_ids(t) for key, t in (
            ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
        rope = {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0}
        if family == "qwen2_vl":
            cfg = tf.Qwen2VLConfig(
                text_config=_text(tok, rope_parameters=rope),
                vision_config=dict(depth=vision_depth, embed_dim=32, hidden_size=64, num_heads=2, patch_size=14,
                                   spatial_merge_size=2, temporal_patch_size=2),
                tie_word_embeddings=True, **ids)
            model, processor_cls = tf.Qwen2VLForConditionalGeneration(cfg), tf.Qwen2VLProcessor
        else:       # Qwen2.5-VL: a SwiGLU vision tower with windowed attention, RMSNorm
            cfg = tf.Qwen2_5_VLConfig(
                text_config=_text(tok, rope_parameters=rope),
                vision_config=dict(depth=vision_depth, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                                   patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                                   fullatt_block_indexes=[1]),
                tie_word_embeddings=True, **ids)
            model, processor_cls = tf.Qwen2_5_VLForConditionalGeneration(cfg), tf.Qwen2_5_VLProcessor
        images = Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=56 * 56, patch_size=14, merge_size=2,
                                          temporal_patch_size=2)
        processor = image_only(processor_cls)(image_processor=images, tokenizer=tok,
                                                 chat_template=chat_template("<|vision_start|><|image_pad|><|vision_end|>"))
    elif family == "qwen3_vl":      # Qwen3-VL: patch 16, learned position embeddings, deepstack mergers
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
        tok = _tokenizer(folder, ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"])
        ids = {key: tok.convert_tokens_to_ids(t) for key, t in (
            ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
        rope = {"rope_type": "default", "mrope_section": [4, 2, 2], "mrope_interleaved": True, "rope_theta": 10000.0}
        cfg = tf.Qwen3VLConfig(
            text_config=_text(tok, head_dim=16, rope_parameters=rope),
            vision_config=dict(depth=vision_depth, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                               patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16,
                               deepstack_visual_indexes=[0]),
            # one deepstack merger (real ones have 3, into the first of many layers): llama.cpp adds a
            # deepstack layer's features after its last layer kept the output rows alone, so a
            # deepstack layer that is also the last aborts llama.cpp (GGML_ASSERT ggml_can_repeat)
            tie_word_embeddings=True, **ids)
        model = tf.Qwen3VLForConditionalGeneration(cfg)
        images = Qwen2VLImageProcessorPil(min_pixels=32 * 32, max_pixels=64 * 64, patch_size=16, merge_size=2,
                                          temporal_patch_size=2)
        processor = image_only(tf.Qwen3VLProcessor)(image_processor=images, tokenizer=tok,
                                                     chat_template=chat_template("<|vision_start|><|image_pad|><|vision_end|>"))
    elif family == "idefics3":
        from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil
        grid = [f"<row_{r}_col_{c}>" for r in (1, 2) for c in (1, 2)]
        tok = _tokenizer(folder, ["<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>", *grid],
                         paragraph=True)
        cfg = tf.Idefics3Config(
            text_config=_text(tok, model_type="llama"),
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                               image_size=28, patch_size=14),
            scale_factor=2, image_token_id=tok.convert_tokens_to_ids("<image>"), tie_word_embeddings=False)
        model = tf.Idefics3ForConditionalGeneration(cfg)
        images = Idefics3ImageProcessorPil(size={"longest_edge": 56}, max_image_size={"longest_edge": 28},
                                           do_image_splitting=True)
        processor = image_only(tf.Idefics3Processor)(image_processor=images, tokenizer=tok, image_seq_len=1,
                                                      chat_template=chat_template("<image>"))
    elif family == "llava":
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
        tok = _tokenizer(folder, ["<image>"])
        cfg = tf.LlavaConfig(
            vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
                               num_hidden_layers=2, num_attention_heads=2, image_size=28, patch_size=14),
            text_config=_text(tok, model_type="llama"),
            image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
            vision_feature_select_strategy="default", tie_word_embeddings=False)
        model = tf.LlavaForConditionalGeneration(cfg)
        images = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
        processor = image_only(tf.LlavaProcessor)(image_processor=images, tokenizer=tok, patch_size=14,
                                                   vision_feature_select_strategy="default",
                                                   num_additional_image_tokens=1,
                                                   chat_template=chat_template("<image>"))
    elif family == "llava_next":    # LLaVA-NeXT: the image tiled on a grid (anyres) plus an overview, rows of features
        from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
        tok = _tokenizer(folder, ["<image>"])
        pinpoints = [[28, 56], [56, 28], [56, 56]]
        cfg = tf.LlavaNextConfig(
            vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
                               num_hidden_layers=2, num_attention_heads=2, image_size=28, patch_size=14),
            text_config=_text(tok, model_type="llama"), image_grid_pinpoints=pinpoints,
            image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
            vision_feature_select_strategy="default", tie_word_embeddings=False)
        model = tf.LlavaNextForConditionalGeneration(cfg)
        images = LlavaNextImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                                            image_grid_pinpoints=pinpoints)
        processor = image_only(tf.LlavaNextProcessor)(image_processor=images, tokenizer=tok, patch_size=14,
                                                       vision_feature_select_strategy="default",
                                                       num_additional_image_tokens=1,
                                                       chat_template=chat_template("<image>"))
    elif family == "pixtral":       # Pixtral-12B's layout: LLaVA with a Pixtral tower (any image size, 2-D RoPE)
        from transformers.models.pixtral.image_processing_pil_pixtral import PixtralImageProcessorPil
        tok = _tokenizer(folder, ["[IMG]", "[IMG_BREAK]", "[IMG_END]"])
        cfg = tf.LlavaConfig(
            vision_config=dict(model_type="pixtral", hidden_size=32, intermediate_size=64, num_hidden_layers=vision_depth,
                               num_attention_heads=2, image_size=56, patch_size=14, hidden_act="silu"),
            text_config=_text(tok, model_type="mistral", head_dim=16),
            image_token_id=tok.convert_tokens_to_ids("[IMG]"), vision_feature_layer=-1,
            vision_feature_select_strategy="full", projector_hidden_act="gelu", tie_word_embeddings=False)
        model = tf.LlavaForConditionalGeneration(cfg)
        images = PixtralImageProcessorPil(size={"longest_edge": 56}, patch_size=14)
        processor = image_only(processor_class("PixtralProcessor"))(image_processor=images, tokenizer=tok, patch_size=14,
                                                     spatial_merge_size=1, chat_template=chat_template("[IMG]"))
    elif family == "smolvlm":       # SmolVLM2: Idefics3's layout, a processor that also reads video
        from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil
        grid = [f"<row_{r}_col_{c}>" for r in (1, 2) for c in (1, 2)]
        tok = _tokenizer(folder, ["<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>",
                                  "<video>", *grid], paragraph=True)
        cfg = tf.SmolVLMConfig(
            text_config=_text(tok, model_type="llama"),
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                               image_size=28, patch_size=14),
            scale_factor=2, image_token_id=tok.convert_tokens_to_ids("<image>"), tie_word_embeddings=False)
        model = tf.SmolVLMForConditionalGeneration(cfg)
        images = SmolVLMImageProcessorPil(size={"longest_edge": 56}, max_image_size={"longest_edge": 28},
                                          do_image_splitting=True)
        processor = image_only(tf.SmolVLMProcessor)(image_processor=images, tokenizer=tok, image_seq_len=1,
                                                     chat_template=chat_template("<image>"))
    elif family == "mllama":        # Llama 3.2 Vision: images reach the text through cross-attention layers
        from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil
        tok = _tokenizer(folder, ["<|image|>", "<|python_tag|>"])
        cfg = tf.MllamaConfig(
            vision_config=dict(hidden_size=32, num_hidden_layers=2, num_global_layers=1, attention_heads=2,
                               intermediate_size=64, image_size=28, patch_size=14, max_num_tiles=2,
                               intermediate_layers_indices=[0], vision_output_dim=64,
                               supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]]),
            text_config=_text(tok, cross_attention_layers=[1], rope_parameters={"rope_type": "default",
                                                                                "rope_theta": 10000.0}),
            image_token_index=tok.convert_tokens_to_ids("<|image|>"))
        model = tf.MllamaForConditionalGeneration(cfg)
        images = MllamaImageProcessorPil(size={"height": 28, "width": 28}, max_image_tiles=2)
        processor = image_only(tf.MllamaProcessor)(image_processor=images, tokenizer=tok,
                                                    chat_template=chat_template("<|image|>"))
    elif family == "gemma3":
        from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil
        tok = make_tokenizer(folder)
        marks = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
        tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", *marks.values()]})
        tok.save_pretrained(folder)
        # Gemma's tokenizer names its image tokens (boi_token, …): the saved form of named extra tokens
        settings = json.loads((folder / "tokenizer_config.json").read_text())
        settings["extra_special_tokens"] = marks
        (folder / "tokenizer_config.json").write_text(json.dumps(settings))
        tok = tf.AutoTokenizer.from_pretrained(folder)
        ids = {k: tok.convert_tokens_to_ids(v) for k, v in marks.items()}
        cfg = tf.Gemma3Config(
            text_config=_text(tok, model_type="gemma3_text", head_dim=16, sliding_window=64, layer_types=[
                "sliding_attention", "full_attention"]),
            vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                               num_hidden_layers=2, num_attention_heads=2, image_size=28, patch_size=14,
                               vision_use_head=False),      # as Gemma 3's SigLIP: no pooling head
            mm_tokens_per_image=1, boi_token_index=ids["boi_token"], eoi_token_index=ids["eoi_token"],
            image_token_index=ids["image_token"], tie_word_embeddings=True)
        model = tf.Gemma3ForConditionalGeneration(cfg)
        images = Gemma3ImageProcessorPil(size={"height": 28, "width": 28})
        processor = image_only(tf.Gemma3Processor)(image_processor=images, tokenizer=tok, image_seq_length=1,
                                                    chat_template=chat_template("<start_of_image>"))
    else:
        raise ValueError(family)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def write_image(path: Path, colour: str, size=(40, 32)) -> Path:
    """A PNG filled with a named colour, a darker square in one corner (so images are not flat)."""
    from PIL import Image, ImageDraw
    img = Image.new("RGB", size, COLOURS[colour])
    ImageDraw.Draw(img).rectangle([2, 2, size[0] // 3, size[1] // 3], fill=tuple(c // 2 for c in COLOURS[colour]))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def write_colour_data(folder: Path, n: int = 16, spelling: str = "parts") -> Path:
    """`n` chat rows asking the colour of a generated PNG (paths relative to the data file):
    spelling parts (content parts), column (an images column with <image> markers) or sharegpt."""
    folder = Path(folder)
    names = list(COLOURS)
    rows = []
    for i in range(n):
        colour = names[i % len(names)]
        image = f"images/{i:03d}-{colour}.png"
        write_image(folder / image, colour)
        if spelling == "parts":
            rows.append({"messages": [
                {"role": "user", "content": [{"type": "image", "image": image},
                                             {"type": "text", "text": "What colour is this?"}]},
                {"role": "assistant", "content": f"It is {colour}."}]})
        elif spelling == "column":
            rows.append({"images": [image], "messages": [
                {"role": "user", "content": "<image>What colour is this?"},
                {"role": "assistant", "content": f"It is {colour}."}]})
        else:
            rows.append({"image": image, "conversations": [
                {"from": "human", "value": "<image>\nWhat colour is this?"},
                {"from": "gpt", "value": f"It is {colour}."}]})
    path = folder / "colours.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
