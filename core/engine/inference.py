"""Base model + adapter for the playground and `lorastudio eval`: loading, prompting, sampling.

One model answers for both sides: a PeftModel whose adapter is switched off
(`model.disable_adapter()`) for the base model's answer. The base is loaded as the run trained it
(model_loading.load_base: same quantization and compute dtype), so the adapter is judged on the
weights it was trained against. Heavy: workers only.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from lorastudio.core.errors import ModelError
from lorastudio.core.preflight import check_config
from lorastudio.core.config import RunConfig
from lorastudio.core.runs.export import adapter_source
from lorastudio.core.engine.model_loading import load_base, load_tokenizer, pick_compute_dtype, pick_device
from lorastudio.core.engine.vision.loading import is_vision, load_processor
from lorastudio.core.data.chat_masks import has_chat_template
from lorastudio.core.runs.folders import CONFIG_FILE

SIDES = ("base", "adapter")


@dataclass
class LoadedPair:
    model: torch.nn.Module          # PeftModel; disable_adapter() gives the base
    tokenizer: object
    device: torch.device
    config: RunConfig
    adapter: Path
    processor: object = None        # a vision-language model's (core/engine/vision/); `tokenizer` is its tokenizer


def load_pair(run_dir: Path, checkpoint: int | None = None, device: str | None = None,
              adapter_dir: Path | None = None) -> LoadedPair:
    """The run's base model with its adapter (final, a checkpoint's, or `adapter_dir`: another
    adapter folder for the same base, e.g. one made by `lorastudio resize`)."""
    from peft import PeftModel
    run_dir = Path(run_dir)
    config = RunConfig.load(run_dir / CONFIG_FILE)
    info, _ = check_config(config)
    adapter = Path(adapter_dir) if adapter_dir is not None else adapter_source(run_dir, checkpoint)
    dev = pick_device(device or config.device)
    dtype = pick_compute_dtype(config.compute_dtype, dev)
    tok_dir = adapter if (adapter / "tokenizer_config.json").is_file() else info.path
    processor = load_processor(info) if is_vision(info) else None
    tokenizer = processor.tokenizer if processor is not None else load_tokenizer(tok_dir, config.trust_remote_code)
    base = load_base(config, info, dev, dtype)
    model = PeftModel.from_pretrained(base, str(adapter)).eval()
    model.config.use_cache = True
    return LoadedPair(model, tokenizer, dev, config, adapter, processor)


def side_context(model, side: str):
    return model.disable_adapter() if side == "base" else contextlib.nullcontext()


def prompt_text(tokenizer, messages: list[dict]) -> tuple[str, bool]:
    """The prompt as the model saw its training data: (text, templated). Without a chat template,
    LoRA Studio's fallback headers (core/data/chat_masks.py) end with an open assistant turn."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), True
    text = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages)
    return text + "<|assistant|>\n", False


def encode_prompt(tokenizer, messages: list[dict]) -> list[int]:
    text, templated = prompt_text(tokenizer, messages)
    return list(tokenizer(text, add_special_tokens=not templated)["input_ids"])


def end_of_turn_id(tokenizer) -> int | None:
    """The special token the chat template writes right after an assistant's answer, if any."""
    if not has_chat_template(tokenizer):
        return None
    mark = "\u2063answer\u2063"
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "q"}, {"role": "assistant", "content": mark}],
                                             tokenize=False)
    except Exception:       # a template that refuses this shape (e.g. requires a system turn)
        return None
    after = text.split(mark, 1)[1] if mark in text else ""
    ids = tokenizer(after.lstrip(), add_special_tokens=False)["input_ids"] if after.strip() else []
    special = set(getattr(tokenizer, "all_special_ids", []) or []) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    return ids[0] if ids and ids[0] in special else None


def stop_ids(tokenizer, model) -> set[int]:
    """End of text and end of turn: the tokenizer's and the model's eos, the template's end-of-turn."""
    ids = set()
    for source in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None),
                   end_of_turn_id(tokenizer)):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, (list, tuple)):
            ids.update(i for i in source if isinstance(i, int))
    for token in ("<|im_end|>", "<|eot_id|>", "<|end|>"):
        tid = tokenizer.convert_tokens_to_ids(token) if token in tokenizer.get_vocab() else None
        if isinstance(tid, int):
            ids.add(tid)
    return ids


def json_object_end(text: str) -> int | None:
    """The index just past the first complete top-level JSON object in `text`, else None.

    Counts braces outside strings (a string's escaped quotes and braces do not count); what comes
    before the first "{" (a code fence, a word) is skipped. Plain Python, no parsing of values."""
    depth, in_string, escaped = 0, False, False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"' and depth:
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def json_answer_settled(text: str) -> bool:
    """Nothing more can change how a JSON answer scores: it holds a complete object, or it has begun
    with something other than "{" or a ``` fence (the only starts that can parse as an object, see
    evaluation.parse_json_object) — a model answering in prose is cut after its first word."""
    start = text.lstrip()
    if json_object_end(start) is not None:
        return True
    return bool(start) and not (start.startswith("{") or start.startswith("```") or "```".startswith(start))


class JsonObjectDone(StoppingCriteria):
    """generate()'s per-row stop on a JSON task: True for each row whose new text is settled."""

    def __init__(self, tokenizer, prompt_width: int):
        self.tokenizer, self.width = tokenizer, prompt_width

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.width:], skip_special_tokens=True)
        return torch.tensor([json_answer_settled(t) for t in texts], dtype=torch.bool, device=input_ids.device)


def pick_token(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> int:
    """Greedy at temperature 0; otherwise nucleus sampling with the side's own generator."""
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(0) - sorted_p < top_p        # the smallest set reaching top_p
        sorted_p = sorted_p * keep
        probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
    return int(torch.multinomial(probs / probs.sum(), 1, generator=generator))


class SideStream:
    """One side's generation, advanced a token at a time (so both sides stream together)."""

    def __init__(self, pair: LoadedPair, side: str, prompt: list[int], settings: dict):
        self.pair, self.side, self.settings = pair, side, settings
        self.input = torch.tensor([prompt], device=pair.device)
        self.past, self.new_ids, self.text, self.done = None, [], "", False
        self.generator = torch.Generator().manual_seed(int(settings.get("seed", 0)))
        self.stops = stop_ids(pair.tokenizer, pair.model)

    @torch.no_grad()
    def advance(self) -> str:
        """Generate one token; returns the new text (may be "" while a character is incomplete)."""
        model = self.pair.model
        with side_context(model, self.side):
            out = model(input_ids=self.input, past_key_values=self.past, use_cache=True)
        self.past = out.past_key_values
        token = pick_token(out.logits[0, -1].cpu(), float(self.settings.get("temperature", 0.0)),
                           float(self.settings.get("top_p", 1.0)), self.generator)
        if token in self.stops:
            self.done = True
            return ""
        self.new_ids.append(token)
        self.input = torch.tensor([[token]], device=self.pair.device)
        if len(self.new_ids) >= int(self.settings.get("max_new_tokens", 128)):
            self.done = True
        text = self.pair.tokenizer.decode(self.new_ids, skip_special_tokens=True)
        if text.endswith("\ufffd") and not self.done:       # half a multi-byte character: wait
            return ""
        delta, self.text = text[len(self.text):], text
        return delta


def stream_both(pair: LoadedPair, messages: list[dict], settings: dict, sides=SIDES,
                on_token: Callable[[str, str], None] = lambda side, text: None,
                should_stop: Callable[[], bool] = lambda: False, images: list[str] = ()) -> dict[str, SideStream]:
    """Generate for each side, interleaving token by token; on_token(side, text) per piece. With
    `images` (files the prompt shows; a vision-language run) the sides answer in turn."""
    if images:
        return stream_with_images(pair, messages, list(images), settings, sides, on_token, should_stop)
    prompt = encode_prompt(pair.tokenizer, messages)
    streams = {side: SideStream(pair, side, prompt, settings) for side in sides}
    while not should_stop() and not all(s.done for s in streams.values()):
        for side, stream in streams.items():
            if not stream.done:
                piece = stream.advance()
                if piece:
                    on_token(side, piece)
    return streams


# ---- a prompt with images (vision-language runs) -----------------------------------------------
IMAGE_SOURCE = "the Playground"


def image_prompt(pair: LoadedPair, messages: list[dict], images: list[str]) -> tuple[list[int], dict]:
    """(the prompt's ids, its image tensors) for `messages` showing the image files `images`: the
    images go where the turns' <image> markers are, else before the first question (as in the
    data, core/data/images.place_images), encoded by the run's processor as training encodes them."""
    from lorastudio.core.data.formats import Example
    from lorastudio.core.data.images import place_images
    from lorastudio.core.engine.vision.encoding import ImageBatcher, ImageEncoder
    if pair.processor is None:
        raise ModelError(f"{pair.config.model} is a text-only model: it cannot read images",
                         "remove the image, or choose a run that trained a vision-language model")
    messages = [dict(m) for m in messages]
    paths = place_images(messages, [], list(images), "the prompt", IMAGE_SOURCE)
    max_pixels = getattr(pair.config.data, "max_image_pixels", 0)
    encoded = ImageEncoder(pair.processor, max_pixels).prompt(
        messages, Example("the prompt", messages=messages, images=paths), IMAGE_SOURCE)
    features = ImageBatcher(pair.processor, max_pixels, IMAGE_SOURCE)([encoded], torch.tensor([encoded.input_ids]))
    return encoded.input_ids, features


class ImageSideStream(BaseStreamer):
    """One side's answer to a prompt with images, through model.generate() (which lays the image
    tensors, positions and cross-attention out per family): the streamer of its tokens, with the
    text, new_ids and done of a SideStream."""

    def __init__(self, pair: LoadedPair, side: str, on_token: Callable[[str, str], None]):
        self.pair, self.side, self.on_token = pair, side, on_token
        self.stops = stop_ids(pair.tokenizer, pair.model)
        self.new_ids, self.text, self.done, self._prompt_seen = [], "", False, False

    def put(self, value) -> None:
        if not self._prompt_seen:               # generate() hands the prompt over first
            self._prompt_seen = True
            return
        self.new_ids.extend(int(t) for t in value.flatten().tolist() if int(t) not in self.stops)
        text = self.pair.tokenizer.decode(self.new_ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):           # half a multi-byte character: wait
            return
        delta, self.text = text[len(self.text):], text
        if delta:
            self.on_token(self.side, delta)

    def end(self) -> None:
        text = self.pair.tokenizer.decode(self.new_ids, skip_special_tokens=True)
        delta, self.text = text[len(self.text):], text
        if delta:                               # what a held-back half character became
            self.on_token(self.side, delta)


class StopAsked(StoppingCriteria):
    def __init__(self, should_stop: Callable[[], bool]):
        self.should_stop = should_stop

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), bool(self.should_stop()), dtype=torch.bool, device=input_ids.device)


@torch.no_grad()
def stream_with_images(pair: LoadedPair, messages: list[dict], images: list[str], settings: dict, sides=SIDES,
                       on_token: Callable[[str, str], None] = lambda side, text: None,
                       should_stop: Callable[[], bool] = lambda: False) -> dict[str, ImageSideStream]:
    """Each side in turn answers `messages` showing `images` (same seed each side)."""
    prompt, features = image_prompt(pair, messages, images)
    ids = torch.tensor([prompt], device=pair.device)
    extra = {k: v.to(pair.device) for k, v in features.items()}
    temperature = float(settings.get("temperature", 0.0))
    sampling = {"do_sample": True, "temperature": temperature, "top_p": float(settings.get("top_p", 1.0))} \
        if temperature > 0 else {"do_sample": False}
    tok, streams = pair.tokenizer, {}
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    for side in sides:
        stream = streams[side] = ImageSideStream(pair, side, on_token)
        if should_stop():
            break
        torch.manual_seed(int(settings.get("seed", 0)))
        with side_context(pair.model, side):
            pair.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **extra, **sampling,
                                max_new_tokens=int(settings.get("max_new_tokens", 128)), pad_token_id=pad,
                                eos_token_id=sorted(stream.stops), streamer=stream,
                                stopping_criteria=StoppingCriteriaList([StopAsked(should_stop)]))
        stream.done = not should_stop()
    for side in sides:
        streams.setdefault(side, ImageSideStream(pair, side, on_token))
    return streams


@torch.no_grad()
def greedy_batch(pair: LoadedPair, prompts: list[list[int]], side: str, max_new_tokens: int,
                 json_answers: bool = False, images: Callable | None = None) -> list[str]:
    """Greedy answers for many prompts at once (left padding), for evaluation. Each answer stops at
    end of turn, and with `json_answers` as soon as its score is settled (json_answer_settled): a
    complete JSON object (anything after it is cut too), or a start no JSON object can have.
    `images(ids)` gives the prompts' image tensors for the padded ids (vision-language models)."""
    tok, model = pair.tokenizer, pair.model
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=pair.device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=pair.device)
    stopping = StoppingCriteriaList([JsonObjectDone(tok, width)] if json_answers else [])
    extra = {k: v.to(pair.device) for k, v in images(ids.cpu()).items()} if images is not None else {}
    with side_context(model, side):
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, **extra,
                             do_sample=False, pad_token_id=pad, eos_token_id=sorted(stop_ids(tok, model)),
                             stopping_criteria=stopping)
    answers = [tok.decode(row[width:], skip_special_tokens=True) for row in out]
    if json_answers:
        answers = [a[:json_object_end(a)] if json_object_end(a) else a for a in answers]
    return [a.strip() for a in answers]
