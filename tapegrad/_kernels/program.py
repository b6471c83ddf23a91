"""Compiled programs: a recorded function replayed in one call by run_program, which
calls its instructions' forward kernels (forward.py) through a table of addresses.
"""

import numpy as np
from numba import carray, njit, prange

from .cache import _JIT, _SUB, _safe_caches
from .layout import (AOFF, CAST, DONE, F64, FL, FUSE_BLOCK, K_CAST, N, PAR_MIN, SO,
                     SPLIT_MAX, SWITCH, U8, _call, _nil, _ptr, _raw, _var, _work,
                     _worth_splitting)
from .reverse import (ARGV, KCOLS, REVERSE, _A_ADJ, _A_ADJ2, _A_KT, _A_NADJ, _A_NADJ2,
                      _A_OUT, _A_R, _A_RESUME, _A_ROW, _A_THREADS, tape_args)


# ======================================================================================
# Compiled programs: a recorded function replayed in one call
#
# A program is a list of instructions over values. ``VD`` describes each value in the
# row layout of the tape (N, ND, shape S0.., F64 in FL) with its fixed address in SO;
# ``INS`` rows hold an opcode, the output value O, inputs A and B, and parameters;
# ``FI`` two float parameters each; ``LI`` value lists (inputs of linear, seeds).
# Kernel opcodes replay the forward of a tape row; the X_ opcodes below move data.
# The backward of a recorded tape is the reverse interpreter (reverse.py), on a copy of that
# tape ``TT`` whose saved-value addresses point at the program's values.
I_OP = 0
I_O = 1
I_A = 2
I_B = 3
I_P = 4          # ten integer parameters
ICOL = I_P + 10

X_ARG = 64       # O = the caller's array P0 (its address in ARGS)
X_GATHER = 65    # O = strided read at address P0, offset P1, element strides P2..
X_AXPY = 66      # O += F0 * A
X_FILL = 67      # O = F0
X_COPY = 68      # O = A broadcast to O's shape (same dtype)
X_BACKWARD = 69  # reverse replay from tape row P0, seeds LI[P1:P1+2*P2] (row, value)
X_ADJ = 70       # O = adjoint of tape row P0 after the last backward (zeros if unreached)
X_CHECK = 71     # stop with MISMATCH unless A holds the same bits as B
X_CMP = 73       # O (bool) = A compared with B (or F0 when B < 0); P0: 0 ==, 1 !=, 2 <,
#                  3 <=, 4 >, 5 >=
X_COND = 74      # O (bool) = A (bool) broadcast to O's shape
X_ARGEXT = 75    # O (int64) = flat positions of the max (P2 = 1) or min of A along a dim
#                  of size P0 with P1 elements after it (first one; NaN counts as max);
#                  with P3 = 1, their indices along the dim (argmax, argmin)
X_TARGET = 77    # O (int64) = flat positions of class targets A (int64) among P0 classes
#                  with P1 elements per class; B = their weights (P3's class weights,
#                  or 1), 0 and class 0 for targets equal to P2; MISMATCH if one is out
#                  of range
X_TOF = 78       # O (float) = A (int64, or bool when A is U8) converted
X_ICMP = 79      # O (bool) = A (int64) compared with B (int64) or F0, as X_CMP
X_ISUM = 80      # O (int64, one element) = the sum of A (int64, or bool when A is U8)
X_RAND = 81      # O = numbers of kind P0 (rng.py) from the stream at address P1, F0 and
#                  F1 its parameters (P2, P3: the range of R_INT)
X_INDEX = 82     # O (int64) = flat positions of rows A (int64, negative from the end) of
#                  P0 rows of P1 elements; MISMATCH if one is out of range
X_BITS = 83      # O = A &, |, ^ (P0 = 0, 1, 2) B, or F0 when B < 0; P0 = 3: ~A (bool or
#                  int64, all three of one dtype)
X_IADD = 84      # O (int64) += P0
X_SORT = 86      # O (int64) = flat positions of the first P3 elements of A sorted along a
#                  dim of size P0 with P1 elements after it, descending when P2 = 1
X_SUMROWS = 87   # O = sums of A's runs of P0 elements, divided by P1 when P1 > 0 (a sum
#                  or mean over trailing dims: its kernel compiles faster than K_SUM's)
X_BCAST = 88     # O = A (binary op P0) B, an input broadcast (neither O's elements nor one
#                  value): laid out over O first, in a kernel of its own
X_SOFTDIM = 91   # O = softmax (log_softmax when P3 = 1) of A along a dim of size P0 with P1
#                  elements after it (P1 > 1; along the last dim: K_SOFTMAX, K_LOGSOFTMAX)
X_ADAM = 92      # Adam, in place: P0 = 0 (1): O = first (second) moment from gradient A
#                  (plus B * F1 when B >= 0: L2 decay), F0 = beta1 (beta2), negated when
#                  P1 bit 1; P0 = 2: O = the parameter's step from moments A, B, step
#                  P2 and root P3 (one-element values), eps F0, decay F1 when P1 bit 2
X_CALL = 85      # stop with CALLED: Python runs the program's call P0 (a collective over
#                  values it updates in place), then resumes past it
X_FUSED = 72     # the next P0 instructions are elementwise over the same elements: run
#                  them block by block; outputs flagged P8 = slot + 1 live in a block of
#                  scratch at address P1 (P2 bytes per chunk of a split run), not in VD
X_SCALAR = 76    # (a forward kernel, no instruction) instructions P_LO..P_HI, flagged
#                  by P9 = the number of one-element instructions from this one on
X_SPLIT = 89     # (a forward kernel, no instruction) the kernel at argument _P_FN over
#                  elements 0.._P_UNITS, in chunks on _P_THREADS threads
X_MOVE = 90      # (a forward kernel, no instruction) bytes P_LO..P_HI from address
#                  _P_SRC to _P_DST (big argument and gradient copies, under X_SPLIT)
# ARGS: nt, nv, ni, len(TL), len(LI), then (address, size) of the adjoint arenas adj32,
# adj64 and of seen, the addresses of the kernel tables KFWD and KTAB and of the
# program's kernel argument blocks ARGV (2 x ARGV), the (instruction, tape row, past
# the row's pause) to resume a backward at after Python ran (-1: start from the top),
# the address of THREADS, then the caller's array addresses
(H_ADJ32, H_ADJ64, _H_SEEN, _H_KF, _H_KT, _H_ARGV, H_RESUME, _H_THREADS) = (
    5, 7, 9, 11, 12, 13, 14, 17)
H_ARGS = 18
NOPS = 128       # opcodes a program may hold (K_* and X_*): rows of KFWD
(_P_INS, _P_FI, _P_LI, _P_VD, _P_NI, _P_NV, _P_NLI, _P_I, _P_LO, _P_HI, _P_KF,
 _P_ST, _P_FN, _P_UNITS, _P_THREADS, _P_SRC, _P_DST, _P_CHUNK) = range(18)  # ST: a
#   kernel's report that a value came out of range; FN..THREADS: X_SPLIT's; SRC, DST:
#   X_MOVE's; CHUNK: which chunk of a split a kernel runs
PAUSED_ROW = _A_ROW      # where ARGV[1] holds the row a backward paused at (hooks)

MISMATCH = 1     # run_program: a value read while recording came out differently
CALLED = 9       # run_program: stopped at an X_CALL (resume there: ARGS[H_RESUME] = i)


@njit(**_SUB)
def _val(VD, v, like):
    return carray(_ptr(VD[v, SO], like), VD[v, N])


@njit(**_SUB)
def _kernel_call(kf, k, argv, i, lo, hi):
    fn = kf[k]
    if fn == 0:
        raise ValueError("tapegrad: no kernel compiled for program opcode", k)
    argv[_P_I] = i
    argv[_P_LO] = lo
    argv[_P_HI] = hi
    _call(fn, argv.ctypes.data)


@njit(**_SUB)
def _backward(TT, TF, TL, adj32, adj64, seen, start, runs, KT, argv, resume, threads):
    """The reverse replay across both arenas: dtype switches, casts between them;
    ``resume``: past a pause at row ``start``."""
    dt = TT[start, FL] & F64
    tape_args(argv, TT, TF, TL, seen, runs)
    argv[_A_RESUME] = resume
    argv[_A_THREADS] = threads
    while start >= 0:
        kt = KT[1 if dt else 0]
        argv[_A_ADJ] = adj64.ctypes.data if dt else adj32.ctypes.data
        argv[_A_NADJ] = adj64.size if dt else adj32.size
        argv[_A_ADJ2] = adj32.ctypes.data if dt else adj64.ctypes.data
        argv[_A_NADJ2] = adj32.size if dt else adj64.size
        argv[_A_KT] = kt.ctypes.data
        argv[_A_R] = start
        argv[_A_ROW] = dt
        _call(kt[REVERSE], argv.ctypes.data)
        argv[_A_RESUME] = 0
        status, r = argv[_A_OUT], argv[_A_ROW]
        if status == DONE:
            return 0
        if status == SWITCH:
            dt ^= F64
            start = r
        elif status == CAST:
            argv[_A_R] = r
            _call(kt[K_CAST], argv.ctypes.data)
            start = r - 1
        else:
            return status
    return 0


@njit(**_SUB)
def _fused(INS, VD, head, kf, argv, lo, hi, chunk):
    """Elements lo..hi of the fused run behind header ``head`` (X_FUSED): its
    instructions block by block, so that each block stays in cache from one
    instruction to the next. Values only the run reads live in the chunk's scratch:
    their VD address is moved to it for each block."""
    count = INS[head, I_P]
    scratch = INS[head, I_P + 1] + chunk * INS[head, I_P + 2]
    for blo in range(lo, hi, FUSE_BLOCK):
        bhi = min(blo + FUSE_BLOCK, hi)
        for i in range(head + 1, head + 1 + count):
            slot = INS[i, I_P + 8]
            if slot:
                isz = 8 if VD[INS[i, I_O], FL] & F64 else 4
                VD[INS[i, I_O], SO] = scratch + ((slot - 1) * FUSE_BLOCK - blo) * isz
            _kernel_call(kf, INS[i, I_OP], argv, i, blo, bhi)


# Fused runs with enough work (_worth_splitting) run on THREADS[0] threads (X_SPLIT), at
# most SPLIT_MAX.
THREADS = np.array([SPLIT_MAX], np.int64)      # set_num_threads


@njit(parallel=True, **_SUB)
def _split(fn, argv, units, threads):
    """fn over elements 0..units in one chunk of whole blocks per thread, each with its
    own copy of the argument block. Elementwise work: any split gives the same results."""
    per = ((units + FUSE_BLOCK - 1) // FUSE_BLOCK + threads - 1) // threads * FUSE_BLOCK
    for c in prange(threads):
        av = argv.copy()
        av[_P_LO] = min(units, c * per)
        av[_P_HI] = min(units, c * per + per)
        av[_P_CHUNK] = c
        _call(fn, av.ctypes.data)


@njit(**_JIT)
def run_program(PG, PL, PF, ARGS):
    """Replays a compiled program; returns (0, -1), or (MISMATCH, instruction) when a
    value read while recording differs now, or (CALLED, instruction) at a call Python
    makes, or (status, instruction) of a backward that paused at a row with hooks
    (PAUSED) or of a user Function (PYFN) (the row in ARGV[1, PAUSED_ROW]; resume
    through ARGS[H_RESUME:H_RESUME + 3]) or failed.

    PG stacks the tape copy TT, the values VD and the instructions INS; PL the tape's
    input lists TL, the value lists LI and the fused runs of TT; PF the tape's F and
    the instructions' FI (sizes in ARGS' header); the other arrays it works on are
    addresses in ARGS' header: a call passes four arrays (each costs its unboxing).
    KF and KT are the forward and VJP kernel tables (KFWD, KTAB), with every kernel the
    program reaches compiled (prepare_program); ARGV two argument blocks for them.
    """
    # Views without a reference count: calls between kernels then pass arrays for free
    # (each counted array costs atomic increments and decrements per call).
    PG, PL, PF, ARGS = _raw(PG), _raw(PL), _raw(PF), _raw(ARGS)
    nt, nv, ni, ntl, nli = ARGS[0], ARGS[1], ARGS[2], ARGS[3], ARGS[4]
    TT = PG[:nt]
    VD = PG[nt:nt + nv]
    INS = PG[nt + nv:nt + nv + ni]
    TL = PL[:ntl]
    LI = PL[ntl:ntl + nli]
    runs = PL[ntl + nli:ntl + nli + nt]
    TF = PF[:nt]
    FI = PF[nt:nt + ni]
    w32, w64, wb, noidx = _nil(np.float32), _nil(np.float64), _nil(np.uint8), _nil(np.int64)
    adj32 = carray(_ptr(ARGS[H_ADJ32], w32), ARGS[H_ADJ32 + 1])
    adj64 = carray(_ptr(ARGS[H_ADJ64], w64), ARGS[H_ADJ64 + 1])
    seen = carray(_ptr(ARGS[_H_SEEN], wb), ARGS[_H_SEEN + 1])
    KF = carray(_ptr(ARGS[_H_KF], noidx), (2, NOPS))
    KT = carray(_ptr(ARGS[_H_KT], noidx), (2, KCOLS))
    blocks = carray(_ptr(ARGS[_H_ARGV], noidx), (2, ARGV))
    argf = blocks[0]
    argb = blocks[1]
    argf[_P_INS] = INS.ctypes.data
    argf[_P_FI] = FI.ctypes.data
    argf[_P_LI] = LI.ctypes.data
    argf[_P_VD] = VD.ctypes.data
    argf[_P_NI] = ni
    argf[_P_NV] = nv
    argf[_P_NLI] = LI.size
    # chunks of a split: at most one per thread of the pool (scratch is sized for them)
    threads = min(carray(_ptr(ARGS[_H_THREADS], noidx), 1)[0], SPLIT_MAX)
    i = 0
    resume_at = ARGS[H_RESUME]
    resume_row = ARGS[H_RESUME + 1]
    if resume_at >= 0:
        i = resume_at
    ARGS[H_RESUME] = -1
    while i < ni:
        k = INS[i, I_OP]
        o = INS[i, I_O]
        kf = KF[1 if VD[INS[i, I_A] if k == X_CMP or k == X_ARGEXT or k == X_SORT else o,
                        FL] & F64 else 0]
        if INS[i, I_P + 9]:          # a run of one-element instructions
            count = INS[i, I_P + 9]
            argf[_P_KF] = kf.ctypes.data
            _kernel_call(kf, _var(X_SCALAR), argf, i, i, i + count)
            i += count
        elif k == X_BACKWARD and i == resume_at:
            if resume_row >= 0:
                status = _backward(TT, TF, TL, adj32, adj64, seen, resume_row, runs, KT,
                                   argb, ARGS[H_RESUME + 2], threads)
                if status != 0:
                    return status, i
            i += 1
        elif k == X_BACKWARD:
            for r in range(nt):
                seen[r] = 0
            p = INS[i, I_P + 1]
            for q in range(INS[i, I_P + 2]):
                r = LI[p + 2 * q]          # the seed's bytes into r's adjoint
                isz = 8 if TT[r, FL] & F64 else 4
                base = adj64.ctypes.data if isz == 8 else adj32.ctypes.data
                nb = TT[r, N] * isz
                d = carray(_ptr(base + TT[r, AOFF] * isz, wb), nb)
                src = carray(_ptr(VD[LI[p + 2 * q + 1], SO], wb), nb)
                for j in range(nb):
                    d[j] = src[j]
                seen[r] = 1
            status = _backward(TT, TF, TL, adj32, adj64, seen, INS[i, I_P], runs, KT, argb,
                               _var(0), threads)
            if status != 0:
                return status, i
            i += 1
        elif k == X_FUSED:
            count = INS[i, I_P]
            kf = KF[1 if VD[INS[i + 1, I_O], FL] & F64 else 0]
            n = VD[INS[i + 1, I_O], N]
            if threads > 1 and kf[X_FUSED] != 0 and \
                    _worth_splitting(n, _work(INS, I_OP, i + 1, i + 1 + count)):
                argf[_P_KF] = kf.ctypes.data
                _split_call(kf, _var(X_FUSED), argf, i, n, threads)
            else:
                _fused(INS, VD, i, kf, argf, 0, n, 0)
            i += count + 1
        elif k == X_CHECK:
            a = INS[i, I_A]
            b = INS[i, I_B]
            nb = VD[a, N] * (1 if VD[a, FL] & U8 else 8 if VD[a, FL] & F64 else 4)
            x = carray(_ptr(VD[a, SO], wb), nb)
            y = carray(_ptr(VD[b, SO], wb), nb)
            for j in range(nb):
                if x[j] != y[j]:
                    return MISMATCH, i
            i += 1
        elif k == X_CALL:
            if i != resume_at:
                return CALLED, i
            i += 1
        elif k == X_INDEX or k == X_TARGET:      # kernels that check their input
            argf[_P_ST] = 0
            _kernel_call(KF[0], k, argf, i, _var(-1), _var(0))
            if argf[_P_ST]:
                return MISMATCH, i
            i += 1
        else:
            if k == X_ADJ:
                r = INS[i, I_P]
                off = TT[r, AOFF]
                isz = 8 if VD[o, FL] & F64 else 4
                base = adj64.ctypes.data if isz == 8 else adj32.ctypes.data
                if seen[r] and base + off * isz == VD[o, SO]:
                    pass                # the backward wrote it there (a lent slot)
                elif seen[r] and _moves(threads, VD[o, N] * isz, KF):
                    _move(KF[0], argf, i, base + off * isz, VD[o, SO], VD[o, N] * isz,
                          threads)
                elif VD[o, FL] & F64:
                    out = _val(VD, o, w64)
                    for j in range(out.size):
                        out[j] = adj64[off + j] if seen[r] else 0.0
                else:
                    out32 = _val(VD, o, w32)
                    for j in range(out32.size):
                        out32[j] = adj32[off + j] if seen[r] else 0.0
            elif k == X_ARG:
                nb = VD[o, N] * (1 if VD[o, FL] & U8 else 8 if VD[o, FL] & F64 else 4)
                if ARGS[H_ARGS + INS[i, I_P]] == VD[o, SO]:
                    pass                # read where the caller keeps it (relocated)
                elif _moves(threads, nb, KF):
                    _move(KF[0], argf, i, ARGS[H_ARGS + INS[i, I_P]], VD[o, SO], nb, threads)
                else:
                    d = carray(_ptr(VD[o, SO], wb), nb)
                    src = carray(_ptr(ARGS[H_ARGS + INS[i, I_P]], wb), nb)
                    for j in range(nb):
                        d[j] = src[j]
            else:
                _kernel_call(kf, k, argf, i, _var(-1), _var(0))
            i += 1
    return 0, -1


@njit(**_SUB)
def _moves(threads, nb, KF):
    """Whether a copy of nb bytes goes over the threads (X_MOVE)."""
    return threads > 1 and nb >= 8 * PAR_MIN and KF[0, X_MOVE] != 0


@njit(**_SUB)
def _move(kf, argv, i, src, dst, nb, threads):
    """nb bytes from src to dst, in one chunk per thread."""
    argv[_P_SRC] = src
    argv[_P_DST] = dst
    _split_call(kf, _var(X_MOVE), argv, i, nb, threads)


@njit(**_SUB)
def _split_call(kf, k, argv, i, units, threads):
    """Kernel k of instruction i over units 0..units, in one chunk per thread (X_SPLIT)."""
    argv[_P_FN] = kf[k]
    argv[_P_UNITS] = units
    argv[_P_THREADS] = threads
    _kernel_call(kf, _var(X_SPLIT), argv, i, _var(0), units)


_safe_caches(globals())
