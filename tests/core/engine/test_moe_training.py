"""Mixture-of-experts models train (issue 28): tiny random Qwen3-MoE, Mixtral, DeepSeek-V3 and
gpt-oss models through the real loading code and the real train job (CPU, no quantization).

- the count the targets report announces is what PEFT creates and what the journal's `start`
  event says trains (all-linear, experts only, a router named explicitly);
- all-linear at r 16 is accepted and a short run records its loss;
- the fast path keeps PEFT's gradients to 1e-4 (fp32): attention, dense and shared MLPs fused,
  the experts' LoRA on the grouped path (core/engine/training/expert_lora.py), aligned rank or not;
- the adapter a run saves loads in plain PEFT and gives the trained model's logits;
- gpt-oss keeps padding: its attention (eager, with sinks; transformers 5.25 offers no sdpa for it
  and refuses flex attention with sinks on the CPU) crosses packed examples' boundaries, and the run
  says so; the other three pack.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lorastudio.core.config import RunConfig
from lorastudio.core.engine.fast_lora import unfuse_lora_layers
from lorastudio.core.engine.model_loading import load_for_training, trainable_parameters
from lorastudio.core.journal import read_events
from lorastudio.core.models.info import read_model_info
from lorastudio.core.models.targets import discover_targets
from lorastudio.core.plans.train import TrainRequest, start_train
from lorastudio.core.runs.folders import prepare_run
from tests.core.engine.test_fast_lora import close, loss_and_grads
from tests.helpers.tiny_families import MOE, make_family
from tests.helpers.tiny_models import write_config

EXPERTS = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]


@pytest.fixture(scope="module")
def moe_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("moe")
    made: dict[str, Path] = {}

    def model(family: str) -> Path:
        if family not in made:
            made[family] = make_family(root / family.replace(" ", "_"), family)
        return made[family]
    return model


def config(tmp_path: Path, model: Path, data: Path, **overrides) -> RunConfig:
    path = write_config(tmp_path / f"c{len(list(tmp_path.glob('c*.yaml')))}.yaml", model, data, **overrides)
    return RunConfig.load(path)


def loaded_with_b(cfg: RunConfig):
    from lorastudio.core.engine.batches import prepare_data
    lm = load_for_training(cfg, read_model_info(cfg.model))
    with torch.no_grad():                 # B starts at zero: give it values so every gradient flows
        gen = torch.Generator().manual_seed(1)
        for name, p in lm.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    data = prepare_data(cfg.data, lm.tokenizer, cfg.training.seq_len, cfg.training.batch_size, 0)
    return lm, data.train.batch(0)


@pytest.mark.parametrize("family", MOE)
@pytest.mark.parametrize("targets", ["all-linear", EXPERTS])
def test_announced_count_is_what_peft_trains(tmp_path, text_jsonl, moe_models, family, targets):
    model = moe_models(family)
    cfg = config(tmp_path, model, text_jsonl, lora__r=16, lora__targets=targets, lora__dropout=0.05)
    report = discover_targets(read_model_info(str(model)))
    lm = load_for_training(cfg, read_model_info(cfg.model))
    trained = sum(p.numel() for p in trainable_parameters(lm.model))
    assert trained == report.lora_params(targets, 16) > 0
    adapted = {n.split(".lora_")[0].replace(".base_layer", "") for n, _p in lm.model.named_parameters()
               if "lora_" in n}
    assert not any(r in name for name in adapted for r in report.routers)     # routers only when named
    if targets == "all-linear" and family == "DeepSeek-V3":   # dense first layer and shared experts adapted
        assert any(n.endswith("layers.0.mlp.gate_proj") for n in adapted)
        assert any(n.endswith("layers.1.mlp.shared_experts.down_proj") for n in adapted)
    if cfg.lora.dropout and any("experts" in n for n in adapted):
        assert any("train without dropout" in note for note in lm.notes), lm.notes


@pytest.mark.parametrize("family", MOE)
def test_named_router_is_adapted_and_counted(tmp_path, text_jsonl, moe_models, family):
    model = moe_models(family)
    report = discover_targets(read_model_info(str(model)))
    router = next(t.name for t in report.targets if t.group == "router")
    cfg = config(tmp_path, model, text_jsonl, lora__r=4, lora__targets=["q_proj", router])
    lm = load_for_training(cfg, read_model_info(cfg.model))
    assert sum(p.numel() for p in trainable_parameters(lm.model)) == report.lora_params(["q_proj", router], 4)


@pytest.mark.parametrize("family", MOE)
@pytest.mark.parametrize("r,kernel", [(8, True), (2, True), (8, False)])     # False: one matmul per expert
def test_grouped_expert_path_keeps_peft_gradients(tmp_path, text_jsonl, moe_models, family, r, kernel,
                                                  monkeypatch):
    from lorastudio.core.engine.training import expert_lora
    monkeypatch.setitem(expert_lora._GROUPED_MM, "usable", kernel)
    check_grouped_path(tmp_path, text_jsonl, moe_models, family, r)


@pytest.mark.parametrize("family", ["Phi-3.5-MoE", "LFM2-MoE", "Jamba"])
def test_grouped_expert_path_on_other_layouts(tmp_path, text_jsonl, moe_models, family):
    check_grouped_path(tmp_path, text_jsonl, moe_models, family, 8)


def check_grouped_path(tmp_path, text_jsonl, moe_models, family, r):
    cfg = config(tmp_path, moe_models(family), text_jsonl, lora__r=r, lora__targets="all-linear")
    report = discover_targets(read_model_info(cfg.model))
    lm, batch = loaded_with_b(cfg)
    assert sum(p.numel() for p in trainable_parameters(lm.model)) == report.lora_params("all-linear", r)
    moe_blocks = len({p.rsplit(".experts.", 1)[0] for p in report.expert_params})
    assert any(f"grouped expert LoRA on {moe_blocks} MoE blocks" in n for n in lm.notes), lm.notes
    if family == "DeepSeek-V3":        # the dense first layer's MLP fused whole, though PEFT took it as parameters
        assert any("SwiGLU MLPs fused whole" in n for n in lm.notes), lm.notes
    fused_loss, fused = loss_and_grads(lm.model, batch)
    unfuse_lora_layers(lm.model)
    assert not any(hasattr(m, "_grouped_experts") for m in lm.model.modules())
    peft_loss, peft = loss_and_grads(lm.model, batch)
    assert abs(fused_loss - peft_loss) < 1e-5
    experts = {k: v for k, v in peft.items() if ".experts." in k}
    assert experts and all(float(v.abs().max()) > 0 for v in experts.values())
    close({k: fused[k] for k in experts}, experts, 1e-4)       # the experts' A and B, PEFT's to 1e-4
    close(fused, peft, 1e-4)


@pytest.mark.parametrize("family", MOE)
def test_train_job_all_linear_r16_journals_the_announced_count(tmp_path, text_jsonl, moe_models, family,
                                                                inline_jobs):
    model = moe_models(family)
    run_dir = tmp_path / "run"
    path = write_config(tmp_path / "run.yaml", model, text_jsonl, lora__r=16, lora__targets="all-linear",
                        training__max_steps=3, training__save_every=0, training__lr=1e-2)
    prepare_run(RunConfig.load(path), run_dir)
    job = start_train(TrainRequest(run_dir))
    events = read_events(run_dir / "events.jsonl")
    assert job.returncode() == 0, events[-3:]
    start = next(e for e in events if e["type"] == "start")
    report = discover_targets(read_model_info(str(model)))
    assert start["trainable_params"] == report.lora_params("all-linear", 16)
    assert "grouped-experts" in start["kernels"]
    losses = [e["loss"] for e in events if e["type"] == "step"]
    assert len(losses) == 3 and all(loss == loss and loss > 0 for loss in losses)
    packing = next(e["message"] for e in events if e["type"] == "log" and e["message"].startswith("Packing "))
    if family == "gpt-oss":     # sinks: sdpa is not offered, eager crosses the boundary, flex refuses on CPU
        assert packing.startswith("Packing fallback: this model's attention (eager) crosses example boundaries")
    else:
        assert packing.startswith("Packing on: attention stays inside each example")
    # the saved adapter loads in plain PEFT (its own v4 -> v5 target rewrite included) and is the trained one
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, run_dir / "adapter").eval()
    assert sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n) == start["trainable_params"]
    assert all(float(p.abs().sum()) > 0 for n, p in peft_model.named_parameters() if "lora_B" in n)


@pytest.mark.parametrize("family", ["Mixtral", "DeepSeek-V3", "gpt-oss"])
def test_merge_of_an_moe_adapter_keeps_its_answers(tmp_path, text_jsonl, moe_models, family, inline_jobs):
    """The merge job loads base + adapter in plain PEFT, merges the experts' LoRA into their 3-D
    weights and compares the reloaded merged model with base + adapter (its fidelity event)."""
    from lorastudio.core.plans.merge import MergeRequest, plan_merge, start_merge
    model = moe_models(family)
    run_dir = tmp_path / "run"
    path = write_config(tmp_path / "run.yaml", model, text_jsonl, lora__r=8, lora__targets="all-linear",
                        training__max_steps=2, training__save_every=0, training__lr=5e-2)
    prepare_run(RunConfig.load(path), run_dir)
    assert start_train(TrainRequest(run_dir)).returncode() == 0
    job = start_merge(plan_merge(MergeRequest(run_dir, tmp_path / "merged", dtype="fp32", device="cpu")))
    events = read_events(job.job_dir / "events.jsonl")
    assert job.returncode() == 0, events[-3:]
    fidelity = next(e for e in events if e["type"] == "fidelity")
    assert not fidelity["flagged"] and fidelity["greedy_agree"] == fidelity["prompts"], fidelity
    if family == "Mixtral":     # a GGUF LoRA of the experts is not written yet: refused in words
        pytest.importorskip("gguf")
        from lorastudio.core.plans.export_gguf import ExportGgufRequest, plan_export_gguf, start_export_gguf
        job = start_export_gguf(plan_export_gguf(ExportGgufRequest(run_dir, tmp_path / "a.gguf", adapter_only=True)))
        error = next(e for e in read_events(job.job_dir / "events.jsonl") if e["type"] == "error")
        assert job.returncode() == 1 and error["kind"] == "export_gguf"
        assert "the experts' 3-D weights (model.layers.0.mlp.experts)" in error["message"]
        assert "without --adapter-only" in error["hint"]


@pytest.mark.parametrize("family", ["Qwen3-MoE", "gpt-oss"])
def test_stop_and_resume_matches_uninterrupted_run(tmp_path, text_jsonl, moe_models, family):
    """Checkpoints hold the experts' A and B and their optimizer state: a run stopped at step 2 and
    resumed ends with the uninterrupted run's adapter (grouped path on, dropout on the modules)."""
    from safetensors.torch import load_file
    from tests.helpers.training import train
    path = write_config(tmp_path / "c.yaml", moe_models(family), text_jsonl, lora__r=8, lora__dropout=0.1,
                        lora__targets="all-linear", training__max_steps=4, training__save_every=0,
                        data__validation_split=0.0)
    train(path, tmp_path / "full")
    _trainer, status, _ = train(path, tmp_path / "part", stop_after=2)
    assert status == "stopped"
    _trainer, status, _ = train(path, tmp_path / "part", resume_from=tmp_path / "part" / "checkpoints" / "step-000002")
    assert status == "completed"
    full = load_file(tmp_path / "full" / "adapter" / "adapter_model.safetensors")
    part = load_file(tmp_path / "part" / "adapter" / "adapter_model.safetensors")
    assert full.keys() == part.keys() and any(".experts." in k for k in full)
    assert max(float((full[k] - part[k]).abs().max()) for k in full) < 1e-6


@pytest.mark.parametrize("family", ["Qwen3-MoE", "gpt-oss"])
def test_4bit_stores_the_experts_nf4_with_peft_s_gradients(tmp_path, text_jsonl, moe_models, family):
    """bitsandbytes leaves 3-D experts 16-bit: the grouped blocks' stacks go NF4 after loading (the
    16-bit copies freed), dequantized in the forward and the backward; the gradients are PEFT's on
    the same (dequantized) weights."""
    pytest.importorskip("bitsandbytes")
    cfg = config(tmp_path, moe_models(family), text_jsonl, quantization="4bit", lora__r=8,
                 lora__targets="all-linear")
    lm, batch = loaded_with_b(cfg)
    note = next(n for n in lm.notes if n.startswith("experts NF4: 4 expert weight stacks quantized"))
    experts = [m for m in lm.model.modules() if "_nf4_experts" in m.__dict__]
    assert len(experts) == 2 and all(m.gate_up_proj.numel() == 0 and m.down_proj.numel() == 0 for m in experts)
    assert "GiB" in note
    fused_loss, fused = loss_and_grads(lm.model, batch)
    unfuse_lora_layers(lm.model)                   # PEFT's path on the dequantized stacks
    assert all(m.gate_up_proj.dim() == 3 for m in experts)
    peft_loss, peft = loss_and_grads(lm.model, batch)
    assert abs(fused_loss - peft_loss) < 1e-4
    close({k: v for k, v in fused.items() if ".experts." in k}, {k: v for k, v in peft.items() if ".experts." in k},
          1e-4)


def test_4bit_moe_run_trains_and_evaluates_with_nf4_experts(tmp_path, text_jsonl, moe_models, inline_jobs):
    model = moe_models("Mixtral")
    run_dir = tmp_path / "run"
    path = write_config(tmp_path / "run.yaml", model, text_jsonl, quantization="4bit", lora__r=16,
                        lora__targets=EXPERTS, training__max_steps=4, training__save_every=0,
                        training__eval_every=2, training__lr=1e-2)
    prepare_run(RunConfig.load(path), run_dir)
    job = start_train(TrainRequest(run_dir))
    events = read_events(run_dir / "events.jsonl")
    assert job.returncode() == 0, events[-3:]
    start = next(e for e in events if e["type"] == "start")
    assert start["trainable_params"] == discover_targets(read_model_info(str(model))).lora_params(EXPERTS, 16)
    assert any(e["type"] == "log" and e["message"].startswith("experts NF4: 4 expert weight stacks")
               for e in events)
    assert [e["step"] for e in events if e["type"] == "eval"] and len([e for e in events if e["type"] == "step"]) == 4


def test_disabled_adapter_on_the_grouped_path_is_the_base_model(tmp_path, text_jsonl, moe_models):
    """DPO's reference runs the model with the adapter off: the grouped path then computes the base alone."""
    from transformers import AutoModelForCausalLM
    model = moe_models("Qwen3-MoE")
    lm, batch = loaded_with_b(config(tmp_path, model, text_jsonl, lora__r=8, lora__targets="all-linear"))
    base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    lm.model.eval()
    with torch.no_grad():
        on = lm.model(input_ids=batch["input_ids"]).logits
        with lm.model.disable_adapter():
            off = lm.model(input_ids=batch["input_ids"]).logits
        plain = base(input_ids=batch["input_ids"]).logits
    assert float((off - plain).abs().max()) < 1e-4 < float((on - plain).abs().max())


@pytest.mark.parametrize("family", ["Mixtral", "gpt-oss"])
def test_4bit_stores_unadapted_experts_nf4_too(tmp_path, text_jsonl, moe_models, family):
    """Attention-only LoRA on a 4-bit MoE: the experts (not adapted) take the grouped path without
    LoRA and are stored NF4 as well; the attention's gradients are those of transformers' own experts
    on the same (dequantized) weights."""
    pytest.importorskip("bitsandbytes")
    cfg = config(tmp_path, moe_models(family), text_jsonl, quantization="4bit", lora__r=8,
                 lora__targets=["q_proj", "v_proj"])
    lm, batch = loaded_with_b(cfg)
    assert any(n.startswith("experts NF4: 4 expert weight stacks") for n in lm.notes), lm.notes
    assert "grouped-experts" not in lm.kernels           # nothing of the experts trains
    experts = [m for m in lm.model.modules() if "_nf4_experts" in m.__dict__]
    assert len(experts) == 2 and all(m.down_proj.numel() == 0 for m in experts)
    fused_loss, fused = loss_and_grads(lm.model, batch)
    unfuse_lora_layers(lm.model)                   # transformers' experts on the dequantized stacks
    assert all(m.down_proj.dim() == 3 and "_own_forward" not in m.__dict__ for m in experts)
    peft_loss, peft = loss_and_grads(lm.model, batch)
    assert abs(fused_loss - peft_loss) < 1e-4
    close(fused, peft, 1e-4)
