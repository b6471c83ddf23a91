"""tapegrad.utils: data loading (``tapegrad.utils.data``), as ``torch.utils``."""
