"""The built-in experiment trackers, registered through the same hooks as a third party's.

The records name each tracker's library and its ``pip install``; the class is imported only when
the tracker is selected, and its library only when the run starts.
"""

from __future__ import annotations

import importlib

from ..hookspecs import hookimpl
from ..specs import TrackerSpec

TRACKERS = (
    TrackerSpec("tensorboard", "pip install tensorboard", ("tensorboard", "tensorboardX"), True,
                "TensorBoard event files in the logging directory"),
    TrackerSpec("wandb", "pip install wandb", ("wandb",), False, "Weights & Biases"),
    TrackerSpec("mlflow", "pip install mlflow", ("mlflow",), False, "MLflow tracking store"),
    TrackerSpec("comet_ml", "pip install comet-ml", ("comet_ml",), False, "Comet"),
    TrackerSpec("aim", "pip install aim", ("aim",), True, "Aim repository in the logging dir"),
    TrackerSpec("clearml", "pip install clearml", ("clearml",), False, "ClearML task"),
    TrackerSpec("dvclive", "pip install dvclive", ("dvclive",), False, "DVCLive metrics"),
    TrackerSpec("swanlab", "pip install swanlab", ("swanlab",), False, "SwanLab"),
    TrackerSpec("trackio", "pip install trackio", ("trackio",), False, "trackio (local-first)"),
)  # fmt: skip

# tracker name -> (module under accelerate_core.trackers, class name)
CLASSES = {
    "tensorboard": ("tensorboard", "TensorBoardTracker"),
    "wandb": ("wandb", "WandBTracker"),
    "mlflow": ("mlflow", "MLflowTracker"),
    "comet_ml": ("comet_ml", "CometMLTracker"),
    "aim": ("aim", "AimTracker"),
    "clearml": ("clearml", "ClearMLTracker"),
    "dvclive": ("dvclive", "DVCLiveTracker"),
    "swanlab": ("swanlab", "SwanLabTracker"),
    "trackio": ("trackio", "TrackioTracker"),
}


@hookimpl
def accelerate_core_trackers() -> list[TrackerSpec]:
    return list(TRACKERS)


@hookimpl
def accelerate_core_tracker_class(name: str) -> type | None:
    if name not in CLASSES:
        return None
    module, attribute = CLASSES[name]
    # Lazy: importing every tracker module would cost start-up time for nothing.
    return getattr(importlib.import_module(f"..trackers.{module}", __package__), attribute)
