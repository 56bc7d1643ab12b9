"""The in-repo plugins pass the conformance suite third parties run against theirs.

Each runs as a plugin author would run it, in a fresh process:
``python -m pytest --accelerate-backend NAME --pyargs accelerate_conformance``. A backend that is
not installed is skipped. Runtime on 2 CPU cores: about 25 s for ddp, 20 s for fsdp, 30 s for
deepspeed (every check: its two torchrun jobs are most of it) and 10 s for fp8.
"""

from __future__ import annotations

import importlib.metadata as importlib_metadata

import pytest

pytest.importorskip("accelerate_conformance")
from accelerate_conformance.runner import run_conformance

pytestmark = pytest.mark.multiprocess

# Checks an in-repo plugin is known to fail, with the reason; the test fails when one of them
# starts passing (remove it here then) and when any other check fails.
KNOWN_FAILURES: dict[str, dict[str, str]] = {}


def installed(name: str) -> bool:
    return any(ep.name == name for ep in importlib_metadata.entry_points(group="accelerate_core"))


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("kind", "name"),
    [("backend", "ddp"), ("backend", "fsdp"), ("backend", "deepspeed"), ("precision", "fp8")],
)
def test_in_repo_plugin_conforms(kind: str, name: str) -> None:
    if not installed(name):
        pytest.skip(f"{kind} '{name}' is not installed")
    result = run_conformance([f"--accelerate-{kind}", name], timeout=540)
    print(result.report)
    known = KNOWN_FAILURES.get(name, {})
    failed = set(result.with_outcome("failed"))
    assert result.outcomes, f"the suite did not run:\n{result.output[-3000:]}"
    assert failed == set(known), (
        f"{kind} '{name}': unexpected failures {sorted(failed - set(known))}, known failures "
        f"that now pass (remove them from KNOWN_FAILURES) {sorted(set(known) - failed)}\n"
        f"{result.report}"
    )
    assert result.outcomes.get("test_registration") == "passed"
    ran = result.with_outcome("passed")
    assert len(ran) >= 4, f"too few checks ran: {result.outcomes}"
    assert result.returncode == (1 if known else 0), result.output[-3000:]
