"""tapegrad.nn: modules, parameters, losses, initialisers and utilities, as ``torch.nn``.

Built on the public Tensor API only; see ``functional`` for the ops each layer uses.
"""
from . import functional, init, parallel, utils
from .layers import (CELU, ELU, GELU, GLU, SELU, AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d,
                     BatchNorm2d, BCELoss, BCEWithLogitsLoss, CosineSimilarity, Hardsigmoid,
                     Hardswish, LogSigmoid, Mish, PairwiseDistance, ReLU6, Softmin, Softsign,
                     Tanhshrink, Threshold, Unflatten,
                     Conv1d, Conv2d, CrossEntropyLoss, Dropout, Embedding, Flatten, Hardtanh,
                     HuberLoss, Identity, KLDivLoss, L1Loss, LayerNorm, LeakyReLU, Linear,
                     LogSoftmax, MaxPool2d, MSELoss, NLLLoss, ReLU, Sigmoid, SiLU,
                     SmoothL1Loss, Softmax, Softplus, Tanh, Fold, Unfold)
from .attention import MultiheadAttention, TransformerEncoderLayer
from .module import (Module, ModuleDict, ModuleList, ParameterDict, ParameterList,
                     Sequential)
from .recurrent import GRU, LSTM, GRUCell, LSTMCell
from .parameter import Parameter

__all__ = ["functional", "init", "parallel", "utils", "Module", "Sequential", "ModuleList",
           "Parameter",
           "Identity", "Linear", "Flatten", "ReLU", "Tanh", "Sigmoid", "Softmax",
           "LogSoftmax", "Dropout", "MSELoss", "L1Loss", "CrossEntropyLoss", "NLLLoss",
           "BCEWithLogitsLoss", "GELU", "SiLU", "LeakyReLU", "ELU", "Softplus", "Hardtanh",
           "LayerNorm", "Embedding", "SmoothL1Loss", "HuberLoss", "KLDivLoss", "BCELoss",
           "Conv1d", "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "BatchNorm1d",
           "BatchNorm2d", "LSTMCell", "GRUCell", "LSTM", "GRU", "MultiheadAttention",
           "TransformerEncoderLayer", "Unfold", "Fold", "ModuleDict", "ParameterList",
           "ParameterDict", "ReLU6", "Hardsigmoid", "Hardswish", "Mish", "SELU", "CELU",
           "Threshold", "Softmin", "GLU", "Softsign", "LogSigmoid", "Tanhshrink",
           "CosineSimilarity", "PairwiseDistance", "Unflatten"]
