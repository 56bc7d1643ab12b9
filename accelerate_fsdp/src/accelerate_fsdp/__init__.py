"""accelerate-fsdp: the FSDP2 (``fully_shard``) backend of accelerate-core."""

__version__ = "0.1.0"
