"""``tqdm`` progress bars shown once per machine (Hugging Face's ``accelerate.utils.tqdm``)."""

from __future__ import annotations

from typing import Any

from ..state import PartialState


def tqdm(*args: Any, main_process_only: bool = True, **kwargs: Any) -> Any:
    """``tqdm.auto.tqdm``, disabled except on each machine's main process.

    With ``main_process_only=False`` every process shows its bar. As in Hugging Face
    Accelerate, "main" means the local main process, so each machine shows one bar.
    """
    try:
        from tqdm.auto import tqdm as _tqdm
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "accelerate_core.utils.tqdm needs the tqdm package; pip install tqdm"
        ) from exc
    if args and isinstance(args[0], bool):
        raise ValueError(
            "pass main_process_only as a keyword: tqdm(iterable, main_process_only=True); a "
            "boolean first argument would be taken for the iterable"
        )
    disable = kwargs.pop("disable", False)
    if main_process_only and not disable:
        disable = PartialState().local_process_index != 0
    return _tqdm(*args, disable=disable, **kwargs)
