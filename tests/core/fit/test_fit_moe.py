"""The memory model on mixtures of experts (issue 28): the experts' LoRA (one A and B per expert),
its gradients and AdamW states counted exactly from the targets report, the activations of routed
tokens (top-k of E experts), PEFT's merged expert weights when the grouped path is off, and experts and routers kept 16-bit under
4-bit quantization (bitsandbytes quantizes nn.Linear only). Tiny random models of four families and
Qwen3-30B-A3B's real shape as headers only."""
from __future__ import annotations

from dataclasses import replace

import pytest

from lorastudio.core.config import RunConfig
from lorastudio.core.fit.calibration import Calibration
from lorastudio.core.fit.memory_model import (LORA_STATE_BYTES, NF4_BYTES, Shape, estimate,
                                              layer_activation_elements, moe_mlp_elements)
from lorastudio.core.models.info import read_model_info
from lorastudio.core.models.targets import discover_targets
from tests.helpers.model_shapes import header_only_model
from tests.helpers.tiny_families import MOE, make_family

GIB = 1 << 30
NO_CAL = Calibration()
EXPERTS = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]


@pytest.fixture(autouse=True)
def own_data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LORASTUDIO_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def qwen3_30b(tmp_path_factory):
    return read_model_info(str(header_only_model(tmp_path_factory.mktemp("shapes") / "q", "qwen3-30b-a3b")))


def config(info, targets="all-linear", r=16, **training) -> RunConfig:
    quant = training.pop("quantization", "4bit")
    return RunConfig.from_dict({"model": str(info.path), "quantization": quant,
                                "lora": {"r": r, "alpha": 2 * r, "targets": targets, "dropout": 0.0},
                                "data": {"path": "data.jsonl"},
                                "training": {"batch_size": 1, "seq_len": 2048, **training}})


@pytest.mark.parametrize("family", MOE)
def test_lora_term_is_the_reports_count_with_experts(tmp_path, family):
    info = read_model_info(str(make_family(tmp_path / "m", family)))
    report = discover_targets(info)
    for targets in ("all-linear", EXPERTS, ["q_proj"]):
        est = estimate(config(info, targets), info, "checkpoint", calibration=NO_CAL)
        assert est.term("lora").bytes == report.lora_params(targets, 16) * LORA_STATE_BYTES, targets
        assert "experts" not in [t.key for t in est.terms]           # the grouped path merges nothing
        peft = estimate(config(info, targets, fused_lora=False), info, "checkpoint", calibration=NO_CAL)
        assert ("experts" in [t.key for t in peft.terms]) == bool(report.matching_experts(targets))


def test_qwen3_30b_shape_experts_and_routed_tokens(qwen3_30b):
    info = qwen3_30b
    report = discover_targets(info)
    shape = Shape.of(info)
    assert (shape.experts, shape.top_k, shape.expert_intermediate, shape.moe_layers) == (128, 8, 768, 48)
    # one A and B per expert: 48 layers × 128 experts × 16 × ((2048 + 1536) + (768 + 2048))
    assert report.lora_params(EXPERTS, 16) == 48 * 128 * 16 * ((2048 + 1536) + (768 + 2048))
    # a routed token keeps its gathered input, gate/up, act, product and weighted output per expert:
    # one more routed expert adds 2·hidden + 4·moe_intermediate values per token
    more = replace(shape, top_k=9)
    assert moe_mlp_elements(more) - moe_mlp_elements(shape) == 2 * 2048 + 4 * 768
    assert (layer_activation_elements(shape, [], 16, 0.0, moe=True)
            - layer_activation_elements(shape, [], 16, 0.0)) == moe_mlp_elements(shape) - (2 * 2048 + 4 * 6144)
    elems = layer_activation_elements(shape, [], 16, 0.0, moe=True)
    per_layer_lora = len(report.matching_modules("all-linear")) // 48 * 2 * 16
    peft = estimate(config(info, quantization="none", fused_lora=False), info, "none", calibration=NO_CAL)
    assert peft.term("activations").bytes == int((elems + per_layer_lora) * 48 * 2 * 2048 + 2 * 2048 * 2 * 2048)
    grouped = estimate(config(info, quantization="none"), info, "none", calibration=NO_CAL)
    routed_lora = 8 * 16 * 2                 # top-8 copies × r × (gate_up, down)
    assert grouped.term("activations").bytes == int((elems + per_layer_lora + routed_lora) * 48 * 2 * 2048
                                                    + 2 * 2048 * 2 * 2048)


def test_qwen3_30b_experts_stay_16_bit_under_nf4_and_peft_merges_them(qwen3_30b):
    """With training.fused_lora false PEFT's ParamWrapper merges B·A into every expert stack."""
    info = qwen3_30b
    report = discover_targets(info)
    expert_weights = 48 * 128 * 3 * 768 * 2048
    est = estimate(config(info, fused_lora=False), info, "checkpoint", calibration=NO_CAL)
    quantized = sum(i * o for m, (i, o) in report.linear_modules.items()
                    if m not in report.output_modules and m not in report.routers)
    assert est.term("weights").detail.startswith(f"{quantized:,} quantized")
    assert est.term("weights").bytes > expert_weights * 2            # the experts alone: 58 GB in bf16
    merged = est.term("experts")
    assert merged.bytes == 3 * expert_weights // 48 * 2               # checkpointing: one layer's, + its gradients
    none = estimate(config(info, fused_lora=False), info, "none", calibration=NO_CAL)
    assert none.term("experts").bytes == (48 + 2) * expert_weights // 48 * 2
    attention = ["q_proj", "k_proj", "v_proj", "o_proj"]
    attention_only = estimate(config(info, attention, fused_lora=False), info, "checkpoint", calibration=NO_CAL)
    assert "experts" not in [t.key for t in attention_only.terms]
    assert not attention_only.fits(24 * GIB)      # PEFT + bitsandbytes: 16-bit experts do not fit 24 GB
    grouped = estimate(config(info, attention), info, "checkpoint", calibration=NO_CAL)
    assert grouped.fits(24 * GIB)                 # the grouped path's NF4 experts do (the load aside)


def test_qwen3_30b_grouped_path_stores_the_experts_nf4(qwen3_30b):
    """On the grouped path (training.fused_lora, the default) 4-bit stores the experts NF4 after
    loading, adapted or not, and one expert stack is dequantized at a time."""
    info = qwen3_30b
    expert_weights = 48 * 128 * 3 * 768 * 2048
    peft = estimate(config(info, fused_lora=False), info, "checkpoint", calibration=NO_CAL)
    grouped = estimate(config(info), info, "checkpoint", calibration=NO_CAL)
    saved = expert_weights * (2 - NF4_BYTES)
    assert peft.term("weights").bytes - grouped.term("weights").bytes == pytest.approx(saved, rel=1e-6)
    assert grouped.term("weights").detail.startswith(f"{905969664 + expert_weights:,} quantized")
    stack = 128 * 2048 * 1536 * 2                         # the largest stack (gate_up_proj) in bf16
    assert grouped.term("scratch").bytes - peft.term("scratch").bytes == stack
    attention = estimate(config(info, ["q_proj", "v_proj"]), info, "checkpoint", calibration=NO_CAL)
    assert attention.term("weights").bytes == grouped.term("weights").bytes    # unadapted experts NF4 too
    assert "experts" not in [t.key for t in attention.terms]
    assert 33 * GIB < grouped.peak < 35 * GIB < peft.peak      # 34 GiB against PEFT path's 80 GiB
    assert not grouped.fits(24 * GIB)                # r 16 on every expert: 9.6 GiB of LoRA state alone
