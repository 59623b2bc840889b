"""GGUF export, the safe way: checks here (torch-free), the work in a job.

`lorastudio export-gguf RUN OUT.gguf [--type f16|bf16|q8_0|q6_k|q5_k_m|q5_0|q4_k_m|q4_0|f32] [--checkpoint STEP]
[--adapter-only] [--overwrite]`. Before anything loads: the run has an adapter, the base model is
an architecture the exporter writes (core/models/gguf_arch.py), its tokenizer can be written as
GGUF (core/models/gguf_vocab.py), the type is one we write (other k-quants: llama-quantize, said how),
OUT and the Modelfile/README beside it are new (or --overwrite), and the disk has room for the
estimated size. A vision-language model (issue 31) is written as OUT (its language model) and
mmproj-OUT (its vision tower and projector, gguf_arch.mmproj_path) by llama.cpp's converter, for the
families it converts; any other is refused here in words naming the family. The job
(core/jobs/export_gguf.py, started by `start_export_gguf` in RUN/gguf-exports/<stamp>/) writes a hidden file beside OUT and renames it once checked, so a
cancelled, killed or failed export leaves nothing behind.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from lorastudio.core.disk import check_room
from lorastudio.core.models.gguf_arch import (ADAPTER_TYPES, EXTERNAL_TYPES, TYPE_BITS, architecture_problem,
                                              CONVERTER_TYPES, converter_install_line, external_type_hint,
                                              file_bytes, is_vision_config, mmproj_path, uses_converter)
from lorastudio.core.models import gguf_arch
from lorastudio.core.models.gguf_cache import RECORD_FILE
from lorastudio.core.models.gguf_vocab import VocabError, read_gguf_string, read_vocab, tokenizer_folder
from lorastudio.core.models.info import ModelError, read_model_info
from lorastudio.core.runs.export import ExportError, GgufExportError, adapter_source, read_run
from lorastudio.core.plans.merge import default_prompts
from lorastudio.core.runtime.launcher import JobHandle, launch, new_job_dir

EXPORTS_DIR = "gguf-exports"
TYPES = tuple(TYPE_BITS)
SAFETY_MARGIN, EXTRA_BYTES = 1.02, 4 * 2**20           # tensor padding, the vocabulary, Modelfile + README


@dataclass(frozen=True)
class ExportGgufRequest:
    """What the user asked for: `lorastudio export-gguf` and the GGUF export dialog build one."""
    run: Path
    out: Path
    type: str | None = None             # default q8_0 (f16 with adapter_only)
    checkpoint: int | None = None
    adapter_only: bool = False
    overwrite: bool = False


@dataclass
class GgufExportJob:
    """A checked export (plan_export_gguf): what the export_gguf job's job.yaml says."""
    run_dir: Path
    out: Path
    adapter: Path
    base: Path
    type: str
    adapter_only: bool
    base_gguf: str | None           # the GGUF the base was imported from (FROM for an adapter-only Modelfile)
    known_pre: str | None           # that file's tokenizer.ggml.pre
    system: str | None              # the system prompt the training data used
    name: str
    prompts: list[str]
    estimate: int
    overwrite: bool
    parameters: int = 0
    converter: bool = False         # the merged model is written by llama.cpp's converter, not our writer
    mmproj: Path | None = None      # a vision-language model's vision tower + projector file, beside out
    image: Path | None = None       # the image the check in llama.cpp answers about (None: one drawn there)
    image_prompt: str | None = None  # the question asked with it
    image_max_pixels: int = 0       # data.max_image_pixels the run trained with (the check's image scaled so)

    def to_spec(self) -> dict:
        spec = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        return spec


def side_files(out: Path) -> tuple[Path, Path]:
    """The Modelfile and README written beside OUT.gguf."""
    out = Path(out)
    return out.with_name(out.stem + ".Modelfile"), out.with_name(out.stem + ".README.md")


def estimate_size(num_parameters: int, ftype: str, tensors: dict | None = None, config: dict | None = None) -> int:
    """The file's size in `ftype`: tensor by tensor when the model's tensors (name -> shape, or
    (dtype, shape) as ModelInfo has them) and config.json are given — which tensors stay f32, q8_0
    or q6_k in a mixture —, else from the parameter count and the type's bits per weight."""
    if tensors and config:
        shapes = {k: (v[1] if v and isinstance(v[0], str) else v) for k, v in tensors.items()}
        return int(file_bytes(shapes, config, ftype) * SAFETY_MARGIN) + EXTRA_BYTES
    return int(num_parameters * TYPE_BITS[ftype] / 8 * SAFETY_MARGIN) + EXTRA_BYTES


def size_estimates(num_parameters: int, tensors: dict | None = None, config: dict | None = None) -> dict[str, int]:
    """Each type's estimated file size (the dialog's list)."""
    return {t: estimate_size(num_parameters, t, tensors, config) for t in TYPES}


def check_type(ftype: str, adapter_only: bool) -> None:
    name = ftype.lower()
    if name in EXTERNAL_TYPES:
        what = "a k-quant" if "_k" in name else "a llama.cpp type"
        raise GgufExportError(f"--type {name} is {what} that LoRA Studio does not write itself "
                              f"(it writes {', '.join(TYPES)})", external_type_hint(name))
    if name not in TYPES:
        raise GgufExportError(f"--type {ftype} is not a GGUF type this exporter writes",
                              f"choose one of {', '.join(TYPES)}; for other llama.cpp types, "
                              f"{external_type_hint('q3_k_m')}")
    if adapter_only and name not in ADAPTER_TYPES:
        raise GgufExportError(f"an adapter-only file is written as {', '.join(ADAPTER_TYPES)}, not {name}",
                              "use --type f16 (an adapter is small; llama.cpp applies it to any base type)")


def check_target(out: Path, overwrite: bool, vision: bool = False) -> None:
    out = Path(out)
    if out.suffix.lower() != ".gguf":
        raise GgufExportError(f"{out} does not end in .gguf", "name the output file like my-model-q8_0.gguf")
    if out.is_dir():
        raise GgufExportError(f"{out} is a folder", "give a file name ending in .gguf")
    from lorastudio.core.runs.output_paths import check_output      # the one output-path rule (issue 27)
    check_output(out, "a GGUF file", True, error=GgufExportError, file=True)
    if not overwrite:
        for path in (out, *side_files(out), *([mmproj_path(out)] if vision else [])):
            if path.exists():
                raise GgufExportError(f"{path} already exists", "choose another name, or pass --overwrite")


def check_disk(out: Path, estimate: int) -> None:
    check_room(Path(out).parent, estimate, "the GGUF file", "or choose another disk or a smaller type (q8_0, q4_k_m)",
               error=GgufExportError)


def check_adapter(adapter: Path) -> None:
    try:
        config = json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GgufExportError(f"{adapter}/adapter_config.json cannot be read ({exc})", "the adapter is damaged") from None
    problems = [("use_dora", "DoRA"), ("rank_pattern", "per-module ranks"), ("alpha_pattern", "per-module alphas"),
                ("modules_to_save", "fully trained modules")]
    for key, what in problems:
        if config.get(key):
            raise GgufExportError(f"the adapter uses {what} ({key}), which a GGUF LoRA file cannot carry",
                                  "export the merged model instead (leave out --adapter-only)")


def base_gguf_source(base: Path) -> tuple[str | None, str | None]:
    """(source .gguf, its tokenizer.ggml.pre) when the base model was imported from a GGUF."""
    try:
        record = json.loads((Path(base) / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    source = record.get("source")
    if not source or not Path(source).is_file():
        return None, None
    pre = read_gguf_string(Path(source), "tokenizer.ggml.pre")
    return source, pre


def data_system_prompt(config) -> str | None:
    """The system prompt of the training data's first chat example that has one."""
    from lorastudio.core.data.files import DataError, iter_rows
    try:
        for n, row in enumerate(iter_rows(Path(config.data.path), bad=[])):
            messages = row.value.get("messages") if isinstance(row.value, dict) else None
            if isinstance(messages, list) and messages and isinstance(messages[0], dict) \
                    and messages[0].get("role") == "system" and isinstance(messages[0].get("content"), str):
                return messages[0]["content"]
            if n >= 200:
                break
    except (DataError, OSError, AttributeError):
        pass
    return None


def data_image(config) -> tuple[Path | None, str | None]:
    """(the first image the training data shows, the user's words beside it) from its first 200 rows,
    for the check in llama.cpp with an image; (None, None) when there is none to read."""
    from lorastudio.core.data.files import DataError, iter_rows
    from lorastudio.core.data.images import IMAGE_MARKER, resolve_paths, row_images
    path = Path(config.data.path)
    try:
        for n, row in enumerate(iter_rows(path, bad=[])):
            images = row_images(row.value) if isinstance(row.value, dict) else []
            found = [Path(p) for p in resolve_paths(images, path.parent)]
            if found and found[0].is_file():
                return found[0], _user_words(row.value, IMAGE_MARKER)
            if n >= 200:
                break
    except (DataError, OSError, AttributeError, TypeError):
        pass
    return None, None


def _user_words(row: dict, marker: str) -> str | None:
    """The text of a row's first user turn, image markers and parts left out."""
    for key in ("messages", "conversations"):
        for turn in row.get(key) or []:
            if not isinstance(turn, dict) or turn.get("role", turn.get("from")) not in ("user", "human"):
                continue
            content = turn.get("content", turn.get("value"))
            if isinstance(content, list):
                content = " ".join(c.get("text", "") for c in content if isinstance(c, dict) and c.get("type") == "text")
            return content.replace(marker, "").strip() if isinstance(content, str) else None
    return None


def plan_export_gguf(args: ExportGgufRequest) -> GgufExportJob:
    """The checks before anything loads; a GgufExportError says what to change. Off the GUI thread."""
    run_dir = Path(args.run).resolve()
    ftype = (args.type or ("f16" if args.adapter_only else "q8_0")).lower()
    check_type(ftype, args.adapter_only)
    summary = read_run(run_dir)
    adapter = adapter_source(run_dir, args.checkpoint)
    try:
        info = read_model_info(summary.config.model)
    except ModelError as exc:
        raise GgufExportError(f"base model: {exc.message}", exc.hint) from None
    problem = architecture_problem(info.config, bool(args.adapter_only), ftype)
    if problem:
        raise GgufExportError(*problem)
    if args.adapter_only:
        check_adapter(adapter)
    base_gguf, known_pre = base_gguf_source(info.path)
    converter = not args.adapter_only and uses_converter(info.config)     # it writes its own vocabulary
    if not args.adapter_only and not converter:
        try:
            read_vocab(tokenizer_folder(adapter, info.path), int(info.config["vocab_size"]), (info.path,),
                       known_pre, info.config)
        except VocabError as exc:
            # a vocabulary our writer does not write (SentencePiece: Llama 2, Mistral v0.1; Tekken): the
            # converter writes the whole file, when it is there and writes the type
            if gguf_arch.converter_dir() is None:
                raise GgufExportError(exc.message, f"{exc.hint}; or install llama.cpp's converter, which "
                                      f"writes it: {converter_install_line()}") from None
            if ftype not in CONVERTER_TYPES:
                raise GgufExportError(f"{exc.message}: llama.cpp's converter writes this model, as "
                                      f"{', '.join(CONVERTER_TYPES)}, not {ftype}", external_type_hint(ftype)) from None
            converter = True
    out = Path(args.out).expanduser().resolve()
    vision = is_vision_config(info.config) and not args.adapter_only
    check_target(out, args.overwrite, vision)
    size = sum(p.stat().st_size for p in adapter.glob("adapter_model.*")) if args.adapter_only else None
    estimate = (int(size * TYPE_BITS[ftype] / 32) + EXTRA_BYTES if args.adapter_only
                else estimate_size(info.num_parameters, ftype, info.tensors, info.config))
    check_disk(out, estimate)
    name = summary.config.name or run_dir.name
    image, image_prompt = data_image(summary.config) if vision else (None, None)
    return GgufExportJob(run_dir, out, adapter, info.path, ftype, bool(args.adapter_only), base_gguf, known_pre,
                         data_system_prompt(summary.config), name, default_prompts(run_dir, summary.config),
                         estimate, bool(args.overwrite), info.num_parameters, converter,
                         mmproj_path(out) if vision else None, image, image_prompt,
                         int(summary.config.data.max_image_pixels or 0))


def start_export_gguf(job: GgufExportJob) -> JobHandle:
    """Start the export job in a fresh RUN/gguf-exports/<stamp>/ folder."""
    return launch("export_gguf", new_job_dir(job.run_dir / EXPORTS_DIR), job.to_spec())


@dataclass
class ExportChoices:
    """What the dialog shows before an export: sizes per type, or why the run cannot be exported."""
    parameters: int = 0
    estimates: dict | None = None           # type -> bytes of the merged file
    adapter_bytes: int = 0                  # the adapter-only file (f16)
    problem: str | None = None              # why the merged model cannot be written (message — what to do)


def export_choices(run_dir: Path, checkpoint: int | None = None) -> ExportChoices:
    """Torch-free, a few file reads: for the dialog's type list (off the GUI thread)."""
    try:
        summary = read_run(Path(run_dir))
        adapter = adapter_source(Path(run_dir), checkpoint)
        info = read_model_info(summary.config.model)
    except (ExportError, ModelError) as exc:
        return ExportChoices(problem=f"{exc.message} — {exc.hint}")
    size = sum(p.stat().st_size for p in adapter.glob("adapter_model.*"))
    choices = ExportChoices(info.num_parameters, size_estimates(info.num_parameters, info.tensors, info.config),
                            size // 2 + 2**20)
    problem = architecture_problem(info.config)
    if problem is None:
        try:
            read_vocab(tokenizer_folder(adapter, info.path), int(info.config["vocab_size"]), (info.path,),
                       base_gguf_source(info.path)[1], info.config)
        except VocabError as exc:
            problem = (exc.message, exc.hint)
    if problem:
        choices.problem = f"{problem[0]} — {problem[1]}"
    return choices
