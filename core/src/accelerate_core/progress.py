"""A text progress bar for long offline commands (merging weights); no dependency.

On a terminal it redraws one line; elsewhere (logs, CI) it prints a line every tenth of the way,
so the output stays short.
"""

from __future__ import annotations

import sys
from typing import TextIO


class ProgressBar:
    """``bar.advance(n)`` after each piece; ``bar.close()`` prints the last state."""

    WIDTH = 30

    def __init__(self, total: int, label: str, unit: str = "", stream: TextIO | None = None):
        self.total = max(int(total), 1)
        self.label = label
        self.unit = unit
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self._shown_tenth = -1

    def _line(self) -> str:
        filled = self.WIDTH * self.done // self.total
        bar = "#" * filled + "." * (self.WIDTH - filled)
        percent = 100 * self.done // self.total
        return f"{self.label} [{bar}] {percent:3d}% {_size(self.done, self.unit)}/" + _size(
            self.total, self.unit
        )

    def advance(self, amount: int = 1) -> None:
        self.done = min(self.done + int(amount), self.total)
        if self.live:
            self.stream.write("\r" + self._line())
            self.stream.flush()
            return
        tenth = 10 * self.done // self.total
        if tenth > self._shown_tenth:
            self._shown_tenth = tenth
            self.stream.write(self._line() + "\n")

    def close(self) -> None:
        if self.live:
            self.stream.write("\r" + self._line() + "\n")
        elif self._shown_tenth < 10:
            self.stream.write(self._line() + "\n")
        self.stream.flush()


def _size(value: int, unit: str) -> str:
    if unit != "B":
        return f"{value}{unit}"
    for suffix, scale in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if value >= scale:
            return f"{value / scale:.1f}{suffix}"
    return f"{value}B"
