"""``python -m accelerate_core`` is the ``accel`` command."""

from .cli.main import main

raise SystemExit(main())
