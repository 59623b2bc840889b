"""The fused LoRA path takes nn.Linear subclasses too (issue 28): Falcon's projections are
FalconLinear, which computes the same x·Wᵀ (+ b). All eight LoRA layers of a tiny Falcon fuse, and
the gradients are PEFT's (CPU, fp32)."""
from __future__ import annotations

import pytest
import torch

from lorastudio.core.config import RunConfig
from lorastudio.core.engine.fast_lora import unfuse_lora_layers
from lorastudio.core.engine.model_loading import load_for_training
from lorastudio.core.models.info import read_model_info
from tests.core.engine.test_fast_lora import close, loss_and_grads
from tests.helpers.tiny_families import lora_targets, make_family
from tests.helpers.tiny_models import write_config


@pytest.mark.parametrize("family", ["Falcon", "Falcon (new decoder)"])
def test_falcon_linear_subclasses_fuse_with_peft_gradients(tmp_path, text_jsonl, family):
    from lorastudio.core.engine.batches import prepare_data
    model = make_family(tmp_path / "falcon", family)
    cfg = RunConfig.load(write_config(tmp_path / "c.yaml", model, text_jsonl, lora__targets=lora_targets(model)))
    lm = load_for_training(cfg, read_model_info(cfg.model))
    bases = [m.base_layer for m in lm.model.modules() if hasattr(m, "_fast_kind")]
    assert len(bases) == 8 and all(type(b).__name__ == "FalconLinear" for b in bases)
    assert not any("unsupported base layer" in n for n in lm.notes), lm.notes
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for name, p in lm.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    batch = prepare_data(cfg.data, lm.tokenizer, cfg.training.seq_len, cfg.training.batch_size, 0).train.batch(0)
    fused_loss, fused = loss_and_grads(lm.model, batch)
    unfuse_lora_layers(lm.model)
    peft_loss, peft = loss_and_grads(lm.model, batch)
    assert abs(fused_loss - peft_loss) < 1e-5
    close(fused, peft, 1e-4)
