"""The installed distribution: entry point, light import, registration, torchao errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from accelerate_core import Accelerator
from accelerate_core.plugins import get_plugin_manager, incompatibility, installed_entry_points
from accelerate_fp8 import FP8BackendNotInstalledError, FP8HardwareError

pytestmark = pytest.mark.timeout(60)


def test_fp8_plugin_entry_point_registers_the_fp8_precision():
    (metadata,) = [r for r in installed_entry_points() if r.name == "fp8"]
    assert (metadata.value, metadata.distribution) == ("accelerate_fp8._plugin", "accelerate-fp8")
    (record,) = [r for r in get_plugin_manager().entry_points if r.name == "fp8"]
    assert (record.value, record.distribution) == ("accelerate_fp8._plugin", "accelerate-fp8")
    assert incompatibility("accelerate-fp8") is None  # declares accelerate-core>=0.1,<0.2
    registered = get_plugin_manager().registry()["precision"]["fp8"]
    assert registered.distribution.startswith("accelerate-fp8")
    assert registered.spec.requires_device_support is None  # checked per backend instead
    assert record.status == "loaded"


def test_fp8_plugin_loading_imports_no_fp8_library():
    code = (
        "import sys, warnings\n"
        "from accelerate_core.plugins import PluginManager\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    PluginManager()\n"
        "import accelerate_fp8\n"
        "print([str(w.message) for w in caught if \"'fp8'\" in str(w.message)])\n"
        "print(sorted(m for m in ('torchao', 'transformer_engine', 'msamp') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["[]", "[]"]


def test_fp8_plugin_missing_torchao_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao", None)
    with pytest.raises(
        FP8BackendNotInstalledError, match=r'needs torchao.*pip install "accelerate-fp8\[torchao\]"'
    ):
        Accelerator(mixed_precision="fp8", cpu=True)


def test_fp8_plugin_missing_torchao_fails_at_prepare_when_autocast_was_not_asked(monkeypatch):
    # A backend that owns precision (DeepSpeed) skips the autocast hook; convert still checks.
    from accelerate_core import PrepareRequest
    from accelerate_fp8 import hooks

    accelerator = Accelerator(mixed_precision="fp8", cpu=True)
    monkeypatch.setitem(sys.modules, "torchao", None)
    with pytest.raises(FP8BackendNotInstalledError):
        hooks.convert(PrepareRequest(), accelerator.plugin_context)


def test_fp8_plugin_device_without_fp8_matmul_is_a_hardware_error(monkeypatch):
    from accelerate_fp8 import support

    monkeypatch.setattr(support, "scaled_mm_error", lambda device: "RuntimeError: no kernel")
    with pytest.raises(FP8HardwareError, match=r"cannot run on cpu.*no kernel.*'bf16'"):
        Accelerator(mixed_precision="fp8", cpu=True)


def test_fp8_plugin_torchao_on_an_old_gpu_is_a_hardware_error(monkeypatch):
    from fp8_testing_utils import pretend_gpu

    pretend_gpu(monkeypatch, capability=(8, 0))
    with pytest.raises(FP8HardwareError, match=r"torchao' needs an NVIDIA GPU .* >= 8\.9"):
        Accelerator(mixed_precision="fp8", cpu=True)
