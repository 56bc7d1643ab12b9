"""Repository-wide pytest setup: every test gets a fresh plugin manager and process state."""

pytest_plugins = ["accelerate_core.testing"]
