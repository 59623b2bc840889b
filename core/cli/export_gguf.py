"""`lorastudio export-gguf RUN OUT.gguf`: a run as one GGUF file for llama.cpp, Ollama and LM Studio.

Exit status: 0 written (and checked), 1 the export failed, was stopped or its worker died (nothing
was written), 2 refused before anything started. Ctrl+C stops it; nothing is written.
"""
from __future__ import annotations

from pathlib import Path

from lorastudio.core.cli.output import fail, follow_writing_job


def export_gguf_arguments(p) -> None:
    from lorastudio.core.models.gguf_arch import TYPE_BITS, TYPE_NOTES
    p.add_argument("run", type=Path, help="the run folder")
    p.add_argument("out", type=Path, help="the .gguf file to write")
    p.add_argument("--type", help="; ".join(f"{t}: {TYPE_NOTES[t]}" for t in TYPE_BITS) +
                   " (default q8_0; f16 with --adapter-only); other k-quants and i-quants (q3_k_m, iq4_xs …) via "
                   "llama.cpp's llama-quantize")
    p.add_argument("--checkpoint", type=int, help="export this checkpoint step instead of the final adapter")
    p.add_argument("--adapter-only", action="store_true",
                   help="write only the LoRA adapter, as a GGUF LoRA to load on the base GGUF")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file (and its Modelfile)")


def export_gguf(args) -> int:
    from lorastudio.core.atomic_files import tidy
    from lorastudio.core.formatting import format_bytes
    from lorastudio.core.runs.export import ExportError
    from lorastudio.core.plans.export_gguf import ExportGgufRequest, plan_export_gguf, start_export_gguf
    try:
        job = plan_export_gguf(ExportGgufRequest(args.run, args.out, args.type, args.checkpoint, args.adapter_only,
                                                 args.overwrite))
    except ExportError as exc:
        return fail(exc.message, exc.hint)
    what = "the LoRA adapter" if job.adapter_only else "the merged model"
    print(f"Exporting {what} of {job.run_dir.name} as {job.type} GGUF; about {format_bytes(job.estimate)} to write",
          flush=True)
    handle = start_export_gguf(job)
    outcome = follow_writing_job(handle, "export", job.out, "do not ship this file before comparing answers")
    if outcome is None:
        return 1
    if outcome.status == "completed":
        end = outcome.end or {}
        print(f"Wrote {outcome.output} ({format_bytes(end.get('size', 0))})")
        if end.get("mmproj"):
            print(f"  and {end['mmproj']} (the vision tower and projector): "
                  f"llama-mtmd-cli -m {outcome.output} --mmproj {end['mmproj']} --image PICTURE.png")
        if end.get("modelfile"):
            print(f"  Ollama: ollama create {job.name.lower()} -f {end['modelfile']}")
        print(f"  llama.cpp: llama-cli -m {outcome.output}" if not job.adapter_only else
              f"  llama.cpp: llama-cli -m {job.base_gguf or 'BASE.gguf'} --lora {outcome.output}")
        return 0
    print(f"GGUF export {outcome.status}; nothing was written to {job.out}")
    left = [item for item in tidy(job.out.parent) if item.action == "removed"]      # a killed worker's
    if left:
        print(f"Removed the export's unfinished hidden files beside it "
              f"({', '.join(item.path.name for item in left)}: {format_bytes(sum(i.bytes for i in left))})")
    return 1
