"""The runs as a Qt table model. Updated in place (rows added, changed, removed by folder), so a
refresh keeps the user's sorting, selection and scroll position."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtGui import QBrush, QColor, QFont

from lorastudio.app.runs.runs_columns import COLUMNS, STATUS_COLORS, STATUS_COLUMN, row_tooltip
from lorastudio.core.runs.listing import RunSummary

SORT_ROLE = Qt.UserRole + 1
PATH_ROLE = Qt.UserRole + 2


class RunsTableModel(QAbstractTableModel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.runs: list[RunSummary] = []
        self._bold = QFont()
        self._bold.setBold(True)

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.runs)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.DisplayRole):
        if orientation != Qt.Horizontal:
            return None
        if role == Qt.DisplayRole:
            return COLUMNS[section].title
        if role == Qt.ToolTipRole:
            return COLUMNS[section].tip
        return None

    def data(self, index, role=Qt.DisplayRole):
        if not index.isValid():
            return None
        run, column = self.runs[index.row()], COLUMNS[index.column()]
        if role == Qt.DisplayRole:
            return column.text(run)
        if role == SORT_ROLE:
            return column.key(run)
        if role == PATH_ROLE:
            return str(run.path)
        if role == Qt.ToolTipRole:
            return row_tooltip(run)
        if role == Qt.TextAlignmentRole and column.numeric:
            return int(Qt.AlignRight | Qt.AlignVCenter)
        if index.column() == STATUS_COLUMN and role == Qt.ForegroundRole:
            return QBrush(QColor(STATUS_COLORS.get(run.status, "#888888")))
        if index.column() in (0, STATUS_COLUMN) and role == Qt.FontRole:
            return self._bold
        return None

    def run_at(self, row: int) -> RunSummary:
        return self.runs[row]

    def update(self, runs: list[RunSummary]) -> None:
        """Make the rows equal `runs`, touching only what changed."""
        new = {r.path: r for r in runs}
        for row in reversed(range(len(self.runs))):
            if self.runs[row].path not in new:
                self.beginRemoveRows(QModelIndex(), row, row)
                del self.runs[row]
                self.endRemoveRows()
        rows = {r.path: i for i, r in enumerate(self.runs)}
        for path, run in new.items():
            if path in rows:
                row = rows[path]
                if self.runs[row] != run:
                    self.runs[row] = run
                    self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))
            else:
                self.beginInsertRows(QModelIndex(), len(self.runs), len(self.runs))
                self.runs.append(run)
                self.endInsertRows()

    def row_of(self, path: Path) -> int:
        return next((i for i, r in enumerate(self.runs) if r.path == Path(path)), -1)


class RunsSortProxy(QSortFilterProxyModel):
    """Sorts on each column's own key (numbers as numbers, steps by progress), not on the text."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setSortRole(SORT_ROLE)

    def lessThan(self, left, right) -> bool:
        a, b = left.data(SORT_ROLE), right.data(SORT_ROLE)
        try:
            return a < b
        except TypeError:
            return str(a) < str(b)
