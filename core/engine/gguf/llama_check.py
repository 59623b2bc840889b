"""A written GGUF file checked in llama.cpp itself (xllamacpp: llama.cpp in this process), against
transformers' base + adapter on the same prompts. Used by core/jobs/export_gguf.py after writing.

What is compared, per prompt (ids already chat-templated by transformers' tokenizer, as the
reference ran them):
- next-token agreement on the prompt's tokens: after each prefix, llama.cpp's most likely token
  and its top-5 set against transformers' logits at that position (top-1 %, top-5 overlap %), and
  the largest |Δ log-probability| over llama.cpp's top 5 (what llama.cpp reports are
  log-probabilities, not raw logits). A prompt's positions are thinned to MAX_POSITIONS, spread
  evenly, so the check stays a few hundred one-token evaluations at most;
- the greedy answer: the prompt's text as a chat message, llama.cpp applying the chat template
  stored in the file (`use_jinja`), NEW_TOKENS tokens at temperature 0, against transformers'
  greedy continuation decoded to text; and whether llama.cpp's templated prompt is as many tokens
  as transformers'.
An adapter-only file is checked on the base GGUF with the adapter applied at scale 1 (llama.cpp's
`--lora`).

llama.cpp runs as its server does for `lorastudio serve` (core/engine/serving.py builds the same
CommonParams), but without a listener anyone uses: handlers are called in-process, one thread,
one slot, the prompt cache on (each prefix extends the previous one). A vision-language model's
question with an image (`image_answers`) is asked in a child process instead, ended at a timeout.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

MAX_POSITIONS = 24          # next-token positions checked per prompt
NEW_TOKENS = 16             # greedy answer length (core/engine/fidelity.NEW_TOKENS)
TOP_K = 5

# The largest |Δ log-probability| of transformers' likeliest token that storing the weights in each
# type explains; beyond it, the check flags.
# (Measured on the trained demo, whose logits reach about ±49: q8_0 0.60, q4_k_m 1.87, q4_0 3.03, with
# its held-out exact match unchanged for q8_0 and q4_k_m: docs/benchmarks.md.)
MAX_LOGPROB_DIFF = {"f32": 0.01, "f16": 0.1, "bf16": 0.3, "q8_0": 1.0, "q6_k": 1.5, "q5_k_m": 2.0, "q5_0": 2.0,
                    "q4_k_m": 3.0, "q4_0": 4.0}
# The flag: transformers' likeliest token's log-probability moved by more than the type's tolerance,
# or a clear pick (top-1 ahead by more than that tolerance) changed at more than 5 % of such
# positions (a wrong tensor, name or permutation changes most of them). Agreement over all positions
# (near-ties included) is reported, not judged.
MIN_CLEAR_TOP1 = 0.95


# Token texts llama.cpp ends a generation at besides the file's EOS/EOT ids (its vocabulary loader
# marks them end-of-generation by name): transformers' reference answer is cut at them too.
END_OF_GENERATION = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>",
                     "<|end_of_text|>", "<｜end▁of▁sentence｜>", "<|return|>", "<|call|>", "<|END_OF_TURN_TOKEN|>")


def reference_answer(tokenizer, tokens: list[int]) -> str:
    """transformers' greedy continuation as llama.cpp would show it: up to the first token llama.cpp
    ends at (EOS, or an end-of-turn token by name), special tokens left out."""
    ends = {tokenizer.eos_token_id, *(i for t, i in tokenizer.get_vocab().items() if t in END_OF_GENERATION)}
    cut = next((k for k, t in enumerate(tokens) if t in ends), len(tokens))
    return tokenizer.decode(tokens[:cut], skip_special_tokens=True)


class LlamaCheckError(RuntimeError):
    """llama.cpp could not load the file (its reason, in words)."""


@dataclass
class PromptResult:
    positions: list[int] = field(default_factory=list)         # prefix lengths checked
    top: list[list[tuple[int, float]]] = field(default_factory=list)   # llama.cpp's top 5 (id, logprob) each
    answer: str = ""                                            # greedy chat answer
    prompt_tokens: int | None = None                            # llama.cpp's templated prompt length


class Llama:
    """One GGUF model (optionally with a GGUF LoRA at scale 1) in llama.cpp, in this process."""

    def __init__(self, model: Path, lora: Path | None = None, ctx: int = 512, threads: int = 1,
                 mmproj: Path | None = None, image_max_tokens: int = 0):
        import xllamacpp
        params = xllamacpp.CommonParams()
        params.model.path = str(model)
        if mmproj is not None:                          # a vision-language model's tower + projector (mtmd)
            params.mmproj.path = str(mmproj)
            if image_max_tokens:                        # a dynamic-resolution tower's budget (--image-max-tokens)
                params.image_max_tokens, params.image_min_tokens = int(image_max_tokens), 1
        params.n_ctx, params.n_parallel = int(ctx), 1
        params.hostnames, params.port = ["127.0.0.1"], 0
        params.ui, params.fit_params, params.verbosity = False, False, 0
        params.warmup = False
        params.use_jinja = True                         # the chat template stored in the file
        params.cache_prompt = True
        params.cpuparams.n_threads = params.cpuparams_batch.n_threads = int(threads)
        if lora is not None:
            params.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(str(lora), 1.0)]
        try:
            self.server = xllamacpp.Server(params)
        except (RuntimeError, ValueError) as exc:
            raise LlamaCheckError(f"llama.cpp could not load {Path(model).name}"
                                  f"{' with ' + Path(lora).name if lora else ''}"
                                  f"{' with ' + Path(mmproj).name if mmproj else ''}: {exc}") from None

    def top(self, ids: list[int], k: int = TOP_K) -> list[tuple[int, float]] | None:
        """llama.cpp's k most likely next tokens after `ids`, as (id, log-probability); None when
        llama.cpp does not say: its server holds back a token that is an incomplete UTF-8 sequence,
        with its probabilities, and asking for more tokens reports the next ones — that position is
        left out)."""
        answer = self.server.handle_completions({"prompt": list(ids), "n_predict": 1, "n_probs": k,
                                                 "temperature": 0, "ignore_eos": True, "cache_prompt": True})
        _raise_on_error(answer)
        logprobs = answer["choices"][0].get("logprobs") or {}
        if not logprobs.get("content"):
            return None
        return [(int(t["id"]), float(t["logprob"])) for t in logprobs["content"][0]["top_logprobs"]]

    def complete(self, ids: list[int], n: int = NEW_TOKENS) -> str:
        """The greedy continuation of `ids` (no chat template)."""
        answer = self.server.handle_completions({"prompt": list(ids), "n_predict": n, "temperature": 0,
                                                 "cache_prompt": False})
        _raise_on_error(answer)
        return answer["choices"][0].get("text") or ""

    def chat(self, text: str, n: int = NEW_TOKENS) -> tuple[str, int | None]:
        """(greedy answer, prompt tokens) for one user message, through the file's chat template."""
        answer = self.server.handle_chat_completions({"messages": [{"role": "user", "content": text}],
                                                      "max_tokens": n, "temperature": 0,
                                                      "cache_prompt": False})
        _raise_on_error(answer)
        usage = answer.get("usage") or {}
        return answer["choices"][0]["message"].get("content") or "", usage.get("prompt_tokens")

    def chat_image(self, text: str, image: Path, n: int = NEW_TOKENS) -> tuple[str, int | None]:
        """(greedy answer, prompt tokens, the image's included) for one user message showing `image`
        (an OpenAI image_url part, as a client sends it) through the file's chat template."""
        import base64
        import mimetypes
        kind = mimetypes.guess_type(str(image))[0] or "image/png"
        url = f"data:{kind};base64," + base64.b64encode(Path(image).read_bytes()).decode()
        answer = self.server.handle_chat_completions({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]}],
            "max_tokens": n, "temperature": 0, "cache_prompt": False})
        _raise_on_error(answer)
        usage = answer.get("usage") or {}
        return answer["choices"][0]["message"].get("content") or "", usage.get("prompt_tokens")

    def close(self) -> None:
        self.server = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


IMAGE_TIMEOUT_S = 600       # the most an image check may take, loading included (a hang ends there)
_RESULT = "llama-check-result "


def image_answers(model: Path, mmproj: Path, image: Path, prompt: str, n: int, threads: int = 1,
                  image_max_tokens: int = 0, ctx: int = 2048, timeout_s: float = IMAGE_TIMEOUT_S) -> dict:
    """`prompt` asked of llama.cpp with `image` and without it, both files loaded (Llama(mmproj=…)),
    in a child process that ends without closing its server (os._exit), at `timeout_s` at the latest
    (ended by this process, or by its own alarm if this one is gone): a server with an Idefics3 mmproj
    once hung the export in CI on closing, and nothing in this process could end that. Returns {"answer", "with_image",
    "without"} (the answer; prompt tokens with and without the image), or {"problem": why there is no
    answer, in words}; LlamaCheckError when the files do not load."""
    import json
    import tempfile
    from lorastudio.core.runtime.launcher import TOOL_TIMED_OUT, run_tool
    request = {"model": str(model), "mmproj": str(mmproj), "image": str(image), "prompt": prompt, "n": int(n),
               "threads": int(threads), "image_max_tokens": int(image_max_tokens), "ctx": int(ctx),
               "timeout_s": float(timeout_s)}
    with tempfile.TemporaryDirectory(prefix="lorastudio-image-check-") as folder:
        asked, log = Path(folder) / "request.json", Path(folder) / "check.log"
        asked.write_text(json.dumps(request), encoding="utf-8")
        code = run_tool([sys.executable, "-m", __name__, "--image", str(asked)], None, log, timeout_s=timeout_s)
        output = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
    if code == TOOL_TIMED_OUT:
        return {"problem": f"llama.cpp gave no answer with the image within {timeout_s:g} s (its process was ended)"}
    found = {}
    for line in output.splitlines():        # llama.cpp's own log shares the file: a result may follow its text
        if _RESULT in line:
            found.update(json.loads(line[line.index(_RESULT) + len(_RESULT):]))
    if "load_error" in found:
        raise LlamaCheckError(found["load_error"])
    if "refused" in found:
        return {"problem": f"both files load in llama.cpp, but it refused the request with the image: {found['refused']}"}
    if "answer" in found:
        return {key: found[key] for key in ("answer", "with_image", "without")}
    last = ([line for line in output.strip().splitlines() if _RESULT not in line] or ["no output"])[-1][-300:]
    if not found.get("loaded"):
        raise LlamaCheckError(f"llama.cpp ended (exit status {code}) while loading {Path(model).name} "
                              f"with {Path(mmproj).name}: {last}")
    return {"problem": f"both files load in llama.cpp, but it ended (exit status {code}) while "
                       f"answering with the image: {last}"}


def _answer_image(request: dict) -> None:      # runs in image_answers' child
    import json
    import os
    import signal
    if hasattr(signal, "alarm"):                # SIGALRM's default action ends the process (POSIX)
        signal.alarm(math.ceil(request["timeout_s"]) + 5)

    def say(**fields) -> None:
        print(_RESULT + json.dumps(fields), flush=True)
    try:
        llama = Llama(Path(request["model"]), ctx=request["ctx"], threads=request["threads"],
                      mmproj=Path(request["mmproj"]), image_max_tokens=request["image_max_tokens"])
    except LlamaCheckError as exc:
        say(load_error=str(exc))
        os._exit(0)
    say(loaded=True)
    try:
        answer, with_image = llama.chat_image(request["prompt"], Path(request["image"]), request["n"])
        _, without = llama.chat(request["prompt"])
        say(answer=answer, with_image=with_image, without=without)
    except LlamaCheckError as exc:
        say(refused=str(exc).removeprefix("llama.cpp refused the request: "))
    os._exit(0)                                 # the server is not closed: the process ends


def _raise_on_error(answer) -> None:
    if isinstance(answer, dict) and "error" in answer:
        err = answer["error"]
        raise LlamaCheckError(f"llama.cpp refused the request: {err.get('message', err) if isinstance(err, dict) else err}")


def default_threads() -> int:
    from lorastudio.core.engine.serving import default_threads as serving_threads
    return serving_threads()


# general.file_type (llama.cpp's LLAMA_FTYPE) -> our type name, for a base GGUF made elsewhere
FILE_TYPES = {0: "f32", 1: "f16", 2: "q4_0", 7: "q8_0", 8: "q5_0", 15: "q4_k_m", 17: "q5_k_m", 18: "q6_k", 32: "bf16"}


def file_type_name(path: Path) -> str | None:
    """The type a GGUF file says its weights are in (None if it does not say or we do not know it;
    other quantizations count as the loosest we know, q4_0)."""
    from gguf import GGUFReader
    field = GGUFReader(str(path)).get_field("general.file_type")
    if field is None:
        return None
    return FILE_TYPES.get(int(field.contents()), "q4_0")


def positions(n_tokens: int, most: int = MAX_POSITIONS) -> list[int]:
    """Prefix lengths 1..n_tokens to check, at most `most`, spread evenly, always the whole prompt."""
    if n_tokens <= most:
        return list(range(1, n_tokens + 1))
    step = n_tokens / most
    return sorted({max(1, min(n_tokens, round(n_tokens - i * step))) for i in range(most)})


def run_llama(model: Path, prompts: list[list[int]], texts: list[str] | None, lora: Path | None = None,
              progress: Callable[[int, int], None] | None = None, ctx: int = 512, threads: int = 1) -> list[PromptResult]:
    """Every prompt through llama.cpp: top 5 at its checked positions, and the greedy answer: to
    `texts[i]` as a chat message through the file's template, or (texts or texts[i] None: no template,
    or a prompt cut to its last tokens) continuing `ids`. `progress(done, total)` is called between prompts and may raise to stop."""
    results = []
    with Llama(model, lora, ctx=max(ctx, max((len(p) for p in prompts), default=0) + NEW_TOKENS + 8),
               threads=threads) as llama:
        for i, ids in enumerate(prompts):
            if progress is not None:
                progress(i, len(prompts))
            r = PromptResult(positions=positions(len(ids)))
            r.top = [llama.top(ids[:n]) for n in r.positions]
            if texts is not None and texts[i] is not None:
                r.answer, r.prompt_tokens = llama.chat(texts[i])
            else:
                r.answer = llama.complete(ids)
            results.append(r)
    return results


def compare(reference: list[dict], results: list[PromptResult], reference_answers: list[str] | None,
            ftype: str) -> dict:
    """The fidelity fields: transformers' logits (reference[i]["logits"], one row a position) against
    llama.cpp's top 5 at the checked positions."""
    import torch
    top1 = top5 = total = 0
    tolerance = MAX_LOGPROB_DIFF.get(ftype, 3.0)
    diffs, confident, confident_same = [], 0, 0
    for ref, res in zip(reference, results):
        logprobs = torch.log_softmax(ref["logits"].float(), dim=-1)
        for n, best in zip(res.positions, res.top):
            if best is None:
                continue
            row = logprobs[n - 1]
            hf_best = row.topk(TOP_K)
            hf_top = hf_best.indices.tolist()
            ids = [t for t, _ in best]
            top1 += int(ids[0] == hf_top[0]) if ids else 0
            top5 += len(set(ids) & set(hf_top))
            total += 1
            # what the file's rounding must not change: the likeliest token's log-probability, and the
            # pick where transformers' pick is clear (a margin beyond what rounding moves); near-ties
            # (most of a prompt's own tokens) may swap under any quantization without meaning harm
            found = dict(best)
            if hf_top[0] in found and math.isfinite(found[hf_top[0]]):
                diffs.append(abs(float(row[hf_top[0]]) - found[hf_top[0]]))
            margin = float(hf_best.values[0] - hf_best.values[1])
            if margin > tolerance:
                confident += 1
                confident_same += int(bool(ids) and ids[0] == hf_top[0])
    answers = [r.answer for r in results]
    greedy = (sum(_same_text(a, b) for a, b in zip(answers, reference_answers)) if reference_answers is not None else 0)
    top1_agree = top1 / max(1, total)
    top5_agree = top5 / max(1, total * TOP_K)
    clear_agree = confident_same / confident if confident else 1.0
    max_diff = max(diffs, default=0.0)
    flagged = clear_agree < MIN_CLEAR_TOP1 or max_diff > tolerance
    chats = [(r, ref) for r, ref in zip(results, reference) if r.prompt_tokens is not None]
    lengths = {"tokens_agree": sum(r.prompt_tokens == len(ref["logits"]) for r, ref in chats)} if chats else {}
    return {**lengths, "checked_by": "llama.cpp", "prompts": len(results), "positions": total,
            "top1_agree": top1_agree, "top5_agree": top5_agree, "argmax_agree": top1_agree,
            "clear_positions": confident, "clear_top1_agree": clear_agree,
            "max_abs_diff": max_diff, "mean_abs_diff": sum(diffs) / max(1, len(diffs)),
            "greedy_agree": greedy, "tolerance": tolerance, "flagged": flagged, "dtype": ftype,
            "answers": [{"llama_cpp": a, "transformers": b} for a, b in zip(answers, reference_answers or [])]}


def _same_text(a: str, b: str) -> bool:
    """Equal answers, but for an incomplete UTF-8 sequence at the end (llama.cpp holds it back) and
    surrounding space."""
    return a.rstrip("\ufffd").strip() == b.rstrip("\ufffd").strip()


def differences_in_words(f: dict) -> str:
    """What a flagged check found, in a sentence."""
    parts = []
    if f.get("clear_top1_agree", 1.0) < MIN_CLEAR_TOP1:
        parts.append(f"llama.cpp changes a clear next-token pick of transformers' at {1 - f['clear_top1_agree']:.0%} "
                     f"of {f['clear_positions']} positions where the pick was clear (all positions: "
                     f"{f['top1_agree']:.0%} the same)")
    if f["max_abs_diff"] > f["tolerance"]:
        parts.append(f"the likeliest token's log-probability differs by {f['max_abs_diff']:.3g} (more than "
                     f"{f['tolerance']:.3g}, what {f['dtype']} rounding explains)")
    return "; ".join(parts)


if __name__ == "__main__" and sys.argv[1:2] == ["--image"]:
    import json
    _answer_image(json.loads(Path(sys.argv[2]).read_text(encoding="utf-8")))
