"""The exported adapter's model card when the base came from a .gguf (issue 33, point 10): load the
imported folder, not the .gguf path; base_model is that folder, or the hub id the file names."""
from __future__ import annotations



from tests.helpers.gguf_tiny import write_tiny_gguf
from lorastudio.core.config import RunConfig
from lorastudio.core.runs.export import RunSummary, gguf_hub_id, model_card


def summary(model: str) -> RunSummary:
    config = RunConfig.from_dict({"model": model, "quantization": "none", "data": {"path": "/d/train.jsonl"}})
    return RunSummary(config, 10, 1.0, 1.1, 48, "text", "completed")


def test_a_gguf_base_is_loaded_from_its_imported_folder(tmp_path, tiny_llama, runs_home):
    from lorastudio.core.engine.gguf.import_gguf import convert
    gguf = tmp_path / "tiny-llama.Q8_0.gguf"
    write_tiny_gguf(gguf, tiny_llama)
    folder = convert(gguf)
    card = model_card(summary(str(gguf)), "my-adapter", None)
    assert f"base_model: {folder}\n" in card
    assert f'AutoModelForCausalLM.from_pretrained("{folder}")' in card
    assert f'from_pretrained("{gguf}")' not in card                 # the path that fails ("not a valid JSON file")
    assert f'gguf_file="{gguf.name}"' in card and "imported (dequantized)" in card
    from transformers import AutoModelForCausalLM
    AutoModelForCausalLM.from_pretrained(str(folder))                 # what the card says works


def test_base_model_is_the_hub_id_the_gguf_names(tmp_path):
    import gguf as gguf_py
    path = tmp_path / "m.gguf"
    writer = gguf_py.GGUFWriter(str(path), "llama")
    writer.add_string("general.source.repo_url", "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert gguf_hub_id(path) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    card = model_card(summary(str(path)), "a", None)           # not imported: the hub id, and the .gguf's folder
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct\n" in card
    assert gguf_hub_id(tmp_path / "missing.gguf") is None


def test_a_folder_base_is_unchanged(tiny_llama):
    card = model_card(summary(str(tiny_llama)), "a", None)
    assert f"base_model: {tiny_llama}\n" in card and "imported (dequantized)" not in card
