"""The demo's held-out tickets answered in llama.cpp from exported GGUF files, scored as `lorastudio eval` scores.

python tests/bench/bench_demo_gguf.py RUN FILE.gguf [FILE.gguf ...] [--threads N] [--limit 48] [--transformers] [--out results.jsonl]

RUN is a trained run folder on which `lorastudio eval RUN` has written RUN/eval.json; each FILE is a
merged GGUF of that run (`lorastudio export-gguf RUN OUT.gguf --type q4_k_m`, `--type f16`, ...).
For every file, llama.cpp (xllamacpp, in this process: core/engine/serving.py's LlamaServer and
stream_side, as the Playground's llama.cpp engine runs it) answers the eval job's held-out prompts
greedily, and the answers are scored by the eval job's own `score` (core/engine/evaluate.py).

Kept the same as the eval job (core/engine/evaluate.py, core/engine/inference.py):
- the prompts: core/runs/heldout.heldout_prompts (the run's validation file, else its validation
  split), those with a reference answer, the first --limit (the eval job's limit, 48);
- the chat template: transformers' (inference.encode_prompt); llama.cpp is given those token ids,
  not its own template, so both engines see the same tokens;
- greedy decoding (temperature 0, top-k and min-p off), at most longest reference + 16 new tokens;
- the stops: end of turn (llama.cpp ends at the file's end-of-generation tokens) and, on a JSON task,
  as soon as the answer's score is settled (inference.json_answer_settled), the answer then cut
  after its first complete JSON object (inference.json_object_end) and stripped.
Printed per file: exact match and valid JSON next to transformers' base and base + adapter from
RUN/eval.json, how many of eval.json's sample answers llama.cpp repeats word for word, the time
taken, and the load average before and after (measure on a quiet machine: llama.cpp's threads
stall when another process takes their core). With --transformers, base + adapter also answers
every prompt here (the eval job's load_pair and greedy_batch, a minute or two on a CPU), and each
file's answers are compared with those one by one: identical, and right in one engine only.
llama.cpp's own log (warnings: a cancelled task per JSON answer stopped early) goes to --llama-log.

Goal (issue 32): the demo exported as q4_k_m within 5 points of transformers' base + adapter.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_tokenizer_as_eval(run: Path):
    """The tokenizer the eval job uses (inference.load_pair's choice: the adapter's, else the model's)."""
    from lorastudio.core.config import RunConfig
    from lorastudio.core.engine.model_loading import load_tokenizer
    from lorastudio.core.preflight import check_config
    from lorastudio.core.runs.export import adapter_source
    from lorastudio.core.runs.folders import CONFIG_FILE
    config = RunConfig.load(run / CONFIG_FILE)
    adapter = adapter_source(run, None)
    if (adapter / "tokenizer_config.json").is_file():
        return load_tokenizer(adapter, config.trust_remote_code)
    info, _ = check_config(config)
    return load_tokenizer(info.path, config.trust_remote_code)


def transformers_answers(run: Path, prompts: list[list[int]], max_new: int, json_answers: bool) -> list[str]:
    """base + adapter's greedy answers, as evaluate_run makes them (batches of GEN_BATCH)."""
    from lorastudio.core.engine.evaluate import GEN_BATCH
    from lorastudio.core.engine.inference import greedy_batch, load_pair
    pair = load_pair(run)
    answers: list[str] = []
    for i in range(0, len(prompts), GEN_BATCH):
        answers += greedy_batch(pair, prompts[i:i + GEN_BATCH], "adapter", max_new, json_answers)
    return answers


@contextlib.contextmanager
def stderr_to(path: Path):
    """File descriptor 2 (where llama.cpp logs) into `path` for a while."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def answer_all(path: Path, prompts: list[list[int]], max_new: int, json_answers: bool, threads: int,
               on_done=lambda i: None) -> tuple[list[str], int]:
    """llama.cpp's greedy answers to `prompts` (token ids) from the GGUF at `path`; (answers, tokens)."""
    from lorastudio.core.engine.inference import json_answer_settled, json_object_end
    from lorastudio.core.engine.serving import LlamaServer, completion_body, stream_side
    ctx = max(512, max(len(p) for p in prompts) + max_new + 8)
    llama = LlamaServer(path, [], ctx, 1, threads=threads)
    answers, tokens = [], 0
    try:
        for i, ids in enumerate(prompts):
            stop, text = threading.Event(), []

            def piece(t: str, text=text, stop=stop) -> None:
                text.append(t)
                if json_answers and json_answer_settled("".join(text)):
                    stop.set()          # as the eval job's JsonObjectDone: the score cannot change now
            body = completion_body(ids, {"max_new_tokens": max_new, "temperature": 0.0}, None, 0)
            got = stream_side(llama, body, piece, stop)
            tokens += got.tokens
            a = got.text
            if json_answers and json_object_end(a):
                a = a[:json_object_end(a)]
            answers.append(a.strip())
            on_done(i)
    finally:
        llama.close()
    return answers, tokens


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="the run folder (with eval.json from `lorastudio eval RUN`)")
    parser.add_argument("gguf", type=Path, nargs="+", help="merged GGUF files exported from RUN")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: the serve job's)")
    parser.add_argument("--limit", type=int, default=48, help="held-out prompts (the eval job's default, 48)")
    parser.add_argument("--transformers", action="store_true",
                        help="also answer every prompt with transformers' base + adapter and compare answer by answer")
    parser.add_argument("--llama-log", type=Path, default=Path(tempfile.gettempdir()) / "bench_demo_gguf.llama.log",
                        help="where llama.cpp's log goes")
    parser.add_argument("--out", type=Path, default=None, help="append one JSON line a file here")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from lorastudio.core.engine.evaluate import is_json_task, score
    from lorastudio.core.engine.inference import encode_prompt
    from lorastudio.core.engine.serving import default_threads
    from lorastudio.core.runs.heldout import heldout_prompts, read_eval

    run = args.run.resolve()
    ev = read_eval(run)
    if ev is None:
        print(f"{run}/eval.json is missing: run `lorastudio eval {run}` first", file=sys.stderr)
        return 2
    threads = args.threads or default_threads()
    tok = load_tokenizer_as_eval(run)
    chats = [p for p in heldout_prompts(run, limit=args.limit) if p["reference"] is not None][:args.limit]
    references = [p["reference"] for p in chats]
    prompts = [encode_prompt(tok, p["messages"]) for p in chats]
    longest = max((len(tok(r)["input_ids"]) for r in references), default=0)
    json_answers = is_json_task(references)
    max_new = longest + 16                       # as evaluate_run
    samples = ev.get("samples") or []
    same_prompts = all(s["prompt"] == c["messages"][-1]["content"] for s, c in zip(samples, chats))
    print(f"run {run}\n{len(prompts)} held-out prompts (eval.json: {ev['adapter'].get('prompts')}; "
          f"first {len(samples)} prompts {'the same' if same_prompts else 'DIFFERENT'}), "
          f"at most {max_new} new tokens, JSON task: {json_answers}, llama.cpp threads: {threads}")

    def pct(x) -> str:
        return "—" if x is None else f"{100 * x:.1f} %"
    rows = [("transformers base (eval.json)", ev["base"], None, None),
            ("transformers base + adapter (eval.json)", ev["adapter"], None, None)]
    reference_answers = None
    if args.transformers:
        started = time.time()
        reference_answers = transformers_answers(run, prompts, max_new, json_answers)
        print(f"  transformers base + adapter: {len(prompts)} prompts in {time.time() - started:.0f} s")
        rows.append(("transformers base + adapter (here)", score(reference_answers, references), None, None))
    for path in args.gguf:
        load0 = os.getloadavg()[0]
        started, cpu0 = time.time(), time.process_time()
        with stderr_to(args.llama_log):
            answers, tokens = answer_all(path.resolve(), prompts, max_new, json_answers, threads,
                                         lambda i: print(f"  {path.name}: {i + 1}/{len(prompts)}", end="\r", flush=True))
        wall, cpu = time.time() - started, time.process_time() - cpu0
        result = score(answers, references)
        repeats = sum(a == s["adapter"] for a, s in zip(answers, samples))
        load1 = os.getloadavg()[0]
        print(f"  {path.name}: {len(prompts)} prompts, {tokens} tokens in {wall:.0f} s wall, {cpu:.0f} s CPU; "
              f"load {load0:.2f} -> {load1:.2f}")
        versus = None
        if reference_answers is not None:
            one = [score([a], [r])["exact_match"] for a, r in zip(answers, references)]
            ref = [score([a], [r])["exact_match"] for a, r in zip(reference_answers, references)]
            versus = {"identical": sum(a == b for a, b in zip(answers, reference_answers)),
                      "right_here_only": sum(x > y for x, y in zip(one, ref)),
                      "right_in_transformers_only": sum(y > x for x, y in zip(one, ref))}
        rows.append((f"llama.cpp {path.name}", result, f"{repeats}/{len(samples)}", versus))
        if args.out:
            with open(args.out, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"run": str(run), "gguf": str(path), "size_mib": path.stat().st_size / 2**20,
                                     **result, "transformers_adapter": ev["adapter"], "transformers_base": ev["base"],
                                     "sample_answers_repeated": repeats, "versus_transformers": versus,
                                     "tokens": tokens, "wall_s": wall,
                                     "cpu_s": cpu, "threads": threads, "load": [load0, load1],
                                     "answers": answers}) + "\n")
    adapter_em = ev["adapter"]["exact_match"]
    head = "answers = transformers', right only here / only there" if reference_answers is not None else ""
    print(f"\n{'':42} {'exact match':>12} {'valid JSON':>11} {'Δ vs adapter':>13} {'eval samples repeated':>22}  {head}")
    for name, r, repeats, versus in rows:
        delta = "" if repeats is None else f"{100 * (r['exact_match'] - adapter_em):+.1f} pt"
        vs = "" if versus is None else (f"{versus['identical']}/{len(prompts)}, {versus['right_here_only']} / "
                                        f"{versus['right_in_transformers_only']}")
        print(f"{name:42} {pct(r['exact_match']):>12} {pct(r.get('json_valid')):>11} {delta:>13} {repeats or '':>22}  {vs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
