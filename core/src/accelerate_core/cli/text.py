"""Text for the terminal: docstrings are reStructuredText, ``--help`` is plain."""

from __future__ import annotations

import re

_ROLE = re.compile(r":[a-z]+:`([^`]+)`")  # :func:`name`
_LITERAL = re.compile(r"``([^`]+)``")
_INTERPRETED = re.compile(r"`([^`]+)`")


def plain(text: str) -> str:
    """``text`` without reStructuredText markup: ``literal`` and :role:`x` become their text."""
    text = _ROLE.sub(r"\1", text)
    text = _LITERAL.sub(r"\1", text)
    return _INTERPRETED.sub(r"\1", text)


def summary(doc: str | None) -> str:
    """The first paragraph of a module docstring, as plain text for a parser's description."""
    return plain((doc or "").split("\n\n")[0].strip())
