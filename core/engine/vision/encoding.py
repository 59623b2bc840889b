"""Examples with images as token ids and labels, and the image tensors of a batch. See the
package's docstring."""
from __future__ import annotations

import re

import torch

from lorastudio.core.data.chat_masks import IGNORE_INDEX, Encoded
from lorastudio.core.data.files import DataError
from lorastudio.core.data.formats import Example
from lorastudio.core.data.images import IMAGE_MARKER, open_image
from lorastudio.core.errors import ModelError

# Tokens that frame or mark an image (never trained, even with data.train_on: all).
IMAGE_TOKEN_PATTERN = re.compile(r"image|vision|img|^<row_\d+_col_\d+>$|^<boi>$|^<eoi>$", re.IGNORECASE)
TEXT_KEYS = {"input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids", "offset_mapping"}
OK, TOO_LONG, NO_TARGET = 0, 1, 2      # as core/engine/batching/token_cache.py


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


def image_token_id(processor) -> int | None:
    """The id of the token that each image feature replaces in the model (Gemma 3's processor keeps the
    begin-of-image marker as its `image_token_id`; its tokenizer names the feature token)."""
    named = getattr(processor.tokenizer, "image_token_id", None)
    return named if isinstance(named, int) else getattr(processor, "image_token_id", None)


def image_token_ids(processor) -> set[int]:
    """The ids of the tokens that stand for or frame images."""
    tok = processor.tokenizer
    ids = {getattr(processor, "image_token_id", None), image_token_id(processor)}
    named = getattr(processor, "image_token_ids", None)        # Pixtral's: [IMG], [IMG_BREAK], [IMG_END]
    if isinstance(named, (list, tuple, set)):
        ids.update(named)
    for token in tok.get_vocab():
        if token.startswith(("<", "[")) and IMAGE_TOKEN_PATTERN.search(token) and token in tok.all_special_tokens + list(
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
        self.image_token_id = image_token_id(processor)

    def _ids(self, messages: list[dict], images: list, generation_prompt: bool) -> list[int]:
        # The processor's template rendered by its tokenizer (SmolVLM's own apply_chat_template reads
        # its video processor, which we do not load).
        text = self.processor.tokenizer.apply_chat_template(
            template_messages(messages), chat_template=self.processor.chat_template, tokenize=False,
            add_generation_prompt=generation_prompt)
        enc = self.processor(text=[text], images=[images] if images else None)
        return [int(t) for t in enc["input_ids"][0]]        # ints, also where a processor makes tensors (Pixtral's)

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

    def prompt(self, messages: list[dict], example: Example, source: str) -> Encoded:
        """The prompt `messages` (the start of `example`) with the generation prompt, as ids, and the
        images it shows (for answering: evaluation)."""
        paths = example.images[:sum(m["content"].count(IMAGE_MARKER) for m in messages)]
        images = [open_image(p, example.where, source, self.max_pixels) for p in paths]
        ids = self._ids(messages, images, True)
        return Encoded(example.where, ids, [IGNORE_INDEX] * len(ids), images=list(paths))

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
        self.image_token = getattr(processor, "image_token", None)        # what the processor expands
        self.image_token_id = image_token_id(processor)                   # what it expands into

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
        if "cross_attention_mask" in features:
            features = cross_attention_features(features, rows, input_ids, self.image_token_id)
        for key in ("mm_token_type_ids", "token_type_ids"):
            if key in out:
                features[key] = (input_ids == self.image_token_id).long()
        return features


def cross_attention_features(features: dict, rows: list[Encoded], input_ids: torch.Tensor, image_id: int) -> dict:
    """Llama 3.2 Vision (Mllama) reads images through cross-attention: which text tokens see which
    image's tiles is a mask over the batch's own token positions, and its image tensors have a row
    per batch row. The processor made both for the rows with images and a stand-in text; here the
    mask is laid over the real ids (each image seen from its token on, as the processor does) and
    rows without images get zero images."""
    from transformers.models.mllama.processing_mllama import (convert_sparse_cross_attention_mask_to_dense,
                                                              get_cross_attention_token_mask)
    stand_in = features.pop("cross_attention_mask")       # (rows with images, positions, images, tiles)
    tiles_of = iter([[int(stand_in[b, :, i].amax(dim=0).sum()) for i in range(len(r.images))]
                     for b, r in enumerate(r for r in rows if r.images)])
    tiles = [next(tiles_of) if r.images else [] for r in rows]
    sparse = [get_cross_attention_token_mask(ids.tolist(), image_id) for ids in input_ids]
    mask = convert_sparse_cross_attention_mask_to_dense(sparse, tiles, stand_in.shape[-1], input_ids.shape[1])
    with_images = torch.tensor([bool(r.images) for r in rows])
    out = {"cross_attention_mask": torch.from_numpy(mask)}
    for key, value in features.items():         # pixel_values, aspect_ratio_ids, aspect_ratio_mask
        full = value.new_zeros((len(rows), *value.shape[1:]))
        full[with_images] = value
        out[key] = full
    return out

