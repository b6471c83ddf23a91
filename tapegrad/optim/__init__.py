"""tapegrad.optim: optimizers with PyTorch's update rules and learning-rate schedules
(``lr_scheduler``), as ``torch.optim``."""
from . import lr_scheduler
from .adam import Adam, Adamax, AdamW, NAdam, RAdam
from .lbfgs import LBFGS
from .optimizer import Optimizer
from .rmsprop import ASGD, Adadelta, Adagrad, RMSprop, Rprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop",
           "Adagrad", "Adadelta", "Rprop", "ASGD", "LBFGS", "lr_scheduler"]
