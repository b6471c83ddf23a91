"""Recurrent layers: LSTM and GRU cells and their multi-layer, optionally bidirectional
stacks, as ``torch.nn``'s (same parameter names, shapes, gate order and initialisation),
written with the core ops so that they are differentiable to any order and replayed by
``tg.compile``.

Each gate's projection is an ``F.linear`` (one fused op: no transposed copy of the
weight, no separate bias add) with that gate's block of weight rows, a contiguous view,
so that the per-gate results are contiguous too: chunking one wide result by columns
would copy strided slices on every step. The stacks project the input of the whole
sequence before the time loop, since it does not depend on the state."""
import math
import warnings

import tapegrad as tg

from . import functional as F
from . import init
from .module import Module
from .parameter import Parameter

__all__ = ["LSTMCell", "GRUCell", "LSTM", "GRU"]


def _uniform_all(module, hidden_size):
    bound = 1.0 / math.sqrt(hidden_size) if hidden_size > 0 else 0.0
    for p in module.parameters():
        init.uniform_(p, -bound, bound)


def _rows(t, gates):
    """``t`` (weight or bias) split into its gates' blocks of rows."""
    if t is None:
        return [None] * gates
    n = t.shape[0] // gates
    return [t[k * n:(k + 1) * n] for k in range(gates)]


def _project(x, w, b, gates):
    """x @ w.T + b, one result per gate."""
    return [F.linear(x, wk, bk) for wk, bk in zip(_rows(w, gates), _rows(b, gates))]


def _lstm_step(xg, h, c, whh, bhh):
    """One LSTM step from the input's per-gate projections ``xg`` (i, f, g, o) and the
    per-gate rows ``whh``, ``bhh`` of the hidden-hidden weight and bias."""
    i, f, g, o = (a + F.linear(h, w, b) for a, w, b in zip(xg, whh, bhh))
    c = f.sigmoid() * c + i.sigmoid() * g.tanh()
    return o.sigmoid() * c.tanh(), c


def _gru_step(xg, h, whh, bhh):
    """One GRU step, as ``_lstm_step`` with the gates (r, z, n)."""
    ri, zi, ni = xg
    rh, zh, nh = (F.linear(h, w, b) for w, b in zip(whh, bhh))
    r, z = (ri + rh).sigmoid(), (zi + zh).sigmoid()
    n = (ni + r * nh).tanh()
    return (h - n) * z + n          # (1 - z) * n + z * h in PyTorch's order of operations


class _Cell(Module):
    _gates = 0

    def __init__(self, input_size, hidden_size, bias, dtype):
        super().__init__()
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        gates = self._gates
        dt = dtype or tg.get_default_dtype()
        self.weight_ih = Parameter(tg.empty(gates * hidden_size, input_size, dtype=dt))
        self.weight_hh = Parameter(tg.empty(gates * hidden_size, hidden_size, dtype=dt))
        if bias:
            self.bias_ih = Parameter(tg.empty(gates * hidden_size, dtype=dt))
            self.bias_hh = Parameter(tg.empty(gates * hidden_size, dtype=dt))
        else:
            self.bias_ih = self.bias_hh = None
        _uniform_all(self, hidden_size)

    def _zeros(self, input):
        shape = (input.shape[0], self.hidden_size) if input.ndim == 2 else \
            (self.hidden_size,)
        return tg.zeros(*shape, dtype=input.dtype)

    def _operands(self, input):
        """The input's per-gate projections and the hidden-hidden per-gate rows."""
        g = self._gates
        return (_project(input, self.weight_ih, self.bias_ih, g),
                _rows(self.weight_hh, g), _rows(self.bias_hh, g))

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")


class LSTMCell(_Cell):
    """One LSTM step: (h, c) from input (batch, input_size) and (h, c)."""
    _gates = 4

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, dtype)

    def forward(self, input, hx=None):
        h, c = (self._zeros(input), self._zeros(input)) if hx is None else hx
        xg, whh, bhh = self._operands(input)
        return _lstm_step(xg, h, c, whh, bhh)


class GRUCell(_Cell):
    """One GRU step: h from input (batch, input_size) and h."""
    _gates = 3

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, dtype)

    def forward(self, input, hx=None):
        h = self._zeros(input) if hx is None else hx
        xg, whh, bhh = self._operands(input)
        return _gru_step(xg, h, whh, bhh)


class _RNN(Module):
    _gates = 0

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None):
        super().__init__()
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or \
                not 0 <= dropout <= 1:
            raise ValueError("dropout should be a number in range [0, 1] representing the "
                             "probability of an element being zeroed")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, "
                          "so non-zero dropout expects num_layers greater than 1, but got "
                          f"dropout={dropout} and num_layers={num_layers}")
        self.dropout = float(dropout)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, \
            num_layers
        self.bias, self.batch_first, self.bidirectional = bias, batch_first, bidirectional
        dirs = 2 if bidirectional else 1
        dt = dtype or tg.get_default_dtype()
        g = self._gates * hidden_size
        self._names = []
        for layer in range(num_layers):
            width = input_size if layer == 0 else hidden_size * dirs
            for suffix in ("", "_reverse")[:dirs]:
                names = [f"weight_ih_l{layer}{suffix}", f"weight_hh_l{layer}{suffix}"]
                setattr(self, names[0], Parameter(tg.empty(g, width, dtype=dt)))
                setattr(self, names[1], Parameter(tg.empty(g, hidden_size, dtype=dt)))
                if bias:
                    names += [f"bias_ih_l{layer}{suffix}", f"bias_hh_l{layer}{suffix}"]
                    setattr(self, names[2], Parameter(tg.empty(g, dtype=dt)))
                    setattr(self, names[3], Parameter(tg.empty(g, dtype=dt)))
                self._names.append(names)
        _uniform_all(self, hidden_size)

    def _weights(self, k):
        names = self._names[k]
        w = [getattr(self, n) for n in names]
        return w if self.bias else w + [None, None]

    def forward(self, input, hx=None):
        batched = input.ndim == 3
        x = input if batched else input.unsqueeze(1 if not self.batch_first else 0)
        if self.batch_first:
            x = x.transpose(0, 1)                       # (time, batch, features)
        dirs = 2 if self.bidirectional else 1
        n = x.shape[1]
        state = self._initial(hx, n, x.dtype, dirs, batched)
        finals = []
        for layer in range(self.num_layers):
            # the last layer stacks its steps straight into the output's layout
            dim = 1 if self.batch_first and layer == self.num_layers - 1 else 0
            outs = []
            for d in range(dirs):
                k = layer * dirs + d
                seq, last = self._run(x, [s[k] for s in state], self._weights(k), d == 1,
                                      dim)
                outs.append(seq)
                finals.append(last)
            x = tg.cat(outs, 2) if dirs == 2 else outs[0]
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout)
        if not batched:
            x = x.squeeze(0 if self.batch_first else 1)
        return x, self._final(finals, batched)

    def _run(self, x, state, w, reverse, dim):
        """One direction of one layer over x (time, batch, features): its outputs
        stacked along ``dim`` and its final state."""
        w_ih, w_hh, b_ih, b_hh = w
        g = self._gates
        xg = _project(x, w_ih, b_ih, g)
        whh, bhh = _rows(w_hh, g), _rows(b_hh, g)
        steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
        outs = [None] * x.shape[0]
        for t in steps:
            state = self._step([p[t] for p in xg], state, whh, bhh)
            outs[t] = state[0]
        return tg.stack(outs, dim), state

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        return s


class LSTM(_RNN):
    """Multi-layer LSTM; returns (output, (h_n, c_n))."""
    _gates = 4

    def _initial(self, hx, n, dtype, dirs, batched):
        layers = self.num_layers * dirs
        if hx is None:
            z = tg.zeros(layers, n, self.hidden_size, dtype=dtype)
            return z, z
        h, c = hx
        return (h, c) if batched else (h.unsqueeze(1), c.unsqueeze(1))

    def _step(self, xg, state, whh, bhh):
        return _lstm_step(xg, state[0], state[1], whh, bhh)

    def _final(self, finals, batched):
        h = tg.stack([s[0] for s in finals], 0)
        c = tg.stack([s[1] for s in finals], 0)
        return (h, c) if batched else (h.squeeze(1), c.squeeze(1))


class GRU(_RNN):
    """Multi-layer GRU; returns (output, h_n)."""
    _gates = 3

    def _initial(self, hx, n, dtype, dirs, batched):
        if hx is None:
            return (tg.zeros(self.num_layers * dirs, n, self.hidden_size, dtype=dtype),)
        return (hx if batched else hx.unsqueeze(1),)

    def _step(self, xg, state, whh, bhh):
        return (_gru_step(xg, state[0], whh, bhh),)

    def _final(self, finals, batched):
        h = tg.stack([s[0] for s in finals], 0)
        return h if batched else h.squeeze(1)
