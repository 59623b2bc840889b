"""Images in chat data, torch-free: the three spellings, paths relative to the data file, the
located errors, and the pixel budget."""
from __future__ import annotations

import pytest

from lorastudio.core.config import DataSection
from lorastudio.core.data.examples import stream_examples
from lorastudio.core.data.files import DataError
from lorastudio.core.data.images import IMAGE_MARKER, fit_pixels, images_digest, open_image
from tests.helpers.training import jsonl
from tests.helpers.tiny_vlms import write_colour_data, write_image


def examples(path):
    return list(stream_examples(str(path), DataSection(path=str(path))).examples)


@pytest.mark.parametrize("spelling", ["parts", "column", "sharegpt"])
def test_every_spelling_gives_the_image_in_the_user_turn_with_its_path_from_the_data_folder(tmp_path, spelling):
    data = write_colour_data(tmp_path / "set", 4, spelling)
    found = examples(data)
    assert len(found) == 4
    first = found[0]
    assert first.images == [str(tmp_path / "set" / "images" / "000-red.png")]
    user, answer = first.messages
    assert user["role"] == "user" and user["content"].count(IMAGE_MARKER) == 1
    assert "What colour is this?" in user["content"]
    assert answer == {"role": "assistant", "content": "It is red."}


def test_images_go_where_their_markers_are_and_unmarked_ones_before_the_first_question(tmp_path):
    write_image(tmp_path / "a.png", "red")
    write_image(tmp_path / "b.png", "blue")
    data = jsonl(tmp_path / "d.jsonl", [
        {"images": ["a.png", "b.png"], "messages": [
            {"role": "user", "content": "left <image> right <image>"}, {"role": "assistant", "content": "two"}]}])
    (marked,) = examples(data)
    (unmarked,) = examples(jsonl(tmp_path / "pc.jsonl", [{"images": ["b.png"], "prompt": "which?", "completion": "blue"}]))
    assert marked.images == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert marked.messages[0]["content"] == "left <image> right <image>"
    assert unmarked.messages[0]["content"] == "<image>\nwhich?" and unmarked.images == [str(tmp_path / "b.png")]


def test_a_part_without_a_path_takes_the_images_column_in_order(tmp_path):
    data = jsonl(tmp_path / "d.jsonl", [{"images": ["x.png", "y.png"], "messages": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "and"}, {"type": "image"}]},
        {"role": "assistant", "content": "both"}]}])
    (ex,) = examples(data)
    assert ex.images == [str(tmp_path / "x.png"), str(tmp_path / "y.png")]
    assert ex.messages[0]["content"] == "<image>and<image>"


@pytest.mark.parametrize("row, words", [
    ({"images": ["a.png", "b.png"], "messages": [{"role": "user", "content": "<image> only one"},
                                                 {"role": "assistant", "content": "x"}]},
     "1 <image> place(s) but 2 image(s)"),
    ({"messages": [{"role": "user", "content": "hi"},
                   {"role": "assistant", "content": [{"type": "image", "image": "a.png"}]}]},
     "an assistant turn holds an image"),
    ({"messages": [{"role": "user", "content": [{"type": "image"}]}, {"role": "assistant", "content": "x"}]},
     "an image part names no file"),
    ({"messages": [{"role": "user", "content": [{"type": "audio", "audio": "a.wav"}]},
                   {"role": "assistant", "content": "x"}]}, "neither text"),
    ({"images": [3], "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "x"}]},
     "field 'images' must hold image paths"),
])
def test_rows_whose_images_do_not_add_up_are_named_by_file_and_line(tmp_path, row, words):
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    data = jsonl(tmp_path / "d.jsonl", [good, good, row])
    with pytest.raises(DataError) as err:
        examples(data)
    assert f"{data}, line 3" in err.value.message and words in err.value.message
    assert err.value.hint


def test_a_missing_or_unreadable_image_is_named_with_its_row_and_what_to_do(tmp_path):
    with pytest.raises(DataError) as err:
        open_image(str(tmp_path / "gone.png"), "line 7", "d.jsonl")
    assert "d.jsonl, line 7: image" in err.value.message and "gone.png does not exist" in err.value.message
    assert "relative paths start at the data file's folder" in err.value.hint
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError) as err:
        open_image(str(broken), "line 2", "d.jsonl")
    assert "d.jsonl, line 2: image" in err.value.message and "cannot be read" in err.value.message
    assert "PNG, JPEG or WebP" in err.value.hint


def test_the_pixel_budget_scales_large_images_down_keeping_their_shape(tmp_path):
    big = open_image(str(write_image(tmp_path / "big.png", "green", (400, 200))), "line 1", "d")
    small = fit_pixels(big, 20_000)
    w, h = small.size
    assert w * h <= 20_000 and w * h > 19_000 and abs(w / h - 2.0) < 0.05
    assert fit_pixels(big, 0) is big and fit_pixels(big, 80_000) is big
    assert open_image(str(tmp_path / "big.png"), "line 1", "d", max_pixels=5_000).size[0] * \
        open_image(str(tmp_path / "big.png"), "line 1", "d", max_pixels=5_000).size[1] <= 5_000


def test_the_images_digest_follows_their_bytes_not_their_names(tmp_path):
    a = write_image(tmp_path / "a.png", "red")
    before = images_digest([a])
    assert images_digest([a]) == before
    write_image(a, "blue")
    assert images_digest([a]) != before
