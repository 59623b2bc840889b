"""A frozen vision tower stays out of the backward pass (engine/vision/loading.input_grads_to_the_text_only):
checkpointing hooks every sub-model's input embeddings to require a gradient, which made a frozen
tower build a graph, keep its blocks' inputs through the language model's pass and run a backward
pass for nothing. The language model's adapters, and an adapted projector or tower, still get theirs."""
import pytest

from lorastudio.core.config import RunConfig
from lorastudio.core.engine.batches import prepare_data
from lorastudio.core.engine.model_loading import load_for_training
from lorastudio.core.models.info import read_model_info
from tests.helpers.tiny_models import write_config
from tests.helpers.tiny_vlms import make_vlm, write_colour_data


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    root = tmp_path_factory.mktemp("frozen-tower")
    return make_vlm(root / "model", "qwen2_5_vl", vision_depth=3), write_colour_data(root / "data", 4)


def one_step(tmp_path, qwen, vision, mode):
    model, data = qwen
    cfg = RunConfig.load(write_config(tmp_path / f"{vision}-{mode}.yaml", model, data, quantization="none",
                                      lora__vision=vision, training__memory_mode=mode, training__seq_len=128,
                                      data__validation_split=0.0))
    lm = load_for_training(cfg, read_model_info(cfg.model))
    visual = next(m for n, m in lm.model.named_modules() if n.endswith("visual"))
    seen = {}
    for i, block in enumerate(visual.blocks):
        block.register_forward_hook(lambda m, args, out, i=i: seen.__setitem__(i, out.requires_grad))
    batch = prepare_data(cfg.data, lm.tokenizer, 128, 2, 0, processor=lm.processor).train.batch(0)
    lm.model.train()
    lm.model(**batch).loss.backward()
    grads = {n: p.grad for n, p in lm.model.named_parameters() if p.requires_grad and "lora_B" in n}
    return seen, grads


@pytest.mark.parametrize("mode", ["checkpoint", "lean"])
def test_a_frozen_tower_builds_no_graph_and_the_language_model_still_learns(tmp_path, qwen, mode):
    seen, grads = one_step(tmp_path, qwen, "none", mode)
    assert seen and not any(seen.values())          # no block's output needs a gradient: nothing kept for one
    assert grads and all(g is not None and g.abs().max() > 0 for g in grads.values())


@pytest.mark.parametrize("vision, part", [("projector", "merger"), ("all", "blocks")])
def test_an_adapted_projector_or_tower_still_gets_its_gradients(tmp_path, qwen, vision, part):
    seen, grads = one_step(tmp_path, qwen, vision, "checkpoint")
    theirs = {n: g for n, g in grads.items() if "visual" in n and part in n}
    assert theirs and all(g is not None and g.abs().max() > 0 for g in theirs.values())
    assert all(seen.values()) == (vision == "all")
