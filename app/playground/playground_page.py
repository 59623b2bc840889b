"""The Playground page: a prompt answered by the base model and by base + adapter, side by side.

Pick a run and its adapter (final or a checkpoint), up to two more runs to compare (their final
adapters, on the same base), the engine — llama.cpp (fast: the GGUF files `lorastudio serve` uses),
transformers (exactly what training computes) or automatic (llama.cpp when the model can be
served as GGUF) — type a prompt or click a held-out one, add an image for a vision-language run
(a file or a paste: image_input.py; transformers answers it), and press Generate: the page's one
generation worker (generation_worker.py, the generate job kept alive while the page is shown)
streams every answer token by token into a journal that a JobProcess re-emits here. The window
never loads a model itself. The run list follows the runs folder while the page is shown
(RunsRefresher, as the Runs page): a run that has just saved an adapter appears by itself.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (QComboBox, QGridLayout, QHBoxLayout, QLabel, QListWidget, QListWidgetItem,
                               QPushButton, QSplitter, QVBoxLayout, QWidget)

from lorastudio.app.playground.answer_pane import AnswerPane
from lorastudio.app.playground.eval_summary import EvalSummary
from lorastudio.app.playground.generation_settings import GenerationSettings
from lorastudio.app.playground.generation_worker import IDLE_MS, GenerationWorker
from lorastudio.app.playground.image_input import ImageInput, PromptEdit
from lorastudio.app.runs.runs_refresher import RunsRefresher
from lorastudio.core.runs.checkpoints import adapter_steps
from lorastudio.core.plans.generate import PLAYGROUND_DIR
from lorastudio.core.runs.heldout import EVAL_FILE, adapter_choices, heldout_prompts, read_eval
from lorastudio.core.runs.folders import default_runs_dir
from lorastudio.core.runs.listing import runs_with_adapters

EMPTY = "Train a run first: the playground compares a run's adapter with its base model."
ENGINES = [("Automatic", "auto", "llama.cpp when the run's model can be served as GGUF, else transformers"),
           ("llama.cpp — fast", "llama.cpp", "The base as f16 GGUF and each adapter as a GGUF LoRA (written once, "
            "cached as `lorastudio serve` caches them), every answer decoded together by llama.cpp"),
           ("transformers — exact", "transformers", "The base loaded as the run trained it: exactly what training "
            "computes, slower on a CPU")]
COMPARE_SIDES = ("adapter2", "adapter3")
LLAMA_NO_IMAGES = ("The llama.cpp engine cannot read images here yet: choose “transformers — exact” (or "
                   "Automatic) to ask about the image, or remove it.")
NO_RUN = "—"


class PlaygroundPage(QWidget):
    generation_finished = Signal(str)           # status

    def __init__(self, runs_root: Path | None = None, parent=None, refresh_ms: int | None = None,
                 idle_ms: int = IDLE_MS, worker_idle_s: float | None = None):
        super().__init__(parent)
        self.runs_root = Path(runs_root or default_runs_dir())
        self._eval_stamp: tuple | None = ()         # the eval.json shown: (path, mtime), read again when it changes
        # the worker's folder sits beside the runs folder (DATA/playground/<stamp>), not in a run
        self.worker = GenerationWorker(self.runs_root.parent / PLAYGROUND_DIR, self, idle_ms, worker_idle_s)
        self.worker.event.connect(self.on_event)
        self.worker.answered.connect(self.on_finished)
        self.refresher = RunsRefresher(self.runs_root, self, **({"interval_ms": refresh_ms} if refresh_ms else {}))
        self.refresher.updated.connect(self.follow_runs)
        self.prompts: list[dict] = []
        self._shown: tuple = ()             # the runs and adapters the combos show
        self._build()
        self.refresh()

    # ---- layout -------------------------------------------------------------------------------
    def _build(self) -> None:
        self.run_combo = QComboBox(minimumWidth=280)
        self.run_combo.currentIndexChanged.connect(self.on_run_changed)
        self.adapter_combo = QComboBox(minimumWidth=160)
        self.engine_combo = QComboBox(objectName="EngineCombo")
        for text, engine, tip in ENGINES:
            self.engine_combo.addItem(text, engine)
            self.engine_combo.setItemData(self.engine_combo.count() - 1, tip, Qt.ToolTipRole)
        self.engine_combo.setToolTip("Which engine answers: " + "; ".join(f"{t}: {tip}" for t, _e, tip in ENGINES))
        self.compare_combos = [QComboBox(minimumWidth=180, objectName=f"Compare{i}") for i in (1, 2)]
        for combo in self.compare_combos:
            combo.setToolTip("Another run on the same base model: its final adapter answers beside the others")
            combo.currentIndexChanged.connect(self._compare_changed)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setToolTip("The list follows the runs folder by itself; this reads it now (F5)")
        self.refresh_button.clicked.connect(self.refresh)
        QShortcut(QKeySequence(Qt.Key_F5), self, self.refresh, context=Qt.WidgetWithChildrenShortcut)
        top = QHBoxLayout()
        top.addWidget(QLabel("Run"))
        top.addWidget(self.run_combo, 1)
        top.addWidget(QLabel("Adapter"))
        top.addWidget(self.adapter_combo)
        top.addWidget(QLabel("Engine"))
        top.addWidget(self.engine_combo)
        top.addWidget(self.refresh_button)
        second = QHBoxLayout()
        second.addWidget(QLabel("Compare with"))
        for combo in self.compare_combos:
            second.addWidget(combo, 1)
        second.addStretch(1)

        self.prompt_list = QListWidget(objectName="PromptList")
        self.prompt_list.setToolTip("Held-out prompts: click one to put it in the prompt box")
        self.prompt_list.itemClicked.connect(self.use_prompt)
        self.prompt_list.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.prompt_list.setTextElideMode(Qt.ElideRight)
        self.prompt_edit = PromptEdit(objectName="PromptEdit")
        self.prompt_edit.setPlaceholderText("Type a prompt, or click a held-out one above")
        self.prompt_edit.setMaximumHeight(110)
        self.image_input = ImageInput(self.runs_root.parent / PLAYGROUND_DIR / "images")
        self.prompt_edit.image_pasted.connect(self.image_input.take_pasted)
        self.image_input.changed.connect(self._image_changed)
        self.settings = GenerationSettings()
        self.generate_button = QPushButton("Generate", objectName="Primary")
        self.generate_button.clicked.connect(self.generate)
        self.stop_button = QPushButton("Stop", enabled=False)
        self.stop_button.clicked.connect(self.worker.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.generate_button, 1)
        buttons.addWidget(self.stop_button)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(QLabel("Held-out prompts", objectName="CardTitle"))
        left_layout.addWidget(self.prompt_list, 1)
        left_layout.addWidget(QLabel("Prompt", objectName="CardTitle"))
        left_layout.addWidget(self.prompt_edit)
        left_layout.addWidget(self.image_input)
        left_layout.addWidget(self.settings)
        left_layout.addLayout(buttons)

        self.base_pane = AnswerPane("Base model", "without the adapter")
        self.adapter_pane = AnswerPane("Base + adapter", "")
        self.compare_panes = [AnswerPane("Base + adapter", "") for _side in COMPARE_SIDES]
        answers = QGridLayout()
        answers.addWidget(self.base_pane, 0, 0)
        answers.addWidget(self.adapter_pane, 0, 1)
        for i, pane in enumerate(self.compare_panes):
            answers.addWidget(pane, 1, i)
            pane.hide()
        self.reference = QLabel("", objectName="Muted", wordWrap=True,
                                textInteractionFlags=Qt.TextSelectableByMouse)
        self.status = QLabel("", objectName="Muted", wordWrap=True)
        self.image_input.message.connect(self.status.setText)
        self.eval_summary = EvalSummary()
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addLayout(answers, 1)
        right_layout.addWidget(self.reference)
        right_layout.addWidget(self.status)
        right_layout.addWidget(self.eval_summary)

        split = QSplitter(Qt.Horizontal)
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(1, 1)
        split.setSizes([320, 800])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 12, 16, 12)
        layout.addLayout(top)
        layout.addLayout(second)
        layout.addWidget(split, 1)

    # ---- runs, adapters, prompts ---------------------------------------------------------------
    def run_dir(self) -> Path | None:
        data = self.run_combo.currentData()
        return Path(data) if data else None

    def adapters_on_disk(self) -> tuple:
        """What the combos should show: every run with an adapter, and the adapters of each."""
        return tuple((str(run), tuple(adapter_steps(run))) for run in runs_with_adapters(self.runs_root))

    def refresh(self) -> None:
        current, shown = self.run_combo.currentData(), self.adapters_on_disk()
        self._shown = shown
        self.run_combo.blockSignals(True)
        self.run_combo.clear()
        for run, _steps in shown:
            self.run_combo.addItem(Path(run).name, run)
        if current:
            self.run_combo.setCurrentIndex(max(0, self.run_combo.findData(current)))
        self.run_combo.blockSignals(False)
        self._fill_compare()
        self.on_run_changed()

    def _fill_compare(self) -> None:
        """Each 'Compare with' list: no run, or any other run with an adapter (keeping the choice)."""
        for combo in self.compare_combos:
            chosen = combo.currentData()
            combo.blockSignals(True)
            combo.clear()
            combo.addItem(NO_RUN, None)
            for run, _steps in self._shown:
                combo.addItem(Path(run).name, run)
            combo.setCurrentIndex(max(0, combo.findData(chosen)) if chosen else 0)
            combo.blockSignals(False)
        self._compare_changed()

    def compared_runs(self) -> list[Path]:
        """The runs chosen to compare (not the main run, each once)."""
        main, out = self.run_combo.currentData(), []
        for combo in self.compare_combos:
            run = combo.currentData()
            if run and run != main and Path(run) not in out:
                out.append(Path(run))
        return out

    def _compare_changed(self, *_args) -> None:
        compared = self.compared_runs()
        for i, pane in enumerate(self.compare_panes):
            pane.setVisible(i < len(compared))
            if i < len(compared):
                pane.subtitle.setText(compared[i].name)

    def engine(self) -> str:
        return self.engine_combo.currentData()

    def follow_runs(self, _summaries=None) -> None:
        """The runs folder was read again (RunsRefresher): refill the lists if an adapter came or went,
        keeping the chosen run and adapter."""
        if self.adapters_on_disk() != self._shown:
            step = self.adapter_combo.currentData()
            self.refresh()
            self.adapter_combo.setCurrentIndex(max(0, self.adapter_combo.findData(step)))
        self.show_eval()            # an evaluation that ended meanwhile (from the Runs page, the CLI)

    def show_eval(self) -> None:
        """The chosen run's evaluation, read again when its eval.json is new or changed."""
        run = self.run_dir()
        path = run / EVAL_FILE if run else None
        try:
            stamp = (str(path), path.stat().st_mtime_ns) if path else None
        except OSError:
            stamp = (str(path), None)
        if stamp != self._eval_stamp:
            self._eval_stamp = stamp
            self.eval_summary.show_result(read_eval(run) if run else None, run.name if run else "")

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.refresher.start()
        self.show_eval()

    def hideEvent(self, event) -> None:
        """Leaving the page (or closing the window) stops the list's refresh and the worker; a
        minimized window keeps both (its worker still ends after the idle time)."""
        super().hideEvent(event)
        if not event.spontaneous():
            self.refresher.stop()
            self.worker.stop()

    def select_run(self, run_dir: Path) -> None:
        index = self.run_combo.findData(str(run_dir))
        if index < 0:
            self.refresh()
            index = self.run_combo.findData(str(run_dir))
        self.run_combo.setCurrentIndex(max(index, 0))

    def on_run_changed(self, *_args) -> None:
        run = self.run_dir()
        self.adapter_combo.clear()
        for label, step in adapter_choices(run) if run else []:
            self.adapter_combo.addItem(label, step)
        self.prompts = heldout_prompts(run)
        self.image_input.follow_run(run)
        self.prompt_list.clear()
        for prompt in self.prompts:
            item = QListWidgetItem(" ".join(prompt["label"].split()))
            item.setToolTip(prompt["label"])
            self.prompt_list.addItem(item)
        self._eval_stamp = ()
        self.show_eval()
        self.adapter_pane.subtitle.setText(run.name if run else "no run with an adapter yet")
        self._compare_changed()
        self.generate_button.setEnabled(run is not None and not self.worker.busy)
        if run is None:
            self.status.setText(EMPTY)
        elif self.status.text() == EMPTY:
            self.status.setText("")

    def use_prompt(self, item: QListWidgetItem) -> None:
        prompt = self.prompts[self.prompt_list.row(item)]
        self.prompt_edit.setPlainText(prompt["label"])
        if prompt.get("images"):            # a vision-language run's held-out prompt shows its images
            self.image_input.set_paths(prompt["images"])
        self.reference.setText(f"Expected: {prompt['reference']}" if prompt.get("reference") else "")

    def messages(self) -> list[dict]:
        """The chat to answer: a held-out prompt keeps its system turn; typed text is one user turn."""
        text = self.prompt_edit.toPlainText().strip()
        for prompt in self.prompts:
            if prompt["label"].strip() == text:
                return prompt["messages"]
        return [{"role": "user", "content": text}]

    # ---- generation ----------------------------------------------------------------------------
    def generate(self) -> None:
        run = self.run_dir()
        if run is None or not self.prompt_edit.toPlainText().strip() or self.worker.busy:
            self.status.setText("Type a prompt first." if run else self.status.text())
            return
        if self.image_input.images() and self.engine() == "llama.cpp":
            self.status.setText(LLAMA_NO_IMAGES)
            return
        waiting = "waiting…" if self.worker.alive else "loading…"
        compared = self.compared_runs()
        for pane in (self.base_pane, self.adapter_pane, *self.compare_panes[:len(compared)]):
            pane.clear(waiting)
        self.status.setText("Asking the generation worker…" if self.worker.alive else
                            "Starting a generation worker (loading the model takes a few seconds)…")
        self.generate_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.worker.ask(run, self.messages(), self.settings.values(), self.adapter_combo.currentData(), self.engine(),
                        compared, self.image_input.images())

    def _image_changed(self) -> None:
        """Say which engine answers a prompt with an image (llama.cpp reads text only here)."""
        if self.image_input.images():
            self.status.setText(LLAMA_NO_IMAGES if self.engine() == "llama.cpp" else
                                f"{Path(self.image_input.path).name} goes with the prompt; the transformers "
                                "engine answers (the run must have trained a vision-language model).")

    def pane(self, side: str) -> AnswerPane:
        if side in COMPARE_SIDES:
            return self.compare_panes[COMPARE_SIDES.index(side)]
        return self.base_pane if side == "base" else self.adapter_pane

    def on_event(self, ev: dict) -> None:
        kind = ev["type"]
        if kind == "token":
            self.pane(ev["side"]).append(ev["text"])
        elif kind == "answer":
            self.pane(ev["side"]).finish(ev["tokens"], ev["seconds"])
        elif kind == "phase" and ev["name"] != "answered":       # the end of a request: on_finished
            self.status.setText(ev.get("message") or ev["name"])
            if ev["name"] == "generating":
                for side in ev.get("sides") or ("base", "adapter"):
                    self.pane(side).status.setText("")
        elif kind == "error":
            self.status.setText(f"{ev['message']} — {ev['hint']}" if ev.get("hint") else ev["message"])

    def on_finished(self, status: str) -> None:
        """The request ended (completed | stopped | failed); a failure's words came as its `error` event."""
        self.generate_button.setEnabled(self.run_dir() is not None)
        self.stop_button.setEnabled(False)
        if status == "completed":
            self.status.setText("Done.")
        elif status == "stopped":
            self.status.setText("Stopped.")
        self.generation_finished.emit(status)

    def shutdown(self) -> None:
        self.refresher.stop()
        self.worker.stop()
