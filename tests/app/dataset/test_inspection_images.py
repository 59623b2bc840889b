"""The token inspector on a vision-language model's data: where the image tokens sit (one chip per
image, in place) and how many, from the real inspector's report on a tiny random Qwen2-VL."""
import pytest
from conftest import load_data, load_model

from lorastudio.app.dataset.inspection_text import image_caption, image_spans, stat_rows
from lorastudio.app.dataset.token_view import TokenView
from tests.helpers.tiny_vlms import write_colour_data, write_image


@pytest.fixture(scope="module")
def tiny_qwen2_vl(tmp_path_factory):
    from tests.helpers.tiny_vlms import make_vlm
    return make_vlm(tmp_path_factory.mktemp("vlm") / "tiny-qwen2-vl", "qwen2_vl")


@pytest.fixture(autouse=True)
def token_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LORASTUDIO_CACHE", str(tmp_path / "cache"))


def test_the_image_tokens_are_shown_where_they_sit_and_counted(qtbot, page, tiny_qwen2_vl, tmp_path, inline_jobs):
    panel = page.dataset_panel
    page.training_panel.widgets["training.seq_len"].setValue(256)
    load_model(qtbot, page, tiny_qwen2_vl)
    data = write_colour_data(tmp_path / "d", n=4)
    for image in (tmp_path / "d/images").iterdir():        # 84×56 px: several image tokens each
        write_image(image, image.stem.split("-")[1], size=(84, 56))
    load_data(qtbot, page, data)
    qtbot.waitUntil(lambda: panel.inspection.report is not None, timeout=90_000)
    report = panel.inspection.report
    ex = report["example"]
    positions = ex["image_tokens"]
    assert report["images"] == 4 and len(ex["images"]) == 1 and len(positions) >= 2    # the report's own fields
    view = panel.inspection
    assert [view.stats[k].text() for k in view.stats] == [v for _k, v in stat_rows(report)]
    assert view.stats["examples"].text().endswith("· 4 images")
    (first, last), = image_spans(positions)
    assert f"1 image: {len(positions)} image tokens at {first + 1}–{last + 1}, never trained" in \
        view.example_caption.text()
    tokens = view.token_view
    assert tokens.image_text() == f"[image 1 · {len(positions)} tokens]"
    text = tokens.toPlainText()
    before = "".join(t["text"] for t in ex["tokens"][:first])
    assert text.startswith(before + f"[image 1 · {len(positions)} tokens]")      # where the tokens are
    assert text.count("<|image_pad|>") == 0                                          # not one by one
    assert "It is red." in tokens.trained_text() and "image" not in tokens.trained_text()
    assert not view.image_swatch.isHidden()


def test_runs_of_image_tokens_become_one_chip_each():
    view = TokenView()
    tokens = [{"text": t, "trained": False} for t in ["<s>", "<img>", "<img>", "<img>", "hi", "<img>", "<img>"]]
    tokens.append({"text": "ok", "trained": True})
    view.set_tokens(tokens, [1, 2, 3, 5, 6])
    assert view.toPlainText() == "<s>[image 1 · 3 tokens]hi[image 2 · 2 tokens]ok"
    assert view.trained_text() == "ok"
    assert image_caption({"images": ["a.png", "b.png"], "image_tokens": [1, 2, 3, 5, 6]}) == \
        " · 2 images: 5 image tokens at 2–4, 6–7, never trained"
    assert image_caption({"tokens": []}) == ""
