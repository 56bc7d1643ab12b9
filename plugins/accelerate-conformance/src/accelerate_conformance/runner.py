"""Run the conformance suite in a fresh Python process and read back every check's outcome.

For CI jobs and tests that check a plugin from outside (as the repository's own CI does for its
in-repo backends): ``run_conformance(["--accelerate-backend", "ddp"])``. A fresh process is what
a plugin author runs, and the only way to see a plugin that was installed (or removed) after the
current process started.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Variables of the calling shell or test run that would change what the suite checks.
_DROPPED_PREFIXES = ("ACCELERATE_CORE_", "SLURM_", "PYTEST_")
_DROPPED = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class ConformanceResult:
    """The suite's exit code, its terminal output and each check's outcome.

    ``outcomes`` maps a check (the test name, ``"test_registration"``) to ``"passed"``,
    ``"failed"`` (an assertion or an error) or ``"skipped"``.
    """

    returncode: int
    output: str
    outcomes: dict[str, str] = field(default_factory=dict)

    def with_outcome(self, outcome: str) -> list[str]:
        """The checks with this outcome, sorted (``result.with_outcome("failed")``)."""
        return sorted(name for name, value in self.outcomes.items() if value == outcome)

    @property
    def report(self) -> str:
        """The conformance report at the end of the output (from its title line on)."""
        start = self.output.rfind("accelerate-core conformance:")
        return self.output[start:] if start >= 0 else self.output[-4000:]


def run_conformance(
    options: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    python_path: Sequence[str | os.PathLike[str]] = (),
    timeout: float = 900.0,
    extra_pytest_args: Sequence[str] = (),
) -> ConformanceResult:
    """``python -m pytest OPTIONS --pyargs accelerate_conformance`` in a clean directory.

    ``python_path`` is prepended to ``PYTHONPATH`` (a plugin installed with ``pip --target``);
    ``env`` adds variables. Launch and ``ACCELERATE_CORE_*`` variables of this process are not
    passed on, so the checks see only what the options say.
    """
    child_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_DROPPED_PREFIXES) and k not in _DROPPED and k != "PYTHONPATH"
    }
    paths = [str(p) for p in python_path]
    if paths:
        child_env["PYTHONPATH"] = os.pathsep.join(paths)
    child_env.update(env or {})
    with tempfile.TemporaryDirectory(prefix="accelerate-conformance-") as directory:
        junit = Path(directory) / "report.xml"
        command = [
            sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--tb=short",
            f"--junitxml={junit}", *options, *extra_pytest_args,
            "--pyargs", "accelerate_conformance",
        ]  # fmt: skip
        done = subprocess.run(
            command, cwd=directory, env=child_env, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip
        outcomes = _outcomes(junit) if junit.exists() else {}
    return ConformanceResult(done.returncode, done.stdout + done.stderr, outcomes)


def _outcomes(junit: Path) -> dict[str, str]:
    outcomes = {}
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        tags = {child.tag for child in case}
        if tags & {"failure", "error"}:
            outcome = "failed"
        elif "skipped" in tags:
            outcome = "skipped"
        else:
            outcome = "passed"
        outcomes[case.get("name", "")] = outcome
    return outcomes
