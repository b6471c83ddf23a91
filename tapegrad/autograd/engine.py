"""backward() and grad(): drive the reverse replay of the tapes a result depends on.

The fast path hands a whole tape to the Numba interpreter, which pauses only at rows
with hooks. With ``create_graph=True`` the reverse pass runs in Python through each
op's tensor-level VJP instead, so that it is itself recorded and can be
differentiated again.
"""
import numpy as np

from .. import _interrupt
from .. import _kernels as K
from .. import tape as _tape
from ..grad_mode import no_grad
from ..ops import ENTRIES, Ctx, input_rows
from ..tape import STATE
from ..tensor import Tensor, _wrap, bind

# The backward of user autograd.Functions ("replay": a row of the reverse pass, "vjp":
# the gradients as tensors); function.py, which defines Function, registers them.
FUNCTION_BACKWARD = {}

# Weak references to callables ``f(leaves)`` run after each backward() with the ids of
# the leaves it accumulated into (DistributedDataParallel averages gradients there), in
# the order they were registered, the same on every rank.
AFTER_BACKWARD = []

_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)

FREED_MSG = (
    "Trying to backward through the graph a second time (or directly access saved tensors "
    "after they have already been freed). Saved intermediate values of the graph are freed "
    "when you call .backward() or autograd.grad(). Specify retain_graph=True if you need to "
    "backward through the graph a second time or if you need to access saved tensors after "
    "calling backward.")


def _seq(x):
    if x is None:
        return None
    if isinstance(x, Tensor):
        return [x]
    return list(x)


def _roots(tensors, grads, create_graph):
    """Validates (output, gradient) pairs; the gradient as an array, or a tensor."""
    if grads is None:
        grads = [None] * len(tensors)
    if len(grads) != len(tensors):
        raise RuntimeError(f"grad can be implicitly created only for scalar outputs: got "
                           f"{len(tensors)} tensors and {len(grads)} gradients")
    roots = []
    for i, (t, g) in enumerate(zip(tensors, grads)):
        if not isinstance(t, Tensor):
            raise TypeError(f"backward: expected a Tensor as output {i}, got "
                            f"{type(t).__name__}")
        if not t._req:
            raise RuntimeError(f"element {i} of tensors does not require grad and does not "
                               "have a grad_fn")
        if g is None:
            if t._data.size != 1:
                raise RuntimeError("grad can be implicitly created only for scalar outputs")
            g = _ones(t)
        else:
            if not isinstance(g, Tensor):
                g = _wrap(np.asarray(g, dtype=t._data.dtype))
            if g._data.shape != t._data.shape:
                raise RuntimeError(
                    f"Mismatch in shape: grad_output[{i}] has a shape of "
                    f"{g.shape!r} and output[{i}] has a shape of {t.shape!r}.")
            if g._data.dtype != t._data.dtype:
                g = g.to(t._data.dtype) if create_graph else _wrap(
                    g._data.astype(t._data.dtype))
        roots.append((t, g))
    return roots


def _ones(t):
    """The implicit gradient of a scalar output (a constant of a compile recording)."""
    g = np.ones_like(t._data)
    if _tape.TRACE[0] is not None:
        _tape.TRACE[0].constant(g)
    return _wrap(g)


def _apply_hooks(hooks, g):
    """Runs tensor hooks in registration order; a returned tensor replaces g."""
    for hook in list(hooks.values()):
        res = hook(g)
        if res is not None:
            if not isinstance(res, Tensor):
                raise TypeError(f"hook returned {type(res).__name__}, expected a Tensor "
                                "or None")
            if res._data.shape != g._data.shape:
                raise RuntimeError(f"hook '{getattr(hook, '__name__', hook)}' has changed "
                                   f"the size of value: {list(g.shape)} to "
                                   f"{list(res.shape)}")
            g = res
    return g


class _Accumulate:
    """backward(): gradients go into ``.grad`` (of ``inputs`` only, when given)."""

    def __init__(self, inputs, create_graph, touched=None):
        self.only = None if inputs is None else {id(t): t for t in inputs}
        self.create_graph = create_graph
        self.touched = touched

    def leaf(self, t, g):
        if self.only is not None and id(t) not in self.only:
            return
        if t._hooks:
            g = _apply_hooks(t._hooks, g)
        _accumulate(t, g, self.create_graph)
        if self.touched is not None:
            self.touched.add(id(t))

    def capture_rows(self, tape):
        if not tape.retain and self.only is None:
            return ()
        rows = []
        for r, ref in tape.retain.items():
            t = ref()
            if t is not None and (self.only is None or id(t) in self.only):
                rows.append((r, t))
        if self.only is not None:
            rows += [(t._row, t) for t in self.only.values()
                     if not t._leaf and t._tape is tape and not t._retains]
        return rows

    def nonleaf(self, t, g):
        _accumulate(t, g, self.create_graph)


def _accumulate(t, g, create_graph):
    tr = _tape.TRACE[0]
    if tr is not None:
        tr.grad_touch(t, True)
        tr.grad_set(t)
        if t._grad is not None and not (create_graph or t._grad._req):
            tr.write(K.K_ADD, t._grad, [t._grad, g])
    if t._grad is None:
        t._grad = g if create_graph or not g._req else g.detach()
        if not create_graph and g._base is None and t._grad._data is not g._data:
            t._grad = _wrap(g._data)
    elif create_graph or t._grad._req:
        t._grad = t._grad + g
    else:
        t._grad._data += g._data


class _Capture:
    """autograd.grad(): gradients of ``inputs`` are returned, nothing is accumulated."""

    def __init__(self, inputs):
        self.inputs = inputs
        self.result = {id(t): None for t in inputs}

    def _add(self, t, g):
        cur = self.result[id(t)]
        self.result[id(t)] = g if cur is None else cur + g

    def leaf(self, t, g):
        if id(t) in self.result:
            if t._hooks:
                g = _apply_hooks(t._hooks, g)
            self._add(t, g)

    def capture_rows(self, tape):
        return [(t._row, t) for t in self.inputs if not t._leaf and t._tape is tape]

    def nonleaf(self, t, g):
        self._add(t, g)


def run(roots, retain_graph, create_graph, sink):
    """Reverse pass from ``roots`` over every tape they depend on, newest tape first.
    Atomic for Ctrl-C: an interrupt is raised once every gradient is in place."""
    if not _interrupt.enter():
        return _run(roots, retain_graph, create_graph, sink)
    try:
        return _run(roots, retain_graph, create_graph, sink)
    finally:
        _interrupt.leave()


def _run(roots, retain_graph, create_graph, sink):
    pending = {}
    for t, g in roots:
        if t._leaf:
            sink.leaf(t, g)
            continue
        seeds = pending.setdefault(t._tape, {})
        prev = seeds.get(t._row)
        seeds[t._row] = g if prev is None else prev + g
    while pending:
        tape = max(pending, key=lambda tp: tp.id)
        seeds = pending.pop(tape)
        if create_graph:
            if _tape.TRACE[0] is not None:
                _tape.TRACE[0].fail("create_graph=True")
            _replay_python(tape, seeds, retain_graph, sink, pending)
        else:
            _replay(tape, seeds, retain_graph, sink, pending)


def _region(tape, r, arenas):
    """Row r's adjoint: a view into the arena of its dtype."""
    T = tape.T
    off = T[r, K.AOFF]
    return arenas[T[r, K.FL] & K.F64][off:off + T[r, K.N]]


def deposit(tape, r, arenas, seen, values):
    """Adds a gradient contribution (flat) into row r's adjoint; the first one assigns."""
    dst = _region(tape, r, arenas)
    if seen[r]:
        dst += values
    else:
        dst[:] = values
        seen[r] = 1


def _shape(tape, r):
    T = tape.T
    return tuple(int(s) for s in T[r, K.S0:K.S0 + T[r, K.ND]])


def _error(tape, status, r):
    if status == K.ERR_FREED:
        return RuntimeError(FREED_MSG)
    data, producer, now, then = tape.modified_detail(r)
    kind = "DoubleTensor" if data.dtype == _F64 else "FloatTensor"
    what = f"[tapegrad.{kind} {list(data.shape)}]"
    if producer >= 0:
        what += f", which is output 0 of {ENTRIES[tape.T[producer, K.NM]].name},"
    return RuntimeError(
        "one of the variables needed for gradient computation has been modified by an "
        f"inplace operation: {what} is at version {now}; expected version {then} instead. "
        "Hint: enable anomaly detection to find the operation that failed to compute its "
        "gradient, with tapegrad.autograd.set_detect_anomaly(True).")


def _replay(tape, seeds, retain, sink, pending):
    """Numba path: one interpreter call per tape, paused only at hooked rows."""
    n = tape.n
    seen = np.zeros(n, np.uint8)
    start = max(seeds)
    dtflag = int(tape.T[start, K.FL]) & K.F64
    arenas = {dtflag: _tape.take_arena(_F64 if dtflag else _F32,
                                       tape.adj64 if dtflag else tape.adj32)}
    tr = _tape.TRACE[0]
    if tr is not None:
        tr.backward(tape, seeds)
    argv = np.zeros(K.ARGV, np.int64)
    try:
        for r, g in seeds.items():
            _region(tape, r, arenas)[:] = g._data.reshape(-1)
            seen[r] = 1
        tape.mark_modified()
        resume = False
        while start >= 0:
            status, r = K.reverse_rows(tape.T, tape.F, tape.L, arenas[dtflag], seen, start,
                                       resume, not retain, dtflag, _tape.ANOMALY[0],
                                       K.KTAB[1 if dtflag else 0], argv, _NORUNS)
            if status == K.DONE:
                break
            if status == K.NEED:
                K.prepare_needed(argv, dtflag)
                start, resume = r, True
                continue
            if status == K.STEP:
                if _nan_input(tape, r, arenas, seen):
                    raise anomaly_error(tape, r, arenas)
                start, resume = r - 1, False
                continue
            start, resume = r, False
            if status == K.PAUSED:
                hooks = tape.hooks.get(r)
                if hooks:
                    region = _region(tape, r, arenas)
                    g = _wrap(region.reshape(_shape(tape, r)).copy())
                    # (a recording's replays call the hooks themselves)
                    g = _apply_hooks(hooks, g) if tr is None else \
                        tr.untraced(_apply_hooks, hooks, g)
                    region[:] = g._data.reshape(-1)
                resume = True
                if tape.node_hooks.get(r) and tape.T[r, K.OP] not in _NO_VJP:
                    _node_hooks(tape, r, seen, arenas, retain)
                    start, resume = r - 1, False
            elif status == K.SWITCH:
                dtflag ^= K.F64
                if dtflag not in arenas:
                    arenas[dtflag] = _tape.take_arena(_F64 if dtflag else _F32,
                                                      tape.adj64 if dtflag else tape.adj32)
            elif status == K.CAST:
                src = int(tape.T[r, K.A])
                other = dtflag ^ K.F64
                if other not in arenas:
                    arenas[other] = _tape.take_arena(_F64 if other else _F32,
                                                     tape.adj64 if other else tape.adj32)
                deposit(tape, src, arenas, seen, _region(tape, r, arenas))
                start = r - 1
            elif status == K.PYFN:
                if tr is None:
                    FUNCTION_BACKWARD["replay"](tape, r, seen, arenas, retain)
                else:       # (a recording's replays call the Function themselves)
                    tr.untraced(FUNCTION_BACKWARD["replay"], tape, r, seen, arenas, retain)
                start = r - 1
            else:
                raise _error(tape, status, r)
        for r, t in sink.capture_rows(tape):
            if r < n and seen[r]:
                sink.nonleaf(t, _wrap(_adjoint(tape, r, arenas, t, tr)))
        for r, leaf in list(tape.leaves.items()):
            if r < n and seen[r]:
                sink.leaf(leaf, _wrap(_adjoint(tape, r, arenas, leaf, tr)))
        for r, t in tape.ext.items():
            if r < n and seen[r]:
                g = _wrap(_adjoint(tape, r, arenas, t, tr))
                seeds2 = pending.setdefault(t._tape, {})
                prev = seeds2.get(t._row)
                seeds2[t._row] = g if prev is None else _wrap(prev._data + g._data)
    finally:
        for arena in arenas.values():
            _tape.give_arena(arena)
    if not retain:
        if np.count_nonzero(seen) == n:
            tape.saved = {}
            _tape.close(tape)
        else:
            _free(tape, np.flatnonzero(seen))


_NO_VJP = (K.K_LEAF, K.K_EXT, K.K_PYOUT)
_NORUNS = np.zeros(0, np.int64)


def _adjoint(tape, r, arenas, t, tr):
    """A copy of row r's adjoint, shaped like t (a compile recording sees where from)."""
    g = _region(tape, r, arenas).reshape(t._data.shape).copy()
    if tr is not None:
        tr.adjoint(g, tape, r)
    return g


def _node_hooks(tape, r, seen, arenas, retain):
    """Runs row r's backward in Python so that its grad_fn hooks see and may replace the
    gradients it passes to its inputs."""
    T = tape.T
    if T[r, K.FL] & K.FREED:
        raise RuntimeError(FREED_MSG)
    g = _wrap(_region(tape, r, arenas).reshape(_shape(tape, r)).copy())
    with no_grad():
        if T[r, K.OP] == K.K_PYFN:
            grads = list(FUNCTION_BACKWARD["vjp"](tape, r, g, {}))
        elif T[r, K.OP] == K.K_CAST:
            grads = [g.to(np.float64 if not T[r, K.FL] & K.F64 else np.float32)]
        else:
            grads = list(ENTRIES[T[r, K.NM]].vjp(Ctx(tape, r), g))
    rows = input_rows(tape, r)
    grads = (grads + [None] * len(rows))[:len(rows)]
    for hook in list(tape.node_hooks[r].values()):
        res = hook(tuple(grads), (g,))
        if res is not None:
            grads = list(res)
    for src, gi in zip(rows, grads):
        if gi is None or not T[src, K.FL] & K.REQ:
            continue
        deposit(tape, src, arenas, seen, gi._data.reshape(-1))
    if not retain and T[r, K.FL] & K.SAVES:
        T[r, K.FL] |= K.FREED


def _nan_input(tape, r, arenas, seen):
    """Whether row r's backward gave one of its inputs a NaN gradient (anomaly mode)."""
    T = tape.T
    rows = [int(T[r, K.A]), int(T[r, K.B])]
    if T[r, K.OP] == K.K_CAT:
        rows += tape.L[T[r, K.P0]:T[r, K.P0] + T[r, K.P0 + 1]].tolist()
    return any(q >= 0 and T[q, K.FL] & K.REQ and seen[q]
               and np.isnan(_region(tape, q, arenas)).any() for q in rows)


def anomaly_error(tape, r, arenas):
    """PyTorch's anomaly message: the op, which of its outputs, where it was recorded."""
    T = tape.T
    which = 0
    for i, col in enumerate((K.A, K.B)):
        src = int(T[r, col])
        if src >= 0 and T[src, K.FL] & K.REQ and np.isnan(_region(tape, src, arenas)).any():
            which = i
            break
    return RuntimeError(_anomaly_text(tape, r, which))


def node_name(tape, r):
    if tape.T[r, K.OP] == K.K_PYOUT:
        r = int(tape.T[r, K.P0 + 2])
    if tape.T[r, K.OP] == K.K_PYFN:
        return tape.fns[r][0].__name__ + "Backward"
    return ENTRIES[tape.T[r, K.NM]].name


def _anomaly_text(tape, r, which):
    msg = f"Function '{node_name(tape, r)}' returned nan values in its {which}th output."
    where = tape.where.get(r)
    if where:
        msg += "\nThe op was recorded at (most recent call last):\n" + where
    return msg


def _free(tape, rows):
    """After a backward without retain_graph: release what the visited rows saved."""
    saved = tape.saved
    for r in rows:
        saved.pop(int(r), None)
    _tape.close(tape)


def _replay_python(tape, seeds, retain, sink, pending):
    """create_graph path: each row's tensor-level VJP, recorded like any other op."""
    adjs = dict(seeds)
    pyout = {}
    capture = dict(sink.capture_rows(tape))
    tape.mark_modified()
    visited = []
    prev_mode = STATE.grad_enabled
    STATE.grad_enabled = True
    try:
        for r in range(max(adjs), -1, -1):
            g = adjs.pop(r, None)
            if g is None:
                continue
            T = tape.T
            fl = int(T[r, K.FL])
            hooks = tape.hooks.get(r)
            if hooks:
                g = _apply_hooks(hooks, g)
            t = capture.get(r)
            if t is not None:
                sink.nonleaf(t, g)
            k = T[r, K.OP]
            if k == K.K_LEAF:
                leaf = tape.leaves.get(r)
                if leaf is not None:
                    sink.leaf(leaf, g)
                continue
            if k == K.K_EXT:
                src = tape.ext[r]
                seeds2 = pending.setdefault(src._tape, {})
                prev = seeds2.get(src._row)
                seeds2[src._row] = g if prev is None else prev + g
                continue
            if k == K.K_PYOUT:
                pyout[r] = g
                first = int(T[r, K.P0 + 2])
                if first not in adjs:
                    dt = np.float64 if T[first, K.FL] & K.F64 else np.float32
                    adjs[first] = _wrap(np.zeros(_shape(tape, first), dt))
                continue
            if fl & K.FREED:
                raise RuntimeError(FREED_MSG)
            if fl & K.DIRTY:
                raise _error(tape, K.ERR_DIRTY, r)
            ctx = Ctx(tape, r)
            if k == K.K_PYFN:
                grads = FUNCTION_BACKWARD["vjp"](tape, r, g, pyout)
            else:
                grads = ENTRIES[T[r, K.NM]].vjp(ctx, g)
            if _tape.ANOMALY[0]:
                for i, gi in enumerate(grads):
                    if gi is not None and np.isnan(gi._data).any():
                        raise RuntimeError(_anomaly_text(tape, r, i))
            for src, gi in zip(ctx.input_rows(), grads):
                if gi is None or not tape.T[src, K.FL] & K.REQ:
                    continue
                prev = adjs.get(src)
                adjs[src] = gi if prev is None else prev + gi
            visited.append(r)
    finally:
        STATE.grad_enabled = prev_mode
    if not retain:
        T = tape.T
        for r in visited:
            if T[r, K.FL] & K.SAVES:
                T[r, K.FL] |= K.FREED
        _free(tape, visited)


_PLAIN = _Accumulate(None, False)


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False, inputs=None):
    """Accumulates d(tensors)/d(leaf) into each leaf's ``.grad``."""
    if grad_tensors is None and inputs is None and not create_graph and not AFTER_BACKWARD \
            and tensors.__class__ is list and len(tensors) == 1:
        t = tensors[0]
        if t.__class__ is Tensor and t._req and not t._leaf and t._data.size == 1:
            run([(t, _ones(t))], bool(retain_graph), False, _PLAIN)
            return
    tensors = _seq(tensors)
    roots = _roots(tensors, _seq(grad_tensors), create_graph)
    if retain_graph is None:
        retain_graph = create_graph
    inputs = _seq(inputs)
    if inputs is not None:
        if not inputs:
            raise RuntimeError("backward: 'inputs' argument to backward() cannot be empty.")
        for t in inputs:
            if not isinstance(t, Tensor) or not t._req:
                raise RuntimeError("backward: one of the differentiated Tensors does not "
                                   "require grad")
    if not AFTER_BACKWARD:
        run(roots, retain_graph, create_graph, _Accumulate(inputs, create_graph))
        return
    touched = set()
    run(roots, retain_graph, create_graph, _Accumulate(inputs, create_graph, touched))
    for ref in list(AFTER_BACKWARD):
        f = ref()
        if f is None:
            AFTER_BACKWARD.remove(ref)
        else:
            f(touched)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         allow_unused=None, materialize_grads=False):
    """Returns d(outputs)/d(inputs) without touching any ``.grad``."""
    outputs = _seq(outputs)
    single = isinstance(inputs, Tensor)
    inputs = _seq(inputs)
    for t in inputs:
        if not isinstance(t, Tensor):
            raise TypeError(f"grad: inputs must be Tensors, got {type(t).__name__}")
        if not t._req:
            raise RuntimeError("One of the differentiated Tensors does not require grad")
    roots = _roots(outputs, _seq(grad_outputs), create_graph)
    if retain_graph is None:
        retain_graph = create_graph
    if allow_unused is None:
        allow_unused = materialize_grads
    sink = _Capture(inputs)
    run(roots, retain_graph, create_graph, sink)
    out = []
    for t in inputs:
        g = sink.result[id(t)]
        if g is None:
            if not allow_unused:
                raise RuntimeError("One of the differentiated Tensors appears to not have "
                                   "been used in the graph. Set allow_unused=True if this "
                                   "is the desired behavior.")
            if materialize_grads:
                g = _wrap(np.zeros_like(t._data))
        elif not create_graph and g._req:
            g = g.detach()
        out.append(g)
    return tuple(out) if not single or len(out) != 1 else (out[0],)


def _tensor_backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
    """Accumulates the gradient of this tensor into the leaves' ``.grad``."""
    backward([self], None if gradient is None else [gradient], retain_graph, create_graph,
             inputs)


bind(backward=_tensor_backward)
