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


def run_reads_images(run_dir: Path) -> tuple[Path, bool]:
    """(run_dir, whether the run trained a vision-language model: its config's model, from
    config.json and the headers; a run or model that cannot be read counts as text-only). Pool thread."""
    from lorastudio.core.config import RunConfig
    from lorastudio.core.models.info import read_model_info
    from lorastudio.core.models.vision import vision_family
    from lorastudio.core.runs.folders import CONFIG_FILE
    try:
        return run_dir, vision_family(read_model_info(RunConfig.load(Path(run_dir) / CONFIG_FILE).model)) is not None
    except Exception:       # noqa: BLE001 — the run's own check says what is wrong; here: no image box
        return run_dir, False


def read_images(paths: list[str]) -> tuple[list[str], QImage | None, str]:
    """(paths, the first image's thumbnail, "") or (paths, None, what is wrong with the first bad
    one). Pool thread."""
    first = None
    for path in paths:
        image, problem = read_thumbnail(path, THUMB)
        if problem:
            return paths, None, problem
        first = first or image
    return paths, first, ""


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
        self.run_dir: Path | None = None
        self.reads_images = False          # the chosen run's model is a vision-language one
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

    def follow_run(self, run_dir: Path | None) -> None:
        """Shown only for a run whose model reads images (found out on the thread pool)."""
        self.run_dir = run_dir
        self._for_run((run_dir, False))
        if run_dir is not None:     # bound methods as answers: none arrives at a deleted widget
            run_in_background(run_reads_images, run_dir, on_done=self._for_run)

    def _for_run(self, answer: tuple[Path | None, bool]) -> None:
        run_dir, reads = answer
        if run_dir != self.run_dir:
            return
        self.reads_images = reads
        self.setVisible(reads)
        if not reads and self.paths:
            self.set_paths([])

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
        if not self.reads_images:
            self.message.emit("This run's model reads text only: it cannot be shown an image.")
            return
        self.name.setText("Saving the pasted image…")
        run_in_background(write_pasted, image, self.paste_folder, on_done=self.set_path, on_failed=self._paste_failed)

    def _paste_failed(self, exc: Exception) -> None:
        self.message.emit(f"The pasted image could not be saved: {exc}")

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
            run_in_background(read_images, list(self.paths), on_done=self._thumbnail)
        self.changed.emit()

    def _thumbnail(self, result) -> None:
        asked, image, problem = result
        if asked != self.paths:
            return                      # another image was chosen meanwhile
        if problem:
            bad = next(p for p in asked if problem.startswith(p))
            self.problem = problem
            self.name.setText(f"{Path(bad).name}: {problem.removeprefix(bad).strip()}")
            self.message.emit(f"The image {bad} cannot be used: {problem.removeprefix(bad).strip()} — "
                              "choose a PNG, JPEG or WebP file.")
            self.changed.emit()
            return
        self.thumb.setPixmap(QPixmap.fromImage(image))
