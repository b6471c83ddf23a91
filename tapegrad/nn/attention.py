"""Multi-head attention, as ``torch.nn.MultiheadAttention`` (packed input projection, the
same parameter names, initialisation and mask conventions), written with the core ops."""
import math

import numpy as np

import tapegrad as tg

from . import functional as F
from . import init
from .layers import Dropout, LayerNorm, Linear
from .module import Module
from .parameter import Parameter

__all__ = ["MultiheadAttention", "TransformerEncoderLayer"]


def _additive(mask, dtype, name):
    """A mask as a float to add: bool True (not allowed to attend) becomes -inf."""
    if mask is None:
        return None
    if mask.dtype == tg.bool:         # (a where, so that a replay reads the new mask)
        return tg.where(mask, F._const(np.full((), -np.inf, dtype)),
                        F._const(np.zeros((), dtype)))
    if not mask.dtype.is_floating_point:
        raise AssertionError(f"only bool and floating types of {name} are supported")
    return mask


def _padded(mask, extra):
    """An additive mask with ``extra`` zero columns at the end (keys it does not name)."""
    if mask is None or not extra:
        return mask
    zeros = F._const(np.zeros(tuple(mask.shape[:-1]) + (extra,), mask._data.dtype))
    return tg.cat([mask, zeros], -1)


class MultiheadAttention(Module):
    """Attention of queries over keys and values with num_heads heads of size
    embed_dim / num_heads; returns (output, attention weights or None)."""

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False,
                 add_zero_attn=False, kdim=None, vdim=None, batch_first=False, device=None,
                 dtype=None):
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"embed_dim and num_heads must be greater than 0, got "
                             f"embed_dim={embed_dim} and num_heads={num_heads} instead")
        if embed_dim % num_heads:
            raise AssertionError("embed_dim must be divisible by num_heads")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.dropout = dropout
        self.head_dim = embed_dim // num_heads
        self.batch_first = batch_first
        dt = dtype or tg.get_default_dtype()
        if self._qkv_same_embed_dim:
            self.in_proj_weight = Parameter(tg.empty(3 * embed_dim, embed_dim, dtype=dt))
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(name, None)
        else:           # keys and values of other sizes: a projection matrix each
            self.q_proj_weight = Parameter(tg.empty(embed_dim, embed_dim, dtype=dt))
            self.k_proj_weight = Parameter(tg.empty(embed_dim, self.kdim, dtype=dt))
            self.v_proj_weight = Parameter(tg.empty(embed_dim, self.vdim, dtype=dt))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = Parameter(tg.zeros(3 * embed_dim, dtype=dt))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, dtype=dt)
        if add_bias_kv:     # one more key and value, learned, at the end of the sequence
            self.bias_k = Parameter(tg.empty(1, 1, embed_dim, dtype=dt))
            self.bias_v = Parameter(tg.empty(1, 1, embed_dim, dtype=dt))
        else:
            self.bias_k = self.bias_v = None
        self.add_zero_attn = add_zero_attn
        for w in (self.in_proj_weight, self.q_proj_weight, self.k_proj_weight,
                  self.v_proj_weight):
            if w is not None:
                init.xavier_uniform_(w)
        if bias:
            init.constant_(self.out_proj.bias, 0.0)
        for b in (self.bias_k, self.bias_v):
            if b is not None:
                init.xavier_normal_(b)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        batched = query.ndim == 3
        same = query is key and key is value
        if not batched or not self.batch_first:     # computed batch first: (N, L, E)
            lay = (lambda t: t.unsqueeze(0)) if not batched else (lambda t: t.transpose(0, 1))
            query = lay(query)
            key, value = (query, query) if same else (lay(key), lay(value))
            if not batched and key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        n, lq, e = query.shape
        ls = key.shape[1]
        h, d = self.num_heads, self.head_dim
        if e != self.embed_dim:
            raise AssertionError(f"was expecting embedding dimension of {self.embed_dim}, "
                                 f"but got {e}")
        w, b = self.in_proj_weight, self.in_proj_bias

        def heads(t, length, parts):
            """(N, L, parts * E) -> parts x (N * H, L, d), heads of each batch together."""
            t = t.reshape(n, length, parts, h, d).permute(2, 0, 3, 1, 4)
            return t.reshape(parts, n * h, length, d)

        if same and self._qkv_same_embed_dim and self.bias_k is None:
            q, k, v = heads(F.linear(query, w, b), lq, 3)    # one projection, one copy
        else:
            wq, wk, wv = w.chunk(3, 0) if self._qkv_same_embed_dim else \
                (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
            bq, bk, bv = b.chunk(3, 0) if b is not None else (None, None, None)
            kp, vp = F.linear(key, wk, bk), F.linear(value, wv, bv)
            if self.bias_k is not None:
                kp = tg.cat([kp, self.bias_k.expand(n, 1, e)], 1)
                vp = tg.cat([vp, self.bias_v.expand(n, 1, e)], 1)
                ls += 1
            q = heads(F.linear(query, wq, bq), lq, 1)[0]
            k, v = heads(kp, ls, 1)[0], heads(vp, ls, 1)[0]
        if self.add_zero_attn:
            zero = F._const(np.zeros((n * h, 1, d), query._data.dtype))
            k, v = tg.cat([k, zero], 1), tg.cat([v, zero], 1)
            ls += 1
        extra = ls - key.shape[1]     # columns added: attended by every query
        if is_causal and attn_mask is None:
            attn_mask = tg.tensor(np.triu(np.ones((lq, ls - extra), bool), 1))
        mask = _padded(_additive(attn_mask, query._data.dtype, "attn_mask"), extra)
        if mask is not None and mask.ndim == 3:
            mask = mask.reshape(n * h, lq, ls)
        pad = _padded(_additive(key_padding_mask, query._data.dtype, "key_padding_mask"),
                      extra)
        if pad is not None:
            pad = pad.reshape(n, 1, 1, ls).expand(n, h, 1, ls).reshape(n * h, 1, ls)
            mask = pad if mask is None else mask + pad
        scores = (q * (1.0 / math.sqrt(d))) @ k.transpose(1, 2)
        if mask is not None:
            scores = scores + mask
        weights = scores.softmax(-1)
        if self.dropout > 0.0 and self.training:    # on the weights returned too, as PyTorch
            weights = F.dropout(weights, self.dropout)
        out = (weights @ v).reshape(n, h, lq, d).permute(0, 2, 1, 3).reshape(n * lq, e)
        out = self.out_proj(out).reshape(n, lq, e)
        if not batched:
            out = out.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        weights = weights.reshape(n, h, lq, ls)
        if average_attn_weights:
            weights = weights.mean(1)
        return out, weights if batched else weights.squeeze(0)


class TransformerEncoderLayer(Module):
    """Self-attention then a feed-forward block, each with dropout, a residual connection
    and LayerNorm (after each block, or before with ``norm_first``), as PyTorch's."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True,
                 device=None, dtype=None):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                            batch_first=batch_first, dtype=dtype)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, dtype=dtype)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, dtype=dtype)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        if isinstance(activation, str):
            if activation not in ("relu", "gelu"):
                raise RuntimeError(f"activation should be relu/gelu, not {activation}")
            activation = F.relu if activation == "relu" else F.gelu
        self.activation = activation

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        x = src
        if self.norm_first:
            x = x + self._sa(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self._ff(self.norm2(x))
        x = self.norm1(x + self._sa(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self._ff(x))

    def _sa(self, x, mask, pad, is_causal):
        out, _ = self.self_attn(x, x, x, attn_mask=mask, key_padding_mask=pad,
                                need_weights=False, is_causal=is_causal)
        return self.dropout1(out)

    def _ff(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))
