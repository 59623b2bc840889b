"""The Playground's image: a file chosen, or pasted from the clipboard (into the prompt, or with the
Paste button), sent with the prompt to a vision-language run.

A pasted image is written as a PNG under DATA/playground/images/ — the worker reads files — and
both that write and the thumbnail's read happen on the thread pool (app/dataset/thumbnails.py reads
at thumbnail size), so a large screenshot never holds up the window.
"""
from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import QApplication, QFileDialog, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QWidget

from lorastudio.app.dataset.thumbnails import read_thumbnail
from lorastudio.app.thread_pool import run_in_background

IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.bmp *.gif);;All files (*)"
THUMB = 48
_pasted = itertools.count(1)


def read_images(paths: list[str]) -> tuple[QImage | None, str]:
    """(the first image's thumbnail, "") or (None, what is wrong with the first bad one). Pool thread."""
    first = None
    for path in paths:
        image, problem = read_thumbnail(path, THUMB)
        if problem:
            return None, problem
        first = first or image
    return first, ""


def write_pasted(image: QImage, folder: Path) -> str:
    """The pasted image as a PNG in `folder` (a temporary name, then renamed); its path. Pool thread."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"pasted-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{next(_pasted)}.png"
    partial = path.with_suffix(".png.partial")
    if not image.save(str(partial), "PNG"):
        raise OSError(f"cannot write {partial}: is the disk full or the folder read-only?")
    os.replace(partial, path)
    return str(path)


class PromptEdit(QPlainTextEdit):
    """The prompt box: pasting an image hands it over (`image_pasted`) instead of inserting nothing."""
    image_pasted = Signal(QImage)

    def canInsertFromMimeData(self, source) -> bool:
        return source.hasImage() or super().canInsertFromMimeData(source)

    def insertFromMimeData(self, source) -> None:
        if source.hasImage() and not source.hasText():
            self.image_pasted.emit(QImage(source.imageData()))
        else:
            super().insertFromMimeData(source)


class ImageInput(QWidget):
    changed = Signal()              # an image was attached or removed
    message = Signal(str)           # words for the page's status line

    def __init__(self, paste_folder: Path, parent: QWidget | None = None):
        super().__init__(parent)
        self.paste_folder = Path(paste_folder)
        self.paths: list[str] = []         # one chosen or pasted, or a held-out prompt's images
        self.problem = ""
        self.thumb = QLabel(objectName="ImageThumb", fixedWidth=THUMB, fixedHeight=THUMB, alignment=Qt.AlignCenter)
        self.thumb.setStyleSheet("border: 1px dashed palette(mid); border-radius: 4px;")
        self.name = QLabel("No image", objectName="Muted", wordWrap=True)
        self.choose_button = QPushButton("Image…")
        self.choose_button.setToolTip("Show the model an image with the prompt (a vision-language run)")
        self.choose_button.clicked.connect(self.choose)
        self.paste_button = QPushButton("Paste")
        self.paste_button.setToolTip("Attach the image on the clipboard (Ctrl+V in the prompt does the same)")
        self.paste_button.clicked.connect(self.paste)
        self.remove_button = QPushButton("✕", fixedWidth=28, enabled=False)
        self.remove_button.setToolTip("Ask without the image")
        self.remove_button.clicked.connect(lambda: self.set_paths([]))
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.thumb)
        row.addWidget(self.name, 1)
        row.addWidget(self.choose_button)
        row.addWidget(self.paste_button)
        row.addWidget(self.remove_button)

    @property
    def path(self) -> str | None:
        return self.paths[0] if self.paths else None

    def images(self) -> list[str]:
        """The image files to send with the prompt ([] without one, or while one cannot be read)."""
        return [] if self.problem else list(self.paths)

    def choose(self) -> None:
        start = str(Path(self.path).parent) if self.path else str(Path.home())
        path, _ = QFileDialog.getOpenFileName(self, "Choose an image", start, IMAGE_FILTER)
        if path:
            self.set_path(path)

    def paste(self) -> None:
        image = QApplication.clipboard().image()
        if image.isNull():
            self.message.emit("The clipboard holds no image: copy one (or a screenshot) first, or choose a file.")
            return
        self.take_pasted(image)

    def take_pasted(self, image: QImage) -> None:
        self.name.setText("Saving the pasted image…")
        run_in_background(write_pasted, image, self.paste_folder, on_done=self.set_path,
                          on_failed=lambda exc: self.message.emit(f"The pasted image could not be saved: {exc}"))

    def set_path(self, path: str | None) -> None:
        self.set_paths([path] if path else [])

    def set_paths(self, paths: list[str]) -> None:
        self.paths, self.problem = [str(p) for p in paths], ""
        self.thumb.clear()
        self.remove_button.setEnabled(bool(self.paths))
        names = [Path(p).name for p in self.paths]
        self.name.setText("No image" if not names else names[0] if len(names) == 1
                          else f"{len(names)} images: {', '.join(names)}")
        self.name.setToolTip("\n".join(self.paths))
        if self.paths:
            asked = list(self.paths)
            run_in_background(read_images, asked, on_done=lambda result: self._thumbnail(asked, result))
        self.changed.emit()

    def _thumbnail(self, asked: list[str], result) -> None:
        if asked != self.paths:
            return                      # another image was chosen meanwhile
        image, problem = result
        if problem:
            bad = next(p for p in asked if problem.startswith(p))
            self.problem = problem
            self.name.setText(f"{Path(bad).name}: {problem.removeprefix(bad).strip()}")
            self.message.emit(f"The image {bad} cannot be used: {problem.removeprefix(bad).strip()} — "
                              "choose a PNG, JPEG or WebP file.")
            self.changed.emit()
            return
        self.thumb.setPixmap(QPixmap.fromImage(image))
