"""TensorBoard (``log_with="tensorboard"``): event files under ``logging_dir/run_name``."""

from __future__ import annotations

import os
from typing import Any

from ..tracker_base import GeneralTracker
from ..tracker_values import flat_config, report

HPARAM_TYPES = (bool, int, float, str)


class TensorBoardTracker(GeneralTracker):
    """Writes scalars, text and the configuration (as hparams) with ``SummaryWriter``.

    Args:
        run_name: the run's directory under ``logging_dir``.
        logging_dir: the project's logging directory.
        **kwargs: passed to ``SummaryWriter`` (``flush_secs``, ``max_queue``, ...).

    The hparams go into the run's own event file (Hugging Face writes them into a second,
    timestamped directory that TensorBoard shows as another run) and into
    ``logging_dir/run_name/hparams.yml``. Values are buffered and flushed by the writer
    (every ``flush_secs``, default 120 s) and by ``finish()``, not on every ``log``.
    """

    name = "tensorboard"
    requires_logging_directory = True

    def __init__(self, run_name: str, logging_dir: str | os.PathLike[str], **kwargs: Any) -> None:
        super().__init__()
        self.run_name = run_name
        self.logging_dir_param = logging_dir
        self.logging_dir = os.path.join(os.fspath(logging_dir), run_name)
        self.init_kwargs = kwargs
        self.writer: Any = None

    def start(self) -> None:
        try:
            from torch.utils import tensorboard
        except ModuleNotFoundError:  # torch's writer needs the tensorboard package
            import tensorboardX as tensorboard

        self.writer = tensorboard.SummaryWriter(self.logging_dir, **self.init_kwargs)

    @property
    def tracker(self) -> Any:
        return self.writer

    def store_init_configuration(self, values: dict[str, Any]) -> None:
        import yaml

        try:
            from torch.utils.tensorboard.summary import hparams
        except ModuleNotFoundError:
            from tensorboardX.summary import hparams

        flat = flat_config(values, HPARAM_TYPES)
        writer = self.writer._get_file_writer()
        for summary in hparams(flat, {}):
            writer.add_summary(summary)
        self.writer.flush()
        with open(os.path.join(self.logging_dir, "hparams.yml"), "w") as file:
            yaml.safe_dump(flat, file)

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        writer = self.writer
        for key, value in values.items():
            if isinstance(value, (int, float)):
                writer.add_scalar(key, value, global_step=step, **kwargs)
            elif isinstance(value, str):
                writer.add_text(key, value, global_step=step, **kwargs)
            elif isinstance(value, dict):
                writer.add_scalars(key, value, global_step=step, **kwargs)
            else:
                report(
                    f"tensorboard: value of {key!r} ({type(value).__name__}) is not a number, "
                    "string or dict of numbers and was not logged; use log_images for images"
                )

    def log_images(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        """Log ``{name: batch of images}`` (arrays NCHW by default) with ``add_images``."""
        for key, images in values.items():
            self.writer.add_images(key, images, global_step=step, **kwargs)

    def finish(self) -> None:
        self.writer.close()
