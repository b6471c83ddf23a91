"""Recurrent layers: LSTM and GRU cells and their multi-layer, optionally bidirectional
stacks, as ``torch.nn``'s (same parameter names, shapes, gate order and initialisation),
written with the core ops so that they are differentiable to any order and replayed by
``tg.compile``."""
import math

import tapegrad as tg

from . import init
from .module import Module
from .parameter import Parameter

__all__ = ["LSTMCell", "GRUCell", "LSTM", "GRU"]


def _uniform_all(module, hidden_size):
    bound = 1.0 / math.sqrt(hidden_size) if hidden_size > 0 else 0.0
    for p in module.parameters():
        init.uniform_(p, -bound, bound)


def _linear(x, w, b):
    y = x @ w.t()
    return y if b is None else y + b


def _lstm_step(x, h, c, w_ih, w_hh, b_ih, b_hh):
    i, f, g, o = (_linear(x, w_ih, b_ih) + _linear(h, w_hh, b_hh)).chunk(4, -1)
    c = f.sigmoid() * c + i.sigmoid() * g.tanh()
    return o.sigmoid() * c.tanh(), c


def _gru_step(x, h, w_ih, w_hh, b_ih, b_hh):
    ri, zi, ni = _linear(x, w_ih, b_ih).chunk(3, -1)
    rh, zh, nh = _linear(h, w_hh, b_hh).chunk(3, -1)
    r, z = (ri + rh).sigmoid(), (zi + zh).sigmoid()
    n = (ni + r * nh).tanh()
    return (1.0 - z) * n + z * h


class _Cell(Module):
    def __init__(self, input_size, hidden_size, bias, gates, dtype):
        super().__init__()
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
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

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")


class LSTMCell(_Cell):
    """One LSTM step: (h, c) from input (batch, input_size) and (h, c)."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, 4, dtype)

    def forward(self, input, hx=None):
        h, c = (self._zeros(input), self._zeros(input)) if hx is None else hx
        return _lstm_step(input, h, c, self.weight_ih, self.weight_hh, self.bias_ih,
                          self.bias_hh)


class GRUCell(_Cell):
    """One GRU step: h from input (batch, input_size) and h."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, 3, dtype)

    def forward(self, input, hx=None):
        h = self._zeros(input) if hx is None else hx
        return _gru_step(input, h, self.weight_ih, self.weight_hh, self.bias_ih,
                         self.bias_hh)


class _RNN(Module):
    _gates = 0

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None):
        super().__init__()
        if dropout:
            raise NotImplementedError(f"{type(self).__name__}: dropout between layers is "
                                      "not supported")
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
            outs = []
            for d in range(dirs):
                k = layer * dirs + d
                seq, last = self._run(x, [s[k] for s in state], self._weights(k), d == 1)
                outs.append(seq)
                finals.append(last)
            x = tg.cat(outs, 2) if dirs == 2 else outs[0]
        out = x.transpose(0, 1) if self.batch_first else x
        if not batched:
            out = out.squeeze(0 if self.batch_first else 1)
        return out, self._final(finals, batched)

    def _run(self, x, state, w, reverse):
        steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
        outs = [None] * x.shape[0]
        for t in steps:
            state = self._step(x[t], state, w)
            outs[t] = state[0]
        return tg.stack(outs, 0), state


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

    def _step(self, x, state, w):
        return _lstm_step(x, state[0], state[1], *w)

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

    def _step(self, x, state, w):
        return (_gru_step(x, state[0], *w),)

    def _final(self, finals, batched):
        h = tg.stack([s[0] for s in finals], 0)
        return h if batched else h.squeeze(1)
