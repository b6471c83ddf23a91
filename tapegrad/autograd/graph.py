"""grad_fn views onto the tape."""
from .. import _kernels as K
from ..ops import SPLIT, input_rows
from ..tensor import RemovableHandle, bind
from .engine import node_name


class Node:
    """The backward node of one tape row (``tensor.grad_fn``): a view, not a copy."""
    __slots__ = ("_tape", "_row")

    def __init__(self, tape, row):
        self._tape = tape
        self._row = row

    def name(self):
        return node_name(self._tape, self._row)

    @property
    def next_functions(self):
        tape, T = self._tape, self._tape.T
        out = []
        for src in input_rows(tape, self._row):
            if not T[src, K.FL] & K.REQ:
                out.append((None, 0))
            elif T[src, K.OP] == K.K_LEAF:
                out.append((AccumulateGrad(tape.leaves[src]), 0))
            elif T[src, K.OP] == K.K_EXT:
                t = tape.ext[src]
                out.append((Node(t._tape, t._row), 0))
            else:
                out.append(_output_of(tape, src))
        return tuple(out)

    def register_hook(self, fn):
        """``fn(grad_inputs, grad_outputs)`` runs after this node computes its gradients;
        a returned tuple replaces grad_inputs."""
        if not callable(fn):
            raise TypeError(f"register_hook: hook must be callable, got {type(fn).__name__}")
        hooks = self._tape.node_hooks.setdefault(self._row, {})
        handle = RemovableHandle(hooks, self._tape, self._row)
        hooks[handle.id] = fn
        self._tape.T[self._row, K.FL] |= K.PAUSE
        return handle

    @property
    def metadata(self):
        return self._tape.metadata.setdefault(self._row, {})

    def __eq__(self, other):
        return isinstance(other, Node) and other._tape is self._tape \
            and other._row == self._row

    def __hash__(self):
        return hash((id(self._tape), self._row))

    def __repr__(self):
        return f"<{self.name()} object at {id(self._tape):#x}:{self._row}>"


def _output_of(tape, src):
    """(node, output index): the pieces of a split are outputs of its first piece's node."""
    T = tape.T
    if T[src, K.NM] == SPLIT.index:
        k = int(T[src, K.P0 + K.NP - 1])
        return Node(tape, src - k), k
    if T[src, K.OP] == K.K_PYOUT:
        first = int(T[src, K.P0 + 2])
        return Node(tape, first), src - first
    return Node(tape, src), 0


def node_of(tape, row):
    """The grad_fn of the tensor at ``row`` (one node for all outputs of split/Function)."""
    return _output_of(tape, row)[0]


class AccumulateGrad:
    """Where a leaf's gradient is accumulated; ``variable`` is the leaf."""
    __slots__ = ("variable",)

    def __init__(self, variable):
        self.variable = variable

    def name(self):
        return "torch::autograd::AccumulateGrad"

    @property
    def next_functions(self):
        return ()

    def __eq__(self, other):
        return isinstance(other, AccumulateGrad) and other.variable is self.variable

    def __hash__(self):
        return id(self.variable)

    def __repr__(self):
        return f"<AccumulateGrad object at {id(self.variable):#x}>"


def _grad_fn(self):
    return None if self._leaf else node_of(self._tape, self._row)


bind(grad_fn=property(_grad_fn))
