"""autograd.Function: ops with a user-written backward, recorded on the tape like any op.

The first output's row is a PYFN row whose inputs are the tensor arguments; further
outputs get PYOUT rows right after it. The replay stops at the PYFN row and Python
calls ``backward(ctx, *grads)`` with the gradients of all outputs.
"""
import numpy as np

from .. import _kernels as K
from ..grad_mode import no_grad, set_grad_enabled
from ..ops import PYFN, PYOUT, _row_of, input_rows, sum_to
from ..tape import STATE, TRACE, current
from ..tensor import Tensor, _owned_node, _wrap
from .engine import FREED_MSG, FUNCTION_BACKWARD, _region, _shape, deposit


class FunctionCtx:
    """The ``ctx`` of forward/backward: saved tensors and which inputs need grad."""

    def __init__(self, needs_input_grad):
        self.needs_input_grad = needs_input_grad
        self._saved = ()
        self._versions = ()
        self._freed = False
        self.materialize_grads = True

    def save_for_backward(self, *tensors):
        for t in tensors:
            if t is not None and not isinstance(t, Tensor):
                raise TypeError("save_for_backward can only save variables, but argument "
                                f"is of type {type(t).__name__}")
        self._saved = tensors
        self._versions = tuple(None if t is None else _version(t) for t in tensors)

    @property
    def saved_tensors(self):
        if self._freed:
            raise RuntimeError(FREED_MSG)
        for i, (t, v) in enumerate(zip(self._saved, self._versions)):
            if t is not None and _version(t) != v:
                raise RuntimeError(
                    "one of the variables needed for gradient computation has been "
                    f"modified by an inplace operation: saved tensor {i} of shape "
                    f"{list(t.shape)} is at version {_version(t)}; expected version {v} "
                    "instead.")
        return self._saved

    def mark_non_differentiable(self, *tensors):
        self._non_diff = {id(t) for t in tensors}

    def set_materialize_grads(self, value):
        self.materialize_grads = bool(value)


def _version(t):
    base = t._base if t._base is not None else t
    if base._ver is None:
        base._ver = [0]
    return base._ver[0]


class Function:
    """Subclass with static ``forward(ctx, *args)`` and ``backward(ctx, *grads)``; call
    ``apply(*args)``."""

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError("You must implement the forward function for custom "
                                  "autograd.Function.")

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError("You must implement either the backward or vjp method "
                                  "for your custom autograd.Function to use it with "
                                  "backward mode AD.")

    @classmethod
    def apply(cls, *args):
        tensor_args = [a for a in args if isinstance(a, Tensor)]
        needs = tuple(isinstance(a, Tensor) and a._req for a in args)
        ctx = FunctionCtx(needs)
        with no_grad():
            result = cls.forward(ctx, *args)
        single = not isinstance(result, tuple)
        outs = (result,) if single else result
        record = STATE.grad_enabled and any(needs)
        wrapped = []
        first = -1
        tape = None
        non_diff = getattr(ctx, "_non_diff", set())
        swap = {}
        for j, o in enumerate(outs):
            if not isinstance(o, Tensor):
                wrapped.append(o)
                continue
            data = o._data
            if not record or data.dtype.kind != "f" or id(o) in non_diff:
                wrapped.append(_wrap(data) if any(o is a for a in tensor_args) else o)
                continue
            if tape is None:
                tape = STATE.tape or current()
                rows = [_row_of(tape, a) for a in tensor_args]
                start = tape.input_list(rows)
                r = tape.row(K.K_PYFN, PYFN.index, data, True, rows[0] if rows else -1, -1)
                tape.T[r, K.P0:K.P0 + 2] = (start, len(rows))
                first = r
                tape.fns[r] = (cls, ctx, len(outs), [i for i, a in enumerate(args)
                                                     if isinstance(a, Tensor)])
            else:
                r = tape.row(K.K_PYOUT, PYOUT.index, data, True, first, -1)
                tape.T[r, K.P0 + 2] = first
            t = _owned_node(data, tape, r)
            if TRACE[0] is not None:    # a recording replays the forward's own ops
                TRACE[0].leaf_row(tape, r, t)
            tape.fns.setdefault(("out", first), []).append((j, r))
            wrapped.append(t)
            swap[id(o)] = t
        if swap:
            # A saved output is the output itself, so that backward can be differentiated.
            ctx._saved = tuple(swap.get(id(t), t) for t in ctx._saved)
        return wrapped[0] if single else tuple(wrapped)


def _call_backward(tape, r, grads, create_graph):
    """Runs the Function's backward; returns one gradient (or None) per input row."""
    cls, ctx, nout, tensor_pos = tape.fns[r]
    with set_grad_enabled(create_graph):
        res = cls.backward(ctx, *grads)
    if not isinstance(res, tuple):
        res = (res,)
    nargs = len(ctx.needs_input_grad)
    if len(res) < nargs:
        raise RuntimeError(f"function {cls.__name__}Backward returned an incorrect number "
                           f"of gradients (expected {nargs}, got {len(res)})")
    out = []
    for i in tensor_pos:
        g = res[i]
        if g is not None and not isinstance(g, Tensor):
            raise TypeError(f"function {cls.__name__}Backward returned a gradient of type "
                            f"{type(g).__name__} at index {i}, expected a Tensor or None")
        out.append(g)
    return out


def _fit(cls, g, shape):
    """A returned gradient broadcast over the input is summed back to its shape."""
    if tuple(g.shape) == shape:
        return g
    try:
        if np.broadcast_shapes(tuple(g.shape), shape) == tuple(g.shape):
            with no_grad():
                return sum_to(g, shape)
    except ValueError:
        pass
    raise RuntimeError(f"Function {cls.__name__}Backward returned an invalid gradient - "
                       f"got {list(g.shape)} but expected shape compatible with "
                       f"{list(shape)}")


def _outputs(tape, r):
    return tape.fns.get(("out", r), [])


def replay_function(tape, r, seen, arenas, retain):
    """Numba path: the replay reached the Function's row r."""
    T = tape.T
    grads = []
    cls, ctx, nout, _ = tape.fns[r]
    by_index = {j: row for j, row in _outputs(tape, r)}
    for j in range(nout):
        row = by_index.get(j)
        if row is not None and seen[row]:
            shape = _shape(tape, row)
            grads.append(_wrap(_region(tape, row, arenas).reshape(shape).copy()))
        elif row is not None and ctx.materialize_grads:
            shape = _shape(tape, row)
            dt = np.float64 if T[row, K.FL] & K.F64 else np.float32
            grads.append(_wrap(np.zeros(shape, dt)))
        else:
            grads.append(None)
    for src, g in zip(input_rows(tape, r), _call_backward(tape, r, grads, False)):
        if g is None or not T[src, K.FL] & K.REQ:
            continue
        deposit(tape, src, arenas, seen, _fit(cls, g, _shape(tape, src))._data.reshape(-1))
    if not retain:
        ctx._freed = True
        ctx._saved = ()


def python_vjp(tape, r, g, pyout):
    """create_graph path: gradients for the Function at row r (recorded)."""
    cls, ctx, nout, _ = tape.fns[r]
    grads = _python_grads(tape, r, g, pyout)
    out = []
    for src, gi in zip(input_rows(tape, r), grads):
        shape = _shape(tape, src)
        if gi is not None and tuple(gi.shape) != shape:
            _fit(cls, gi.detach(), shape)
            gi = sum_to(gi, shape)
        out.append(gi)
    return out


def _python_grads(tape, r, g, pyout):
    T = tape.T
    cls, ctx, nout, _ = tape.fns[r]
    by_index = {j: row for j, row in _outputs(tape, r)}
    grads = []
    for j in range(nout):
        row = by_index.get(j)
        gj = g if row == r else pyout.get(row)
        if gj is None and row is not None and ctx.materialize_grads:
            shape = _shape(tape, row)
            dt = np.float64 if T[row, K.FL] & K.F64 else np.float32
            gj = _wrap(np.zeros(shape, dt))
        grads.append(gj)
    return _call_backward(tape, r, grads, True)


FUNCTION_BACKWARD.update(replay=replay_function, vjp=python_vjp)
