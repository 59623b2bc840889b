"""`python -m lorastudio.core.jobs.merge JOB_DIR`: merge an adapter into its base and save it.

Reads JOB_DIR/job.yaml (written by core/runs/merge_plan.py), journals to JOB_DIR/events.jsonl:
  phase (fraction 0→1) · fidelity · error · end{status, output}
The base is loaded unquantized in the chosen dtype even when training used 4-bit or 8-bit: a
merge into 4-bit weights would round the update away. Reference logits come from base + adapter
(unmerged); the merged model is saved into a hidden folder beside OUT, loaded back from disk, and
compared; only then is the folder renamed to OUT. Its life is the runtime's (core/runtime/worker.py):
SIGTERM stops it between phases; stopped or failed, the hidden folder is removed, so no OUT is left.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from lorastudio.core.atomic_files import partial_dir, replace_folder, tidy
from lorastudio.core.disk import check_room, writing
from lorastudio.core.runs.locks import acquire, output_lock_path
from lorastudio.core.runs.merge_plan import disk_hint
from lorastudio.core.runtime.worker import Job, job_main

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
# Largest |Δlogit| / max(1, max |logit|) that rounding to the dtype explains (a merge adds the
# update to W and rounds once; base + adapter keeps them apart). Beyond it, the check flags.
RELATIVE_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 5e-2}
MAX_PROMPT_TOKENS, NEW_TOKENS = 64, 16
OOM_HINT = "merge on the CPU (device cpu): it uses system memory instead of the GPU's"


class Merge:
    def __init__(self, job: Job):
        self.job = job
        self.tmp: Path | None = None

    def phase(self, name: str, fraction: float, message: str) -> None:
        self.job.progress(name, fraction, message)          # raises Stopped once a stop was asked for
        _test_pause(name, self.job.should_stop)

    def run(self) -> str:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        spec = self.job.spec
        dtype = getattr(torch, DTYPES[spec["dtype"]])
        device = spec["device"] if spec["device"] != "auto" else ("cuda:0" if torch.cuda.is_available() else "cpu")
        load = dict(dtype=dtype, device_map={"": device}, use_safetensors=True)
        self.phase("loading", 0.05, f"Loading the base model unquantized ({spec['dtype']}, {device})")
        base = AutoModelForCausalLM.from_pretrained(spec["base"], **load)
        tok_dir = spec["adapter"] if Path(spec["adapter"], "tokenizer_config.json").is_file() else spec["base"]
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        self.phase("adapter", 0.30, "Loading the adapter")
        model = PeftModel.from_pretrained(base, spec["adapter"])
        model.eval()
        self.phase("reference", 0.40, f"Running {len(spec['prompts'])} prompts through base + adapter")
        prompts = encode_prompts(tokenizer, spec["prompts"])
        reference = run_prompts(model, tokenizer, prompts, device)
        self.phase("merging", 0.50, "Merging the adapter into the weights")
        merged = model.merge_and_unload()
        self.phase("saving", 0.60, f"Saving safetensors shards (at most {spec['max_shard_size']} each)")
        out = Path(spec["out"])
        out.parent.mkdir(parents=True, exist_ok=True)
        need, hint = int(spec.get("estimate") or 0), disk_hint(spec["dtype"])
        check_room(out.parent, need, "the merged model", hint)
        self.tmp = partial_dir(out)         # `.OUT.PID.XXXX.partial`: tidied by the next command if we are killed
        with writing("the merged model", out.parent, need, hint):
            merged.save_pretrained(self.tmp, max_shard_size=spec["max_shard_size"])
            tokenizer.save_pretrained(self.tmp)
        del merged, model, base
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        self.phase("checking", 0.80, "Loading the merged model back and comparing")
        reloaded = AutoModelForCausalLM.from_pretrained(self.tmp, **load).eval()
        result = run_prompts(reloaded, tokenizer, prompts, device)
        self.job.emit("fidelity", **compare(reference, result, spec["dtype"]))
        del reloaded
        self.phase("finishing", 0.95, f"Moving the merged model into {out}")
        with writing("the merged model", out.parent, need, hint):
            replace_folder(self.tmp, out)           # swapped with an --overwrite's old OUT in one step
        self.tmp = None
        return str(out)

    def cleanup(self) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


def encode_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    encoded = []
    for text in prompts:
        if getattr(tokenizer, "chat_template", None):
            ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=True,
                                                add_generation_prompt=True, return_dict=True)["input_ids"]
        else:
            ids = tokenizer(text)["input_ids"]
        encoded.append(list(ids)[-MAX_PROMPT_TOKENS:])
    return encoded


def run_prompts(model, tokenizer, prompts: list[list[int]], device: str) -> list[dict]:
    import torch
    out = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad():
        for ids in prompts:
            x = torch.tensor([ids], device=device)
            logits = model(input_ids=x).logits[0].float().cpu()
            gen = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=NEW_TOKENS,
                                 do_sample=False, pad_token_id=pad)
            out.append({"logits": logits, "greedy": gen[0, len(ids):].tolist()})
    return out


def compare(reference: list[dict], merged: list[dict], dtype: str) -> dict:
    diffs = [(r["logits"] - m["logits"]).abs() for r, m in zip(reference, merged)]
    max_diff = max(float(d.max()) for d in diffs)
    mean_diff = sum(float(d.sum()) for d in diffs) / sum(d.numel() for d in diffs)
    scale = max(1.0, max(float(r["logits"].abs().max()) for r in reference))
    tolerance = RELATIVE_TOLERANCE[dtype] * scale
    agree = sum(r["greedy"] == m["greedy"] for r, m in zip(reference, merged))
    return {"prompts": len(reference), "max_abs_diff": max_diff, "mean_abs_diff": mean_diff,
            "greedy_agree": agree, "flagged": max_diff > tolerance, "tolerance": tolerance, "dtype": dtype}


def _test_pause(phase: str, cancelled) -> None:
    # Tests set LORASTUDIO_TEST_PAUSE=phase:seconds to kill or cancel a merge at a known point.
    spec = os.environ.get("LORASTUDIO_TEST_PAUSE", "")
    if spec.partition(":")[0] == phase:
        until = time.time() + float(spec.partition(":")[2] or 30)
        while time.time() < until and not cancelled():
            time.sleep(0.05)


def merge(job: Job) -> dict:
    job.oom_hint = lambda: OOM_HINT
    out = Path(job.spec["out"])
    lock = acquire(out, "merging into it", output_lock_path(out))    # the starter's, handed down (or FolderBusy)
    tidy(out.parent)
    work = Merge(job)
    try:
        output = work.run()
        return {"status": "completed", "output": output}     # done, even if a stop came in its last moment
    finally:
        work.cleanup()          # stopped or failed: the hidden folder goes, nothing is left behind
        lock.release()


def main(argv: list[str] | None = None) -> int:
    return job_main("merge", merge, argv)


if __name__ == "__main__":
    sys.exit(main())
