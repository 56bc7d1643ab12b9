"""accelerate-conformance: the checks a backend, precision or device plugin of accelerate-core
must pass.

    pip install ./plugins/accelerate-conformance     # from a checkout of accelerate-core
    pytest --accelerate-backend NAME --pyargs accelerate_conformance
    pytest --accelerate-precision NAME --pyargs accelerate_conformance
    pytest --accelerate-device NAME --pyargs accelerate_conformance

The checks live in ``test_conformance.py`` (registration, training, checkpoints, options) and
``test_device_conformance.py`` (a device's seeding, RNG round trip, memory statistics and
synchronisation), their shared fixtures in ``fixtures.py``, the training recipe and its
hand-written references in ``recipe.py``, the options and the report in ``pytest_plugin.py``
(registered as a ``pytest11`` entry point). See plugins/README.md, "Checking a plugin".
"""

__version__ = "0.1.0"
