"""One example as the model sees it: every token, the trained ones highlighted.

Tokens alternate between two shades so their boundaries show; trained tokens (those whose label
counts toward the loss) sit on green, the rest are drawn muted. A trained line break is shown as
"↵" so that an assistant turn's closing newline is visible. A run of image tokens (a vision-language
example's, never trained) is drawn as one blue chip "[image 1 · 64 tokens]" where it sits. Each
character's format carries TRAINED and IMAGE (user properties) so that tests read the highlight
without guessing colours.
"""
from __future__ import annotations

from PySide6.QtGui import QColor, QFont, QFontDatabase, QPalette, QTextCharFormat, QTextCursor, QTextFormat
from PySide6.QtWidgets import QTextEdit, QWidget

from lorastudio.app.dataset.inspection_text import image_spans

TRAINED = QTextFormat.UserProperty + 1
IMAGE = QTextFormat.UserProperty + 2
IMAGE_SHADE = QColor(66, 120, 230, 70)
TRAINED_SHADES = (QColor(42, 168, 118, 85), QColor(42, 168, 118, 140))
UNTRAINED_SHADES = (QColor(128, 128, 140, 0), QColor(128, 128, 140, 38))
NEWLINE_MARK = "↵"


class TokenView(QTextEdit):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setReadOnly(True)
        self.setLineWrapMode(QTextEdit.WidgetWidth)
        font = QFontDatabase.systemFont(QFontDatabase.FixedFont)
        font.setPointSizeF(max(8.5, font.pointSizeF() - 0.5))
        self.document().setDefaultFont(font)
        self.setMinimumHeight(120)
        self.setMaximumHeight(240)
        self.tokens: list[dict] = []

    def set_tokens(self, tokens: list[dict], image_tokens: list[int] = ()) -> None:
        """`image_tokens`: the positions of the example's image tokens (the inspector's report)."""
        self.tokens = list(tokens)
        self.clear()
        cursor = QTextCursor(self.document())
        cursor.beginEditBlock()
        muted = self.palette().color(QPalette.PlaceholderText)
        spans = {a: b for a, b in image_spans(list(image_tokens))}
        i, n_image = 0, 0
        while i < len(self.tokens):
            if i in spans:
                n_image += 1
                count = spans[i] - i + 1
                cursor.insertText(f"[image {n_image} · {count:,} token{'s' * (count != 1)}]", self._image_format())
                i = spans[i] + 1
                continue
            tok = self.tokens[i]
            trained = bool(tok["trained"])
            text = tok["text"].replace("\n", NEWLINE_MARK + "\n") if trained else tok["text"]
            cursor.insertText(text, self._format(trained, i % 2, muted))
            i += 1
        cursor.endEditBlock()
        self.moveCursor(QTextCursor.Start)

    @staticmethod
    def _image_format() -> QTextCharFormat:
        fmt = QTextCharFormat()
        fmt.setProperty(IMAGE, True)
        fmt.setProperty(TRAINED, False)
        fmt.setBackground(IMAGE_SHADE)
        fmt.setFontItalic(True)
        return fmt

    def image_text(self) -> str:
        """The image chips' characters in document order."""
        return self._text_with(IMAGE)

    @staticmethod
    def _format(trained: bool, shade: int, muted: QColor) -> QTextCharFormat:
        fmt = QTextCharFormat()
        fmt.setProperty(TRAINED, trained)
        fmt.setBackground((TRAINED_SHADES if trained else UNTRAINED_SHADES)[shade])
        if trained:
            fmt.setFontWeight(QFont.DemiBold)
        else:
            fmt.setForeground(muted)
        return fmt

    def trained_text(self) -> str:
        """The highlighted characters in document order (line breaks and ↵ marks left out)."""
        return self._text_with(TRAINED, skip=("\u2029", "\u2028", NEWLINE_MARK))

    def _text_with(self, prop: int, skip=()) -> str:
        """The characters whose format has the user property `prop` set, in document order."""
        doc, out = self.document(), []
        cursor = QTextCursor(doc)
        for pos in range(doc.characterCount() - 1):
            cursor.setPosition(pos + 1)
            char = doc.characterAt(pos)
            if char not in skip and cursor.charFormat().property(prop):
                out.append(char)
        return "".join(out)
