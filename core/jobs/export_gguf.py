"""`python -m lorastudio.core.jobs.export_gguf JOB_DIR`: a run as a GGUF file for llama.cpp / Ollama.

Reads JOB_DIR/job.yaml (written by core/plans/export_gguf.py), journals to JOB_DIR/events.jsonl:
  phase (fraction 0→1) · fidelity · error · end{status, output, modelfile, size}
Merged model: base (unquantized) + adapter give the reference logits; the merged weights are
written tensor by tensor (core/engine/gguf/export_gguf.py) into a hidden folder beside OUT; the file is
then read back by code we did not write — gguf-py's reader for its metadata (chat template,
end-of-turn id), and llama.cpp itself (xllamacpp, in this process: core/engine/gguf/llama_check.py)
for next-token agreement (top-1, top-5) on the prompts' tokens and greedy answers through the chat
template stored in the file. Adapter only: the GGUF LoRA is read back with gguf-py, its A/B compared
with PEFT's, and llama.cpp loads it on the base GGUF (the imported source, else a temporary f16 one
written here) for the same comparison. Only then are the file, its Modelfile and README moved into
place. Stopped or failed, the hidden folder goes: nothing is left half-written.
A vision-language model (issue 31) loads with its processor; llama.cpp's converter writes its
language model and, beside it, its mmproj file (vision tower + projector); the language model is
checked on the text prompts as above, then both files are loaded together and answer with an image
(core/engine/gguf/vision_gguf.py).
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
from lorastudio.core.engine.fidelity import MAX_PROMPT_TOKENS, encode_prompts, run_prompts
from lorastudio.core.engine.gguf import llama_check
from lorastudio.core.runtime.faults import pause_at
from lorastudio.core.models.gguf_arch import ARCHITECTURES, converter_dir, uses_converter
from lorastudio.core.models.gguf_cache import FP32_MAX_PARAMS
from lorastudio.core.models.gguf_vocab import read_vocab, tokenizer_folder
from lorastudio.core.runs.gguf_modelfile import modelfile, readme
from lorastudio.core.plans.export_gguf import side_files
from lorastudio.core.runtime.worker import Job, Stopped, job_main


class Export:
    def __init__(self, job: Job):
        self.job, self.spec = job, job.spec
        self.tmp: Path | None = None
        self.vocab_facts: dict = {}         # chat template and end-of-turn text, for the Modelfile
        self.processor = None               # a vision-language model's
        self.image_reference: str | None = None
        self.image_tokens = 0               # how many tokens the processor made of the check's image

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
        auto = AutoModelForCausalLM
        if spec.get("mmproj"):              # a vision-language model: its own class, with its processor
            from lorastudio.core.engine.vision.loading import auto_class_and_processor
            auto, self.processor = auto_class_and_processor(spec["base"])
        base = auto.from_pretrained(spec["base"], dtype=dtype, device_map={"": "cpu"}, use_safetensors=True)
        tok_dir = tokenizer_folder(Path(spec["adapter"]), Path(spec["base"]))
        tokenizer = self.processor.tokenizer if self.processor is not None else AutoTokenizer.from_pretrained(tok_dir)
        self.phase("adapter", 0.2, "Loading the adapter")
        model = PeftModel.from_pretrained(base, spec["adapter"]).eval()
        self.phase("reference", 0.3, f"Running {len(spec['prompts'])} prompts through base + adapter")
        prompts = encode_prompts(tokenizer, spec["prompts"])
        reference = run_prompts(model, tokenizer, prompts, "cpu")
        out = Path(spec["out"])
        out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = partial_dir(out)         # `.OUT.PID.XXXX.partial`: tidied by the next command if we are killed
        written = self.tmp / "model.gguf"
        if self.processor is not None:
            self.image_reference = self.reference_image(model)
        with writing("the GGUF file", out.parent, spec.get("estimate")):     # a full disk, in words
            if spec["adapter_only"]:
                fidelity = self.adapter_only(model, config, written, prompts, reference, tokenizer, tok_dir)
            else:
                fidelity = self.merged(model, config, written, prompts, reference, tokenizer, tok_dir)
        self.job.emit("fidelity", **fidelity)
        self.phase("finishing", 0.95, f"Moving the file into {out}")
        return self.finish(written, out, fidelity, self.vocab_facts)

    # ---- merged model ---------------------------------------------------------------------
    def merged(self, model, config, written, prompts, reference, tokenizer, tok_dir) -> dict:
        spec = self.spec
        if spec.get("converter") or uses_converter(config):
            return self.converted(model, config, written, prompts, reference, tokenizer, tok_dir)
        vocab = read_vocab(tok_dir, int(config["vocab_size"]), (Path(spec["base"]),), spec.get("known_pre"), config)
        self.vocab_facts = {"template": vocab.chat_template, "eot": vocab.eot_text}
        self.phase("merging", 0.4, "Merging the adapter into the weights")
        merged = model.merge_and_unload()
        self.phase("writing", 0.45, f"Writing {spec['type']} GGUF")
        gguf_export.write_model(written, merged.state_dict(), config, vocab, spec["name"], spec["type"],
                                self.on_tensor)
        del merged, model
        self.phase("checking", 0.8, "Reading the file's metadata back with gguf-py")
        checks = check_file(written, vocab)
        fidelity = self.llama_check(written, None, prompts, reference, tokenizer, spec["type"])
        return {**fidelity, **checks}

    def converted(self, model, config, written, prompts, reference, tokenizer, tok_dir) -> dict:
        """A family our writer does not write: the merged model saved as an HF folder in the hidden
        folder, converted by llama.cpp's own converter in its own interpreter (its `gguf` is not
        ours: core/engine/gguf/hf_converter.py), then checked in llama.cpp like any export."""
        from lorastudio.core.engine.gguf import hf_converter
        from lorastudio.core.runs.export import GgufExportError
        from lorastudio.core.runtime.launcher import run_tool
        spec = self.spec
        folder = converter_dir()
        if folder is None:
            raise GgufExportError("llama.cpp's converter is not installed", "the export's checks should have said so")
        template = _template(spec)
        self.phase("merging", 0.4, "Merging the adapter into the weights")
        merged = model.merge_and_unload()
        self.phase("writing", 0.45, "Saving the merged model for llama.cpp's converter")
        hf = hf_converter.merged_folder(merged, Path(tok_dir), self.tmp / "merged", template)
        del merged, model
        self.phase("writing", 0.55, f"Converting with llama.cpp's converter ({spec['type']})")
        argv, env = hf_converter.command(hf, written, spec["type"], _pre_name(Path(tok_dir)), folder)
        log = self.job.job_dir / "converter.log"
        code = run_tool(argv, env, log, self.job.should_stop)
        if self.job.should_stop():
            raise Stopped()
        if code != 0 or not written.is_file():
            raise GgufExportError(f"llama.cpp's converter failed (exit code {code})",
                                  f"its output is in {log}; export the adapter alone (--adapter-only) meanwhile")
        mmproj = None
        if spec.get("mmproj"):
            self.processor.save_pretrained(hf)      # the image processor's settings go into the mmproj
            mmproj = self.tmp / "mmproj.gguf"
            kind = "f32" if spec["type"] == "f32" else "f16"      # as llama.cpp ships its mmproj files
            self.phase("writing", 0.7, f"Converting the vision tower and projector (mmproj, {kind})")
            argv, env = hf_converter.command(hf, mmproj, kind, _pre_name(Path(tok_dir)), folder, mmproj=True)
            code = run_tool(argv, env, log, self.job.should_stop)
            if self.job.should_stop():
                raise Stopped()
            if code != 0 or not mmproj.is_file():
                raise GgufExportError(f"llama.cpp's converter failed on the vision tower and projector (mmproj, "
                                      f"exit code {code})", f"its output is in {log}")
        shutil.rmtree(hf, ignore_errors=True)
        self.vocab_facts = file_vocab_facts(written)
        self.phase("checking", 0.8, "Checking the converted file in llama.cpp")
        fidelity = self.llama_check(written, None, prompts, reference, tokenizer, spec["type"])
        fidelity["tensors"] = self.vocab_facts.pop("tensors")
        if mmproj is not None:
            fidelity.update(self.image_check(written, mmproj))
        return fidelity

    # ---- a vision-language model: the image ---------------------------------------------
    def check_image_file(self) -> Path:
        from lorastudio.core.engine.gguf.vision_gguf import drawn_image
        image = self.spec.get("image")
        return Path(image) if image and Path(image).is_file() else drawn_image(self.tmp)

    def reference_image(self, model) -> str:
        from lorastudio.core.engine.gguf.vision_gguf import CHECK_PROMPT, reference_image_answer
        self.phase("reference", 0.35, "Answering about an image with base + adapter")
        answer, self.image_tokens = reference_image_answer(model, self.processor, self.check_image_file(),
                                                           self.spec.get("image_prompt") or CHECK_PROMPT,
                                                           max_pixels=int(self.spec.get("image_max_pixels") or 0),
                                                           sized=self.tmp / "check-image-sized.png")
        return answer

    def image_check(self, written: Path, mmproj: Path) -> dict:
        from lorastudio.core.engine.gguf import vision_gguf
        self.phase("checking", 0.93, "Loading the model and its mmproj in llama.cpp and asking about an image")
        config = json.loads(Path(self.spec["base"], "config.json").read_text(encoding="utf-8"))
        budget = self.image_tokens if config.get("model_type") in vision_gguf.DYNAMIC_RESOLUTION else 0
        found = vision_gguf.image_check(written, mmproj, self.tmp / "check-image-sized.png",
                                        self.spec.get("image_prompt") or vision_gguf.CHECK_PROMPT,
                                        self.image_reference or "", threads=llama_check.default_threads(),
                                        image_max_tokens=budget, model_type=config.get("model_type", ""))
        return {**found, "mmproj_tensors": vision_gguf.mmproj_tensors(mmproj)}

    # ---- adapter only ---------------------------------------------------------------------
    def adapter_only(self, model, config, written, prompts, reference, tokenizer, tok_dir) -> dict:
        spec = self.spec
        self.vocab_facts = {"template": _template(spec), "eot": None}
        self.phase("writing", 0.45, f"Writing the LoRA adapter as {spec['type']} GGUF")
        gguf_export.write_adapter(written, Path(spec["adapter"]), config, spec["name"], spec["type"], self.on_tensor)
        self.phase("checking", 0.7, "Reading the adapter back with gguf-py")
        _, peft_tensors = gguf_export.read_adapter(Path(spec["adapter"]))
        count, tensor_diff = gguf_export.adapter_tensor_diff(written, peft_tensors, config, spec["type"])
        base_gguf = spec.get("base_gguf")
        ftype = "f16" if spec["type"] == "f32" else spec["type"]
        if not (base_gguf and Path(base_gguf).is_file()) and config.get("model_type") not in ARCHITECTURES:
            # a family whose base llama.cpp's converter writes (not wired into this job yet): the tensors
            # read back are the check; llama.cpp is not asked
            return {"checked_by": "gguf-py", "prompts": 0, "max_abs_diff": tensor_diff, "mean_abs_diff": 0.0,
                    "greedy_agree": 0, "tolerance": 1e-2, "flagged": tensor_diff > 1e-2, "dtype": ftype,
                    "tensors": count, "tensor_max_abs_diff": tensor_diff}
        if not (base_gguf and Path(base_gguf).is_file()):
            # no GGUF of the base to hand: a temporary f16 one, written by our writer, in the hidden folder
            self.phase("checking", 0.72, "Writing a temporary f16 base GGUF for the check in llama.cpp")
            base_gguf = self.tmp / "base-f16.gguf"
            vocab = read_vocab(tok_dir, int(config["vocab_size"]), (Path(spec["base"]),), spec.get("known_pre"), config)
            base = model.unload()
            gguf_export.write_model(base_gguf, base.state_dict(), config, vocab, spec["name"], "f16")
        # the reference ran base + adapter unrounded: the base file's own type sets what rounding explains
        # (f16 for the one written here; an imported base may be quantized)
        if spec.get("base_gguf") and Path(base_gguf) == Path(spec["base_gguf"]):
            ftype = llama_check.file_type_name(Path(base_gguf)) or ftype
        fidelity = self.llama_check(Path(base_gguf), written, prompts, reference, tokenizer, ftype)
        return {**fidelity, "tensors": count, "tensor_max_abs_diff": tensor_diff}

    # ---- the check in llama.cpp -------------------------------------------------------------
    def llama_check(self, model_file: Path, lora: Path | None, prompts, reference, tokenizer, ftype: str) -> dict:
        """The written file in llama.cpp itself against base + adapter (core/engine/gguf/llama_check.py):
        next-token agreement on the prompts' tokens, greedy answers through the file's chat template."""
        n = len(prompts)
        chat = bool(getattr(tokenizer, "chat_template", None))

        def progress(i: int, total: int) -> None:
            self.phase("checking", 0.8 + 0.15 * i / max(1, total),
                       f"Checking in llama.cpp: prompt {i + 1} of {total}")
        self.phase("checking", 0.8, f"Opening the file in llama.cpp and running {n} prompts")
        # a prompt cut to its last MAX_PROMPT_TOKENS is continued from its tokens, not sent as a chat message
        texts = [text if chat and len(ids) < MAX_PROMPT_TOKENS else None
                 for text, ids in zip(self.spec["prompts"], prompts)]
        results = llama_check.run_llama(model_file, prompts, texts, lora, progress,
                                        threads=llama_check.default_threads())
        answers = [llama_check.reference_answer(tokenizer, r["greedy"]) for r in reference]
        fidelity = llama_check.compare(reference, results, answers, ftype)
        if fidelity["flagged"]:
            fidelity["difference"] = llama_check.differences_in_words(fidelity)
        return fidelity

    # ---- into place -----------------------------------------------------------------------
    def finish(self, written: Path, out: Path, fidelity: dict, facts: dict) -> dict:
        spec = self.spec
        size = written.stat().st_size
        modelfile_path, readme_path = side_files(out)
        if spec["adapter_only"]:
            text, mf = modelfile(spec.get("base_gguf") or "PATH/TO/BASE-MODEL.gguf", facts["template"], facts["eot"],
                                 spec.get("system"), adapter=f"./{out.name}")
        else:
            text, mf = modelfile(f"./{out.name}", facts["template"], facts["eot"], spec.get("system"),
                                 projector=f"./{Path(spec['mmproj']).name}" if spec.get("mmproj") else None)
        (self.tmp / "Modelfile").write_text(text, encoding="utf-8")
        (self.tmp / "README.md").write_text(readme(out.name, modelfile_path.name, spec["name"], spec["type"],
                                                   format_bytes(size), spec["adapter_only"], spec.get("base_gguf"),
                                                   fidelity, mf), encoding="utf-8")
        mmproj = Path(spec["mmproj"]) if spec.get("mmproj") else None
        if mmproj is not None:
            with open(self.tmp / "README.md", "a", encoding="utf-8") as fh:
                fh.write(vision_readme(out.name, mmproj.name, fidelity))
        os.replace(self.tmp / "Modelfile", modelfile_path)
        os.replace(self.tmp / "README.md", readme_path)
        if mmproj is not None:
            os.replace(self.tmp / "mmproj.gguf", mmproj)
        os.replace(written, out)
        return {"status": "completed", "output": str(out), "modelfile": str(modelfile_path), "size": size,
                "template": mf["family"], "stops": mf["stops"], "mmproj": str(mmproj) if mmproj else None}

    def cleanup(self) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


def vision_readme(model: str, mmproj: str, fidelity: dict) -> str:
    """The README's section on the mmproj file: how to run the pair, what the check with an image found."""
    budget = fidelity.get("image_max_tokens")
    flag = f" --image-max-tokens {budget}" if budget else ""
    if fidelity.get("image_checked"):
        found = (f"llama.cpp loaded both files and answered with an image: {fidelity.get('image_answer')!r} "
                 f"(transformers, base + adapter: {fidelity.get('image_reference')!r}; the image took "
                 f"{fidelity.get('image_tokens')} prompt tokens).")
    else:
        found = f"Not checked with an image: {fidelity.get('image_problem')}."
    budget_note = (f" `--image-max-tokens {budget}` gives llama.cpp the image budget the model was trained at "
                   "(the processor's: llama.cpp's own is larger, and a model trained small reads large images "
                   "badly); raise it if your training images were larger than the check's. llama.cpp also sizes "
                   "an image its own way within the budget: the check gave it the image at "
                   "the size the processor made, and at small budgets your images read best sized so too."
                   if budget else "")
    return (f"\n## Images\n\nThis is a vision-language model: `{mmproj}` holds its vision tower and projector. "
            f"Give llama.cpp both:\n\n    llama-mtmd-cli -m {model} --mmproj {mmproj}{flag} --image PICTURE.png "
            f"-p \"your question\"\n    llama-server -m {model} --mmproj {mmproj}{flag}\n\n"
            f"(LM Studio finds the mmproj file beside the model.){budget_note} {found}\n")


def file_vocab_facts(path: Path) -> dict:
    """The chat template and end-of-turn text a file written by llama.cpp's converter carries (for the
    Modelfile), and its tensor count."""
    from gguf import GGUFReader
    reader = GGUFReader(str(path))

    def field(key):
        f = reader.get_field(key)
        return f.contents() if f is not None else None
    tokens = field("tokenizer.ggml.tokens") or []
    eot = field("tokenizer.ggml.eot_token_id")
    if eot is None:
        eot = field("tokenizer.ggml.eos_token_id")
    return {"template": field("tokenizer.chat_template"), "tensors": len(reader.tensors),
            "eot": tokens[eot] if isinstance(eot, int) and 0 <= eot < len(tokens) else None}


def _pre_name(tok_dir: Path) -> str:
    """Our structural name for the tokenizer's split rule, for a tokenizer llama.cpp's converter does
    not know by its hash ("default" when there is none to read)."""
    from lorastudio.core.models.gguf_vocab import VocabError, pre_tokenizer_name
    try:
        return pre_tokenizer_name(json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8")),
                                  str(tok_dir / "tokenizer.json"))
    except (OSError, ValueError, VocabError):
        return "default"


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
