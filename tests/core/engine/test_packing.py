"""Padding-free packing: the same loss, the same logits per example, the same evaluation, and a
model that cannot keep examples apart falls back to padding and says so."""
import pytest
import torch

from lorastudio.core.config import DataSection
from lorastudio.core.data.chat_masks import IGNORE_INDEX
from lorastudio.core.engine.batches import collate, count_label_tokens, count_real_tokens, prepare_data
from lorastudio.core.engine.batching import packing
from lorastudio.core.engine.model_loading import load_tokenizer
from tests.helpers.tiny_models import SENTENCES
from tests.helpers.training import CHAT, jsonl, train


@pytest.fixture(autouse=True)
def token_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LORASTUDIO_CACHE", str(tmp_path / "cache"))


def varied_rows(n: int) -> list[dict]:
    """Texts of very different lengths (a third of a sentence to four), as real instruction data has."""
    return [{"text": " ".join(SENTENCES[(i + j) % len(SENTENCES)] for j in range(1 + (i * 7) % 4))[:10 + (i * 37) % 200]}
            for i in range(n)]


def model_and_data(tmp_path, tiny_llama, rows, packing_on=True, **data):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    path = jsonl(tmp_path / "d.jsonl", rows)
    cfg = DataSection(path=str(path), packing=packing_on, validation_split=0.0, **data)
    prepared = prepare_data(cfg, load_tokenizer(tiny_llama, False), 128, 6, 0, model=model)
    return model, prepared


def test_rows_restart_positions_and_never_predict_across_examples(tmp_path, tiny_llama):
    _, data = model_and_data(tmp_path, tiny_llama, varied_rows(12))
    assert data.packing == "on" and data.train.row_budget == 128
    items = [data.train_set.items[i] for i in data.train.indices(0)]
    batch = data.train.batch(0)
    assert "attention_mask" not in batch
    assert batch["input_ids"].shape[0] < len(items) and batch["input_ids"].shape[1] <= 128
    assert count_real_tokens(batch) == sum(len(e.input_ids) for e in items)
    assert count_label_tokens(batch) == count_label_tokens(collate(items, data.train.pad_id))
    # every example appears whole, its positions 0..n-1, its first label ignored
    for e in items:
        n = len(e.input_ids)
        found = False
        for r in range(batch["input_ids"].shape[0]):
            ids, pos, lab = (batch[k][r].tolist() for k in ("input_ids", "position_ids", "labels"))
            for at in (i for i, p in enumerate(pos) if p == 0):
                if ids[at:at + n] == e.input_ids and pos[at:at + n] == list(range(n)):
                    assert lab[at] == IGNORE_INDEX and lab[at + 1:at + n] == e.labels[1:]
                    found = True
        assert found


def test_packed_loss_and_logits_equal_padded(tmp_path, tiny_llama):
    model, data = model_and_data(tmp_path, tiny_llama, varied_rows(12))
    items = [data.train_set.items[i] for i in data.train.indices(0)]
    padded, packed = collate(items, data.train.pad_id), data.train.batch(0)
    n = count_label_tokens(padded)
    model.eval()
    with torch.no_grad():
        out_pad = model(**padded, num_items_in_batch=n)
        out_pack = model(**packed, num_items_in_batch=n)
    assert float(out_pack.loss) == pytest.approx(float(out_pad.loss), abs=1e-4)
    # logits of each example, found in its packed row by its position restart
    for i, e in enumerate(items):
        ln = len(e.input_ids)
        for r in range(packed["input_ids"].shape[0]):
            ids, pos = packed["input_ids"][r].tolist(), packed["position_ids"][r].tolist()
            for at in (j for j, p in enumerate(pos) if p == 0):
                if ids[at:at + ln] == e.input_ids:
                    diff = (out_pack.logits[r, at:at + ln] - out_pad.logits[i, :ln]).abs().max()
                    assert float(diff) < 1e-4


def test_chat_examples_pack_with_their_masks(tmp_path, tiny_chat_llama):
    rows = [CHAT, {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "the cat"}]}] * 3
    model, data = model_and_data(tmp_path, tiny_chat_llama, rows)
    items = [data.train_set.items[i] for i in data.train.indices(0)]
    padded, packed = collate(items, data.train.pad_id), data.train.batch(0)
    n = count_label_tokens(padded)
    assert count_label_tokens(packed) == n
    with torch.no_grad():
        assert float(model(**packed, num_items_in_batch=n).loss) == pytest.approx(
            float(model(**padded, num_items_in_batch=n).loss), abs=1e-4)


@pytest.mark.parametrize("fixture", ["tiny_qwen2", "tiny_gpt2"])
def test_other_architectures_are_measured_exact(tmp_path, request, fixture):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(request.getfixturevalue(fixture))
    exact, why = packing.probe(model, torch.device("cpu"))
    assert exact, why


class CrossingModel(torch.nn.Module):
    """A real model that ignores position_ids (as an architecture without packed support would):
    its attention runs across the examples of a packed row."""
    def __init__(self, inner):
        super().__init__()
        self.inner, self.config = inner, inner.config

    def forward(self, input_ids=None, position_ids=None, **kwargs):
        return self.inner(input_ids=input_ids, **kwargs)


def test_a_model_that_crosses_examples_falls_back_to_padding(tmp_path, tiny_llama):
    from transformers import AutoModelForCausalLM
    crossing = CrossingModel(AutoModelForCausalLM.from_pretrained(tiny_llama))
    path = jsonl(tmp_path / "d.jsonl", varied_rows(8))
    data = prepare_data(DataSection(path=str(path), validation_split=0.0), load_tokenizer(tiny_llama, False),
                        128, 4, 0, model=crossing)
    assert data.packing == "fallback" and "crosses example boundaries" in data.packing_note
    assert data.train.row_budget == 0 and "attention_mask" in data.train.batch(0)
    assert data.summary()["packing"] == "fallback"


def test_first_fit_rows_respect_the_budget():
    lengths = [50, 70, 30, 100, 20, 128, 5]
    rows = packing.fill_rows(lengths, 128)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 128 for row in rows)
    assert len(rows) == 4          # 403 tokens: at least 4 rows of 128


def train_events(make_config, tmp_path, text, packing_on: bool, **kw):
    path = jsonl(tmp_path / f"v{packing_on}.jsonl", varied_rows(40))
    config = make_config(data__path=str(path), data__packing=packing_on, training__batch_size=4, **kw)
    trainer, status, events = train(config, tmp_path / f"run-{packing_on}-{text}")
    return trainer, events


def test_training_and_evaluation_agree_with_packing_on_and_off(make_config, tmp_path):
    """The same steps: losses equal step by step, the eval losses too, tokens/s counts real tokens."""
    on, ev_on = train_events(make_config, tmp_path, "a", True, training__max_steps=4, training__eval_every=2)
    off, ev_off = train_events(make_config, tmp_path, "a", False, training__max_steps=4, training__eval_every=2)
    data_on = next(e for e in ev_on if e["type"] == "data")
    assert data_on["packing"] == "on" and next(e for e in ev_off if e["type"] == "data")["packing"] == "off"
    said = next(e["message"] for e in ev_on if e["type"] == "log" and e["message"].startswith("Packing on"))
    # the log speaks of what it means (issue 33, point 7); the check's figures and the cache's path stay in `data`
    assert "difference" not in said and data_on["cache"] not in said and "without padding" in said
    assert "tokenized and cached for the next run" in said and "difference" in data_on["packing_note"]
    loss_on = [e["loss"] for e in ev_on if e["type"] == "step"]
    loss_off = [e["loss"] for e in ev_off if e["type"] == "step"]
    assert loss_on == pytest.approx(loss_off, abs=1e-4)
    eval_on = [e["loss"] for e in ev_on if e["type"] == "eval"]
    eval_off = [e["loss"] for e in ev_off if e["type"] == "eval"]
    assert len(eval_on) == 2 and eval_on == pytest.approx(eval_off, abs=1e-4)


def test_evaluation_of_an_unchanged_model_is_identical(make_config, tmp_path):
    from lorastudio.core.config import RunConfig
    from lorastudio.core.engine.trainer import Trainer
    from lorastudio.core.journal import JournalWriter
    from lorastudio.core.preflight import check_config
    losses = []
    path = jsonl(tmp_path / "v.jsonl", varied_rows(40))
    for on in (True, False):
        cfg = RunConfig.load(make_config(data__path=str(path), data__packing=on, data__validation_split=0.3))
        info, _ = check_config(cfg)
        trainer = Trainer(cfg, info, tmp_path / f"r{on}", JournalWriter(tmp_path / f"e{on}.jsonl"))
        (tmp_path / f"r{on}").mkdir()
        trainer.setup()
        assert trainer.data.packing == ("on" if on else "off")
        losses.append(trainer.evaluate())
    assert losses[0] == pytest.approx(losses[1], abs=1e-4)
