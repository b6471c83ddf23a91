"""Grad mode: whether ops are recorded. Thread-local, nestable, usable as decorators."""
import functools

from .tape import STATE


class _Mode:
    """Sets grad mode inside a ``with`` block or a decorated function."""
    _flag = None

    def __enter__(self):
        self._prev = STATE.grad_enabled
        STATE.grad_enabled = self._flag
        return self

    def __exit__(self, *exc):
        STATE.grad_enabled = self._prev
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self.__class__(*self._args()):
                return fn(*args, **kwargs)
        return wrapper

    def _args(self):
        return ()


class no_grad(_Mode):
    """Ops inside record nothing and their results do not require grad."""
    _flag = False

    def __new__(cls, orig_func=None):
        if callable(orig_func):       # used bare: @no_grad
            return super().__new__(cls)(orig_func)
        return super().__new__(cls)


class enable_grad(_Mode):
    """Turns recording back on inside a ``no_grad`` block."""
    _flag = True

    def __new__(cls, orig_func=None):
        if callable(orig_func):
            return super().__new__(cls)(orig_func)
        return super().__new__(cls)


class set_grad_enabled(_Mode):
    """Sets grad mode to ``mode``; takes effect at once, as in PyTorch (except when used
    as a decorator, which only applies it inside the function)."""

    def __init__(self, mode):
        self._flag = bool(mode)
        self._prev = STATE.grad_enabled
        STATE.grad_enabled = self._flag

    def __enter__(self):
        return self

    def __call__(self, fn):
        STATE.grad_enabled = self._prev
        return super().__call__(fn)

    def _args(self):
        return (self._flag,)


class inference_mode(_Mode):
    """As ``no_grad`` (tapegrad has no separate inference tensors); ``mode=False`` leaves
    grad mode as it is."""

    def __new__(cls, mode=True):
        if callable(mode):            # used bare: @inference_mode
            bare = super().__new__(cls)
            bare._mode = True
            return bare(mode)
        return super().__new__(cls)

    def __init__(self, mode=True):
        self._mode = bool(mode)

    def __enter__(self):
        self._flag = False if self._mode else STATE.grad_enabled
        return super().__enter__()

    def _args(self):
        return (self._mode,)


def is_grad_enabled():
    return STATE.grad_enabled
