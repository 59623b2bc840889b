"""The run's evaluation figures (RUN/eval.json, from Evaluate… or `lorastudio eval`): base and
adapter side by side. The Playground and the Evaluate dialog show it."""
from __future__ import annotations

from PySide6.QtWidgets import QFrame, QGridLayout, QLabel, QVBoxLayout

ROWS = (("Held-out loss", "loss", "{:.3f}"), ("Exact match", "exact_match", "{:.0%}"),
        ("JSON format valid", "json_valid", "{:.0%}"))


class EvalSummary(QFrame):
    def __init__(self, parent=None):
        super().__init__(parent, objectName="Card")
        self.title = QLabel("Evaluation", objectName="CardTitle")
        self.note = QLabel("", objectName="Muted", wordWrap=True)
        self.grid = QGridLayout()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 10, 12, 10)
        layout.addWidget(self.title)
        layout.addLayout(self.grid)
        layout.addWidget(self.note)
        self.show_result(None, "")

    def show_result(self, result: dict | None, run_name: str) -> None:
        while self.grid.count():
            self.grid.takeAt(0).widget().deleteLater()
        if not result:
            self.note.setText(f"No evaluation yet: Evaluate… on the Runs page, or lorastudio eval {run_name or 'RUN'}")
            return
        for col, head in enumerate(("", "Base", "Adapter"), start=0):
            self.grid.addWidget(QLabel(head, objectName="Muted"), 0, col)
        row = 1
        for label, key, fmt in ROWS:
            base, adapter = result.get("base", {}).get(key), result.get("adapter", {}).get(key)
            if base is None and adapter is None:
                continue
            self.grid.addWidget(QLabel(label), row, 0)
            for col, value in ((1, base), (2, adapter)):
                self.grid.addWidget(QLabel(fmt.format(value) if value is not None else "–",
                                           objectName="EvalValue"), row, col)
            row += 1
        took = f" in {result['seconds']:.0f} s" if isinstance(result.get("seconds"), (int, float)) else ""
        self.note.setText(f"{result.get('base', {}).get('prompts', 0)} prompts from {result.get('data', '?')}{took}")
