"""Reading the documentation's Markdown: fenced code blocks with the marker comment before them,
sections by heading, and the files the site's pages include.

Markers (an HTML comment on the line before a fence, invisible on GitHub, PyPI and the site):

- ``<!-- not run: REASON -->``: the block is not executed here; the reason is required.
- ``<!-- example: NAME -->``: the block is extracted by name and used by a test
  (``tests/test_plugin_docs.py`` installs the plugin that plugins/README.md shows).
- ``<!-- run: OPTION ... -->``: how to run the block (``setup=NAME`` runs a prelude of
  ``tests/doc_setups.py`` first, ``fresh`` starts a new process); no marker: Python and shell
  blocks run as they are, YAML/TOML/JSON blocks are parsed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"

FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)(?P<lang>[\w+-]*)[^\n]*\n"
    r"(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
    flags=re.MULTILINE | re.DOTALL,
)
MARKER = re.compile(r"<!--\s*(?P<kind>not run|example|run)\s*(?::\s*(?P<value>.*?))?\s*-->\s*$")
SNIPPET = re.compile(r'^[ \t]*-{1,}8<-{1,}[ \t]+"(?P<path>[^":]+)(?::(?P<section>[\w-]+))?"', re.M)


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    marker: str | None  # "not run", "example", "run" or None
    value: str  # the marker's text after the colon

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"

    def options(self) -> dict[str, str]:
        """``run:`` options: ``setup=toy fresh`` -> {"setup": "toy", "fresh": ""}."""
        if self.marker != "run":
            return {}
        pairs = (word.partition("=") for word in self.value.split())
        return {key: value for key, _, value in pairs}


def blocks(path: Path) -> list[Block]:
    """Every fenced code block of ``path``, with the marker on the line before it (if any)."""
    text = path.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        marker = MARKER.search(before)
        indent = match.group("indent")
        body = match.group("body")
        if indent:
            body = "\n".join(line.removeprefix(indent) for line in body.split("\n"))
        found.append(
            Block(
                path=path,
                line=text.count("\n", 0, match.start()) + 1,
                lang=match.group("lang").lower(),
                code=body,
                marker=marker.group("kind") if marker else None,
                value=(marker.group("value") or "").strip() if marker else "",
            )
        )
    return found


def example(text: str, name: str) -> str:
    """The fenced code block after ``<!-- example: NAME -->``."""
    match = re.search(
        rf"<!-- example: {re.escape(name)} -->\s*```\w*\n(.*?)```", text, flags=re.DOTALL
    )
    assert match, f"no example block {name!r}"
    return match.group(1)


def section(text: str, heading: str) -> str:
    """The text under ``heading`` up to the next heading of the same or a higher level."""
    match = re.search(rf"^(#+) {re.escape(heading)}\s*$", text, flags=re.MULTILINE)
    assert match, f"no heading {heading!r}"
    level = len(match.group(1))
    rest = text[match.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, flags=re.MULTILINE)
    return rest[: end.start()] if end else rest


def included(page: Path) -> list[tuple[Path, str | None]]:
    """The files (and named sections) a page includes with ``--8<-- "path[:section]"``."""
    text = page.read_text(encoding="utf-8")
    return [(REPO / m.group("path"), m.group("section")) for m in SNIPPET.finditer(text)]


def pages() -> list[Path]:
    """Every Markdown page of the site."""
    return sorted(DOCS.rglob("*.md"))


def documentation_files() -> list[Path]:
    """The site's pages and every file they include: all the Markdown the site is made of."""
    files = set(pages())
    for page in pages():
        files.update(path for path, _ in included(page) if path.suffix == ".md")
    return sorted(files)
