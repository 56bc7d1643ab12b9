"""``transformers.utils`` stand-in: logging switches and version checks that do nothing."""

from . import logging, versions  # noqa: F401


def check_min_version(version):
    return None


def send_example_telemetry(*args, **kwargs):
    return None
