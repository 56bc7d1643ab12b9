"""accelerate-conformance: the checks a backend or precision plugin of accelerate-core must pass.

    pip install accelerate-conformance
    pytest --accelerate-backend NAME --pyargs accelerate_conformance
    pytest --accelerate-precision NAME --pyargs accelerate_conformance

The checks live in ``test_conformance.py``, the training recipe and its hand-written references in
``recipe.py``, the options and the report in ``pytest_plugin.py`` (registered as a ``pytest11``
entry point). See plugins/README.md, "Checking a plugin".
"""

__version__ = "0.1.0"
