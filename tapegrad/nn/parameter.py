"""nn.Parameter: a leaf tensor that a Module registers as one of its parameters."""
import tapegrad as tg

from ..tensor import Tensor


class Parameter(Tensor):
    """A leaf tensor with ``requires_grad=True`` (by default) that modules register.

    As in PyTorch, ``Parameter(t)`` shares ``t``'s storage and is always a leaf; ops on
    a parameter return plain tensors. It prints as ``Parameter containing:`` followed by
    the tensor. Unlike PyTorch, a NumPy array or nested list is accepted too (it is
    converted with ``tg.tensor``).
    """
    __slots__ = ()

    def __init__(self, data=None, requires_grad=True):
        if data is None:
            data = tg.empty(0)
        elif not isinstance(data, Tensor):
            data = tg.tensor(data)
        Tensor.__init__(self, 0.0)
        self.data = data          # share the storage, as PyTorch does
        if requires_grad:
            self.requires_grad = True

    def __repr__(self):
        return "Parameter containing:\n" + Tensor.__repr__(self)

    def __deepcopy__(self, memo):
        if id(self) in memo:
            return memo[id(self)]
        result = Parameter(self.detach().clone(), self.requires_grad)
        memo[id(self)] = result
        if self.grad is not None:
            result.grad = self.grad.detach().clone()
        return result
