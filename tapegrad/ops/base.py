"""The op table (``Op``, ``ENTRIES``), recording a row, and the operand checks and
helpers every family of ops shares.
"""

import builtins
import warnings

import numpy as np

from .. import _kernels as K
from ..dtypes import as_np_dtype, get_default_dtype
from ..tape import EPOCH, STATE, TRACE, current
from ..tensor import Tensor, _node, _wrap


ENTRIES = []
builtins_sum, builtins_min = builtins.sum, builtins.min

# NumPy warns on overflow and domain errors; PyTorch yields inf/nan silently. A filter
# scoped to the ops package costs nothing until a warning is raised (np.errstate: ~1 us/op).
warnings.filterwarnings("ignore", category=RuntimeWarning, module=__package__)


class Op:
    """One row kind of the tape."""
    __slots__ = ("index", "name", "kernel", "vjp")

    def __init__(self, name, kernel, vjp):
        self.index = len(ENTRIES)
        self.name = name
        self.kernel = kernel
        self.vjp = vjp
        ENTRIES.append(self)

    def __repr__(self):
        return f"Op({self.name})"


class Ctx:
    """What a tensor-level VJP sees of its row: inputs, output, parameters."""
    __slots__ = ("tape", "r")

    def __init__(self, tape, r):
        self.tape, self.r = tape, r

    def _input(self, col, saved_col):
        tape, r = self.tape, self.r
        row = int(tape.T[r, col])
        held = tape.held(r)
        data = held.get(saved_col)
        return proxy(tape, row, data)

    def input_rows(self):
        """Rows of all inputs: A and B, or the input list of a many-input row."""
        return input_rows(self.tape, self.r)

    def input_shapes(self):
        T = self.tape.T
        return [tuple(int(x) for x in T[row, K.S0:K.S0 + T[row, K.ND]])
                for row in self.input_rows()]

    @property
    def a(self):
        return self._input(K.A, K.SA)

    @property
    def b(self):
        return self._input(K.B, K.SB)

    @property
    def out(self):
        return _node(self.tape.held(self.r)[K.SO], self.tape, self.r)

    def shape(self, col=K.A):
        T = self.tape.T
        row = T[self.r, col] if col != K.OP else self.r
        return tuple(int(s) for s in T[row, K.S0:K.S0 + T[row, K.ND]])

    def wants(self, col):
        """Whether input ``col`` (K.A or K.B) needs a gradient."""
        row = self.tape.T[self.r, col]
        return row >= 0 and bool(self.tape.T[row, K.FL] & K.REQ)

    def dtype(self, col):
        T = self.tape.T
        row = T[self.r, col] if col != K.OP else self.r
        return np.float64 if T[row, K.FL] & K.F64 else np.float32

    @property
    def f0(self):
        return float(self.tape.F[self.r, 0])

    @property
    def f1(self):
        return float(self.tape.F[self.r, 1])

    def p(self, i):
        return int(self.tape.T[self.r, K.P0 + i])


def input_rows(tape, r):
    T = tape.T
    if T[r, K.OP] in K.LISTED:
        start, count = int(T[r, K.P0]), int(T[r, K.P0 + 1])
        return [int(x) for x in tape.L[start:start + count]]
    return [int(T[r, c]) for c in (K.A, K.B) if T[r, c] >= 0]


def proxy(tape, row, data):
    """A tensor standing for row ``row`` of ``tape`` (its value: ``data``)."""
    kernel = tape.T[row, K.OP]
    if kernel == K.K_LEAF:
        leaf = tape.leaves.get(row)
        return leaf if leaf is not None else _wrap(data)
    if kernel == K.K_EXT:
        return tape.ext[row]
    return _node(data, tape, row)


def _row_of(tape, t):
    """Row of tensor t on ``tape``; a LEAF or EXT row is added on first use."""
    if t._tape is tape:
        return t._row
    if not t._leaf:
        r = tape.row(K.K_EXT, EXT.index, t._data, True)
        tape.ext[r] = t
        if TRACE[0] is not None:
            TRACE[0].ext_row(tape, r, t)
        return r
    r = tape.row(K.K_LEAF, LEAF.index, t._data, t._req, flags=K.LEAFF)
    if TRACE[0] is not None:
        TRACE[0].leaf_row(tape, r, t)
    if t._req:
        tape.leaves[r] = t
    t._tape = tape
    t._row = r
    return r


SAVE_A, SAVE_B, SAVE_OUT = 1, 2, 4      # record(save=): the values a backward reads


def record(op, out, a, b=None, save=0, f0=0.0, f1=0.0, params=None):
    """Appends op's row for result ``out`` of inputs a (and b); returns the result.

    ``save`` is a bitmask of the values the backward reads: SAVE_A, SAVE_B, SAVE_OUT.
    """
    if out.__class__ is not np.ndarray:
        out = np.asarray(out)        # NumPy returns scalars for 0-d results
    tape = STATE.tape
    if tape is None:
        tape = current()
    ra = a._row if a._tape is tape else _row_of(tape, a)
    rb = -1 if b is None else b._row if b._tape is tape else _row_of(tape, b)
    r = tape.row(op.kernel, op.index, out, True, ra, rb, K.SAVES if save else 0)
    if TRACE[0] is not None:
        TRACE[0].op(op, out, [a] if b is None else [a, b], f0, f1, params or (), tape, r)
    if f0 or f1:
        MF = tape.MF
        MF[2 * r] = f0
        MF[2 * r + 1] = f1
    if params:
        tape.T[r, K.P0:K.P0 + len(params)] = params
    t = _new(Tensor)
    t._data = out
    t._req = True
    t._leaf = False
    t._tape = tape
    t._row = r
    t._base = t._ver = t._grad = t._hooks = None
    t._retains = False
    t._own = True
    tape.live.add(r)
    if save:
        if save & SAVE_A:
            tape.save(r, K.SA, a, a._data, -1 if a._leaf else ra)
        if save & SAVE_B:
            tape.save(r, K.SB, b, b._data, -1 if b._leaf else rb)
        if save & SAVE_OUT:
            tape.save(r, K.SO, t, out, r)
    return t


def record_listed(op, out, ins, params=(), flags=0, f0=0.0):
    """Appends the row of an op taking the input list ``ins`` (LISTED: P0 and P1 hold
    the list's start and length, ``params`` follow); returns (tape, row, input rows)."""
    tape = STATE.tape or current()
    rows = [_row_of(tape, t) for t in ins]
    full = (tape.input_list(rows), len(rows)) + tuple(params)
    r = tape.row(op.kernel, op.index, out, True, rows[0], -1, flags)
    tape.T[r, K.P0:K.P0 + len(full)] = full
    tape.MF[2 * r] = f0
    if TRACE[0] is not None:
        TRACE[0].op(op, out, ins, f0, 0.0, full, tape, r)
    return tape, r, rows


_new = object.__new__


def plain(op, out, ins, f0=0.0, f1=0.0, params=()):
    """The result of op when it records no row; a tg.compile recording still sees it."""
    if TRACE[0] is not None:
        TRACE[0].op(op, out, ins, f0, f1, params)
    return _wrap(out)


def _grad_needed(*ts):
    if not STATE.grad_enabled:
        return False
    for t in ts:
        if t is not None and t._req:
            return True
    return False


# ---------------------------------------------------------------------------
# Tape bookkeeping entries
LEAF = Op("AccumulateGrad", K.K_LEAF, None)
EXT = Op("ExternalGrad", K.K_EXT, None)


# ---------------------------------------------------------------------------
# Operand handling
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_F64 = _FLOATS[1]


def _np_float():
    return as_np_dtype(get_default_dtype())


def _as_operand(x, opname):
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray):
        return Tensor(x)
    if isinstance(x, (bool, int, float, np.number, np.bool_)):
        return x
    raise TypeError(f"{opname}(): argument 'other' must be Tensor or Number, not "
                    f"{type(x).__name__}")


_CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2}


def _promote(a, b, opname, strict=False):
    """Brings two tensors to one dtype as PyTorch does: the higher category (bool <
    integer < float) wins, within one the wider dtype; a 0-d tensor takes part only
    with a higher category than the dimensioned one's (float32 [n] with a float64 0-d
    stays float32). A float conversion is recorded, so gradients flow back in each
    input's dtype. ``strict`` (matrix products, as PyTorch's): float32 with float64
    is an error."""
    da, db = a._data.dtype, b._data.dtype
    if da is db or da == db:
        return a, b
    fa, fb = da.kind == "f", db.kind == "f"
    if not (fa or fb):
        return _wrap(a._data.astype(np.int64)), _wrap(b._data.astype(np.int64))
    if fa and fb and strict:
        raise RuntimeError(f"{opname}: expected both inputs to have the same dtype, "
                           f"but got {a.dtype} and {b.dtype}")
    ca, cb = _CATEGORY[da.kind], _CATEGORY[db.kind]
    za, zb = a._data.ndim == 0, b._data.ndim == 0
    if za != zb and ca == cb:
        dt = db if za else da               # the dimensioned tensor's
    elif ca != cb:
        dt = da if ca > cb else db
    else:
        dt = np.promote_types(da, db)
    return (a if da == dt else a.to(dt)), (b if db == dt else b.to(dt))


def _check_broadcast(opname, a, b, into=None):
    """Raises before anything is recorded if a and b do not broadcast (to ``into``)."""
    if not isinstance(b, Tensor):
        return
    try:
        shape = np.broadcast_shapes(a._data.shape, b._data.shape)
    except ValueError:
        raise _bcast_error(opname, a, b) from None
    if into is not None and shape != into:
        raise RuntimeError(f"{opname}: output with shape {list(into)} doesn't match the "
                           f"broadcast shape {list(shape)}")


def _bcast_error(opname, a, b):
    sa, sb = a.shape, b.shape
    nd = builtins.max(len(sa), len(sb))
    pa = (1,) * (nd - len(sa)) + tuple(sa)
    pb = (1,) * (nd - len(sb)) + tuple(sb)
    for i in range(nd - 1, -1, -1):
        if pa[i] != pb[i] and pa[i] != 1 and pb[i] != 1:
            return RuntimeError(
                f"{opname}: The size of tensor a ({pa[i]}) must match the size of tensor b "
                f"({pb[i]}) at non-singleton dimension {i}")
    return RuntimeError(f"{opname}: shapes {list(sa)} and {list(sb)} cannot be broadcast")


def _check_arg(x, opname, argname):
    """The second argument of a binary op must be a tensor (TypeError otherwise)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{opname}(): argument '{argname}' (position 2) must be Tensor, not "
                        f"{type(x).__name__}")


def _check_tensor(x, opname):
    if not isinstance(x, Tensor):
        raise TypeError(f"{opname}(): argument 'input' (position 1) must be Tensor, not "
                        f"{type(x).__name__}")


def _float_input(x, opname):
    _check_tensor(x, opname)
    d = x._data
    return d if d.dtype.kind == "f" else d.astype(_np_float())


def _shape_row(shape):
    """A one-row table holding ``shape`` in the tape's layout, for shape-reading kernels."""
    row = np.zeros((1, K.NCOL), np.int64)
    row[0, K.ND] = len(shape)
    row[0, K.S0:K.S0 + len(shape)] = shape
    n = 1
    for s in shape:
        n *= s
    row[0, K.N] = n
    return row


def _flat(d):
    return np.ascontiguousarray(d).reshape(-1)


# ---------------------------------------------------------------------------
# In-place ops
def _leaf_inplace_check(t):
    if STATE.grad_enabled and t._req and t._leaf:
        raise RuntimeError("a leaf Variable that requires grad is being used in an in-place "
                           "operation.")


def bump_version(t):
    """An in-place write to t's storage: saved values of it go stale."""
    base = t._base if t._base is not None else t
    ver = base._ver
    if ver is not None:
        ver[0] += 1
        EPOCH[0] += 1


def _rebase(t, res):
    """t takes result ``res`` (same shape) in place and becomes its non-leaf."""
    if res._data.shape != t._data.shape:
        raise RuntimeError(f"output with shape {list(t.shape)} doesn't match the broadcast "
                           f"shape {list(res.shape)}")
    if t._base is not None and STATE.grad_enabled and (t._base._req or t._req):
        if t._base._leaf and t._base._req:
            raise RuntimeError("a view of a leaf Variable that requires grad is being used "
                               "in an in-place operation.")
        raise RuntimeError("in-place operation on a view of a tensor that requires grad "
                           "is not supported; apply it to a clone()")
    if TRACE[0] is not None:
        TRACE[0].write("copy", t, [res])
    np.copyto(t._data, res._data)
    bump_version(t)
    if t._own:
        t._own = False
        t._tape.drop(t._row)
    t._tape, t._row = res._tape, res._row
    t._own, res._own = res._own, False    # t now keeps the row alive, not res
    t._leaf = False
    t._req = True
    return t


def proxy_copy(t):
    """t's graph position with a private copy of its value (for in-place ops that save it)."""
    c = _new_like(t)
    c._data = t._data.copy()
    if TRACE[0] is not None:
        TRACE[0].snapshot(c._data, t)
    return c


def _new_like(t):
    c = object.__new__(Tensor)
    c._data, c._req, c._leaf = t._data, t._req, t._leaf
    c._tape, c._row, c._base, c._ver = t._tape, t._row, None, None
    c._grad, c._hooks, c._retains, c._own = None, None, False, False
    return c
