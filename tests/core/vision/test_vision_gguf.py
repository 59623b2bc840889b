"""GGUF export of a vision-language model (issue 31): the merged language model as OUT.gguf and the
vision tower + projector as mmproj-OUT.gguf, both written by llama.cpp's converter, then loaded
together in llama.cpp (xllamacpp) and asked about an image; families llama.cpp cannot take are
refused before anything is written, in words naming the family."""
from __future__ import annotations

import json

import pytest

from lorastudio.core.cli import main as cli_main
from lorastudio.core.engine.gguf import vision_gguf
from lorastudio.core.journal import read_events
from lorastudio.core.models.gguf_arch import converter_dir
from tests.helpers.tiny_models import write_config
from tests.helpers.tiny_vlms import make_vlm, write_colour_data

pytestmark = pytest.mark.skipif(converter_dir() is None, reason="llama.cpp's converter is not installed")

# the families exported with an mmproj, each checked in llama.cpp with an image (Idefics3 / SmolVLM's tiny
# tokenizer has "\n\n" as one token, as llama.cpp needs for their overview image: tiny_vlms._tokenizer)
EXPORTED = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "gemma3", "pixtral", "idefics3", "smolvlm")


def as_llama_cpp_runs_gemma3(model) -> None:
    """llama.cpp runs Gemma 3 (not 27B) with attention scaled by 1/sqrt(head_dim) and every sixth
    layer global: true of the real checkpoints (head_dim = query_pre_attn_scalar = 256; 5 sliding
    layers to 1 full), not of the tiny one's defaults. Its config is set so (no weight changes)."""
    path = model / "config.json"
    config = json.loads(path.read_text())
    text = config["text_config"]
    text["query_pre_attn_scalar"] = text["head_dim"]
    text["layer_types"] = ["sliding_attention"] * text["num_hidden_layers"]
    path.write_text(json.dumps(config))


def _trained_run(tmp_path, family, monkeypatch):
    monkeypatch.setenv("LORASTUDIO_CACHE", str(tmp_path / "cache"))
    model = make_vlm(tmp_path / "model", family, vision_depth=3)
    if family == "gemma3":
        as_llama_cpp_runs_gemma3(model)
    data = write_colour_data(tmp_path / "data", 8)
    config = write_config(tmp_path / "c.yaml", model, data, lora__targets="all-linear",
                          lora__vision="all" if family == "gemma3" else "projector", training__max_steps=2,
                          training__seq_len=128, training__save_every=0, data__validation_split=0.0)
    run = tmp_path / "run"
    assert cli_main(["train", str(config), "--run-dir", str(run)]) == 0
    return run


@pytest.mark.parametrize("family", EXPORTED)
def test_a_vision_language_run_exports_its_model_and_mmproj_checked_in_llama_cpp(tmp_path, family, monkeypatch,
                                                                                inline_jobs, capsys):
    from gguf import GGUFReader
    run = _trained_run(tmp_path, family, monkeypatch)
    out = tmp_path / "out" / "vlm-f16.gguf"
    capsys.readouterr()
    assert cli_main(["export-gguf", str(run), str(out), "--type", "f16"]) == 0, capsys.readouterr()
    said = capsys.readouterr().out
    mmproj = out.with_name("mmproj-vlm-f16.gguf")
    assert out.is_file() and mmproj.is_file() and f"--mmproj {mmproj}" in said
    projector = GGUFReader(str(mmproj))
    assert projector.get_field("general.architecture").contents() == "clip"
    assert any(t.name.startswith("v.blk.") for t in projector.tensors)          # the vision tower's blocks
    assert not any(t.name.startswith("v.") for t in GGUFReader(str(out)).tensors)     # the language model alone
    job = next((run / "gguf-exports").iterdir())
    events = read_events(job / "events.jsonl")
    fidelity = next(e for e in events if e["type"] == "fidelity")
    assert fidelity["checked_by"] == "llama.cpp" and not fidelity["flagged"], fidelity
    assert fidelity["mmproj_tensors"] == len(projector.tensors)
    end = next(e for e in events if e["type"] == "end")
    assert end["mmproj"] == str(mmproj)
    readme = out.with_name("vlm-f16.README.md").read_text()
    assert f"--mmproj {mmproj.name}" in readme
    modelfile = out.with_name("vlm-f16.Modelfile").read_text().splitlines()
    assert [line for line in modelfile if line.startswith("FROM ")] == ["FROM ./vlm-f16.gguf", f"FROM ./{mmproj.name}"]
    # llama.cpp answered with both files loaded, the image taking prompt tokens of its own
    assert fidelity["image_checked"] is True and fidelity["image_tokens"] > 0, fidelity
    assert fidelity["image_agree"] is True      # llama.cpp and transformers give the same greedy answer
    assert "llama.cpp loaded both files and answered with an image" in readme
    if family == "idefics3":
        # the tiled image: 4 tiles and the overview, one token each, and the text llama.cpp puts around them
        # as the processor does (<fake_token_around_image><row_r_col_c> a tile, "\n" a row, "\n\n",
        # <fake_token_around_image><global-img> … <fake_token_around_image> the overview)
        assert fidelity["image_tokens"] == 18, fidelity
        # an answer that does not come in time is said, not waited for: llama.cpp's process is ended
        timed_out = vision_gguf.image_check(out, mmproj, vision_gguf.drawn_image(tmp_path), "Describe this image.",
                                            "", model_type=family, timeout_s=0.01)
        assert timed_out["image_checked"] is False
        assert timed_out["image_problem"] == ("llama.cpp gave no answer with the image within 0.01 s "
                                              "(its process was ended)")


@pytest.mark.parametrize("family, words", [("mllama", "Llama 3.2 Vision (Mllama)"),
                                           ("llava", "LLaVA with a clip_vision_model vision tower"),
                                           ("llava_next", "LLaVA-NeXT")])
def test_a_family_llama_cpp_cannot_take_is_refused_before_anything_is_written(tmp_path, family, words, monkeypatch,
                                                                             inline_jobs, capsys):
    run = _trained_run(tmp_path, family, monkeypatch)
    out = tmp_path / "out" / "vlm.gguf"
    capsys.readouterr()
    assert cli_main(["export-gguf", str(run), str(out), "--type", "f16"]) == 2
    said = capsys.readouterr()
    assert f"GGUF export cannot write {words}" in said.out + said.err
    assert not (tmp_path / "out").exists() and not (run / "gguf-exports").exists()


def test_a_vision_language_adapter_alone_and_an_existing_mmproj_are_refused(tmp_path, monkeypatch, inline_jobs,
                                                                           capsys):
    run = _trained_run(tmp_path, "qwen2_vl", monkeypatch)
    capsys.readouterr()
    assert cli_main(["export-gguf", str(run), str(tmp_path / "a.gguf"), "--adapter-only"]) == 2
    said = capsys.readouterr()
    assert "Qwen2-VL is a vision-language model: its adapter alone is not written" in said.out + said.err
    (tmp_path / "mmproj-b.gguf").write_text("mine")
    assert cli_main(["export-gguf", str(run), str(tmp_path / "b.gguf"), "--type", "f16"]) == 2
    said = capsys.readouterr()
    assert f"{tmp_path / 'mmproj-b.gguf'} already exists" in said.out + said.err
    assert (tmp_path / "mmproj-b.gguf").read_text() == "mine" and not (tmp_path / "b.gguf").exists()
