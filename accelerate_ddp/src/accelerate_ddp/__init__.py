"""accelerate-ddp: the DistributedDataParallel backend of accelerate-core."""

__version__ = "0.1.0"
