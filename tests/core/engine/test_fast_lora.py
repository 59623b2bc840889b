"""The fused LoRA path and the memory modes compute what PEFT's own layers compute (CPU, fp32)."""
from pathlib import Path

import pytest
import torch

from lorastudio.core.config import RunConfig
from lorastudio.core.engine.batches import prepare_data
from lorastudio.core.engine.fast_lora import fuse_lora_layers, unfuse_lora_layers
from lorastudio.core.engine.model_loading import load_for_training
from lorastudio.core.models.info import read_model_info
from tests.helpers.tiny_models import write_config

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def loaded(tmp_path: Path, model: Path, data: Path, **overrides):
    cfg = RunConfig.load(write_config(tmp_path / f"c{len(list(tmp_path.iterdir()))}.yaml", model, data,
                                      lora__targets=ALL, **overrides))
    info = read_model_info(cfg.model)
    lm = load_for_training(cfg, info)
    with torch.no_grad():                 # B starts at zero: give it values so every gradient flows
        gen = torch.Generator().manual_seed(1)
        for name, p in lm.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    data_ = prepare_data(cfg.data, lm.tokenizer, cfg.training.seq_len, cfg.training.batch_size, 0)
    return lm, data_.train.batch(0)


def loss_and_grads(model, batch) -> tuple[float, dict[str, torch.Tensor]]:
    model.train()
    model.zero_grad(set_to_none=True)
    n = int((batch["labels"][:, 1:] != -100).sum())
    loss = model(**batch, num_items_in_batch=n).loss
    loss.backward()
    return float(loss), {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}


def close(a: dict, b: dict, tol: float) -> float:
    assert a.keys() == b.keys() and a
    worst = 0.0
    for k in a:
        err = float((a[k] - b[k]).abs().max() / (b[k].abs().max() + 1e-12))
        worst = max(worst, err)
    assert worst < tol, worst
    return worst


@pytest.mark.parametrize("quantization", ["none", "4bit", "8bit"])
def test_fused_lora_matches_peft_layers(tmp_path, tiny_llama, text_jsonl, quantization):
    if quantization == "8bit":
        pytest.importorskip("bitsandbytes")
    lm, batch = loaded(tmp_path, tiny_llama, text_jsonl, quantization=quantization)
    fused_kinds = {m._fast_kind for m in lm.model.modules() if hasattr(m, "_fast_kind")}
    assert len([m for m in lm.model.modules() if hasattr(m, "_fast_kind")]) == 2 * len(ALL)
    assert "fused-lora" in lm.kernels
    assert any("2 SwiGLU MLPs fused whole" in n for n in lm.notes), lm.notes
    fused_loss, fused = loss_and_grads(lm.model, batch)
    unfuse_lora_layers(lm.model)
    assert not any(hasattr(m, "_fast_kind") for m in lm.model.modules())
    peft_loss, peft = loss_and_grads(lm.model, batch)
    assert abs(fused_loss - peft_loss) < 1e-5 * max(1.0, abs(peft_loss))
    close(fused, peft, 1e-4)
    expected = {"none": "dense", "4bit": "nf4", "8bit": "int8"}[quantization]
    assert fused_kinds == {expected}


def test_fused_path_steps_aside_for_disabled_adapters_and_dropout(tmp_path, tiny_llama, text_jsonl):
    lm, batch = loaded(tmp_path, tiny_llama, text_jsonl)
    model = lm.model
    model.eval()
    with torch.no_grad():
        with model.disable_adapter():               # the reference model of preference training
            base_logits = model(input_ids=batch["input_ids"]).logits
        adapted = model(input_ids=batch["input_ids"]).logits
        unfuse_lora_layers(model)
        with model.disable_adapter():
            peft_base = model(input_ids=batch["input_ids"]).logits
    assert torch.allclose(base_logits, peft_base, atol=1e-6)
    assert not torch.allclose(base_logits, adapted, atol=1e-4)
    lm2, _ = loaded(tmp_path, tiny_llama, text_jsonl, lora__dropout=0.1)
    assert "fused-lora" not in lm2.kernels
    assert any("lora.dropout > 0" in n for n in lm2.notes)
    report = fuse_lora_layers(lm2.model)
    assert report.fused == 0 and report.skipped == {"lora.dropout > 0": 2 * len(ALL)}


def test_fused_mlp_trains_when_only_the_mlp_is_adapted(tmp_path, tiny_llama, text_jsonl):
    """Layer 0's MLP input then needs no gradient, but gate and up still get theirs."""
    mlp_only = ["gate_proj", "up_proj", "down_proj"]
    cfg = RunConfig.load(write_config(tmp_path / "m.yaml", tiny_llama, text_jsonl, lora__targets=mlp_only))
    lm = load_for_training(cfg, read_model_info(cfg.model))
    assert any("SwiGLU MLPs fused whole" in n for n in lm.notes)
    batch = prepare_data(cfg.data, lm.tokenizer, 64, 4, 0).train.batch(0)
    with torch.no_grad():
        for name, p in lm.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    _, fused = loss_and_grads(lm.model, batch)
    unfuse_lora_layers(lm.model)
    _, peft = loss_and_grads(lm.model, batch)
    close(fused, peft, 1e-4)
    assert all(g.abs().sum() > 0 for g in fused.values())


@pytest.mark.parametrize("mode", ["checkpoint", "lean"])
def test_memory_modes_match_no_checkpointing(tmp_path, tiny_llama, text_jsonl, mode):
    lm, batch = loaded(tmp_path, tiny_llama, text_jsonl, training__memory_mode="none")
    assert lm.memory_mode == "none"
    ref_loss, ref = loss_and_grads(lm.model, batch)
    lm2, _ = loaded(tmp_path, tiny_llama, text_jsonl, training__memory_mode=mode)
    assert lm2.memory_mode == mode
    assert any(f"memory mode {mode}" in n for n in lm2.notes)
    loss, grads = loss_and_grads(lm2.model, batch)
    assert abs(loss - ref_loss) < 1e-5
    close(grads, ref, 1e-4)


def test_auto_memory_mode_is_checkpoint_on_cpu_and_an_older_false_is_none(tmp_path, tiny_llama, text_jsonl):
    lm, _ = loaded(tmp_path, tiny_llama, text_jsonl, training__gradient_checkpointing=False)   # 0.2's key
    assert lm.memory_mode == "none"
    lm, _ = loaded(tmp_path, tiny_llama, text_jsonl)
    assert lm.memory_mode == "checkpoint"


@pytest.mark.parametrize("mode", ["checkpoint", "lean"])
def test_long_micro_batches_recompute_the_mlps_in_chunks_with_the_same_gradients(tmp_path, tiny_llama, text_jsonl,
                                                                                  mode, monkeypatch):
    import torch.utils.checkpoint as ckpt
    from lorastudio.core.engine.memory_modes import ChunkedForward
    lm, batch = loaded(tmp_path, tiny_llama, text_jsonl, training__memory_mode="none")
    ref_loss, ref = loss_and_grads(lm.model, batch)
    lm2, _ = loaded(tmp_path, tiny_llama, text_jsonl, training__memory_mode=mode)
    chunked = [m.forward for m in lm2.model.modules() if isinstance(getattr(m, "forward", None), ChunkedForward)]
    assert len(chunked) == 2 and any("recomputed 8,192 tokens at a time in rows longer" in n for n in lm2.notes)
    for forward in chunked:
        forward.chunk = 8                                    # this batch's rows are longer: chunks of 8 tokens
    assert batch["input_ids"].shape[1] > 8
    pieces = []
    plain = ckpt.checkpoint

    def counting(fn, *args, **kwargs):
        if any(fn is f.forward for f in chunked):
            pieces.append(args[0].shape)
        return plain(fn, *args, **kwargs)
    monkeypatch.setattr(ckpt, "checkpoint", counting)
    loss, grads = loss_and_grads(lm2.model, batch)
    assert pieces and all(shape[-2] <= 8 // shape[0] or shape[-2] == 1 for shape in pieces)
    assert abs(loss - ref_loss) < 1e-5
    close(grads, ref, 1e-4)
