"""accelerate-core-examples: runnable training scripts for accelerate-core.

Run from a checkout (``python examples/quickstart.py``) or, installed, as a module
(``python -m accelerate_core_examples.quickstart``, ``accel launch -m ...``). The SLURM batch
scripts ship as package data under ``slurm/``.
"""

__version__ = "0.1.0"
