"""The built-in experiment trackers, one module each, named as in Hugging Face Accelerate.

Each module imports its library inside ``start()`` (and the methods after it), never at import
time: selecting ``log_with="wandb"`` imports wandb, listing trackers imports nothing.
``accelerate_core.builtin.trackers`` registers them through the discovery hooks.
"""
