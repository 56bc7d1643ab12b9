"""The pytest plugin of accelerate-conformance (entry point ``pytest11``).

Adds ``--accelerate-backend NAME``, ``--accelerate-precision NAME``, ``--accelerate-device NAME``,
``--accelerate-tolerance X`` and ``--accelerate-timeout S``; run the checks with

    pytest --accelerate-backend mybackend --pyargs accelerate_conformance
    pytest --accelerate-device mydevice --pyargs accelerate_conformance

Harmless everywhere else: it imports neither torch nor accelerate-core, its fixtures are prefixed
``accelerate_conformance_``, and the checks (marked ``accelerate_conformance``) skip themselves
when no backend, precision or device is given. With one, the terminal summary ends with a report
that names every check and why it failed.
"""

from __future__ import annotations

from typing import Any

import pytest

from .target import Target

MARKER = "accelerate_conformance"
NO_TARGET = (
    "accelerate-conformance checks run only when asked: pytest --accelerate-backend NAME "
    "(or --accelerate-precision NAME, --accelerate-device NAME) --pyargs accelerate_conformance"
)
# Long enough for a torchrun job with a heavy library (DeepSpeed) on a small machine.
CHECK_TIMEOUT = 900


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("accelerate-conformance", "accelerate-core plugin conformance")
    group.addoption(
        "--accelerate-backend",
        metavar="NAME",
        help="check the installed accelerate-core backend NAME (run with --pyargs "
        "accelerate_conformance)",
    )
    group.addoption(
        "--accelerate-precision",
        metavar="NAME",
        help="check the installed mixed-precision plugin NAME (alone, or with the backend)",
    )
    group.addoption(
        "--accelerate-device",
        metavar="NAME",
        help="check the device NAME (alone, on the backend none, or with a backend or "
        "precision, which then train on it instead of the CPU)",
    )
    group.addoption(
        "--accelerate-tolerance",
        type=float,
        metavar="X",
        help="largest allowed max|ours - reference| / max|reference| of the trained weights "
        "(default: 0 where the arithmetic is the reference's, small bounds elsewhere)",
    )
    group.addoption(
        "--accelerate-timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="a multi-process run taking longer counts as a hang (default 600)",
    )


def target_from(config: pytest.Config) -> Target | None:
    """The ``Target`` the options describe, or ``None`` when no backend, precision or device."""
    backend = config.getoption("accelerate_backend", None)
    precision = config.getoption("accelerate_precision", None)
    device = config.getoption("accelerate_device", None)
    if backend is None and precision is None and device is None:
        return None
    return Target(
        backend=backend,
        precision=precision,
        device=device,
        tolerance=config.getoption("accelerate_tolerance", None),
        timeout=config.getoption("accelerate_timeout", 600.0),
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}: a check of the accelerate-core conformance suite (runs only with "
        "--accelerate-backend or --accelerate-precision)",
    )
    report = ConformanceReport(target_from(config))
    config.stash[_REPORT] = report
    config.pluginmanager.register(report, "accelerate-conformance-report")


@pytest.fixture(scope="session")
def accelerate_conformance_target(pytestconfig: pytest.Config) -> Target:
    """The backend/precision under check (the checks skip without one)."""
    target = target_from(pytestconfig)
    if target is None:
        pytest.skip(NO_TARGET)
    return target


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    report = config.stash[_REPORT]
    timeout = config.pluginmanager.hasplugin("timeout")
    for item in items:
        if item.get_closest_marker(MARKER) is None:
            continue
        if report.target is None:
            item.add_marker(pytest.mark.skip(reason=NO_TARGET))
            continue
        report.titles[item.nodeid] = _title(item)
        if timeout and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(CHECK_TIMEOUT))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    report = config.stash[_REPORT]
    if report.target is None or not report.outcomes:
        return
    for line in report.lines():
        terminalreporter.write_line(line)


def _title(item: pytest.Item) -> str:
    """``test_save_load_round_trip`` -> ``save load round trip`` (the check's name)."""
    return item.name.removeprefix("test_").replace("_", " ")


class ConformanceReport:
    """The outcome of every check, written at the end of the terminal summary."""

    def __init__(self, target: Target | None) -> None:
        self.target = target
        self.titles: dict[str, str] = {}
        self.outcomes: dict[str, tuple[str, str]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Remember the outcome (and the reason) of each phase of a check."""
        if report.nodeid not in self.titles:
            return
        if report.when == "call" or report.outcome != "passed":
            if self.outcomes.get(report.nodeid, ("",))[0] == "FAILED":
                return  # a teardown after a failed call does not replace the reason
            reason = _reason(report)
            if report.passed:
                details = [v for k, v in report.user_properties if k == MARKER]
                reason = "\n".join(str(d) for d in details)
            self.outcomes[report.nodeid] = (report.outcome.upper(), reason)

    def lines(self) -> list[str]:
        """The report: one line per check (with its reason or detail) and the verdict."""
        assert self.target is not None
        out = ["", f"accelerate-core conformance: {self.target.describe()}"]
        for nodeid, title in self.titles.items():
            outcome, reason = self.outcomes.get(nodeid, ("NOT RUN", ""))
            out.append(f"  {outcome:<8} {title}")
            shown = reason.splitlines() if outcome == "PASSED" else reason.splitlines()[:1]
            out.extend(f"           {line}" for line in shown)
        failed = sum(1 for outcome, _ in self.outcomes.values() if outcome == "FAILED")
        ran = sum(1 for outcome, _ in self.outcomes.values() if outcome != "SKIPPED")
        verdict = (
            "CONFORMS" if failed == 0 and ran else "DOES NOT CONFORM" if failed else "NO CHECK RAN"
        )
        out.append(f"  {verdict}: {failed} of {ran} checks that ran failed")
        return out


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if report.skipped and isinstance(longrepr, tuple):
        return str(longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message).removeprefix("Failed: ")
    return str(longrepr or "")


_REPORT = pytest.StashKey[ConformanceReport]()
