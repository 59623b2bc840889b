"""Preference tuning's live plots (training.method dpo / orpo): the reward margin, the accuracy and
the answers' log-probabilities, for training steps and held-out pairs.

The journal's step and eval events of a preference run carry `margin` (chosen − rejected reward;
ORPO: the log odds ratio), `accuracy` (the share of pairs with a positive margin), `chosen_logp` and
`rejected_logp`; an eval event also `prefers_chosen` (the share of held-out pairs whose chosen answer
the model itself finds likelier). `PreferenceSeries` folds them (Qt-free); `PreferencePlot` draws them
and stays hidden for a supervised run, whose events have none of these fields.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from PySide6.QtWidgets import QHBoxLayout, QWidget

from lorastudio.app.dashboard.run_state import Series
from lorastudio.app.theme import SERIES
from lorastudio.app.widgets.series_plot import SeriesPlot

CHOSEN, REJECTED = "#2aa876", "#d64545"


@dataclass
class PreferenceSeries:
    margin: Series = field(default_factory=Series)
    accuracy: Series = field(default_factory=Series)
    chosen: Series = field(default_factory=Series)
    rejected: Series = field(default_factory=Series)
    eval_margin: Series = field(default_factory=Series)
    eval_accuracy: Series = field(default_factory=Series)
    eval_prefers: Series = field(default_factory=Series)

    def apply(self, event: dict) -> bool:
        """Fold one journal event; True when it carried preference figures."""
        if event.get("type") not in ("step", "eval") or not isinstance(event.get("margin"), (int, float)):
            return False
        x = event["step"]
        if event["type"] == "step":
            self.margin.add(x, event["margin"])
            self.accuracy.add(x, _number(event.get("accuracy")))
            self.chosen.add(x, _number(event.get("chosen_logp")))
            self.rejected.add(x, _number(event.get("rejected_logp")))
        else:
            self.eval_margin.add(x, event["margin"])
            self.eval_accuracy.add(x, _number(event.get("accuracy")))
            self.eval_prefers.add(x, _number(event.get("prefers_chosen")))
        return True

    @property
    def empty(self) -> bool:
        return not (len(self.margin) or len(self.eval_margin))


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class PreferencePlot(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.series = PreferenceSeries()
        self.margin_plot = SeriesPlot("Reward margin", "chosen − rejected")
        self.accuracy_plot = SeriesPlot("Pair accuracy", "share")
        self.logp_plot = SeriesPlot("Answer log-prob", "log p")
        self.margin_plot.setToolTip("DPO: β·(log-ratio of the chosen − of the rejected answer) against the base; "
                                    "ORPO: the log odds ratio. Above 0: the tuned model prefers the chosen answer.")
        self.accuracy_plot.setToolTip("The share of pairs with a positive margin (train and held-out), and "
                                      "(picks chosen) of held-out pairs whose chosen answer the model itself "
                                      "finds likelier")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(8)
        for plot in (self.margin_plot, self.accuracy_plot, self.logp_plot):
            layout.addWidget(plot)
        self.hide()

    def reset(self) -> None:
        self.series = PreferenceSeries()
        for plot in (self.margin_plot, self.accuracy_plot, self.logp_plot):
            plot.clear_data()
        self.hide()

    def apply(self, event: dict) -> None:
        if self.series.apply(event) and self.isHidden():
            self.show()

    def redraw(self) -> None:
        s = self.series
        if s.empty:
            return
        self.margin_plot.set_data("train", s.margin.x, s.margin.y, label="train", color=SERIES["train"])
        self.margin_plot.set_data("eval", s.eval_margin.x, s.eval_margin.y, label="held-out",
                                  color=SERIES["eval"], symbol="o")
        self.accuracy_plot.set_data("train", s.accuracy.x, s.accuracy.y, label="train", color=SERIES["train"])
        self.accuracy_plot.set_data("eval", s.eval_accuracy.x, s.eval_accuracy.y, label="held-out",
                                    color=SERIES["eval"], symbol="o")
        self.accuracy_plot.set_data("prefers", s.eval_prefers.x, s.eval_prefers.y, label="picks chosen",
                                    color=CHOSEN, symbol="t")
        self.logp_plot.set_data("chosen", s.chosen.x, s.chosen.y, label="chosen", color=CHOSEN)
        self.logp_plot.set_data("rejected", s.rejected.x, s.rejected.y, label="rejected", color=REJECTED)
