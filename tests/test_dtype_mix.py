"""Ops over tensors of two dtypes (float32, float64, int64, bool; 0-d or not): PyTorch's
result dtype and values in eager mode, and compiled replays equal to eager to the bit."""
import itertools
import warnings

import numpy as np
import pytest

import tapegrad as tg

torch = pytest.importorskip("torch")

DTYPES = ["float32", "float64", "int64", "bool"]


def _value(dt, zero_d, seed):
    rng = np.random.default_rng(seed)
    shape = () if zero_d else (3,)
    if dt == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    if dt == "int64":
        return rng.integers(1, 4, shape).astype(np.int64)
    return np.asarray(rng.uniform(0.5, 2.0, shape)).astype(dt)


def _same(a, b):
    return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def _setitem(L, a, b):
    c = a.clone()
    c[1] = b if b.ndim == 0 else b[0]
    return c


OPS = {
    "add": lambda L, a, b: a + b,
    "sub": lambda L, a, b: a - b,
    "mul": lambda L, a, b: a * b,
    "div": lambda L, a, b: a / b,
    "pow": lambda L, a, b: a ** b,
    "maximum": lambda L, a, b: L.maximum(a, b),
    "minimum": lambda L, a, b: L.minimum(a, b),
    "where": lambda L, a, b: L.where(a > 1 if a.dtype != L.bool else a, a, b),
    "eq": lambda L, a, b: a == b,
    "lt": lambda L, a, b: a < b,
    "copy_": lambda L, a, b: a.clone().copy_(b),
    "add_": lambda L, a, b: a.clone().add_(b),
    "mul_": lambda L, a, b: a.clone().mul_(b),
    "setitem": _setitem,
    "cat": lambda L, a, b: L.cat([a.reshape(-1), b.reshape(-1)]),
    "remainder": lambda L, a, b: a % b,
    "fmod": lambda L, a, b: L.fmod(a, b),
    "floor_divide": lambda L, a, b: a // b,
    "stack": lambda L, a, b: L.stack([a.reshape(-1)[:1], b.reshape(-1)[:1]]),
}
CASES = [(name, da, db, za, zb)
         for name, da, db, za, zb in itertools.product(OPS, DTYPES, DTYPES, (False, True),
                                                      (False, True))
         if (da, za) != (db, zb) and not (name == "setitem" and za)]


@pytest.mark.parametrize("name,da,db,za,zb", CASES)
def test_mixed_dtypes_eager_as_pytorch_compiled_as_eager(name, da, db, za, zb):
    f = OPS[name]
    a, b = _value(da, za, 0), _value(db, zb, 1)
    try:
        want = f(torch, torch.tensor(a), torch.tensor(b)).numpy()
    except RuntimeError:
        with pytest.raises(RuntimeError):
            f(tg, tg.tensor(a), tg.tensor(b))
        return
    got = f(tg, tg.tensor(a), tg.tensor(b)).numpy()
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got.astype(float), want.astype(float), rtol=1e-6)
    step = tg.compile(lambda x, y: f(tg, x, y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tg.CompileWarning)
        for _ in range(3):
            rep = step(tg.tensor(a), tg.tensor(b)).numpy()
            assert _same(rep, got), (rep, got)


SCALAR_OPS = {
    "add": lambda a, c: a + c,
    "sub": lambda a, c: a - c,
    "rsub": lambda a, c: c - a,
    "mul": lambda a, c: a * c,
    "div": lambda a, c: a / c,
    "pow": lambda a, c: a ** c,
    "rpow": lambda a, c: c ** a,
    "mod": lambda a, c: a % c,
    "rmod": lambda a, c: c % a,
    "floordiv": lambda a, c: a // c,
    "rfloordiv": lambda a, c: c // a,
}
SCALARS = {"int": 2, "float": 1.5, "bool": True}


@pytest.mark.parametrize("name", SCALAR_OPS)
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("zero_d", [False, True])
@pytest.mark.parametrize("scalar", SCALARS)
def test_tensor_with_python_number_as_pytorch(name, dt, zero_d, scalar):
    """A Python number does not widen a tensor's kind, but lifts bool to int64 or float,
    and int to float; bool tensors refuse subtraction (and bool ** bool), as PyTorch."""
    f, c = SCALAR_OPS[name], SCALARS[scalar]
    a = _value(dt, zero_d, 2)
    try:
        want = f(torch.tensor(a), c).numpy()
    except RuntimeError as exc:
        with pytest.raises(type(exc)):
            f(tg.tensor(a), c)
        return
    got = f(tg.tensor(a), c).numpy()
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got.astype(float), want.astype(float), rtol=1e-6)
    step = tg.compile(lambda x: f(x, c))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tg.CompileWarning)
        for _ in range(3):
            assert _same(step(tg.tensor(a)).numpy(), got)
