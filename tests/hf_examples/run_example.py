"""``python run_example.py SCRIPT ARGS...``: run a ported example as ``__main__`` (tests only)."""

import runpy
import sys

import compat

if __name__ == "__main__":
    added = compat.install()
    print(f"compat stand-ins: {', '.join(added) or 'none'}", flush=True)
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
