"""The counter-based random stream: number c of the stream with key k is a hash of
(k, c), so a compiled replay draws exactly what an eager call would at the same point
of the stream, and needs no generator object.

The hash is SplitMix64's output function on k + c * golden gamma (the SplitMix64
sequence itself, indexed directly): 64 random bits per counter, 53 of them per uniform.
"""
import numpy as np
from numba import njit

from .cache import _INL, _JIT, _safe_caches
from .vmath import vcos, vlog

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_ULP = 2.0 ** -53

# what a draw of n numbers does (kinds of fill_random)
R_UNIFORM, R_NORMAL, R_INT, R_KEEP = 0, 1, 2, 3


@njit(**_INL)
def _bits(key, c):
    z = np.uint64(key) + np.uint64(c) * _GAMMA
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(**_INL)
def _uniform(key, c):
    """In [0, 1), a multiple of 2**-53."""
    return np.float64(_bits(key, c) >> np.uint64(11)) * _ULP


def draws(kind, n):
    """Stream positions a draw of n numbers of this kind uses."""
    return 2 * n if kind == R_NORMAL else n


def fill(out, kind, state, a, b):
    """Fills ``out`` with numbers of ``kind`` (R_UNIFORM, R_NORMAL, R_KEEP) from the
    stream ``state``: the kernel of that kind."""
    if kind == R_NORMAL:
        fill_normal(out, state)
    else:
        fill_random(out, kind, state, a, b)


@njit(**_JIT)
def fill_normal(out, state):
    """Standard normals (Box-Muller) from the stream ``state`` = (key, position); advances
    it. A kernel of its own: its log and cos are most of what the draws compile."""
    key = state[0]
    c = state[1]
    n = out.size
    for j in range(n):
        u = _uniform(key, c + 2 * j)
        v = _uniform(key, c + 2 * j + 1)
        out[j] = np.sqrt(-2.0 * vlog(1.0 - u)) * vcos(6.283185307179586 * v)
    state[1] = c + 2 * n


@njit(**_JIT)
def fill_random(out, kind, state, a, b):
    """Fills ``out`` from the stream ``state`` = (key, position) and advances it.

    R_UNIFORM: [0, 1); R_KEEP: b where a uniform is below a, else 0 (a dropout mask
    scaled by b).
    """
    key = state[0]
    c = state[1]
    n = out.size
    for j in range(n):
        u = _uniform(key, c + j)
        if kind == R_KEEP:
            out[j] = b if u < a else 0.0
        else:
            out[j] = u
    state[1] = c + n


@njit(**_JIT)
def fill_randint(out, state, low, high):
    """Integers in [low, high) from the stream ``state``; advances it."""
    key = state[0]
    c = state[1]
    span = high - low
    for j in range(out.size):
        out[j] = low + np.int64(_uniform(key, c + j) * span)
    state[1] = c + out.size


_safe_caches(globals())
