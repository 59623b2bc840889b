"""What the model will be trained on: the inspector's stats, the length histogram and example N.

Shows one report (the inspector's JSON) at a time; the Dataset panel decides when to ask for one.
While the next report is on its way the old one stays, dimmed, under a busy bar.
"""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QFrame, QGridLayout, QHBoxLayout, QLabel, QProgressBar, QSpinBox, QVBoxLayout,
                               QWidget)

from lorastudio.app.dataset.inspection_text import bad_rows_text, example_caption, stat_rows
from lorastudio.app.dataset.length_histogram import LengthHistogram
from lorastudio.app.dataset.token_view import IMAGE_SHADE, TRAINED_SHADES, UNTRAINED_SHADES, TokenView
from lorastudio.core.data.formats import FORMAT_TITLES

STAT_KEYS = ("examples", "tokens", "lengths", "seq_len", "template")


def _swatch(color, text: str) -> QWidget:
    box = QWidget()
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    row.setSpacing(4)
    chip = QFrame(fixedWidth=14, fixedHeight=12)
    chip.setStyleSheet(f"background: rgba({color.red()},{color.green()},{color.blue()},{color.alpha()});"
                       "border: 1px solid palette(mid); border-radius: 3px;")
    label = QLabel(text)
    label.setProperty("role", "hint")
    row.addWidget(chip)
    row.addWidget(label)
    return box


class InspectionView(QWidget):
    example_changed = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.report: dict | None = None
        self._build()

    def _build(self) -> None:
        self.title = QLabel("What the model will see")
        self.title.setStyleSheet("font-weight: 600;")
        self.status_label = QLabel(wordWrap=True)     # wraps: never wider than the form's scroll area
        self.status_label.setProperty("role", "hint")
        self.busy_bar = QProgressBar(maximum=0, textVisible=False, fixedHeight=4)
        self.busy_bar.hide()
        header = QHBoxLayout()
        header.addWidget(self.title)
        header.addStretch(1)
        header.addWidget(self.status_label)

        self.body = QWidget()
        body = QVBoxLayout(self.body)
        body.setContentsMargins(0, 0, 0, 0)
        body.addLayout(self._stats_grid())
        self.bad_rows_label = QLabel(wordWrap=True, objectName="BadRows")
        self.bad_rows_label.setProperty("role", "notice")
        self.notes_label = QLabel(wordWrap=True, objectName="Notes")
        self.notes_label.setProperty("role", "notice")
        self.histogram = LengthHistogram()
        body.addWidget(self.bad_rows_label)
        body.addWidget(self.notes_label)
        body.addWidget(self.histogram)
        body.addLayout(self._example_row())
        body.addWidget(self.example_caption)
        self.token_view = TokenView()
        body.addWidget(self.token_view)
        self.rejected_caption = QLabel(objectName="RejectedCaption")     # pairs: the rejected side below
        self.rejected_caption.setProperty("role", "hint")
        self.rejected_view = TokenView()
        body.addWidget(self.rejected_caption)
        body.addWidget(self.rejected_view)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 6, 0, 0)
        layout.setSpacing(4)
        layout.addLayout(header)
        layout.addWidget(self.busy_bar)
        layout.addWidget(self.body)
        self.show_report(None)

    def _stats_grid(self) -> QGridLayout:
        grid = QGridLayout()
        grid.setHorizontalSpacing(12)
        grid.setVerticalSpacing(2)
        self.stat_keys: dict[str, QLabel] = {}
        self.stats: dict[str, QLabel] = {}
        for row, key in enumerate(STAT_KEYS):
            name, value = QLabel(), QLabel(objectName=f"stat_{key}")
            name.setProperty("role", "key")
            value.setProperty("role", "value")
            value.setTextInteractionFlags(Qt.TextSelectableByMouse)
            value.setWordWrap(True)
            grid.addWidget(name, row, 0, Qt.AlignTop)
            grid.addWidget(value, row, 1)
            self.stat_keys[key], self.stats[key] = name, value
        grid.setColumnStretch(1, 1)
        return grid

    def _example_row(self) -> QHBoxLayout:
        self.example_spin = QSpinBox(minimum=1, maximum=1, value=1, keyboardTracking=False)
        self.example_spin.setToolTip("Which example to show, 1-based, in file order")
        self.example_spin.valueChanged.connect(self.example_changed)
        self.example_of = QLabel()
        self.example_caption = QLabel(objectName="ExampleCaption")
        self.example_caption.setProperty("role", "hint")
        self.example_caption.setWordWrap(True)
        row = QHBoxLayout()
        row.setSpacing(6)
        row.addWidget(QLabel("Example"))
        row.addWidget(self.example_spin)
        row.addWidget(self.example_of)
        row.addStretch(1)
        row.addWidget(_swatch(TRAINED_SHADES[1], "trained"))
        row.addSpacing(6)
        row.addWidget(_swatch(UNTRAINED_SHADES[1], "not trained"))
        self.image_swatch = _swatch(IMAGE_SHADE, "image tokens")
        row.addSpacing(6)
        row.addWidget(self.image_swatch)
        self.image_swatch.hide()
        return row

    # ---- showing ------------------------------------------------------------------------------
    def set_busy(self, busy: bool, what: str = "") -> None:
        """The thin busy bar and what is being done; the last report stays shown meanwhile."""
        self.busy_bar.setVisible(busy)
        if busy:
            self.status_label.setText(what)

    def show_report(self, report: dict | None) -> None:
        self.report = report
        self.body.setVisible(report is not None)
        if report is None:
            self.status_label.setText("")
            return
        for (key, value), name in zip(stat_rows(report), STAT_KEYS):
            self.stat_keys[name].setText(key)
            self.stats[name].setText(value)
        self.bad_rows_label.setText(bad_rows_text(report["bad_rows"]))
        self.bad_rows_label.setVisible(bool(report["bad_rows"]))
        self.notes_label.setText("\n".join(report["notes"]))
        self.notes_label.setVisible(bool(report["notes"]))
        self.histogram.set_data(report["histogram"], report["seq_len"])
        self._show_example(report)
        noun = "pairs" if report.get("pair") else "examples"
        title = FORMAT_TITLES.get(report["format"], report["reason"].partition(":")[0])
        self.status_label.setText(f"{report['usable_examples']:,} {noun} · {title}")

    def _show_example(self, report: dict) -> None:
        ex = report["example"]
        self.example_spin.blockSignals(True)
        self.example_spin.setMaximum(max(1, report["examples"]))
        self.example_spin.setValue(ex["index"])
        self.example_spin.blockSignals(False)
        self.example_of.setText(f"of {report['examples']:,}")
        self.example_caption.setText(example_caption(ex))
        self.image_swatch.setVisible(bool(ex.get("image_tokens")))
        self.token_view.set_tokens(ex["tokens"], ex.get("image_tokens") or [])
        pair = report.get("pair")                  # preference pairs: chosen above, rejected below
        self.rejected_caption.setVisible(pair is not None)
        self.rejected_view.setVisible(pair is not None)
        if pair is not None:
            c, r = pair["chosen"], pair["rejected"]
            self.example_caption.setText(f"{ex['where']} · {ex['status']} · <b>Chosen</b>: {c['trained']} of "
                                         f"{c['total']} tokens trained")
            self.rejected_caption.setText(f"<b>Rejected</b>: {r['trained']} of {r['total']} tokens trained")
            self.rejected_view.set_tokens(r["tokens"])

    def example(self) -> int:
        return self.example_spin.value()

    def reset_example(self) -> None:
        self.example_spin.blockSignals(True)
        self.example_spin.setValue(1)
        self.example_spin.blockSignals(False)
