"""Matrix products: BLAS gemm called directly, matmul and linear forward and VJPs.
"""
import importlib.machinery
import importlib.util
import os
import sys

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .cache import _INL, _JIT, _SUB, _safe_caches
from .layout import A, AOFF, B, N, ND, P0, P1, S0, SA, SB, _dst, _load, _put, _var, _wants


SMALL_GEMM = 32768


_BLAS = {}     # "sgemm"/"dgemm" -> address, once registered as an LLVM symbol


def _cython_blas():
    """SciPy's ``cython_blas`` module, loaded without running ``scipy.linalg``'s package
    import (0.2 s, most of a warm start): the extension needs nothing from it."""
    mod = sys.modules.get("scipy.linalg.cython_blas")
    if mod is not None:
        return mod
    spec = importlib.util.find_spec("scipy")
    folder = os.path.join(os.path.dirname(spec.origin), "linalg") if spec and spec.origin else ""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(folder, "cython_blas" + suffix)
        if os.path.exists(path):
            ext = importlib.util.spec_from_file_location("scipy.linalg.cython_blas", path)
            mod = importlib.util.module_from_spec(ext)
            ext.loader.exec_module(mod)
            # one instance: a later ``import scipy.linalg`` (or Numba's BLAS) finds it
            sys.modules["scipy.linalg.cython_blas"] = mod
            return mod
    import scipy.linalg.cython_blas as mod      # an unusual layout: the usual import
    return mod


def ensure_blas():
    """Registers SciPy's BLAS gemm under the symbols the kernels call. Done before the
    first matrix product rather than at import; compiled code, cached or new, links to
    the symbols when it is loaded."""
    if _BLAS:
        return
    import ctypes

    from llvmlite import binding

    blas = _cython_blas()
    name = ctypes.pythonapi.PyCapsule_GetName
    name.restype, name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    for fn in ("sgemm", "dgemm"):
        cap = blas.__pyx_capi__[fn]
        _BLAS[fn] = get(cap, name(cap))
        binding.add_symbol("tapegrad_" + fn, _BLAS[fn])


def _answer_numba_blas_probe():
    """Numba's array-math module, which its CPU target imports when the first kernel
    loads, checks that SciPy's BLAS imports by importing scipy.linalg (0.2 s in every
    process). SciPy is a dependency, and Numba's own BLAS calls still import it when
    they are compiled: the check is answered without the import."""
    from numba.np import linalg as nplinalg
    probe = getattr(nplinalg, "ensure_blas", None)
    if "numba.np.arraymath" in sys.modules or probe is None:
        return
    nplinalg.ensure_blas = _no_import
    try:
        from numba.np import arraymath
    finally:
        nplinalg.ensure_blas = probe
    if getattr(arraymath, "ensure_blas", None) is _no_import:
        arraymath.ensure_blas = probe


def _no_import():
    pass


_answer_numba_blas_probe()


@intrinsic
def _xgemm(typingctx, ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc):
    """BLAS gemm (column-major): c = op(a) @ op(b) + beta * c, by direct call."""
    dt = c.dtype
    sig = types.void(types.boolean, types.boolean, types.int64, types.int64, types.int64,
                     a, types.int64, b, types.int64, types.float64, c, types.int64)

    def codegen(context, builder, signature, args):
        fl = context.get_value_type(dt)
        i8, i32 = ir.IntType(8), ir.IntType(32)
        p8, p32, pf = i8.as_pointer(), i32.as_pointer(), fl.as_pointer()
        fnty = ir.FunctionType(ir.VoidType(),
                               [p8, p8, p32, p32, p32, pf, pf, p32, pf, p32, pf, pf, p32])
        fn = cgutils.get_or_insert_function(
            builder.module, fnty, "tapegrad_dgemm" if dt == types.float64 else "tapegrad_sgemm")

        def ref(ty, v):
            p = cgutils.alloca_once(builder, ty)
            builder.store(v, p)
            return p

        def trans(flag):
            return ref(i8, builder.select(flag, i8(ord("T")), i8(ord("N"))))

        def dim(v):
            return ref(i32, builder.trunc(v, i32))

        def scal(v):
            return ref(fl, v if fl == ir.DoubleType() else builder.fptrunc(v, fl))

        def data(ty, v):
            return builder.bitcast(context.make_array(ty)(context, builder, v).data, pf)

        ta_, tb_, m_, n_, k_, a_, lda_, b_, ldb_, beta_, c_, ldc_ = args
        ty = signature.args
        builder.call(fn, [trans(ta_), trans(tb_), dim(m_), dim(n_), dim(k_),
                          scal(ir.Constant(ir.DoubleType(), 1.0)), data(ty[5], a_), dim(lda_),
                          data(ty[7], b_), dim(ldb_), scal(beta_), data(ty[10], c_),
                          dim(ldc_)])
        return context.get_dummy_value()

    return sig, codegen


@njit(**_JIT)
def gemm(a, b, out, m, kk, n, ta, tb, acc):
    """out (m x n, flat) = or += op(a) @ op(b), op(a) m x kk (a stored kk x m when ta)."""
    if m * kk * n <= SMALL_GEMM:
        for i in range(m):
            for j in range(n):
                s = 0.0
                for p in range(kk):
                    x = a[p * m + i] if ta else a[i * kk + p]
                    y = b[j * kk + p] if tb else b[p * n + j]
                    s += x * y
                if acc:
                    out[i * n + j] += s
                else:
                    out[i * n + j] = s
    else:
        # Row-major out is column-major out^T = op(b)^T @ op(a)^T: the stored arrays
        # as they are, with the flags swapped.
        _xgemm(tb, ta, n, m, kk, b, kk if tb else n, a, m if ta else kk,
               1.0 if acc else 0.0, out, n)


@njit(**_JIT)
def matmul_dims(mode, sa0, sa1, sb0, sb1):
    """(m, k, n) of a product of mode 0 (2-D @ 2-D), 1 (1-D @ 2-D), 2 (2-D @ 1-D), 3 (dot)."""
    if mode == 0:
        return sa0, sa1, sb1
    if mode == 1:
        return 1, sa0, sb1
    if mode == 2:
        return sa0, sa1, 1
    return 1, sa0, 1


@njit(**_JIT)
def matmul_fwd(x, y, out, batch, m, kk, n):
    """out = x @ y over ``batch`` stacked products."""
    for q in range(batch):
        gemm(x[q * m * kk:], y[q * kk * n:], out[q * m * n:], m, kk, n, _var(False), _var(False),
             _var(False))


@njit(**_SUB)
def _mm_shape(T, o, a, b, mode):
    """(batch, m, k, n) of a product of mode ``mode`` of rows a and b into row o (tape
    rows, or a program's values: both tables keep shapes in the same columns)."""
    if mode == 4:
        nd = T[a, ND]
        m = T[a, S0 + nd - 2]
        n = T[b, S0 + nd - 1]
        return T[o, N] // (m * n) if m * n else 0, m, T[a, S0 + nd - 1], n
    m, kk, n = matmul_dims(mode, T[a, S0], T[a, S0 + 1] if T[a, ND] > 1 else 0,
                           T[b, S0], T[b, S0 + 1] if T[b, ND] > 1 else 0)
    return 1, m, kk, n


@njit(**_INL)
def _matmul_vjp(T, r, adj, seen):
    """dA = g @ B^T, dB = A^T @ g, per product of the batch."""
    a = T[r, A]
    b = T[r, B]
    batch, m, kk, n = _mm_shape(T, r, a, b, T[r, P0])
    go = T[r, AOFF]
    g = adj[go:go + T[r, N]]
    if _wants(T, a):
        vb = _load(T, r, SB, T[b, N], adj)
        ao, fr = _dst(adj, T, seen, a)
        for q in range(batch):
            gemm(g[q * m * n:], vb[q * kk * n:], adj[ao + q * m * kk:], m, n, kk,
                 _var(False), _var(True), not fr)
    if _wants(T, b):
        va = _load(T, r, SA, T[a, N], adj)
        bo, fb = _dst(adj, T, seen, b)
        for q in range(batch):
            gemm(va[q * m * kk:], g[q * m * n:], adj[bo + q * kk * n:], kk, m, n,
                 _var(True), _var(False), not fb)


@njit(**_JIT)
def linear_fwd(x, w, bias, out, m, kk, n, has_bias):
    """out (m x n) = x (m x kk) @ w.T (w: n x kk) + bias (n values or one)."""
    gemm(x, w, out, m, kk, n, _var(False), _var(True), _var(False))
    if has_bias:
        nb = bias.size
        for i in range(m):
            for j in range(n):
                out[i * n + j] += bias[j if nb > 1 else 0]


@njit(**_INL)
def _linear_vjp(T, L, r, adj, seen):
    """y = x @ W.T + b: dx = g @ W, dW = g^T @ x, db = column sums of g."""
    start = T[r, P0]
    x = L[start]
    w = L[start + 1]
    n = T[w, S0]
    kk = T[w, S0 + 1]
    m = T[r, N] // n if n else 0
    go = T[r, AOFF]
    g = adj[go:go + T[r, N]]
    if _wants(T, x):
        vw = _load(T, r, SB, T[w, N], adj)
        xo, fx = _dst(adj, T, seen, x)
        gemm(g, vw, adj[xo:], m, n, kk, _var(False), _var(False), not fx)
    if _wants(T, w):
        vx = _load(T, r, SA, T[x, N], adj)
        wo, fw = _dst(adj, T, seen, w)
        gemm(g, vx, adj[wo:], n, m, kk, _var(True), _var(False), not fw)
    if T[r, P1] > 2:
        bb = L[start + 2]
        if _wants(T, bb):
            nb = T[bb, N]
            col = np.zeros(n)
            for i in range(m):
                for j in range(n):
                    col[j] += g[i * n + j]
            bo, fb = _dst(adj, T, seen, bb)
            if nb == n:
                for j in range(n):
                    _put(adj, bo + j, col[j], fb)
            else:
                s = 0.0
                for j in range(n):
                    s += col[j]
                _put(adj, bo, s, fb)


_safe_caches(globals())
