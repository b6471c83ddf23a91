"""Random differentiable programs, built identically in tapegrad and in torch.

``generate(seed)`` draws a ``Program``: a few float64 leaves with broadcast-compatible
shapes and a straight-line list of 3-12 instructions, each reading earlier values by
index. All random choices (shapes, ops, dims, constants) are made at generation time, so
``program.run(ns, leaves)`` with ``ns`` = the ``tapegrad`` or the ``torch`` module
builds the same computation in either library. Only ops both libraries have are used,
and every op is kept finite (exp of a bounded input, division by ``y*y + 1``, powers of
positive bases); kinks (relu, abs, clamp, min/max and their ties, e.g. between expanded
copies) are kept on purpose, since tapegrad must follow PyTorch's conventions there.
``generate(seed, ops=[...])`` draws from a subset of ``OPS`` (e.g. for a backend that
supports fewer ops).

Typical use::

    prog = generate(seed)
    leaves = prog.make_leaves(tapegrad)
    values = prog.run(tapegrad, leaves)      # every intermediate value
    loss = prog.loss(tapegrad, values)       # a scalar reading every unused value
"""
import numpy as np

MAX_NUMEL = 96

# name -> (arity, apply(ns, args, params)). Programs are lists of (name, arg_indices,
# params); params hold every constant, drawn when the program is generated.
OPS = {
    # unary
    "tanh": (1, lambda ns, a, p: ns.tanh(a[0])),
    "sigmoid": (1, lambda ns, a, p: ns.sigmoid(a[0])),
    "neg": (1, lambda ns, a, p: -a[0]),
    "abs": (1, lambda ns, a, p: ns.abs(a[0])),
    "relu": (1, lambda ns, a, p: ns.relu(a[0])),
    "exp_tanh": (1, lambda ns, a, p: ns.exp(ns.tanh(a[0]) * p["c"])),
    "sqrt_sq1": (1, lambda ns, a, p: ns.sqrt(a[0] * a[0] + 1.0)),
    "log_sq1": (1, lambda ns, a, p: ns.log(a[0] * a[0] + 1.0)),
    "square": (1, lambda ns, a, p: a[0] * a[0]),
    "pow_const": (1, lambda ns, a, p: a[0] ** p["k"]),
    "scale": (1, lambda ns, a, p: a[0] * p["c"]),
    "shift": (1, lambda ns, a, p: a[0] + p["c"]),
    "rsub": (1, lambda ns, a, p: p["c"] - a[0]),
    "rdiv": (1, lambda ns, a, p: p["c"] / (a[0] * a[0] + 1.0)),
    "rpow": (1, lambda ns, a, p: p["c"] ** ns.tanh(a[0])),
    # binary, with broadcasting
    "add": (2, lambda ns, a, p: a[0] + a[1]),
    "sub": (2, lambda ns, a, p: a[0] - a[1]),
    "mul": (2, lambda ns, a, p: a[0] * a[1]),
    "div": (2, lambda ns, a, p: a[0] / (a[1] * a[1] + 1.0)),
    "pow": (2, lambda ns, a, p: (a[0] * a[0] + 1.0) ** ns.tanh(a[1])),
    "matmul": (2, lambda ns, a, p: a[0].matmul(a[1].transpose(0, 1) if p["t"] else a[1])),
    # reductions
    "sum": (1, lambda ns, a, p: a[0].sum() if p["dim"] is None
            else a[0].sum(dim=p["dim"], keepdim=p["keepdim"])),
    "mean": (1, lambda ns, a, p: a[0].mean() if p["dim"] is None
             else a[0].mean(dim=p["dim"], keepdim=p["keepdim"])),
    # shape ops
    "reshape": (1, lambda ns, a, p: a[0].reshape(*p["shape"])),
    "transpose": (1, lambda ns, a, p: a[0].transpose(p["d0"], p["d1"])),
    "permute": (1, lambda ns, a, p: a[0].permute(*p["perm"])),
    "unsqueeze": (1, lambda ns, a, p: a[0].unsqueeze(p["dim"])),
    "expand": (1, lambda ns, a, p: a[0].expand(*p["sizes"])),
    # ops added with the second op library (trig, clamp, min/max, softmax, cat, ...)
    "sin": (1, lambda ns, a, p: ns.sin(a[0])),
    "cos": (1, lambda ns, a, p: ns.cos(a[0])),
    "tan_b": (1, lambda ns, a, p: ns.tan(ns.tanh(a[0]))),
    "log1p_sq": (1, lambda ns, a, p: ns.log1p(a[0] * a[0])),
    "expm1_b": (1, lambda ns, a, p: ns.expm1(ns.tanh(a[0]))),
    "reciprocal": (1, lambda ns, a, p: ns.reciprocal(a[0] * a[0] + 1.0)),
    "square_fn": (1, lambda ns, a, p: ns.square(a[0])),
    "clamp": (1, lambda ns, a, p: ns.clamp(a[0], min=p["lo"], max=p["hi"])),
    "maximum": (2, lambda ns, a, p: ns.maximum(a[0], a[1])),
    "minimum": (2, lambda ns, a, p: ns.minimum(a[0], a[1])),
    "where": (2, lambda ns, a, p: ns.where(a[0] > a[1], a[0], a[1] * 0.5)),
    "amax": (1, lambda ns, a, p: a[0].amax(dim=p["dim"], keepdim=p["keepdim"])),
    "amin": (1, lambda ns, a, p: a[0].amin(dim=p["dim"], keepdim=p["keepdim"])),
    "max_dim": (1, lambda ns, a, p: a[0].max(dim=p["dim"], keepdim=p["keepdim"])[0]),
    "min_dim": (1, lambda ns, a, p: a[0].min(dim=p["dim"], keepdim=p["keepdim"])[0]),
    "prod": (1, lambda ns, a, p: a[0].prod(dim=p["dim"], keepdim=p["keepdim"])),
    "var": (1, lambda ns, a, p: a[0].var(dim=p["dim"], keepdim=p["keepdim"])),
    "logsumexp": (1, lambda ns, a, p: ns.logsumexp(a[0], p["dim"], keepdim=p["keepdim"])),
    "norm": (1, lambda ns, a, p: (a[0] * a[0] + 0.5).norm(dim=p["dim"], keepdim=p["keepdim"])),
    "softmax": (1, lambda ns, a, p: ns.softmax(a[0], p["dim"])),
    "log_softmax": (1, lambda ns, a, p: ns.log_softmax(a[0], p["dim"])),
    "cat": (2, lambda ns, a, p: ns.cat([a[0], a[1]], dim=p["dim"])),
    "stack": (2, lambda ns, a, p: ns.stack([a[0], a[1]], dim=p["dim"])),
    "chunk": (1, lambda ns, a, p: a[0].chunk(p["n"], dim=p["dim"])[p["k"]]),
    "narrow": (1, lambda ns, a, p: a[0].narrow(p["dim"], p["start"], p["length"])),
    "slice": (1, lambda ns, a, p: a[0][p["key"]]),
    "index": (1, lambda ns, a, p: a[0][ns.tensor(p["idx"], dtype=ns.int64)]),
    "flatten": (1, lambda ns, a, p: a[0].flatten()),
    "squeeze": (1, lambda ns, a, p: a[0].squeeze(p["dim"])),
}

UNARY = ["tanh", "sigmoid", "neg", "abs", "relu", "exp_tanh", "sqrt_sq1", "log_sq1",
         "square", "pow_const", "scale", "shift", "rsub", "rdiv", "rpow", "sin", "cos",
         "tan_b", "log1p_sq", "expm1_b", "reciprocal", "square_fn", "clamp"]
BINARY = ["add", "sub", "mul", "div", "pow", "maximum", "minimum", "where"]
SHAPE = ["reshape", "transpose", "permute", "unsqueeze", "expand", "cat", "stack", "chunk",
         "narrow", "slice", "index", "flatten", "squeeze"]
REDUCE = ["sum", "mean"]
# reductions over one dim (never of a 0-d value); softmaxes keep the shape
REDUCE_DIM = ["amax", "amin", "max_dim", "min_dim", "prod", "var", "logsumexp", "norm"]
SOFTMAX = ["softmax", "log_softmax"]


class Program:
    """Leaves (arrays and requires_grad flags) and a list of instructions."""

    def __init__(self, seed, leaf_data, leaf_requires_grad, instrs, shapes, weights):
        self.seed = seed
        self.leaf_data = leaf_data
        self.leaf_requires_grad = leaf_requires_grad
        self.instrs = instrs
        self.shapes = shapes            # shape of every value: leaves, then instructions
        self.weights = weights          # {value index: array}: the loss reads these values

    def make_leaves(self, ns):
        """Fresh leaf tensors of library ``ns`` holding the program's leaf values."""
        return [ns.tensor(d.copy(), dtype=ns.float64, requires_grad=rg)
                for d, rg in zip(self.leaf_data, self.leaf_requires_grad)]

    def run(self, ns, leaves):
        """All values (leaves first) of the program built with library ``ns``."""
        vals = list(leaves)
        for name, args, params in self.instrs:
            vals.append(OPS[name][1](ns, [vals[i] for i in args], params))
        return vals

    def loss(self, ns, values):
        """A scalar: sum over the unused values v_k of sum(v_k * w_k), fixed weights."""
        total = None
        for k, w in self.weights.items():
            term = (values[k] * ns.tensor(w, dtype=ns.float64)).sum()
            total = term if total is None else total + term
        return total

    def grad_leaves(self, leaves):
        return [t for t, rg in zip(leaves, self.leaf_requires_grad) if rg]

    def __str__(self):
        lines = [f"# program seed={self.seed}"]
        for i, (d, rg) in enumerate(zip(self.leaf_data, self.leaf_requires_grad)):
            lines.append(f"v{i} = leaf{tuple(d.shape)} requires_grad={rg}")
        n = len(self.leaf_data)
        for j, (name, args, params) in enumerate(self.instrs):
            a = ", ".join(f"v{i}" for i in args)
            lines.append(f"v{n + j} = {name}({a}) {params or ''}  # -> {self.shapes[n + j]}")
        lines.append(f"loss = sum(v_k * w_k) for k in {sorted(self.weights)}")
        return "\n".join(lines)


def _numel(shape):
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def _leaf_shapes(rng, n_leaves):
    """Shapes that broadcast together: sub-shapes of a base shape with some 1s."""
    ndim = int(rng.integers(1, 4))
    base = [int(rng.integers(1, 5)) for _ in range(ndim)]
    shapes = []
    for _ in range(n_leaves):
        keep = int(rng.integers(max(ndim - 1, 1), ndim + 1))    # maybe drop a leading dim
        s = [1 if rng.random() < 0.25 else d for d in base[ndim - keep:]]
        shapes.append(tuple(s))
    return shapes


def _broadcastable(s1, s2):
    try:
        out = np.broadcast_shapes(s1, s2)
    except ValueError:
        return None
    return out if _numel(out) <= MAX_NUMEL else None


def _pick(rng, shapes):
    """An operand index, biased towards recent values so the program composes."""
    n = len(shapes)
    if rng.random() < 0.5:
        return n - 1
    return int(rng.integers(0, n))


def _reshape_target(rng, shape):
    n = _numel(shape)
    divs = [d for d in range(1, n + 1) if n % d == 0]
    r = rng.random()
    if r < 0.25:
        return (n,), (-1,)
    if r < 0.4 and len(shape) < 4:
        return (1,) + tuple(shape), (1,) + tuple(shape)
    d = int(rng.choice(divs))
    target = (d, n // d)
    spec = (d, -1) if rng.random() < 0.5 else target
    return target, spec


def _try_instr(rng, name, shapes):
    """(args, params, result shape), or None when ``name`` does not fit the values."""
    if name in UNARY:
        i = _pick(rng, shapes)
        params = {}
        if name == "exp_tanh":
            params["c"] = float(rng.choice([1.0, 2.0, -1.5]))
        elif name == "pow_const":
            params["k"] = int(rng.choice([2, 3]))
        elif name in ("scale", "shift", "rsub", "rdiv"):
            params["c"] = float(np.round(rng.uniform(-2.0, 2.0), 3)) or 0.5
        elif name == "rpow":
            params["c"] = float(rng.choice([2.0, 0.5, 3.0]))
        elif name == "clamp":
            lo, hi = sorted(np.round(rng.uniform(-1.5, 1.5, 2), 3))
            r = rng.random()
            params["lo"] = None if r < 0.25 else float(lo)
            params["hi"] = None if 0.25 <= r < 0.5 else float(hi)
        return (i,), params, shapes[i]
    if name in BINARY:
        i = _pick(rng, shapes)
        cands = [j for j in range(len(shapes)) if _broadcastable(shapes[i], shapes[j])]
        j = int(rng.choice(cands))
        if rng.random() < 0.5:
            i, j = j, i
        return (i, j), {}, _broadcastable(shapes[i], shapes[j])
    if name == "matmul":
        mats = [i for i, s in enumerate(shapes) if len(s) == 2]
        if not mats:
            return None
        i = int(rng.choice(mats))
        m, k = shapes[i]
        right = [(j, False) for j in mats if shapes[j][0] == k] + \
                [(j, True) for j in mats if shapes[j][1] == k]
        j, t = right[int(rng.integers(0, len(right)))]     # i itself fits, transposed
        n = shapes[j][0] if t else shapes[j][1]
        if m * n > MAX_NUMEL:
            return None
        return (i, j), {"t": t}, (m, n)
    if name in REDUCE:
        i = _pick(rng, shapes)
        s = shapes[i]
        if not s or rng.random() < 0.2:
            return (i,), {"dim": None, "keepdim": False}, ()
        d = int(rng.integers(-len(s), len(s)))
        keep = bool(rng.random() < 0.5)
        out = list(s)
        if keep:
            out[d] = 1
        else:
            del out[d]
        return (i,), {"dim": d, "keepdim": keep}, tuple(out)
    if name == "reshape":
        i = _pick(rng, shapes)
        target, spec = _reshape_target(rng, shapes[i])
        return (i,), {"shape": spec}, target
    if name in ("transpose", "permute"):
        cands = [i for i, s in enumerate(shapes) if len(s) >= 2]
        if not cands:
            return None
        i = int(rng.choice(cands))
        s = shapes[i]
        if name == "transpose":
            d0, d1 = (int(d) for d in rng.choice(len(s), 2, replace=False))
            if rng.random() < 0.3:
                d0 -= len(s)
            out = list(s)
            out[d0], out[d1] = out[d1], out[d0]
            return (i,), {"d0": d0, "d1": d1}, tuple(out)
        perm = [int(d) for d in rng.permutation(len(s))]
        return (i,), {"perm": perm}, tuple(s[d] for d in perm)
    if name == "unsqueeze":
        i = _pick(rng, shapes)
        s = shapes[i]
        if len(s) >= 4:
            return None
        d = int(rng.integers(-len(s) - 1, len(s) + 1))
        out = list(s)
        out.insert(d % (len(s) + 1), 1)
        return (i,), {"dim": d}, tuple(out)
    if name == "expand":
        i = _pick(rng, shapes)
        s = shapes[i]
        lead = int(rng.integers(0, 2)) if len(s) < 4 else 0
        sizes, out = [], []
        for _ in range(lead):
            k = int(rng.integers(1, 4))
            sizes.append(k)
            out.append(k)
        for d in s:
            if d == 1 and rng.random() < 0.7:
                k = int(rng.integers(2, 4))
                sizes.append(k)
                out.append(k)
            else:
                sizes.append(-1 if rng.random() < 0.5 else d)
                out.append(d)
        if not sizes or _numel(out) > MAX_NUMEL:
            return None
        return (i,), {"sizes": sizes}, tuple(out)
    if name in REDUCE_DIM or name in SOFTMAX:
        cands = [i for i, s in enumerate(shapes) if s]
        if name == "var":
            cands = [i for i in cands if max(shapes[i]) >= 2]
        if not cands:
            return None
        i = int(rng.choice(cands))
        s = shapes[i]
        dims = [d for d in range(len(s)) if name != "var" or s[d] >= 2]
        d = int(rng.choice(dims))
        if rng.random() < 0.3:
            d -= len(s)
        if name in SOFTMAX:
            return (i,), {"dim": d}, s
        keep = bool(rng.random() < 0.5)
        out = list(s)
        if keep:
            out[d] = 1
        else:
            del out[d]
        return (i,), {"dim": d, "keepdim": keep}, tuple(out)
    if name in ("cat", "stack"):
        i = _pick(rng, shapes)
        s = shapes[i]
        if not s and name == "cat":
            return None
        same = [j for j, t in enumerate(shapes) if t == s]
        j = int(rng.choice(same))
        if name == "stack":
            d = int(rng.integers(0, len(s) + 1))
            out = list(s)
            out.insert(d, 2)
        else:
            d = int(rng.integers(0, len(s)))
            out = list(s)
            out[d] *= 2
        if _numel(out) > MAX_NUMEL:
            return None
        return (i, j), {"dim": d}, tuple(out)
    if name in ("chunk", "narrow", "slice"):
        cands = [i for i, s in enumerate(shapes) if s and max(s) >= 2]
        if not cands:
            return None
        i = int(rng.choice(cands))
        s = shapes[i]
        d = int(rng.choice([k for k in range(len(s)) if s[k] >= 2]))
        out = list(s)
        if name == "chunk":
            n = int(rng.integers(2, s[d] + 1))
            step = -(-s[d] // n)            # PyTorch's chunk: pieces of ceil(size / n)
            sizes = [min(step, s[d] - k) for k in range(0, s[d], step)]
            k = int(rng.integers(0, len(sizes)))
            out[d] = sizes[k]
            return (i,), {"n": n, "dim": d, "k": k}, tuple(out)
        start = int(rng.integers(0, s[d] - 1))
        if name == "narrow":
            length = int(rng.integers(1, s[d] - start + 1))
            out[d] = length
            return (i,), {"dim": d, "start": start, "length": length}, tuple(out)
        step = int(rng.integers(1, 3))
        out[d] = len(range(start, s[d], step))
        key = (slice(None),) * d + (slice(start, None, step),)
        if d == len(s) - 1 and rng.random() < 0.5:
            key = (Ellipsis, key[-1])
        return (i,), {"key": key}, tuple(out)
    if name == "index":
        cands = [i for i, s in enumerate(shapes) if s]
        if not cands:
            return None
        i = int(rng.choice(cands))
        s = shapes[i]
        n = int(rng.integers(1, 5))
        idx = rng.integers(-s[0], s[0], n)          # repeats and negative indices
        out = (n,) + tuple(s[1:])
        if _numel(out) > MAX_NUMEL:
            return None
        return (i,), {"idx": idx}, out
    if name == "flatten":
        i = _pick(rng, shapes)
        return (i,), {}, (_numel(shapes[i]),)
    if name == "squeeze":
        cands = [i for i, s in enumerate(shapes) if 1 in s]
        if not cands:
            return None
        i = int(rng.choice(cands))
        s = shapes[i]
        d = int(rng.choice([k for k in range(len(s)) if s[k] == 1]))
        return (i,), {"dim": d}, tuple(s[:d] + s[d + 1:])
    raise KeyError(name)


def generate(seed, min_ops=3, max_ops=12, ops=None):
    """A random Program; ``ops`` restricts the op names drawn (default: all of OPS)."""
    rng = np.random.default_rng(seed)
    names = list(OPS) if ops is None else list(ops)
    n_leaves = int(rng.integers(1, 4))
    shapes = _leaf_shapes(rng, n_leaves)
    leaf_data = [rng.standard_normal(s) for s in shapes]
    rg = [bool(rng.random() < 0.85) for _ in shapes]
    if not any(rg):
        rg[0] = True
    n_ops = int(rng.integers(min_ops, max_ops + 1))
    instrs = []
    used = set()
    while len(instrs) < n_ops:
        name = names[int(rng.integers(0, len(names)))]
        got = _try_instr(rng, name, shapes)
        if got is None:
            continue
        args, params, shape = got
        instrs.append((name, args, params))
        shapes.append(tuple(shape))
        used.update(args)
    last = len(shapes) - 1
    weights = {k: np.asarray(rng.standard_normal(shapes[k])) for k in range(len(shapes))
               if k == last or (k >= n_leaves and k not in used)}
    return Program(seed, leaf_data, rg, instrs, shapes, weights)
