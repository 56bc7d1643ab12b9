"""``--help`` of every command is plain text: no reStructuredText markup from the docstrings."""

from __future__ import annotations

import pytest

from accelerate_core.cli.main import main
from accelerate_core.cli.text import plain


@pytest.mark.parametrize(
    "argv",
    [[], ["launch"], ["config"], ["config", "import"], ["test"], ["env"], ["memory"],
     ["merge-weights"], ["convert-checkpoint"], ["estimate-memory"]],
    ids=lambda a: " ".join(a) or "accel",
)  # fmt: skip
def test_help_shows_no_rst_markup(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "``" not in out and ":func:" not in out and ":class:" not in out
    assert out.startswith("usage: accel")


def test_plain_keeps_the_words():
    assert plain("``accel launch`` runs :func:`main` with `x`") == "accel launch runs main with x"
