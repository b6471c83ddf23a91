"""Optimizer hyperparameters that a compiled replay reads afresh on every call.

While ``tg.compile`` records, an optimizer's update sees its numeric group settings
(``lr``, ``momentum``, ``betas``...) as ``Hyper`` numbers. A Hyper is a float that also
knows how to compute itself again from the group's current values, and so does every
number computed from it by Python arithmetic (``-lr``, ``1 - beta2``, ``1 - lr * wd``).
The recording keeps that recipe for every constant of an instruction built from one,
so a replay after a scheduler changed ``lr`` recomputes the constant (the same float
operations in the same order, so the same bits as eager code). Each comparison Python
makes with a Hyper (``weight_decay != 0``) becomes a guard: a replay never takes a
branch the recording did not take.

Math functions (``math.sqrt(lr)``) and ``float()`` give plain floats: optimizers whose
update code tapegrad has not audited for that are guarded by value instead (a changed
setting records again).
"""
import math

from .tape import TRACE

__all__ = ["Hyper", "num", "rounded", "live_group", "is_live_value"]


class Hyper(float):
    """A float with a recipe (``get``) that computes its value from current settings."""

    __slots__ = ("get",)

    def __new__(cls, value, get):
        h = float.__new__(cls, value)
        h.get = get
        return h

    __hash__ = float.__hash__

    def __reduce__(self):
        return float, (float(self),)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        # NumPy would take a float subclass as a float64 array, not as a Python number
        inputs = tuple(float(x) if x.__class__ is Hyper else x for x in inputs)
        return getattr(ufunc, method)(*inputs, **kwargs)


def _recipe(x):
    if isinstance(x, Hyper):
        return x.get
    return lambda: x


def _binary(fop):
    def method(self, other, *mod):
        if not isinstance(other, (int, float)):
            return NotImplemented
        v = fop(self, other, *mod)
        if v is NotImplemented:
            return v
        a, b = self.get, _recipe(other)
        return Hyper(v, lambda: fop(float(a()), b(), *mod))
    return method


def _unary(fop):
    def method(self):
        a = self.get
        return Hyper(fop(self), lambda: fop(float(a())))
    return method


def _guard(check):
    tr = TRACE[0]
    if tr is not None:
        tr.hyper_guard(check)


def _compare(fop):
    def method(self, other):
        r = fop(self, other)
        if r is not NotImplemented and isinstance(other, (int, float)):
            a, b = self.get, _recipe(other)
            _guard(lambda: fop(float(a()), b()) == r)
        return r
    return method


def _decide(fn):
    def method(self, *args):
        r = fn(float(self), *args)
        a = self.get
        _guard(lambda: fn(float(a()), *args) == r)
        return r
    return method


for _name in ("add", "radd", "sub", "rsub", "mul", "rmul", "truediv", "rtruediv",
              "floordiv", "rfloordiv", "mod", "rmod", "pow", "rpow"):
    setattr(Hyper, f"__{_name}__", _binary(getattr(float, f"__{_name}__")))
for _name in ("neg", "pos", "abs"):
    setattr(Hyper, f"__{_name}__", _unary(getattr(float, f"__{_name}__")))
for _name in ("eq", "ne", "lt", "le", "gt", "ge"):
    setattr(Hyper, f"__{_name}__", _compare(getattr(float, f"__{_name}__")))
Hyper.__bool__ = _decide(bool)
Hyper.__int__ = _decide(int)
Hyper.__trunc__ = _decide(math.trunc)
Hyper.__floor__ = _decide(math.floor)
Hyper.__ceil__ = _decide(math.ceil)
Hyper.__round__ = _decide(round)


def num(x):
    """``float(x)``, keeping a Hyper's recipe (for constants handed to a recording)."""
    return x if x.__class__ is Hyper else float(x)


def rounded(x, dtype):
    """``x`` rounded to ``dtype`` (a NumPy dtype) as a float, keeping a Hyper's recipe."""
    t = dtype.type
    if x.__class__ is Hyper:
        a = x.get
        return Hyper(float(t(float(x))), lambda: float(t(a())))
    return float(t(x))


_NUMBERS = (int, float)


def live_group(group):
    """A copy of an optimizer's param group whose numeric settings (and tuples of
    numbers) are Hypers reading ``group``."""
    live = dict(group)
    for k, v in group.items():
        if k == "params" or k == "param_names":
            continue
        if not is_live_value(v):
            continue
        if v.__class__ is tuple:
            live[k] = tuple(Hyper(x, lambda k=k, i=i: group[k][i]) for i, x in enumerate(v))
        else:
            live[k] = Hyper(v, lambda k=k: group[k])
    return live


def is_live_value(v):
    """A setting a live group turns into Hypers (so a new value needs no recording)."""
    return v.__class__ in _NUMBERS or (v.__class__ is tuple and bool(v) and
                                       all(x.__class__ in _NUMBERS for x in v))

