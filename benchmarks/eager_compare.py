"""tapegrad eager against PyTorch eager and hand-written NumPy, in one process.

    python benchmarks/eager_compare.py [--quick] [--torch-threads N]

Runs the three workloads of ``bench_engine.py``: (a) chain, (b) linreg, (c) big.
Before timing, it checks that tapegrad's gradients agree with the hand-written NumPy
gradients (and PyTorch's with both) and stops if they do not. It prints a Markdown
table and writes it to ``benchmarks/results/eager_compare.md``.

Timing: ``timeit``. The number of calls per repeat is chosen by ``Timer.autorange``
(a repeat lasts at least 0.2 s, 0.05 s with --quick, or one call); the table shows
the **minimum over 7 repeats** (3 with --quick) of the mean time per call. Backward
times replay one recorded graph with ``retain_graph=True`` after resetting ``.grad``
to None; "total" is a fresh forward plus a freeing backward (for (b): the whole SGD
step, update and ``zero_`` included).
"""
import argparse
import os
import platform
import sys
import timeit

import numpy as np

try:
    from . import bench_engine as W
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import bench_engine as W

import tapegrad as tg

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "eager_compare.md")


def timed(fn, repeat, min_time):
    """Minimum over ``repeat`` repeats of the mean seconds per call of ``fn``."""
    t = timeit.Timer(fn)
    number = 1
    while True:     # Timer.autorange with a configurable target
        elapsed = t.timeit(number)
        if elapsed >= min_time:
            break
        number = max(number * 2, int(number * min_time / max(elapsed, 1e-9) * 1.1))
    return min(t.repeat(repeat=repeat, number=number)) / number


def check(name, got, want, rtol, atol=0.0):
    got = np.asarray(got, dtype=np.float64).reshape(-1)
    want = np.asarray(want, dtype=np.float64).reshape(-1)
    if not np.allclose(got, want, rtol=rtol, atol=atol):
        err = np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-300))
        raise SystemExit(f"gradient mismatch in {name}: max relative error {err:.3g}")


def grad_np(t):
    return t.grad.detach().numpy().copy()


# -- (a) ------------------------------------------------------------------------------------
def run_chain(torch, rep, min_time):
    xn = W.chain_data()
    s_ref, g_ref = W.chain_numpy(xn)
    x = tg.tensor(xn, requires_grad=True)
    s = W.chain_forward(tg, x)
    s.backward()
    check("(a) tapegrad value", s.item(), s_ref, 1e-12)
    g_tg = grad_np(x)
    check("(a) tapegrad grad", g_tg, g_ref, 1e-9)
    row = {"name": "(a) chain: 100 x tanh(y*1.01+0.1), 16 float64, 300 ops"}

    def fwd():
        W.chain_forward(tg, x)

    x.grad = None
    out = W.chain_forward(tg, x)
    row["rows"] = W.tape_rows(out)

    def bwd():
        x.grad = None
        out.backward(retain_graph=True)

    def total():
        x.grad = None
        W.chain_forward(tg, x).backward()

    row["fwd"] = timed(fwd, rep, min_time)
    row["bwd"] = timed(bwd, rep, min_time)
    row["total"] = timed(total, rep, min_time)
    try:
        replay = W.ReverseReplay(out)
        row["replay"] = replay.seconds_per_call(repeat=rep)
    except NotImplementedError as e:
        row["replay"] = None
        print(f"note: interpreter call not captured ({e})", file=sys.stderr)
    row["numpy"] = timed(lambda: W.chain_numpy(xn), rep, min_time)

    if torch is not None:
        xt = torch.tensor(xn, requires_grad=True)
        st = W.chain_forward(torch, xt)
        st.backward()
        check("(a) torch grad", grad_np(xt), g_ref, 1e-9)
        check("(a) tapegrad vs torch", g_tg, grad_np(xt), 1e-9)
        outt = W.chain_forward(torch, xt)

        def tbwd():
            xt.grad = None
            outt.backward(retain_graph=True)

        def ttotal():
            xt.grad = None
            W.chain_forward(torch, xt).backward()

        row["tfwd"] = timed(lambda: W.chain_forward(torch, xt), rep, min_time)
        row["tbwd"] = timed(tbwd, rep, min_time)
        row["ttotal"] = timed(ttotal, rep, min_time)
    return row


# -- (b) ------------------------------------------------------------------------------------
def run_linreg(torch, rep, min_time):
    data = W.linreg_data()
    loss_ref, gw_ref, gb_ref = W.linreg_numpy(data)
    m = W.LinReg(tg, data)
    loss = m.loss()
    loss.backward()
    check("(b) tapegrad loss", loss.item(), loss_ref, 1e-5)
    gw_tg, gb_tg = grad_np(m.w), grad_np(m.b)
    check("(b) tapegrad dw", gw_tg, gw_ref, 1e-4, 1e-6)
    check("(b) tapegrad db", gb_tg, gb_ref, 1e-4, 1e-6)
    row = {"name": "(b) linreg SGD step, 20 float32 points"}
    m.w.grad = m.b.grad = None
    m.step()                     # a step as the benchmark runs it: grads exist after
    out = m.loss()
    row["rows"] = W.tape_rows(out)

    def fwd():
        m.loss()

    def bwd():
        m.w.grad = None
        m.b.grad = None
        out.backward(retain_graph=True)

    row["fwd"] = timed(fwd, rep, min_time)
    row["bwd"] = timed(bwd, rep, min_time)
    row["total"] = timed(m.step, rep, min_time)
    x, y, w0 = data
    state = {"w": w0.copy(), "b": np.zeros(1, np.float32)}
    lr = np.float32(W.LR)

    def np_step():
        r = y - (state["w"] * x + state["b"])
        (0.5 * r * r).mean()
        state["w"] += lr * (r * x).mean()
        state["b"] += lr * r.mean()

    row["numpy"] = timed(np_step, rep, min_time)

    if torch is not None:
        mt = W.LinReg(torch, data)
        lt = mt.loss()
        lt.backward()
        check("(b) torch dw", grad_np(mt.w), gw_ref, 1e-4, 1e-6)
        check("(b) torch db", grad_np(mt.b), gb_ref, 1e-4, 1e-6)
        check("(b) tapegrad vs torch dw", gw_tg, grad_np(mt.w), 1e-5, 1e-7)
        check("(b) tapegrad vs torch db", gb_tg, grad_np(mt.b), 1e-5, 1e-7)
        mt.w.grad = mt.b.grad = None
        mt.step()
        outt = mt.loss()

        def tbwd():
            mt.w.grad = None
            mt.b.grad = None
            outt.backward(retain_graph=True)

        row["tfwd"] = timed(mt.loss, rep, min_time)
        row["tbwd"] = timed(tbwd, rep, min_time)
        row["ttotal"] = timed(mt.step, rep, min_time)
    return row


# -- (c) ------------------------------------------------------------------------------------
def run_big(torch, rep, min_time):
    xn = W.big_data()
    s_ref, g_ref = W.big_numpy(xn)
    x = tg.tensor(xn, requires_grad=True)
    s = W.big_forward(tg, x)
    s.backward()
    check("(c) tapegrad value", s.item(), s_ref, 1e-9)
    g_tg = grad_np(x)
    check("(c) tapegrad grad", g_tg, g_ref, 1e-12)
    row = {"name": "(c) big: (tanh(x)*x).sum(), 10M float64"}
    x.grad = None
    out = W.big_forward(tg, x)
    row["rows"] = W.tape_rows(out)

    def fwd():
        W.big_forward(tg, x)

    def bwd():
        x.grad = None
        out.backward(retain_graph=True)

    def total():
        x.grad = None
        W.big_forward(tg, x).backward()

    row["fwd"] = timed(fwd, rep, min_time)
    row["bwd"] = timed(bwd, rep, min_time)
    row["total"] = timed(total, rep, min_time)
    del out
    x.grad = None
    row["numpy"] = timed(lambda: W.big_numpy(xn), rep, min_time)

    if torch is not None:
        xt = torch.tensor(xn, requires_grad=True)
        st = W.big_forward(torch, xt)
        st.backward()
        check("(c) torch grad", grad_np(xt), g_ref, 1e-12)
        check("(c) tapegrad vs torch", g_tg, grad_np(xt), 1e-12)
        del g_tg
        del st
        xt.grad = None
        outt = W.big_forward(torch, xt)

        def tbwd():
            xt.grad = None
            outt.backward(retain_graph=True)

        def ttotal():
            xt.grad = None
            W.big_forward(torch, xt).backward()

        row["tfwd"] = timed(lambda: W.big_forward(torch, xt), rep, min_time)
        row["tbwd"] = timed(tbwd, rep, min_time)
        row["ttotal"] = timed(ttotal, rep, min_time)
    return row


# -- report ---------------------------------------------------------------------------------
def us(v):
    if v is None:
        return "n/a"
    v *= 1e6
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def table(rows, torch, repeat, min_time, load=None):
    lines = [
        "| workload | tape rows | tapegrad forward µs | tapegrad backward µs | "
        "tapegrad total µs | PyTorch total µs | PyTorch / tapegrad | NumPy µs | "
        "tapegrad / NumPy | backward µs per tape row |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        tt = r.get("ttotal")
        ratio = f"{tt / r['total']:.2f}x" if tt else "n/a"
        per_row = "—"
        if r["name"].startswith("(a)"):
            per_row = f"{r['bwd'] / r['rows'] * 1e6:.3f}"
        lines.append(
            f"| {r['name']} | {r['rows']} | {us(r['fwd'])} | {us(r['bwd'])} | "
            f"{us(r['total'])} | {us(tt)} | {ratio} | {us(r['numpy'])} | "
            f"{r['total'] / r['numpy']:.2f}x | {per_row} |")
    notes = []
    a = next((r for r in rows if r["name"].startswith("(a)")), None)
    if a is not None and a.get("replay") is not None:
        notes.append(
            f"(a) the interpreter call alone (`tapegrad._kernels.reverse` on the "
            f"{a['rows']}-row tape): {a['replay'] * 1e6:.1f} µs, "
            f"{a['replay'] / a['rows'] * 1e9:.0f} ns per row; the rest of the backward "
            f"column is the Python around it.")
    if torch is not None:
        detail = "; ".join(
            f"{r['name'][:3]} forward {us(r['tfwd'])} µs, backward {us(r['tbwd'])} µs"
            for r in rows if "tfwd" in r)
        notes.append(f"PyTorch {torch.__version__} eager, {torch.get_num_threads()} "
                     f"thread(s): {detail}.")
    else:
        notes.append("PyTorch is not installed: its columns are n/a.")
    notes.append(
        f"Minimum over {repeat} repeats of the mean time per call (timeit; each repeat "
        f"at least {min_time} s or one call). Total = fresh forward + freeing backward (for (b) "
        f"the whole SGD step). Backward = replay of one recorded graph with "
        f"retain_graph=True. NumPy = hand-written forward and gradient (for (b) the "
        f"step). Gradients checked against NumPy (and PyTorch) before timing.")
    notes.append(f"tapegrad {tg.__version__}, NumPy {np.__version__}, Python "
                 f"{platform.python_version()}, {platform.machine()}, "
                 f"{os.cpu_count()} CPUs" + (
                     f", load average {load[0]:.2f} before / {load[1]:.2f} after "
                     "(timings are wall-clock: a loaded machine inflates them)"
                     if load else "") + ".")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 repeats of >= 0.05 s")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="PyTorch intra-op threads (default 1, as tapegrad)")
    ap.add_argument("--output", default=RESULTS, help="Markdown file to write")
    args = ap.parse_args(argv)
    rep, min_time = (3, 0.05) if args.quick else (7, 0.2)
    try:
        torch = W.torch_or_skip(args.torch_threads)
    except NotImplementedError:
        torch = None
        print("note: torch is not installed; PyTorch columns are skipped", file=sys.stderr)
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rows = []
    for fn in (run_chain, run_linreg, run_big):
        rows.append(fn(torch, rep, min_time))
        print(f"done {rows[-1]['name']}", file=sys.stderr)
    load = (load0, os.getloadavg()[0]) if load0 is not None else None
    md = table(rows, torch, rep, min_time, load)
    print(md)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        f.write(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
