"""Names the examples import that accelerate-core does not define yet (tests only).

Each stand-in is installed only while the core lacks the name, so the examples keep running
unchanged once the core has it.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

import accelerate_core
from accelerate_core import Accelerator


def install() -> list[str]:
    added = []
    if not hasattr(accelerate_core, "DistributedType"):

        class DistributedType(str, enum.Enum):
            NO = "NO"
            MULTI_CPU = "MULTI_CPU"
            MULTI_GPU = "MULTI_GPU"
            XLA = "XLA"

        accelerate_core.DistributedType = DistributedType
        added.append("DistributedType")
    if not hasattr(Accelerator, "distributed_type"):
        kinds = accelerate_core.DistributedType

        def distributed_type(self):
            if self.num_processes == 1:
                return kinds.NO
            return kinds.MULTI_CPU if self.device.type == "cpu" else kinds.MULTI_GPU

        Accelerator.distributed_type = property(distributed_type)
        added.append("Accelerator.distributed_type")
    if not hasattr(accelerate_core, "DataLoaderConfiguration"):

        @dataclass
        class DataLoaderConfiguration:
            use_stateful_dataloader: bool = False

        accelerate_core.DataLoaderConfiguration = DataLoaderConfiguration
        original = Accelerator.__init__

        @functools.wraps(original)
        def init(self, *args, dataloader_config=None, **kwargs):
            original(self, *args, **kwargs)

        Accelerator.__init__ = init
        added.append("DataLoaderConfiguration")
    return added
