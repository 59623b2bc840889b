"""The Model panel: a folder (picker or drag and drop), a model from the local HF cache, or a Hub id.

Reading a model means `config.json`, the tokenizer config and the safetensors headers — a few KB,
but on a network drive or a cold disk that can take seconds, so it runs on the thread pool and the
result comes back as a signal. A counter discards answers to questions no longer asked.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QFileDialog, QGridLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit,
                               QMenu, QPushButton, QToolButton, QVBoxLayout, QWidget)

from lorastudio.app.thread_pool import run_in_background
from lorastudio.core.config import RunConfig, field_help
from lorastudio.core.formatting import format_bytes, format_count
from lorastudio.core.models.info import ModelError, hf_cache_dir, list_cached_models, read_model_info
from lorastudio.core.models.targets import discover_targets
from lorastudio.core.models.vision import PART_WORDS, PARTS

EMPTY, LOADING, READY, FAILED = "empty", "loading", "ready", "failed"
FIELDS = (("architecture", "Architecture"), ("parameters", "Parameters"), ("dtype", "Dtype"),
          ("size", "Size on disk"), ("context", "Context length"), ("chat", "Chat template"), ("vision", "Vision"))


def read_model(source: str):
    """(ModelInfo, TargetReport) for a folder or cached Hub id. Runs on a pool thread."""
    info = read_model_info(source)
    return info, discover_targets(info)


def vision_words(vision: dict) -> str:
    """'vision-language (Qwen2-VL / Qwen2.5-VL) · adaptable: language model (14 linear layers), projector
    (2), vision tower (12)' from the model info's `vision` (core/models/vision.vision_summary)."""
    if not vision.get("family"):
        return vision["words"]
    counts = vision["parts"]
    parts = [f"{PART_WORDS[p]} ({counts[p]}{' linear layers' if i == 0 else ''})"
             for i, p in enumerate(PARTS) if counts.get(p)]
    cannot = [PART_WORDS[p] for p in PARTS if not counts.get(p)]
    return (f"vision-language ({vision['family']}) · adaptable: {', '.join(parts)}"
            + (f"; not adaptable: {', '.join(cannot)}" if cannot else ""))


class ModelPanel(QGroupBox):
    model_changed = Signal()           # state, info and report have changed (ready, failed or empty)
    last_folder_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Model", parent)
        self.state, self.info, self.report, self.error_text = EMPTY, None, None, ""
        self.last_folder = str(Path.home())
        self._request = 0
        self.setAcceptDrops(True)
        self._build()
        self.refresh_cache()

    # ---- layout -------------------------------------------------------------------------------
    def _build(self) -> None:
        self.source_edit = QLineEdit(placeholderText="Model folder, or a Hub id such as HuggingFaceTB/SmolLM2-135M")
        self.source_edit.setToolTip(field_help(RunConfig, "model") + "\nYou can also drop a folder here.")
        self.source_edit.editingFinished.connect(lambda: self.load(self.source_edit.text()))
        self.browse_button = QPushButton("Browse…")
        self.browse_button.setToolTip("Choose a local model folder (Ctrl+O)")
        self.browse_button.clicked.connect(self.browse)
        self.cache_button = QToolButton(text="Cached ▾")
        self.cache_button.setPopupMode(QToolButton.InstantPopup)
        self.cache_menu = QMenu(self.cache_button)
        self.cache_button.setMenu(self.cache_menu)
        source_row = QHBoxLayout()
        source_row.addWidget(self.source_edit, 1)
        source_row.addWidget(self.browse_button)
        source_row.addWidget(self.cache_button)

        self.status_label = QLabel("Choose a model folder, drop one here, or pick a model from the cache.")
        self.status_label.setProperty("role", "hint")
        self.status_label.setWordWrap(True)
        self.error_label = QLabel(wordWrap=True)
        self.error_label.setProperty("role", "error")
        self.error_label.hide()
        self.info_box = QWidget()
        grid = QGridLayout(self.info_box)
        grid.setContentsMargins(0, 4, 0, 0)
        grid.setHorizontalSpacing(12)
        self.values: dict[str, QLabel] = {}
        # Architecture on a row of its own (names like Qwen2_5_VLForConditionalGeneration are long).
        positions = {"architecture": (0, 0, 3), "parameters": (1, 0, 1), "size": (1, 2, 1), "dtype": (2, 0, 1),
                     "context": (2, 2, 1), "chat": (3, 0, 1), "vision": (4, 0, 3)}
        for key, title in FIELDS:
            row, col, span = positions[key]
            name = QLabel(title)
            name.setProperty("role", "key")
            value = QLabel("—", objectName=f"info_{key}")
            value.setProperty("role", "value")
            value.setTextInteractionFlags(Qt.TextSelectableByMouse)
            self.values[key] = value
            grid.addWidget(name, row, col)
            grid.addWidget(value, row, col + 1, 1, span)
        self.values["architecture"].setMinimumWidth(40)
        self.values["vision"].setWordWrap(True)
        self.vision_key = grid.itemAtPosition(4, 0).widget()
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)
        self.info_box.hide()

        layout = QVBoxLayout(self)
        layout.addLayout(source_row)
        layout.addWidget(self.status_label)
        layout.addWidget(self.error_label)
        layout.addWidget(self.info_box)

    # ---- choosing -----------------------------------------------------------------------------
    def browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a model folder", self.last_folder)
        if folder:
            self.load(folder)

    def refresh_cache(self) -> None:
        run_in_background(list_cached_models, on_done=self._show_cache, on_failed=lambda _e: self._show_cache([]))

    def _show_cache(self, models: list[dict]) -> None:
        self.cache_menu.clear()
        self.cached_models = models
        for m in models:
            action = self.cache_menu.addAction(f"{m['id']}    {format_bytes(m['size'])}")
            action.triggered.connect(lambda _=False, mid=m["id"]: self.load(mid))
        self.cache_button.setEnabled(bool(models))
        self.cache_button.setToolTip(f"Models in the local Hugging Face cache ({hf_cache_dir()})" if models
                                     else f"No models in the local Hugging Face cache ({hf_cache_dir()})")

    def source(self) -> str:
        return self.source_edit.text().strip()

    def load(self, source: str) -> None:
        """Read `source` off the GUI thread; does nothing if it is what is already shown."""
        source = source.strip()
        if source == getattr(self.info, "source", None) and self.state == READY:
            return
        if self.source_edit.text() != source:
            self.source_edit.setText(source)
        self._request += 1
        if not source:
            self._set_state(EMPTY, "Choose a model folder, drop one here, or pick a model from the cache.")
            return
        if Path(source).expanduser().is_absolute() and Path(source).expanduser().is_dir():
            self.last_folder = str(Path(source).expanduser().parent)
            self.last_folder_changed.emit(self.last_folder)
        request = self._request
        if self._import_gguf_first(source):
            return
        self._set_state(LOADING, f"Reading {source} …")
        run_in_background(read_model, source,
                          on_done=lambda result: self._loaded(request, result),
                          on_failed=lambda exc: self._failed(request, exc))

    def _import_gguf_first(self, source: str) -> bool:
        """A .gguf not yet in the model cache is imported by a job (with progress), then read."""
        from lorastudio.app.job_process import JobProcess
        from lorastudio.core.models.gguf_cache import cached_import, is_gguf
        from lorastudio.core.plans.import_gguf import ImportGgufRequest, start_import_gguf
        path = Path(source).expanduser()
        if not (is_gguf(source) and path.is_file()) or cached_import(path) is not None:
            return False
        if getattr(self, "gguf_job", None) is None:
            self.gguf_job = JobProcess(self, poll_ms=200)
            self.gguf_job.event.connect(self._import_event)
            self.gguf_job.finished.connect(self._imported)
        self.gguf_job.stop()                            # an import of an earlier choice
        self._set_state(LOADING, f"Importing {path.name} into the model cache (once) …")
        self._import_source = source
        self.gguf_job.attach(start_import_gguf(ImportGgufRequest(path)))
        return True

    def _import_event(self, ev: dict) -> None:
        if ev["type"] == "phase" and self.state == LOADING:
            self.status_label.setText(f"Importing: {int(100 * ev.get('fraction', 0))} % · {ev.get('message', '')}")

    def _imported(self, outcome) -> None:
        if self.source() != self._import_source:
            return                                      # the user chose another model meanwhile
        if outcome.status == "completed":
            self.load(self._import_source)
        else:
            error = outcome.error or {}
            self._request += 1
            self._failed(self._request, ModelError(error.get("message", f"the import {outcome.status}"),
                                                   error.get("hint", "")))

    def _loaded(self, request: int, result) -> None:
        if request != self._request:
            return
        self.info, self.report = result
        self._show_info()
        self._set_state(READY, "")

    def _failed(self, request: int, exc: Exception) -> None:
        if request != self._request:
            return
        if isinstance(exc, ModelError):
            self.error_text = exc.message + (f"\n{exc.hint[0].upper()}{exc.hint[1:]}." if exc.hint else "")
        else:
            self.error_text = f"This model cannot be read: {exc}"
        self._set_state(FAILED, "")

    def _set_state(self, state: str, status: str) -> None:
        self.state = state
        if state != READY:
            self.info, self.report = None, None
        self.status_label.setText(status)
        self.status_label.setVisible(bool(status))
        self.error_label.setText(self.error_text if state == FAILED else "")
        self.error_label.setVisible(state == FAILED)
        self.info_box.setVisible(state == READY)
        self.source_edit.setProperty("invalid", state == FAILED)
        self.source_edit.style().polish(self.source_edit)
        self.model_changed.emit()

    def _show_info(self) -> None:
        s = self.info.summary()
        ctx = s["context_length"]
        self.values["architecture"].setText(s["architecture"])
        self.values["architecture"].setToolTip(f"{s['architecture']} (model_type {s['model_type']})")
        self.values["parameters"].setText(format_count(s["parameters"]))
        self.values["dtype"].setText(s["dtype"])
        self.values["size"].setText(format_bytes(s["size_on_disk"]))
        self.values["context"].setText(f"{ctx:,} tokens" if ctx else "unknown")
        self.values["chat"].setText("yes" if s["has_chat_template"] else "no")
        if s["weights"] != "safetensors":
            self.values["size"].setToolTip("This model has no safetensors weights; see the Start hint.")
        vision = s.get("vision")
        self.values["vision"].setText(vision_words(vision) if vision else "")
        self.values["vision"].setToolTip(vision["words"] if vision else "")
        self.values["vision"].setVisible(bool(vision))
        self.vision_key.setVisible(bool(vision))

    def problem(self) -> tuple[str, str] | None:
        """Why this panel blocks Start, as (key, message), or None."""
        if self.state == EMPTY:
            return "model", "Choose a model."
        if self.state == LOADING:
            return "model", "Reading the model…"
        if self.state == FAILED:
            return "model", "Model: " + self.error_text.splitlines()[0]
        if not self.info.weight_files:
            return "model", "Model: no safetensors weights in this folder (pickle weights are not loaded)."
        return None

    # ---- drag and drop ------------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:
        urls = event.mimeData().urls()
        if urls and urls[0].isLocalFile() and (Path(urls[0].toLocalFile()).is_dir()
                                               or urls[0].toLocalFile().lower().endswith(".gguf")):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        self.load(event.mimeData().urls()[0].toLocalFile())
        event.acceptProposedAction()
