"""The rank report's words and numbers (torch-free), on reports built by hand."""
from __future__ import annotations

import math

import pytest

from lorastudio.core.runs.rank_report import (adapter_bytes, choose_rank, energy_rank, format_report, heat_grid,
                                              module_order, new_ranks, split_key, suggestion, summary, tail_error)


def module(name: str, values: list[float], d=(64, 32)) -> dict:
    total = sum(v * v for v in values)
    energy = [sum(v * v for v in values[:i + 1]) / total for i in range(len(values))]
    layer = int(name.split(".")[2])
    return {"name": name, "type": name.rsplit(".", 1)[-1], "layer": layer, "rank": len(values), "scale": 2.0,
            "shape": list(d), "singular_values": values, "energy": energy, "norm": math.sqrt(total),
            "effective_rank_90": energy_rank(energy, 0.9), "effective_rank_99": energy_rank(energy, 0.99)}


def report(modules: list[dict]) -> dict:
    return {"adapter": "/runs/x/adapter", "r": modules[0]["rank"], "lora_alpha": 32, "use_rslora": False,
            "use_dora": False, "bytes_per_value": 4, "modules": modules}


LOW = [10.0, 4.0, 2.0] + [0.01] * 13                  # 90 % of it in 2 ranks, 99 % in 3
FLAT = [1.0] * 16


def test_names_layers_and_order():
    assert split_key("base_model.model.model.layers.3.mlp.up_proj.lora_B.weight") == ("model.layers.3.mlp.up_proj", "B")
    assert split_key("base_model.model.lm_head.modules_to_save.weight") == ("lm_head.modules_to_save.weight", None)
    names = ["model.layers.1.mlp.down_proj", "model.layers.0.self_attn.v_proj", "model.layers.0.self_attn.q_proj",
             "model.layers.10.self_attn.q_proj", "model.layers.2.self_attn.q_proj"]
    assert sorted(names, key=module_order) == [names[2], names[1], names[0], names[4], names[3]]


def test_energy_ranks_and_tail_errors():
    assert energy_rank([0.5, 0.9, 1.0], 0.9) == 2 and energy_rank([0.5, 0.9, 1.0], 0.99) == 3
    assert tail_error([3.0, 4.0], 1) == pytest.approx(0.8) and tail_error([0.0, 0.0], 1) == 0.0
    assert choose_rank(LOW, 16, energy=0.99) == 3 and choose_rank(LOW, 16, rank=32) == 16
    assert choose_rank([0.0] * 4, 4, energy=0.9) == 1, "an untrained module keeps one rank (PEFT needs r ≥ 1)"


def test_a_low_rank_update_suggests_a_smaller_rank():
    rep = report([module(f"model.layers.{i}.self_attn.{t}", LOW) for i in range(10) for t in ("q_proj", "v_proj")])
    text = suggestion(rep, "runs/x")
    assert text.startswith("Rank 4 holds 99 % of the update in 100 % of modules (of 20): rank 4 instead of 16 "
                           "would very likely do") and "lorastudio resize runs/x OUT --rank 4" in text
    table = summary(rep)
    assert table["by_type"]["q_proj"] == {"modules": 10, "rank": 16, "mean_90": 2.0, "mean_99": 3.0,
                                         "max_90": 2, "max_99": 3}
    assert list(table["by_layer"]) == list(range(10))
    assert "q_proj" in format_report(rep) and "by layer" in format_report(rep)
    ranks = new_ranks(rep, energy=0.99)
    assert set(ranks.values()) == {3} and adapter_bytes(rep, ranks) * 16 == adapter_bytes(rep) * 3
    assert adapter_bytes(rep) == 20 * 16 * 96 * 4


def test_a_full_rank_update_says_so():
    rep = report([module(f"model.layers.{i}.mlp.up_proj", FLAT) for i in range(4)])
    assert suggestion(rep).startswith("The update uses its whole rank: 100 % of modules need all 16 ranks")
    mixed = report([module(f"model.layers.{i}.mlp.up_proj", FLAT if i < 1 else LOW) for i in range(4)])
    assert suggestion(mixed).startswith("Rank 16 fits")


def test_heat_grid_is_layers_by_types():
    rep = report([module("model.layers.0.self_attn.q_proj", LOW), module("model.layers.1.self_attn.q_proj", FLAT),
                  module("model.layers.1.mlp.up_proj", LOW)])
    layers, types, grid = heat_grid(rep)
    assert layers == [0, 1] and types == ["q_proj", "up_proj"] and grid == [[3, None], [16, 3]]
