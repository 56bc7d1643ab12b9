"""accelerate-example-device: the device ``example`` for accelerate-core, implemented on the CPU.

It is the worked example of ``plugins/README.md``: a hardware vendor's package in miniature. The
hooks live in ``_plugin`` (the entry point, tiny and cheap to import); ``generator`` is the
device's own random number generator (``generator.rand`` draws from it); ``trace`` records every
call so that tests can prove the core asked for them.
"""

__version__ = "0.1.0"
