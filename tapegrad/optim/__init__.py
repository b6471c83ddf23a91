"""tapegrad.optim: optimizers with PyTorch's update rules, as ``torch.optim``."""
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW"]
