"""The op table and the ops, by family: ``base`` (the table, recording, shared
checks), ``arith`` (elementwise), ``reductions``, ``views`` (shape ops, indexing,
joining), ``linalg``, ``inplace`` (with user Functions and dtype conversion) and
``composite`` (ops written with other ops).

Each op is one ``Op`` entry: its PyTorch backward name, the kernel opcode whose
vector-Jacobian product the replay interpreter runs (``_kernels``), and the same
VJP written with tensor ops, which ``create_graph=True`` records so that gradients can
be differentiated again. Below each entry is the public function: it validates its
arguments, computes the forward with NumPy and, when grad is needed, records one row
saying which values its backward reads. Families call each other's ops through their
modules (``reductions.sum``), as VJPs of one family use the ops of another.
"""
import sys

from ..tensor import bind_methods
from .base import (Ctx, ENTRIES, EXT, LEAF, Op, SAVE_A, SAVE_B, SAVE_OUT, _F64, _FLOATS,
                   _as_operand, _bcast_error, _check_arg, _check_broadcast, _check_tensor,
                   _flat, _float_input, _grad_needed, _leaf_inplace_check, _new, _new_like,
                   _np_float, _promote, _rebase, _row_of, _shape_row, builtins_min,
                   builtins_sum, bump_version, input_rows, plain, proxy, proxy_copy,
                   record)  # noqa: F401
from .arith import (ABS, ADD, AFFINE_ADD, AFFINE_MUL, AFFINE_RSUB, AFFINE_SUB, CEIL, CLAMP,
                    COS, DIV, DIVS, ERF, EXP, EXPM1, FLOOR, LOG, LOG1P, MAXIMUM, MINIMUM,
                    MUL, NEG, POW, POWS, RDIVS, RECIP, RELU, ROUND, RPOWS, SIGMOID, SIGN,
                    SIN, SQRT, SUB, TAN, TANH, TRUNC, UNARY_FUNCTIONS, WHERE, _BIN_SAVES,
                    _affine, ceil, floor, frac, round, trunc,
                    _binary_tt, _broadcast_kernel, _constant, _elementwise, _relu,
                    _scalar_out, _unary_op, _vjp_add, _vjp_affine, _vjp_clamp, _vjp_div,
                    _vjp_divs, _vjp_minmax, _vjp_mul, _vjp_pow, _vjp_pows, _vjp_rdivs,
                    _vjp_rpows, _vjp_sub, _vjp_where, abs, add, clamp, clip, cos,
                    ACOS, ACOSH, ASIN, ASINH, ATAN, ATANH, COSH, SINH, acos, acosh, asin,
                    asinh, atan, atanh, cosh, sinh,
                    FMOD, FMOD_S, REMAINDER, REMAINDER_S, floor_divide, fmod, remainder,
                    div, erf, exp, expm1, full_like_const, log, log1p, maximum, minimum,
                    masked_fill, mul, neg, pow, rdiv, reciprocal, relu, rpow, rsub, sigmoid,
                    sign, sin, sqrt, square, sub, tan, tanh, tril, triu,
                    where)  # noqa: F401
from .reductions import (AMAX, AMIN, BATCH_NORM, LAYER_NORM, LOG_SOFTMAX, MAX_ALL, MAX_DIM,
                         MEAN, MEAN_DIM, MIN_ALL, MIN_DIM, PROD, PROD_DIM, SOFTMAX, SORT, SUM,
                         SUM_DIM, TOPK, _ValuesIndices, _arg, _dims, _extreme, _flat_positions,
                         _kshape, _max_min, _reduce, _reduced_shape, _softmax_op,
                         _sqrt_masked, _vjp_amax, _vjp_log_softmax, _vjp_prod, _vjp_softmax,
                         _vjp_sum, amax, amin, argmax, argmin, argsort, batch_norm_channels,
                         layer_norm_rows, log_softmax, logsumexp, max, mean, min, norm, prod,
                         softmax, sort, std, sum, sum_to, topk, var)  # noqa: F401
from .views import (CAT, CLONE, EXPAND, FLATTEN, GATHER, PERMUTE, RESHAPE, SCATTER, SELECT,
                    SETIDX, SLICE, SPLIT, SQUEEZE, SQUEEZE_DIM, TRANSPOSE, T_OP, UNSQUEEZE,
                    VIEW, _basic_key, _contig_strides, _flat_index, _infer, _same_order,
                    _shape_arg, _strided, _tensor_list, _view_result, _vjp_cat, _vjp_copy,
                    _vjp_gather, _vjp_permute, _vjp_scatter, _vjp_setidx, _vjp_strided,
                    broadcast_to, cat, chunk, clone, expand, flatten, gather_flat, getitem,
                    index_gather, narrow, permute, repeat, reshape, roll, flip, scatter_flat,
                    setitem, split, squeeze, stack, t, transpose, unsqueeze,
                    view)  # noqa: F401
from .linalg import (BMM, DOT, LINEAR, MM, MV, VM, _MATMUL_MODE, _batched, _mismatch,
                     _vjp_linear, _vjp_matmul, _wants_row, bmm, dot, linear, matmul, mm,
                     outer)  # noqa: F401
from .composite import (addmm, all, allclose, any, atan2, broadcast_tensors,  # noqa: F401
                        cdist, clamp_max, clamp_min, cross, deg2rad, diag, diagonal, diff,
                        exp2, hypot, logaddexp, meshgrid, rad2deg, trace,
                        contiguous, count_nonzero, cumsum, einsum, equal, hstack,
                        index_select, isclose, isfinite, isinf, isnan, lerp, log2, log10,
                        logical_and, logical_not, logical_or, logical_xor, movedim, mv,
                        rsqrt, swapaxes, tile, unbind, vstack)
from .inplace import (CAST, PYFN, PYOUT, _INPLACE, _axpy, _inplace_binary, _trace_inplace,
                      add_, clamp_, copy_, div_, fill_, mul_, sub_, to_dtype, zero_)  # noqa: F401

bind_methods(sys.modules[__name__])
