"""tapegrad.utils: data loading (``tapegrad.utils.data``), as ``torch.utils``."""
from . import data

__all__ = ["data"]
