"""The Dataset panel's preview shows a thumbnail for rows with images, read off the GUI thread at
thumbnail size, and names a missing or unreadable image in words."""
import json

import pytest
from PySide6.QtCore import QThread, Qt
from PySide6.QtWidgets import QApplication

from lorastudio.app.dataset import dataset_panel as panel_module
from lorastudio.app.dataset.dataset_panel import DatasetPanel
from lorastudio.app.dataset.thumbnails import THUMB, read_thumbnail
from tests.helpers.tiny_vlms import write_colour_data, write_image


@pytest.fixture
def panel(qtbot):
    p = DatasetPanel()
    qtbot.addWidget(p)
    p.resize(700, 600)
    p.show()
    return p


def shown_images(qtbot, panel, path):
    panel.load(str(path))
    qtbot.waitUntil(lambda: panel.model.columnCount() > 0 and panel.model.horizontalHeaderItem(0).text() == "Image",
                    timeout=10_000)
    return [panel.model.item(r, 0) for r in range(panel.model.rowCount())]


def test_rows_with_images_get_thumbnails_read_off_the_gui_thread(qtbot, panel, tmp_path, monkeypatch):
    threads = []
    real = panel_module.read_preview_images
    def recording(*args):
        threads.append(QThread.currentThread())
        return real(*args)
    monkeypatch.setattr(panel_module, "read_preview_images", recording)
    data = write_colour_data(tmp_path / "d", n=4, spelling="column")
    items = shown_images(qtbot, panel, data)
    assert threads and all(t is not QApplication.instance().thread() for t in threads)
    assert [i.text() for i in items] == ["000-red.png", "001-green.png", "002-blue.png", "003-yellow.png"]
    pixmap = items[0].data(Qt.DecorationRole)
    assert not pixmap.isNull() and max(pixmap.width(), pixmap.height()) == THUMB
    red = pixmap.toImage().pixelColor(pixmap.width() - 2, pixmap.height() - 2)
    assert red.red() > 180 and red.green() < 80                    # the red image, scaled
    assert str(tmp_path / "d" / "images" / "000-red.png") in items[0].toolTip()
    assert panel.model.horizontalHeaderItem(1).text() == "images"  # the file's own columns follow


def test_a_missing_or_unreadable_image_is_named_in_words(qtbot, panel, tmp_path):
    data = write_colour_data(tmp_path / "d", n=3, spelling="parts")
    (tmp_path / "d/images/001-green.png").unlink()
    (tmp_path / "d/images/002-blue.png").write_text("not a picture")
    with data.open("a") as fh:          # a text-only row in the same file shows no image
        fh.write(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                          {"role": "assistant", "content": "yo"}]}) + "\n")
    items = shown_images(qtbot, panel, data)
    assert items[0].text() == "000-red.png" and items[0].data(Qt.DecorationRole) is not None
    assert items[1].text() == "image missing: images/001-green.png"
    assert "does not exist" in items[1].toolTip() and items[1].data(Qt.DecorationRole) is None
    assert items[2].text() == "image unreadable: images/002-blue.png"
    assert "cannot be read as an image" in items[2].toolTip()
    assert items[3].text() == ""


def test_a_huge_image_is_decoded_at_thumbnail_size(tmp_path):
    big = write_image(tmp_path / "big.png", "blue", size=(6000, 4000))
    image, problem = read_thumbnail(str(big))
    assert problem == "" and (image.width(), image.height()) == (THUMB, 26)


def test_a_text_only_file_has_no_image_column(qtbot, panel, tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps({"text": "hello"}) + "\n")
    panel.load(str(f))
    qtbot.waitUntil(lambda: panel.preview is not None and panel._thumbs is not None, timeout=10_000)
    assert panel.model.horizontalHeaderItem(0).text() == "text"


def test_content_parts_read_as_text_with_image_marks(tmp_path):
    from lorastudio.core.data.preview import read_preview
    data = write_colour_data(tmp_path / "d", n=1, spelling="parts")
    assert read_preview(data).cells() == [["user: [image] What colour is this? · assistant: It is red."]]
