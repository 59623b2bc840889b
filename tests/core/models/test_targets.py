"""Target discovery from headers alone must agree exactly with PEFT after get_peft_model."""
import json
from pathlib import Path

import pytest

from lorastudio.core.models.info import ModelError, read_model_info
from lorastudio.core.models.targets import discover_targets, trainable_line


def peft_lora_count(folder, targets, r, dora=False) -> int:
    import peft
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(folder)
    pm = peft.get_peft_model(model, peft.LoraConfig(r=r, target_modules=targets, use_dora=dora))
    return sum(p.numel() for n, p in pm.named_parameters() if "lora_" in n)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2", "tiny_qwen2"])
@pytest.mark.parametrize("r,dora", [(8, False), (16, True)])
def test_header_count_equals_peft_count(request, fixture, r, dora):
    folder = request.getfixturevalue(fixture)
    report = discover_targets(read_model_info(str(folder)))
    for selection in ("all-linear", report.names()[:2], [report.names()[-1]]):
        assert report.lora_params(selection, r, dora) == peft_lora_count(folder, selection, r, dora), selection


def test_llama_targets_grouped_with_layers_and_shapes(tiny_llama):
    report = discover_targets(read_model_info(str(tiny_llama)))
    grouped = report.grouped()
    assert [t.name for t in grouped["attention"]] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert [t.name for t in grouped["mlp"]] == ["gate_proj", "up_proj", "down_proj"]
    assert [t.name for t in grouped["other"]] == ["lm_head"]
    k = next(t for t in report.targets if t.name == "k_proj")
    assert (k.layers, k.d_in, k.d_out) == (2, 64, 32)          # 2 kv heads × 16 dims
    assert k.lora_params(8) == 2 * 8 * (64 + 32)


def test_gpt2_conv1d_and_ambiguous_suffixes(tiny_gpt2):
    report = discover_targets(read_model_info(str(tiny_gpt2)))
    names = report.names()
    assert "c_attn" in names and "attn.c_proj" in names and "mlp.c_proj" in names
    c_fc = next(t for t in report.targets if t.name == "c_fc")
    assert (c_fc.d_in, c_fc.d_out, c_fc.group) == (64, 256, "mlp")     # Conv1D stores (in, out)


def test_tied_head_is_a_target_but_not_in_all_linear(tiny_qwen2):
    report = discover_targets(read_model_info(str(tiny_qwen2)))
    assert "lm_head" in report.names()
    assert "lm_head" not in report.matching_modules("all-linear")


def test_unknown_targets_are_named(tiny_llama):
    report = discover_targets(read_model_info(str(tiny_llama)))
    assert report.unknown(["q_proj", "qproj", "mlp"]) == ["qproj", "mlp"]


def test_trainable_line(tiny_llama):
    report = discover_targets(read_model_info(str(tiny_llama)))
    assert trainable_line(report, ["q_proj", "v_proj"], 8) == "Trainable: 3.58 K of 118.6 K parameters (3.02 %)"


def test_discovery_reads_no_weights(tiny_llama, monkeypatch):
    """Only the header is read: reading the weights would need far more than the header's bytes."""
    import builtins
    sizes = []
    real_open = builtins.open

    class Counting:
        def __init__(self, fh):
            self.fh = fh

        def read(self, n=-1):
            data = self.fh.read(n)
            sizes.append(len(data))
            return data

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.fh.close()

    def spy(path, mode="r", *a, **k):
        fh = real_open(path, mode, *a, **k)
        return Counting(fh) if str(path).endswith(".safetensors") else fh
    monkeypatch.setattr(builtins, "open", spy)
    read_model_info(str(tiny_llama))
    weights = (tiny_llama / "model.safetensors").stat().st_size
    assert sizes and sum(sizes) < weights / 20


def test_damaged_header_is_a_clear_error(tmp_path, tiny_llama):
    import shutil
    folder = tmp_path / "damaged"
    shutil.copytree(tiny_llama, folder)
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ModelError, match="damaged safetensors header"):
        read_model_info(str(folder))


def test_hub_id_resolves_from_local_cache(tmp_path, tiny_llama, monkeypatch):
    import shutil
    cache = tmp_path / "hub"
    snap = cache / "models--acme--tiny" / "snapshots" / "abc123"
    shutil.copytree(tiny_llama, snap)
    (cache / "models--acme--tiny" / "refs").mkdir()
    (cache / "models--acme--tiny" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    info = read_model_info("acme/tiny")
    assert info.path == snap and info.architecture == "LlamaForCausalLM"
    with pytest.raises(ModelError, match="not in the local Hugging Face cache"):
        read_model_info("acme/other")


def test_targets_cli_json_matches_report(tiny_llama, capsys):
    from lorastudio.core.cli import main
    assert main(["targets", str(tiny_llama), "--rank", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rank"] == 4
    assert {t["name"]: t["lora_params"] for t in out["targets"]}["q_proj"] == 2 * 4 * (64 + 64)


def test_targets_cli_table_and_bad_model(tiny_llama, tmp_path, capsys):
    from lorastudio.core.cli import main
    assert main(["targets", str(tiny_llama)]) == 0
    out = capsys.readouterr().out
    assert "attention" in out and "q_proj" in out and "all-linear: Trainable:" in out
    assert main(["targets", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_targets_on_pickle_only_weights_says_so(tiny_llama, tmp_path, capsys):
    """Issue 27 item 8: a folder with only pytorch_model.bin is not "0 parameters", exit 0."""
    import shutil

    import torch
    from safetensors.torch import load_file

    from lorastudio.core.cli import main
    folder = Path(shutil.copytree(tiny_llama, tmp_path / "pickled"))
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    assert main(["targets", str(folder)]) == 2
    captured = capsys.readouterr()
    print(captured.err)
    assert "0 parameters" not in captured.out + captured.err and "Traceback" not in captured.err
    assert f"{folder} has only pickle weights (pytorch_model.bin)" in captured.err
    assert "reads the layers' shapes from safetensors headers" in captured.err
    assert "convert the weights to safetensors" in captured.err and "allow_pickle: true" in captured.err
    assert main(["targets", str(folder), "--json"]) == 2
