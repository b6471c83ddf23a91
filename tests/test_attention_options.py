"""MultiheadAttention's less common options against PyTorch: keys and values of their own
sizes (kdim, vdim), learned extra key and value (add_bias_kv), a zero key and value
(add_zero_attn), with masks, both layouts, outputs, weights and gradients, and the
same parameter names."""
import numpy as np
import pytest

import tapegrad as tg

torch = pytest.importorskip("torch")

OPTIONS = [dict(kdim=5, vdim=3), dict(add_bias_kv=True), dict(add_zero_attn=True),
           dict(add_bias_kv=True, add_zero_attn=True, kdim=6, vdim=6),
           dict(kdim=5, vdim=3, bias=False)]


def _pair(opts, batch_first):
    tg.manual_seed(0)
    m = tg.nn.MultiheadAttention(8, 2, batch_first=batch_first, dtype=tg.float64, **opts)
    t = torch.nn.MultiheadAttention(8, 2, batch_first=batch_first, dtype=torch.float64,
                                    **opts)
    state = m.state_dict()
    assert sorted(state) == sorted(t.state_dict())
    t.load_state_dict({k: torch.tensor(v.numpy()) for k, v in state.items()})
    return m, t


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("opts", OPTIONS, ids=[",".join(o) for o in OPTIONS])
def test_options_as_pytorch(opts, batch_first):
    rng = np.random.default_rng(0)
    n, lq, ls = 3, 4, 5
    kd, vd = opts.get("kdim", 8), opts.get("vdim", 8)
    lay = (lambda a: a) if batch_first else (lambda a: a.transpose(1, 0, 2))
    qv, kv, vv = (lay(rng.standard_normal(s)) for s in ((n, lq, 8), (n, ls, kd), (n, ls, vd)))
    causal = np.triu(np.ones((lq, ls), bool), 1)
    pad = np.zeros((n, ls), bool)
    pad[1, -2:] = True
    m, t = _pair(opts, batch_first)
    outs = []
    for L, mod in ((tg, m), (torch, t)):
        q, k, v = (L.tensor(a.copy(), requires_grad=True) for a in (qv, kv, vv))
        o, w = mod(q, k, v, key_padding_mask=L.tensor(pad), attn_mask=L.tensor(causal))
        (o * L.tensor(np.cos(np.arange(o.numel())).reshape(tuple(o.shape)))).sum().backward()
        grads = [p.grad.numpy().copy() for _, p in sorted(mod.named_parameters())]
        outs.append([o.detach().numpy(), w.detach().numpy(), q.grad.numpy(), k.grad.numpy(),
                     v.grad.numpy()] + grads)
    for i, (g, w) in enumerate(zip(*outs)):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12, err_msg=f"item {i}")


def test_self_attention_with_options_and_compiled_replay():
    m, t = _pair(dict(add_bias_kv=True, add_zero_attn=True), True)
    step = tg.compile(lambda x: m(x, x, x, need_weights=False)[0].sum())
    rng = np.random.default_rng(1)
    for _ in range(3):
        xv = rng.standard_normal((2, 4, 8))
        want = t(*(torch.tensor(xv),) * 3, need_weights=False)[0].sum().item()
        assert abs(step(tg.tensor(xv)).item() - want) < 1e-10
    assert step.replays == 2
