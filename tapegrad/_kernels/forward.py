"""Compiled programs' forward kernels: one C function per opcode and dtype, compiled
(or loaded from the cache) the first time a program holds that opcode, and the table
of their addresses that run_program calls through.
"""

import functools
import os

import numpy as np
from numba import carray, get_num_threads, njit, threading_layer

from .cache import _INL, _SUB, _safe_caches
from .layout import (BINARY_FIRST, BINARY_LAST, F64, FL, K_ADD, K_AMAX, K_BATCHNORM,
                     K_CAST, K_CAT, K_COPY, K_GATHER, K_LAYERNORM, K_LINEAR, K_LOGSOFTMAX,
                     K_MATMUL, K_PROD, K_SOFTMAX, K_STRIDED, K_SUM, K_WHERE, MAXD, N, NCOL,
                     ND, OP, PAR_MIN, S0, SPLIT_MAX, SUM_BLOCK, U8, _block_sum, _j, _mode,
                     _nil, _ptr, _var, _work, _worth_splitting, general, sum_parts)
from .linalg import _mm_shape, ensure_blas, linear_fwd, matmul_fwd
from .elementwise import (UNARY_FWD, _BINARY_VJPS, _SCALAR_BY_KERNEL, _UNARY_VJPS,
                          _binary_block, _binop, _scalar_unary, binary_fwd, bits_fwd,
                          arith1, compare_fwd)
from .reduce import (amax_fwd, argext_fwd, cat_fwd, gather_strided, one_run, prod_fwd,
                     softmax_fwd, softmax_last, sort_fwd, sum_fwd, sum_rows)
from .norm import batch_norm_fwd, layer_norm_fwd
from .optim import adam_moment, adam_step
from .rng import R_INT, R_NORMAL, fill_normal, fill_randint, fill_random
from .reverse import (ARGV, BLOCKS, FUSED, REVERSE, REVERSE1, RUNADD, SPLIT, _FAMILY_VJPS,
                      _cfunc, prepare, run_elements)
from .program import (I_A, I_B, I_O, I_OP, I_P, NOPS, X_ADAM, X_ADJ, X_ARG, X_ARGEXT,
                      X_AXPY, X_BACKWARD, X_BCAST, X_BITS, X_CALL, X_CHECK, X_CMP, X_COND,
                      X_COPY, X_FILL, X_FUSED, X_GATHER, X_IADD, X_ICMP, X_INDEX, X_ISUM,
                      X_MOVE, X_RAND, X_SCALAR, X_SOFTDIM, X_SORT, X_SPLIT, X_SUMROWS,
                      X_TARGET, X_TOF)
from .program import (_P_CHUNK, _P_DST, _P_FI, _P_HI, _P_I, _P_INS, _P_KF, _P_LI,
                      _P_LO, _P_NI, _P_NLI, _P_NV, _P_SRC, _P_ST, _P_THREADS, _P_UNITS,
                      _P_VD, _P_FN, _fused, _kernel_call, _split, _val)


@njit(**_SUB)
def _rows(VD, a, o, size, inner):
    """X_INDEX; returns 1 for a row out of range."""
    key = _val(VD, a, _nil(np.int64))
    pos = _val(VD, o, _nil(np.int64))
    for q in range(key.size):
        r = key[q]
        if r < 0:
            r += size
        if r < 0 or r >= size:
            return 1
        for j in range(inner):
            pos[q * inner + j] = r * inner + j
    return 0


@njit(**_SUB)
def _targets(VD, a, o, b, classes, inner, ignore, cw):
    """X_TARGET; returns 1 for a target out of range."""
    t = _val(VD, a, _nil(np.int64))
    pos = _val(VD, o, _nil(np.int64))
    if VD[b, FL] & F64:
        return _target_weights(t, pos, _val(VD, b, _nil(np.float64)),
                               _val(VD, max(cw, 0), _nil(np.float64)), cw >= 0,
                               classes, inner, ignore)
    return _target_weights(t, pos, _val(VD, b, _nil(np.float32)),
                           _val(VD, max(cw, 0), _nil(np.float32)), cw >= 0,
                           classes, inner, ignore)


@njit(**_SUB)
def _target_weights(t, pos, wt, cw, weighted, classes, inner, ignore):
    for q in range(t.size):
        c = t[q]
        if c == ignore:
            pos[q] = (q // inner) * classes * inner + q % inner
            wt[q] = 0.0
            continue
        if c < 0 or c >= classes:
            return 1
        pos[q] = ((q // inner) * classes + c) * inner + q % inner
        wt[q] = cw[c] if weighted else 1.0
    return 0


@njit(**_INL)
def _scalar_fwd(INS, FI, VD, i, w, kf, argv):
    """Instruction i on one-element values (flagged at build time); transcendental
    ops, heavier to compile, go through their kernels."""
    k = INS[i, I_OP]
    if (_SCALAR_BY_KERNEL >> k) & 1:
        _kernel_call(kf, k, argv, i, _var(-1), _var(0))
        return
    out = _val(VD, INS[i, I_O], w)
    x = _val(VD, INS[i, I_A], w)
    if k <= BINARY_LAST:
        out[0] = _binop(k, x[0], _val(VD, INS[i, I_B], w)[0])
    else:
        out[0] = _scalar_unary(k, x[0], FI[i, 0], FI[i, 1], INS[i, I_P])


KFWD = np.zeros((2, NOPS), np.int64)        # forward kernel addresses by dtype, opcode
_FWD_COMPILED = {}


@njit(**_INL)
def _open_program(argp):
    a = carray(_ptr(argp, np.int64), ARGV)
    INS = carray(_ptr(a[_P_INS], np.int64), (a[_P_NI], NCOL))
    FI = carray(_ptr(a[_P_FI], np.float64), (a[_P_NI], 2))
    LI = carray(_ptr(a[_P_LI], np.int64), a[_P_NLI])
    VD = carray(_ptr(a[_P_VD], np.int64), (a[_P_NV], NCOL))
    return INS, FI, LI, VD, a[_P_I], a[_P_LO], a[_P_HI]


_BINARY_OPS = range(BINARY_FIRST, BINARY_LAST + 1)


def _fwd_kernel(k, f64):
    """The C function running instructions of opcode k for one dtype (one for all the
    broadcasting binary ops); it closes over constants and the op's forward kernel."""
    dt = np.float64 if f64 else np.float32
    if k in UNARY_FWD:
        fwd = UNARY_FWD[k]

        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            x = _val(VD, INS[i, I_A], w)
            out = _val(VD, INS[i, I_O], w)
            if lo >= 0:
                x = x[lo:hi]
                out = out[lo:hi]
            fwd(x, out, FI[i, 0], FI[i, 1], INS[i, I_P])
    elif k in _BINARY_OPS:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            o, a, b = INS[i, I_O], INS[i, I_A], INS[i, I_B]
            x = _val(VD, a, w)
            y = _val(VD, b, w)
            out = _val(VD, o, w)
            if lo >= 0:
                out = out[lo:hi]
                x = x if x.size == 1 else x[lo:hi]
                y = y if y.size == 1 else y[lo:hi]
            _binary_block(INS[i, I_OP], out, x, y)
    elif k == X_BCAST:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            o, a, b = INS[i, I_O], INS[i, I_A], INS[i, I_B]
            binary_fwd(INS[i, I_P], VD, o, a, b, _val(VD, o, w), _val(VD, a, w),
                       _val(VD, b, w))
    elif k == K_WHERE:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            noidx = _nil(np.int64)
            o, a, b = INS[i, I_O], INS[i, I_A], INS[i, I_B]
            cond = _val(VD, INS[i, I_P], _nil(np.uint8))
            ma, ia = _mode(VD, o, a, noidx)
            mb, ib = _mode(VD, o, b, noidx)
            x = _val(VD, a, w)
            y = _val(VD, b, w)
            out = _val(VD, o, w)
            for j in range(out.size):
                out[j] = x[_j(ma, j, ia)] if cond[j] else y[_j(mb, j, ib)]
    elif k == X_COND:       # broadcast: index maps, kept out of the interpreter
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            o, a = INS[i, I_O], INS[i, I_A]
            wb = _nil(np.uint8)
            out, src = _val(VD, o, wb), _val(VD, a, wb)
            ma, ia = _mode(VD, o, a, _nil(np.int64))
            for j in range(out.size):
                out[j] = src[_j(ma, j, ia)]
    elif k == K_SUM:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            a = INS[i, I_A]
            sum_fwd(VD, a, INS[i, I_P], INS[i, I_P + 1], _val(VD, a, w), _val(VD, INS[i, I_O], w))
    elif k == X_SUMROWS:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            a, count = INS[i, I_A], INS[i, I_P + 1]
            if INS[i, I_P + 2] == 0:
                sum_rows(_val(VD, a, w), _val(VD, INS[i, I_O], w), INS[i, I_P], count)
                return
            # the sum that ends a fused run: a block's partial sum (lo..hi, A its input),
            # then, after the run, their total (A < 0)
            parts = carray(_ptr(INS[i, I_P + 2], np.float64),
                           (INS[i, I_P] + SUM_BLOCK - 1) // SUM_BLOCK)
            if a >= 0:
                parts[lo // SUM_BLOCK] = _block_sum(_val(VD, a, w), lo, hi)
            else:
                s = sum_parts(parts)
                _val(VD, INS[i, I_O], w)[0] = s / count if count > 0 else s
    elif k == K_AMAX:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            a = INS[i, I_A]
            amax_fwd(VD, a, INS[i, I_P], INS[i, I_P + 1], _val(VD, a, w),
                     _val(VD, INS[i, I_O], w))
    elif k == K_MATMUL:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            o, a, b = INS[i, I_O], INS[i, I_A], INS[i, I_B]
            batch, m, kk, n = _mm_shape(VD, o, a, b, INS[i, I_P])
            matmul_fwd(_val(VD, a, w), _val(VD, b, w), _val(VD, o, w), batch, m, kk, n)
    elif k == K_LINEAR:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            start = INS[i, I_P]
            x = LI[start]
            wt = LI[start + 1]
            n = VD[wt, S0]
            kk = VD[wt, S0 + 1]
            has_bias = INS[i, I_P + 1] > 2
            bias = _val(VD, LI[start + 2], w) if has_bias else _val(VD, wt, w)
            o = INS[i, I_O]
            linear_fwd(_val(VD, x, w), _val(VD, wt, w), bias, _val(VD, o, w),
                       VD[o, N] // n if n else 0, kk, n, has_bias)
    elif k == K_LAYERNORM or k == K_BATCHNORM:
        layer = k == K_LAYERNORM

        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            start = INS[i, I_P]
            flags = INS[i, I_P + (3 if layer else 4)]
            x = _val(VD, LI[start], w)
            wv = _val(VD, LI[start + 1], w) if flags & 1 else x
            bv = _val(VD, LI[start + 1 + (flags & 1)], w) if flags & 2 else x
            out = _val(VD, INS[i, I_O], w)
            if layer:
                layer_norm_fwd(x, wv, bv, out, INS[i, I_P + 2], FI[i, 0], flags)
            else:
                batch_norm_fwd(x, wv, bv, out, INS[i, I_P + 2], INS[i, I_P + 3], FI[i, 0],
                               flags)
    elif k == K_GATHER:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            idx = _val(VD, INS[i, I_P], _nil(np.int64))
            x = _val(VD, INS[i, I_A], w)
            out = _val(VD, INS[i, I_O], w)
            n = np.uint64(x.size)
            fill = FI[i, 0]
            for j in range(out.size):
                q = np.uint64(idx[j])
                out[j] = x[q] if q < n else fill
    elif k in (K_SOFTMAX, K_LOGSOFTMAX):
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            softmax_last(_val(VD, INS[i, I_A], w), _val(VD, INS[i, I_O], w), INS[i, I_P],
                         k == K_LOGSOFTMAX)
    elif k == X_SOFTDIM:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            softmax_fwd(_val(VD, INS[i, I_A], w), _val(VD, INS[i, I_O], w), INS[i, I_P],
                        INS[i, I_P + 1], INS[i, I_P + 3] != 0)
    elif k == K_PROD:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            a = INS[i, I_A]
            prod_fwd(VD, a, INS[i, I_P], _val(VD, a, w), _val(VD, INS[i, I_O], w))
    elif k == K_CAT:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            o = INS[i, I_O]
            out = _val(VD, o, w)
            start = INS[i, I_P]
            inner = INS[i, I_P + 2]
            outer = INS[i, I_P + 3]
            blk = outer * inner
            dtot = VD[o, N] // blk if blk else 0
            off = 0
            for q in range(INS[i, I_P + 1]):
                x = LI[start + q]
                dj = VD[x, N] // blk if blk else 0
                cat_fwd(out, _val(VD, x, w), off, dj, dtot, outer, inner)
                off += dj
    elif k == K_CAST:         # to this dtype from the other
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            out = _val(VD, INS[i, I_O], _nil(dt))
            x = _val(VD, INS[i, I_A], _nil(np.float32 if f64 else np.float64))
            for j in range(out.size):
                out[j] = x[j]
    elif k == K_COPY or k == X_COPY:
        # K_COPY: reshape-like, the same elements in the same order; X_COPY: A broadcast
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            o, a = INS[i, I_O], INS[i, I_A]
            x = _val(VD, a, w)
            out = _val(VD, o, w)
            if k == X_COPY and lo < 0:
                ma, ia = _mode(VD, o, a, _nil(np.int64))
                for j in range(out.size):
                    out[j] = x[_j(ma, j, ia)]
                return
            if lo >= 0:  # slices, not range(lo, hi): no negative-index checks per element
                out = out[lo:hi]
            if x.size == 1:
                for j in range(out.size):
                    out[j] = x[0]
            else:
                if lo >= 0:
                    x = x[lo:hi]
                for j in range(out.size):
                    out[j] = x[j]
    elif k == X_GATHER:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            o = INS[i, I_O]
            st = np.zeros(MAXD, np.int64)
            ext = INS[i, I_P + 1] + 1
            for d in range(VD[o, ND]):
                st[d] = INS[i, I_P + 2 + d]
                if st[d] > 0:
                    ext += (VD[o, S0 + d] - 1) * st[d]
            src = carray(_ptr(INS[i, I_P], dt), ext)
            gather_strided(VD, o, src, INS[i, I_P + 1], st, _val(VD, o, w))
    elif k == X_AXPY or k == X_FILL:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            out = _val(VD, INS[i, I_O], w)
            x = _val(VD, INS[i, I_A if k == X_AXPY else I_O], w)
            if lo >= 0:
                out = out[lo:hi]
                x = x[lo:hi]
            c = FI[i, 0]
            if k == X_FILL:
                for j in range(out.size):
                    out[j] = c
            else:
                for j in range(out.size):
                    out[j] += c * x[j]
    elif k == X_ADAM:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            out = _val(VD, INS[i, I_O], w)
            a = _val(VD, INS[i, I_A], w)
            b = _val(VD, INS[i, I_B], w) if INS[i, I_B] >= 0 else out[:0]
            flags = INS[i, I_P + 1]
            if INS[i, I_P] == 2:
                adam_step(out, a, b, _val(VD, INS[i, I_P + 2], w)[0],
                          _val(VD, INS[i, I_P + 3], w)[0], FI[i, 0], FI[i, 1], flags & 2 != 0)
            else:
                adam_moment(INS[i, I_P], out, a, b, FI[i, 0], FI[i, 1], flags & 1 != 0)
    elif k == X_CMP:          # for A's dtype
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            o, a, b = INS[i, I_O], INS[i, I_A], INS[i, I_B]
            compare_fwd(INS[i, I_P], VD, o, a, b, _val(VD, o, _nil(np.uint8)), _val(VD, a, w),
                        _val(VD, max(b, 0), w), FI[i, 0], _nil(np.int64))
    elif k == X_ARGEXT:       # for A's dtype
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            argext_fwd(_val(VD, INS[i, I_A], _nil(dt)), _val(VD, INS[i, I_O], _nil(np.int64)),
                       INS[i, I_P], INS[i, I_P + 1], INS[i, I_P + 2], INS[i, I_P + 3])
    elif k == X_SORT:         # for A's dtype
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            sort_fwd(_val(VD, INS[i, I_A], _nil(dt)), _val(VD, INS[i, I_O], _nil(np.int64)),
                     INS[i, I_P], INS[i, I_P + 1], INS[i, I_P + 2], INS[i, I_P + 3])
    elif k == X_TOF:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            out = _val(VD, INS[i, I_O], _nil(dt))
            a = INS[i, I_A]
            if VD[a, FL] & U8:
                xb = _val(VD, a, _nil(np.uint8))
                for j in range(out.size):
                    out[j] = xb[j]
            else:
                xi = _val(VD, a, _nil(np.int64))
                for j in range(out.size):
                    out[j] = xi[j]
    elif k == X_ICMP:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(np.int64)
            o, a, b = INS[i, I_O], INS[i, I_A], INS[i, I_B]
            compare_fwd(INS[i, I_P], VD, o, a, b, _val(VD, o, _nil(np.uint8)), _val(VD, a, w),
                        _val(VD, max(b, 0), w), FI[i, 0], _nil(np.int64))
    elif k == X_ISUM:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            out = _val(VD, INS[i, I_O], _nil(np.int64))
            a = INS[i, I_A]
            total = 0
            if VD[a, FL] & U8:
                xb = _val(VD, a, _nil(np.uint8))
                for j in range(xb.size):
                    total += xb[j]
            else:
                xi = _val(VD, a, _nil(np.int64))
                for j in range(xi.size):
                    total += xi[j]
            out[0] = total
    elif k == X_RAND:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            state = carray(_ptr(INS[i, I_P + 1], np.int64), 2)
            o = INS[i, I_O]
            if INS[i, I_P] == R_INT:
                fill_randint(_val(VD, o, _nil(np.int64)), state, INS[i, I_P + 2],
                             INS[i, I_P + 3])
            elif INS[i, I_P] == R_NORMAL:
                fill_normal(_val(VD, o, _nil(dt)), state)
            else:
                fill_random(_val(VD, o, _nil(dt)), INS[i, I_P], state, FI[i, 0], FI[i, 1])
    elif k == X_BITS:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            o, a, b = INS[i, I_O], INS[i, I_A], INS[i, I_B]
            if VD[o, FL] & U8:
                w8 = _nil(np.uint8)
                bits_fwd(INS[i, I_P], VD, o, a, b, _val(VD, o, w8), _val(VD, a, w8),
                         _val(VD, max(b, 0), w8), FI[i, 0], _nil(np.int64))
            else:
                w64 = _nil(np.int64)
                bits_fwd(INS[i, I_P], VD, o, a, b, _val(VD, o, w64), _val(VD, a, w64),
                         _val(VD, max(b, 0), w64), FI[i, 0], _nil(np.int64))
    elif k == X_IADD:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            out = _val(VD, INS[i, I_O], _nil(np.int64))
            for j in range(out.size):
                out[j] += INS[i, I_P]
    elif k == X_INDEX or k == X_TARGET:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            a = carray(_ptr(argp, np.int64), ARGV)
            if k == X_INDEX:
                a[_P_ST] = _rows(VD, INS[i, I_A], INS[i, I_O], INS[i, I_P], INS[i, I_P + 1])
            else:
                a[_P_ST] = _targets(VD, INS[i, I_A], INS[i, I_O], INS[i, I_B], INS[i, I_P],
                                    INS[i, I_P + 1], INS[i, I_P + 2], INS[i, I_P + 3])
    elif k == X_SCALAR:
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            w = _nil(dt)
            a = carray(_ptr(argp, np.int64), ARGV)
            kf = carray(_ptr(a[_P_KF], np.int64), NOPS)
            for q in range(lo, hi):
                _scalar_fwd(INS, FI, VD, q, w, kf, a)
    elif k == X_FUSED:      # elements P_LO..P_HI of the run behind header P_I
        def kern(argp):
            INS, FI, LI, VD, i, lo, hi = _open_program(argp)
            a = carray(_ptr(argp, np.int64), ARGV)
            kf = carray(_ptr(a[_P_KF], np.int64), NOPS)
            if INS[i, I_P + 2]:         # scratch addresses of its own in a VD copy
                VD = VD.copy()
                a[_P_VD] = VD.ctypes.data
            _fused(INS, VD, i, kf, a, lo, hi, a[_P_CHUNK])
    elif k == X_MOVE:
        def kern(argp):
            a = carray(_ptr(argp, np.int64), ARGV)
            lo, hi = a[_P_LO], a[_P_HI]
            d = carray(_ptr(a[_P_DST] + lo, _nil(np.uint8)), hi - lo)
            src = carray(_ptr(a[_P_SRC] + lo, _nil(np.uint8)), hi - lo)
            for j in range(hi - lo):
                d[j] = src[j]
    elif k == X_SPLIT:
        def kern(argp):
            a = carray(_ptr(argp, np.int64), ARGV)
            _split(a[_P_FN], a, a[_P_UNITS], a[_P_THREADS])
    else:
        raise ValueError(f"tapegrad: no forward kernel for program opcode {k}")
    return _cfunc(kern)


@functools.cache
def _split_ok():
    """Whether fused runs may be split over threads: several cores, and a thread pool
    that takes calls from several Python threads at once (workqueue aborts then).
    The pool starts with its threads sleeping when idle: spinning OpenMP threads would
    take the cores from the BLAS calls between split runs (4x slower steps). Asked once
    per process: the pool and its layer do not change once started."""
    if SPLIT_MAX < 2:
        return False
    policy = os.environ.get("OMP_WAIT_POLICY")
    os.environ["OMP_WAIT_POLICY"] = policy or "PASSIVE"
    try:
        get_num_threads()               # starts the pool, which reads the policy
    finally:
        if policy is None:
            del os.environ["OMP_WAIT_POLICY"]
    return threading_layer() != "workqueue"


def prepare_forward(k, f64):
    """Compiles (or loads) the forward kernel of program opcode k for one dtype."""
    k, d = int(k), 1 if f64 else 0
    if (k, d) in _FWD_COMPILED:
        return
    base = K_ADD if k in _BINARY_OPS else k
    if k in _ANY_DTYPE:         # one kernel, whatever the dtype row
        d = 0
        if (k, 0) in _FWD_COMPILED:
            return
    fn = _FWD_COMPILED.get((base, d))
    if fn is None:
        if k in (K_MATMUL, K_LINEAR):
            ensure_blas()
        if k == X_SPLIT:
            get_num_threads()       # starts the thread pool, whose symbols the code uses
        fn = _fwd_kernel(base, d)
    for op in (_BINARY_OPS if base == K_ADD else (k,)):
        for row in ((0, 1) if k in _ANY_DTYPE else (d,)):
            _FWD_COMPILED[(op, row)] = fn
            KFWD[row, op] = fn.address


_ANY_DTYPE = (X_ICMP, X_ISUM, X_INDEX, X_TARGET, X_BITS, X_IADD, X_COND, X_SPLIT,
              X_MOVE)


# Program instructions that the interpreter runs itself (no kernel).
INLINE_OPS = (X_ARG, X_BACKWARD, X_ADJ, X_CHECK, X_FUSED, X_CALL)
# Opcodes with a forward kernel (_fwd_kernel).
FORWARD_OPS = (tuple(UNARY_FWD) + tuple(_BINARY_OPS) + (
    K_WHERE, K_SUM, K_AMAX, K_MATMUL, K_LINEAR, K_GATHER, K_SOFTMAX, K_LOGSOFTMAX, K_PROD,
    K_LAYERNORM, K_BATCHNORM, K_CAT, K_CAST, K_COPY, X_COPY, X_GATHER, X_AXPY, X_FILL, X_CMP,
    X_ARGEXT, X_SORT, X_SCALAR, X_TOF, X_ICMP, X_ISUM, X_RAND, X_INDEX, X_TARGET, X_BITS,
    X_IADD, X_SUMROWS, X_BCAST, X_COND, X_FUSED, X_SPLIT, X_MOVE, X_SOFTDIM, X_ADAM))


def prepare_program(TT, VD, INS, runs):
    """Compiles every kernel a program's replay can reach: its instructions' forward
    kernels and its tape's VJP kernels."""
    for i in range(len(INS)):
        k = int(INS[i, I_OP])
        f64 = VD[INS[i, I_A if k in (X_CMP, X_ARGEXT, X_SORT) else I_O], FL] & F64
        if k not in INLINE_OPS:
            prepare_forward(k, f64)
        if k in (X_ARG, X_ADJ) and VD[INS[i, I_O], N] >= PAR_MIN and _split_ok():
            prepare_forward(X_SPLIT, 0)
            prepare_forward(X_MOVE, 0)
        if k == X_FUSED and _worth_splitting.py_func(
                VD[INS[i + 1, I_O], N], _work.py_func(INS, I_OP, i + 1, i + 1 + INS[i, I_P])) \
                and _split_ok():
            f64 = VD[INS[i + 1, I_O], FL] & F64
            prepare_forward(X_FUSED, f64)
            prepare_forward(X_SPLIT, f64)
        if INS[i, I_P + 9]:
            prepare_forward(X_SCALAR, f64)

    for r in range(len(TT)):
        k = int(TT[r, OP])
        if k in _UNARY_VJPS or k in _BINARY_VJPS or k in _FAMILY_VJPS:
            prepare(k, TT[r, FL] & F64, general(TT, r))
    for d in set((TT[:, FL] & F64).tolist()):
        prepare(REVERSE, d)
        if any(arith1(int(k), int(n)) for k, n in TT[(TT[:, FL] & F64) == d][:, [OP, N]]):
            prepare(REVERSE1, d)
    for r in np.flatnonzero(TT[:, OP] == K_CAST):
        prepare(K_CAST, TT[r, FL] & F64)
    if runs.any():
        prepare(FUSED, 0)
        prepare(FUSED, 1)
    for r in np.flatnonzero((TT[:, OP] == K_STRIDED) & (TT[:, N] >= PAR_MIN)):
        if one_run.py_func(TT, r) and _split_ok():
            prepare(RUNADD, TT[r, FL] & F64)
    for r in np.flatnonzero(runs > 1):
        if _worth_splitting.py_func(run_elements.py_func(TT, r),
                                    _work.py_func(TT, OP, r - runs[r] + 1, r + 1)) \
                and _split_ok():
            prepare(BLOCKS, TT[r, FL] & F64)
            prepare(SPLIT, TT[r, FL] & F64)


_safe_caches(globals())
