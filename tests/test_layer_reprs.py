"""Every layer of tapegrad.nn.layers that PyTorch also defines prints as PyTorch's, with
default and with non-default settings."""
import inspect

import pytest

import tapegrad.nn as nn
import tapegrad.nn.layers as layers
from tapegrad.nn.module import Module

torch = pytest.importorskip("torch")

REPRS = [  # class, args, keyword args
    ("Identity", (), {}),
    ("Identity", (3,), dict(unused=True)),
    ("Linear", (3, 4), {}),
    ("Linear", (3, 4), dict(bias=False)),
    ("Flatten", (), {}),
    ("Flatten", (2, 3), {}),
    ("Unfold", (3,), {}),
    ("Unfold", ((2, 3),), dict(dilation=2, padding=1, stride=(1, 2))),
    ("Fold", ((4, 5), 2), {}),
    ("Fold", ((4, 5), (2, 3)), dict(padding=1, stride=2)),
    ("ReLU", (), {}),
    ("ReLU", (True,), {}),
    ("Tanh", (), {}),
    ("Sigmoid", (), {}),
    ("Softmax", (), {}),
    ("Softmax", (1,), {}),
    ("LogSoftmax", (), {}),
    ("LogSoftmax", (-1,), {}),
    ("Dropout", (), {}),
    ("Dropout", (0.2, True), {}),
    ("GELU", (), {}),
    ("GELU", (), dict(approximate="tanh")),
    ("SiLU", (), {}),
    ("SiLU", (True,), {}),
    ("LeakyReLU", (), {}),
    ("LeakyReLU", (0.2, True), {}),
    ("ELU", (), {}),
    ("ELU", (0.5, True), {}),
    ("Softplus", (), {}),
    ("Softplus", (2, 10), {}),
    ("Hardtanh", (), {}),
    ("Hardtanh", (-2.0, 2.0, True), {}),
    ("LayerNorm", (64,), {}),
    ("LayerNorm", ((3, 4),), dict(eps=1e-6, elementwise_affine=False)),
    ("LayerNorm", (8,), dict(bias=False)),
    ("Embedding", (10, 3), {}),
    ("Embedding", (10, 3), dict(padding_idx=-1, max_norm=1.0)),
    ("Embedding", (10, 3), dict(norm_type=1.0, scale_grad_by_freq=True, sparse=True)),
    ("Conv1d", (1, 16, 3), {}),
    ("Conv1d", (4, 8, 3), dict(stride=2, padding=1, dilation=2, groups=2, bias=False)),
    ("Conv1d", (4, 8, 4), dict(padding="same")),
    ("Conv2d", (1, 16, 3), dict(padding=1)),
    ("Conv2d", (4, 8, (3, 2)), dict(stride=2, padding=(0, 1), dilation=2, groups=2,
                                    bias=False)),
    ("Conv2d", (4, 8, 3), dict(padding="valid")),
    ("Conv2d", (4, 8, 3), dict(padding="same", dilation=(1, 2))),
    ("MaxPool2d", (2,), {}),
    ("MaxPool2d", (3, 2, 1, 2), {}),
    ("MaxPool2d", ((3, 2),), dict(stride=(1, 2), ceil_mode=True, return_indices=True)),
    ("AvgPool2d", (2,), {}),
    ("AvgPool2d", (3, 2, 1), dict(ceil_mode=True, count_include_pad=False,
                                  divisor_override=2)),
    ("AdaptiveAvgPool2d", (2,), {}),
    ("AdaptiveAvgPool2d", ((2, 3),), {}),
    ("BatchNorm1d", (16,), {}),
    ("BatchNorm1d", (16, 1e-3, None, False, False), {}),
    ("BatchNorm2d", (16,), {}),
    ("BatchNorm2d", (16,), dict(momentum=0.3, bias=False)),
    ("MSELoss", (), {}),
    ("MSELoss", (), dict(reduction="sum")),
    ("L1Loss", (), {}),
    ("NLLLoss", (), dict(ignore_index=3, reduction="none")),
    ("CrossEntropyLoss", (), dict(label_smoothing=0.1)),
    ("BCEWithLogitsLoss", (), {}),
    ("BCELoss", (), {}),
    ("SmoothL1Loss", (), dict(beta=0.5)),
    ("HuberLoss", (), dict(delta=2.0)),
    ("KLDivLoss", (), dict(reduction="batchmean", log_target=True)),
    ("ReLU6", (True,), {}),
    ("Hardsigmoid", (), {}),
    ("Hardswish", (True,), {}),
    ("Mish", (), {}),
    ("SELU", (True,), {}),
    ("CELU", (0.5,), {}),
    ("Threshold", (0.1, 20), {}),
    ("Threshold", (0.1, 20.0, True), {}),
    ("Softmin", (), {}),
    ("Softmin", (1,), {}),
    ("GLU", (), dict(dim=0)),
    ("Softsign", (), {}),
    ("LogSigmoid", (), {}),
    ("Tanhshrink", (), {}),
    ("CosineSimilarity", (0, 1e-6), {}),
    ("PairwiseDistance", (1.0,), dict(keepdim=True)),
    ("Unflatten", (1, (2, 3)), {}),
]


@pytest.mark.parametrize("cls,args,kw", REPRS)
def test_repr_as_pytorch(cls, args, kw):
    assert repr(getattr(nn, cls)(*args, **kw)) == repr(getattr(torch.nn, cls)(*args, **kw))


def test_every_shared_layer_is_in_the_table():
    ours = {name for name, c in vars(layers).items()
            if inspect.isclass(c) and issubclass(c, Module) and c.__module__ == layers.__name__
            and not name.startswith("_") and hasattr(torch.nn, name)}
    assert ours - {cls for cls, _, _ in REPRS} == set()
