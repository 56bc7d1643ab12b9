"""The ``accel`` command line."""
