"""Hugging Face Accelerate's ``accelerate.utils`` names, re-exported from focused modules."""

from ..logger_type import LoggerType
from .tqdm import tqdm

__all__ = ["LoggerType", "tqdm"]
