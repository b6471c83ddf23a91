"""tapegrad.utils: data loading (``tapegrad.utils.data``) and activation checkpointing
(``tapegrad.utils.checkpoint``), as ``torch.utils``."""
from . import checkpoint, data

__all__ = ["checkpoint", "data"]
