"""Serve…: the selected runs' adapters on their base, over an OpenAI-compatible API (llama.cpp).

The settings (host, port, API key, context, parallel requests), Start / Stop, and while serving:
the URL, the models served (the base alone and each run by its name) with the requests each has
answered, the traffic (requests, tokens, tokens/s from llama.cpp's metrics), and a curl line and an
`openai` snippet for a chosen model, each with a Copy button; they run as shown. The checks run off
the GUI thread (core.plans.serve.plan_serve); the server is the serve job (core/jobs/serve.py) in its
own process, followed by a JobProcess. Closing the dialog while serving asks, then stops it.
"""
from __future__ import annotations

import secrets
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QDialogButtonBox, QFormLayout, QGroupBox,
                               QHBoxLayout, QHeaderView, QLabel, QLineEdit, QPlainTextEdit, QPushButton,
                               QSpinBox, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from lorastudio.app.dialogs.job_dialog import JobDialog
from lorastudio.app.job_process import JobProcess
from lorastudio.app.thread_pool import run_in_background
from lorastudio.core.plans.serve import (DEFAULT_CTX, DEFAULT_PARALLEL, DEFAULT_PORT, MAX_PARALLEL, MIN_CTX,
                                         ServeError, ServeRequest, curl_example, is_local, plan_serve,
                                         python_example, start_serve, traffic_words)

HOSTS = [("127.0.0.1 — this machine only", "127.0.0.1"), ("0.0.0.0 — other machines too (needs an API key)", "0.0.0.0")]


class ServeDialog(JobDialog):
    CANCEL_TITLE = "Stop the server?"
    CANCEL_QUESTION = "The server is running. Stop it? Programs using it lose their connection."

    def __init__(self, runs: Path | list[Path], runs_root: Path | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Serve over an OpenAI-compatible API")
        self.setMinimumWidth(720)
        self.runs = [Path(r) for r in (runs if isinstance(runs, (list, tuple)) else [runs])]
        self.job = None
        self.serving: dict | None = None
        self.status: str | None = None
        self.process = JobProcess(self)
        self.process.event.connect(self._event)
        self.process.finished.connect(self._finish)
        self._build()
        self._update()

    # ---- layout ---------------------------------------------------------------------------
    def _build(self) -> None:
        intro = QLabel(f"Serves {self._runs_words()} with llama.cpp: the base model, and each run's adapter by its "
                       "name, each answering at the same time. Any OpenAI client can use it (chat and completions, "
                       "streaming or not).", wordWrap=True)
        self.host_combo = QComboBox(editable=True)
        for text, host in HOSTS:
            self.host_combo.addItem(text, host)
        self.port_spin = QSpinBox(minimum=0, maximum=65535, value=DEFAULT_PORT, specialValueText="any free port")
        self.key_edit = QLineEdit(placeholderText="none (this machine only)")
        generate = QPushButton("Generate", clicked=lambda: self.key_edit.setText(secrets.token_urlsafe(18)))
        key_row = QHBoxLayout()
        key_row.addWidget(self.key_edit, 1)
        key_row.addWidget(generate)
        self.ctx_spin = QSpinBox(minimum=MIN_CTX, maximum=131072, value=DEFAULT_CTX, singleStep=1024, suffix=" tokens")
        self.parallel_spin = QSpinBox(minimum=1, maximum=MAX_PARALLEL, value=DEFAULT_PARALLEL)
        self.settings = QWidget()
        form = QFormLayout(self.settings)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Listen on", self.host_combo)
        form.addRow("Port", self.port_spin)
        form.addRow("API key", key_row)
        form.addRow("Context per request", self.ctx_spin)
        form.addRow("Requests at once", self.parallel_spin)
        self._make_status_widgets()
        self.panel = self._serving_panel()
        self.panel.hide()
        self.buttons = QDialogButtonBox()
        self.start_button = self.buttons.addButton("Start serving", QDialogButtonBox.ActionRole)
        self.start_button.setDefault(True)
        self.close_button = self.buttons.addButton(QDialogButtonBox.Close)
        self.start_button.clicked.connect(self._start_or_stop)
        self.close_button.clicked.connect(self.close)
        layout = QVBoxLayout(self)
        for widget in (intro, self.settings, self.phase_label, self.progress, self.result_label, self.panel,
                       self.buttons):
            layout.addWidget(widget)
        self.host_combo.currentTextChanged.connect(self._update)
        self.key_edit.textChanged.connect(self._update)

    def _serving_panel(self) -> QGroupBox:
        box = QGroupBox("Serving")
        self.url_edit = QLineEdit(readOnly=True, objectName="ServeUrl")
        copy_url = QPushButton("Copy URL", clicked=lambda: self._copy(self.url_edit.text()))
        url_row = QHBoxLayout()
        url_row.addWidget(QLabel("Base URL"))
        url_row.addWidget(self.url_edit, 1)
        url_row.addWidget(copy_url)
        self.models_table = QTableWidget(0, 3, objectName="ServeModels")
        self.models_table.setHorizontalHeaderLabels(["Model name", "What it is", "Requests"])
        self.models_table.verticalHeader().hide()
        self.models_table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.models_table.setSelectionMode(QAbstractItemView.NoSelection)
        header = self.models_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.Stretch)
        header.setSectionResizeMode(2, QHeaderView.ResizeToContents)
        self.traffic_label = QLabel("No requests yet.", objectName="ServeTraffic")
        self.traffic_label.setProperty("role", "value")
        self.example_combo = QComboBox()
        self.example_combo.currentIndexChanged.connect(self._show_example)
        self.example_edit = QPlainTextEdit(readOnly=True, objectName="ServeExample")
        self.example_edit.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.example_edit.setLineWrapMode(QPlainTextEdit.WidgetWidth)
        self.example_edit.setMinimumHeight(10 * self.example_edit.fontMetrics().lineSpacing())
        self.copy_curl = QPushButton("Copy curl", clicked=lambda: self._copy(self._curl()))
        self.copy_python = QPushButton("Copy Python", clicked=lambda: self._copy(self._python()))
        example_row = QHBoxLayout()
        example_row.addWidget(QLabel("Example for"))
        example_row.addWidget(self.example_combo, 1)
        example_row.addWidget(self.copy_curl)
        example_row.addWidget(self.copy_python)
        self.network_note = QLabel(wordWrap=True)
        self.network_note.setProperty("role", "hint")
        layout = QVBoxLayout(box)
        layout.addLayout(url_row)
        layout.addWidget(self.network_note)
        layout.addWidget(self.models_table)
        layout.addSpacing(4)
        layout.addWidget(self.traffic_label)
        layout.addSpacing(4)
        layout.addLayout(example_row)
        layout.addWidget(self.example_edit)
        return box

    def _runs_words(self) -> str:
        names = [r.name for r in self.runs]
        return f"the run {names[0]}" if len(names) == 1 else f"{len(names)} runs ({', '.join(names)})"

    @property
    def running(self) -> bool:
        return self.process.running

    @property
    def host(self) -> str:
        """The address: the first word of the combo's text (a listed choice, or one typed in)."""
        return (self.host_combo.currentText().split() or [""])[0]

    def _update(self) -> None:
        idle = not self.running
        self.settings.setEnabled(idle)
        needs_key = not is_local(self.host) and not self.key_edit.text().strip()
        self.start_button.setText("Start serving" if idle else "Stop")
        self.start_button.setEnabled(not needs_key or not idle)
        self.start_button.setToolTip("Listening beyond this machine needs an API key" if needs_key and idle else "")
        self.close_button.setText("Close")

    # ---- running --------------------------------------------------------------------------
    def request(self) -> ServeRequest:
        return ServeRequest(tuple(self.runs), None, self.host, self.port_spin.value(),
                            self.key_edit.text().strip() or None, self.ctx_spin.value(), self.parallel_spin.value())

    def _start_or_stop(self) -> None:
        if self.running:
            self.cancel()
        else:
            self.start()

    def start(self) -> None:
        self.start_button.setEnabled(False)
        self.panel.hide()
        self.panel.setEnabled(True)
        self._result("Checking the runs, their base model and the address…", "hint")
        run_in_background(plan_serve, self.request(), on_done=self._launch, on_failed=self._refused)

    def _refused(self, exc: Exception) -> None:
        self._update()
        text = f"{exc.message}\nWhat to do: {exc.hint}" if isinstance(exc, ServeError) else str(exc)
        self._result(text, "error")

    def _launch(self, job) -> None:
        self.job, self.serving, self.status = job, None, None
        self.progress.setValue(0)
        self.progress.show()
        notes = "".join(f"\nNote: {n}" for n in job.notes)
        self._result(("The base model is written as GGUF once (cached for the next time); " if job.export_base
                      else "") + f"starting llama.cpp with {len(job.runs)} adapter{'s' * (len(job.runs) != 1)}." + notes,
                     "hint")
        try:
            self.process.attach(start_serve(job))
        except OSError as exc:
            self.progress.hide()
            self._result(f"The server could not start: {exc}", "error")
        self._update()

    def _event(self, ev: dict) -> None:
        super()._event(ev)
        if ev["type"] == "serving":
            self._serving(ev)
        elif ev["type"] == "traffic":
            self._traffic(ev)

    def _serving(self, ev: dict) -> None:
        self.serving = ev
        self.progress.hide()
        self.phase_label.setText("")
        self.result_label.hide()
        self.url_edit.setText(ev["url"])
        self.network_note.setText("" if is_local(ev["host"]) else
                                  f"Listening on {ev['host']}: other machines use this machine's address in place "
                                  "of 127.0.0.1, with the API key.")
        self.network_note.setVisible(not is_local(ev["host"]))
        models = ev["models"]
        self.models_table.setRowCount(len(models))
        runs = {a["name"]: a["run"] for a in ev.get("adapters", [])}
        for row, name in enumerate(models):
            what = "the base model alone" if row == 0 else f"base + the adapter of {Path(runs.get(name, name)).name}"
            for col, text in enumerate((name, what, "0")):
                item = QTableWidgetItem(text)
                if col == 2:
                    item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                self.models_table.setItem(row, col, item)
        self.models_table.setFixedHeight(self.models_table.horizontalHeader().sizeHint().height()
                                         + 2 * self.models_table.frameWidth() + 4
                                         + sum(self.models_table.rowHeight(r) for r in range(len(models))))
        self.example_combo.blockSignals(True)
        self.example_combo.clear()
        self.example_combo.addItems(models)
        self.example_combo.setCurrentIndex(1 if len(models) > 1 else 0)
        self.example_combo.blockSignals(False)
        self._show_example()
        self.traffic_label.setText("No requests yet.")
        self.panel.show()
        self._fit()

    def _fit(self) -> None:
        """Grow to show the panel whole, within the screen (a 1366×768 laptop included)."""
        screen = self.screen().availableGeometry() if self.screen() else None
        want = self.sizeHint()
        if screen is not None:
            want = want.boundedTo(screen.size())
        self.resize(want.expandedTo(self.size()))

    def _traffic(self, ev: dict) -> None:
        self.traffic_label.setText(traffic_words(ev) if ev["requests"] or ev["active"] else "No requests yet.")
        counts = ev.get("by_model", {})
        for row in range(self.models_table.rowCount()):
            name = self.models_table.item(row, 0).text()
            self.models_table.item(row, 2).setText(f"{counts.get(name, 0):,}")

    def _finish(self, outcome) -> None:
        self.status = outcome.status
        self.progress.hide()
        self.phase_label.setText("")
        end = outcome.end or {}
        if outcome.status == "stopped" and self.serving is not None:
            self._result(f"Stopped; the port is free again. Served {end.get('requests', 0):,} requests, "
                         f"{end.get('tokens', 0):,} tokens.", "notice")
        elif outcome.status == "stopped":
            self._result("Stopped before the server started.", "notice")
        elif outcome.error is not None:
            self._result(f"{outcome.error['message']}\nWhat to do: {outcome.error.get('hint', '')}", "error")
        else:
            self._result(f"The server ended: {outcome.status}.", "error")
        if self.serving is not None:
            self.panel.setEnabled(False)            # the last numbers stay readable
        else:
            self.panel.hide()
        self._update()

    def cancel(self) -> None:
        if self.process.stop():
            self.phase_label.setText("Stopping the server…")

    # ---- examples -------------------------------------------------------------------------
    def _key(self) -> str | None:
        return self.job.api_key if self.job is not None else None

    def _curl(self) -> str:
        return curl_example(self.url_edit.text(), self.example_combo.currentText(), self._key())

    def _python(self) -> str:
        return python_example(self.url_edit.text(), self.example_combo.currentText(), self._key())

    def _show_example(self) -> None:
        if self.serving is not None:
            self.example_edit.setPlainText(f"# curl (a terminal)\n{self._curl()}\n\n# Python (pip install openai)\n"
                                           f"{self._python()}")

    def _copy(self, text: str) -> None:
        QGuiApplication.clipboard().setText(text)
        self.phase_label.setText("Copied.")
