"""`python -m lorastudio.core.jobs.merge JOB_DIR`: merge an adapter into its base and save it.

Reads JOB_DIR/job.yaml (written by core/plans/merge.py), journals to JOB_DIR/events.jsonl:
  phase (fraction 0→1) · fidelity · error · end{status, output}
The base is loaded unquantized in the chosen dtype even when training used 4-bit or 8-bit: a
merge into 4-bit weights would round the update away. Reference logits come from base + adapter
(unmerged); the merged model is saved into a hidden folder beside OUT, loaded back from disk, and
compared; only then is the folder renamed to OUT. Its life is the runtime's (core/runtime/worker.py):
SIGTERM stops it between phases; stopped or failed, the hidden folder is removed, so no OUT is left.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from lorastudio.core.atomic_files import partial_dir, replace_folder, tidy
from lorastudio.core.disk import check_room, writing
from lorastudio.core.runs.locks import acquire, output_lock_path
from lorastudio.core.runs.output_paths import mark_output
from lorastudio.core.plans.merge import disk_hint
from lorastudio.core.engine.fidelity import compare, encode_prompts, run_prompts
from lorastudio.core.engine.vision.loading import auto_class_and_processor
from lorastudio.core.runtime.faults import pause_at
from lorastudio.core.runtime.worker import Job, job_main

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
OOM_HINT = "merge on the CPU (device cpu): it uses system memory instead of the GPU's"


class Merge:
    def __init__(self, job: Job):
        self.job = job
        self.tmp: Path | None = None

    def phase(self, name: str, fraction: float, message: str) -> None:
        self.job.progress(name, fraction, message)          # raises Stopped once a stop was asked for
        pause_at(name, self.job.should_stop)

    def run(self) -> str:
        import torch
        from peft import PeftModel
        from transformers import AutoTokenizer

        spec = self.job.spec
        dtype = getattr(torch, DTYPES[spec["dtype"]])
        device = spec["device"] if spec["device"] != "auto" else ("cuda:0" if torch.cuda.is_available() else "cpu")
        load = dict(dtype=dtype, device_map={"": device}, use_safetensors=True)
        self.phase("loading", 0.05, f"Loading the base model unquantized ({spec['dtype']}, {device})")
        auto, processor = auto_class_and_processor(spec["base"])    # a vision-language model: its own class
        base = auto.from_pretrained(spec["base"], **load)
        tok_dir = spec["adapter"] if Path(spec["adapter"], "tokenizer_config.json").is_file() else spec["base"]
        tokenizer = processor.tokenizer if processor is not None else AutoTokenizer.from_pretrained(tok_dir)
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
            (processor or tokenizer).save_pretrained(self.tmp)     # a processor saves its tokenizer too
            mark_output(self.tmp, "a merged model", spec["run_dir"])   # what a later --overwrite may replace
        del merged, model, base
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        self.phase("checking", 0.80, "Loading the merged model back and comparing")
        reloaded = auto.from_pretrained(self.tmp, **load).eval()
        result = run_prompts(reloaded, tokenizer, prompts, device)
        self.job.emit("fidelity", **compare(reference, result, spec["dtype"]))
        del reloaded
        self.phase("finishing", 0.95, f"Moving the merged model into {out}")
        if spec.get("replaces"):
            self.job.log(spec["replaces"])
        with writing("the merged model", out.parent, need, hint):
            replace_folder(self.tmp, out)           # swapped with an --overwrite's old OUT in one step
        self.tmp = None
        return str(out)

    def cleanup(self) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


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
