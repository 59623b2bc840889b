"""`python -m lorastudio.core.jobs.export_gguf JOB_DIR`: a run as a GGUF file for llama.cpp / Ollama.

Reads JOB_DIR/job.yaml (written by core/plans/export_gguf.py), journals to JOB_DIR/events.jsonl:
  phase (fraction 0→1) · fidelity · error · end{status, output, modelfile, size}
Merged model: base (unquantized) + adapter give the reference logits; the merged weights are
written tensor by tensor (core/engine/gguf/export_gguf.py) into a hidden folder beside OUT; the file is
then read back by code we did not write — gguf-py's reader for its names and metadata, and
transformers' GGUF loader for the model and the tokenizer — and its logits and greedy answers
compared with the reference. Adapter only: the GGUF LoRA is read back, its A/B compared with
PEFT's, and base + (the file's B·A) compared with base + adapter on the same prompts. Only then
are the file, its Modelfile and README moved into place. Stopped or failed, the hidden folder
goes: nothing is left half-written.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from lorastudio.core.atomic_files import partial_dir
from lorastudio.core.disk import writing
from lorastudio.core.engine.gguf import export_gguf as gguf_export
from lorastudio.core.formatting import format_bytes
from lorastudio.core.engine.fidelity import compare, encode_prompts, run_prompts
from lorastudio.core.runtime.faults import pause_at
from lorastudio.core.models.gguf_cache import FP32_MAX_PARAMS
from lorastudio.core.models.gguf_vocab import read_vocab, tokenizer_folder
from lorastudio.core.runs.gguf_modelfile import modelfile, readme
from lorastudio.core.plans.export_gguf import side_files
from lorastudio.core.runtime.worker import Job, Stopped, job_main

# Largest |Δlogit| / max(1, max |logit|) that storing the weights in each type explains.
RELATIVE_TOLERANCE = {"f32": 1e-4, "f16": 1e-2, "bf16": 5e-2, "q8_0": 0.1, "q5_0": 0.25, "q4_0": 0.5}


class Export:
    def __init__(self, job: Job):
        self.job, self.spec = job, job.spec
        self.tmp: Path | None = None
        self.vocab_facts: dict = {}         # chat template and end-of-turn text, for the Modelfile

    def phase(self, name: str, fraction: float, message: str) -> None:
        self.job.progress(name, fraction, message)          # raises Stopped once a stop was asked for
        pause_at(name, self.job.should_stop)

    def on_tensor(self, i: int, n: int, name: str) -> None:
        if self.job.should_stop():
            raise Stopped()
        if i % max(1, n // 20) == 0:
            self.phase("writing", 0.45 + 0.3 * i / n, f"Writing tensor {i + 1} of {n} ({name})")

    def run(self) -> dict:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        spec = self.spec
        config = json.loads(Path(spec["base"], "config.json").read_text(encoding="utf-8"))
        # fp32 up to 2 B parameters (exact), bf16 beyond, as the GGUF import does
        dtype = torch.float32 if spec.get("parameters", 0) <= FP32_MAX_PARAMS else torch.bfloat16
        self.phase("loading", 0.05, "Loading the base model unquantized on the CPU")
        base = AutoModelForCausalLM.from_pretrained(spec["base"], dtype=dtype, device_map={"": "cpu"},
                                                    use_safetensors=True)
        tok_dir = tokenizer_folder(Path(spec["adapter"]), Path(spec["base"]))
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        self.phase("adapter", 0.2, "Loading the adapter")
        model = PeftModel.from_pretrained(base, spec["adapter"]).eval()
        self.phase("reference", 0.3, f"Running {len(spec['prompts'])} prompts through base + adapter")
        prompts = encode_prompts(tokenizer, spec["prompts"])
        reference = run_prompts(model, tokenizer, prompts, "cpu")
        out = Path(spec["out"])
        out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = partial_dir(out)         # `.OUT.PID.XXXX.partial`: tidied by the next command if we are killed
        written = self.tmp / "model.gguf"
        with writing("the GGUF file", out.parent, spec.get("estimate")):     # a full disk, in words
            if spec["adapter_only"]:
                fidelity = self.adapter_only(model, config, written, prompts, reference, tokenizer)
            else:
                fidelity = self.merged(model, config, written, prompts, reference, tokenizer, tok_dir)
        self.job.emit("fidelity", **fidelity)
        self.phase("finishing", 0.95, f"Moving the file into {out}")
        return self.finish(written, out, fidelity, self.vocab_facts)

    # ---- merged model ---------------------------------------------------------------------
    def merged(self, model, config, written, prompts, reference, tokenizer, tok_dir) -> dict:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        spec = self.spec
        vocab = read_vocab(tok_dir, int(config["vocab_size"]), (Path(spec["base"]),), spec.get("known_pre"), config)
        self.vocab_facts = {"template": vocab.chat_template, "eot": vocab.eot_text}
        self.phase("merging", 0.4, "Merging the adapter into the weights")
        merged = model.merge_and_unload()
        self.phase("writing", 0.45, f"Writing {spec['type']} GGUF")
        gguf_export.write_model(written, merged.state_dict(), config, vocab, spec["name"], spec["type"],
                                self.on_tensor)
        del merged, model
        self.phase("checking", 0.8, "Reading the file back with gguf-py and transformers' GGUF loader")
        checks = check_file(written, vocab)
        back = AutoModelForCausalLM.from_pretrained(str(self.tmp), gguf_file=written.name, dtype=torch.float32).eval()
        result = run_prompts(back, tokenizer, prompts, "cpu")
        gguf_tok = AutoTokenizer.from_pretrained(str(self.tmp), gguf_file=written.name)
        texts = [tokenizer.decode(ids) for ids in prompts]
        tokens_agree = sum(tokenizer(t, add_special_tokens=False)["input_ids"] ==
                           gguf_tok(t, add_special_tokens=False)["input_ids"] for t in texts)
        return {**self.compare(reference, result), "tokens_agree": tokens_agree, **checks}

    # ---- adapter only ---------------------------------------------------------------------
    def adapter_only(self, model, config, written, prompts, reference, tokenizer) -> dict:
        import torch
        spec = self.spec
        self.vocab_facts = {"template": _template(spec), "eot": None}
        self.phase("writing", 0.45, f"Writing the LoRA adapter as {spec['type']} GGUF")
        gguf_export.write_adapter(written, Path(spec["adapter"]), config, spec["name"], spec["type"], self.on_tensor)
        self.phase("checking", 0.8, "Reading the adapter back and applying it to the base")
        adapter_config, peft_tensors = gguf_export.read_adapter(Path(spec["adapter"]))
        alpha, pairs = gguf_export.read_lora_gguf(written, config)
        tensor_diff = 0.0
        for module, (a_key, b_key) in gguf_export.lora_pairs(peft_tensors).items():
            a, b = pairs[module]
            tensor_diff = max(tensor_diff, float(abs(a - peft_tensors[a_key]).max()),
                              float(abs(b - peft_tensors[b_key]).max()))
        base = model.unload()
        modules = dict(base.named_modules())
        r = int(adapter_config["r"])
        with torch.no_grad():
            for module, (a, b) in pairs.items():
                weight = modules[module].weight
                weight += (alpha / r) * (torch.from_numpy(b) @ torch.from_numpy(a)).to(weight.dtype)
        result = run_prompts(base, tokenizer, prompts, "cpu")
        return {**self.compare(reference, result), "tensors": 2 * len(pairs), "tensor_max_abs_diff": tensor_diff}

    def compare(self, reference, result) -> dict:
        fidelity = compare(reference, result, "fp32")
        same = sum(int((r["logits"].argmax(-1) == m["logits"].argmax(-1)).sum()) for r, m in zip(reference, result))
        fidelity["argmax_agree"] = same / sum(r["logits"].shape[0] for r in reference)   # next-token picks
        scale = max(1.0, max(float(r["logits"].abs().max()) for r in reference))
        tolerance = RELATIVE_TOLERANCE[self.spec["type"]] * scale
        return {**fidelity, "tolerance": tolerance, "flagged": fidelity["max_abs_diff"] > tolerance,
                "dtype": self.spec["type"]}

    # ---- into place -----------------------------------------------------------------------
    def finish(self, written: Path, out: Path, fidelity: dict, facts: dict) -> dict:
        spec = self.spec
        size = written.stat().st_size
        modelfile_path, readme_path = side_files(out)
        if spec["adapter_only"]:
            text, mf = modelfile(spec.get("base_gguf") or "PATH/TO/BASE-MODEL.gguf", facts["template"], facts["eot"],
                                 spec.get("system"), adapter=f"./{out.name}")
        else:
            text, mf = modelfile(f"./{out.name}", facts["template"], facts["eot"], spec.get("system"))
        (self.tmp / "Modelfile").write_text(text, encoding="utf-8")
        (self.tmp / "README.md").write_text(readme(out.name, modelfile_path.name, spec["name"], spec["type"],
                                                   format_bytes(size), spec["adapter_only"], spec.get("base_gguf"),
                                                   fidelity, mf), encoding="utf-8")
        os.replace(self.tmp / "Modelfile", modelfile_path)
        os.replace(self.tmp / "README.md", readme_path)
        os.replace(written, out)
        return {"status": "completed", "output": str(out), "modelfile": str(modelfile_path), "size": size,
                "template": mf["family"], "stops": mf["stops"]}

    def cleanup(self) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


def check_file(path: Path, vocab) -> dict:
    """What gguf-py's reader finds in the file: tensor count, chat template and end-of-turn id."""
    from gguf import GGUFReader
    reader = GGUFReader(str(path))

    def field(key):
        f = reader.get_field(key)
        return f.contents() if f is not None else None
    template_ok = field("tokenizer.chat_template") == vocab.chat_template
    eot_ok = field("tokenizer.ggml.eot_token_id") == vocab.eot
    if not (template_ok and eot_ok):
        raise RuntimeError(f"the written file's metadata does not read back: chat template "
                           f"{'ok' if template_ok else 'differs'}, end-of-turn id {field('tokenizer.ggml.eot_token_id')}"
                           f" (expected {vocab.eot})")
    return {"tensors": len(reader.tensors), "eot_token": vocab.eot_text}


def _template(spec: dict) -> str | None:
    from lorastudio.core.models.gguf_vocab import chat_template
    return chat_template(Path(spec["adapter"]), Path(spec["base"]))


def export_gguf(job: Job) -> dict:
    work = Export(job)
    try:
        return work.run()
    finally:
        work.cleanup()          # stopped or failed: the hidden folder goes, nothing is left behind


def main(argv: list[str] | None = None) -> int:
    return job_main("export_gguf", export_gguf, argv)


if __name__ == "__main__":
    sys.exit(main())
