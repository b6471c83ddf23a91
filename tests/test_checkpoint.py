"""Activation checkpointing (tapegrad.utils.checkpoint): the same outputs and gradients
as running the function plainly, dropout's random numbers included, for inputs that
require grad or not and for parameters inside; PyTorch's signature."""
import numpy as np
import pytest

import tapegrad as tg
from tapegrad.utils.checkpoint import checkpoint, checkpoint_sequential


def _net():
    tg.manual_seed(0)
    return tg.nn.Sequential(tg.nn.Linear(4, 8), tg.nn.Tanh(), tg.nn.Dropout(0.3),
                            tg.nn.Linear(8, 8), tg.nn.ReLU(), tg.nn.Linear(8, 1))


def _grads(net):
    out = [p.grad.numpy().copy() for p in net.parameters()]
    net.zero_grad()
    return out


@pytest.mark.parametrize("reentrant", [True, False])
def test_checkpointed_runs_match_plain_ones(reentrant):
    net = _net()
    x = tg.randn(5, 4)
    tg.manual_seed(1)
    plain = net(x)
    plain.sum().backward()
    want = _grads(net)
    tg.manual_seed(1)
    got = checkpoint_sequential(net, 2, x, use_reentrant=reentrant)
    got.sum().backward()
    np.testing.assert_array_equal(got.detach().numpy(), plain.detach().numpy())
    for a, b in zip(_grads(net), want):
        np.testing.assert_array_equal(a, b)


def test_inputs_numbers_and_keywords():
    net = _net()
    net.eval()
    x = tg.randn(5, 4, requires_grad=True)
    out = checkpoint(lambda a, s, shift=0.0: net(a) * s + shift, x, 3.0, use_reentrant=False,
                     shift=1.0)
    (out * out).sum().backward()
    got = x.grad.numpy().copy()
    x.grad = None
    ((net(x) * 3.0 + 1.0) ** 2).sum().backward()
    np.testing.assert_array_equal(got, x.grad.numpy())
    with pytest.raises(ValueError, match="Unexpected keyword arguments"):
        checkpoint(lambda a, s=1: a, x, use_reentrant=True, s=2)
