"""Thumbnails of the images a preview's rows show, read off the GUI thread.

A row's images (core/data/images.row_images, paths relative to the data file's folder) are read by
QImageReader at thumbnail size — the decoder scales while it reads (setScaledSize), so a 24-megapixel
photo costs a thumbnail's memory — on the thread pool; QImage (not QPixmap) is safe off the GUI thread.
A missing or unreadable image comes back as words that name the file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QImage, QImageReader

from lorastudio.core.data.images import resolve_paths, row_images
from lorastudio.core.data.sources import is_hf_spec

THUMB = 40          # pixels, the longer side


@dataclass
class RowImages:
    """What a preview row shows of its images: the first one's thumbnail, how many, what is wrong."""
    paths: list[str]
    thumbnail: QImage | None = None
    problem: str = ""           # "image missing: images/a.png" — the first image that cannot be shown
    detail: str = ""            # the same with its full path and what to do (the tooltip)

    @property
    def text(self) -> str:
        if self.problem:
            return self.problem
        return Path(self.paths[0]).name if len(self.paths) == 1 else f"{len(self.paths)} images"


def image_base(data_path: str) -> Path | None:
    """The folder relative image paths start at (as core/data/examples resolves them)."""
    if not data_path or is_hf_spec(data_path):
        return None
    path = Path(data_path).expanduser()
    return path if path.is_dir() else path.parent


def read_thumbnail(path: str, size: int = THUMB) -> tuple[QImage | None, str]:
    """(the image scaled to fit size×size, "") or (None, what is wrong, naming the file)."""
    if not Path(path).is_file():
        return None, f"{path} does not exist"
    reader = QImageReader(path)
    reader.setAutoTransform(True)
    full = reader.size()
    if not full.isValid():
        return None, f"{path} cannot be read as an image ({reader.errorString()})"
    reader.setScaledSize(full.scaled(QSize(size, size), Qt.KeepAspectRatio).expandedTo(QSize(1, 1)))
    image = reader.read()
    if image.isNull():
        return None, f"{path} cannot be read as an image ({reader.errorString()})"
    return image, ""


def read_row_images(values: list[dict], data_path: str) -> list[RowImages | None]:
    """Per preview row: None without images, else its RowImages. Runs on a pool thread."""
    base = image_base(data_path)
    out: list[RowImages | None] = []
    for value in values:
        refs = row_images(value) if isinstance(value, dict) else []
        if not refs:
            out.append(None)
            continue
        paths = resolve_paths(refs, base)
        row = RowImages(paths)
        for ref, path in zip(refs, paths):
            image, problem = read_thumbnail(path)
            if problem:
                missing = problem.endswith("does not exist")
                row.problem = f"image {'missing' if missing else 'unreadable'}: {ref}"
                row.detail = problem + (": check the path (relative paths start at the data file's folder)"
                                        if missing else ": replace it with a PNG, JPEG or WebP image")
                row.thumbnail = None
                break
            row.thumbnail = row.thumbnail or image
        out.append(row)
    return out


def read_preview_images(preview) -> tuple[object, list[RowImages | None]]:
    """(the preview, read_row_images of its rows): the answer names the question. Pool thread."""
    return preview, read_row_images([r.value for r in preview.rows], preview.path)


def put_thumbnails(model, table, rows: list[RowImages | None]) -> bool:
    """Lay the rows' images into the preview table as a first column "Image" (a thumbnail and the
    file's name, or what is wrong in words); False when no row shows an image."""
    from PySide6.QtGui import QBrush, QColor, QPixmap, QStandardItem
    from PySide6.QtWidgets import QHeaderView
    if not any(rows) or model.rowCount() != len(rows):
        return False
    items = []
    for row in rows:
        item = QStandardItem(row.text if row else "")
        if row is not None:
            item.setToolTip("\n".join(row.paths) + (f"\n{row.detail}" if row.detail else ""))
            if row.thumbnail is not None:
                item.setData(QPixmap.fromImage(row.thumbnail), Qt.DecorationRole)
            if row.problem:
                item.setForeground(QBrush(QColor(200, 40, 40)))
        items.append(item)
    model.insertColumn(0, items)
    model.setHeaderData(0, Qt.Horizontal, "Image")
    table.setIconSize(QSize(THUMB, THUMB))
    table.verticalHeader().setDefaultSectionSize(THUMB + 6)
    table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeToContents)
    table.setMaximumHeight(3 * (THUMB + 6) + 60)
    return True
