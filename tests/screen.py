"""A small terminal for tests: what a person would see after a program wrote `data`.

It knows what the displays use (text, CR/LF, auto-wrap, cursor moves, erasing; colours and
modes are ignored) and keeps the scrollback, into which, as on a real terminal, the cursor
cannot go back. So a line that a redraw erased is gone, and one that scrolled out of reach
of the cursor stays.
"""

from __future__ import annotations

import re

__all__ = ["Screen"]

_CONTROL = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])|\x1b\][^\x07]*\x07|\x1b.|[\r\n\x08]")


class Screen:
    """A terminal `columns` wide and `rows` high, with unlimited scrollback."""

    def __init__(self, columns: int = 100, rows: int = 40) -> None:
        self.columns, self.rows = columns, rows
        self._cells: list[list[str]] = [[]]
        self._wrapped: list[bool] = [False]  # the row goes on in the next one (auto-wrap)
        self._row = self._col = self._lowest = 0

    def feed(self, data: str) -> Screen:
        """Apply what a program wrote."""
        position = 0
        for match in _CONTROL.finditer(data):
            self._text(data[position : match.start()])
            self._control(match)
            position = match.end()
        self._text(data[position:])
        return self

    def lines(self) -> list[str]:
        """The logical lines on the screen and in the scrollback, wrapped rows joined."""
        lines, current = [], ""
        for cells, wrapped in zip(self._cells, self._wrapped, strict=True):
            current += "".join(cells).rstrip() if not wrapped else "".join(cells)
            if not wrapped:
                lines.append(current)
                current = ""
        return lines

    @property
    def _top(self) -> int:
        return max(0, self._lowest + 1 - self.rows)

    def _move_to(self, row: int, col: int) -> None:
        self._row = max(row, self._top)
        self._col = min(max(col, 0), self.columns - 1)
        while len(self._cells) <= self._row:
            self._cells.append([])
            self._wrapped.append(False)
        self._lowest = max(self._lowest, self._row)

    def _text(self, text: str) -> None:
        for char in text:
            if self._col >= self.columns:  # the last column was written: wrap now
                self._wrapped[self._row] = True
                self._move_to(self._row + 1, 0)
            cells = self._cells[self._row]
            cells.extend(" " * (self._col + 1 - len(cells)))
            cells[self._col] = char
            self._col += 1

    def _control(self, match: re.Match[str]) -> None:
        token = match.group(0)
        if token == "\r":
            self._col = 0
        elif token == "\n":
            self._move_to(self._row + 1, self._col)
        elif token == "\x08":
            self._col = max(self._col - 1, 0)
        elif match.group(2):
            self._csi(match.group(1), match.group(2))

    def _csi(self, params: str, final: str) -> None:
        if params.startswith("?"):
            return  # modes: the cursor shown or hidden, and the like
        numbers = [int(n) if n else 0 for n in params.split(";")] if params else []
        n = numbers[0] if numbers else 0
        step = max(n, 1)
        if final == "A":
            self._move_to(self._row - step, self._col)
        elif final == "B":
            self._move_to(self._row + step, self._col)
        elif final == "C":
            self._move_to(self._row, self._col + step)
        elif final == "D":
            self._move_to(self._row, self._col - step)
        elif final == "G":
            self._move_to(self._row, step - 1)
        elif final in "Hf":
            col = numbers[1] if len(numbers) > 1 else 1
            self._move_to(self._top + step - 1, max(col, 1) - 1)
        elif final == "K":
            self._erase_line(n)
        elif final == "J":
            self._erase_display(n)

    def _erase_line(self, how: int) -> None:
        cells = self._cells[self._row]
        if how == 0:
            del cells[self._col :]
            self._wrapped[self._row] = False
        elif how == 1:
            cells[: self._col + 1] = [" "] * min(self._col + 1, len(cells))
        else:
            cells.clear()
            self._wrapped[self._row] = False

    def _erase_display(self, how: int) -> None:
        first = self._row + 1 if how == 0 else self._top
        if how == 0:
            self._erase_line(0)
        for row in range(first, len(self._cells)):
            self._cells[row] = []
            self._wrapped[row] = False
