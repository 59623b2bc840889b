"""Rank analysis and resizing of a real adapter (a tiny Llama trained a few steps): the singular
values against an SVD of s·B·A formed explicitly, the resized adapter's error against the
discarded tail of the spectrum, and the resized adapter loading in PEFT."""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from lorastudio.core.engine.rank import (RankError, analyze_adapter, read_adapter, resize_adapter,
                                                  update_svd)
from lorastudio.core.runs.rank_report import split_key, tail_error


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_llama):
    from tests.helpers.tiny_models import train_tiny_run, write_text_jsonl
    root = tmp_path_factory.mktemp("rank")
    run = train_tiny_run(root / "run", tiny_llama, write_text_jsonl(root / "train.jsonl"), quantization="none",
                         training__max_steps=6, training__lr=2e-2, lora__targets="all-linear", training__save_every=0)
    return run / "adapter"


@pytest.fixture
def rslora_adapter(adapter, tmp_path):
    """The same weights read as rsLoRA (scale α/√r), with a per-module alpha for one module."""
    folder = tmp_path / "rslora"
    shutil.copytree(adapter, folder)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg.update(use_rslora=True, alpha_pattern={"model.layers.1.mlp.down_proj": 5})
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    return folder


def explicit_updates(folder) -> dict[str, torch.Tensor]:
    """{module: s·B·A} formed as full matrices, in float64, from the files alone."""
    cfg, tensors = read_adapter(folder)
    out = {}
    for key, a in tensors.items():
        name, half = split_key(key)
        if half != "A":
            continue
        b = tensors[key.replace("lora_A", "lora_B")].double()
        r = a.shape[0]
        alpha = cfg.get("alpha_pattern", {}).get(name, cfg["lora_alpha"])
        scale = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
        out[name] = scale * b @ a.double()
    return out


def relative(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(torch.linalg.norm(x - y) / torch.linalg.norm(y))


@pytest.mark.parametrize("which", ["lora", "rslora"])
def test_singular_values_match_an_explicit_svd(which, adapter, rslora_adapter):
    folder = adapter if which == "lora" else rslora_adapter
    report = analyze_adapter(folder)
    updates = explicit_updates(folder)
    assert {m["name"] for m in report["modules"]} == set(updates)
    assert "model.layers.0.self_attn.q_proj" in updates and len(updates) == 2 * 7
    for m in report["modules"]:
        expected = torch.linalg.svdvals(updates[m["name"]])[: m["rank"]]
        assert float(expected[0]) > 0, "B is still zero: the adapter did not train"
        got = torch.tensor(m["singular_values"], dtype=torch.float64)
        assert relative(got, expected) <= 1e-4, m["name"]
        assert m["singular_values"] == sorted(m["singular_values"], reverse=True)
        assert m["energy"][-1] == pytest.approx(1.0) and 1 <= m["effective_rank_90"] <= m["effective_rank_99"] <= 8
    if which == "rslora":
        down = next(m for m in report["modules"] if m["name"] == "model.layers.1.mlp.down_proj")
        assert down["scale"] == pytest.approx(5 / math.sqrt(8))


def test_the_factored_svd_reconstructs_the_update(adapter):
    _cfg, tensors = read_adapter(adapter)
    a = tensors["base_model.model.model.layers.0.mlp.up_proj.lora_A.weight"]
    b = tensors["base_model.model.model.layers.0.mlp.up_proj.lora_B.weight"]
    u, sigma, vh = update_svd(a, b, 2.0)
    assert u.shape == (b.shape[0], 8) and vh.shape == (8, a.shape[1])
    assert relative(u @ torch.diag(sigma) @ vh, 2.0 * b.double() @ a.double()) < 1e-10
    assert torch.allclose(u.T @ u, torch.eye(8, dtype=torch.float64), atol=1e-10)


@pytest.mark.parametrize("which", ["lora", "rslora"])
def test_resized_error_is_the_discarded_tail_and_peft_loads_it(which, adapter, rslora_adapter, tiny_llama, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    folder = adapter if which == "lora" else rslora_adapter
    out = tmp_path / "small"
    out.mkdir()
    result = resize_adapter(folder, out, rank=3)
    original, resized = explicit_updates(folder), explicit_updates(out)
    spectra = {m["name"]: m["singular_values"] for m in analyze_adapter(folder)["modules"]}
    for row in result["modules"]:
        name = row["name"]
        tail = tail_error(spectra[name], 3)
        assert 0 < tail < 1 and row["new_rank"] == 3
        assert relative(resized[name], original[name]) == pytest.approx(tail, rel=1e-4, abs=1e-6)
        assert row["error"] == pytest.approx(tail, rel=1e-6)
        # and it is the best rank-3 approximation: the truncated SVD of the explicit matrix
        u, s, vh = torch.linalg.svd(original[name], full_matrices=False)
        best = u[:, :3] @ torch.diag(s[:3]) @ vh[:3]
        assert relative(resized[name], best) < 1e-4
    card = (out / "README.md").read_text()
    assert "model.layers.0.self_attn.q_proj" in card and f"{result['modules'][0]['error']:.4f}" in card
    assert (out / "tokenizer.json").is_file()

    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    model = PeftModel.from_pretrained(base, str(out)).eval()
    lora = model.base_model.model.model.layers[1].mlp.down_proj
    peft_delta = lora.get_delta_weight("default").double()
    assert relative(peft_delta, original["model.layers.1.mlp.down_proj"]) == pytest.approx(
        tail_error(spectra["model.layers.1.mlp.down_proj"], 3), rel=1e-3)
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape[:2] == (1, 4) and torch.isfinite(logits).all()


def test_energy_mode_writes_per_module_ranks_that_peft_applies(adapter, tiny_llama, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    out = tmp_path / "energy"
    out.mkdir()
    result = resize_adapter(adapter, out, energy=0.9)
    report = analyze_adapter(adapter)
    expected = {m["name"]: m["effective_rank_90"] for m in report["modules"]}
    assert {row["name"]: row["new_rank"] for row in result["modules"]} == expected
    assert len(set(expected.values())) > 1, "the test needs modules of different effective rank"
    assert all(row["error"] ** 2 <= 0.1 + 1e-9 for row in result["modules"])
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == result["r"] and cfg["rank_pattern"] and set(cfg["rank_pattern"]) == set(cfg["alpha_pattern"])
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), str(out))
    for name, module in model.base_model.model.named_modules():
        if name in expected:
            assert module.r["default"] == expected[name], name
    again = analyze_adapter(out)
    for m in again["modules"]:
        assert m["rank"] == expected[m["name"]]


def test_bad_adapters_are_named(tmp_path, adapter):
    with pytest.raises(RankError, match="adapter_config.json: cannot be read"):
        analyze_adapter(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(adapter, broken)
    (broken / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(RankError, match="adapter_model.safetensors: cannot be read"):
        analyze_adapter(broken)
    dora = tmp_path / "dora"
    shutil.copytree(adapter, dora)
    cfg = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": True}))
    (tmp_path / "out").mkdir()
    with pytest.raises(RankError, match="DoRA"):
        resize_adapter(dora, tmp_path / "out", rank=2)


def test_embedding_lora_is_kept_out_of_the_report_and_refused_by_resize(adapter, tmp_path):
    from safetensors.torch import load_file, save_file
    folder = tmp_path / "embed"
    shutil.copytree(adapter, folder)
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    tensors["base_model.model.model.embed_tokens.lora_embedding_A"] = torch.ones(8, 100)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    report = analyze_adapter(folder)
    assert report["other_tensors"] == ["base_model.model.model.embed_tokens.lora_embedding_A"]
    assert len(report["modules"]) == 14
    (tmp_path / "out").mkdir()
    with pytest.raises(RankError, match="1 LoRA weights are not plain linear pairs"):
        resize_adapter(folder, tmp_path / "out", rank=2)
