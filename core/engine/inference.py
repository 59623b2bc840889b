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

from lorastudio.core.preflight import check_config
from lorastudio.core.config import RunConfig
from lorastudio.core.runs.export import adapter_source
from lorastudio.core.engine.model_loading import load_base, load_tokenizer, pick_compute_dtype, pick_device
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


def load_pair(run_dir: Path, checkpoint: int | None = None, device: str | None = None) -> LoadedPair:
    from peft import PeftModel
    run_dir = Path(run_dir)
    config = RunConfig.load(run_dir / CONFIG_FILE)
    info, _ = check_config(config)
    adapter = adapter_source(run_dir, checkpoint)
    dev = pick_device(device or config.device)
    dtype = pick_compute_dtype(config.compute_dtype, dev)
    tok_dir = adapter if (adapter / "tokenizer_config.json").is_file() else info.path
    tokenizer = load_tokenizer(tok_dir, config.trust_remote_code)
    base = load_base(config, info, dev, dtype)
    model = PeftModel.from_pretrained(base, str(adapter)).eval()
    model.config.use_cache = True
    return LoadedPair(model, tokenizer, dev, config, adapter)


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


def stop_ids(tokenizer, model) -> set[int]:
    ids = set()
    for source in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, (list, tuple)):
            ids.update(i for i in source if isinstance(i, int))
    for token in ("<|im_end|>", "<|eot_id|>", "<|end|>"):
        tid = tokenizer.convert_tokens_to_ids(token) if token in tokenizer.get_vocab() else None
        if isinstance(tid, int):
            ids.add(tid)
    return ids


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
                should_stop: Callable[[], bool] = lambda: False) -> dict[str, SideStream]:
    """Generate for each side, interleaving token by token; on_token(side, text) per piece."""
    prompt = encode_prompt(pair.tokenizer, messages)
    streams = {side: SideStream(pair, side, prompt, settings) for side in sides}
    while not should_stop() and not all(s.done for s in streams.values()):
        for side, stream in streams.items():
            if not stream.done:
                piece = stream.advance()
                if piece:
                    on_token(side, piece)
    return streams


@torch.no_grad()
def greedy_batch(pair: LoadedPair, prompts: list[list[int]], side: str, max_new_tokens: int) -> list[str]:
    """Greedy answers for many prompts at once (left padding), for evaluation."""
    tok, model = pair.tokenizer, pair.model
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=pair.device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=pair.device)
    with side_context(model, side):
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=pad, eos_token_id=sorted(stop_ids(tok, model)))
    return [tok.decode(row[width:], skip_special_tokens=True).strip() for row in out]
