"""GRU and LSTM as PyTorch's in the cases the per-gate, whole-sequence projection has to
get right (batch_first with the output stacked in place, unbatched input, a given
state), their reprs, and a compiled training step over them that replays without
falling back and equals eager to the bit."""
import numpy as np
import pytest

import tapegrad as tg
import tapegrad.nn as nn
import tapegrad.nn.functional as F
from replay_check import replays_as_eager

torch = pytest.importorskip("torch")

REPRS = [
    ("GRU", (32, 128), dict(batch_first=True)),
    ("GRU", (3, 5), {}),
    ("LSTM", (3, 5), dict(num_layers=2, bias=False, bidirectional=True)),
    ("GRUCell", (3, 4), {}),
    ("LSTMCell", (3, 4), dict(bias=False)),
]


@pytest.mark.parametrize("cls,args,kw", REPRS)
def test_repr_as_pytorch(cls, args, kw):
    assert repr(getattr(nn, cls)(*args, **kw)) == repr(getattr(torch.nn, cls)(*args, **kw))


CASES = [  # class, options, input shape, with a given state
    ("GRU", dict(num_layers=2, bidirectional=True, batch_first=True), (6, 3), True),
    ("GRU", dict(batch_first=True), (4, 6, 3), True),
    ("LSTM", dict(num_layers=2, batch_first=True), (6, 3), True),
    ("LSTM", dict(bidirectional=True), (6, 4, 3), False),
]


@pytest.mark.parametrize("cls,kw,shape,given", CASES)
def test_recurrent_as_pytorch(cls, kw, shape, given):
    tm = getattr(torch.nn, cls)(3, 5, **kw).double()
    gm = getattr(nn, cls)(3, 5, **kw, dtype=tg.float64)
    gm.load_state_dict({k: tg.tensor(v.numpy().copy()) for k, v in tm.state_dict().items()})
    rng = np.random.default_rng(3)
    x0 = rng.standard_normal(shape)
    layers = (2 if kw.get("num_layers") == 2 else 1) * (2 if kw.get("bidirectional") else 1)
    h0 = rng.standard_normal((layers,) + ((shape[0 if kw.get("batch_first") else 1],)
                                          if len(shape) == 3 else ()) + (5,))
    out = []
    for L, m in ((tg, gm), (torch, tm)):
        x = L.tensor(x0, requires_grad=True)
        hx = None
        if given:
            hx = L.tensor(h0, requires_grad=True)
            hx = (hx, hx * 0.5) if cls == "LSTM" else hx
        y, hn = m(x, hx)
        h = hn[0] if isinstance(hn, tuple) else hn
        (y.sum() + (h * h).sum()).backward()
        out.append([y.detach().numpy(), h.detach().numpy(), x.grad.numpy()]
                   + [p.grad.numpy() for p in m.parameters()])
    assert [a.shape for a in out[0]] == [b.shape for b in out[1]]
    for got, want in zip(*out):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("cls,kw", [("GRU", {}), ("LSTM", {}),
                                    ("GRU", dict(batch_first=True, bidirectional=True)),
                                    ("LSTM", dict(num_layers=2, bias=False))])
def test_compiled_step_replays_and_equals_eager(cls, kw):
    def train(wrap):
        tg.manual_seed(0)
        rnn = getattr(nn, cls)(4, 6, **kw)
        head = nn.Linear(12 if kw.get("bidirectional") else 6, 2)
        params = list(rnn.parameters()) + list(head.parameters())
        opt = tg.optim.SGD(params, lr=0.05, momentum=0.9)

        @wrap
        def step(x, y):
            opt.zero_grad()
            loss = F.mse_loss(head(rnn(x)[0]), y)
            loss.backward()
            opt.step()
            return loss
        rng = np.random.default_rng(1)
        losses = [step(tg.tensor(rng.standard_normal((5, 3, 4)), dtype=tg.float32),
                       tg.tensor(rng.standard_normal((5, 3, 2)), dtype=tg.float32)).item()
                  for _ in range(5)]
        return losses, [p.detach().numpy().copy() for p in params], step
    replays_as_eager(train, 5)
